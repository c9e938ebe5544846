//! The in-process queue behaves like a Pub/Sub push subscription, over real HTTP on loopback.

use assetgen_common::domain::BatchId;
use assetgen_common::queue::{
    DEAD_LETTER_DELIVERY_COUNT, LocalPushConfig, LocalPushQueue, PushEnvelope, RowMessage, RowQueue,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the test server saw, and how it should answer.
#[derive(Default)]
struct Endpoint {
    /// Row → delivery attempts seen (from the envelope).
    attempts: Mutex<HashMap<u32, Vec<u32>>>,
    dead: Mutex<Vec<PushEnvelope>>,
    /// Row → how many deliveries to refuse before acking.
    refuse: HashMap<u32, usize>,
    /// Sleep this long on the first delivery of each row.
    first_delivery_sleep: Option<Duration>,
    /// How refusals are answered: 503 unless set (a 429 asks the row to wait for the quota).
    refuse_with: Option<StatusCode>,
    /// `Retry-After` seconds sent with refusals.
    retry_after: Option<u64>,
    /// When each delivery arrived.
    arrivals: Mutex<Vec<std::time::Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

async fn rows(State(e): State<Arc<Endpoint>>, body: Bytes) -> Response {
    e.arrivals.lock().expect("lock").push(std::time::Instant::now());
    let envelope = PushEnvelope::parse(&body).expect("an envelope");
    let row = envelope.row_message().expect("a row message").row;
    let now = e.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    e.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let seen = {
        let mut attempts = e.attempts.lock().expect("lock");
        let list = attempts.entry(row).or_default();
        list.push(envelope.delivery_attempt().expect("local queue sets deliveryAttempt"));
        list.len()
    };
    if let (Some(sleep), 1) = (e.first_delivery_sleep, seen) {
        tokio::time::sleep(sleep).await;
    } else {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.in_flight.fetch_sub(1, Ordering::SeqCst);
    if seen <= e.refuse.get(&row).copied().unwrap_or(0) {
        let status = e.refuse_with.unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        match e.retry_after {
            Some(s) => (status, [(header::RETRY_AFTER, s.to_string())]).into_response(),
            None => status.into_response(),
        }
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn dead(State(e): State<Arc<Endpoint>>, body: Bytes) -> StatusCode {
    e.dead.lock().expect("lock").push(PushEnvelope::parse(&body).expect("an envelope"));
    StatusCode::OK
}

async fn spawn(endpoint: Arc<Endpoint>, tune: impl FnOnce(&mut LocalPushConfig)) -> LocalPushQueue {
    let app =
        Router::new().route("/pubsub/rows", post(rows)).route("/pubsub/dead-letter", post(dead)).with_state(endpoint);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = url::Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = LocalPushConfig::for_base(&base).expect("config");
    config.min_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(50);
    tune(&mut config);
    LocalPushQueue::new(config)
}

fn messages(n: u32) -> Vec<RowMessage> {
    let batch_id = BatchId::new();
    (0..n).map(|row| RowMessage { batch_id: batch_id.clone(), row }).collect()
}

async fn idle(queue: &LocalPushQueue) {
    tokio::time::timeout(Duration::from_secs(20), queue.wait_idle()).await.expect("queue drains");
}

#[tokio::test]
async fn nacked_messages_are_redelivered_until_acked() {
    let endpoint = Arc::new(Endpoint { refuse: HashMap::from([(1, 2)]), ..Endpoint::default() });
    let queue = spawn(endpoint.clone(), |_| {}).await;
    queue.publish(&messages(3)).await.expect("publish");
    idle(&queue).await;
    let attempts = endpoint.attempts.lock().expect("lock").clone();
    assert_eq!(attempts[&0], vec![1]);
    assert_eq!(attempts[&1], vec![1, 2, 3], "refused twice, acked on the third delivery");
    assert_eq!(attempts[&2], vec![1]);
    assert!(endpoint.dead.lock().expect("lock").is_empty());
    let stats = queue.stats();
    assert_eq!((stats.acked.load(Ordering::SeqCst), stats.nacked.load(Ordering::SeqCst)), (3, 2));
}

#[tokio::test]
async fn after_max_attempts_the_message_is_dead_lettered_with_pubsub_attributes() {
    let endpoint = Arc::new(Endpoint { refuse: HashMap::from([(0, usize::MAX)]), ..Endpoint::default() });
    let queue = spawn(endpoint.clone(), |c| c.max_delivery_attempts = 4).await;
    let sent = messages(1);
    queue.publish(&sent).await.expect("publish");
    idle(&queue).await;
    assert_eq!(endpoint.attempts.lock().expect("lock")[&0], vec![1, 2, 3, 4]);
    let dead = endpoint.dead.lock().expect("lock").clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].row_message().expect("row"), sent[0], "the dead-lettered copy carries the same data");
    assert_eq!(dead[0].message.attributes.get(DEAD_LETTER_DELIVERY_COUNT).map(String::as_str), Some("4"));
    assert_eq!(queue.stats().dead_lettered.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_push_past_the_ack_deadline_is_redelivered_not_lost() {
    let endpoint = Arc::new(Endpoint { first_delivery_sleep: Some(Duration::from_millis(600)), ..Endpoint::default() });
    let queue = spawn(endpoint.clone(), |c| c.ack_deadline = Duration::from_millis(200)).await;
    queue.publish(&messages(2)).await.expect("publish");
    idle(&queue).await;
    let attempts = endpoint.attempts.lock().expect("lock").clone();
    for row in 0..2 {
        assert_eq!(attempts[&row], vec![1, 2], "row {row}: the slow first delivery timed out and was redelivered");
    }
    assert_eq!(queue.stats().acked.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn pushes_in_flight_are_bounded() {
    let endpoint = Arc::new(Endpoint::default());
    let queue = spawn(endpoint.clone(), |c| c.max_outstanding = 3).await;
    queue.publish(&messages(20)).await.expect("publish");
    idle(&queue).await;
    assert_eq!(endpoint.attempts.lock().expect("lock").len(), 20);
    let max = endpoint.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=3).contains(&max), "at most 3 pushes at once, and some overlap (saw {max})");
}

#[tokio::test]
async fn quota_waits_are_not_counted_toward_dead_lettering_and_retry_after_is_honoured() {
    // Three 429s with `Retry-After: 1`, where two failed deliveries would dead-letter the message.
    let endpoint = Arc::new(Endpoint {
        refuse: HashMap::from([(0, 3)]),
        refuse_with: Some(StatusCode::TOO_MANY_REQUESTS),
        retry_after: Some(1),
        ..Endpoint::default()
    });
    let queue = spawn(endpoint.clone(), |c| c.max_delivery_attempts = 2).await;
    queue.publish(&messages(1)).await.expect("publish");
    idle(&queue).await;
    assert_eq!(endpoint.attempts.lock().expect("lock")[&0], vec![1, 2, 3, 4], "acked on the fourth delivery");
    assert!(endpoint.dead.lock().expect("lock").is_empty(), "waiting for the quota is not failing");
    let arrivals = endpoint.arrivals.lock().expect("lock").clone();
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(990), "Retry-After: 1 is waited out, not the 10–50 ms backoff ({gap:?})");
    }
    let stats = queue.stats();
    assert_eq!((stats.quota_waits.load(Ordering::SeqCst), stats.dead_lettered.load(Ordering::SeqCst)), (3, 0));
}

#[tokio::test]
async fn retry_after_is_honoured_on_a_counted_nack_too() {
    let endpoint = Arc::new(Endpoint { refuse: HashMap::from([(0, 1)]), retry_after: Some(1), ..Endpoint::default() });
    let queue = spawn(endpoint.clone(), |_| {}).await;
    queue.publish(&messages(1)).await.expect("publish");
    idle(&queue).await;
    let arrivals = endpoint.arrivals.lock().expect("lock").clone();
    assert_eq!(arrivals.len(), 2);
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(990), "{:?}", arrivals[1] - arrivals[0]);
}

#[tokio::test]
async fn a_journaled_message_stays_until_its_last_copy_is_done() {
    use assetgen_common::store::{MemoryStore, ObjectStore};
    // Two copies of each message: the first delivery of the row is slow (the holder), the second
    // is acked at once (a duplicate acknowledged as busy). The journal must keep the message
    // while the holder may still crash and need it after a restart.
    let endpoint = Arc::new(Endpoint { first_delivery_sleep: Some(Duration::from_millis(800)), ..Endpoint::default() });
    let app = Router::new()
        .route("/pubsub/rows", post(rows))
        .route("/pubsub/dead-letter", post(dead))
        .with_state(endpoint.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = url::Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = LocalPushConfig::for_base(&base).expect("config");
    config.duplicates = 2;
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let queue = LocalPushQueue::journaled(config, store.clone());
    queue.publish(&messages(1)).await.expect("publish");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(queue.stats().acked.load(Ordering::SeqCst), 1, "the duplicate was acked");
    assert_eq!(store.list("queue/local/").await.expect("list").len(), 1, "the holder's copy is still journaled");
    idle(&queue).await;
    assert!(store.list("queue/local/").await.expect("list").is_empty(), "gone once both copies are done");
}
