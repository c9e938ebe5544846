//! The second recorder behind the global one: the same metrics as `/metrics`, kept as plain sums
//! so `/metrics-lite` can answer with one small JSON object, and feeding the per-minute
//! [`Timeline`] the `/ops` page draws.

use super::timeline::{LastHour, Series, Timeline};
use metrics::atomics::AtomicU64;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::registry::{Registry, Storage};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A counter's total, also added to its minute of the timeline when it is one the page draws.
#[derive(Debug)]
pub struct LiteCounter {
    value: AtomicU64,
    series: Option<(Series, Arc<Timeline>)>,
}

impl CounterFn for LiteCounter {
    fn increment(&self, value: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
        if let Some((series, timeline)) = &self.series {
            timeline.add(*series, value);
        }
    }

    fn absolute(&self, value: u64) {
        self.value.fetch_max(value, Ordering::Relaxed);
    }
}

/// A histogram as count and sum: enough for a mean, and bounded in memory.
#[derive(Debug, Default)]
pub struct LiteHistogram {
    count: AtomicU64,
    /// f64 bits.
    sum: AtomicU64,
}

impl HistogramFn for LiteHistogram {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }
}

#[derive(Debug)]
pub struct LiteStorage {
    timeline: Arc<Timeline>,
}

impl Storage<Key> for LiteStorage {
    type Counter = Arc<LiteCounter>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<LiteHistogram>;

    fn counter(&self, key: &Key) -> Self::Counter {
        let series = Series::of_counter(key.name()).map(|s| (s, self.timeline.clone()));
        Arc::new(LiteCounter { value: AtomicU64::new(0), series })
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::new(AtomicU64::new(0))
    }

    fn histogram(&self, _: &Key) -> Self::Histogram {
        Arc::new(LiteHistogram::default())
    }
}

/// The lite recorder's state, shared between the recorder and whoever reads it.
#[derive(Debug)]
pub struct LiteMetrics {
    registry: Registry<Key, LiteStorage>,
    timeline: Arc<Timeline>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramSummary {
    pub count: u64,
    pub sum: f64,
}

/// What `/metrics-lite` answers. Series are named like Prometheus ones, labels in braces
/// (`assetgen_rows_total{outcome="succeeded"}`); `totals` sums every counter over its labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiteSnapshot {
    pub totals: BTreeMap<String, u64>,
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, f64>,
    pub histograms: BTreeMap<String, HistogramSummary>,
    pub last_hour: LastHour,
}

fn series_name(key: &Key) -> String {
    let mut labels: Vec<_> = key.labels().map(|l| format!("{}=\"{}\"", l.key(), l.value())).collect();
    if labels.is_empty() {
        return key.name().to_owned();
    }
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl LiteMetrics {
    pub fn new() -> Arc<Self> {
        let timeline = Arc::new(Timeline::default());
        Arc::new(Self { registry: Registry::new(LiteStorage { timeline: timeline.clone() }), timeline })
    }

    pub fn snapshot(&self) -> LiteSnapshot {
        let mut totals = BTreeMap::new();
        let mut counters = BTreeMap::new();
        self.registry.visit_counters(|key, counter| {
            let value = counter.value.load(Ordering::Relaxed);
            *totals.entry(key.name().to_owned()).or_insert(0) += value;
            counters.insert(series_name(key), value);
        });
        let mut gauges = BTreeMap::new();
        self.registry.visit_gauges(|key, gauge| {
            gauges.insert(series_name(key), f64::from_bits(gauge.load(Ordering::Relaxed)));
        });
        let mut histograms = BTreeMap::new();
        self.registry.visit_histograms(|key, h| {
            let summary = HistogramSummary {
                count: h.count.load(Ordering::Relaxed),
                sum: f64::from_bits(h.sum.load(Ordering::Relaxed)),
            };
            histograms.insert(series_name(key), summary);
        });
        LiteSnapshot { totals, counters, gauges, histograms, last_hour: self.timeline.last_hour() }
    }
}

/// The [`Recorder`] half: hands out handles backed by [`LiteMetrics`].
#[derive(Debug)]
pub struct LiteRecorder(pub Arc<LiteMetrics>);

impl Recorder for LiteRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.registry.get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0.registry.get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0.registry.get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::names;

    #[test]
    fn sums_counters_by_name_keeps_series_and_feeds_the_timeline() {
        let lite = LiteMetrics::new();
        let recorder = LiteRecorder(lite.clone());
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(names::ROWS, "outcome" => "succeeded").increment(3);
            metrics::counter!(names::ROWS, "outcome" => "failed").increment(1);
            metrics::counter!(names::IMAGES, "run_mode" => "live").increment(2);
            metrics::gauge!(names::QUEUE_PENDING).set(7.0);
            metrics::histogram!(names::MODEL_LATENCY).record(0.5);
            metrics::histogram!(names::MODEL_LATENCY).record(1.5);
        });
        let snap = lite.snapshot();
        assert_eq!(snap.totals[names::ROWS], 4);
        assert_eq!(snap.counters["assetgen_rows_total{outcome=\"failed\"}"], 1);
        assert_eq!(snap.gauges[names::QUEUE_PENDING], 7.0);
        assert_eq!(snap.histograms[names::MODEL_LATENCY], HistogramSummary { count: 2, sum: 2.0 });
        assert_eq!(snap.last_hour.images.iter().sum::<u64>(), 2, "images feed the timeline");
        assert_eq!(snap.last_hour.model_calls.iter().sum::<u64>(), 0);
    }
}
