//! The store decorator that looks at each call before passing it on: counting calls
//! ([`CountingStore`](super::CountingStore)), failing them in an injected outage
//! ([`OutageStore`](super::OutageStore)) and the testkit's hooks all pass every call through
//! unchanged but for what an [`Interceptor`] decides first.

use super::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Which call is about to reach the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCall {
    Get,
    Put,
    List,
    Delete,
    SignedUrl,
}

/// What an [`Intercepted`] store does before each call.
#[async_trait]
pub trait Interceptor: Send + Sync + std::fmt::Debug {
    /// Runs before `call` reaches the inner store, with the object's name (a list's prefix). An
    /// error is the call's answer, and the inner store is not called.
    async fn before(&self, call: StoreCall, name: &str) -> Result<(), StoreError>;

    /// A URL for `name` made here in place of the inner store's `signed_url` (a test store that
    /// signs as GCS does); `None`, the default, asks the inner store.
    fn sign(&self, name: &str, ttl: Duration) -> Option<String> {
        let _ = (name, ttl);
        None
    }
}

#[async_trait]
impl<I: Interceptor + ?Sized> Interceptor for Arc<I> {
    async fn before(&self, call: StoreCall, name: &str) -> Result<(), StoreError> {
        (**self).before(call, name).await
    }

    fn sign(&self, name: &str, ttl: Duration) -> Option<String> {
        (**self).sign(name, ttl)
    }
}

/// A store whose calls pass an [`Interceptor`] first; `settled_generation` always passes through
/// (a wrapper must pass it on: readers resuming from a generation rely on it).
#[derive(Debug)]
pub struct Intercepted<I> {
    inner: Arc<dyn ObjectStore>,
    interceptor: I,
}

impl<I: Interceptor> Intercepted<I> {
    pub fn wrap(inner: Arc<dyn ObjectStore>, interceptor: I) -> Self {
        Self { inner, interceptor }
    }

    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }

    /// For builders that set the interceptor up after wrapping.
    pub fn interceptor_mut(&mut self) -> &mut I {
        &mut self.interceptor
    }
}

#[async_trait]
impl<I: Interceptor> ObjectStore for Intercepted<I> {
    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        self.interceptor.before(StoreCall::Get, name).await?;
        self.inner.get(name).await
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        self.interceptor.before(StoreCall::Put, name).await?;
        self.inner.put(name, body, content_type, when).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.interceptor.before(StoreCall::List, prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        self.interceptor.before(StoreCall::Delete, name).await?;
        self.inner.delete(name, when).await
    }

    fn settled_generation(&self) -> Option<Generation> {
        self.inner.settled_generation()
    }

    async fn signed_url(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        self.interceptor.before(StoreCall::SignedUrl, name).await?;
        match self.interceptor.sign(name, ttl) {
            Some(url) => Ok(Some(url)),
            None => self.inner.signed_url(name, ttl).await,
        }
    }
}
