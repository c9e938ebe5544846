//! The Pub/Sub adapter of the row queue, on the official `google-cloud-pubsub` crate.
//!
//! One [`RowQueue::publish`] call hands every message of the batch to the crate's publisher at
//! once (no `await` in between, so they land in the same pending batch), flushes it — one
//! `Publish` RPC for up to 1000 messages — and then awaits every message's result: `Ok` only when
//! Pub/Sub accepted all of them.
//!
//! The crate retries a failed `Publish` for 600 s by default; a submit request cannot wait that
//! long, so the publisher gets an explicit, short policy ([`PubSubPolicy`]: 10 s in all, 4
//! attempts, 200 ms → 2 s backoff). Its time limit also caps each attempt (the crate's retry loop
//! gives an attempt at most the time left), and the whole call is guarded by a time-out of our own
//! a little longer than that. What still fails becomes [`QueueError::Unavailable`].
//!
//! Against an emulator (`PUBSUB_EMULATOR_HOST`, e.g. `localhost:8085`) the crate speaks plain-text
//! gRPC to that address with anonymous credentials; otherwise TLS to Pub/Sub with Application
//! Default Credentials.

use super::{QueueError, RowMessage, RowQueue};
use async_trait::async_trait;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_pubsub::client::{Publisher, TopicAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::retry_policy::RetryableErrors;
use std::time::{Duration, Instant};

/// The most messages the crate puts in one `Publish` RPC (Pub/Sub's own limit).
const MAX_MESSAGES_PER_REQUEST: u32 = 1000;
/// How long a message waits for more before the crate sends its batch on its own. `publish`
/// flushes at once, so this only matters if a flush were lost; long enough that a batch being
/// queued is not cut in two by the timer.
const BATCH_DELAY: Duration = Duration::from_millis(250);
/// Slack on top of [`PubSubPolicy::total_timeout`] before our own guard gives up.
const GUARD_SLACK: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the topic before calling the queue down.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Retries and time-outs of one `publish` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubSubPolicy {
    /// Time for all attempts together; also caps each attempt.
    pub total_timeout: Duration,
    /// Attempts of a `Publish` RPC, the first included.
    pub max_attempts: u32,
    /// Backoff between attempts: doubles from `initial_backoff` up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for PubSubPolicy {
    fn default() -> Self {
        Self {
            total_timeout: Duration::from_secs(10),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// A [`RowQueue`] publishing to a Pub/Sub topic. Cheap to clone: clones share the publisher (one
/// background task and one gRPC channel).
#[derive(Debug, Clone)]
pub struct PubSubQueue {
    topic: String,
    emulator: bool,
    policy: PubSubPolicy,
    publisher: Publisher,
    /// For `ready`: reads the topic (one `GetTopic`), which needs `pubsub.topics.get` only.
    admin: TopicAdmin,
}

impl PubSubQueue {
    /// A queue on `projects/{project}/topics/{topic}` with the default [`PubSubPolicy`].
    /// `emulator_host` is the value of `PUBSUB_EMULATOR_HOST` (`localhost:8085` or
    /// `http://127.0.0.1:8085`); without it, Pub/Sub itself with Application Default Credentials.
    /// Nothing is sent yet: a missing topic or permission shows at the first publish.
    pub async fn connect(project: &str, topic: &str, emulator_host: Option<&str>) -> Result<Self, QueueError> {
        Self::connect_with(project, topic, emulator_host, PubSubPolicy::default()).await
    }

    /// [`connect`](Self::connect) with other retries and time-outs.
    pub async fn connect_with(
        project: &str,
        topic: &str,
        emulator_host: Option<&str>,
        policy: PubSubPolicy,
    ) -> Result<Self, QueueError> {
        check_id("project", project)?;
        check_id("topic", topic)?;
        let policy = PubSubPolicy {
            max_attempts: policy.max_attempts.max(1),
            max_backoff: policy.max_backoff.max(policy.initial_backoff),
            ..policy
        };
        let name = format!("projects/{project}/topics/{topic}");
        let retry = RetryableErrors.with_time_limit(policy.total_timeout).with_attempt_limit(policy.max_attempts);
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(policy.initial_backoff)
            .with_maximum_delay(policy.max_backoff)
            .with_scaling(2.0)
            .clamp();
        let mut builder = Publisher::builder(name.clone())
            .set_message_count_threshold(MAX_MESSAGES_PER_REQUEST)
            .set_delay_threshold(BATCH_DELAY)
            .with_retry_policy(retry)
            .with_backoff_policy(backoff);
        let emulator = emulator_host.map(str::trim).filter(|h| !h.is_empty());
        let mut admin = TopicAdmin::builder();
        if let Some(host) = emulator {
            let endpoint = if host.contains("://") { host.to_owned() } else { format!("http://{host}") };
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
            admin = admin
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
        }
        let admin = admin
            .build()
            .await
            .map_err(|e| QueueError::Unavailable(format!("cannot set up the Pub/Sub admin client for {name}: {e}")))?;
        let publisher = builder.build().await.map_err(|e| {
            let why = if emulator.is_some() {
                "cannot set up the Pub/Sub client for the emulator"
            } else {
                "cannot set up the Pub/Sub client (Application Default Credentials)"
            };
            QueueError::Unavailable(format!("{why} for {name}: {e}"))
        })?;
        Ok(Self { topic: name, emulator: emulator.is_some(), policy, publisher, admin })
    }

    /// `projects/{project}/topics/{topic}`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn policy(&self) -> PubSubPolicy {
        self.policy
    }

    /// Whether this queue talks to an emulator.
    pub fn is_emulator(&self) -> bool {
        self.emulator
    }
}

fn check_id(what: &str, id: &str) -> Result<(), QueueError> {
    let fine = !id.is_empty() && id.len() <= 255 && !id.contains('/') && !id.chars().any(char::is_whitespace);
    if fine {
        Ok(())
    } else {
        Err(QueueError::Unavailable(format!("the Pub/Sub {what} id {id:?} is not valid (no '/', spaces, 1–255 chars)")))
    }
}

fn to_message(row: &RowMessage) -> Result<Message, QueueError> {
    let data = serde_json::to_vec(row).map_err(|e| {
        QueueError::Unavailable(format!("cannot encode row {} of batch {}: {e}", row.row, row.batch_id))
    })?;
    Ok(Message::new().set_data(data).set_attributes(row.attributes()))
}

#[async_trait]
impl RowQueue for PubSubQueue {
    async fn publish(&self, messages: &[RowMessage]) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        let encoded = messages.iter().map(to_message).collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        // All handed over before the first await: they go out together.
        let pending: Vec<_> = encoded.into_iter().map(|m| self.publisher.publish(m)).collect();
        let all = async {
            self.publisher.flush().await;
            futures::future::join_all(pending).await
        };
        let guard = self.policy.total_timeout + GUARD_SLACK;
        let results = tokio::time::timeout(guard, all).await.map_err(|_| {
            QueueError::Unavailable(format!(
                "Pub/Sub did not confirm {} message(s) to {} within {:.1} s",
                messages.len(),
                self.topic,
                guard.as_secs_f64()
            ))
        })?;
        let failures: Vec<_> =
            results.iter().zip(messages).filter_map(|(r, m)| r.as_ref().err().map(|e| (m, e))).collect();
        match failures.first() {
            None => {
                tracing::debug!(topic = %self.topic, messages = messages.len(), elapsed_ms = started.elapsed().as_millis() as u64, "published");
                Ok(())
            }
            Some((first, error)) => {
                let detail = describe(*error);
                tracing::warn!(topic = %self.topic, failed = failures.len(), of = messages.len(), error = %detail, "publish failed");
                Err(QueueError::Unavailable(format!(
                    "Pub/Sub did not accept {} of {} message(s) to {} after {:.1} s (retried for up to {:.1} s, {} attempts); \
                     first failure, row {} of batch {}: {detail}",
                    failures.len(),
                    messages.len(),
                    self.topic,
                    started.elapsed().as_secs_f64(),
                    self.policy.total_timeout.as_secs_f64(),
                    self.policy.max_attempts,
                    first.row,
                    first.batch_id,
                )))
            }
        }
    }

    async fn ready(&self) -> Result<(), QueueError> {
        let get = self.admin.get_topic().set_topic(self.topic.clone()).send();
        match tokio::time::timeout(READY_TIMEOUT, get).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!("cannot read topic {}: {}", self.topic, describe(&e)))),
            Err(_) => Err(QueueError::Unavailable(format!(
                "topic {} did not answer within {} s",
                self.topic,
                READY_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// The error with its cause chain (the crate's `PublishError` wraps the RPC error).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_slashes_or_blanks_are_refused() {
        assert!(check_id("topic", "rows").is_ok());
        assert!(check_id("topic", "").is_err());
        assert!(check_id("topic", "projects/p/topics/rows").is_err());
        assert!(check_id("project", "my project").is_err());
    }

    #[test]
    fn a_message_carries_the_row_as_json_and_attributes() {
        let row = RowMessage { batch_id: crate::domain::BatchId::new(), row: 3 };
        let message = to_message(&row).expect("encodes");
        let back: RowMessage = serde_json::from_slice(&message.data).expect("json");
        assert_eq!(back, row);
        assert_eq!(message.attributes.get("row").map(String::as_str), Some("3"));
        assert_eq!(message.attributes.get("batch_id"), Some(&row.batch_id.to_string()));
    }

    #[tokio::test]
    async fn connecting_sends_nothing_and_keeps_the_policy() {
        let policy = PubSubPolicy { max_attempts: 0, ..PubSubPolicy::default() };
        let queue = PubSubQueue::connect_with("proj", "rows", Some("127.0.0.1:9"), policy).await.expect("client");
        assert_eq!(queue.topic(), "projects/proj/topics/rows");
        assert_eq!(queue.policy().max_attempts, 1);
        assert!(queue.is_emulator());
        assert!(queue.publish(&[]).await.is_ok());
    }
}
