//! The Pub/Sub adapter against Google's real Pub/Sub emulator (loopback only): batch publish, pull,
//! the push path into a generate-like endpoint, dead letters, and a bounded failure when the
//! emulator is gone. Each test runs its own emulator (`testkit::PubSubEmulator`); a machine
//! without it fails these tests with a message saying how to install it.

use assetgen_common::domain::BatchId;
use assetgen_common::queue::{
    DEAD_LETTER_DELIVERY_COUNT, DEAD_LETTER_SUBSCRIPTION, PubSubPolicy, PubSubQueue, PushEnvelope, QueueError,
    RowMessage, RowQueue,
};
use assetgen_common::testkit::{PubSubEmulator, SubscriptionSpec};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn batch(n: u32) -> Vec<RowMessage> {
    let batch_id = BatchId::new();
    (0..n).map(|row| RowMessage { batch_id: batch_id.clone(), row }).collect()
}

/// A push endpoint that answers like generate: it accepts the envelope only if
/// `PushEnvelope::parse` and `row_message()` accept it, and refuses (503) one row if asked.
#[derive(Default)]
struct Endpoint {
    refuse_row: Option<u32>,
    /// Every delivery to `/pubsub/rows`, in order of arrival.
    rows: Mutex<Vec<(RowMessage, PushEnvelope)>>,
    /// Every delivery to `/pubsub/dead-letter`.
    dead: Mutex<Vec<(RowMessage, PushEnvelope)>>,
    /// Bodies that were not a row message envelope.
    refused: Mutex<Vec<String>>,
}

impl Endpoint {
    fn rows(&self) -> Vec<(RowMessage, PushEnvelope)> {
        self.rows.lock().expect("lock").clone()
    }

    fn dead(&self) -> Vec<(RowMessage, PushEnvelope)> {
        self.dead.lock().expect("lock").clone()
    }

    fn refused(&self) -> Vec<String> {
        self.refused.lock().expect("lock").clone()
    }

    fn accept(&self, body: &[u8]) -> Result<(RowMessage, PushEnvelope), StatusCode> {
        let parsed = PushEnvelope::parse(body).and_then(|e| e.row_message().map(|row| (row, e)));
        parsed.map_err(|e| {
            self.refused.lock().expect("lock").push(format!("{e}: {}", String::from_utf8_lossy(body)));
            StatusCode::BAD_REQUEST
        })
    }
}

async fn push_row(State(e): State<Arc<Endpoint>>, body: Bytes) -> StatusCode {
    let (row, envelope) = match e.accept(&body) {
        Ok(accepted) => accepted,
        Err(status) => return status,
    };
    let refuse = e.refuse_row == Some(row.row);
    e.rows.lock().expect("lock").push((row, envelope));
    if refuse { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::NO_CONTENT }
}

async fn push_dead_letter(State(e): State<Arc<Endpoint>>, body: Bytes) -> StatusCode {
    match e.accept(&body) {
        Ok(accepted) => {
            e.dead.lock().expect("lock").push(accepted);
            StatusCode::NO_CONTENT
        }
        Err(status) => status,
    }
}

