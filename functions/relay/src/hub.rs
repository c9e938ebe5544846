//! One tail per batch per relay instance, fanned out to every client of that batch: however many
//! browsers watch a batch, the store is listed and read once per poll.
//!
//! A client joins under the tail's lock: it gets its first events (snapshot, or what it missed)
//! from the tail's state in memory and subscribes to the broadcast of later events in the same
//! critical section, so nothing falls between the two and nothing is sent twice. A client that
//! falls behind the broadcast buffer catches up from the same state.

use crate::RelayConfig;
use assetgen_common::batch_view::Presenter;
use assetgen_common::domain::BatchId;
use assetgen_common::events::Cursor;
use assetgen_common::observe::{GaugeGuard, names};
use assetgen_common::problem::Problem;
use assetgen_common::store::ObjectStore;
use assetgen_common::tail::{BatchTail, Sequenced};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use tokio::sync::{Mutex, broadcast};

/// Events kept for slow clients before they must catch up from the tail's state.
const BROADCAST_BUFFER: usize = 1024;

/// A batch's tail shared by its clients; its poll task ends when the last client leaves.
#[derive(Debug)]
pub struct SharedTail {
    tail: Mutex<BatchTail>,
    events: broadcast::Sender<Sequenced>,
}

impl SharedTail {
    /// First events and the subscription to the rest, taken together under the tail's lock.
    pub async fn join(&self, resume: Option<Cursor>) -> (Vec<Sequenced>, broadcast::Receiver<Sequenced>) {
        let tail = self.tail.lock().await;
        (tail.join(resume), self.events.subscribe())
    }

    /// What a client that fell behind at `cursor` missed.
    pub async fn catch_up(&self, cursor: Cursor) -> Vec<Sequenced> {
        self.tail.lock().await.join(Some(cursor))
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
        let shared = Arc::new(SharedTail { tail: Mutex::new(tail), events });
        tails.retain(|_, weak| weak.strong_count() > 0);
        tails.insert(key, Arc::downgrade(&shared));
        tokio::spawn(poll(Arc::downgrade(&shared), self.config.poll_every));
        Ok(shared)
    }

    /// Batches with a live tail on this instance (for tests and metrics).
    pub async fn live_tails(&self) -> usize {
        self.tails.lock().await.values().filter(|w| w.strong_count() > 0).count()
    }
}

/// Polls the store for one batch while anyone listens, broadcasting what changed.
async fn poll(shared: Weak<SharedTail>, every: std::time::Duration) {
    let _running = GaugeGuard::new(metrics::gauge!(names::RELAY_TAILS));
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else { return };
        let mut tail = shared.tail.lock().await;
        if tail.is_done() {
            return; // the final state stays in memory for late joiners while clients hold it
        }
        match tail.poll().await {
            Ok(events) => {
                for event in events {
                    // No receiver right now is fine: joiners start from the tail's state.
                    let _ = shared.events.send(event);
                }
            }
            Err(p) => tracing::warn!(detail = %p.detail, "tail poll failed; trying again next tick"),
        }
    }
}
