use super::{Generation, Object, ObjectMeta, ObjectStore, Precondition, StoreError, check_name};
use async_trait::async_trait;
use bytes::Bytes;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A store on the local disk (`ASSETGEN_STORE=file://PATH`), laid out exactly like the bucket, so a
/// user can open `./.data/images/...png` directly.
///
/// The generation is the file's modification time in microseconds — as in GCS, where the
/// generation is a microsecond timestamp. It is set on a temporary file that is then renamed over
/// the object, so content and generation change together, atomically, and survive restarts.
/// Writes are serialized by one lock per store, which makes generations strictly increasing in
/// the order writes become visible (the relay's resume relies on that). One `assetgen serve` per
/// data directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    writes: Arc<Mutex<Generation>>,
}

const TMP_DIR: &str = ".tmp";
/// Content types that the name's extension does not already say, mirrored by object name.
const META_DIR: &str = ".meta";

impl FileStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(root.join(TMP_DIR)).map_err(|e| unavailable(&root, e))?;
        Ok(Self { root, writes: Arc::new(Mutex::new(0)) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn next_generation(last: &mut Generation) -> Generation {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or_default();
        let now = Generation::try_from(now).unwrap_or(Generation::MAX);
        *last = now.max(*last + 1);
        *last
    }

    fn put_blocking(
        &self,
        name: &str,
        body: &[u8],
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        let path = self.path(name);
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| unavailable(dir, e))?;
        // Write the bytes outside the lock; only the check-and-rename is serialized.
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join(TMP_DIR)).map_err(|e| unavailable(&path, e))?;
        tmp.write_all(body).map_err(|e| unavailable(&path, e))?;
        tmp.as_file().sync_data().map_err(|e| unavailable(&path, e))?;

        let mut last = self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = generation_of(&path)?;
        when.check(current, name)?;
        let generation = Self::next_generation(&mut last);
        tmp.as_file().set_modified(time_of(generation)).map_err(|e| unavailable(&path, e))?;
        self.set_content_type(name, content_type)?;
        tmp.persist(&path).map_err(|e| unavailable(&path, e.error))?;
        Ok(generation)
    }

    /// The content type is what the extension says (`.png`, `.json`…); only a different one is
    /// recorded, under `.meta/`, so the user's folders hold nothing but their objects. It is
    /// advisory (the bytes are authoritative), so it need not be atomic with the object.
    fn set_content_type(&self, name: &str, content_type: &str) -> Result<(), StoreError> {
        let side = self.root.join(META_DIR).join(name);
        if content_type == derived_content_type(name) {
            return match std::fs::remove_file(&side) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(unavailable(&side, e)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = side.parent() {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(dir, e))?;
        }
        std::fs::write(&side, content_type).map_err(|e| unavailable(&side, e))
    }

    fn content_type(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join(META_DIR).join(name))
            .unwrap_or_else(|_| derived_content_type(name).to_owned())
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Start the walk at the deepest directory the prefix names, not at the root.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let start = if dir_part.is_empty() { self.root.clone() } else { self.root.join(dir_part) };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| unavailable(&dir, e))?;
                let file_name = entry.file_name();
                let file_name = file_name.to_string_lossy();
                if dir == self.root && (file_name == TMP_DIR || file_name == META_DIR) {
                    continue;
                }
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else { continue };
                let name = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                let meta = entry.metadata().map_err(|e| unavailable(&path, e))?;
                if meta.is_dir() {
                    if prefix.starts_with(&format!("{name}/")) || format!("{name}/").starts_with(prefix) {
                        stack.push(path);
                    }
                } else if name.starts_with(prefix) {
                    out.push(ObjectMeta { name, generation: generation_from(&meta), size: meta.len() });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete_blocking(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        let path = self.path(name);
        let _writes = self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = generation_of(&path)?.ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        when.check(Some(current), name)?;
        std::fs::remove_file(&path).map_err(|e| unavailable(&path, e))
    }
}

/// The content type an object name's extension implies.
fn derived_content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "json" => "application/json",
        "jsonl" => "application/jsonl",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

fn time_of(generation: Generation) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(generation).unwrap_or_default())
}

fn generation_from(meta: &std::fs::Metadata) -> Generation {
    let micros = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_micros());
    micros.and_then(|m| Generation::try_from(m).ok()).unwrap_or_default()
}

