//! An in-process queue that behaves like a Pub/Sub push subscription: it POSTs the same envelope
//! over HTTP to the generate handler, treats 2xx as ack and anything else (or a time-out) as nack,
//! redelivers with exponential backoff (or after the answer's `Retry-After`), and after
//! `max_delivery_attempts` failed deliveries sends the message to the dead-letter endpoint with
//! Pub/Sub's dead-letter attributes. So `assetgen serve` exercises the same handler code, over the
//! same wire format, as the cloud.
//!
//! Unlike Pub/Sub, a 429 (the row waits for the model's quota) is not counted as a failed
//! delivery: dead-lettering means the row kept failing, never that it had to wait.

use super::{DEAD_LETTER_DELIVERY_COUNT, DEAD_LETTER_SUBSCRIPTION, PushEnvelope, QueueError, RowMessage, RowQueue};
use crate::store::{ObjectStore, Precondition, read_json, write_json};
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

#[derive(Debug, Clone)]
pub struct LocalPushConfig {
    /// `http://host:port/pubsub/rows`
    pub push_endpoint: url::Url,
    /// `http://host:port/pubsub/dead-letter`
    pub dead_letter_endpoint: url::Url,
    /// Failed deliveries before a message is dead-lettered (Pub/Sub's minimum is 5); 429s
    /// (quota waits) are not counted.
    pub max_delivery_attempts: u32,
    /// Retry policy, as Pub/Sub's `minimumBackoff`/`maximumBackoff` (there 10 s / 600 s).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a push may take before it counts as a nack (Pub/Sub's ack deadline).
    pub ack_deadline: Duration,
    /// Pushes in flight at once (Pub/Sub's push flow control).
    pub max_outstanding: usize,
    pub subscription: String,
    /// Fault injection: deliver every message this many times, independently (at-least-once).
    pub duplicates: u32,
    /// Sent as `Authorization: Bearer` on every push: `assetgen serve` under OIDC accepts its own
    /// queue's pushes by this per-process secret ([`crate::auth::LocalPushAuth`]).
    pub bearer: Option<crate::config::Secret>,
}

impl LocalPushConfig {
    pub fn for_base(base: &url::Url) -> Result<Self, url::ParseError> {
        Ok(Self {
            push_endpoint: base.join("/pubsub/rows")?,
            dead_letter_endpoint: base.join("/pubsub/dead-letter")?,
            max_delivery_attempts: 5,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            ack_deadline: Duration::from_secs(600),
            max_outstanding: 8,
            subscription: "projects/local/subscriptions/rows-push".to_owned(),
            duplicates: 1,
            bearer: None,
        })
    }
}

/// Counters for tests and benchmarks.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub published: AtomicU64,
    pub deliveries: AtomicU64,
    pub acked: AtomicU64,
    pub nacked: AtomicU64,
    /// Nacks that asked the row to wait for the quota (429): redelivered, not counted.
    pub quota_waits: AtomicU64,
    pub dead_lettered: AtomicU64,
    pending: AtomicU64,
}

impl QueueStats {
    /// Messages published and not yet acknowledged (by generate or by the dead-letter handler).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
pub struct LocalPushQueue {
    inner: Arc<Inner>,
}

/// Where pending messages are journaled: one object per message until it is acked or
/// dead-lettered, so a killed process delivers them again when it starts.
const JOURNAL: &str = "queue/local/";

/// Journal writes in flight at once while publishing a batch.
const PARALLEL_JOURNAL_WRITES: usize = 16;

#[derive(Debug)]
struct Inner {
    config: LocalPushConfig,
    journal: Option<Arc<dyn ObjectStore>>,
    client: reqwest::Client,
    outstanding: Semaphore,
    stats: QueueStats,
    idle: Notify,
}

impl LocalPushQueue {
    /// A queue whose pending messages live only in memory (tests).
    pub fn new(config: LocalPushConfig) -> Self {
        Self::build(config, None)
    }

