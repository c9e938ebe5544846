//! A pass-through store for tests that need one call to go differently: fail as if the process
//! died there, stall until the test lets it go, or sign URLs as GCS does. Every call reaches the
//! inner store unless a hook answers it first; `settled_generation` always passes through (the
//! relay's event cursor depends on it).

use crate::store::{Intercepted, Interceptor, ObjectStore, StoreCall, StoreError};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

type BeforeHook = Box<dyn Fn(StoreCall, &str) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;
type SignHook = Box<dyn Fn(&str, Duration) -> String + Send + Sync>;

/// The hooks of a [`HookedStore`].
#[derive(Default)]
pub struct Hooks {
    before: Option<BeforeHook>,
    sign: Option<SignHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("before", &self.before.is_some()).field("signs", &self.sign.is_some()).finish()
    }
}

#[async_trait]
impl Interceptor for Hooks {
    async fn before(&self, call: StoreCall, name: &str) -> Result<(), StoreError> {
        match &self.before {
            // The hook is for reads and writes; signing has its own.
            Some(hook) if call != StoreCall::SignedUrl => hook(call, name).await,
            _ => Ok(()),
        }
    }

    fn sign(&self, name: &str, ttl: Duration) -> Option<String> {
        self.sign.as_ref().map(|sign| sign(name, ttl))
    }
}

/// Wraps a store; see the module's documentation.
pub type HookedStore = Intercepted<Hooks>;

impl HookedStore {
    /// Passes everything through until hooks are added.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self::wrap(inner, Hooks::default())
    }

    /// Runs `hook` before every get, put, list and delete, with the object's name (a list's
    /// prefix), in place of any hook set before. It may wait; an error it returns is the call's
    /// answer and the inner store is not called. The future owns what it needs: decide from the
    /// name before it starts.
    pub fn before<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(StoreCall, &str) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        self.interceptor_mut().before = Some(Box::new(move |call, name| Box::pin(hook(call, name))));
        self
    }

    /// Every call sleeps `delay` first, as on a real store, so concurrent requests interleave.
    pub fn sluggish(self, delay: Duration) -> Self {
        self.before(move |_, _| async move {
            tokio::time::sleep(delay).await;
            Ok(())
        })
    }

    /// Puts of objects under `prefix` go through `gate`: once armed, the next one waits there
    /// until the test lets it go.
    pub fn gate_puts(self, prefix: &'static str, gate: Arc<Gate>) -> Self {
        self.before(move |call, name| {
            let gate = (call == StoreCall::Put && name.starts_with(prefix)).then(|| gate.clone());
            async move {
                if let Some(gate) = gate {
                    gate.pass().await;
                }
                Ok(())
            }
        })
    }

    /// Signs URLs, as GCS does: `signed_url` answers `sign(name, ttl)`.
    pub fn signing(mut self, sign: impl Fn(&str, Duration) -> String + Send + Sync + 'static) -> Self {
        self.interceptor_mut().sign = Some(Box::new(sign));
        self
    }
}

/// Holds back one call a hook picks until the test lets it go: [`Self::arm`] gives the sender that
/// releases it, [`Self::arrived`] returns once the held call is waiting, and [`Self::pass`] (in
/// the hook) waits while armed. Unarmed, it lets everything through.
#[derive(Debug, Default)]
pub struct Gate {
    arrived: Notify,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Gate {
    /// Holds the next call that passes; sending on (or dropping) the answer lets it go.
    pub fn arm(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        *self.release.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
        tx
    }

    /// Returns once a held call is waiting (at once if one already arrived).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// For the hook: waits here while armed (once), and goes on at once otherwise.
    pub async fn pass(&self) {
        let held = self.release.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(release) = held {
            self.arrived.notify_one();
            let _ = release.await;
        }
    }
}
