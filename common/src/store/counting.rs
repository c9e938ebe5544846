//! A store decorator that counts calls by kind: how many reads and writes a component really
//! makes (the relay's "one list per poll, whatever the number of clients", in numbers).

use super::{Intercepted, Interceptor, ObjectStore, StoreCall, StoreError};
use async_trait::async_trait;
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

#[async_trait]
impl Interceptor for StoreCalls {
    async fn before(&self, call: StoreCall, _: &str) -> Result<(), StoreError> {
        let counter = match call {
            StoreCall::Get => &self.gets,
            StoreCall::Put => &self.puts,
            StoreCall::List => &self.lists,
            StoreCall::Delete => &self.deletes,
            // Signing reads nothing from the store.
            StoreCall::SignedUrl => return Ok(()),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Counts the calls that reach the store behind it in [`StoreCalls`].
pub type CountingStore = Intercepted<Arc<StoreCalls>>;

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self::wrap(inner, Arc::default())
    }

    /// The counts so far, shared: they go on counting after the store is handed on.
    pub fn calls(&self) -> &Arc<StoreCalls> {
        self.interceptor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Precondition;
    use bytes::Bytes;

    #[tokio::test]
    async fn counts_each_kind_of_call_and_passes_them_through() {
        let store = CountingStore::new(Arc::new(super::super::MemoryStore::new()));
        store.put("a", Bytes::from_static(b"x"), "text/plain", Precondition::None).await.expect("put");
        store.get("a").await.expect("get");
        store.list("").await.expect("list");
        store.delete("a", Precondition::None).await.expect("delete");
        assert_eq!(store.calls().snapshot(), (1, 1, 1, 1));
        assert!(matches!(store.get("a").await, Err(StoreError::NotFound(_))), "calls reach the inner store");
    }
}
