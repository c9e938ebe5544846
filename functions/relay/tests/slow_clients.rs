//! Event-stream clients that connect and never read, against the relay served as the shim serves
//! it (a [`WatchedListener`]): what the process holds for each stays bounded however many events
//! the batch makes, each is cut off once its writes have been blocked for the stall limit, a
//! client that reads gets every row to `done`, and the process goes on serving.
//!
//! Measured by the relay's own gauges, not by the clock: `assetgen_relay_unsent_bytes` (bytes
//! produced for clients and not taken by their sockets), `assetgen_relay_queued_events`, and the
//! stalled-write counter.
//!
//! `cargo test -p assetgen-relay --test slow_clients -- --nocapture` prints the figures and the
//! process's resident memory.

use assetgen_common::api::{BatchRequest, RowRequest};
use assetgen_common::auth::Access;
use assetgen_common::observe::{self, LiteSnapshot, names};
use assetgen_common::refs::fetch::FetchPolicy;
use assetgen_common::shim::{Connection, WatchedListener};
use assetgen_common::store::ObjectStore;
use assetgen_common::testkit;
use assetgen_relay::{RelayConfig, RelayState, router};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const OWNER: &str = "artist@studio.test";
const ROWS: usize = 100;
const SILENT_CLIENTS: usize = 40;
/// Short, so that the test ends soon; the shim's is [`assetgen_common::shim::WRITE_STALL_LIMIT`].
const STALL_LIMIT: Duration = Duration::from_millis(1500);
/// hyper's write buffer per HTTP/1 connection: it asks the body for no more once this is full
/// (`max_buf_size`'s default, 8 KiB + 100 × 4 KiB).
const HYPER_WRITE_BUFFER: f64 = 417_792.0;

fn gauge(snapshot: &LiteSnapshot, name: &str) -> f64 {
    snapshot.gauges.get(name).copied().unwrap_or_default()
}

