//! The behaviour every [`ObjectStore`] adapter must have. Each adapter's tests call [`run_all`]:
//! memory and filesystem here, GCS against fake-gcs-server.

use super::{ObjectStore, Precondition, StoreError, update_json};
use bytes::Bytes;
use std::sync::Arc;

/// Panics with a message naming the broken rule. Uses names under a fresh prefix, so it can run
/// against a shared bucket.
pub async fn run_all(store: &dyn ObjectStore) {
    let p = format!("contract-{}/", uuid::Uuid::now_v7());
    create_only(store, &p).await;
    compare_and_swap(store, &p).await;
    list_by_prefix(store, &p).await;
    delete_with_preconditions(store, &p).await;
    invalid_names(store).await;
}

/// Runs concurrent CAS increments on one counter and checks none was lost.
pub async fn run_concurrent_cas(store: Arc<dyn ObjectStore>, writers: usize, increments: usize) {
    let name = format!("contract-{}/counter.json", uuid::Uuid::now_v7());
    super::write_json(store.as_ref(), &name, &0u64, Precondition::DoesNotExist).await.expect("seed counter");
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move {
                for _ in 0..increments {
                    update_json::<u64, StoreError, _>(store.as_ref(), &name, |n| Ok(Some(n + 1)))
                        .await
                        .expect("cas increment");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let total: u64 = super::read_json(store.as_ref(), &name).await.expect("read counter").value;
    assert_eq!(total, (writers * increments) as u64, "a compare-and-swap update was lost");
}

async fn create_only(store: &dyn ObjectStore, p: &str) {
    let name = format!("{p}manifest.json");
    let g = store
        .put(&name, Bytes::from_static(b"{\"a\":1}"), "application/json", Precondition::DoesNotExist)
        .await
        .expect("create-only on a new name succeeds");
    assert!(g > 0, "generations are positive");
    let again =
        store.put(&name, Bytes::from_static(b"{\"a\":2}"), "application/json", Precondition::DoesNotExist).await;
    assert!(
        matches!(again, Err(StoreError::PreconditionFailed(_))),
        "create-only on an existing name must fail, got {again:?}"
    );
    let read = store.get(&name).await.expect("get");
    assert_eq!(read.body, Bytes::from_static(b"{\"a\":1}"), "a refused write must not change the object");
    assert_eq!(read.meta.generation, g, "get returns the generation put returned");
    assert_eq!(read.content_type, "application/json");
    assert!(matches!(store.get(&format!("{p}missing")).await, Err(StoreError::NotFound(_))), "missing is NotFound");
}

async fn compare_and_swap(store: &dyn ObjectStore, p: &str) {
    let name = format!("{p}rows/0000.json");
    let g1 = store.put(&name, Bytes::from_static(b"1"), "application/json", Precondition::None).await.expect("put");
    let g2 = store
        .put(&name, Bytes::from_static(b"2"), "application/json", Precondition::GenerationMatch(g1))
        .await
        .expect("CAS at the current generation succeeds");
    assert!(g2 > g1, "a write makes a larger generation ({g2} after {g1})");
    let stale = store.put(&name, Bytes::from_static(b"3"), "application/json", Precondition::GenerationMatch(g1)).await;
    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed(_))),
        "CAS at a stale generation must fail, got {stale:?}"
    );
    let absent = store
        .put(
            &format!("{p}rows/none.json"),
            Bytes::from_static(b"x"),
            "application/json",
            Precondition::GenerationMatch(g1),
        )
        .await;
    assert!(
        matches!(absent, Err(StoreError::PreconditionFailed(_))),
        "CAS on a missing object must fail, got {absent:?}"
    );
    assert_eq!(store.get(&name).await.expect("get").body, Bytes::from_static(b"2"));
}

async fn list_by_prefix(store: &dyn ObjectStore, p: &str) {
    for name in ["list/b/1.png", "list/a/2.json", "list/a/1.json", "listing.txt"] {
        store
            .put(&format!("{p}{name}"), Bytes::from_static(b"xy"), "application/octet-stream", Precondition::None)
            .await
            .expect("put");
    }
    let names = |metas: Vec<super::ObjectMeta>| metas.into_iter().map(|m| m.name).collect::<Vec<_>>();
    let all = store.list(&format!("{p}list/")).await.expect("list");
    assert_eq!(all.iter().map(|m| m.size).collect::<Vec<_>>(), vec![2, 2, 2], "list reports sizes");
    assert_eq!(
        names(all),
        vec![format!("{p}list/a/1.json"), format!("{p}list/a/2.json"), format!("{p}list/b/1.png")],
        "list is by prefix, recursive and sorted"
    );
    assert_eq!(
        names(store.list(&format!("{p}list/a/1")).await.expect("list")),
        vec![format!("{p}list/a/1.json")],
        "a prefix need not end at a '/'"
    );
    assert_eq!(names(store.list(&format!("{p}listing")).await.expect("list")), vec![format!("{p}listing.txt")]);
    assert!(store.list(&format!("{p}nothing/")).await.expect("list").is_empty());
    let one = store.get(&format!("{p}list/a/1.json")).await.expect("get");
    let listed = store.list(&format!("{p}list/a/1.json")).await.expect("list");
    assert_eq!(listed[0].generation, one.meta.generation, "list and get agree on generations");
}

async fn delete_with_preconditions(store: &dyn ObjectStore, p: &str) {
    let name = format!("{p}delete/me");
    let g =
        store.put(&name, Bytes::from_static(b"x"), "application/octet-stream", Precondition::None).await.expect("put");
    let stale = store.delete(&name, Precondition::GenerationMatch(g + 1)).await;
    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed(_))),
        "delete at a wrong generation must fail, got {stale:?}"
    );
    store.delete(&name, Precondition::GenerationMatch(g)).await.expect("delete at the current generation");
    assert!(matches!(store.get(&name).await, Err(StoreError::NotFound(_))), "deleted objects are gone");
    assert!(
        matches!(store.delete(&name, Precondition::None).await, Err(StoreError::NotFound(_))),
        "deleting twice is NotFound"
    );
    store
        .put(&name, Bytes::from_static(b"y"), "application/octet-stream", Precondition::DoesNotExist)
        .await
        .expect("a deleted name can be created again");
}

async fn invalid_names(store: &dyn ObjectStore) {
    for bad in ["", "../escape", "a//b", "a/./b", "/abs"] {
        let r = store.put(bad, Bytes::new(), "application/octet-stream", Precondition::None).await;
        assert!(matches!(r, Err(StoreError::InvalidName(_))), "{bad:?} must be refused, got {r:?}");
    }
}
