//! A pass-through store for tests that need one call to go differently: fail as if the process
//! died there, stall until the test lets it go, or sign URLs as GCS does. Every call reaches the
//! inner store unless a hook answers it first; `settled_generation` always passes through (the
//! relay's event cursor depends on it).

use crate::store::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// Which call a hook is looking at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCall {
    Get,
    Put,
    List,
    Delete,
}

type BeforeHook = Box<dyn Fn(StoreCall, &str) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;
type SignHook = Box<dyn Fn(&str, Duration) -> String + Send + Sync>;

/// Wraps a store; see the module's documentation.
pub struct HookedStore {
    inner: Arc<dyn ObjectStore>,
    before: Option<BeforeHook>,
    sign: Option<SignHook>,
}

impl std::fmt::Debug for HookedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedStore")
            .field("inner", &self.inner)
            .field("before", &self.before.is_some())
            .field("signs", &self.sign.is_some())
            .finish()
    }
}

impl HookedStore {
    /// Passes everything through until hooks are added.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner, before: None, sign: None }
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
        self.before = Some(Box::new(move |call, name| Box::pin(hook(call, name))));
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
        self.sign = Some(Box::new(sign));
        self
    }

    async fn check(&self, call: StoreCall, name: &str) -> Result<(), StoreError> {
        match &self.before {
            Some(hook) => hook(call, name).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl ObjectStore for HookedStore {
    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        self.check(StoreCall::Get, name).await?;
        self.inner.get(name).await
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        self.check(StoreCall::Put, name).await?;
        self.inner.put(name, body, content_type, when).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.check(StoreCall::List, prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        self.check(StoreCall::Delete, name).await?;
        self.inner.delete(name, when).await
    }

    fn settled_generation(&self) -> Option<Generation> {
        self.inner.settled_generation()
    }

    async fn signed_url(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        match &self.sign {
            Some(sign) => Ok(Some(sign(name, ttl))),
            None => self.inner.signed_url(name, ttl).await,
        }
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
