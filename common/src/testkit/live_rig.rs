//! The rig money tests share: a pipeline that spends real money, with a daily budget on its own
//! store and a live model (by default one that refuses the scenes it is told to block).

use super::Rig;
use crate::budget::{DailyBudget, UserLimits};
use crate::domain::Money;
use crate::model::{DryRunModel, GeneratedImage, ImageModel, ImageRequest, ModelError};
use crate::pipeline::Parts;
use crate::problem::ErrorCode;
use crate::store::ObjectStore;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A live model for tests: the dry-run placeholder, paid for as a live image, except for the
/// scenes it is told to block, which fail as Gemini's safety block does (no retry, nothing spent).
#[derive(Debug, Default)]
pub struct BlockingModel {
    blocked: Mutex<Vec<String>>,
}

impl BlockingModel {
    /// From now on, `scenes` are refused.
    pub fn block<S: Into<String>>(&self, scenes: impl IntoIterator<Item = S>) {
        self.lock().extend(scenes.into_iter().map(Into::into));
    }

    /// From now on, every scene works.
    pub fn unblock_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ImageModel for BlockingModel {
    fn is_live(&self) -> bool {
        true
    }

    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        if self.lock().contains(&request.scene_id) {
            return Err(ModelError::Permanent { code: ErrorCode::ContentBlocked, detail: "IMAGE_SAFETY".into() });
        }
        DryRunModel.generate(request).await
    }
}

/// Every user's daily budget on `store`: `limit_usd` dollars a day, no overrides.
pub fn daily_budget(store: &Arc<dyn ObjectStore>, limit_usd: i64) -> Arc<DailyBudget> {
    Arc::new(DailyBudget {
        store: store.clone(),
        limits: UserLimits { default: Money::from_micros(limit_usd * 1_000_000), overrides: HashMap::new() },
    })
}

/// Adjusts a rig's parts before assembly.
type Tune = Box<dyn FnOnce(&mut Parts)>;

/// Builds a [`Rig`] that spends money: `LiveRig::on(store).daily_limit_usd(10).model(m).build()`.
/// Unless told otherwise: $10 a day and a fresh [`BlockingModel`].
pub struct LiveRig {
    store: Arc<dyn ObjectStore>,
    limit_usd: i64,
    model: Arc<dyn ImageModel>,
    tune: Option<Tune>,
}

impl LiveRig {
    pub fn on(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, limit_usd: 10, model: Arc::new(BlockingModel::default()), tune: None }
    }

    pub fn daily_limit_usd(mut self, usd: i64) -> Self {
        self.limit_usd = usd;
        self
    }

    /// The model live rows are made with.
    pub fn model(mut self, model: Arc<dyn ImageModel>) -> Self {
        self.model = model;
        self
    }

    /// Adjusts the other parts (prices, lease time…) before assembly.
    pub fn tune(mut self, tune: impl FnOnce(&mut Parts) + 'static) -> Self {
        self.tune = Some(Box::new(tune));
        self
    }

    pub fn build(self) -> Rig {
        let budget = daily_budget(&self.store, self.limit_usd);
        let (model, tune) = (self.model, self.tune);
        Rig::on(self.store, move |p| {
            p.budget = budget;
            p.live = Some(model);
            if let Some(tune) = tune {
                tune(p);
            }
        })
    }
}
