use crate::RelayState;
use assetgen_common::batch_view::Presenter;
use assetgen_common::domain::BatchId;
use assetgen_common::events::{BatchEvent, Cursor};
use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::request::base_url;
use assetgen_common::tail::{BatchTail, Sequenced};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use rand::Rng;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::time::Instant;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this event id (for clients that cannot send the `Last-Event-ID` header).
    pub last_event_id: Option<String>,
}

/// Progress of a batch as Server-Sent Events: `snapshot`, then `row` and `batch` events, `done`.
#[utoipa::path(get, path = "/v1/batches/{id}/events", tag = "relay",
    params(
        ("id" = String, Path, description = "Batch id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn batch_events(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, Problem> {
    state.auth.authenticate(&headers).await?;
    let batch_id = BatchId::parse(&id).map_err(|e| Problem::new(ErrorCode::BatchNotFound, e.0))?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id)
        .and_then(|raw| Cursor::parse(&raw));
    let presenter = Presenter { base: base_url(state.public_url.as_ref(), &headers) };
    let (tail, initial) = BatchTail::open(state.store.clone(), &batch_id, presenter, resume).await?;
    let sse = Sse::new(stream(state.clone(), tail, initial))
        .keep_alive(KeepAlive::new().interval(state.config.heartbeat).text("heartbeat"));
    let mut response = sse.into_response();
    // Nginx-style proxies (and Cloud Run's front end) must not buffer the stream.
    response.headers_mut().insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    Ok(response)
}

struct Follow {
    state: Arc<RelayState>,
    tail: BatchTail,
    pending: VecDeque<Sequenced>,
    deadline: Instant,
    closing: bool,
}

fn to_sse((cursor, event): &Sequenced) -> Event {
    Event::default().event(event.name()).id(cursor.to_string()).data(event.data_json())
}

fn stream(
    state: Arc<RelayState>,
    tail: BatchTail,
    initial: Vec<Sequenced>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let deadline = Instant::now() + state.config.max_stream;
    let follow = Follow { state, tail, pending: initial.into(), deadline, closing: false };
    futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(next) = f.pending.pop_front() {
                if matches!(next.1, BatchEvent::Done(_)) {
                    f.closing = true;
                }
                return Some((Ok(to_sse(&next)), f));
            }
            if f.closing {
                return None;
            }
            if Instant::now() >= f.deadline {
                // Close before the platform cuts us off, and say when to come back: the client
                // resumes with Last-Event-ID and loses nothing.
                f.closing = true;
                let config = &f.state.config;
                let jitter = rand::rng().random_range(0..=config.retry_jitter.as_millis() as u64);
                let retry = config.retry_base + std::time::Duration::from_millis(jitter);
                return Some((Ok(Event::default().retry(retry).comment("stream lifetime reached; reconnect")), f));
            }
            tokio::time::sleep(f.state.config.poll_every).await;
            match f.tail.poll().await {
                Ok(events) => f.pending.extend(events),
                // A store hiccup: keep the stream, look again at the next tick.
                Err(p) => tracing::warn!(detail = %p.detail, "tail poll failed"),
            }
        }
    })
}
