//! One holder's share of a gauge that sums over holders (bytes or events queued per client): set
//! to the holder's current value, taken back when the holder is dropped.

use metrics::Gauge;

#[derive(Debug)]
pub struct GaugeShare {
    gauge: Gauge,
    share: f64,
}

impl GaugeShare {
    pub fn new(gauge: Gauge) -> Self {
        Self { gauge, share: 0.0 }
    }

    /// This holder's value is now `value`.
    pub fn set(&mut self, value: f64) {
        if value != self.share {
            self.gauge.increment(value - self.share);
            self.share = value;
        }
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.gauge.decrement(self.share);
    }
}
