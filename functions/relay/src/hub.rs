//! One tail per batch per relay instance, fanned out to every client of that batch: however many
//! browsers watch a batch, the store is listed and read once per poll.
//!
//! A client joins under the tail's lock: it gets its first events (snapshot, or what it missed)
//! from the tail's state in memory and subscribes to the broadcast of later events in the same
//! critical section, so nothing falls between the two and nothing is sent twice. A client that
//! falls behind the broadcast buffer catches up from the same state.
//!
//! The tail polls at an adaptive pace ([`Pacer`]): fast while rows move, slower and slower while
//! nothing changes. So that a page opened on a quiet batch does not start from a snapshot one slow
//! interval old, a new client (not a resume) makes the tail look first. The tail outlives its last
//! client by [`RelayConfig::tail_linger`], so that a stream closed for its lifetime (every few
//! minutes, see `max_stream`) reconnects to the same tail and its slowed-down pace, instead of
//! opening a new one that reads the whole batch and starts fast again.

use crate::RelayConfig;
use assetgen_common::batch_view::Presenter;
use assetgen_common::domain::BatchId;
use assetgen_common::events::Cursor;
use assetgen_common::observe::{GaugeGuard, names};
use assetgen_common::problem::Problem;
use assetgen_common::store::ObjectStore;
use assetgen_common::tail::{BatchTail, Sequenced};
use assetgen_common::tail_pace::Pacer;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Mutex, Notify, broadcast};
use tokio::time::Instant;

/// Events kept for slow clients before they must catch up from the tail's state.
const BROADCAST_BUFFER: usize = 1024;

/// A batch's tail shared by its clients; its poll task ends when the last client leaves (and the
/// linger after it has passed).
#[derive(Debug)]
pub struct SharedTail {
    watch: Mutex<Watch>,
    events: broadcast::Sender<Sequenced>,
    /// Wakes the poll task when a look made for a joining client found a change, so its next
    /// look comes at the fast pace rather than after a slow interval.
    wake: Arc<Notify>,
    /// The fast interval: a joining client makes the tail look unless it looked this recently.
    fresh_for: Duration,
}

/// The tail and its pace, changed together under one lock.
#[derive(Debug)]
struct Watch {
    tail: BatchTail,
    pacer: Pacer,
    last_look: Instant,
}

impl Watch {
    /// One look at the store; its events go to every subscriber. Whether anything changed.
    async fn look(&mut self, events: &broadcast::Sender<Sequenced>) -> bool {
        let now = Instant::now();
        self.last_look = now;
        let moved = match self.tail.poll().await {
            Ok(found) => {
                let moved = !found.is_empty();
                for event in found {
                    // No receiver right now is fine: joiners start from the tail's state.
                    let _ = events.send(event);
                }
                moved
            }
            Err(p) => {
                tracing::warn!(detail = %p.detail, "tail poll failed; trying again next tick");
                false
            }
        };
        let result = if moved { "changed" } else { "unchanged" };
        metrics::counter!(names::RELAY_TAIL_LISTINGS, "result" => result).increment(1);
        self.pacer.looked(moved, now);
        moved
    }
}

impl SharedTail {
    /// First events and the subscription to the rest, taken together under the tail's lock. A new
    /// client (no `resume`) gets a snapshot at most one fast interval old; a resuming one gets what
    /// it missed from the tail's state, as fresh as the tail's pace.
    pub async fn join(&self, resume: Option<Cursor>) -> (Vec<Sequenced>, broadcast::Receiver<Sequenced>) {
        let mut watch = self.watch.lock().await;
        if resume.is_none()
            && !watch.tail.is_done()
            && watch.last_look.elapsed() >= self.fresh_for
            && watch.look(&self.events).await
        {
            self.wake.notify_one();
        }
        (watch.tail.join(resume), self.events.subscribe())
    }

    /// What a client that fell behind at `cursor` missed.
    pub async fn catch_up(&self, cursor: Cursor) -> Vec<Sequenced> {
        self.watch.lock().await.tail.join(Some(cursor))
    }

    /// Store listings this tail has made since it opened.
    pub async fn listings(&self) -> u64 {
        self.watch.lock().await.tail.listings()
    }
}