/// The endpoint served on 127.0.0.1:0; the server stops when this is dropped.
struct PushServer {
    addr: SocketAddr,
    endpoint: Arc<Endpoint>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PushServer {
    async fn start(endpoint: Endpoint) -> Self {
        let endpoint = Arc::new(endpoint);
        let router = Router::new()
            .route("/pubsub/rows", post(push_row))
            .route("/pubsub/dead-letter", post(push_dead_letter))
            .with_state(endpoint.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the push endpoint serves");
        });
        Self { addr, endpoint, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Polls `done` every 100 ms until it holds or `timeout` passes; then fails with `why()`.
async fn wait_until(timeout: Duration, done: impl Fn() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "not within {} s: {}", timeout.as_secs(), why());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_batch_is_pulled_whole_with_data_and_attributes() {
    let started = Instant::now();
    let emulator = PubSubEmulator::start().await;
    eprintln!("emulator up in {:.1} s", started.elapsed().as_secs_f64());
    emulator.create_topic("rows").await;
    let subscription = emulator.create_pull_subscription("rows-pull", "rows").await;
    let queue = emulator.queue("rows").await;
    assert_eq!(queue.topic(), format!("projects/{}/topics/rows", emulator.project));

    let rows = batch(25);
    let publishing = Instant::now();
    queue.publish(&rows).await.expect("the emulator accepts the batch");
    eprintln!("published {} rows in {} ms", rows.len(), publishing.elapsed().as_millis());

    let pulled = emulator.pull_at_least(&subscription, rows.len(), Duration::from_secs(30)).await;
    let mut seen = BTreeMap::new();
    for message in &pulled {
        let envelope = message.envelope(&subscription);
        let row = envelope.row_message().expect("data is the JSON of a RowMessage");
        assert_eq!(message.message.attributes, row.attributes(), "attributes repeat the row message");
        assert!(!message.message.id().is_empty(), "a message id");
        seen.insert(row.row, row);
    }
    let expected: BTreeMap<u32, RowMessage> = rows.iter().map(|r| (r.row, r.clone())).collect();
    assert_eq!(seen, expected, "every row arrives, with its batch id");
    assert!(emulator.pull(&subscription, 10).await.is_empty(), "nothing more than the batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_request_and_concurrent_batches_all_arrive() {
    let emulator = PubSubEmulator::start().await;
    emulator.create_topic("rows").await;
    let subscription = emulator.create_pull_subscription("rows-pull", "rows").await;
    let queue = emulator.queue("rows").await;

    // More than the 1000 messages of one Publish request, and two callers sharing the publisher.
    let big = batch(1200);
    let small = batch(7);
    let publishing = Instant::now();
    let clone = queue.clone();
    let (a, b) = tokio::join!(queue.publish(&big), clone.publish(&small));
    a.expect("the big batch is accepted");
    b.expect("the small batch is accepted");
    eprintln!("published 1207 rows in {} ms", publishing.elapsed().as_millis());

    let pulled = emulator.pull_at_least(&subscription, big.len() + small.len(), Duration::from_secs(60)).await;
    let seen: HashSet<RowMessage> =
        pulled.iter().map(|m| m.envelope(&subscription).row_message().expect("a row message")).collect();
    let expected: HashSet<RowMessage> = big.iter().chain(&small).cloned().collect();
    assert_eq!(seen, expected, "every row of both batches arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_are_pushed_as_envelopes_generate_accepts() {
    let emulator = PubSubEmulator::start().await;
    let server = PushServer::start(Endpoint::default()).await;
    emulator.create_topic("rows").await;
    let subscription = emulator.create_push_subscription("rows-push", "rows", &server.url("/pubsub/rows")).await;
    let queue = emulator.queue("rows").await;

    let rows = batch(10);
    let started = Instant::now();
    queue.publish(&rows).await.expect("the emulator accepts the batch");
    let endpoint = server.endpoint.clone();
    let wanted: BTreeSet<u32> = rows.iter().map(|r| r.row).collect();
    wait_until(
        Duration::from_secs(30),
        || endpoint.rows().iter().map(|(r, _)| r.row).collect::<BTreeSet<_>>() == wanted,
        || format!("pushed so far: {:?}; refused bodies: {:?}", endpoint.rows(), endpoint.refused()),
    )
    .await;
    eprintln!("10 rows pushed and acked {} ms after publish", started.elapsed().as_millis());

    assert!(endpoint.refused().is_empty(), "every push body is a row envelope: {:?}", endpoint.refused());
    for (row, envelope) in endpoint.rows() {
        assert!(rows.contains(&row), "a row of the batch: {row:?}");
        assert_eq!(envelope.subscription, subscription);
        assert_eq!(envelope.message.attributes, row.attributes());
        assert!(!envelope.message.id().is_empty());
        assert!(!envelope.message.publish_time.is_empty());
    }
    // Acked pushes are not delivered again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(endpoint.rows().len(), rows.len(), "each row pushed once: {:?}", endpoint.rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_refused_every_time_is_dead_lettered_and_the_others_are_acked() {
    const FAILING: u32 = 2;
    const MAX_ATTEMPTS: u32 = 5;
    let emulator = PubSubEmulator::start().await;
    let server = PushServer::start(Endpoint { refuse_row: Some(FAILING), ..Endpoint::default() }).await;
    emulator.create_topic("rows").await;
    emulator.create_topic("rows-dead-letter").await;
    emulator
        .create_push_subscription("rows-dead-letter-push", "rows-dead-letter", &server.url("/pubsub/dead-letter"))
        .await;
    let subscription = emulator
        .create_subscription(
            "rows-push",
            &SubscriptionSpec::push("rows", &server.url("/pubsub/rows"))
                .with_ack_deadline(10)
                .with_retry_backoff(Duration::from_secs(1), Duration::from_secs(2))
                .with_dead_letter("rows-dead-letter", MAX_ATTEMPTS),
        )
        .await;
    let queue = emulator.queue("rows").await;

    let rows = batch(5);
    let started = Instant::now();
    queue.publish(&rows).await.expect("the emulator accepts the batch");
    let endpoint = server.endpoint.clone();
    wait_until(
        Duration::from_secs(90),
        || !endpoint.dead().is_empty(),
        || {
            let attempts = endpoint.rows().iter().filter(|(r, _)| r.row == FAILING).count();
            format!(
                "row {FAILING} was never dead-lettered: the emulator pushed it {attempts} times; deliveries: {:?}",
                endpoint.rows().iter().map(|(r, _)| r.row).collect::<Vec<_>>()
            )
        },
    )
    .await;
    let took = started.elapsed();
    eprintln!("row {FAILING} dead-lettered {:.1} s after publish", took.as_secs_f64());
    // Anything else that would be dead-lettered wrongly has had time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dead = endpoint.dead();
    assert_eq!(dead.len(), 1, "exactly one dead letter: {dead:?}");
    let (row, envelope) = &dead[0];
    assert_eq!(row, &rows[FAILING as usize], "the refused row is the one dead-lettered");
    assert_eq!(
        envelope.message.attributes.get(DEAD_LETTER_DELIVERY_COUNT).map(String::as_str),
        Some("5"),
        "the dead letter carries {DEAD_LETTER_DELIVERY_COUNT}: {envelope:?}"
    );
    assert_eq!(envelope.delivery_attempt(), Some(MAX_ATTEMPTS), "generate reads the count through delivery_attempt()");
    let source = envelope.message.attributes.get(DEAD_LETTER_SUBSCRIPTION).expect("the source subscription");
    assert!(subscription.ends_with(source.as_str()), "{source} names {subscription}");
    assert_eq!(envelope.message.attributes.get("row").map(String::as_str), Some("2"), "the row's own attributes");

    let deliveries = endpoint.rows();
    let refused = deliveries.iter().filter(|(r, _)| r.row == FAILING).count();
    assert_eq!(
        refused, MAX_ATTEMPTS as usize,
        "the refused row is pushed {MAX_ATTEMPTS} times before it is dead-lettered"
    );
    for other in rows.iter().filter(|r| r.row != FAILING) {
        let pushes = deliveries.iter().filter(|(r, _)| r == other).count();
        assert_eq!(pushes, 1, "row {} is acked at its first push", other.row);
    }
    assert!(endpoint.refused().is_empty(), "{:?}", endpoint.refused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_stopped_emulator_fails_fast_as_unavailable() {
    let mut emulator = PubSubEmulator::start().await;
    emulator.create_topic("rows").await;
    let queue = emulator.queue("rows").await;
    queue.publish(&batch(2)).await.expect("the emulator is up");
    queue.ready().await.expect("/readyz: the topic is there");
    let missing = emulator.queue("no-such-topic").await.ready().await;
    assert!(
        matches!(&missing, Err(QueueError::Unavailable(m)) if m.contains("no-such-topic")),
        "a missing topic is not ready: {missing:?}"
    );
    let policy = queue.policy();
    assert_eq!(policy, PubSubPolicy::default());
    assert!(policy.total_timeout <= Duration::from_secs(10), "a short policy, not the crate's 600 s");

    emulator.stop();
    assert!(!emulator.is_running());
    let started = Instant::now();
    let outcome = queue.publish(&batch(3)).await;
    let took = started.elapsed();
    eprintln!("publish to the stopped emulator failed after {} ms: {outcome:?}", took.as_millis());
    let Err(QueueError::Unavailable(message)) = outcome else { panic!("expected Unavailable, got {outcome:?}") };
    assert!(message.contains("projects/assetgen-test/topics/rows"), "the message names the topic: {message}");
    assert!(took < policy.total_timeout + Duration::from_secs(5), "bounded by the policy: {took:?}");
    let started = Instant::now();
    let ready = queue.ready().await;
    assert!(matches!(&ready, Err(QueueError::Unavailable(m)) if m.contains("topics/rows")), "{ready:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "readiness is bounded too: {:?}", started.elapsed());

    // A fresh client on a port where nothing ever listened fails the same way.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let fresh = PubSubQueue::connect("assetgen-test", "rows", Some(&nowhere)).await.expect("nothing is sent yet");
    let started = Instant::now();
    let outcome = fresh.publish(&batch(1)).await;
    eprintln!("publish to a closed port failed after {} ms: {outcome:?}", started.elapsed().as_millis());
    assert!(matches!(outcome, Err(QueueError::Unavailable(_))), "{outcome:?}");
    assert!(started.elapsed() < policy.total_timeout + Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers_is_given_up_on_within_the_policy() {
    // Accepts connections and never says a word: every attempt can only end by a time-out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("address").to_string();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let policy = PubSubPolicy { total_timeout: Duration::from_secs(3), ..PubSubPolicy::default() };
    let queue = PubSubQueue::connect_with("assetgen-test", "rows", Some(&host), policy).await.expect("a client");
    let started = Instant::now();
    let outcome = queue.publish(&batch(2)).await;
    let took = started.elapsed();
    eprintln!("publish to a silent endpoint failed after {} ms: {outcome:?}", took.as_millis());
    silent.abort();
    assert!(matches!(outcome, Err(QueueError::Unavailable(_))), "{outcome:?}");
    assert!(took < Duration::from_secs(3) + Duration::from_secs(5), "bounded by the 3 s policy: {took:?}");
}
