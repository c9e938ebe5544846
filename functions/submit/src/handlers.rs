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
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;

async fn request(state: &SubmitState, body: Body) -> Result<BatchRequest, Problem> {
    let bytes = read_body(body, state.submitter.limits.max_body_bytes).await?;
    parse_request(&bytes)
}

/// How long a browser may follow a batch with the token in its links.
const CAPABILITY_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// `?access_token=` on a batch's own endpoints (a browser's capability token).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct AccessToken {
    pub access_token: Option<String>,
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
    let mut accepted = state.submitter.submit(&who, &request, &base, key).await?;
    if let Some(tokens) = &state.capabilities {
        // The page and the event stream are opened by a browser, which sends no Authorization.
        let batch = batch_id(&accepted.batch_id)?;
        let token = tokens.issue(&batch, &who.user, CAPABILITY_TTL);
        for link in [&mut accepted.links.page, &mut accepted.links.events] {
            link.push_str(&format!("?access_token={token}"));
        }
    }
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
    params(("id" = String, Path, description = "Batch id"), AccessToken),
    responses(
        (status = 200, body = BatchView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_batch(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<AccessToken>,
) -> Result<Json<BatchView>, Problem> {
    let batch = authorized(&state, &headers, &id, &query).await?;
    let stored = batch_view::load(state.store.as_ref(), &batch).await?;
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

/// The batch a request names, once its caller is allowed to see it.
async fn authorized(
    state: &SubmitState,
    headers: &HeaderMap,
    id: &str,
    query: &AccessToken,
) -> Result<BatchId, Problem> {
    let batch = batch_id(id)?;
    state.authorize(headers, query.access_token.as_deref(), &batch).await?;
    Ok(batch)
}

fn batch_id(raw: &str) -> Result<BatchId, Problem> {
    BatchId::parse(raw).map_err(|e| Problem::new(ErrorCode::BatchNotFound, e.0))
}

/// Cancels the rows that have not started; their holds are freed. Rows being generated finish.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "submit",
    params(("id" = String, Path, description = "Batch id"), AccessToken),
    responses(
        (status = 200, description = "The rows cancelled", body = ControlOutcome),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<AccessToken>,
) -> Result<Json<ControlOutcome>, Problem> {
    let batch = authorized(&state, &headers, &id, &query).await?;
    Ok(Json(state.control.cancel(&batch).await?))
}

/// Queues the failed rows again, holding the money their missing images need first. Stored
/// images are kept and never paid twice.
#[utoipa::path(post, path = "/v1/batches/{id}/retry", tag = "submit",
    params(("id" = String, Path, description = "Batch id"), AccessToken),
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
    Query(query): Query<AccessToken>,
) -> Result<Json<ControlOutcome>, Problem> {
    let batch = authorized(&state, &headers, &id, &query).await?;
    Ok(Json(state.control.retry(&batch).await?))
}
