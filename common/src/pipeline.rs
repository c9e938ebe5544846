//! The composition root: from a store, a queue, a budget and models to the workers every function
//! uses. `assetgen serve`, the cloud functions' mains and the tests all assemble the same way.

use crate::batch_control::BatchControl;
use crate::budget::Budget;
use crate::cost::{DEFAULT_MODEL, PriceTable};
use crate::domain::RefUrlPolicy;
use crate::generation::RowWorker;
use crate::limits::Limits;
use crate::model::{BatchApi, DryRunModel, ImageModel};
use crate::observe::{MeteredBudget, MeteredModel, MeteredQueue};
use crate::queue::RowQueue;
use crate::refs::fetch::{FetchPolicy, RefFetcher};
use crate::settlement::Settlement;
use crate::store::ObjectStore;
use crate::submission::Submitter;
use crate::sweep::Sweep;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Parts {
    pub store: Arc<dyn ObjectStore>,
    pub queue: Arc<dyn RowQueue>,
    pub budget: Arc<dyn Budget>,
    pub prices: PriceTable,
    pub dry_run: Arc<dyn ImageModel>,
    pub live: Option<Arc<dyn ImageModel>>,
    /// Gemini's Batch API for run mode `bulk`.
    pub batch_api: Option<Arc<dyn BatchApi>>,
    pub fetch: FetchPolicy,
    pub limits: Limits,
    pub ref_policy: RefUrlPolicy,
    pub default_model: String,
    /// How long a row's lease holds without renewal (renewed after every image).
    pub lease_ttl: Duration,
    /// A queued row older than this, with no delivery in sight, is published again by the sweep.
    pub sweep_grace: Duration,
}

impl Parts {
    /// The defaults of DESIGN.md around the given store, queue and budget.
    pub fn new(store: Arc<dyn ObjectStore>, queue: Arc<dyn RowQueue>, budget: Arc<dyn Budget>) -> Self {
        Self {
            store,
            queue,
            budget,
            prices: PriceTable::default(),
            dry_run: Arc::new(DryRunModel),
            live: None,
            batch_api: None,
            fetch: FetchPolicy::default(),
            limits: Limits::default(),
            ref_policy: RefUrlPolicy::default(),
            default_model: DEFAULT_MODEL.to_owned(),
            lease_ttl: Duration::from_secs(180),
            sweep_grace: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub submitter: Submitter,
    pub worker: RowWorker,
    pub control: BatchControl,
    pub sweep: Sweep,
}

impl Pipeline {
    /// Wires the parts into the workers. The model, queue and budget are wrapped in the metering
    /// decorators of [`crate::observe`] here, so every function counts the same things.
    pub fn assemble(mut parts: Parts) -> Self {
        parts.dry_run = MeteredModel::wrap(parts.dry_run);
        parts.live = parts.live.map(MeteredModel::wrap);
        parts.queue = MeteredQueue::wrap(parts.queue);
        parts.budget = MeteredBudget::wrap(parts.budget);
        let settlement = Settlement { store: parts.store.clone(), budget: parts.budget.clone() };
        let worker = RowWorker {
            store: parts.store.clone(),
            dry_run: parts.dry_run,
            live: parts.live.clone(),
            fetcher: RefFetcher::new(parts.fetch, parts.store.clone()),
            budget: parts.budget.clone(),
            max_refs: parts.limits.max_refs,
            lease_ttl: parts.lease_ttl,
            batch_api: parts.batch_api.clone(),
        };
        Self {
            submitter: Submitter {
                store: parts.store.clone(),
                queue: parts.queue.clone(),
                budget: parts.budget.clone(),
                prices: parts.prices,
                limits: parts.limits,
                ref_policy: parts.ref_policy,
                default_model: parts.default_model.clone(),
                live_available: parts.live.is_some(),
                bulk_available: parts.batch_api.is_some(),
            },
            control: BatchControl { settlement: settlement.clone(), queue: parts.queue.clone() },
            sweep: Sweep { settlement, queue: parts.queue, queued_grace: parts.sweep_grace, bulk: worker.bulk() },
            worker,
        }
    }
}
