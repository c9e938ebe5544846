//! The relay's tail slows down while nothing changes and speeds up when rows move (issue 13: a page
//! left open on a waiting batch for up to a day). Tokio's paused clock runs an hour in a moment, and
//! a counting store says how many listings watching cost.

use assetgen_common::auth::Access;
use assetgen_common::refs::fetch::FetchPolicy;
use assetgen_common::store::{CountingStore, ObjectStore};
use assetgen_common::testkit;
use assetgen_relay::{RelayConfig, RelayState, router};
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;

const OWNER: &str = "artist@studio.test";

/// A batch of `rows` queued rows that nothing processes, and the relay over a counting store.
async fn quiet_batch(
    rows: usize,
    config: RelayConfig,
) -> (Arc<dyn ObjectStore>, Arc<CountingStore>, axum::Router, String) {
    let kit = testkit::Rig::new(|_| {});
    let batch_id = kit.submit_rows((0..rows).map(|i| testkit::row(&format!("S{i}"), 1)).collect()).await;
    let counting = Arc::new(CountingStore::new(kit.store.clone()));
    let state = RelayState {
        store: counting.clone(),
        access: Access::dev(),
        public_url: None,
        config,
        ref_fetch: FetchPolicy::default(),
    };
    (kit.store.clone(), counting, router(Arc::new(state)).split_for_parts().0, batch_id.to_string())
}

fn lists(counting: &CountingStore) -> u64 {
    counting.calls().snapshot().2
}

fn request(batch_id: &str, last_event_id: Option<&str>) -> Request<Body> {
    let mut request = Request::builder().uri(format!("/v1/batches/{batch_id}/events")).header("x-assetgen-user", OWNER);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.body(Body::empty()).expect("request")
}

/// The SSE blocks of `text` as (event, id, data).
fn blocks(text: &str) -> Vec<(String, String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
            Some((field("event: ")?, field("id: ").unwrap_or_default(), field("data: ").unwrap_or_default()))
        })
        .collect()
}

/// One page watching the batch for `span`, as a browser does: each stream runs until the relay
/// closes it for its lifetime, and the client comes back after the `retry:` hint with its last id.
async fn watch_for(router: &axum::Router, batch_id: &str, span: Duration) -> usize {
    let start = Instant::now();
    let mut last_id: Option<String> = None;
    let mut streams = 0;
    while start.elapsed() < span {
        let response = router.clone().oneshot(request(batch_id, last_id.as_deref())).await.expect("infallible");
        let mut body = response.into_body();
        let mut text = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
            }
        }
        streams += 1;
        if let Some((_, id, _)) = blocks(&text).into_iter().rfind(|(_, id, _)| !id.is_empty()) {
            last_id = Some(id);
        }
        let retry: u64 =
            text.lines().find_map(|l| l.strip_prefix("retry: ")).and_then(|r| r.parse().ok()).unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(retry)).await;
    }
    streams
}

#[tokio::test(start_paused = true)]
async fn an_idle_hour_of_watching_lists_the_store_a_bounded_number_of_times() {
    let hour = Duration::from_secs(3600);
    let (_, counting, router, batch_id) = quiet_batch(3, RelayConfig::default()).await;
    let streams = watch_for(&router, &batch_id, hour).await;
    let adaptive = lists(&counting);
    println!("an idle hour, {streams} streams (reconnects every 280 s): {adaptive} listings at the adaptive pace");
    assert!(streams >= 12, "the page reconnected through the hour ({streams} streams)");
    assert!(adaptive <= 420, "{adaptive} listings in an idle hour");

    // The same hour at the old fixed pace (4 listings a second): what the bound is measured against.
    let fixed = RelayConfig { poll_slowest: RelayConfig::default().poll_every, ..RelayConfig::default() };
    let (_, counting, router, batch_id) = quiet_batch(3, fixed).await;
    watch_for(&router, &batch_id, hour).await;
    let old = lists(&counting);
    println!("the same hour at a fixed 250 ms: {old} listings");
    assert!(old >= 14_000, "{old}");
}

