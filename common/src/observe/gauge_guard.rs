//! A gauge that counts live things: +1 while the guard lives, -1 when it is dropped (a stream that
//! ends, a task that returns or panics).

use metrics::Gauge;

#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
