//! From an HTTP answer of `generateContent` to an image or a [`ModelError`] (DESIGN.md "Semantics
//! that matter"): 429 and 5xx are retried by the queue (honouring `RetryInfo`), a per-day quota, a
//! safety block and a bad request fail the row with a sentence that says what to change.

use super::wire::{ErrorEnvelope, GenerateContentResponse, GoogleError};
use crate::model::{GeneratedImage, ModelError};
use crate::problem::ErrorCode;
use crate::refs::fetch::sniff_image_type;
use base64::Engine as _;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::Duration;

/// Longest text of Google's we copy into a detail.
const MAX_QUOTED: usize = 400;

fn permanent(code: ErrorCode, detail: impl Into<String>) -> ModelError {
    ModelError::Permanent { code, detail: detail.into() }
}

fn retryable(code: ErrorCode, detail: impl Into<String>, retry_after: Option<Duration>) -> ModelError {
    ModelError::Retryable { code, detail: detail.into(), retry_after }
}

/// Text from Google, cut to a readable length on a character boundary.
fn quoted(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= MAX_QUOTED {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_QUOTED).collect();
    cut.push('…');
    cut
}

/// A protobuf `Duration` in JSON: decimal seconds with an `s` suffix ("17s", "0.5s", "1.000340s").
pub(super) fn parse_proto_duration(raw: &str) -> Option<Duration> {
    let seconds: f64 = raw.trim().strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// `Retry-After`: delay-seconds, or an HTTP-date (the delay until then; zero if it has passed).
pub(super) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// A per-day quota (the day's allowance, not a per-minute rate): retrying today will not help.
fn is_per_day(quota: &str) -> bool {
    let quota = quota.to_ascii_lowercase();
    quota.contains("perday") || quota.contains("per_day") || quota.contains("per-day")
}

/// A non-2xx answer. `secret` (the API key) is removed from anything Google's text echoes back.
pub(super) fn from_status(status: StatusCode, headers: &HeaderMap, body: &[u8], secret: Option<&str>) -> ModelError {
    let google = serde_json::from_slice::<ErrorEnvelope>(body).map(|e| e.error).unwrap_or_default();
    let redact = |text: &str| match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "***"),
        _ => text.to_owned(),
    };
    let message = redact(&quoted(&google.message));
    let said = if message.is_empty() {
        format!("HTTP {status}")
    } else if google.status.is_empty() {
        format!("HTTP {status}: {message}")
    } else {
        format!("HTTP {status} {}: {message}", google.status)
    };

    match status {
        StatusCode::TOO_MANY_REQUESTS => rate_limited(&google, headers, &said),
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => retryable(
            ErrorCode::ModelUnavailable,
            format!("the image model is unavailable ({said}); the row is retried later"),
            parse_retry_after(headers).or_else(|| google.retry_delay()),
        ),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => permanent(
            ErrorCode::ModelRejected,
            format!(
                "the image model refused our credentials ({said}); check that the API key or the service \
                 account is valid and allowed to use the model and that the API is enabled for the project"
            ),
        ),
        StatusCode::BAD_REQUEST if google.reason() == Some("API_KEY_INVALID") => permanent(
            ErrorCode::ModelRejected,
            format!("the image model refused the API key ({said}); set a valid GEMINI_API_KEY"),
        ),
        StatusCode::BAD_REQUEST => permanent(
            ErrorCode::ModelRejected,
            format!("the image model rejected the request ({said}); change the prompt or the references"),
        ),
        StatusCode::NOT_FOUND => permanent(
            ErrorCode::ModelRejected,
            format!("the image model or its endpoint was not found ({said}); check the model name and the region"),
        ),
        _ => permanent(ErrorCode::ModelRejected, format!("the image model refused the request ({said})")),
    }
}

fn rate_limited(google: &GoogleError, headers: &HeaderMap, said: &str) -> ModelError {
    let violations = google.quota_violations();
    if let Some(day) = violations.iter().find(|v| is_per_day(&v.quota_id) || is_per_day(&v.quota_metric)) {
        let quota = if day.quota_id.is_empty() { &day.quota_metric } else { &day.quota_id };
        return permanent(
            ErrorCode::QuotaExhausted,
            format!(
                "the image model's daily quota {} is used up ({said}); retry the row tomorrow or raise the quota",
                quoted(quota)
            ),
        );
    }
    let quota = violations.first().map(|v| format!(" on {}", quoted(&v.quota_id))).unwrap_or_default();
    retryable(
        ErrorCode::ModelRateLimited,
        format!("the image model is rate limiting us{quota} ({said}); the row is retried after a pause"),
        google.retry_delay().or_else(|| parse_retry_after(headers)),
    )
}

/// What a `finishReason` (or `blockReason`) means for the user, if it is a content block.
fn block_advice(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "SAFETY" | "IMAGE_SAFETY" => {
            "it was blocked by the safety filters: rephrase the prompt or use other references"
        }
        "PROHIBITED_CONTENT" | "IMAGE_PROHIBITED_CONTENT" => {
            "it was judged prohibited content: remove what is prohibited from the prompt or the references"
        }
        "BLOCKLIST" => "the prompt contains a blocked term: remove it",
        "SPII" => "the prompt or references contain sensitive personal information: remove it",
        "RECITATION" | "IMAGE_RECITATION" => {
            "it resembles protected existing work too closely: describe an original image instead"
        }
        "NO_IMAGE" => "the model made no image: ask plainly for an image in the prompt",
        "IMAGE_OTHER" => "the model declined to make the image: rephrase the prompt or use other references",
        "OTHER" | "JAILBREAK" => "the prompt was refused: rephrase it",
        _ => return None,
    })
}

