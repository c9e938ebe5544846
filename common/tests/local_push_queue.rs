//! The in-process queue behaves like a Pub/Sub push subscription, over real HTTP on loopback.

use assetgen_common::domain::BatchId;
use assetgen_common::queue::{
    DEAD_LETTER_DELIVERY_COUNT, LocalPushConfig, LocalPushQueue, PushEnvelope, RowMessage, RowQueue,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
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
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

async fn rows(State(e): State<Arc<Endpoint>>, body: Bytes) -> StatusCode {
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
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
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
