//! Fault injection for the fault tests of `assetgen serve` (`ASSETGEN_FAULT_STORE_OUTAGE_FILE`):
//! while a flag file exists, every store call answers `Unavailable`, as a bucket answering 503
//! does, and nothing reaches the store behind it. The test creates the file for a few seconds
//! mid-batch and removes it.

use super::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug)]
pub struct OutageStore {
    inner: Arc<dyn ObjectStore>,
    flag: PathBuf,
}

impl OutageStore {
    pub fn new(inner: Arc<dyn ObjectStore>, flag: PathBuf) -> Self {
        Self { inner, flag }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.flag.exists() {
            Err(StoreError::Unavailable(format!("injected outage: {} exists", self.flag.display())))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ObjectStore for OutageStore {
    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        self.check()?;
        self.inner.get(name).await
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        self.check()?;
        self.inner.put(name, body, content_type, when).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.check()?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete(name, when).await
    }

    fn settled_generation(&self) -> Option<Generation> {
        self.inner.settled_generation()
    }

    async fn signed_url(&self, name: &str, ttl: std::time::Duration) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.signed_url(name, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_fail_while_the_flag_exists_and_pass_through_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("outage");
        let store = OutageStore::new(Arc::new(super::super::MemoryStore::new()), flag.clone());
        store.put("a", Bytes::from_static(b"x"), "text/plain", Precondition::None).await.expect("up");
        std::fs::write(&flag, b"").expect("flag");
        assert!(matches!(store.get("a").await, Err(StoreError::Unavailable(_))));
        assert!(store.put("b", Bytes::new(), "text/plain", Precondition::None).await.is_err());
        std::fs::remove_file(&flag).expect("unflag");
        assert_eq!(store.get("a").await.expect("back").body.as_ref(), b"x");
        assert!(
            matches!(store.get("b").await, Err(StoreError::NotFound(_))),
            "nothing reached the store in the outage"
        );
    }
}
