//! Stopping an instance without losing work. Cloud Run sends SIGTERM and kills the instance 10 s
//! later. On SIGTERM the shim stops taking connections and calls [`begin`]; rows in progress get a
//! grace period to finish, then [`rows_must_stop`] fires: each row gives its lease back and its
//! delivery is answered 503, so the queue redelivers it at once to an instance that stays.
//!
//! The state is process-wide: there is one SIGTERM per process.

use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::watch;

/// How long rows in progress may go on after SIGTERM (`ASSETGEN_DRAIN_SECS` overrides): Cloud
/// Run's 10 s, less time to give leases back and answer.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(7);
/// After the grace, how long the server still waits for answers before it exits anyway (event
/// streams, say, that would hold it open).
pub const EXIT_AFTER_GRACE: Duration = Duration::from_secs(2);

struct Drain {
    began: watch::Sender<bool>,
    stop: watch::Sender<bool>,
}

fn drain() -> &'static Drain {
    static DRAIN: OnceLock<Drain> = OnceLock::new();
    DRAIN.get_or_init(|| Drain { began: watch::channel(false).0, stop: watch::channel(false).0 })
}

/// The grace period: `ASSETGEN_DRAIN_SECS` (0 to 60) if set and valid, else [`DEFAULT_GRACE`].
pub fn grace() -> Duration {
    match std::env::var("ASSETGEN_DRAIN_SECS") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(secs) if secs <= 60 => Duration::from_secs(secs),
            _ => {
                tracing::warn!(value = %v, "ASSETGEN_DRAIN_SECS is not 0 to 60 seconds; using the default");
                DEFAULT_GRACE
            }
        },
        Err(_) => DEFAULT_GRACE,
    }
}

/// Starts draining (once): after `grace`, rows in progress stop.
pub fn begin(grace: Duration) {
    if drain().began.send_replace(true) {
        return;
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "draining: rows in progress may finish, then give their rows back"
    );
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        drain().stop.send_replace(true);
    });
}

pub fn is_draining() -> bool {
    *drain().began.borrow()
}

/// Resolves once [`begin`] was called.
pub async fn began() {
    let mut began = drain().began.subscribe();
    let _ = began.wait_for(|began| *began).await;
}

/// Resolves when rows in progress must stop and give their rows back; never before [`begin`].
pub async fn rows_must_stop() {
    let mut stop = drain().stop.subscribe();
    let _ = stop.wait_for(|stop| *stop).await;
}