fn generation_of(path: &Path) -> Result<Option<Generation>, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(generation_from(&meta))),
        Ok(_) => Err(StoreError::InvalidName(path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unavailable(path, e)),
    }
}

fn unavailable(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

#[async_trait]
impl ObjectStore for FileStore {
    /// One lock assigns a generation and publishes the write: listings show writes in order.
    fn settled_generation(&self) -> Option<Generation> {
        None
    }

    async fn get(&self, name: &str) -> Result<Object, StoreError> {
        check_name(name)?;
        let this = self.clone();
        let name = name.to_owned();
        blocking(move || {
            let path = this.path(&name);
            // Read the body and the generation from one open file, so they belong together even
            // if a rename replaces the object meanwhile.
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound(name)),
                Err(e) => return Err(unavailable(&path, e)),
            };
            let meta = file.metadata().map_err(|e| unavailable(&path, e))?;
            if !meta.is_file() {
                return Err(StoreError::NotFound(name));
            }
            let mut body = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or_default());
            std::io::Read::read_to_end(&mut file, &mut body).map_err(|e| unavailable(&path, e))?;
            let content_type = this.content_type(&name);
            Ok(Object {
                meta: ObjectMeta { name, generation: generation_from(&meta), size: body.len() as u64 },
                content_type,
                body: Bytes::from(body),
            })
        })
        .await
    }

    async fn put(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
        when: Precondition,
    ) -> Result<Generation, StoreError> {
        check_name(name)?;
        let (this, name, content_type) = (self.clone(), name.to_owned(), content_type.to_owned());
        blocking(move || this.put_blocking(&name, &body, &content_type, when)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let (this, prefix) = (self.clone(), prefix.to_owned());
        blocking(move || this.list_blocking(&prefix)).await
    }

    async fn delete(&self, name: &str, when: Precondition) -> Result<(), StoreError> {
        check_name(name)?;
        let (this, name) = (self.clone(), name.to_owned());
        blocking(move || this.delete_blocking(&name, when)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_meets_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        super::super::contract::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn file_store_loses_no_concurrent_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        super::super::contract::run_concurrent_cas(std::sync::Arc::new(store), 8, 25).await;
    }

    #[tokio::test]
    async fn generations_survive_a_restart_and_keep_increasing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = FileStore::open(dir.path()).expect("open");
        let g1 =
            first.put("a/b.json", Bytes::from_static(b"1"), "application/json", Precondition::None).await.expect("put");
        let again = FileStore::open(dir.path()).expect("reopen");
        let read = again.get("a/b.json").await.expect("get");
        assert_eq!(read.meta.generation, g1);
        assert_eq!(read.content_type, "application/json");
        let g2 = again
            .put("a/b.json", Bytes::from_static(b"2"), "application/json", Precondition::GenerationMatch(g1))
            .await
            .expect("cas");
        assert!(g2 > g1);
        assert_eq!(std::fs::read(dir.path().join("a/b.json")).expect("plain file"), b"2");
    }

    #[tokio::test]
    async fn folders_hold_only_objects_and_unusual_content_types_are_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        store.put("images/b/A-v1.png", Bytes::from_static(b"png"), "image/png", Precondition::None).await.expect("put");
        store.put("refs/abc", Bytes::from_static(b"jpg"), "image/jpeg", Precondition::None).await.expect("put");
        let images: Vec<_> =
            std::fs::read_dir(dir.path().join("images/b")).expect("dir").filter_map(Result::ok).collect();
        assert_eq!(images.len(), 1, "no side files beside the images");
        assert_eq!(store.get("images/b/A-v1.png").await.expect("get").content_type, "image/png");
        assert_eq!(store.get("refs/abc").await.expect("get").content_type, "image/jpeg");
        let all: Vec<String> = store.list("").await.expect("list").into_iter().map(|m| m.name).collect();
        assert_eq!(all, vec!["images/b/A-v1.png", "refs/abc"], "store internals are not listed");
        store
            .put("refs/abc", Bytes::from_static(b"bin"), "application/octet-stream", Precondition::None)
            .await
            .expect("put");
        assert_eq!(
            store.get("refs/abc").await.expect("get").content_type,
            "application/octet-stream",
            "a stale record is removed"
        );
    }
}
