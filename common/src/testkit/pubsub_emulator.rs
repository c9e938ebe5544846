//! Google's Pub/Sub emulator for tests, on a free loopback port, and helpers that set up topics and
//! subscriptions through its REST API (the v1 API, served on the same port as gRPC).
//!
//! The emulator is started directly — `cloud-pubsub-emulator --host=127.0.0.1 --port=N`, the
//! script that `exec`s java — not through `gcloud beta emulators pubsub start`, whose java child
//! outlives it. It runs in a process group of its own, and the whole group is killed (SIGKILL) on
//! [`PubSubEmulator::stop`] or drop, so no JVM is left behind by a finished or panicking test.

use crate::queue::{PubSubPolicy, PubSubQueue, PushEnvelope, PushMessage, QueueError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{Read, Seek};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the Cloud SDK package puts the emulator.
const PUBSUB_EMULATOR_BINARY: &str = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";

/// The emulator's start script: `$PUBSUB_EMULATOR_BINARY` if set, else [`PUBSUB_EMULATOR_BINARY`].
/// Panics (the test fails, it is not skipped) when it is not there.
pub fn pubsub_emulator_binary() -> PathBuf {
    let path = std::env::var_os("PUBSUB_EMULATOR_BINARY")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(PUBSUB_EMULATOR_BINARY), PathBuf::from);
    assert!(
        path.is_file(),
        "the Pub/Sub emulator is not installed: {} does not exist. Install the Cloud SDK component \
         (`apt-get install google-cloud-cli-pubsub-emulator`, or `gcloud components install pubsub-emulator`), \
         or set PUBSUB_EMULATOR_BINARY to its `cloud-pubsub-emulator` script",
        path.display()
    );
    path
}

/// A running emulator, killed (its whole process group) when dropped.
pub struct PubSubEmulator {
    child: Option<Child>,
    log: std::fs::File,
    /// `127.0.0.1:PORT`: the value for `PUBSUB_EMULATOR_HOST`.
    pub host: String,
    /// `http://127.0.0.1:PORT`, for REST calls.
    pub endpoint: String,
    pub addr: SocketAddr,
    /// The project every helper works in.
    pub project: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for PubSubEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubEmulator").field("host", &self.host).field("running", &self.child.is_some()).finish()
    }
}

impl Drop for PubSubEmulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One subscription to create: pull unless it has a push endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// Topic id (in the emulator's project) or full `projects/P/topics/T` name.
    pub topic: String,
    pub push_endpoint: Option<String>,
    pub ack_deadline_seconds: Option<u32>,
    /// `retryPolicy`: minimum and maximum backoff between redeliveries.
    pub retry_backoff: Option<(Duration, Duration)>,
    /// `deadLetterPolicy`: the dead-letter topic (id or full name) and `maxDeliveryAttempts` (5–100).
    pub dead_letter: Option<(String, u32)>,
}

impl SubscriptionSpec {
    pub fn pull(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            push_endpoint: None,
            ack_deadline_seconds: None,
            retry_backoff: None,
            dead_letter: None,
        }
    }

    pub fn push(topic: &str, endpoint: &str) -> Self {
        Self { push_endpoint: Some(endpoint.to_owned()), ..Self::pull(topic) }
    }

    pub fn with_ack_deadline(mut self, seconds: u32) -> Self {
        self.ack_deadline_seconds = Some(seconds);
        self
    }

    pub fn with_retry_backoff(mut self, minimum: Duration, maximum: Duration) -> Self {
        self.retry_backoff = Some((minimum, maximum));
        self
    }

    pub fn with_dead_letter(mut self, topic: &str, max_delivery_attempts: u32) -> Self {
        self.dead_letter = Some((topic.to_owned(), max_delivery_attempts));
        self
    }
}

/// A message taken by a pull.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PulledMessage {
    pub ack_id: String,
    pub message: PushMessage,
    #[serde(default)]
    pub delivery_attempt: Option<u32>,
}