impl Drop for SharedTail {
    /// What watching the batch cost, once no one watches it any more.
    fn drop(&mut self) {
        let listings = self.watch.get_mut().tail.listings();
        metrics::histogram!(names::RELAY_LISTINGS_PER_TAIL).record(listings as f64);
    }
}

/// Keeps a tail alive for a while after a client's stream ends, so a reconnect finds it.
#[derive(Debug)]
pub struct Linger {
    tail: Option<Arc<SharedTail>>,
    for_: Duration,
}

impl Linger {
    pub fn new(tail: Arc<SharedTail>, for_: Duration) -> Self {
        Self { tail: Some(tail), for_ }
    }
}

impl Drop for Linger {
    fn drop(&mut self) {
        let (Some(tail), Ok(runtime)) = (self.tail.take(), tokio::runtime::Handle::try_current()) else { return };
        if tail.watch.try_lock().is_ok_and(|w| w.tail.is_done()) {
            return; // nothing more will happen to a finished batch
        }
        let for_ = self.for_;
        runtime.spawn(async move {
            tokio::time::sleep(for_).await;
            drop(tail);
        });
    }
}

/// The instance's tails, by batch and by the base URL their links are built from.
#[derive(Debug)]
pub struct TailHub {
    store: Arc<dyn ObjectStore>,
    config: RelayConfig,
    tails: Mutex<HashMap<(BatchId, String), Weak<SharedTail>>>,
}

impl TailHub {
    pub fn new(store: Arc<dyn ObjectStore>, config: RelayConfig) -> Self {
        Self { store, config, tails: Mutex::new(HashMap::new()) }
    }

    /// The batch's shared tail, opened (and its poll task started) by the first client.
    pub async fn tail(&self, batch_id: &BatchId, presenter: Presenter) -> Result<Arc<SharedTail>, Problem> {
        let key = (batch_id.clone(), presenter.base.clone());
        let mut tails = self.tails.lock().await;
        if let Some(shared) = tails.get(&key).and_then(Weak::upgrade) {
            return Ok(shared);
        }
        let (tail, _) = BatchTail::open(self.store.clone(), batch_id, presenter, None).await?;
        let (events, _) = broadcast::channel(BROADCAST_BUFFER);
        let now = Instant::now();
        let pace = self.config.pace();
        let watch = Watch { tail, pacer: Pacer::new(pace, now), last_look: now };
        let wake = Arc::new(Notify::new());
        let shared =
            Arc::new(SharedTail { watch: Mutex::new(watch), events, wake: wake.clone(), fresh_for: pace.fast });
        tails.retain(|_, weak| weak.strong_count() > 0);
        tails.insert(key, Arc::downgrade(&shared));
        tokio::spawn(poll(Arc::downgrade(&shared), wake, pace.fast));
        Ok(shared)
    }

    /// Batches with a live tail on this instance (for tests and metrics).
    pub async fn live_tails(&self) -> usize {
        self.tails.lock().await.values().filter(|w| w.strong_count() > 0).count()
    }

    /// The live tail of a batch as seen through `base`, if any (for tests).
    pub async fn live_tail(&self, batch_id: &BatchId, base: &str) -> Option<Arc<SharedTail>> {
        self.tails.lock().await.get(&(batch_id.clone(), base.to_owned())).and_then(Weak::upgrade)
    }
}

/// Polls the store for one batch while anyone listens, broadcasting what changed, at the pace its
/// [`Pacer`] sets. The task holds no strong reference while it sleeps, so the tail can go.
async fn poll(shared: Weak<SharedTail>, wake: Arc<Notify>, first: Duration) {
    let _running = GaugeGuard::new(metrics::gauge!(names::RELAY_TAILS));
    let mut delay = first;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => {}
        }
        let Some(shared) = shared.upgrade() else { return };
        let mut watch = shared.watch.lock().await;
        if watch.tail.is_done() {
            return; // the final state stays in memory for late joiners while clients hold it
        }
        // Woken by a joiner's look: look again only once the pace says so.
        if watch.last_look.elapsed() >= shared.fresh_for {
            watch.look(&shared.events).await;
        }
        delay = watch.pacer.next_delay().saturating_sub(watch.last_look.elapsed());
    }
}
