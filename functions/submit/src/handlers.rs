use crate::SubmitState;
use assetgen_common::api::{BatchRequest, BatchView, BudgetView, EstimateResponse, SubmitResponse};
use assetgen_common::batch_control::ControlOutcome;
use assetgen_common::batch_spec::parse_request;
use assetgen_common::batch_view::{self, Presenter};
use assetgen_common::domain::BatchId;
use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::request::{base_url, read_body};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;

async fn request(state: &SubmitState, body: Body) -> Result<BatchRequest, Problem> {
    let bytes = read_body(body, state.submitter.limits.max_body_bytes).await?;
    parse_request(&bytes)
}

/// Submit a batch: validate, estimate, reserve, store, queue one message per row.
#[utoipa::path(post, path = "/v1/batches", tag = "submit",
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first batch")),
    responses(
        (status = 202, description = "Accepted; rows are queued", body = SubmitResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Over the daily budget", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Too many rows or too large a body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid rows; every problem is listed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage or queue unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_batch(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SubmitResponse>), Problem> {
    let who = state.auth.authenticate(&headers).await?;
    let request = request(&state, body).await?;
    let base = base_url(state.public_url.as_ref(), &headers);
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => {
            return Err(Problem::new(ErrorCode::InvalidIdempotencyKey, "Idempotency-Key is not printable ASCII"));
        }
    };
    let accepted = state.submitter.submit(&who, &request, &base, key).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// What a batch would cost and the budget after it; nothing is written.
#[utoipa::path(post, path = "/v1/estimate", tag = "submit",
    request_body = BatchRequest,
    responses(
        (status = 200, body = EstimateResponse),
        (status = 422, description = "Invalid rows", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn estimate(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EstimateResponse>, Problem> {
    let who = state.auth.authenticate(&headers).await?;
    let request = request(&state, body).await?;
    Ok(Json(state.submitter.estimate(&who, &request).await?))
}

/// A batch's rows, statuses, errors and image links: what the Sheet writes back.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "submit",
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 200, body = BatchView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_batch(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, Problem> {
    state.auth.authenticate(&headers).await?;
    let stored = batch_view::load(state.store.as_ref(), &batch_id(&id)?).await?;
    let presenter = Presenter { base: base_url(state.public_url.as_ref(), &headers) };
    Ok(Json(presenter.view(&stored)))
}

/// The caller's budget for today (UTC).
#[utoipa::path(get, path = "/v1/budget", tag = "submit", responses((status = 200, body = BudgetView)))]
pub async fn get_budget(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
) -> Result<Json<BudgetView>, Problem> {
    let who = state.auth.authenticate(&headers).await?;
    let today = time::OffsetDateTime::now_utc().date();
    Ok(Json(state.submitter.budget.view(&who.user, today).await?))
}

fn batch_id(raw: &str) -> Result<BatchId, Problem> {
    BatchId::parse(raw).map_err(|e| Problem::new(ErrorCode::BatchNotFound, e.0))
}

/// Cancels the rows that have not started; their holds are freed. Rows being generated finish.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "submit",
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 200, description = "The rows cancelled", body = ControlOutcome),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ControlOutcome>, Problem> {
    state.auth.authenticate(&headers).await?;
    Ok(Json(state.control.cancel(&batch_id(&id)?).await?))
}

/// Queues the failed rows again, holding the money their missing images need first. Stored
/// images are kept and never paid twice.
#[utoipa::path(post, path = "/v1/batches/{id}/retry", tag = "submit",
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 200, description = "The rows queued again", body = ControlOutcome),
        (status = 402, description = "Over the daily budget", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No failed rows", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ControlOutcome>, Problem> {
    state.auth.authenticate(&headers).await?;
    Ok(Json(state.control.retry(&batch_id(&id)?).await?))
}