    /// A queue that journals pending messages in `store` and can [`resume`](Self::resume) them.
    pub fn journaled(config: LocalPushConfig, store: Arc<dyn ObjectStore>) -> Self {
        Self::build(config, Some(store))
    }

    fn build(config: LocalPushConfig, journal: Option<Arc<dyn ObjectStore>>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.ack_deadline)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let outstanding = Semaphore::new(config.max_outstanding.max(1));
        Self {
            inner: Arc::new(Inner {
                config,
                journal,
                client,
                outstanding,
                stats: QueueStats::default(),
                idle: Notify::new(),
            }),
        }
    }

    pub fn stats(&self) -> &QueueStats {
        &self.inner.stats
    }

    /// Delivers again every message a previous process journaled and did not finish. Returns how
    /// many there were.
    pub async fn resume(&self) -> Result<usize, QueueError> {
        let Some(store) = &self.inner.journal else { return Ok(0) };
        let unavailable = |e: crate::store::StoreError| QueueError::Unavailable(e.to_string());
        let pending = store.list(JOURNAL).await.map_err(unavailable)?;
        for meta in &pending {
            let envelope: PushEnvelope = read_json(store.as_ref(), &meta.name).await.map_err(unavailable)?.value;
            self.inner.spawn_deliveries(envelope);
        }
        Ok(pending.len())
    }

    /// Waits until every published message has been acknowledged or dead-lettered.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.stats.pending() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl RowQueue for LocalPushQueue {
    async fn publish(&self, messages: &[RowMessage]) -> Result<(), QueueError> {
        let publish_time =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let envelopes: Vec<PushEnvelope> = messages
            .iter()
            // Ids unique across restarts, since journaled messages outlive the process.
            .map(|m| {
                PushEnvelope::new(
                    &self.inner.config.subscription,
                    &uuid::Uuid::now_v7().to_string(),
                    m,
                    publish_time.clone(),
                )
            })
            .collect();
        if let Some(store) = &self.inner.journal {
            // Journaled (each write synced to disk) before any is delivered, several at a time.
            // Owned envelopes in `async move` blocks: borrowed ones would not make a `Send` future.
            futures::stream::iter(envelopes.clone())
                .map(|envelope| {
                    let (store, name) = (store.clone(), format!("{JOURNAL}{}.json", envelope.message.id()));
                    async move { write_json(store.as_ref(), &name, &envelope, Precondition::DoesNotExist).await }
                })
                .buffer_unordered(PARALLEL_JOURNAL_WRITES)
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        }
        for envelope in envelopes {
            self.inner.stats.published.fetch_add(1, Ordering::SeqCst);
            self.inner.spawn_deliveries(envelope);
        }
        Ok(())
    }
}

enum Outcome {
    Ack,
    /// `counts`: whether it brings the message closer to dead-lettering; `retry_after`: the
    /// answer's `Retry-After`.
    Nack {
        why: String,
        counts: bool,
        retry_after: Option<Duration>,
    },
}

/// Longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

fn nack(response: &reqwest::Response) -> Outcome {
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    let status = response.status();
    Outcome::Nack {
        why: format!("HTTP {status}"),
        counts: status != reqwest::StatusCode::TOO_MANY_REQUESTS,
        retry_after,
    }
}

impl Inner {
    fn spawn_deliveries(self: &Arc<Self>, envelope: PushEnvelope) {
        let copies = self.config.duplicates.max(1);
        self.stats.pending.fetch_add(u64::from(copies), Ordering::SeqCst);
        // The journal entry goes when the last copy is done: a copy acked as a duplicate of a row
        // another copy is generating must not take the message out of the journal while that copy
        // may still need redelivering after a crash.
        let remaining = Arc::new(AtomicU32::new(copies));
        for _ in 0..copies {
            tokio::spawn(self.clone().deliver(envelope.clone(), remaining.clone()));
        }
    }

