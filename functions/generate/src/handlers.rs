use crate::{GenerateState, Redelivery};
use assetgen_common::generation::Delivery;
use assetgen_common::observe::{RequestContext, current_request_id, names, with_request};
use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::problem_responses::PushProblems;
use assetgen_common::queue::{PushEnvelope, RowMessage, RowQueue};
use assetgen_common::request::read_body;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use utoipa::ToSchema;

/// Push bodies are small JSON envelopes; anything larger is not from Pub/Sub.
const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Longest a push that found the quota taken is held before its row is published again: long
/// enough that a row waiting for the quota costs a publish and a push every half minute at most,
/// short enough that the push (already open for up to the pacer's `max_wait` and a call) stays
/// well within the subscription's ack deadline.
pub const MAX_DEFERRAL_HOLD: Duration = Duration::from_secs(30);

/// A pause when the model gave no delay.
const DEFAULT_DEFERRAL_HOLD: Duration = Duration::from_secs(5);

/// The answer to an acknowledged push (Pub/Sub only looks at the status; people read the body).
#[derive(Debug, Serialize, ToSchema)]
pub struct Acked {
    pub outcome: String,
    /// Why a message was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A push that carries one of our row messages, with the span and request context its work runs in.
struct RowPush {
    envelope: PushEnvelope,
    message: RowMessage,
    span: tracing::Span,
    context: RequestContext,
}

/// Reads a push: the Pub/Sub envelope, or the same body sent by an Eventarc trigger as a binary-mode
/// CloudEvent (`ce-type: google.cloud.pubsub.topic.v1.messagePublished`). `Err` is the push's
/// answer already. A body that is not an envelope is a client's mistake, never Pub/Sub's: 400. A
/// well-formed envelope whose data is not one of our row messages is acknowledged and logged,
/// since no redelivery can make it one (and a dead-letter subscription would redeliver it for ever).
async fn row_push(state: &GenerateState, headers: &HeaderMap, body: Body) -> Result<RowPush, Response> {
    state.auth.authenticate(headers).await.map_err(IntoResponse::into_response)?;
    let bytes = read_body(body, MAX_ENVELOPE_BYTES).await.map_err(IntoResponse::into_response)?;
    let envelope = PushEnvelope::parse(&bytes).map_err(|e| {
        let mut p = Problem::new(ErrorCode::InvalidJson, e.to_string());
        p.status = StatusCode::BAD_REQUEST.as_u16();
        p.into_response()
    })?;
    if let Some(ce_id) = headers.get("ce-id").and_then(|v| v.to_str().ok()) {
        tracing::debug!(ce_id, "push arrived as a CloudEvent");
    }
    let message = envelope.row_message().map_err(|e| dropped(e.to_string()))?;
    let (span, context) = row_scope(&envelope, &message);
    Ok(RowPush { envelope, message, span, context })
}

fn dropped(why: String) -> Response {
    tracing::error!(%why, "dropped an unreadable message");
    metrics::counter!(names::ROWS, "outcome" => "dropped").increment(1);
    Json(Acked { outcome: "dropped".into(), detail: Some(why) }).into_response()
}

/// The `outcome` label of a delivery in [`names::ROWS`].
fn outcome(delivery: &Result<Delivery, Problem>) -> String {
    match delivery {
        Ok(Delivery::Finished(status)) => format!("{status:?}").to_lowercase(),
        Ok(Delivery::AlreadyHandled) => "already_handled".into(),
        Ok(Delivery::Dropped(_)) => "dropped".into(),
        Ok(Delivery::Busy) => "busy".into(),
        Ok(Delivery::Retry { .. }) => "retry".into(),
        Err(_) => "error".into(),
    }
}

/// The span and request context a row's work runs in: the id of the request that queued it (the
/// submit), so its log lines and ledger events name that request, whatever delivered it.
fn row_scope(envelope: &PushEnvelope, message: &RowMessage) -> (tracing::Span, RequestContext) {
    let request_id = envelope.request_id().map(str::to_owned).or_else(current_request_id).unwrap_or_default();
    let span = tracing::info_span!("row", request_id = %request_id, batch_id = %message.batch_id, row = message.row);
    (span, RequestContext { request_id })
}

fn answer(delivery: Delivery) -> Response {
    match delivery {
        Delivery::Finished(status) => acked(&format!("{status:?}").to_lowercase()),
        Delivery::AlreadyHandled => acked("already_handled"),
        Delivery::Dropped(why) => {
            tracing::warn!(%why, "acknowledged a message that names nothing we know");
            Json(Acked { outcome: "dropped".into(), detail: Some(why) }).into_response()
        }
        // Answered by `push_row` according to the queue: never reached.
        Delivery::Busy => acked("busy"),
        Delivery::Retry { code, detail, retry_after } => {
            let mut response = Problem::new(code, detail).into_response();
            if !matches!(response.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            // Whole seconds, rounded up: coming back early only meets the same wait.
            let seconds = retry_after.map(|d| d.as_millis().div_ceil(1000).max(1));
            if let Some(after) = seconds.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, after);
            }
            response
        }
    }
}

fn acked(outcome: &str) -> Response {
    Json(Acked { outcome: outcome.to_owned(), detail: None }).into_response()
}

