//! Fault injection for the fault tests of `assetgen serve` (`ASSETGEN_FAULT_STORE_OUTAGE_FILE`):
//! while a flag file exists, every store call answers `Unavailable`, as a bucket answering 503
//! does, and nothing reaches the store behind it. The test creates the file for a few seconds
//! mid-batch and removes it.

use super::{Intercepted, Interceptor, ObjectStore, StoreCall, StoreError};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;

/// The flag file whose existence is the outage.
#[derive(Debug)]
pub struct OutageFlag(PathBuf);

#[async_trait]
impl Interceptor for OutageFlag {
    async fn before(&self, _: StoreCall, _: &str) -> Result<(), StoreError> {
        if self.0.exists() {
            Err(StoreError::Unavailable(format!("injected outage: {} exists", self.0.display())))
        } else {
            Ok(())
        }
    }
}

/// A store that is down while its [`OutageFlag`] file exists.
pub type OutageStore = Intercepted<OutageFlag>;

impl OutageStore {
    pub fn new(inner: Arc<dyn ObjectStore>, flag: PathBuf) -> Self {
        Self::wrap(inner, OutageFlag(flag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Precondition;
    use bytes::Bytes;

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
