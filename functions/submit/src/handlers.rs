use crate::SubmitState;
use assetgen_common::api::{
    BatchRequest, BatchView, BudgetView, ControlTokenResponse, EstimateResponse, ManagerTokenResponse, SubmitResponse,
};
use assetgen_common::auth::{BatchAction, CONTROL_TOKEN_TTL, PAGE_LINK_TTL, REFS_MANAGER_TOKEN_TTL, Scope};
use assetgen_common::batch_control::ControlOutcome;
use assetgen_common::batch_spec::parse_request;
use assetgen_common::batch_view::{self, Presenter};
use assetgen_common::domain::BatchId;
use assetgen_common::idempotent_control::ControlOp;
use assetgen_common::problem::{ErrorCode, Problem};
use assetgen_common::problem_responses::{BatchControlProblems, BatchProblems, BatchReadProblems, SignedInProblems};
use assetgen_common::request::{base_url, read_body};
use assetgen_common::submission::links;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;

async fn request(state: &SubmitState, body: Body) -> Result<BatchRequest, Problem> {
    let bytes = read_body(body, state.submitter.limits.max_body_bytes).await?;
    parse_request(&bytes)
}

/// `?access_token=` on a batch's own endpoints: a page link's read token (it reads the batch; it
/// never cancels or retries it, whatever token is put there).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct AccessToken {
    pub access_token: Option<String>,
}

/// Submit a batch: validate, estimate, reserve, store, queue one message per row.
#[utoipa::path(post, path = "/v1/batches", tag = "submit",
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first batch")),
    responses(
        (status = 202, description = "Accepted; rows are queued", body = SubmitResponse,
            links(
                ("GetBatch" = (operation_id = "get_batch", parameters(("id" = "$response.body#/batch_id")))),
                ("BatchEvents" = (operation_id = "batch_events", parameters(("id" = "$response.body#/batch_id")))),
                ("CancelBatch" = (operation_id = "cancel", parameters(("id" = "$response.body#/batch_id")))),
                ("RetryBatch" = (operation_id = "retry", parameters(("id" = "$response.body#/batch_id")))),
                ("ControlToken" = (operation_id = "control_token", parameters(("id" = "$response.body#/batch_id")))),
            )),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Over the daily budget", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Too many rows or too large a body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid rows; every problem is listed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage or queue unavailable", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Signed in, but not allowed to do this", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Live runs are not configured on this deployment", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_batch(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SubmitResponse>), Problem> {
    let who = state.access.authenticate(&headers).await?;
    let request = request(&state, body).await?;
    let base = base_url(state.public_url.as_ref(), &headers);
    let mut accepted = state.submitter.submit(&who, &request, &base, idempotency_key(&headers)?).await?;
    // The page and the event stream are opened by a browser, which sends no Authorization.
    let batch = BatchId::parse(&accepted.batch_id).map_err(|e| Problem::internal(e.0))?;
    let token = state.access.tokens.issue(&batch, &who.user, PAGE_LINK_TTL);
    for link in [&mut accepted.links.page, &mut accepted.links.events] {
        link.push_str(&format!("?access_token={token}"));
    }
    // `self` is this function's own route: where the request came, not the public URL (the
    // relay's, in the cloud, which serves the page, events and images but not the status).
    accepted.links.self_ = format!("{}/v1/batches/{batch}", base_url(None, &headers));
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// What a batch would cost and the budget after it; nothing is written.
#[utoipa::path(post, path = "/v1/estimate", tag = "submit",
    request_body = BatchRequest,
    responses(
        (status = 200, body = EstimateResponse),
        (status = 422, description = "Invalid rows", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Live runs are not configured on this deployment", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        SignedInProblems,
    ))]
pub async fn estimate(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EstimateResponse>, Problem> {
    let who = state.access.authenticate(&headers).await?;
    let request = request(&state, body).await?;
    Ok(Json(state.submitter.estimate(&who, &request).await?))
}

/// A batch's rows, statuses, errors and image links (`?sig=` links that need no header and never
/// expire): what the Sheet writes back. For its owner, an admin, or a page link's holder.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "submit",
    params(("id" = String, Path, description = "Batch id"), AccessToken),
    responses(
        (status = 200, body = BatchView),
        (status = 403, description = "Signed in, but not allowed to do this", body = Problem, content_type = "application/problem+json"),
        BatchReadProblems,
    ))]
pub async fn get_batch(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<AccessToken>,
) -> Result<Json<BatchView>, Problem> {
    let batch = authorized(&state, &headers, &id, &query, BatchAction::Read).await?;
    let stored = batch_view::load(state.store.as_ref(), &batch).await?;
    let presenter = Presenter::new(base_url(state.public_url.as_ref(), &headers), state.access.links.clone());
    Ok(Json(presenter.view(&stored)))
}

/// The caller's budget for today (UTC).
#[utoipa::path(get, path = "/v1/budget", tag = "submit", responses((status = 200, body = BudgetView), SignedInProblems))]
pub async fn get_budget(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
) -> Result<Json<BudgetView>, Problem> {
    let who = state.access.authenticate(&headers).await?;
    let today = time::OffsetDateTime::now_utc().date();
    Ok(Json(state.submitter.budget.view(&who.user, today).await?))
}

/// The batch a request names, once its caller may do `action` to it.
async fn authorized(
    state: &SubmitState,
    headers: &HeaderMap,
    id: &str,
    query: &AccessToken,
    action: BatchAction,
) -> Result<BatchId, Problem> {
    let (batch, _) =
        state.access.authorize(state.store.as_ref(), headers, query.access_token.as_deref(), id, action).await?;
    Ok(batch)
}

