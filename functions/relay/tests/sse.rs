//! The relay's event stream, read frame by frame from the router.

use assetgen_common::auth::Access;
use assetgen_common::generation::RowWorker;
use assetgen_common::queue::RowMessage;
use assetgen_common::refs::fetch::FetchPolicy;
use assetgen_common::store::ObjectStore;
use assetgen_common::testkit::{self, HookedStore};
use assetgen_relay::{RelayConfig, RelayState, router};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct Rig {
    store: Arc<dyn ObjectStore>,
    batch_id: String,
    messages: Vec<RowMessage>,
    worker: RowWorker,
}

async fn rig(rows: usize) -> Rig {
    let kit = testkit::Rig::new(|_| {});
    let batch_id = kit.submit_rows((0..rows).map(|i| testkit::row(&format!("S{i}"), 1)).collect()).await;
    Rig {
        store: kit.store.clone(),
        batch_id: batch_id.to_string(),
        messages: kit.queue.published(),
        worker: kit.pipeline.worker.clone(),
    }
}

fn app(store: Arc<dyn ObjectStore>, config: RelayConfig) -> axum::Router {
    app_with(store, config, Access::dev())
}

fn app_with(store: Arc<dyn ObjectStore>, config: RelayConfig, access: Access) -> axum::Router {
    let state = RelayState { store, access, public_url: None, config, ref_fetch: FetchPolicy::default() };
    router(Arc::new(state)).split_for_parts().0
}

/// The user the test kit submits as: the batches' owner.
const OWNER: &str = "artist@studio.test";

fn fast() -> RelayConfig {
    RelayConfig { poll_every: Duration::from_millis(20), ..RelayConfig::default() }
}

/// Reads frames until the stream ends or `limit` passes; returns the text.
async fn read(
    app: axum::Router,
    uri: &str,
    last_event_id: Option<&str>,
    limit: Duration,
) -> (StatusCode, Option<String>, String) {
    read_as(app, uri, last_event_id, limit, Some(OWNER)).await
}

/// [`read`] as `user` (dev auth's `X-Assetgen-User`), or with no identity header.
async fn read_as(
    app: axum::Router,
    uri: &str,
    last_event_id: Option<&str>,
    limit: Duration,
    user: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder().uri(uri);
    if let Some(user) = user {
        request = request.header("x-assetgen-user", user);
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = app.oneshot(request.body(Body::empty()).expect("request")).await.expect("infallible");
    let status = response.status();
    let buffering = response.headers().get("x-accel-buffering").map(|v| v.to_str().unwrap_or_default().to_owned());
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    (status, buffering, text)
}

fn events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
            Some((field("event: ")?, field("id: ").unwrap_or_default()))
        })
        .collect()
}

#[tokio::test]
async fn a_client_sees_the_snapshot_every_row_and_done_then_the_stream_ends() {
    let r = rig(3).await;
    let uri = format!("/v1/batches/{}/events", r.batch_id);
    let router = app(r.store.clone(), fast());
    let reader = tokio::spawn(async move { read(router, &uri, None, Duration::from_secs(10)).await });
    for m in &r.messages {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.worker.process(m).await.expect("process");
    }
    let (status, buffering, text) = reader.await.expect("reader");
    assert_eq!((status, buffering.as_deref()), (StatusCode::OK, Some("no")));
    let got = events(&text);
    assert_eq!(got.first().map(|e| e.0.as_str()), Some("snapshot"), "{text}");
    assert_eq!(got.last().map(|e| e.0.as_str()), Some("done"), "the stream ends after done: {text}");
    let rows = got.iter().filter(|e| e.0 == "row").count();
    assert!(rows >= 3, "every row's change reaches the client ({rows} row events)");
    let ids: Vec<i64> = got.iter().map(|e| e.1.parse().expect("numeric id")).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "ids never go back: {ids:?}");
}