    async fn push(&self, endpoint: &url::Url, envelope: &PushEnvelope) -> Outcome {
        let _permit = self.outstanding.acquire().await;
        self.stats.deliveries.fetch_add(1, Ordering::SeqCst);
        let mut request = self.client.post(endpoint.clone()).json(envelope);
        if let Some(bearer) = &self.config.bearer {
            request = request.bearer_auth(bearer.expose());
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Outcome::Ack,
            Ok(r) => nack(&r),
            Err(e) if e.is_timeout() => {
                Outcome::Nack { why: "ack deadline exceeded".to_owned(), counts: true, retry_after: None }
            }
            Err(e) => Outcome::Nack { why: format!("push failed: {e}"), counts: true, retry_after: None },
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.min_backoff)
            .with_max_delay(self.config.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    async fn deliver(self: Arc<Self>, mut envelope: PushEnvelope, remaining: Arc<AtomicU32>) {
        let mut delays = self.backoff();
        let (mut attempt, mut failures) = (0, 0);
        let acked = loop {
            attempt += 1;
            envelope.delivery_attempt = Some(attempt);
            let wait = match self.push(&self.config.push_endpoint, &envelope).await {
                Outcome::Ack => break true,
                Outcome::Nack { why, counts, retry_after } => {
                    self.stats.nacked.fetch_add(1, Ordering::SeqCst);
                    if counts {
                        failures += 1;
                    } else {
                        self.stats.quota_waits.fetch_add(1, Ordering::SeqCst);
                    }
                    tracing::info!(message_id = %envelope.message.id(), attempt, failures, %why, ?retry_after, "nacked; will redeliver");
                    retry_after
                }
            };
            if failures >= self.config.max_delivery_attempts {
                break false;
            }
            let backoff = delays.next().unwrap_or(self.config.max_backoff);
            tokio::time::sleep(wait.unwrap_or(backoff)).await;
        };
        if acked {
            self.stats.acked.fetch_add(1, Ordering::SeqCst);
        } else {
            self.dead_letter(envelope.clone(), failures).await;
        }
        let last_copy = remaining.fetch_sub(1, Ordering::SeqCst) == 1;
        if let (Some(store), true) = (&self.journal, last_copy) {
            let name = format!("{JOURNAL}{}.json", envelope.message.id());
            match store.delete(&name, Precondition::None).await {
                // Already gone: a previous run delivered it and died before its own delete.
                Ok(()) | Err(crate::store::StoreError::NotFound(_)) => {}
                // Left behind, it is delivered once more after a restart: harmless, generate absorbs it.
                Err(e) => tracing::warn!(%name, error = %e, "could not clear a delivered message from the journal"),
            }
        }
        self.stats.pending.fetch_sub(1, Ordering::SeqCst);
        self.idle.notify_waiters();
    }

    /// Pushes the dead-lettered copy until the dead-letter handler takes it: a dead-letter
    /// subscription retries forever, and losing it would leave the row running for ever.
    async fn dead_letter(&self, mut envelope: PushEnvelope, attempts: u32) {
        envelope.delivery_attempt = None;
        envelope.message.attributes.insert(DEAD_LETTER_DELIVERY_COUNT.to_owned(), attempts.to_string());
        envelope.message.attributes.insert(DEAD_LETTER_SUBSCRIPTION.to_owned(), self.config.subscription.clone());
        envelope.subscription = format!("{}-dead-letter", self.config.subscription);
        let mut delays = self.backoff();
        loop {
            let wait = match self.push(&self.config.dead_letter_endpoint, &envelope).await {
                Outcome::Ack => break,
                Outcome::Nack { why, retry_after, .. } => {
                    tracing::warn!(message_id = %envelope.message.id(), %why, "dead-letter push nacked; retrying");
                    retry_after
                }
            };
            tokio::time::sleep(wait.unwrap_or_else(|| delays.next().unwrap_or(self.config.max_backoff))).await;
        }
        self.stats.dead_lettered.fetch_add(1, Ordering::SeqCst);
        tracing::warn!(message_id = %envelope.message.id(), attempts, "message dead-lettered");
    }
}
