//! A store decorator that counts calls by kind: how many reads and writes a component really
//! makes (the relay's "one list per poll, whatever the number of clients", in numbers).

use super::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct StoreCalls {
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
}

impl StoreCalls {
    /// (gets, puts, lists, deletes) so far.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (get(&self.gets), get(&self.puts), get(&self.lists), get(&self.deletes))
    }
}

#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    pub calls: Arc<StoreCalls>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner, calls: Arc::default() }
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        self.calls.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(name).await
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        self.calls.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put(name, body, content_type, when).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.calls.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        self.calls.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(name, when).await
    }

    async fn signed_url(&self, name: &str, ttl: std::time::Duration) -> Result<Option<String>, StoreError> {
        self.inner.signed_url(name, ttl).await
    }

    fn settled_generation(&self) -> Option<Generation> {
        self.inner.settled_generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_each_kind_of_call_and_passes_them_through() {
        let store = CountingStore::new(Arc::new(super::super::MemoryStore::new()));
        store.put("a", Bytes::from_static(b"x"), "text/plain", Precondition::None).await.expect("put");
        store.get("a").await.expect("get");
        store.list("").await.expect("list");
        store.delete("a", Precondition::None).await.expect("delete");
        assert_eq!(store.calls.snapshot(), (1, 1, 1, 1));
        assert!(matches!(store.get("a").await, Err(StoreError::NotFound(_))), "calls reach the inner store");
    }
}