/// Marks `row` failed (a terminal state needs no images).
async fn end_row(store: &dyn ObjectStore, batch_id: &str, row: u32) {
    use assetgen_common::store::{Precondition, read_json, write_json};
    let id = assetgen_common::domain::BatchId::parse(batch_id).expect("batch id");
    let name = assetgen_common::layout::row_state(&id, row);
    let mut state: assetgen_common::state::RowState = read_json(store, &name).await.expect("state").value;
    state.status = assetgen_common::api::RowStatus::Failed;
    state.error = Some(assetgen_common::state::RowError {
        code: assetgen_common::problem::ErrorCode::ModelUnavailable,
        detail: format!("row {row} gave up"),
    });
    write_json(store, &name, &state, Precondition::None).await.expect("write");
}

/// Reads a stream in the background, stamping each event with the (paused) clock.
fn stamped_reader(router: &axum::Router, batch_id: &str) -> Arc<Mutex<Vec<(String, String, Instant)>>> {
    let seen: Arc<Mutex<Vec<(String, String, Instant)>>> = Arc::default();
    let (router, batch_id, out) = (router.clone(), batch_id.to_owned(), seen.clone());
    tokio::spawn(async move {
        let response = router.oneshot(request(&batch_id, None)).await.expect("infallible");
        let mut body = response.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            let at = Instant::now();
            if let Some(data) = frame.data_ref() {
                for (event, _, data) in blocks(&String::from_utf8_lossy(data)) {
                    out.lock().expect("lock").push((event, data, at));
                }
            }
        }
    });
    seen
}

/// When the first `row` event naming `scene` as failed arrived.
async fn arrival(seen: &Mutex<Vec<(String, String, Instant)>>, scene: &str) -> Instant {
    let needle = format!("\"scene_id\":\"{scene}\",\"status\":\"failed\"");
    loop {
        let found = seen.lock().expect("lock").iter().find(|(e, d, _)| e == "row" && d.contains(&needle)).map(|s| s.2);
        if let Some(at) = found {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_quiet_spell_the_first_change_comes_within_the_slowest_interval_and_the_rest_fast() {
    let config = RelayConfig { max_stream: Duration::from_secs(7200), ..RelayConfig::default() };
    let (slowest, fast) = (config.poll_slowest, config.poll_every);
    let (store, counting, router, batch_id) = quiet_batch(3, config).await;
    let seen = stamped_reader(&router, &batch_id);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let quiet = lists(&counting);
    assert!(quiet <= 300, "ten quiet minutes: {quiet} listings (2,400 at a fixed 250 ms)");

    let written = Instant::now();
    end_row(store.as_ref(), &batch_id, 0).await;
    let first = arrival(&seen, "S0").await - written;
    assert!(first <= slowest, "the first change after the quiet came {first:?} after its write");

    // Rows move now: the next changes, a second apart, come at the fast pace.
    for (row, scene) in [(1, "S1"), (2, "S2")] {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let written = Instant::now();
        end_row(store.as_ref(), &batch_id, row).await;
        let latency = arrival(&seen, scene).await - written;
        assert!(latency <= fast, "{scene} came {latency:?} after its write");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(seen.lock().expect("lock").iter().any(|(e, _, _)| e == "done"), "every row ended: done");
}

#[tokio::test(start_paused = true)]
async fn a_page_opened_on_a_slowed_down_tail_starts_from_fresh_state() {
    let config = RelayConfig { max_stream: Duration::from_secs(7200), ..RelayConfig::default() };
    let fast = config.poll_every;
    let (store, _counting, router, batch_id) = quiet_batch(2, config).await;
    let first_page = stamped_reader(&router, &batch_id);
    tokio::time::sleep(Duration::from_secs(600)).await;

    // A row changes while the shared tail waits out a slow interval; a new page opens right after.
    let written = Instant::now();
    end_row(store.as_ref(), &batch_id, 0).await;
    let second_page = stamped_reader(&router, &batch_id);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let snapshot = second_page.lock().expect("lock").iter().find(|(e, _, _)| e == "snapshot").cloned();
    let (_, data, _) = snapshot.expect("the new page's snapshot");
    assert!(data.contains("\"scene_id\":\"S0\",\"status\":\"failed\""), "the snapshot shows the change: {data}");
    // The look made for the new page went to the page already open too, and the pace is fast again.
    assert!(arrival(&first_page, "S0").await - written <= fast);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let written = Instant::now();
    end_row(store.as_ref(), &batch_id, 1).await;
    assert!(arrival(&first_page, "S1").await - written <= fast);
}
