//! The object-store port: every byte of state lives behind it (DESIGN.md "State in the object
//! store"). Adapters: [`FileStore`] (local disk), [`MemoryStore`] (tests), GCS (cloud).
//!
//! Like GCS, every object has a *generation* that changes on every write, and writes can carry a
//! precondition: create-only (`ifGenerationMatch=0`) or compare-and-swap on a generation. All
//! concurrency control in assetgen is built on these two.

pub mod contract;
mod counting;
mod file;
mod gcs;
mod intercepted;
mod json;
mod memory;
mod outage;

pub use counting::{CountingStore, StoreCalls};
pub use file::FileStore;
pub use gcs::{GcsRetry, GcsStore};
pub use intercepted::{Intercepted, Interceptor, StoreCall};
pub use json::{JsonObject, read_json, update_json, write_json};
pub use memory::MemoryStore;
pub use outage::{OutageFlag, OutageStore};

use async_trait::async_trait;
use bytes::Bytes;

/// An object's generation. Monotonic per store: a later write has a larger generation.
pub type Generation = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    None,
    /// Create-only: fail if the object exists (GCS `ifGenerationMatch=0`).
    DoesNotExist,
    /// Compare-and-swap: fail unless the object is at this generation.
    GenerationMatch(Generation),
}

impl Precondition {
    /// Whether a write or delete may go ahead on an object now at `current` (`None`: absent).
    /// The local adapters check it under their lock; GCS checks it on its side.
    pub fn check(self, current: Option<Generation>, name: &str) -> Result<(), StoreError> {
        let ok = match self {
            Self::None => true,
            Self::DoesNotExist => current.is_none(),
            Self::GenerationMatch(g) => current == Some(g),
        };
        if ok { Ok(()) } else { Err(StoreError::PreconditionFailed(name.to_owned())) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub name: String,
    pub generation: Generation,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub meta: ObjectMeta,
    pub content_type: String,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("precondition failed on {0}")]
    PreconditionFailed(String),
    #[error("invalid object name {0:?}")]
    InvalidName(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Worth trying again as is (the same request may succeed later).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, name: &str) -> Result<Object, StoreError>;

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError>;

    /// Every object whose name starts with `prefix`, sorted by name, with generations, so a
    /// tailer can read only what changed.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Deleting what is not there is `NotFound`.
    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError>;

    /// Up to which generation every write is surely visible to a listing that starts now.
    ///
    /// `None` where writes become visible in generation order (one lock assigns the generation
    /// and publishes the write: the file and memory stores), so a listing shows every write up to
    /// the highest generation it shows. GCS generations are timestamps taken when a write starts
    /// committing, so a concurrent writer's lower generation can become visible after a higher
    /// one: there the answer is "now, less the longest such delay". Readers that resume from a
    /// generation (the relay's event cursor) rely on it; a wrapper must pass it on, so it has no
    /// default.
    fn settled_generation(&self) -> Option<Generation>;

    /// A URL a browser can fetch the object from directly for `ttl`, where the store can make one
    /// (GCS: a V4 signed URL); `None` where it cannot, and the caller serves the bytes itself.
    async fn signed_url(&self, name: &str, ttl: std::time::Duration) -> Result<Option<String>, StoreError> {
        let _ = (name, ttl);
        Ok(None)
    }
}

/// Object names are `/`-separated relative paths with no empty, `.` or `..` segments, so every
/// adapter (a disk included) maps them one-to-one.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && name.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok { Ok(()) } else { Err(StoreError::InvalidName(name.to_owned())) }
}
