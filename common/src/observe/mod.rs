//! Seeing what the system does: metrics (Prometheus at `/metrics`, the same as JSON at
//! `/metrics-lite`, the last hour minute by minute for `/ops`), the request id that follows a batch
//! from submit through the queue into generate's logs and the ledger, and decorators that meter the
//! ports (model, store, queue, budget) without touching the domain.
//!
//! One global recorder per process ([`install`]): the `metrics` macros anywhere in the code record
//! into both the Prometheus exporter (without its HTTP listener: the shim serves `/metrics`) and
//! the lite recorder. Before `install`, the macros record nothing, so tests that do not care pay
//! nothing.

mod gauge_guard;
mod gauge_share;
mod lite;
mod metered;
pub mod names;
mod request_context;
mod timeline;

pub use gauge_guard::GaugeGuard;
pub use gauge_share::GaugeShare;
pub use lite::{HistogramSummary, LiteSnapshot};
pub use metered::{MeteredBudget, MeteredModel, MeteredQueue, MeteredStore};
pub use request_context::{RequestContext, current_request_id, with_request};
pub use timeline::{LastHour, MINUTES};

use lite::{LiteMetrics, LiteRecorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;
use std::sync::{Arc, Mutex, OnceLock};

/// Latency buckets (seconds) of every `*_seconds` histogram: from a fast store call to a slow
/// image.
const SECONDS_BUCKETS: &[f64] = &[0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0];

type Collector = Box<dyn Fn() + Send + Sync>;

/// The process's metrics: both views of the one global recorder.
pub struct Metrics {
    prometheus: Option<PrometheusHandle>,
    lite: Arc<LiteMetrics>,
    /// Called before every read: gauges that are sampled rather than pushed (queue depth).
    collectors: Mutex<Vec<Collector>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("prometheus", &self.prometheus.is_some()).finish_non_exhaustive()
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Installs the global recorder (once; later calls return the same) and returns the process's
/// metrics.
pub fn install() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let lite = LiteMetrics::new();
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let prometheus = builder.build_recorder();
        let handle = prometheus.handle();
        let fanout = FanoutBuilder::default().add_recorder(prometheus).add_recorder(LiteRecorder(lite.clone())).build();
        let installed = metrics::set_global_recorder(fanout).is_ok();
        if installed {
            names::describe();
        } else {
            tracing::warn!("another metrics recorder is installed: /metrics stays empty");
        }
        Metrics { prometheus: installed.then_some(handle), lite, collectors: Mutex::new(Vec::new()) }
    })
}

impl Metrics {
    /// Runs `collect` before every read of the metrics: for values read from elsewhere on demand.
    pub fn on_read(&self, collect: impl Fn() + Send + Sync + 'static) {
        self.collectors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Box::new(collect));
    }

    fn collect(&self) {
        for collect in self.collectors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            collect();
        }
    }

    /// Prometheus' text exposition format.
    pub fn prometheus_text(&self) -> String {
        self.collect();
        self.prometheus.as_ref().map(PrometheusHandle::render).unwrap_or_default()
    }

    /// The same metrics, summed, as one JSON object, with the last hour minute by minute.
    pub fn lite(&self) -> LiteSnapshot {
        self.collect();
        self.lite.snapshot()
    }

    /// Drains the exporter's histogram samples into its buckets; the shim runs it every few
    /// seconds so memory stays bounded between scrapes.
    pub fn upkeep(&self) {
        if let Some(handle) = &self.prometheus {
            handle.run_upkeep();
        }
    }
}
