//! Decorators that meter the ports: each wraps an adapter, passes every call through unchanged and
//! counts what happened. `Pipeline::assemble` and `cloud::store` put them around the real adapters,
//! so the domain code records nothing itself.

use super::names;
use crate::api::BudgetView;
use crate::budget::{Budget, Reservation};
use crate::domain::{BatchId, Money, UserId};
use crate::model::{GeneratedImage, ImageModel, ImageRequest, ModelError};
use crate::problem::{ErrorCode, Problem};
use crate::queue::{QueueError, RowMessage, RowQueue};
use crate::store::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use metrics::{counter, histogram};
use std::sync::Arc;
use std::time::Instant;
use time::Date;

/// Counts model calls, images, 429s and call latency.
#[derive(Debug)]
pub struct MeteredModel {
    inner: Arc<dyn ImageModel>,
    run_mode: &'static str,
}

impl MeteredModel {
    pub fn wrap(inner: Arc<dyn ImageModel>) -> Arc<dyn ImageModel> {
        let run_mode = if inner.is_live() { "live" } else { "dry_run" };
        Arc::new(Self { inner, run_mode })
    }
}

#[async_trait]
impl ImageModel for MeteredModel {
    fn is_live(&self) -> bool {
        self.inner.is_live()
    }

    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        let started = Instant::now();
        let result = self.inner.generate(request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ModelError::Retryable { .. }) => "retryable",
            Err(ModelError::Permanent { .. }) => "permanent",
        };
        let run_mode = self.run_mode;
        histogram!(names::MODEL_LATENCY, "run_mode" => run_mode, "result" => outcome)
            .record(started.elapsed().as_secs_f64());
        counter!(names::MODEL_CALLS, "run_mode" => run_mode, "result" => outcome).increment(1);
        match &result {
            Ok(_) => counter!(names::IMAGES, "run_mode" => run_mode).increment(1),
            Err(ModelError::Retryable { code: ErrorCode::ModelRateLimited, .. }) => {
                counter!(names::MODEL_RATE_LIMITED, "run_mode" => run_mode).increment(1);
            }
            Err(_) => {}
        }
        result
    }
}

/// Counts store calls by operation and result.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(Self { inner })
    }
}

fn count_store<T>(op: &'static str, result: &Result<T, StoreError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(StoreError::NotFound(_)) => "not_found",
        Err(StoreError::PreconditionFailed(_)) => "precondition_failed",
        Err(StoreError::InvalidName(_)) => "invalid",
        Err(StoreError::Unavailable(_)) => "unavailable",
    };
    counter!(names::STORE_CALLS, "op" => op, "result" => outcome).increment(1);
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        let result = self.inner.get(name).await;
        count_store("get", &result);
        result
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        let result = self.inner.put(name, body, content_type, when).await;
        count_store("put", &result);
        result
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let result = self.inner.list(prefix).await;
        count_store("list", &result);
        result
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        let result = self.inner.delete(name, when).await;
        count_store("delete", &result);
        result
    }

    fn settled_generation(&self) -> Option<Generation> {
        self.inner.settled_generation()
    }

    async fn signed_url(&self, name: &str, ttl: std::time::Duration) -> Result<Option<String>, StoreError> {
        self.inner.signed_url(name, ttl).await
    }
}

/// Counts messages published, by result.
#[derive(Debug)]
pub struct MeteredQueue {
    inner: Arc<dyn RowQueue>,
}

impl MeteredQueue {
    pub fn wrap(inner: Arc<dyn RowQueue>) -> Arc<dyn RowQueue> {
        Arc::new(Self { inner })
    }
}

#[async_trait]
impl RowQueue for MeteredQueue {
    async fn publish(&self, messages: &[RowMessage]) -> Result<(), QueueError> {
        let result = self.inner.publish(messages).await;
        let outcome = if result.is_ok() { "ok" } else { "unavailable" };
        counter!(names::QUEUE_PUBLISHED, "result" => outcome).increment(messages.len() as u64);
        result
    }