/// The `Idempotency-Key` header, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k)) => Ok(Some(k)),
        Some(Err(_)) => Err(Problem::new(ErrorCode::InvalidIdempotencyKey, "Idempotency-Key is not printable ASCII")),
    }
}

/// Cancels the rows that have not started; their holds are freed. Rows being generated finish.
/// For the batch's owner, an admin, or `Authorization: Bearer` with the batch's control token.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "submit",
    params(("id" = String, Path, description = "Batch id"), AccessToken,
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a repeated request return the first one's answer")),
    responses(
        (status = 200, description = "The rows cancelled", body = ControlOutcome),
        (status = 403, description = "A page link (read only), or an account not on the allow-list", body = Problem, content_type = "application/problem+json"),
        BatchControlProblems,
    ))]
pub async fn cancel(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<AccessToken>,
) -> Result<Json<ControlOutcome>, Problem> {
    control(&state, &headers, &id, &query, ControlOp::Cancel).await
}

/// Queues the failed rows again, holding the money their missing images need first (from the
/// owner's budget: so only the owner, or `Authorization: Bearer` with the batch's control token,
/// may retry). Stored images are kept and never paid twice.
#[utoipa::path(post, path = "/v1/batches/{id}/retry", tag = "submit",
    params(("id" = String, Path, description = "Batch id"), AccessToken,
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a repeated request return the first one's answer")),
    responses(
        (status = 200, description = "The rows queued again", body = ControlOutcome),
        (status = 402, description = "Over the daily budget", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A page link (read only), an admin who is not the owner, or an account not on the allow-list", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No failed rows", body = Problem, content_type = "application/problem+json"),
        BatchControlProblems,
    ))]
pub async fn retry(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<AccessToken>,
) -> Result<Json<ControlOutcome>, Problem> {
    control(&state, &headers, &id, &query, ControlOp::Retry).await
}

/// Cancel and retry, once the caller may do `op` to the batch: an `Idempotency-Key` makes a
/// repeated request return the first one's answer.
async fn control(
    state: &SubmitState,
    headers: &HeaderMap,
    id: &str,
    query: &AccessToken,
    op: ControlOp,
) -> Result<Json<ControlOutcome>, Problem> {
    let action = match op {
        ControlOp::Cancel => BatchAction::Cancel,
        ControlOp::Retry => BatchAction::Retry,
    };
    let batch = authorized(state, headers, id, query, action).await?;
    Ok(Json(state.control.once(op, &batch, idempotency_key(headers)?).await?))
}

/// A one-hour token that lets its bearer cancel and retry this batch, for its owner only (signed
/// in; not an admin, not a link). The Sheet and the CLI open `page`, which carries it in the URL
/// fragment; the page sends it as `Authorization: Bearer` on Cancel and Retry.
#[utoipa::path(post, path = "/v1/batches/{id}/control-token", tag = "submit",
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 200, body = ControlTokenResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "An admin who is not the owner, a link, or an account not on the allow-list", body = Problem, content_type = "application/problem+json"),
        BatchProblems,
    ))]
pub async fn control_token(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ControlTokenResponse>, Problem> {
    let (batch, caller) =
        state.access.authorize(state.store.as_ref(), &headers, None, &id, BatchAction::IssueControlToken).await?;
    let assetgen_common::auth::Caller::Owner(owner) = caller else {
        return Err(Problem::new(ErrorCode::Forbidden, "Only the batch's owner can get its control token."));
    };
    let tokens = &state.access.tokens;
    let token = tokens.issue_scoped(&batch, &owner.user, Scope::Control, CONTROL_TOKEN_TTL);
    let read = tokens.issue(&batch, &owner.user, PAGE_LINK_TTL);
    let base = base_url(state.public_url.as_ref(), &headers);
    let expires_at = time::OffsetDateTime::now_utc() + CONTROL_TOKEN_TTL;
    let page = format!("{}?access_token={read}#control={token}", links(&base, &batch).page);
    Ok(Json(ControlTokenResponse { batch_id: batch.to_string(), token, expires_at, page }))
}

/// A one-hour token that lets the reference manager page (`/refs`, served with the pages) act as
/// the signed-in caller on the reference library routes, and nothing else. Only a signed-in user
/// gets one (the Sheet's identity token, the CLI's): not a page link, a control token, or another
/// manager token, so a token never renews itself. The Sheet and the CLI open `page`, which carries
/// it in the URL fragment.
#[utoipa::path(post, path = "/v1/refs/manager-token", tag = "refs",
    responses(
        (status = 200, body = ManagerTokenResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not on the allow-list", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Sign-in checks unavailable: try again", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refs_manager_token(
    State(state): State<Arc<SubmitState>>,
    headers: HeaderMap,
) -> Result<Json<ManagerTokenResponse>, Problem> {
    let who = state.access.authenticate(&headers).await?;
    let token = state.access.tokens.issue_refs_manager(&who.user, REFS_MANAGER_TOKEN_TTL);
    let expires_at = time::OffsetDateTime::now_utc() + REFS_MANAGER_TOKEN_TTL;
    let page = format!("{}/refs#token={token}", base_url(state.public_url.as_ref(), &headers));
    Ok(Json(ManagerTokenResponse { token, expires_at, page }))
}
