use crate::RelayConfig;
use crate::RelayState;
use crate::hub::{Linger, SharedTail, TailHub};
use crate::unsent::Unsent;
use assetgen_common::events::{BatchEvent, Cursor};
use assetgen_common::observe::{GaugeGuard, GaugeShare, names};
use assetgen_common::problem::Problem;
use assetgen_common::problem_responses::BatchReadProblems;
use assetgen_common::shim::Connection;
use assetgen_common::tail::{Sequenced, merge};
use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Version};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use rand::Rng;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::time::Instant;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this event id (for clients that cannot send the `Last-Event-ID` header).
    pub last_event_id: Option<String>,
    /// A capability token for this batch (browsers; EventSource cannot send headers).
    pub access_token: Option<String>,
}

/// The names of the events a batch's stream sends. This type and [`SseEvent`] document the
/// stream in `/openapi.json`; the stream itself is written from `BatchEvent`.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SseEventName {
    /// The whole batch (`BatchView`), first.
    Snapshot,
    /// One row changed (`RowView`).
    Row,
    /// The batch's totals changed (`BatchProgress`).
    Batch,
    /// The batch ended (`BatchView`); the stream closes.
    Done,
}

/// One event of the stream as a client reads it (`text/event-stream`). Comment lines (heartbeats)
/// and the `retry:` hint sent before the stream closes itself carry no data and are not events.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SseEvent {
    pub event: SseEventName,
    /// Resume after it with `Last-Event-ID`.
    pub id: String,
    /// The event's JSON body.
    pub data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

/// Progress of a batch as Server-Sent Events: `snapshot`, then `row` and `batch` events, `done`.
#[utoipa::path(get, path = "/v1/batches/{id}/events", tag = "relay",
    params(
        ("id" = String, Path, description = "Batch id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "An event stream; each event is one `SseEvent`", content_type = "text/event-stream", body = SseEvent),
        (status = 403, description = "Signed in, but not on the allow-list", body = Problem, content_type = "application/problem+json"),
        BatchReadProblems,
    ))]
pub async fn batch_events(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    Extension(hub): Extension<Arc<TailHub>>,
    connection: Option<Extension<ConnectInfo<Connection>>>,
    version: Version,
) -> Result<Response, Problem> {
    let batch_id = state.authorize_read(&headers, query.access_token.as_deref(), &id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id)
        .and_then(|raw| Cursor::parse(&raw));
    let presenter = state.presenter(&headers);
    let shared = hub.tail(&batch_id, presenter).await?;
    let shared_for_linger = shared.clone();
    let (initial, live) = shared.join(resume.clone()).await;
    let follow = Follow {
        config: state.config.clone(),
        shared,
        live,
        pending: initial.into(),
        client: resume.unwrap_or_default(),
        deadline: Instant::now() + state.config.max_stream,
        closing: false,
        queued: GaugeShare::new(metrics::gauge!(names::RELAY_QUEUED_EVENTS)),
        _connected: GaugeGuard::new(metrics::gauge!(names::RELAY_CLIENTS)),
        _linger: Linger::new(shared_for_linger, state.config.tail_linger),
    };
    let sse = Sse::new(stream(follow)).keep_alive(KeepAlive::new().interval(state.config.heartbeat).text("heartbeat"));
    let mut response = sse.into_response();
    // Nginx-style proxies (and Cloud Run's front end) must not buffer the stream.
    response.headers_mut().insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    // One response at a time on an HTTP/1 connection: its bytes written are this stream's.
    if let Some(Extension(ConnectInfo(connection))) = connection.filter(|_| version <= Version::HTTP_11) {
        response = response.map(|body| Body::new(Unsent::new(body, connection.writes)));
    }
    Ok(response)
}

struct Follow {
    config: RelayConfig,
    shared: Arc<SharedTail>,
    live: broadcast::Receiver<Sequenced>,
    pending: VecDeque<Sequenced>,
    /// What the client has: a row event it covers is not sent again (events a lagging client
    /// caught up on, or rows its resume cursor named), and every id sent is this cursor.
    client: Cursor,
    deadline: Instant,
    closing: bool,
    /// `pending`'s length in the relay's queued-events gauge. It is bounded by the batch: a join or
    /// a catch-up queues at most one event per row plus the totals and `done`, and live events are
    /// taken off the broadcast one at a time, only when the client's connection asks for more.
    queued: GaugeShare,
    /// Counts this client among the connected ones until the stream is dropped.
    _connected: GaugeGuard,
    /// Keeps the tail a while after this stream ends, for the client's reconnect.
    _linger: Linger,
}

fn to_sse(id: &Cursor, event: &BatchEvent) -> Event {
    Event::default().event(event.name()).id(id.to_string()).data(event.data_json())
}

fn stream(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follow, |mut f| async move {
        loop {
            f.queued.set(f.pending.len() as f64);
            if let Some(next) = f.pending.pop_front() {
                if next.row.is_some_and(|(row, generation)| f.client.covers(row, generation)) {
                    continue;
                }
                if matches!(next.event, BatchEvent::Done(_)) {
                    f.closing = true;
                }
                // Both claims hold for this client: it had `client`, and it now has every event
                // of the tail up to this one.
                f.client = merge(&f.client, &next.id);
                return Some((Ok(to_sse(&f.client, &next.event)), f));
            }
            if f.closing {
                return None;
            }
            let now = Instant::now();
            if now >= f.deadline {
                // Close before the platform cuts us off, and say when to come back: the client
                // resumes with Last-Event-ID and loses nothing.
                f.closing = true;
                let jitter = rand::rng().random_range(0..=f.config.retry_jitter.as_millis() as u64);
                let retry = f.config.retry_base + std::time::Duration::from_millis(jitter);
                return Some((Ok(Event::default().retry(retry).comment("stream lifetime reached; reconnect")), f));
            }
            match tokio::time::timeout_at(f.deadline, f.live.recv()).await {
                Ok(Ok(event)) => f.pending.push_back(event),
                // Fell behind the broadcast buffer: catch up from the tail's state.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    let missed = f.shared.catch_up(f.client.clone()).await;
                    f.pending.extend(missed);
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                Err(_) => {} // the deadline: handled at the top of the loop
            }
        }
    })
}
