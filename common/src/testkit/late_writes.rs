//! A store whose chosen writes become visible late, as on GCS, where generations are timestamps
//! taken as a write starts committing and a concurrent writer's lower generation can appear in
//! listings after a higher one.

use crate::store::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Wraps a store whose writes are visible in order (memory, file). A write to a name marked with
/// [`hide_next_write`](Self::hide_next_write) gets its generation at once, but listings and reads
/// keep showing the version before it until [`release`](Self::release); meanwhile
/// [`settled_generation`](ObjectStore::settled_generation) stays below it, as GCS's does.
#[derive(Debug)]
pub struct LateWrites {
    inner: Arc<dyn ObjectStore>,
    state: Mutex<Late>,
}

#[derive(Debug, Default)]
struct Late {
    armed: HashSet<String>,
    /// Hidden write's generation, and what readers see meanwhile (`None`: nothing).
    hidden: HashMap<String, (Generation, Option<Object>)>,
}

impl LateWrites {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner, state: Mutex::new(Late::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Late> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next write to `name` stays invisible until [`Self::release`].
    pub fn hide_next_write(&self, name: &str) {
        self.lock().armed.insert(name.to_owned());
    }

    /// Makes the hidden write to `name` visible; returns its generation.
    pub fn release(&self, name: &str) -> Option<Generation> {
        self.lock().hidden.remove(name).map(|(g, _)| g)
    }
}

#[async_trait]
impl ObjectStore for LateWrites {
    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        if let Some((_, before)) = self.lock().hidden.get(name) {
            return before.clone().ok_or_else(|| StoreError::NotFound(name.to_owned()));
        }
        self.inner.get(name).await
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        let hide = self.lock().armed.remove(name);
        if !hide {
            return self.inner.put(name, body, content_type, when).await;
        }
        let before = match self.inner.get(name).await {
            Ok(object) => Some(object),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let generation = self.inner.put(name, body, content_type, when).await?;
        self.lock().hidden.insert(name.to_owned(), (generation, before));
        Ok(generation)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let listed = self.inner.list(prefix).await?;
        let late = self.lock();
        Ok(listed
            .into_iter()
            .filter_map(|meta| match late.hidden.get(&meta.name) {
                None => Some(meta),
                Some((_, before)) => before.as_ref().map(|o| o.meta.clone()),
            })
            .collect())
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        self.inner.delete(name, when).await
    }

    /// Below the lowest hidden write: everything under it is in a listing.
    fn settled_generation(&self) -> Option<Generation> {
        let lowest_hidden = self.lock().hidden.values().map(|(g, _)| *g).min();
        match (lowest_hidden, self.inner.settled_generation()) {
            (Some(h), Some(s)) => Some(s.min(h - 1)),
            (Some(h), None) => Some(h - 1),
            (None, settled) => settled,
        }
    }
}