impl PulledMessage {
    /// The message as a push subscription would have sent it.
    pub fn envelope(&self, subscription: &str) -> PushEnvelope {
        PushEnvelope {
            message: self.message.clone(),
            subscription: subscription.to_owned(),
            delivery_attempt: self.delivery_attempt,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<PulledMessage>,
}

impl PubSubEmulator {
    /// Starts the emulator on a free loopback port (project `assetgen-test`) and waits until it
    /// answers. Panics with the emulator's output when it does not start.
    pub async fn start() -> Self {
        let binary = pubsub_emulator_binary();
        let mut last_error = String::new();
        // A port found free can be taken before the emulator binds it: then try another.
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::tempfile().expect("a temporary file for the emulator's output");
            let child = Command::new(&binary)
                .arg("--host=127.0.0.1")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log file"))
                .stderr(log.try_clone().expect("clone the log file"))
                // Its own process group (pgid = its pid), so that `stop` reaches every process.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start the Pub/Sub emulator {}: {e}", binary.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client for the emulator's REST API");
            let mut emulator = Self {
                child: Some(child),
                log,
                host: addr.to_string(),
                endpoint: format!("http://{addr}"),
                addr,
                project: "assetgen-test".to_owned(),
                http,
            };
            match emulator.wait_ready().await {
                Ok(()) => return emulator,
                Err(e) => last_error = format!("{e}; its output:\n{}", emulator.output()),
            }
            emulator.stop();
        }
        panic!("the Pub/Sub emulator did not start: {last_error}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe = format!("{}/v1/projects/{}/topics", self.endpoint, self.project);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("it exited with {status}"));
            }
            let answer = self.http.get(&probe).timeout(Duration::from_secs(1)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("no answer on its port within 60 s".into())
    }

    /// What the emulator printed so far.
    pub fn output(&self) -> String {
        let mut text = String::new();
        let mut log = &self.log;
        if log.rewind().is_ok() {
            let _ = log.read_to_string(&mut text);
        }
        text
    }

    /// Kills the emulator's whole process group and reaps it. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // The group's id is the leader's pid (`process_group(0)`); `kill -- -PGID` signals all of it.
        let group = format!("-{}", child.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !killed {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Whether the emulator is running (not yet stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A [`PubSubQueue`] publishing to `topic` on this emulator.
    pub async fn queue(&self, topic: &str) -> PubSubQueue {
        self.try_queue(topic, PubSubPolicy::default()).await.expect("a Pub/Sub client for the emulator")
    }

    pub async fn try_queue(&self, topic: &str, policy: PubSubPolicy) -> Result<PubSubQueue, QueueError> {
        PubSubQueue::connect_with(&self.project, topic, Some(&self.host), policy).await
    }

    /// `projects/{project}/topics/{id}` (a full name is returned as it is).
    pub fn topic_name(&self, id: &str) -> String {
        if id.starts_with("projects/") { id.to_owned() } else { format!("projects/{}/topics/{id}", self.project) }
    }

    /// `projects/{project}/subscriptions/{id}` (a full name is returned as it is).
    pub fn subscription_name(&self, id: &str) -> String {
        if id.starts_with("projects/") {
            id.to_owned()
        } else {
            format!("projects/{}/subscriptions/{id}", self.project)
        }
    }

    /// Creates topic `id` (3 to 255 characters) and returns its full name.
    pub async fn create_topic(&self, id: &str) -> String {
        check_id(id);
        let name = self.topic_name(id);
        self.call(reqwest::Method::PUT, &format!("v1/{name}"), &json!({})).await;
        name
    }

    /// Creates a pull subscription `id` on `topic` and returns its full name.
    pub async fn create_pull_subscription(&self, id: &str, topic: &str) -> String {
        self.create_subscription(id, &SubscriptionSpec::pull(topic)).await
    }

    /// Creates a push subscription `id` on `topic` that POSTs envelopes to `endpoint`.
    pub async fn create_push_subscription(&self, id: &str, topic: &str, endpoint: &str) -> String {
        self.create_subscription(id, &SubscriptionSpec::push(topic, endpoint)).await
    }

    /// Creates subscription `id` as `spec` says and returns its full name.
    pub async fn create_subscription(&self, id: &str, spec: &SubscriptionSpec) -> String {
        check_id(id);
        let name = self.subscription_name(id);
        let mut body = json!({ "topic": self.topic_name(&spec.topic) });
        if let Some(endpoint) = &spec.push_endpoint {
            body["pushConfig"] = json!({ "pushEndpoint": endpoint });
        }
        if let Some(seconds) = spec.ack_deadline_seconds {
            body["ackDeadlineSeconds"] = json!(seconds);
        }
        if let Some((minimum, maximum)) = spec.retry_backoff {
            body["retryPolicy"] = json!({ "minimumBackoff": duration(minimum), "maximumBackoff": duration(maximum) });
        }
        if let Some((topic, attempts)) = &spec.dead_letter {
            assert!((5..=100).contains(attempts), "maxDeliveryAttempts must be 5 to 100, not {attempts}");
            body["deadLetterPolicy"] =
                json!({ "deadLetterTopic": self.topic_name(topic), "maxDeliveryAttempts": attempts });
        }
        self.call(reqwest::Method::PUT, &format!("v1/{name}"), &body).await;
        name
    }

    /// Pulls up to `max` messages from `subscription` without waiting for more.
    pub async fn pull(&self, subscription: &str, max: u32) -> Vec<PulledMessage> {
        let name = self.subscription_name(subscription);
        let body = json!({ "maxMessages": max, "returnImmediately": true });
        let answer = self.call(reqwest::Method::POST, &format!("v1/{name}:pull"), &body).await;
        serde_json::from_value::<PullResponse>(answer).expect("a pull response").received_messages
    }

    /// Pulls (and acknowledges) until `count` messages came or `timeout` passed; returns them all.
    pub async fn pull_at_least(&self, subscription: &str, count: usize, timeout: Duration) -> Vec<PulledMessage> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        while all.len() < count && Instant::now() < deadline {
            let batch = self.pull(subscription, 100).await;
            if batch.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            self.acknowledge(subscription, batch.iter().map(|m| m.ack_id.clone()).collect()).await;
            all.extend(batch);
        }
        all
    }

    pub async fn acknowledge(&self, subscription: &str, ack_ids: Vec<String>) {
        let name = self.subscription_name(subscription);
        self.call(reqwest::Method::POST, &format!("v1/{name}:acknowledge"), &json!({ "ackIds": ack_ids })).await;
    }

    /// One REST call; panics with the emulator's answer unless it is a success.
    async fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        let url = format!("{}/{path}", self.endpoint);
        let response = self
            .http
            .request(method.clone(), &url)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {url} with {body}: HTTP {status}: {text}");
        if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }
}

/// Pub/Sub ids: 3 to 255 characters, starting with a letter.
fn check_id(id: &str) {
    let tail = id.rsplit('/').next().unwrap_or(id);
    assert!(
        (3..=255).contains(&tail.len()) && tail.starts_with(|c: char| c.is_ascii_alphabetic()),
        "Pub/Sub ids are 3 to 255 characters and start with a letter: {id:?}"
    );
}

/// A protobuf `Duration` in JSON: seconds with an `s`.
fn duration(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