#[tokio::test]
async fn a_resume_skips_the_snapshot_and_sends_only_what_changed() {
    let r = rig(2).await;
    let uri = format!("/v1/batches/{}/events", r.batch_id);
    r.worker.process(&r.messages[0]).await.expect("process");
    let (_, _, first) = read(app(r.store.clone(), fast()), &uri, None, Duration::from_millis(300)).await;
    let last_id = events(&first).last().map(|e| e.1.clone()).expect("an id");
    r.worker.process(&r.messages[1]).await.expect("process");
    let (_, _, resumed) = read(app(r.store.clone(), fast()), &uri, Some(&last_id), Duration::from_secs(5)).await;
    let got = events(&resumed);
    assert!(got.iter().all(|e| e.0 != "snapshot"), "no snapshot on resume: {resumed}");
    assert_eq!(got.iter().filter(|e| e.0 == "row").count(), 1, "only row 1 changed since: {resumed}");
    assert!(resumed.contains("\"scene_id\":\"S1\""));
    assert_eq!(got.last().map(|e| e.0.as_str()), Some("done"));
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeats_then_closes_itself_with_a_retry_hint() {
    let r = rig(1).await;
    let config = RelayConfig {
        poll_every: Duration::from_millis(20),
        heartbeat: Duration::from_millis(100),
        max_stream: Duration::from_millis(450),
        retry_base: Duration::from_millis(1000),
        retry_jitter: Duration::from_millis(500),
        ..RelayConfig::default()
    };
    let (_, _, text) =
        read(app(r.store.clone(), config), &format!("/v1/batches/{}/events", r.batch_id), None, Duration::from_secs(5))
            .await;
    assert!(text.matches(": heartbeat").count() >= 2, "{text}");
    let retry: u64 = text.lines().find_map(|l| l.strip_prefix("retry: ")).expect("a retry hint").parse().expect("ms");
    assert!((1000..=1500).contains(&retry), "retry {retry} ms is the base plus jitter");
    assert!(!text.contains("event: done"), "the batch has not ended");
}

#[tokio::test]
async fn unknown_batches_are_a_problem_not_an_empty_stream() {
    let r = rig(1).await;
    let (status, _, text) = read(
        app(r.store.clone(), fast()),
        "/v1/batches/0190b5c6-0000-7000-8000-000000000000/events",
        None,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("BATCH_NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_share_one_tail_and_all_see_every_row() {
    let r = rig(5).await;
    let counting = Arc::new(assetgen_common::store::CountingStore::new(r.store.clone()));
    let router = app(counting.clone(), fast());
    let uri = format!("/v1/batches/{}/events", r.batch_id);
    let readers: Vec<_> = (0..50)
        .map(|_| {
            let (router, uri) = (router.clone(), uri.clone());
            tokio::spawn(async move { read(router, &uri, None, Duration::from_secs(10)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = counting.calls().snapshot().2;
    for m in &r.messages {
        r.worker.process(m).await.expect("process");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for reader in readers {
        let (_, _, text) = reader.await.expect("reader");
        let got = events(&text);
        assert_eq!(got.last().map(|e| e.0.as_str()), Some("done"), "{text}");
        for scene in ["S0", "S1", "S2", "S3", "S4"] {
            assert!(
                text.contains(&format!("\"scene_id\":\"{scene}\",\"status\":\"succeeded\"")),
                "{scene} missing: {text}"
            );
        }
    }
    // About 5 × 60 ms / 20 ms ≈ 15 polls for the whole run: one tail, not fifty.
    let lists = counting.calls().snapshot().2 - before;
    assert!(lists < 60, "the store was listed {lists} times for 50 clients");
}

#[tokio::test]
async fn a_browser_token_opens_only_its_own_batch() {
    use assetgen_common::auth::{AllowList, CapabilityTokens, LinkSigner, OidcAuth};
    use assetgen_common::config::Secret;
    let r = rig(1).await;
    let other = rig(1).await;
    let tokens =
        CapabilityTokens::new(&Secret::new("a-test-capability-secret-of-enough-length-0123456789")).expect("secret");
    // OIDC that nobody in this test can satisfy: only the capability token can let a browser in.
    let auth = Arc::new(OidcAuth::new(["https://relay.test"], "http://127.0.0.1:9/certs", Vec::<String>::new()));
    let access = Access { auth, tokens: tokens.clone(), links: LinkSigner::random(), admins: AllowList::default() };
    let router = app_with(r.store.clone(), fast(), access);
    let batch = assetgen_common::domain::BatchId::parse(&r.batch_id).expect("id");
    let user = assetgen_common::domain::UserId::new("artist@studio.test");
    let token = tokens.issue(&batch, &user, Duration::from_secs(60));
    let uri = format!("/v1/batches/{}/events", r.batch_id);

    let (status, _, text) =
        read(router.clone(), &format!("{uri}?access_token={token}"), None, Duration::from_millis(300)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("event: snapshot"));
    // The page's lightbox reads an image's provenance with the same page link.
    r.worker.process(&r.messages[0]).await.expect("process");
    let provenance = format!("/v1/provenance/{}/S0/1", r.batch_id);
    let (status, _, text) =
        read(router.clone(), &format!("{provenance}?access_token={token}"), None, Duration::from_millis(300)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _, _) = read(router.clone(), &provenance, None, Duration::from_millis(300)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no page link, no sign-in: refused");
    let (status, _, _) = read(router.clone(), &uri, None, Duration::from_millis(300)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token, no OIDC: refused");
    let (status, _, text) = read(
        router.clone(),
        &format!("/v1/batches/{}/events?access_token={token}", other.batch_id),
        None,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a genuine token for another batch is refused as if it did not exist");
    assert!(!text.contains(&token), "the token is never echoed");
}

#[tokio::test]
async fn another_users_events_and_images_answer_like_a_batch_that_does_not_exist() {
    let r = rig(1).await;
    r.worker.process(&r.messages[0]).await.expect("process");
    let app = app(r.store.clone(), fast());
    let missing = "0190b5c6-0000-7000-8000-000000000000";
    for (theirs, nowhere) in [
        (format!("/v1/batches/{}/events", r.batch_id), format!("/v1/batches/{missing}/events")),
        (format!("/v1/images/{}/S0/1", r.batch_id), format!("/v1/images/{missing}/S0/1")),
        (format!("/v1/provenance/{}/S0/1", r.batch_id), format!("/v1/provenance/{missing}/S0/1")),
    ] {
        let limit = Duration::from_millis(300);
        let (status, _, refused) = read_as(app.clone(), &theirs, None, limit, Some("intruder@studio.test")).await;
        let (_, _, absent) = read_as(app.clone(), &nowhere, None, limit, Some("intruder@studio.test")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}: {refused}");
        assert_eq!(refused.replace(&r.batch_id, "ID"), absent.replace(missing, "ID"), "{theirs}");
        let (status, _, _) = read_as(app.clone(), &theirs, None, limit, Some(OWNER)).await;
        assert_eq!(status, StatusCode::OK, "the owner may: {theirs}");
    }
    let admin = Access { admins: assetgen_common::auth::AllowList::new(["lead@studio.test"]), ..Access::dev() };
    let (status, _, _) = read_as(
        app_with(r.store.clone(), fast(), admin),
        &format!("/v1/images/{}/S0/1", r.batch_id),
        None,
        Duration::from_millis(300),
        Some("lead@studio.test"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "an admin may read anyone's batch");
    let admin = Access { admins: assetgen_common::auth::AllowList::new(["lead@studio.test"]), ..Access::dev() };
    let (status, _, text) = read_as(
        app_with(r.store.clone(), fast(), admin),
        &format!("/v1/provenance/{}/S0/1", r.batch_id),
        None,
        Duration::from_millis(300),
        Some("lead@studio.test"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "and its images' provenance");
    assert!(text.contains("\"scene_id\":\"S0\""), "{text}");
}

#[tokio::test]
async fn an_image_link_opens_its_one_image_with_no_header() {
    let r = rig(2).await;
    for m in &r.messages {
        r.worker.process(m).await.expect("process");
    }
    let access = Access::dev();
    let links = access.links.clone();
    let app = app_with(r.store.clone(), fast(), access);
    let batch = assetgen_common::domain::BatchId::parse(&r.batch_id).expect("id");
    let name = |scene: &str| {
        assetgen_common::layout::image(&batch, &assetgen_common::domain::SceneId::parse(scene).expect("scene"), 1)
    };
    let fetch = |uri: String| {
        let app = app.clone();
        async move {
            // No identity at all: what `=IMAGE()` and a fresh browser send.
            let response = app.oneshot(Request::builder().uri(uri).body(Body::empty()).expect("request")).await;
            let response = response.expect("infallible");
            let status = response.status();
            let content_type = response.headers().get("content-type").cloned();
            let body = response.into_body().collect().await.expect("body").to_bytes();
            (status, content_type, body)
        }
    };
    let link = format!("/v1/images/{}/S0/1?sig={}", r.batch_id, links.sign(&name("S0")));
    let (status, content_type, body) = fetch(link.clone()).await;
    assert_eq!((status, content_type.as_ref().and_then(|v| v.to_str().ok())), (StatusCode::OK, Some("image/png")));
    assert_eq!(&body[..8], b"\x89PNG\r\n\x1a\n", "the PNG itself");
    let stored = r.store.get(&name("S0")).await.expect("stored image");
    assert_eq!(body, stored.body, "exactly the stored bytes");

    // The same signature on another image of the same batch, a tampered one, another secret's.
    let other_image = format!("/v1/images/{}/S1/1?sig={}", r.batch_id, links.sign(&name("S0")));
    let mut tampered_sig = links.sign(&name("S0"));
    let first = if tampered_sig.starts_with('A') { "B" } else { "A" };
    tampered_sig.replace_range(0..1, first);
    let tampered = format!("/v1/images/{}/S0/1?sig={tampered_sig}", r.batch_id);
    let foreign =
        format!("/v1/images/{}/S0/1?sig={}", r.batch_id, assetgen_common::auth::LinkSigner::random().sign(&name("S0")));
    let missing = format!("/v1/images/{}/S9/1?sig={}", r.batch_id, links.sign(&name("S9")));
    let (_, _, absent) = fetch(missing).await;
    for uri in [other_image, tampered, foreign] {
        let (status, _, body) = fetch(uri.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        let text = String::from_utf8_lossy(&body).replace("S1", "S9").replace("S0", "S9");
        assert_eq!(text, String::from_utf8_lossy(&absent), "a bad signature reads like a missing image");
    }

    // The links a batch view carries are these very links.
    let presenter = assetgen_common::batch_view::Presenter::new("http://relay.test", links);
    let stored = assetgen_common::batch_view::load(r.store.as_ref(), &batch).await.expect("load");
    let view = presenter.view(&stored);
    let first_link = view.rows[0].images[0].clone();
    assert_eq!(first_link, format!("http://relay.test{link}"));
}

/// A store that can sign URLs, as GCS does.
fn signing(inner: Arc<dyn ObjectStore>) -> HookedStore {
    HookedStore::new(inner)
        .signing(|name, ttl| format!("https://storage.test/bucket/{name}?X-Goog-Expires={}", ttl.as_secs()))
}

#[tokio::test]
async fn image_links_redirect_to_a_fresh_signed_url_where_the_store_signs() {
    let r = rig(1).await;
    r.worker.process(&r.messages[0]).await.expect("process");
    let access = Access::dev();
    let batch = assetgen_common::domain::BatchId::parse(&r.batch_id).expect("id");
    let scene = assetgen_common::domain::SceneId::parse("S0").expect("scene");
    let sig = access.links.sign(&assetgen_common::layout::image(&batch, &scene, 1));
    // An image link, with no header: as a Sheet cell loads it.
    let uri = format!("/v1/images/{}/S0/1?sig={sig}", r.batch_id);
    let request = || Request::builder().uri(&uri).body(Body::empty()).expect("request");
    let app = |store: Arc<dyn ObjectStore>| app_with(store, fast(), access.clone());
    let plain = app(r.store.clone()).oneshot(request()).await.expect("infallible");
    assert_eq!(
        (plain.status(), plain.headers()["content-type"].to_str().ok()),
        (StatusCode::OK, Some("image/png")),
        "bytes where the store cannot sign"
    );
    let signing = app(Arc::new(signing(r.store.clone()))).oneshot(request()).await.expect("infallible");
    assert_eq!(signing.status(), StatusCode::FOUND);
    let location = signing.headers()["location"].to_str().expect("location");
    assert!(
        location.starts_with("https://storage.test/bucket/images/") && location.ends_with("X-Goog-Expires=900"),
        "{location}"
    );
    assert_eq!(signing.headers()["cache-control"], "private, no-store", "every click gets a fresh URL");
}

/// Writes `row`'s state as failed (a terminal state needs no images); returns its generation.
async fn end_row(store: &dyn ObjectStore, batch_id: &str, row: u32) -> i64 {
    use assetgen_common::store::{Precondition, read_json, write_json};
    let id = assetgen_common::domain::BatchId::parse(batch_id).expect("batch id");
    let name = assetgen_common::layout::row_state(&id, row);
    let mut state: assetgen_common::state::RowState = read_json(store, &name).await.expect("state").value;
    state.status = assetgen_common::api::RowStatus::Failed;
    state.error = Some(assetgen_common::state::RowError {
        code: assetgen_common::problem::ErrorCode::ModelUnavailable,
        detail: format!("row {row} gave up"),
    });
    write_json(store, &name, &state, Precondition::None).await.expect("write")
}

/// Row events per scene in a stream's text.
fn row_events_of(text: &str, scene: &str) -> usize {
    text.split("\n\n").filter(|b| b.contains("event: row") && b.contains(&format!("\"scene_id\":\"{scene}\""))).count()
}

#[tokio::test]
async fn a_write_that_shows_up_late_reaches_live_and_resumed_clients_exactly_once() {
    use assetgen_common::testkit::LateWrites;
    let late = Arc::new(LateWrites::new(Arc::new(assetgen_common::store::MemoryStore::new())));
    let kit = testkit::Rig::on(late.clone(), |_| {});
    let batch_id = kit.submit_rows((0..3).map(|i| testkit::row(&format!("S{i}"), 1)).collect()).await.to_string();
    let uri = format!("/v1/batches/{batch_id}/events");
    let live = {
        let (router, uri) = (app(late.clone(), fast()), uri.clone());
        tokio::spawn(async move { read(router, &uri, None, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Row 0's end takes its generation before row 1's, but shows up after it.
    let id = assetgen_common::domain::BatchId::parse(&batch_id).expect("id");
    late.hide_next_write(&assetgen_common::layout::row_state(&id, 0));
    end_row(late.as_ref(), &batch_id, 0).await;
    end_row(late.as_ref(), &batch_id, 1).await;
    // A second client reads until row 1's end has arrived, then drops.
    let (_, _, before) = read(app(late.clone(), fast()), &uri, None, Duration::from_millis(300)).await;
    let dropped_at = events(&before).last().map(|e| e.1.clone()).expect("an id");
    assert!(before.contains("gave up") && row_events_of(&before, "S0") == 0, "{before}");

    late.release(&assetgen_common::layout::row_state(&id, 0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    end_row(late.as_ref(), &batch_id, 2).await;

    let (_, _, text) = live.await.expect("live reader");
    assert_eq!(events(&text).last().map(|e| e.0.as_str()), Some("done"), "{text}");
    for scene in ["S0", "S1", "S2"] {
        assert_eq!(row_events_of(&text, scene), 1, "the live client gets {scene}'s end exactly once: {text}");
    }
    let (_, _, resumed) = read(app(late.clone(), fast()), &uri, Some(&dropped_at), Duration::from_secs(5)).await;
    assert_eq!(
        (row_events_of(&resumed, "S0"), row_events_of(&resumed, "S1"), row_events_of(&resumed, "S2")),
        (1, 0, 1),
        "a resume sends the late row and the newer one, not the one it had: {resumed}"
    );
    assert_eq!(events(&resumed).last().map(|e| e.0.as_str()), Some("done"));
}
