//! Following a batch's event stream (`/v1/batches/{id}/events`, Server-Sent Events) to its end.

use anyhow::bail;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The data of the stream's `done` event (the ended batch's view), within `limit`. `token`, when
/// given, is sent as the bearer. A stream the server closes (the relay closes long ones with a retry
/// hint) is opened again.
pub async fn until_done(
    client: &reqwest::Client,
    events: &str,
    token: Option<&str>,
    limit: Duration,
) -> anyhow::Result<Value> {
    let open = || async {
        let request = client.get(events);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        anyhow::Ok(request.send().await?.error_for_status()?.bytes_stream().eventsource())
    };
    let mut stream = open().await?;
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(next) = tokio::time::timeout(left, stream.next()).await else { bail!("no done within {limit:?}") };
        match next {
            Some(Ok(event)) if event.event == "done" => return Ok(serde_json::from_str(&event.data)?),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("event stream: {e}"),
            None => stream = open().await?,
        }
    }
}
