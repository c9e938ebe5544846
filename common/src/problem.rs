//! RFC 7807 problem details and the closed set of error codes a user can meet.
//!
//! Every error that leaves the service is a [`Problem`]: a stable machine code ([`ErrorCode`]), a
//! human sentence that says what to do, and — for validation — the offending row and field.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stable, documented error code. Clients (the Sheet, the CLI, the page) switch on these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    // Request shape.
    InvalidJson,
    UnknownField,
    PayloadTooLarge,
    // Batch and row validation.
    BatchEmpty,
    TooManyRows,
    DuplicateSceneId,
    InvalidSceneId,
    InvalidPrompt,
    InvalidVariants,
    TooManyRefs,
    InvalidRefUrl,
    InvalidRefMode,
    InvalidAspectRatio,
    InvalidRunMode,
    UnknownModel,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    NothingToRetry,
    LiveNotConfigured,
    // Access.
    Unauthenticated,
    Forbidden,
    NotFound,
    BatchNotFound,
    BudgetExceeded,
    // Row outcomes.
    RefFetchFailed,
    RefNotImage,
    RefTooLarge,
    RefForbiddenAddress,
    RefForbiddenObject,
    ModelRateLimited,
    ModelUnavailable,
    ModelRejected,
    QuotaExhausted,
    ContentBlocked,
    DeadLettered,
    RowInProgress,
    BulkJobExpired,
    BulkJobFailed,
    // Infrastructure.
    StoreUnavailable,
    QueueUnavailable,
    AuthUnavailable,
    ShuttingDown,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidJson
            | BatchEmpty
            | DuplicateSceneId
            | InvalidSceneId
            | InvalidPrompt
            | InvalidVariants
            | TooManyRefs
            | InvalidRefUrl
            | InvalidRefMode
            | InvalidAspectRatio
            | InvalidRunMode
            | UnknownModel
            | UnknownField
            | InvalidIdempotencyKey
            | IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            NothingToRetry => StatusCode::CONFLICT,
            TooManyRows | PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            LiveNotConfigured => StatusCode::CONFLICT,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            Forbidden | RefForbiddenAddress | RefForbiddenObject => StatusCode::FORBIDDEN,
            NotFound | BatchNotFound => StatusCode::NOT_FOUND,
            BudgetExceeded => StatusCode::PAYMENT_REQUIRED,
            ModelRateLimited => StatusCode::TOO_MANY_REQUESTS,
            StoreUnavailable | QueueUnavailable | AuthUnavailable | ModelUnavailable | RowInProgress | ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RefFetchFailed | RefNotImage | RefTooLarge | ModelRejected | QuotaExhausted | ContentBlocked
            | DeadLettered | BulkJobExpired | BulkJobFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn title(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "The request body is not the JSON this endpoint expects",
            UnknownField => "The request has a field this endpoint does not know",
            PayloadTooLarge => "The request body is too large",
            BatchEmpty => "The batch has no rows",
            TooManyRows => "The batch has too many rows",
            DuplicateSceneId => "Two rows share a scene_id",
            InvalidSceneId => "A scene_id is not valid",
            InvalidPrompt => "A prompt is not valid",
            InvalidVariants => "A variant count is out of range",
            TooManyRefs => "A row has too many reference images",
            InvalidRefUrl => "A reference URL is not valid",
            InvalidRefMode => "A reference mode is not valid",
            InvalidAspectRatio => "An aspect ratio is not supported",
            InvalidRunMode => "The run mode is not valid",
            UnknownModel => "The image model is not known",
            InvalidIdempotencyKey => "The Idempotency-Key header is not valid",
            IdempotencyKeyReused => "The Idempotency-Key was used for another request",
            NothingToRetry => "The batch has no failed rows to retry",
            LiveNotConfigured => "Live generation is not configured here",
            Unauthenticated => "Sign-in is required",
            Forbidden => "You are not allowed to do this",
            NotFound => "Nothing is here",
            BatchNotFound => "No such batch",
            BudgetExceeded => "The daily budget would be exceeded",
            RefFetchFailed => "A reference image could not be fetched",
            RefNotImage => "A reference is not an image",
            RefTooLarge => "A reference image is too large",
            RefForbiddenAddress => "A reference points at an address that is not allowed",
            RefForbiddenObject => "A gs:// reference names an object it may not read",
            ModelRateLimited => "The image model is rate limiting us",
            ModelUnavailable => "The image model is unavailable",
            ModelRejected => "The image model rejected the request",
            QuotaExhausted => "The image model's daily quota is used up",
            ContentBlocked => "The image model blocked this content",
            DeadLettered => "The row failed on every delivery",
            RowInProgress => "Another delivery is generating this row",
            BulkJobExpired => "Google's batch expired before it made this row",
            BulkJobFailed => "Google's batch failed without making this row",
            StoreUnavailable => "Storage is unavailable",
            AuthUnavailable => "Sign-in cannot be checked right now",
            QueueUnavailable => "The work queue is unavailable",
            ShuttingDown => "This instance is shutting down",
            Internal => "Something went wrong on our side",
        }
    }

    /// What the user should do about it: shown under the error in the Sheet, the page and the CLI.
    pub fn advice(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "Send a JSON body shaped like the OpenAPI document at /openapi.json.",
            UnknownField => "Remove the field or check its spelling against /openapi.json.",
            PayloadTooLarge => "Send fewer rows per request.",
            BatchEmpty => "Select at least one row.",
            TooManyRows => "Split the selection into smaller batches.",
            DuplicateSceneId => "Give every row its own scene_id, or remove the repeated row.",
            InvalidSceneId => "Use 1–64 letters, digits, '-', '_' or '.', not starting with '.'.",
            InvalidPrompt => "Write a prompt that is not empty and within the length limit.",
            InvalidVariants => "Ask for 1, 2 or 3 variants.",
            TooManyRefs => "Use at most 6 distinct reference images per row, row and global refs together.",
            InvalidRefUrl => "Use an https:// or gs:// URL (separate several with '|').",
            InvalidRefMode => "Use style_only or style_and_composition.",
            InvalidAspectRatio => "Use one of 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9.",
            InvalidRunMode => "Use dry_run, live or bulk.",
            UnknownModel => "Pick one of the models listed by /v1/estimate, or leave it out.",
            InvalidIdempotencyKey => "Send 1 to 255 printable ASCII characters, e.g. a UUID.",
            IdempotencyKeyReused => "Use a new key for a new request; reuse a key only to retry the same request.",
            NothingToRetry => "Only failed rows are retried; this batch has none right now.",
            LiveNotConfigured => "Run a dry run, or set GEMINI_API_KEY and start the server with --live.",
            Unauthenticated => "Sign in again; your token is missing or expired.",
            Forbidden => "Ask an administrator to add your account to the allow-list.",
            NotFound => "Check the URL.",
            BatchNotFound => "Check the batch id; batches are kept in the bucket they were written to.",
            BudgetExceeded => "Submit fewer rows or variants, or wait for the budget to reset.",
            RefFetchFailed => "Check that the reference URL is reachable and public, then retry the row.",
            RefNotImage => "Point the reference at a PNG, JPEG, WebP or GIF image.",
            RefTooLarge => "Use a smaller reference image (at most 8 MiB).",
            RefForbiddenAddress => "Use a public https:// URL; private and internal addresses are refused.",
            RefForbiddenObject => {
                "Use a reference from the library (/refs) or an image of one of your own batches, in this deployment's bucket."
            }
            ModelRateLimited => "Nothing to do: the row is retried automatically after a pause.",
            ModelUnavailable => "Nothing to do: the row is retried automatically.",
            ModelRejected => "Shorten or rephrase the prompt, or use other references, then retry the row.",
            QuotaExhausted => "The day's quota is used up; retry the row tomorrow or raise the quota.",
            ContentBlocked => "Rephrase the prompt or change the references to avoid unsafe content, then retry.",
            DeadLettered => "Retry the row; if it fails again, check its prompt and references.",
            RowInProgress => "Nothing to do: this copy of the message is redelivered later.",
            BulkJobExpired => "Retry the row (nothing was charged for it), or run the batch live if it cannot wait.",
            BulkJobFailed => "Retry the row (nothing was charged for it); if it fails again, run it live.",
            StoreUnavailable => "Try again in a minute.",
            AuthUnavailable => "Try again in a minute.",
            QueueUnavailable => "Try again in a minute.",
            ShuttingDown => "Nothing to do: the row is delivered again and goes on where it stopped.",
            Internal => "Try again; if it keeps happening, report it with the request id.",
        }
    }

    /// The code in the `type` URI: `INVALID_SCENE_ID` → `invalid-scene-id`.
    pub fn slug(self) -> String {
        let json = serde_json::to_value(self).unwrap_or_default();
        json.as_str().unwrap_or("internal").to_ascii_lowercase().replace('_', "-")
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        f.write_str(json.as_str().unwrap_or("INTERNAL"))
    }
}

