//! Helpers for the end-to-end tests and the load driver: run the real `assetgen` binary on a free
//! port, call its API ([`ApiClient`]), check the money ([`money`]), and serve reference images and
//! Gemini stubs from loopback.

mod api_client;
pub mod events;
pub mod money;
pub mod topology;

pub use api_client::ApiClient;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::io::{BufRead, BufReader};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A binary of this workspace that cargo built beside the running test (`target/<profile>/NAME`).
/// `cargo test --workspace` (what `make test` runs) builds every binary before any test starts.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    // A test runs from `target/<profile>/deps`, a binary of this crate from `target/<profile>`.
    let exe = std::env::current_exe()?;
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|dir| dir.join(&file)).collect();
    match candidates.iter().find(|bin| bin.exists()) {
        Some(bin) => Ok(bin.clone()),
        None => {
            bail!("{file} is missing beside {}: run `cargo build --workspace --bins` (make test does)", exe.display())
        }
    }
}

/// The release `assetgen` binary, for the load driver (`make bench` builds it first). Tests use
/// `env!("CARGO_BIN_EXE_assetgen")` instead, which cargo keeps fresh.
pub fn release_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().context("load driver has no directory")?;
    let bin = profile_dir.join(format!("assetgen{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        bail!("{} is missing: run `make bench`, which builds it", bin.display());
    }
    Ok(bin)
}

