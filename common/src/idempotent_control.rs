//! `Idempotency-Key` on cancel and retry, as on submit: a request sent again with the same key
//! (a client that timed out, a double click) gets the first request's answer instead of doing it
//! again. Cancel and retry are already safe to repeat; the key makes the *answer* repeat too — a
//! second retry would otherwise answer `NOTHING_TO_RETRY`.
//!
//! `idempotency/{sha256(batch, key)}.json` is claimed create-only before the operation and holds
//! its outcome after it. A request that finds the claim waits for the outcome; if the first one
//! failed, its claim is removed (nothing was done, so the key may be used again); if it died, its
//! claim is taken over after [`ABANDONED_AFTER`].

use crate::batch_control::{BatchControl, ControlOutcome};
use crate::batch_view::store_problem;
use crate::domain::BatchId;
use crate::problem::{ErrorCode, Problem};
use crate::store::{Precondition, StoreError, read_json, write_json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    Cancel,
    Retry,
}

impl ControlOp {
    fn name(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Retry => "retry",
        }
    }
}

/// A claim older than this with no outcome belongs to a request that died.
const ABANDONED_AFTER: time::Duration = time::Duration::seconds(30);
/// How long a request waits for the outcome of the first one with its key.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Claim {
    batch_id: BatchId,
    request_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<ControlOutcome>,
}

/// What [`check_key`] accepts, for `/openapi.json` (HTTP has already dropped the white space
/// around a header value).
pub const KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// Checks an `Idempotency-Key` header value: 1 to 255 printable ASCII characters.
pub fn check_key(key: &str) -> Result<&str, Problem> {
    let key = key.trim();
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Problem::new(
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(key)
}

impl BatchControl {
    async fn run(&self, op: ControlOp, batch: &BatchId) -> Result<ControlOutcome, Problem> {
        match op {
            ControlOp::Cancel => self.cancel(batch).await,
            ControlOp::Retry => self.retry(batch).await,
        }
    }

    /// Cancel or retry `batch`, once per `key` when one is given.
    pub async fn once(&self, op: ControlOp, batch: &BatchId, key: Option<&str>) -> Result<ControlOutcome, Problem> {
        let Some(key) = key else { return self.run(op, batch).await };
        let key = check_key(key)?;
        let store = self.settlement.store.as_ref();
        let name = format!("idempotency/{}.json", hex::encode(Sha256::digest(format!("{batch}\n{key}").as_bytes())));
        let request_sha256 = hex::encode(Sha256::digest(op.name().as_bytes()));
        let started = tokio::time::Instant::now();
        loop {
            let fresh = Claim {
                batch_id: batch.clone(),
                request_sha256: request_sha256.clone(),
                created_at: OffsetDateTime::now_utc(),
                outcome: None,
            };
            let existing = match write_json(store, &name, &fresh, Precondition::DoesNotExist).await {
                Ok(generation) => return self.run_and_record(op, batch, &name, fresh, generation).await,
                Err(StoreError::PreconditionFailed(_)) => match read_json::<Claim>(store, &name).await {
                    Ok(c) => c,
                    Err(StoreError::NotFound(_)) => continue, // the first request failed and let go
                    Err(e) => return Err(store_problem(e)),
                },
                Err(e) => return Err(store_problem(e)),
            };
            let claim = existing.value;
            if claim.request_sha256 != request_sha256 || claim.batch_id != *batch {
                return Err(Problem::new(
                    ErrorCode::IdempotencyKeyReused,
                    format!(
                        "this key was already used to {} batch {}",
                        other_op(&claim.request_sha256),
                        claim.batch_id
                    ),
                ));
            }
            if let Some(outcome) = claim.outcome {
                return Ok(outcome);
            }
            let abandoned = OffsetDateTime::now_utc() - claim.created_at > ABANDONED_AFTER;
            if abandoned || started.elapsed() > WAIT {
                // The first request died, or is slow: the operation is safe to run again.
                return self.run_and_record(op, batch, &name, claim, existing.generation).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn run_and_record(
        &self,
        op: ControlOp,
        batch: &BatchId,
        name: &str,
        mut claim: Claim,
        generation: i64,
    ) -> Result<ControlOutcome, Problem> {
        let store = self.settlement.store.as_ref();
        let result = self.run(op, batch).await;
        match &result {
            Ok(outcome) => {
                claim.outcome = Some(outcome.clone());
                match write_json(store, name, &claim, Precondition::GenerationMatch(generation)).await {
                    // Another request took the claim over meanwhile: it records its own answer.
                    Ok(_) | Err(StoreError::PreconditionFailed(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "the outcome of a keyed {} was not recorded", op.name()),
                }
            }
            Err(_) => {
                // Nothing was done: the key may be used again.
                let _ = store.delete(name, Precondition::GenerationMatch(generation)).await;
            }
        }
        result
    }
}

fn other_op(request_sha256: &str) -> &'static str {
    [ControlOp::Cancel, ControlOp::Retry]
        .into_iter()
        .find(|op| hex::encode(Sha256::digest(op.name().as_bytes())) == request_sha256)
        .map_or("do something else to", ControlOp::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_says_what_check_key_accepts() {
        let pattern = regex::Regex::new(KEY_PATTERN).expect("pattern");
        let long = "k".repeat(255);
        let too_long = "k".repeat(256);
        for key in ["a", "0190d6a2-5b7e-7c3a", "!~", &long, "", &too_long, "a b", "é", "a\u{7f}", "tab\there"] {
            assert_eq!(pattern.is_match(key), check_key(key).is_ok(), "{key:?}");
        }
    }
}
