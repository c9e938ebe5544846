//! Pub/Sub push with OIDC on, on real parts: the emulator's push carries no `Authorization` header
//! (unlike Google's), so generate refuses it; the same push with an ID token of the push service
//! account for generate's audience (added by the topology's forwarder, as Google's push would) is
//! taken, and the row is made. A user's ID token on the push route is refused too.

use assetgen_tests::topology::{OWNER, Topology, TopologyOptions};
use assetgen_tests::{ApiClient, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn generate_refuses_the_emulators_bare_push_and_takes_it_with_the_push_accounts_token() {
    // Room for a few refused deliveries before the row would be dead-lettered.
    let options = TopologyOptions { sign_pushes: false, max_delivery_attempts: 20, ..TopologyOptions::default() };
    let topology = Topology::start(options).await.expect("the topology starts");
    let client = reqwest::Client::new();

    let as_owner = ApiClient::new(&topology.submit.base).with_token(&topology.user_token(OWNER));
    let rows = json!([{"scene_id": "PUSH-001", "prompt": "a mug", "variants": 1}]);
    let (id, _) = as_owner.submit(&json!({"rows": rows, "run_mode": "dry_run"})).await;

    // The emulator pushes, and pushes again, with no Authorization header: refused every time.
    let started = Instant::now();
    while topology.forwarder.forwarded().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "the emulator did not push twice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bare = topology.forwarder.forwarded();
    for push in &bare {
        assert!(!push.arrived_with_authorization, "the emulator's push carries no Authorization");
        assert_eq!((push.path.as_str(), push.signed, push.status), ("/pubsub/rows", false, 401), "{push:?}");
    }
    let view = as_owner.batch(&id).await;
    assert_eq!((view["rows"][0]["status"].as_str(), view["rows"][0]["attempts"].as_u64()), (Some("queued"), Some(0)));

    // A user's ID token is not a push token, on the very body the emulator sent.
    let replay = client
        .post(format!("{}/pubsub/rows", topology.generate.base))
        .bearer_auth(topology.user_token(OWNER))
        .header("content-type", "application/json")
        .body(bare[0].body.clone())
        .send()
        .await
        .expect("replay");
    assert!([401, 403].contains(&replay.status().as_u16()), "a user's token on /pubsub/rows: {}", replay.status());

    // As Google's push: a fresh ID token of the push service account for generate's audience.
    topology.forwarder.set_signing(true);
    let within = Duration::from_secs(90).saturating_sub(started.elapsed());
    let view = as_owner.until(&id, within, "the row being made", |view| view["status"] == "succeeded").await;
    assert_eq!(view["totals"]["images_done"], 1);
    // The forwarder records a push once generate's answer is back, which can be just after the
    // row's state says it ended.
    let taken = || topology.forwarder.forwarded().iter().any(|p| p.signed && (200..300).contains(&p.status));
    wait_until(Duration::from_secs(10), "a signed push to be taken", taken).await;
    let signed: Vec<_> = topology.forwarder.forwarded().into_iter().filter(|p| p.signed).collect();
    assert!(signed.iter().all(|p| !p.arrived_with_authorization));
    println!(
        "push with OIDC: {} bare pushes refused (401), then taken with the push account's token; \
         cold start to first /healthz 200: submit {} ms, generate {} ms, relay {} ms",
        bare.len(),
        topology.submit.cold_start.as_millis(),
        topology.generate.cold_start.as_millis(),
        topology.relay.cold_start.as_millis()
    );
}