/// One offending field of one row (or of the batch, when `row` is absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub code: ErrorCode,
    /// Zero-based index of the row in the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene_id: Option<String>,
    /// JSON path of the field, e.g. `rows[3].variants`.
    pub field: String,
    pub detail: String,
}

/// An RFC 7807 problem document, served as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    /// What to do about it.
    pub advice: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// With `BUDGET_EXCEEDED`: the day's budget as it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::api::BudgetView>,
    /// With `BUDGET_EXCEEDED`: when the day's budget starts again (UTC midnight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:assetgen:problem:{}", code.slug()),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: detail.into(),
            code,
            advice: code.advice().to_owned(),
            errors: Vec::new(),
            instance: None,
            budget: None,
            resets_at: None,
        }
    }

    /// A validation problem: the first error names the code, all of them are listed so a user can
    /// fix the whole selection at once.
    pub fn from_field_errors(errors: Vec<FieldError>) -> Self {
        let first = errors.first().cloned().unwrap_or(FieldError {
            code: ErrorCode::InvalidJson,
            row: None,
            scene_id: None,
            field: String::new(),
            detail: "invalid request".into(),
        });
        let detail = if errors.len() > 1 {
            format!("{} (and {} more problems)", first.detail, errors.len() - 1)
        } else {
            first.detail.clone()
        };
        Self { errors, ..Self::new(first.code, detail) }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, detail)
    }

    /// The one answer for a batch that does not exist and for a batch the caller may not see: the
    /// same status and body, so an id's existence is never revealed to someone else.
    pub fn batch_not_found(batch: &str) -> Self {
        Self::new(ErrorCode::BatchNotFound, format!("batch {batch} does not exist"))
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        // For the shim's metrics: problems by code.
        response.extensions_mut().insert(self.code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_screaming_snake_and_slug_as_kebab() {
        assert_eq!(ErrorCode::InvalidSceneId.to_string(), "INVALID_SCENE_ID");
        assert_eq!(ErrorCode::InvalidSceneId.slug(), "invalid-scene-id");
        let p = Problem::new(ErrorCode::TooManyRows, "11 rows");
        assert_eq!(p.type_uri, "urn:assetgen:problem:too-many-rows");
        assert_eq!(p.status, 413);
    }

    #[test]
    fn problem_response_has_problem_content_type() {
        let response = Problem::new(ErrorCode::BatchNotFound, "x").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
    }

    #[test]
    fn several_field_errors_keep_the_first_code() {
        let err = |code| FieldError { code, row: Some(1), scene_id: None, field: "f".into(), detail: "d".into() };
        let p = Problem::from_field_errors(vec![err(ErrorCode::InvalidVariants), err(ErrorCode::InvalidPrompt)]);
        assert_eq!(p.code, ErrorCode::InvalidVariants);
        assert_eq!(p.errors.len(), 2);
        assert!(p.detail.contains("1 more"));
    }
}
