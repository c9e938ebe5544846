//! How often a batch's tail looks at the store: at the fast pace while rows move, then slower and
//! slower while nothing changes, and fast again as soon as a look finds a change.
//!
//! A page may stay open for a day on a batch that waits (a bulk job at Google, a queue held back by
//! quota): a fixed 250 ms pace lists the store 345,600 times for it. Rows that are moving change
//! every few seconds, but a batch of one or two rows may be quiet for as long as one model call
//! (usually 5–30 s, a long tail up to the two-minute time-out), so the pace stays fast for a minute
//! after each change, long enough that a batch in progress practically never slows down, and only
//! then doubles up to the slowest pace. The price: the first change after a long quiet is seen up to one slow interval
//! late; every change after it is seen at the fast pace again.
//!
//! Only *when* the tail looks changes; what a look may claim does not (see [`crate::tail`]: the
//! cursor never passes [`crate::store::ObjectStore::settled_generation`] taken before each listing).

use std::time::Duration;
use tokio::time::Instant;

/// The pace's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPace {
    /// The interval while rows move.
    pub fast: Duration,
    /// How long the pace stays fast after the last change.
    pub fast_for: Duration,
    /// The longest interval, reached by doubling while nothing changes.
    pub slowest: Duration,
}

impl Default for PollPace {
    fn default() -> Self {
        Self { fast: Duration::from_millis(250), fast_for: Duration::from_secs(60), slowest: Duration::from_secs(30) }
    }
}

/// One tail's pace: when the store last showed a change, and the interval to the next look.
#[derive(Debug, Clone)]
pub struct Pacer {
    pace: PollPace,
    last_change: Instant,
    delay: Duration,
}

impl Pacer {
    /// A pacer for a tail opened at `now` (the opening look counts as a change: a client just
    /// came, and the batch may be moving).
    pub fn new(pace: PollPace, now: Instant) -> Self {
        Self { pace, last_change: now, delay: pace.fast }
    }

    /// Records a look at the store made at `now` that found a change (`moved`) or not.
    pub fn looked(&mut self, moved: bool, now: Instant) {
        if moved {
            self.last_change = now;
            self.delay = self.pace.fast;
        } else if now.saturating_duration_since(self.last_change) < self.pace.fast_for {
            self.delay = self.pace.fast;
        } else {
            self.delay = (self.delay * 2).clamp(self.pace.fast, self.pace.slowest.max(self.pace.fast));
        }
    }

    /// How long to wait before the next look.
    pub fn next_delay(&self) -> Duration {
        self.delay
    }

    /// Whether the pace has slowed down (nothing changed for longer than `fast_for`).
    pub fn is_slow(&self) -> bool {
        self.delay > self.pace.fast
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks at an unchanging store from `start` for `span`, as a tail's poll loop does; returns the
    /// number of looks.
    fn idle_looks(pacer: &mut Pacer, start: Instant, span: Duration) -> u64 {
        let mut now = start;
        let mut looks = 0;
        while now < start + span {
            now += pacer.next_delay();
            pacer.looked(false, now);
            looks += 1;
        }
        looks
    }

    #[test]
    fn the_pace_stays_fast_for_a_while_then_doubles_up_to_the_slowest() {
        let start = Instant::now();
        let pace = PollPace::default();
        let mut pacer = Pacer::new(pace, start);
        let mut now = start;
        let mut delays = Vec::new();
        while now < start + Duration::from_secs(120) {
            now += pacer.next_delay();
            pacer.looked(false, now);
            delays.push(pacer.next_delay());
        }
        let fast_looks = delays.iter().take_while(|d| **d == pace.fast).count();
        assert_eq!(fast_looks, 239, "fast for 60 s (the 240th look, at 60 s, starts the doubling)");
        let ms: Vec<u128> = delays[fast_looks..fast_looks + 8].iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn a_change_snaps_the_pace_back_to_fast() {
        let start = Instant::now();
        let mut pacer = Pacer::new(PollPace::default(), start);
        idle_looks(&mut pacer, start, Duration::from_secs(600));
        assert_eq!(pacer.next_delay(), Duration::from_secs(30));
        assert!(pacer.is_slow());
        let now = start + Duration::from_secs(601);
        pacer.looked(true, now);
        assert_eq!(pacer.next_delay(), Duration::from_millis(250));
        // And it stays fast while changes keep coming within `fast_for` of each other.
        pacer.looked(false, now + Duration::from_secs(9));
        assert_eq!(pacer.next_delay(), Duration::from_millis(250));
        assert!(!pacer.is_slow());
    }

    #[test]
    fn an_idle_hour_is_a_few_hundred_looks_not_fourteen_thousand() {
        let start = Instant::now();
        let looks = idle_looks(&mut Pacer::new(PollPace::default(), start), start, Duration::from_secs(3600));
        assert!((355..=375).contains(&looks), "{looks} looks in an idle hour");
        let fixed = PollPace { slowest: Duration::from_millis(250), ..PollPace::default() };
        let looks = idle_looks(&mut Pacer::new(fixed, start), start, Duration::from_secs(3600));
        assert_eq!(looks, 14_400, "the old fixed pace, for comparison");
    }
}
