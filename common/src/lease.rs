//! Keeping a row's lease while its delivery works on it.
//!
//! A lease holds for `ttl` from its last write. A row can take far longer than that — a model call
//! may take two minutes, and a store call retries for half a minute — so while a delivery runs, a
//! background task renews the lease every third of the TTL. Renewal is a compare-and-swap that
//! only extends a lease this delivery still holds on a running row; once the row is held by
//! someone else or has ended, the keeper stops. Dropping the keeper (the delivery is over, whatever
//! its outcome) stops the renewals. Renewing is not fencing: every write of the delivery checks
//! the lease first, and images are written create-only (see `generation`).

use crate::api::RowStatus;
use crate::state::RowState;
use crate::store::{ObjectStore, StoreError, update_json};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

/// Renews one row's lease in the background until dropped.
#[derive(Debug)]
pub struct LeaseKeeper {
    task: JoinHandle<()>,
}

/// What one renewal found.
enum Renewal {
    Renewed,
    Lost,
}

impl LeaseKeeper {
    /// Starts renewing `holder`'s lease on the row state object `name` every `ttl / 3`.
    pub fn start(store: Arc<dyn ObjectStore>, name: String, holder: String, ttl: Duration) -> Self {
        let period = (ttl / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match renew(store.as_ref(), &name, &holder, ttl).await {
                    Ok(Renewal::Renewed) => {}
                    Ok(Renewal::Lost) => {
                        tracing::info!(object = %name, "lease renewal stops: the row ended or another delivery holds it");
                        return;
                    }
                    // A store that does not answer now may answer at the next tick; the lease
                    // still holds until its `until`, and every write checks it first.
                    Err(e) => tracing::warn!(object = %name, error = %e, "lease renewal failed; trying again"),
                }
            }
        });
        Self { task }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn renew(store: &dyn ObjectStore, name: &str, holder: &str, ttl: Duration) -> Result<Renewal, StoreError> {
    let mut outcome = Renewal::Lost;
    update_json::<RowState, StoreError, _>(store, name, |s| {
        if !holds(s, holder) {
            outcome = Renewal::Lost;
            return Ok(None);
        }
        outcome = Renewal::Renewed;
        let mut next = s.clone();
        next.lease = next.lease.take().map(|mut l| {
            l.until = OffsetDateTime::now_utc() + ttl;
            l
        });
        Ok(Some(next))
    })
    .await?;
    Ok(outcome)
}

/// Whether `holder` holds the lease of this running row (expired or not: a lease no one else took
/// is still its holder's to renew).
pub fn holds(state: &RowState, holder: &str) -> bool {
    state.status == RowStatus::Running && state.lease.as_ref().is_some_and(|l| l.holder == holder)
}
