//! Pacing model calls to the project's quota: a decorator of any [`ImageModel`] that lets calls
//! through at this instance's share of the images-per-minute quota (`ASSETGEN_GEMINI_IPM` divided
//! by `ASSETGEN_GEMINI_INSTANCES`), so generate holds the quota's rate instead of bouncing rows.
//!
//! A token bucket (GCRA), refilled at the current rate, that holds the headroom's worth of tokens
//! (3 % of a minute's share): calls are spread evenly, and a batch may start with that small burst,
//! since any 60 s then holds at most 97 % of the share at the rate plus the 3 % burst — never more
//! than the quota. The rate is AIMD: a 429 halves it and pauses every call for the `RetryInfo` delay;
//! each success climbs back by a twentieth of the ceiling. A call waits for its turn inside the
//! process (the push stays open) for at most `max_wait`; past that it gives the row back to the
//! queue as `MODEL_RATE_LIMITED` with the wait as `retry_after`, which the queues do not count as
//! a failed delivery.
//!
//! Hand-written rather than `governor`: governor's rate is fixed when it is built (no AIMD) and its
//! clock is not tokio's, so its waits cannot be tested with tokio's paused time.

use super::{GeneratedImage, ImageModel, ImageRequest, ModelError};
use crate::problem::ErrorCode;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The share of the quota the limiter aims at: 3 % below it, so that the jitter between our clock
/// and the quota's never puts 1 call over a minute's allowance (each 429 halves the rate).
pub const HEADROOM: f64 = 0.97;

/// A 429 without `RetryInfo` pauses calls this long.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// Each success adds this fraction of the ceiling back to a halved rate.
const ADDITIVE_STEP: f64 = 0.05;

/// The rate never falls below this fraction of the ceiling.
const FLOOR: f64 = 1.0 / 64.0;

/// How the calls of this instance are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Calls per minute this instance may make (its share of the quota, less the headroom).
    pub images_per_minute: f64,
    /// Calls that may go at once after an idle spell (at least 1).
    pub burst: f64,
    /// Longest a call waits for its turn before the row goes back to the queue. Keep it below the
    /// lease (not renewed while waiting) and below what a push may stay open.
    pub max_wait: Duration,
}

impl Pacing {
    /// This instance's share of `quota_ipm` shared by `instances`, with [`HEADROOM`].
    pub fn share_of(quota_ipm: u32, instances: u32, max_wait: Duration) -> Self {
        let share = f64::from(quota_ipm) / f64::from(instances.max(1));
        Self { images_per_minute: share * HEADROOM, burst: (share * (1.0 - HEADROOM)).floor().max(1.0), max_wait }
    }

    /// Pushes worth having in flight at once to keep the quota busy: every one holds a call (or
    /// waits for one) for up to [`CALL_SECONDS`]. See `docs/sizing.md`.
    pub fn pushes_in_flight(&self) -> usize {
        let wanted = (self.images_per_minute / 60.0 * CALL_SECONDS).ceil();
        (wanted as usize).clamp(MIN_PUSHES, MAX_PUSHES)
    }
}

/// The longest a call ever waits for its turn (a row's 3 variants × (wait + 120 s call) stay within
/// Pub/Sub's 600 s ack deadline).
pub const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

/// An image call's time the sizing rule plans for: the p95 of Gemini's latency (~10 s) with room.
pub const CALL_SECONDS: f64 = 15.0;
const MIN_PUSHES: usize = 8;
const MAX_PUSHES: usize = 1000;

#[derive(Debug)]
struct Bucket {
    /// Tokens per second at most (the configured share).
    ceiling: f64,
    /// Tokens per second now (AIMD: ≤ ceiling).
    rate: f64,
    /// When the next token is free at the rate (GCRA's theoretical arrival time).
    next: Instant,
    /// How far ahead of `next` a call may go: the burst, (burst − 1) tokens at the ceiling.
    tolerance: Duration,
    /// Bumped by every 429: turns handed out before it are void and taken again after the pause.
    epoch: u64,
    /// When the rate was last halved: a 429 for a call let through before then belongs to the same
    /// overload and does not halve it again.
    decreased_at: Option<Instant>,
    /// The end of the last pause a 429 asked for.
    paused_until: Instant,
}

/// The token bucket and its AIMD rate, shared by every call of this instance.
#[derive(Debug)]
pub struct Pacer {
    bucket: Mutex<Bucket>,
    max_wait: Duration,
}

/// When a call was let through, to tell which overload a 429 belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    pub at: Instant,
}