    async fn ready(&self) -> Result<(), QueueError> {
        self.inner.ready().await
    }
}

/// Counts refusals of the daily budget.
#[derive(Debug)]
pub struct MeteredBudget {
    inner: Arc<dyn Budget>,
}

impl MeteredBudget {
    pub fn wrap(inner: Arc<dyn Budget>) -> Arc<dyn Budget> {
        Arc::new(Self { inner })
    }
}

fn count_refusal<T>(result: &Result<T, Problem>) {
    if matches!(result, Err(p) if p.code == ErrorCode::BudgetExceeded) {
        counter!(names::BUDGET_REFUSALS).increment(1);
    }
}

#[async_trait]
impl Budget for MeteredBudget {
    async fn reserve(&self, user: &UserId, day: Date, batch: &BatchId, amount: Money) -> Result<Reservation, Problem> {
        let result = self.inner.reserve(user, day, batch, amount).await;
        count_refusal(&result);
        result
    }

    async fn extend(&self, user: &UserId, day: Date, batch: &BatchId, amount: Money) -> Result<Reservation, Problem> {
        let result = self.inner.extend(user, day, batch, amount).await;
        count_refusal(&result);
        result
    }

    async fn settle(&self, user: &UserId, day: Date, batch: &BatchId, spent: Money) -> Result<(), Problem> {
        self.inner.settle(user, day, batch, spent).await
    }

    async fn rounds(&self, user: &UserId, day: Date, batch: &BatchId) -> Result<Option<u32>, Problem> {
        self.inner.rounds(user, day, batch).await
    }

    async fn settle_unless_reopened(
        &self,
        user: &UserId,
        day: Date,
        batch: &BatchId,
        spent: Money,
        rounds: Option<u32>,
    ) -> Result<bool, Problem> {
        self.inner.settle_unless_reopened(user, day, batch, spent, rounds).await
    }

    async fn view(&self, user: &UserId, day: Date) -> Result<BudgetView, Problem> {
        self.inner.view(user, day).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DryRunModel;
    use crate::observe::lite::{LiteMetrics, LiteRecorder};

    /// A model that answers 429 to every call.
    #[derive(Debug)]
    struct Limited;

    #[async_trait]
    impl ImageModel for Limited {
        fn is_live(&self) -> bool {
            true
        }
        async fn generate(&self, _: &ImageRequest) -> Result<GeneratedImage, ModelError> {
            Err(ModelError::Retryable { code: ErrorCode::ModelRateLimited, detail: "429".into(), retry_after: None })
        }
    }

    fn request() -> ImageRequest {
        ImageRequest {
            model: "m".into(),
            scene_id: "S".into(),
            variant: 1,
            prompt: "p".into(),
            aspect_ratio: crate::domain::AspectRatio::default(),
            refs: Vec::new(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_model_decorator_counts_images_calls_and_429s_and_passes_results_through() {
        let lite = LiteMetrics::new();
        let recorder = LiteRecorder(lite.clone());
        let _guard = metrics::set_default_local_recorder(&recorder);
        let dry = MeteredModel::wrap(Arc::new(DryRunModel));
        let limited = MeteredModel::wrap(Arc::new(Limited));
        assert!(dry.generate(&request()).await.is_ok());
        assert!(limited.generate(&request()).await.is_err());
        assert!(limited.is_live() && !dry.is_live());
        let snap = lite.snapshot();
        assert_eq!(snap.totals[names::IMAGES], 1);
        assert_eq!(snap.totals[names::MODEL_CALLS], 2);
        assert_eq!(snap.counters["assetgen_model_rate_limited_total{run_mode=\"live\"}"], 1);
        assert_eq!(snap.histograms.values().map(|h| h.count).sum::<u64>(), 2);
    }
}