fn counter(snapshot: &LiteSnapshot, name: &str) -> u64 {
    snapshot.totals.get(name).copied().unwrap_or_default()
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

/// Waits (polling the metrics) until `done` says so, for at most `limit`.
async fn until(limit: Duration, mut done: impl FnMut(&LiteSnapshot) -> bool) -> LiteSnapshot {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let snapshot = observe::install().lite();
        if done(&snapshot) || tokio::time::Instant::now() >= deadline {
            return snapshot;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens the event stream with a tiny receive buffer and never reads from it.
async fn silent_client(address: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let mut stream = socket.connect(address).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: relay.test\r\nx-assetgen-user: {OWNER}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    stream
}

/// Reads the whole stream; returns the events as (name, data) in order.
async fn read_all(url: String) -> Vec<(String, serde_json::Value)> {
    let client = reqwest::Client::new();
    let mut response = client.get(url).header("x-assetgen-user", OWNER).send().await.expect("connect");
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.expect("read") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
            Some((field("event: ")?, serde_json::from_str(&field("data: ")?).ok()?))
        })
        .collect()
}

async fn objects(store: &dyn ObjectStore) -> BTreeMap<String, i64> {
    store.list("").await.expect("list").into_iter().map(|m| (m.name, m.generation)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_hold_bounded_memory_and_are_cut_off() {
    let metrics = observe::install();
    let kit = testkit::Rig::new(|p| p.limits.max_rows = ROWS);
    let rows: Vec<RowRequest> = (0..ROWS).map(|i| testkit::row(&format!("S{i}"), 2)).collect();
    let accepted = kit.submit(OWNER, BatchRequest { rows, ..Default::default() }).await;
    let batch_id = accepted.batch_id;
    let messages = kit.queue.published();

    let state = RelayState {
        store: kit.store.clone(),
        access: Access::dev(),
        public_url: None,
        config: RelayConfig { poll_every: Duration::from_millis(20), ..RelayConfig::default() },
        ref_fetch: FetchPolicy::default(),
    };
    let app = router(Arc::new(state)).split_for_parts().0;
    // Small kernel buffers (accepted sockets inherit the listener's): they fill after a few
    // events instead of a few megabytes, as any buffer fills once a client has stopped reading
    // for long enough. What this process holds is what the test measures.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(16 * 1024).expect("send buffer");
    socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let listener = socket.listen(1024).expect("listen");
    let address = listener.local_addr().expect("address");
    let listener = WatchedListener::new(listener, STALL_LIMIT);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<Connection>()).await.expect("serve");
    });
    let path = format!("/v1/batches/{batch_id}/events");
    let rss_before = resident_kib();

    let mut silent = Vec::new();
    for _ in 0..SILENT_CLIENTS {
        silent.push(silent_client(address, &path).await);
    }
    let reader = tokio::spawn(read_all(format!("http://{address}{path}")));
    let all_connected =
        until(Duration::from_secs(30), |m| gauge(m, names::RELAY_CLIENTS) >= (SILENT_CLIENTS + 1) as f64).await;
    assert_eq!(gauge(&all_connected, names::RELAY_CLIENTS), (SILENT_CLIENTS + 1) as f64);

    // The batch runs: every row goes running, gains two images, succeeds: hundreds of events,
    // far more for each client than the kernel buffers hold.
    let worker = kit.pipeline.worker.clone();
    let work = tokio::spawn(async move {
        for m in &messages {
            worker.process(m).await.expect("process");
        }
    });
    let (mut unsent_per_client, mut queued_per_client, mut rss_peak) = (0f64, 0f64, 0u64);
    while !work.is_finished() || !reader.is_finished() {
        let m = metrics.lite();
        let clients = gauge(&m, names::RELAY_CLIENTS).max(1.0);
        unsent_per_client = unsent_per_client.max(gauge(&m, names::RELAY_UNSENT_BYTES) / clients);
        queued_per_client = queued_per_client.max(gauge(&m, names::RELAY_QUEUED_EVENTS) / clients);
        rss_peak = rss_peak.max(resident_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    work.await.expect("the batch ran");
    let events = reader.await.expect("the reader");
    let stored = objects(kit.store.as_ref()).await;

    // The reader got the snapshot, every row to its end, and done.
    assert_eq!(events.first().map(|e| e.0.as_str()), Some("snapshot"));
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("done"));
    let largest_event = events.iter().map(|e| e.1.to_string().len()).max().unwrap_or_default() as f64;
    let mut last_status = BTreeMap::new();
    for (name, data) in &events {
        if name == "snapshot" {
            for row in data["rows"].as_array().expect("rows") {
                last_status.insert(row["row"].as_u64().expect("row"), row["status"].as_str().unwrap_or("").to_owned());
            }
        } else if name == "row" {
            last_status.insert(data["row"].as_u64().expect("row"), data["status"].as_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(last_status.len(), ROWS);
    assert!(last_status.values().all(|s| s == "succeeded"), "{last_status:?}");
    let row_events = events.iter().filter(|e| e.0 == "row").count();
    assert!(row_events >= ROWS, "{row_events} row events");
    let done = &events.last().expect("done").1;
    assert_eq!(done["totals"]["succeeded"], ROWS);

    // Every silent client is cut off; nothing is held for them any more.
    let settled = until(Duration::from_secs(60), |m| {
        counter(m, names::WRITES_STALLED) >= SILENT_CLIENTS as u64 && gauge(m, names::RELAY_CLIENTS) == 0.0
    })
    .await;
    let stalled = counter(&settled, names::WRITES_STALLED);
    println!(
        "{SILENT_CLIENTS} silent clients + 1 reader, {ROWS} rows, {} events ({row_events} row events, largest {largest_event} B): \
         at most {unsent_per_client:.0} unsent bytes and {queued_per_client:.1} queued events per client (sums over clients ÷ clients); \
         {stalled} connections cut for stalled writes; RSS {rss_before} KiB before, {rss_peak} KiB at peak, {} KiB after",
        events.len(),
        resident_kib()
    );
    assert_eq!(
        stalled, SILENT_CLIENTS as u64,
        "each silent client was cut off once: {:?} {:?}",
        settled.gauges, settled.totals
    );
    assert_eq!(gauge(&settled, names::RELAY_CLIENTS), 0.0);
    assert_eq!(gauge(&settled, names::RELAY_UNSENT_BYTES), 0.0);
    assert_eq!(gauge(&settled, names::RELAY_QUEUED_EVENTS), 0.0);
    // Bounded per client (the sums over clients, divided by the clients connected) by hyper's write
    // buffer and one event, however many events there were.
    assert!(unsent_per_client > 0.0, "the silent clients' bytes were measured");
    assert!(unsent_per_client <= HYPER_WRITE_BUFFER + largest_event, "{unsent_per_client} bytes unsent per client");
    assert!(queued_per_client <= (ROWS + 2) as f64, "{queued_per_client} events queued per client");

    // The process goes on: a new client gets the whole batch and done; the store is as it was.
    let again = read_all(format!("http://{address}{path}")).await;
    assert_eq!(again.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), vec!["snapshot", "done"]);
    assert_eq!(objects(kit.store.as_ref()).await, stored, "no object changed");
    drop(silent);
}