impl Pacer {
    pub fn new(pacing: Pacing) -> Self {
        let ceiling = (pacing.images_per_minute / 60.0).max(f64::MIN_POSITIVE);
        let now = Instant::now();
        let tolerance = Duration::from_secs_f64((pacing.burst.max(1.0) - 1.0) / ceiling);
        let bucket =
            Bucket { ceiling, rate: ceiling, next: now, tolerance, epoch: 0, decreased_at: None, paused_until: now };
        Self { bucket: Mutex::new(bucket), max_wait: pacing.max_wait }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // No code panics while holding the lock; a poisoned lock still holds a consistent bucket.
        self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls per minute now.
    pub fn images_per_minute(&self) -> f64 {
        self.bucket().rate * 60.0
    }

    /// Waits for a turn no later than `deadline`. `Err(wait)`: the turn would come `wait` from now,
    /// past the deadline (nothing is reserved then).
    pub async fn turn(&self, deadline: Instant) -> Result<Turn, Duration> {
        loop {
            let (at, epoch) = {
                let mut b = self.bucket();
                let now = Instant::now();
                let early = b.next.checked_sub(b.tolerance).unwrap_or(now);
                let at = early.max(now).max(b.paused_until);
                if at > deadline {
                    return Err(at - now);
                }
                b.next = b.next.max(at) + Duration::from_secs_f64(1.0 / b.rate);
                (at, b.epoch)
            };
            tokio::time::sleep_until(at).await;
            if self.bucket().epoch == epoch {
                return Ok(Turn { at });
            }
            // A 429 came while this call waited: its turn is void; take one after the pause.
        }
    }

    /// A call let through at `turn` was answered 429: halve the rate (once per overload) and pause
    /// every call for `retry_after`.
    pub fn rate_limited(&self, turn: Turn, retry_after: Option<Duration>) {
        let mut b = self.bucket();
        let now = Instant::now();
        if b.decreased_at.is_none_or(|d| turn.at > d) {
            b.rate = (b.rate / 2.0).max(b.ceiling * FLOOR);
            b.decreased_at = Some(now);
        }
        b.epoch += 1;
        // Turns already handed out are void: the next one is at the end of the longest pause asked.
        // No burst after a pause: calls resume one by one at the halved rate.
        b.paused_until = b.paused_until.max(now + retry_after.unwrap_or(DEFAULT_PAUSE));
        b.next = b.paused_until + b.tolerance;
    }

    /// A call went through: climb back towards the ceiling.
    pub fn succeeded(&self) {
        let mut b = self.bucket();
        b.rate = (b.rate + b.ceiling * ADDITIVE_STEP).min(b.ceiling);
    }
}

/// An [`ImageModel`] whose calls go through a [`Pacer`].
#[derive(Debug, Clone)]
pub struct PacedModel {
    inner: Arc<dyn ImageModel>,
    pacer: Arc<Pacer>,
}

impl PacedModel {
    pub fn new(inner: Arc<dyn ImageModel>, pacing: Pacing) -> Self {
        Self { inner, pacer: Arc::new(Pacer::new(pacing)) }
    }

