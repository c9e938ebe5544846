//! The container images, built here by `make images` (tools/images.sh) and run with podman the way
//! Cloud Run runs them: each answers `/healthz`, runs as uid 65532, and stops on SIGTERM within
//! Cloud Run's 10 s grace; one dry-run row goes through the containerised submit, Pub/Sub (the
//! emulator) and generate on fake-gcs-server, with OIDC on: user and push tokens are minted by
//! the test's own key set (`topology::TestIssuer`), and the push forwarder adds the push
//! account's token Google's push would carry (`topology::PushForwarder`).
//!
//! podman here needs runc, no default ulimits and the host network (../shared/CONTAINERS.md).
//! Where podman cannot be installed or cannot run a container, the test says why and skips.

use assetgen_common::store::ObjectStore;
use assetgen_common::testkit::{FakeGcs, PubSubEmulator, SubscriptionSpec};
use assetgen_tests::topology::{OWNER, PUSH_SERVICE_ACCOUNT, PushForwarder, TestIssuer, USER_AUDIENCE, free_port};
use assetgen_tests::{ApiClient, wait_until};
use axum::http::StatusCode;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PUSH_AUDIENCE: &str = "https://assetgen-generate.images-test.run.app";
const NONROOT: u32 = 65532;
/// Cloud Run's grace between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)).trim().to_owned()
}

/// podman as Cloud Run's stand-in here: vfs storage, the runc runtime, no default ulimits.
struct Podman {
    conf: tempfile::NamedTempFile,
    runc: String,
}

impl Podman {
    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command.arg("--storage-driver=vfs").env("CONTAINERS_CONF", self.conf.path());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).stdin(Stdio::null()).output().expect("podman runs")
    }
}