/// A row to generate, pushed by Pub/Sub (or the local queue). 2xx acks (also a duplicate of a row
/// another delivery holds, and behind Pub/Sub a row the quota kept waiting, once it is published
/// again); 429 nacks for the quota (the local queue does not count it), 503 for a passing failure.
#[utoipa::path(post, path = "/pubsub/rows", tag = "generate",
    request_body(content = PushEnvelope, description = "Pub/Sub push envelope; `message.data` is base64 JSON `{batch_id, row}`"),
    responses(
        (status = 200, description = "Acknowledged: done, already done, busy elsewhere, deferred, or dropped (data that is no row message, or names no batch we know)", body = Acked),
        (status = 429, description = "Rate limited: redeliver later", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: redeliver later", body = Problem, content_type = "application/problem+json"),
        PushProblems,
    ))]
pub async fn push_row(
    State(state): State<Arc<GenerateState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let RowPush { envelope, message, span, context } = row_push(&state, &headers, body).await?;
    let (span_again, context_again, message_again) = (span.clone(), context.clone(), message.clone());
    let (message_id, attempt) = (envelope.message.id().to_owned(), envelope.delivery_attempt());
    let worker = state.clone();
    let work = async move {
        tracing::info!(%message_id, attempt, "row delivered");
        worker.worker.process(&message).await
    };
    // The row runs in a task of its own: when the push is given up on (Pub/Sub's ack deadline,
    // the connection dropped), the row still finishes under its renewed lease instead of being
    // cut off mid-way, and the redelivery finds it held or done.
    let delivery = tokio::spawn(with_request(context, work).instrument(span))
        .await
        .unwrap_or_else(|e| Err(Problem::internal(format!("the row's task failed: {e}"))));
    metrics::counter!(names::ROWS, "outcome" => outcome(&delivery)).increment(1);
    Ok(match (delivery, &state.redelivery) {
        (Ok(Delivery::Retry { code: ErrorCode::ModelRateLimited, retry_after, .. }), Redelivery::Republish(queue)) => {
            // Only the quota stood in the way; a nack would bring the row closer to dead-lettering.
            let hold = retry_after.unwrap_or(DEFAULT_DEFERRAL_HOLD).min(MAX_DEFERRAL_HOLD);
            with_request(context_again, defer(queue.as_ref(), message_again, hold, "deferred"))
                .instrument(span_again)
                .await
        }
        (Ok(Delivery::Busy), Redelivery::Uncounted429) => busy_copy(),
        (Ok(Delivery::Busy), Redelivery::Republish(queue)) => {
            // The holder may be one whose own push already failed (a store outage it could not
            // give the row back through): then this copy is the row's last message. Held, then
            // published again, it looks until the holder is done or its lease has run out, with
            // no sweep involved and no attempt spent.
            let copy = defer(queue.as_ref(), message_again, MAX_DEFERRAL_HOLD, "busy");
            with_request(context_again, copy).instrument(span_again).await
        }
        (Ok(delivery), _) => answer(delivery),
        (Err(p), _) => p.into_response(),
    })
}

/// Behind the local queue, a copy that found its row held comes back in a moment, uncounted: if
/// the holder's own push was given up on (it outlived its ack deadline) and the holder then gives
/// the row back, this copy is the row's only message.
fn busy_copy() -> Response {
    let problem = Problem::new(
        ErrorCode::RowInProgress,
        "another delivery is generating this row; this copy looks again shortly",
    );
    let mut response = problem.into_response();
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(BUSY_COPY_RETRY_SECS));
    response
}

/// When a copy that found its row held looks again.
const BUSY_COPY_RETRY_SECS: &str = "1";

/// A row the quota kept waiting (it is queued again, as it stood): once the quota may have room,
/// it is published again as a fresh message and this push is acknowledged. If the publish fails,
/// the push is nacked instead (Pub/Sub redelivers it).
async fn defer(queue: &dyn RowQueue, message: RowMessage, hold: Duration, outcome: &str) -> Response {
    tracing::info!(?hold, outcome, "the row is published again after the hold");
    tokio::time::sleep(hold).await;
    match queue.publish(std::slice::from_ref(&message)).await {
        Ok(()) => acked(outcome),
        Err(e) => {
            Problem::new(ErrorCode::QueueUnavailable, format!("the row waits for the quota: {e}")).into_response()
        }
    }
}

/// A row that failed on every delivery: marked failed with `DEAD_LETTERED`.
#[utoipa::path(post, path = "/pubsub/dead-letter", tag = "generate",
    request_body(content = PushEnvelope, description = "Pub/Sub push envelope of the dead-letter subscription"),
    responses(
        (status = 200, description = "Acknowledged: the row failed, had ended, or the message was dropped", body = Acked),
        (status = 503, description = "Row still held by a delivery, or storage unavailable: redeliver later", body = Problem, content_type = "application/problem+json"),
        PushProblems,
    ))]
pub async fn dead_letter(
    State(state): State<Arc<GenerateState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let RowPush { envelope, message, span, context } = row_push(&state, &headers, body).await?;
    let work = async {
        tracing::warn!(deliveries = envelope.delivery_attempt(), "row dead-lettered");
        state.worker.dead_letter(&message, envelope.delivery_attempt()).await
    };
    let delivery = with_request(context, work).instrument(span).await;
    let label = if matches!(delivery, Ok(Delivery::Finished(_))) { "dead_lettered".into() } else { outcome(&delivery) };
    metrics::counter!(names::ROWS, "outcome" => label).increment(1);
    Ok(match delivery {
        // A live delivery still holds the row: ask again later (a dead-letter subscription has no
        // attempts to spend) rather than fail a row that may yet succeed.
        Ok(Delivery::Busy) => {
            Problem::new(ErrorCode::RowInProgress, "a delivery is still generating this row").into_response()
        }
        Ok(delivery) => answer(delivery),
        Err(p) => p.into_response(),
    })
}