    pub fn pacer(&self) -> &Arc<Pacer> {
        &self.pacer
    }
}

#[async_trait]
impl ImageModel for PacedModel {
    fn is_live(&self) -> bool {
        self.inner.is_live()
    }

    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        let deadline = Instant::now() + self.pacer.max_wait;
        let mut last_429 = None;
        loop {
            let turn = match self.pacer.turn(deadline).await {
                Ok(turn) => turn,
                Err(wait) => {
                    let detail = match last_429 {
                        Some(said) => format!("{said} (waited for the quota as long as a delivery may)"),
                        None => format!(
                            "this instance's share of the image quota is taken for the next {} s; the row \
                             is retried then",
                            wait.as_secs().max(1)
                        ),
                    };
                    return Err(ModelError::Retryable {
                        code: ErrorCode::ModelRateLimited,
                        detail,
                        retry_after: Some(wait),
                    });
                }
            };
            match self.inner.generate(request).await {
                Ok(image) => {
                    self.pacer.succeeded();
                    return Ok(image);
                }
                Err(ModelError::Retryable { code: ErrorCode::ModelRateLimited, detail, retry_after }) => {
                    // Absorbed here, so the metered model around this one never sees it: count it.
                    let run_mode = if self.inner.is_live() { "live" } else { "dry_run" };
                    let name = crate::observe::names::MODEL_RATE_LIMITED;
                    metrics::counter!(name, "run_mode" => run_mode, "absorbed" => "true").increment(1);
                    tracing::info!(scene_id = %request.scene_id, variant = request.variant, ?retry_after,
                        rate_ipm = self.pacer.images_per_minute(), "429 from the model: slowing down");
                    self.pacer.rate_limited(turn, retry_after);
                    last_429 = Some(detail);
                }
                Err(other) => return Err(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AspectRatio;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pacer(ipm: f64, max_wait_secs: u64) -> Arc<Pacer> {
        Arc::new(Pacer::new(Pacing {
            images_per_minute: ipm,
            burst: 1.0,
            max_wait: Duration::from_secs(max_wait_secs),
        }))
    }

    /// Seconds since `start`, to the millisecond.
    fn secs(start: Instant) -> f64 {
        (Instant::now() - start).as_millis() as f64 / 1000.0
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_spread_evenly_at_the_rate() {
        let p = pacer(60.0, 600); // one a second
        let start = Instant::now();
        let deadline = start + Duration::from_secs(600);
        let mut at = Vec::new();
        for _ in 0..4 {
            p.turn(deadline).await.expect("turn");
            at.push(secs(start));
        }
        assert_eq!(at, vec![0.0, 1.0, 2.0, 3.0]);
        // Idle time does not pile up tokens: after 10 s of nothing, one call goes, the next waits.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = Instant::now();
        p.turn(deadline).await.expect("turn");
        p.turn(deadline).await.expect("turn");
        assert_eq!(secs(idle), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_after_idle_time_and_never_after_a_pause() {
        let p =
            Arc::new(Pacer::new(Pacing { images_per_minute: 60.0, burst: 3.0, max_wait: Duration::from_secs(600) }));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(600);
        let mut at = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            last = Some(p.turn(deadline).await.expect("turn"));
            at.push(secs(start));
        }
        assert_eq!(at, vec![0.0, 0.0, 0.0, 1.0, 2.0], "3 at once, then one a second");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = Instant::now();
        for _ in 0..4 {
            p.turn(deadline).await.expect("turn");
        }
        assert_eq!(secs(idle), 1.0, "after idle time the burst is back, never more");
        p.rate_limited(last.expect("a turn"), Some(Duration::from_secs(5)));
        let paused = Instant::now();
        p.turn(deadline).await.expect("turn");
        p.turn(deadline).await.expect("turn");
        assert_eq!(secs(paused), 7.0, "after the pause, one by one at the halved rate (2 s apart)");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let p = pacer(600.0, 600); // ten a second
        let start = Instant::now();
        let deadline = start + Duration::from_secs(600);
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.turn(deadline).await.map(|_| secs(start)) })
            })
            .collect();
        let mut at = Vec::new();
        for c in calls {
            at.push(c.await.expect("join").expect("turn"));
        }
        at.sort_by(f64::total_cmp);
        assert_eq!(at.first(), Some(&0.0));
        assert_eq!(at.last(), Some(&4.9), "50 turns at 10/s take 4.9 s after the first");
        assert!(at.windows(2).all(|w| (w[1] - w[0] - 0.1).abs() < 1e-9), "one every 100 ms: {at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_refused_without_taking_a_turn() {
        let p = pacer(6.0, 600); // one every 10 s
        let start = Instant::now();
        p.turn(start + Duration::from_secs(60)).await.expect("first is free");
        let refused = p.turn(start + Duration::from_secs(5)).await.expect_err("the next is 10 s away");
        assert_eq!(refused, Duration::from_secs(10));
        assert_eq!(secs(start), 0.0, "refused at once, not after waiting");
        p.turn(start + Duration::from_secs(60)).await.expect("the refused caller took nothing");
        assert_eq!(secs(start), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_halves_the_rate_pauses_for_retry_info_and_successes_climb_back() {
        let p = pacer(600.0, 600); // ten a second
        let start = Instant::now();
        let deadline = start + Duration::from_secs(600);
        let turn = p.turn(deadline).await.expect("turn");
        p.rate_limited(turn, Some(Duration::from_secs(17)));
        assert_eq!(p.images_per_minute(), 300.0, "halved");
        // A second 429 of a call let through before the first was seen is the same overload.
        p.rate_limited(turn, Some(Duration::from_secs(17)));
        assert_eq!(p.images_per_minute(), 300.0, "halved once per overload");
        p.turn(deadline).await.expect("after the pause");
        assert_eq!(secs(start), 17.0, "RetryInfo's delay is waited out");
        p.turn(deadline).await.expect("next");
        assert!((secs(start) - 17.2).abs() < 1e-9, "at the halved rate: {}", secs(start));
        for _ in 0..9 {
            p.succeeded();
        }
        assert!((p.images_per_minute() - 570.0).abs() < 1e-9, "+30/min per success: {}", p.images_per_minute());
        p.succeeded();
        p.succeeded();
        assert_eq!(p.images_per_minute(), 600.0, "never above the ceiling");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_voids_turns_already_handed_out() {
        let p = pacer(60.0, 600); // one a second
        let start = Instant::now();
        let deadline = start + Duration::from_secs(600);
        let first = p.turn(deadline).await.expect("turn");
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move { p.turn(deadline).await.map(|_| secs(start)) })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        p.rate_limited(first, Some(Duration::from_secs(5)));
        let at = waiting.await.expect("join").expect("turn");
        assert_eq!(at, 5.5, "its turn at 1 s fell in the pause: it goes after it");
    }

    #[derive(Debug)]
    struct Quota {
        /// Calls answered 429 (with this RetryInfo) before the first success.
        refusals: AtomicUsize,
        retry_after: Option<Duration>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl ImageModel for Quota {
        fn is_live(&self) -> bool {
            true
        }
        async fn generate(&self, _: &ImageRequest) -> Result<GeneratedImage, ModelError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.refusals.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(ModelError::Retryable {
                    code: ErrorCode::ModelRateLimited,
                    detail: "HTTP 429 RESOURCE_EXHAUSTED".into(),
                    retry_after: self.retry_after,
                });
            }
            Ok(GeneratedImage::new("image/png", bytes::Bytes::from_static(b"png")))
        }
    }

    fn request() -> ImageRequest {
        ImageRequest {
            model: "m".into(),
            scene_id: "S".into(),
            variant: 1,
            prompt: "p".into(),
            aspect_ratio: AspectRatio::default(),
            refs: Vec::new(),
        }
    }

    fn quota(refusals: usize, retry_after: u64) -> Arc<Quota> {
        Arc::new(Quota {
            refusals: AtomicUsize::new(refusals),
            retry_after: Some(Duration::from_secs(retry_after)),
            calls: AtomicUsize::new(0),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_model_absorbs_a_429_by_waiting_out_retry_info() {
        let inner = quota(2, 3);
        let model = PacedModel::new(
            inner.clone(),
            Pacing { images_per_minute: 60.0, burst: 1.0, max_wait: Duration::from_secs(30) },
        );
        let start = Instant::now();
        model.generate(&request()).await.expect("the 429s are absorbed, not returned");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
        assert_eq!(secs(start), 6.0, "two pauses of RetryInfo's 3 s");
        assert!(model.pacer().images_per_minute() < 60.0, "slowed down");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_max_wait_gives_the_row_back_with_the_wait() {
        let inner = quota(1, 60);
        let model = PacedModel::new(
            inner.clone(),
            Pacing { images_per_minute: 60.0, burst: 1.0, max_wait: Duration::from_secs(30) },
        );
        let err = model.generate(&request()).await.expect_err("cannot wait 60 s");
        match err {
            ModelError::Retryable { code: ErrorCode::ModelRateLimited, retry_after: Some(wait), .. } => {
                assert_eq!(wait, Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "no call is made into a known pause");
    }

    #[test]
    fn the_sizing_file_terraform_reads_has_the_codes_constants() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sizing.json");
        let sizing: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("deploy/sizing.json")).expect("json");
        let constants = &sizing["constants"];
        assert_eq!(constants["headroom"].as_f64(), Some(HEADROOM));
        assert_eq!(constants["call_seconds"].as_f64(), Some(CALL_SECONDS));
        assert_eq!(constants["max_wait_cap_secs"].as_u64(), Some(MAX_WAIT_CAP.as_secs()));
        assert_eq!(constants["max_variants_per_row"].as_u64(), Some(u64::from(crate::domain::Variants::MAX)));
        assert_eq!(
            constants["call_timeout_secs"].as_u64(),
            Some(super::super::GeminiTimeouts::default().call.as_secs())
        );
    }

    #[test]
    fn the_share_divides_the_quota_among_instances_with_headroom() {
        let p = Pacing::share_of(600, 3, Duration::from_secs(90));
        assert!((p.images_per_minute - 200.0 * HEADROOM).abs() < 1e-9);
        assert_eq!(p.burst, 6.0, "the headroom's worth: 3 % of 200");
        assert_eq!(Pacing::share_of(2000, 1, Duration::ZERO).burst, 60.0);
        assert_eq!(Pacing::share_of(600, 1, Duration::ZERO).pushes_in_flight(), 146, "9.7/s × 15 s");
        assert_eq!(Pacing::share_of(10, 1, Duration::ZERO).pushes_in_flight(), 8, "never fewer than 8");
    }
}
