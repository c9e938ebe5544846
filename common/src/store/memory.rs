use super::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError, check_name};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A store in memory: `ASSETGEN_STORE=mem://`, and unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, (Generation, String, Bytes)>,
    last_generation: Generation,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-written: every mutation is a
        // single insert or remove. So a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn meta(name: &str, generation: Generation, body: &Bytes) -> ObjectMeta {
    ObjectMeta { name: name.to_owned(), generation, size: body.len() as u64 }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    /// One lock assigns a generation and publishes the write: listings show writes in order.
    fn settled_generation(&self) -> Option<Generation> {
        None
    }

    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        check_name(name)?;
        let inner = self.lock();
        let (generation, content_type, body) =
            inner.objects.get(name).ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        Ok(Object { meta: meta(name, *generation, body), content_type: content_type.clone(), body: body.clone() })
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        check_name(name)?;
        let mut inner = self.lock();
        when.check(inner.objects.get(name).map(|o| o.0), name)?;
        inner.last_generation += 1;
        let generation = inner.last_generation;
        inner.objects.insert(name.to_owned(), (generation, content_type.to_owned(), body));
        Ok(generation)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, (generation, _, body))| meta(name, *generation, body))
            .collect())
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        check_name(name)?;
        let mut inner = self.lock();
        let current = inner.objects.get(name).map(|o| o.0).ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        when.check(Some(current), name)?;
        inner.objects.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_meets_the_contract() {
        super::super::contract::run_all(&super::MemoryStore::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_loses_no_concurrent_update() {
        super::super::contract::run_concurrent_cas(std::sync::Arc::new(super::MemoryStore::new()), 8, 25).await;
    }
}