/// A running `assetgen serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// A client of this server's API, as the default user.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(&self.base)
    }

    /// Kills the server with SIGKILL, without warning (as a crash or an out-of-memory kill), and
    /// reaps it.
    pub fn kill_now(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary serve --port 0` in `dir` with `env`, and waits for the line that names its URL.
pub fn spawn_serve(binary: &FsPath, dir: &FsPath, env: &[(&str, &str)]) -> anyhow::Result<Server> {
    spawn_serve_with_args(binary, dir, env, &[])
}

/// [`spawn_serve`] with more arguments for `serve` (e.g. `--live`).
pub fn spawn_serve_with_args(
    binary: &FsPath,
    dir: &FsPath,
    env: &[(&str, &str)],
    args: &[&str],
) -> anyhow::Result<Server> {
    spawn_serve_to(binary, dir, env, args, Stdio::inherit())
}

/// [`spawn_serve_with_args`] with the server's log (its stderr) appended to the file `log`.
pub fn spawn_serve_logged(
    binary: &FsPath,
    dir: &FsPath,
    env: &[(&str, &str)],
    args: &[&str],
    log: &FsPath,
) -> anyhow::Result<Server> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).context("opening the log file")?;
    spawn_serve_to(binary, dir, env, args, Stdio::from(file))
}

fn spawn_serve_to(
    binary: &FsPath,
    dir: &FsPath,
    env: &[(&str, &str)],
    args: &[&str],
    stderr: Stdio,
) -> anyhow::Result<Server> {
    let mut command = Command::new(binary);
    command
        .args(["serve", "--port", "0"])
        .args(args)
        .current_dir(dir)
        .env("ASSETGEN_STORE", format!("file://{}", dir.join("data").display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().context("starting assetgen serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("assetgen is listening on ") {
                let _ = tx.send(url.trim_end_matches('/').to_owned());
            }
        }
    });
    let mut server = Server { child, base: String::new() };
    server.base = rx.recv_timeout(Duration::from_secs(60)).context("assetgen serve did not say where it listens")?;
    Ok(server)
}

/// A small valid PNG whose pixels depend on `seed`, so different seeds are different content.
pub fn png(seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 4, 4);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let Ok(mut writer) = encoder.write_header() else { return out };
        let pixels: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(seed).wrapping_add(seed)).collect();
        let _ = writer.write_image_data(&pixels);
    }
    out
}

/// Serves `/refs/{name}` on loopback: `{n}.png` is `png(n)`; `copy-{n}.png` is the same bytes under
/// another URL (for content dedup). Returns the base URL.
pub async fn serve_refs() -> anyhow::Result<String> {
    async fn reference(Path(name): Path<String>) -> impl IntoResponse {
        let seed = name.trim_start_matches("copy-").trim_end_matches(".png").parse::<u8>();
        match seed {
            Ok(seed) => ([(header::CONTENT_TYPE, "image/png")], png(seed)).into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/refs/{name}", get(reference))).await });
    Ok(base)
}

/// The acceptance batch as CSV: BATCH-001…BATCH-100, "product on clean bg #i", variants (i mod 3)+1,
/// and 20 rows with 1–3 references, some of which repeat another's content under another URL.
pub fn acceptance_csv(rows: usize, refs_base: &str) -> String {
    let mut csv = String::from("scene_id,prompt,variants,refs,ref_mode\n");
    for i in 0..rows {
        let refs = if i % 5 == 0 && i < 100 {
            match (i / 5) % 3 {
                0 => format!("{refs_base}/refs/{}.png", i % 7),
                1 => format!("{refs_base}/refs/{}.png|{refs_base}/refs/copy-{}.png", i % 7, i % 7),
                _ => format!("{refs_base}/refs/1.png|{refs_base}/refs/2.png|{refs_base}/refs/copy-1.png"),
            }
        } else {
            String::new()
        };
        let mode = if i % 2 == 0 { "style_only" } else { "style_and_composition" };
        csv.push_str(&format!("BATCH-{:03},product on clean bg #{i},{},{refs},{mode}\n", i + 1, (i % 3) + 1));
    }
    csv
}

/// [`acceptance_csv`]'s rows as the JSON rows of a `POST /v1/batches` body.
pub fn acceptance_rows(rows: usize, refs_base: &str) -> Vec<serde_json::Value> {
    acceptance_csv(rows, refs_base)
        .lines()
        .skip(1)
        .map(|line| {
            let c: Vec<&str> = line.split(',').collect();
            let refs: Vec<&str> = c[3].split('|').filter(|r| !r.is_empty()).collect();
            serde_json::json!({"scene_id": c[0], "prompt": c[1], "variants": c[2].parse::<u8>().unwrap_or(1), "refs": refs, "ref_mode": c[4]})
        })
        .collect()
}

/// Waits (checking every 20 ms) until `done` holds; fails the test, naming `what`, if it does not
/// within `within`.
pub async fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the flaky Gemini stub saw.
#[derive(Debug, Default)]
pub struct GeminiStubStats {
    pub calls: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    /// Successful generations per prompt (one prompt per row in the acceptance batch).
    pub successes: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// How long every call takes before it is answered (settable while the stub runs).
    pub delay_ms: std::sync::atomic::AtomicU64,
    /// Calls that have not been answered yet.
    pub in_flight: std::sync::atomic::AtomicU64,
}

impl GeminiStubStats {
    pub fn succeeded(&self) -> u64 {
        self.successes.lock().map(|s| s.values().sum()).unwrap_or(0)
    }
}

/// A local Gemini `generateContent` endpoint speaking the real wire format: thought parts first
/// and the image last, and on `failure_percent` of calls (pseudo-randomly, reproducibly) a 429
/// with `RetryInfo` or a 503, as Google sends them.
pub async fn serve_flaky_gemini(failure_percent: u64) -> anyhow::Result<(String, std::sync::Arc<GeminiStubStats>)> {
    serve_gemini_stub(failure_percent, "").await
}

/// [`serve_flaky_gemini`], and every call whose prompt contains `always_fail` (when not empty) is
/// answered 503, so its row can only end dead-lettered.
pub async fn serve_gemini_stub(
    failure_percent: u64,
    always_fail: &str,
) -> anyhow::Result<(String, std::sync::Arc<GeminiStubStats>)> {
    serve_gemini_stub_with(failure_percent, always_fail, Duration::ZERO).await
}

/// [`serve_gemini_stub`], every answer after `latency` (so a batch is still running when a test
/// kills the server).
pub async fn serve_gemini_stub_with(
    failure_percent: u64,
    always_fail: &str,
    latency: Duration,
) -> anyhow::Result<(String, std::sync::Arc<GeminiStubStats>)> {
    let always_fail = always_fail.to_owned();
    use axum::Json;
    use base64::Engine;
    use std::sync::atomic::Ordering;
    let stats = std::sync::Arc::new(GeminiStubStats::default());
    let seen = stats.clone();
    let handler = move |Json(body): Json<serde_json::Value>| {
        let stats = seen.clone();
        let always_fail = always_fail.clone();
        async move {
            let n = stats.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(latency).await;
            let delay = stats.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                stats.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            let text = body["contents"][0]["parts"][0]["text"].as_str().unwrap_or_default().to_owned();
            if !always_fail.is_empty() && text.contains(&always_fail) {
                stats.failures.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}});
                return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            }
            // A fixed scramble of the call number: the same failures on every run.
            let roll = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % 100;
            if roll < failure_percent {
                stats.failures.fetch_add(1, Ordering::SeqCst);
                return if roll % 2 == 0 {
                    let body = serde_json::json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED",
                        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}});
                    (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
                } else {
                    let body = serde_json::json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}});
                    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
                };
            }
            let prompt = body["contents"][0]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            if let Ok(mut s) = stats.successes.lock() {
                *s.entry(prompt).or_default() += 1;
            }
            let image = base64::engine::general_purpose::STANDARD.encode(png((n % 250) as u8));
            let answer = serde_json::json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "planning the composition", "thought": true},
                {"inlineData": {"mimeType": "image/png", "data": image}}
            ]}, "finishReason": "STOP", "index": 0}], "modelVersion": "gemini-2.5-flash-image",
                // Google's answers carry an id (`responseId`); provenance records it.
                "responseId": format!("stub-response-{n}")});
            Json(answer).into_response()
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/v1beta/models/{call}", axum::routing::post(handler))).await
    });
    Ok((base, stats))
}

pub mod bulk_stub;
pub mod quota_stub;