/// Whether podman can build and run a container here, and if not, why.
fn podman() -> Result<Podman, String> {
    let have = |tool: &str| Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().ok();
    let installed = |tool: &str| have(tool).is_some_and(|o| o.status.success());
    if !installed("podman") || !installed("runc") {
        // What `make images` would do; only root can, and only with apt-get.
        let install = Command::new("sh")
            .args(["-c", "apt-get install -y podman runc || { apt-get update && apt-get install -y podman runc; }"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        if !installed("podman") || !installed("runc") {
            return Err(format!(
                "podman and runc are not installed and cannot be: {}",
                install.map(|o| text(&o)).unwrap_or_else(|e| e.to_string()).lines().last().unwrap_or_default()
            ));
        }
    }
    let runc = have("runc").map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    let mut conf = tempfile::NamedTempFile::new().expect("a temp file");
    std::io::Write::write_all(&mut conf, b"[containers]\ndefault_ulimits = []\n").expect("write containers.conf");
    let podman = Podman { conf, runc };
    // An image of one empty file answers whether podman can build at all here; the function
    // images' own build problems are failures, not skips.
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("Containerfile"), "FROM scratch\nCOPY probe /probe\n").expect("write");
    std::fs::write(dir.path().join("probe"), "").expect("write");
    let build = podman.run(&["build", "-q", "-t", "localhost/assetgen-probe", &dir.path().to_string_lossy()]);
    if !build.status.success() {
        return Err(format!("podman cannot build here: {}", text(&build)));
    }
    Ok(podman)
}

/// Whether podman can run a container here: `image` started without its settings must stop at
/// once with the function's own exit code 2 ("ASSETGEN_STORE: not set"); a runtime that cannot
/// start containers here fails before, with podman's 125/126 and an OCI error.
fn runs_here(podman: &Podman, image: &str) -> Result<(), String> {
    let run = podman.run(&["run", "--rm", &format!("--runtime={}", podman.runc), "--network=host", image]);
    match run.status.code() {
        Some(2) if text(&run).contains("ASSETGEN_STORE") => Ok(()),
        Some(125..=127) if text(&run).contains("OCI") => {
            Err(format!("podman cannot run containers here: {}", text(&run)))
        }
        other => panic!("{image} without settings ended with {other:?}, not the config error: {}", text(&run)),
    }
}

/// A running container; removed when dropped.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
    base: String,
    cold_start: Duration,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// Starts `image` on the host network and waits for its first `/healthz` 200: the cold start,
/// from the `podman run` exec (creating the container included) to that answer.
async fn start<'a>(podman: &'a Podman, image: &str, env: &[(&str, String)]) -> Container<'a> {
    let port = free_port().expect("a free port");
    let name = format!(
        "assetgen-test-{}-{}-{port}",
        image.rsplit('/').next().unwrap_or("f").replace(':', "-"),
        std::process::id()
    );
    let mut args = vec![
        "run".to_owned(),
        "-d".to_owned(),
        format!("--name={name}"),
        format!("--runtime={}", podman.runc),
        "--network=host".to_owned(),
        "-e".to_owned(),
        format!("PORT={port}"),
        "-e".to_owned(),
        "RUST_LOG=warn".to_owned(),
    ];
    for (k, v) in env {
        args.push("-e".to_owned());
        args.push(format!("{k}={v}"));
    }
    args.push(image.to_owned());
    let started = Instant::now();
    let run = podman.command().args(&args).stdin(Stdio::null()).output().expect("podman run");
    assert!(run.status.success(), "podman run {image}: {}", text(&run));
    let mut container =
        Container { podman, name, base: format!("http://127.0.0.1:{port}"), cold_start: Duration::ZERO };
    let client = reqwest::Client::new();
    loop {
        if client.get(format!("{}/healthz", container.base)).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
            container.cold_start = started.elapsed();
            return container;
        }
        let state = podman.run(&["inspect", "-f", "{{.State.Running}}", &container.name]);
        if text(&state) == "false" {
            let logs = podman.run(&["logs", &container.name]);
            panic!("{image} exited at start: {}", text(&logs));
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{image} never answered /healthz");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The uids the container's process runs as, seen from the host: real, effective, saved, fs.
fn uids(container: &Container<'_>) -> Vec<u32> {
    let pid = text(&container.podman.run(&["inspect", "-f", "{{.State.Pid}}", &container.name]));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the container's process");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("a Uid line");
    line.split_whitespace().skip(1).map(|u| u.parse().expect("a uid")).collect()
}

/// `podman stop` sends SIGTERM and waits up to the grace; returns how long it took and the exit code.
fn stop(container: &Container<'_>) -> (Duration, String) {
    let started = Instant::now();
    let stop = container.podman.run(&["stop", "-t", &GRACE.as_secs().to_string(), &container.name]);
    let took = started.elapsed();
    assert!(stop.status.success(), "podman stop: {}", text(&stop));
    (took, text(&container.podman.run(&["inspect", "-f", "{{.State.ExitCode}}", &container.name])))
}

// ---- the test ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn each_image_serves_runs_as_nonroot_stops_on_sigterm_and_generate_makes_a_row_in_a_container() {
    let podman = match podman() {
        Ok(p) => p,
        Err(reason) => {
            println!("SKIPPED: the container image test needs podman: {reason}");
            return;
        }
    };
    let build = Command::new(repo().join("tools/images.sh"))
        .env("ENGINE", "podman")
        .env("IMAGE_TAG", "test")
        .env("CONTAINERS_CONF", podman.conf.path())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("tools/images.sh");
    assert!(build.status.success(), "make images failed");
    let images: Vec<String> = String::from_utf8_lossy(&build.stdout).lines().map(str::to_owned).collect();
    let image = |function: &str| {
        images.iter().find(|i| i.contains(&format!("/assetgen-{function}:"))).expect("an image per function").clone()
    };
    if let Err(reason) = runs_here(&podman, &image("submit")) {
        println!("SKIPPED: the container image test needs podman to run containers: {reason}");
        return;
    }

    let gcs = FakeGcs::start().await;
    let store = gcs.store().await;
    let bucket = store.bucket().to_owned();
    let pubsub = PubSubEmulator::start().await;
    pubsub.create_topic("rows").await;
    pubsub.create_topic("rows-dead").await;
    let issuer = TestIssuer::start().await.expect("the test's key set");

    // As Terraform sets them (terraform/modules/assetgen/run.tf), but for the emulators and the
    // key set; settings a function does not read are harmless here.
    let cloud = |audience: &str| {
        vec![
            ("ASSETGEN_STORE", format!("gs://{bucket}")),
            ("STORAGE_EMULATOR_HOST", gcs.endpoint.clone()),
            ("ASSETGEN_QUEUE", format!("pubsub://projects/{}/topics/rows", pubsub.project)),
            ("PUBSUB_EMULATOR_HOST", pubsub.host.clone()),
            ("ASSETGEN_AUTH", "oidc".to_owned()),
            ("ASSETGEN_OIDC_JWKS_URL", issuer.jwks_url.clone()),
            ("ASSETGEN_OIDC_AUDIENCE", audience.to_owned()),
            ("ASSETGEN_PUSH_AUDIENCE", PUSH_AUDIENCE.to_owned()),
            ("ASSETGEN_ALLOWED", OWNER.to_owned()),
            ("ASSETGEN_PUSH_SA", PUSH_SERVICE_ACCOUNT.to_owned()),
            ("ASSETGEN_CAPABILITY_SECRET", "images-test-capability-secret-0123456789".to_owned()),
            ("ASSETGEN_LINK_SECRET", "images-test-link-secret-0123456789abcdef".to_owned()),
        ]
    };
    let generate = start(&podman, &image("generate"), &cloud(PUSH_AUDIENCE)).await;
    let forwarder = PushForwarder::start(issuer.clone(), &generate.base, PUSH_AUDIENCE, 4).await.expect("forwarder");
    pubsub
        .create_subscription(
            "rows-push",
            &SubscriptionSpec::push("rows", &format!("{}/pubsub/rows", forwarder.base))
                .with_retry_backoff(Duration::from_secs(1), Duration::from_secs(2))
                .with_dead_letter("rows-dead", 5),
        )
        .await;
    let submit = start(&podman, &image("submit"), &cloud(USER_AUDIENCE)).await;
    let relay = start(&podman, &image("relay"), &cloud(USER_AUDIENCE)).await;

    for container in [&submit, &generate, &relay] {
        assert_eq!(uids(container), vec![NONROOT; 4], "{} runs as uid {NONROOT}", container.name);
    }

    // One dry-run row: submit (a user's token) → Pub/Sub → generate (a push token) → the bucket.
    let as_owner = ApiClient::new(&submit.base).with_token(&issuer.id_token(OWNER, USER_AUDIENCE));
    let rows = json!([{"scene_id": "MUG-1", "prompt": "a ceramic mug", "variants": 1}]);
    let (id, _) = as_owner.submit(&json!({"rows": rows, "run_mode": "dry_run"})).await;
    let started = Instant::now();
    let view = as_owner.ended(&id, Duration::from_secs(60)).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let objects = view["rows"][0]["objects"].as_array().expect("the row's objects").clone();
    assert_eq!(objects.len(), 1, "{view}");
    // The forwarder records a push once generate's answer is back, which can be just after the
    // row's state says it ended.
    let taken = || forwarder.forwarded().iter().any(|p| p.signed && p.status < 300);
    wait_until(Duration::from_secs(10), "generate to take a push with a token", taken).await;
    let png = store.get(objects[0].as_str().expect("an object name")).await.expect("the image is in the bucket");
    assert!(png.body.starts_with(b"\x89PNG"), "a PNG");
    // The relay, a third container, reads the same batch for the same user.
    let relayed = as_owner
        .client
        .get(format!("{}/v1/batches/{id}/events", relay.base))
        .bearer_auth(issuer.id_token(OWNER, USER_AUDIENCE))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("relay");
    assert_eq!(relayed.status(), StatusCode::OK);
    drop(relayed); // an open stream would hold the relay's graceful shutdown

    let mut report = Vec::new();
    for (function, container) in [("submit", &submit), ("generate", &generate), ("relay", &relay)] {
        let (took, exit_code) = stop(container);
        assert!(took < GRACE, "{function} took {took:?} to stop on SIGTERM");
        assert_eq!(exit_code, "0", "{function} exits cleanly on SIGTERM");
        let size = text(&podman.run(&["image", "inspect", "-f", "{{.Size}}", &image(function)]));
        let size: f64 = size.parse().expect("a size");
        report.push(format!(
            "{function}: {:.1} MB, cold start {} ms, SIGTERM → exit {} ms",
            size / 1e6,
            container.cold_start.as_millis(),
            took.as_millis()
        ));
    }
    println!(
        "container images (podman, runc, vfs): {}; row done in {:.1} s",
        report.join("; "),
        started.elapsed().as_secs_f64()
    );
}