/// A 2xx answer: the last non-thought `inlineData` part of the first candidate, or why there is none.
pub(super) fn from_success(body: &[u8]) -> Result<GeneratedImage, ModelError> {
    let response: GenerateContentResponse = serde_json::from_slice(body).map_err(|e| {
        permanent(
            ErrorCode::ModelRejected,
            format!("the image model answered with a body that is not a generateContent response ({e})"),
        )
    })?;

    if let Some(feedback) = &response.prompt_feedback
        && let Some(reason) =
            feedback.block_reason.as_deref().filter(|r| !r.is_empty() && *r != "BLOCK_REASON_UNSPECIFIED")
    {
        let advice = block_advice(reason).unwrap_or("rephrase the prompt or use other references");
        let message = feedback.block_reason_message.as_deref().map(|m| format!(" ({})", quoted(m))).unwrap_or_default();
        return Err(permanent(
            ErrorCode::ContentBlocked,
            format!("the prompt was blocked ({reason}){message}: {advice}"),
        ));
    }

    let Some(candidate) = response.candidates.first() else {
        return Err(permanent(ErrorCode::ModelRejected, "the image model answered with no candidate and no reason"));
    };
    let parts = candidate.content.as_ref().map(|c| c.parts.as_slice()).unwrap_or_default();
    if let Some(blob) = parts.iter().rev().filter(|p| p.thought != Some(true)).find_map(|p| p.inline_data.as_ref()) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(blob.data.trim()).map_err(|e| {
            permanent(ErrorCode::ModelRejected, format!("the image model's image is not valid base64 ({e})"))
        })?;
        if bytes.is_empty() {
            return Err(permanent(ErrorCode::ModelRejected, "the image model answered with an empty image"));
        }
        let mime_type = if blob.mime_type.is_empty() {
            sniff_image_type(&bytes).unwrap_or("application/octet-stream").to_owned()
        } else {
            blob.mime_type.clone()
        };
        return Ok(GeneratedImage {
            mime_type,
            bytes: Bytes::from(bytes),
            response_id: response.response_id.clone().filter(|id| !id.is_empty()),
            model_version: response.model_version.clone().filter(|v| !v.is_empty()),
        });
    }

    let reason = candidate.finish_reason.as_deref().unwrap_or("");
    let message = candidate.finish_message.as_deref().map(|m| format!(" ({})", quoted(m))).unwrap_or_default();
    if let Some(advice) = block_advice(reason) {
        return Err(permanent(ErrorCode::ContentBlocked, format!("no image was made ({reason}){message}: {advice}")));
    }
    let text: String = parts
        .iter()
        .filter(|p| p.thought != Some(true))
        .filter_map(|p| p.text.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    let reason = if reason.is_empty() { "no finish reason".to_owned() } else { format!("finish reason {reason}") };
    let detail = if text.trim().is_empty() {
        format!(
            "the image model answered without an image ({reason}){message}; rephrase the prompt to ask for an image"
        )
    } else {
        format!(
            "the image model answered with text instead of an image ({reason}): \"{}\"; rephrase the prompt to ask for an image",
            quoted(&text)
        )
    };
    Err(permanent(ErrorCode::ModelRejected, detail))
}

/// A transport failure: nothing (or not all) came back. Always worth another delivery.
pub(super) fn from_transport(error: &reqwest::Error, timeout: Duration) -> ModelError {
    let detail = if error.is_timeout() {
        format!("the image model did not answer within {} s; the row is retried later", timeout.as_secs_f64())
    } else if error.is_connect() {
        format!("could not connect to the image model ({}); the row is retried later", source_chain(error))
    } else {
        format!("the call to the image model failed ({}); the row is retried later", source_chain(error))
    };
    retryable(ErrorCode::ModelUnavailable, detail, None)
}

/// The error and its causes, without the URL (reqwest's own message names it).
fn source_chain(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() { "no further detail".to_owned() } else { parts.join(": ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn proto_durations_parse_whole_and_fractional_seconds() {
        assert_eq!(parse_proto_duration("17s"), Some(Duration::from_secs(17)));
        assert_eq!(parse_proto_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_proto_duration("1.000340s"), Some(Duration::from_micros(1_000_340)));
        assert_eq!(parse_proto_duration("17"), None);
        assert_eq!(parse_proto_duration("-1s"), None);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("30"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(30)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn per_day_quotas_are_recognised_by_id_or_metric() {
        assert!(is_per_day("GenerateRequestsPerDayPerProjectPerModel-FreeTier"));
        assert!(is_per_day("generativelanguage.googleapis.com/generate_requests_per_day"));
        assert!(!is_per_day("GenerateContentPaidTierInputTokensPerModelPerMinute"));
    }

    #[test]
    fn long_google_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let cut = quoted(&long);
        assert_eq!(cut.chars().count(), MAX_QUOTED + 1);
        assert!(cut.ends_with('…'));
    }
}
