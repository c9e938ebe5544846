//! The last hour, minute by minute, of the counters the `/ops` page draws: a ring of 60 buckets
//! kept in the process, filled as the counters are incremented (no background task).

use serde::Serialize;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The counters followed minute by minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Images,
    ModelCalls,
    RateLimited,
    SpentMicrodollars,
}

const SERIES: usize = 4;
/// Minutes kept.
pub const MINUTES: usize = 60;

impl Series {
    /// The series a counter feeds, by the counter's name.
    pub fn of_counter(name: &str) -> Option<Self> {
        use super::names::*;
        match name {
            IMAGES => Some(Self::Images),
            MODEL_CALLS => Some(Self::ModelCalls),
            MODEL_RATE_LIMITED => Some(Self::RateLimited),
            SPENT_MICRODOLLARS => Some(Self::SpentMicrodollars),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Minutes since the Unix epoch this bucket counts; a stale bucket is reset when reused.
    minute: u64,
    values: [u64; SERIES],
}

#[derive(Debug)]
pub struct Timeline {
    buckets: Mutex<[Bucket; MINUTES]>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self { buckets: Mutex::new([Bucket::default(); MINUTES]) }
    }
}

/// The last hour, oldest minute first; every array has [`MINUTES`] entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastHour {
    /// Start of each minute, seconds since the Unix epoch.
    pub minute_starts: Vec<u64>,
    pub images: Vec<u64>,
    pub model_calls: Vec<u64>,
    pub rate_limited: Vec<u64>,
    pub spent_usd: Vec<f64>,
}

fn now_minute() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 60).unwrap_or_default()
}

impl Timeline {
    pub fn add(&self, series: Series, value: u64) {
        self.add_at(now_minute(), series, value);
    }

    fn add_at(&self, minute: u64, series: Series, value: u64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = &mut buckets[(minute % MINUTES as u64) as usize];
        if bucket.minute != minute {
            *bucket = Bucket { minute, values: [0; SERIES] };
        }
        bucket.values[series.index()] = bucket.values[series.index()].saturating_add(value);
    }

    pub fn last_hour(&self) -> LastHour {
        self.last_hour_at(now_minute())
    }

    fn last_hour_at(&self, now: u64) -> LastHour {
        let buckets = *self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = now.saturating_sub(MINUTES as u64 - 1);
        let mut hour = LastHour {
            minute_starts: Vec::with_capacity(MINUTES),
            images: Vec::with_capacity(MINUTES),
            model_calls: Vec::with_capacity(MINUTES),
            rate_limited: Vec::with_capacity(MINUTES),
            spent_usd: Vec::with_capacity(MINUTES),
        };
        for minute in first..=now {
            let bucket = buckets[(minute % MINUTES as u64) as usize];
            let values = if bucket.minute == minute { bucket.values } else { [0; SERIES] };
            hour.minute_starts.push(minute * 60);
            hour.images.push(values[Series::Images.index()]);
            hour.model_calls.push(values[Series::ModelCalls.index()]);
            hour.rate_limited.push(values[Series::RateLimited.index()]);
            hour.spent_usd.push(values[Series::SpentMicrodollars.index()] as f64 / 1e6);
        }
        hour
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_minute_and_an_hour_later_the_bucket_is_reused() {
        let t = Timeline::default();
        t.add_at(1000, Series::Images, 3);
        t.add_at(1000, Series::Images, 2);
        t.add_at(1001, Series::RateLimited, 1);
        t.add_at(1001, Series::SpentMicrodollars, 39_000);
        let hour = t.last_hour_at(1001);
        assert_eq!(hour.images.len(), MINUTES);
        assert_eq!(hour.minute_starts[MINUTES - 1], 1001 * 60);
        assert_eq!(hour.images[MINUTES - 2], 5);
        assert_eq!(hour.rate_limited[MINUTES - 1], 1);
        assert!((hour.spent_usd[MINUTES - 1] - 0.039).abs() < 1e-9);
        // 60 minutes on, minute 1000's slot is another minute's: its counts are gone.
        t.add_at(1060, Series::Images, 1);
        let later = t.last_hour_at(1060);
        assert_eq!(later.images[MINUTES - 1], 1);
        assert_eq!(later.images.iter().sum::<u64>(), 1, "minute 1000 is more than an hour old");
        assert_eq!(later.rate_limited[0], 1, "minute 1001 is the oldest of the last hour");
    }
}
