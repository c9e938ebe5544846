//! `make bench`: how close a live batch gets to the quota-bound ideal. A Gemini stub enforces an
//! images-per-minute quota (429 + `RetryInfo` beyond it) with log-normal latency (median 3 s, p95
//! 10 s), and a release `assetgen serve --live`, paced with `ASSETGEN_GEMINI_IPM`, makes
//! 100 rows / 199 images at 600 IPM, then 1,000 rows / 1,999 images at 2,000 IPM.
//!
//! Per run: completion time ÷ the ideal (images ÷ IPM), the share of calls answered 429, per-image
//! call latency p50/p95 and when images were done (p50/p95 after submit), and the server's peak
//! RSS. Bounded: two batches, each with a time-out, then it stops.
//!
//! The same two batches then go through the three functions (`assetgen-submit`, `-generate`,
//! `-relay`, as separate processes) on fake-gcs-server and the Pub/Sub emulator, with OIDC on: ID
//! tokens minted by the run's own key set, and a forwarder that adds the push service account's
//! token to the emulator's pushes (which carry none) and caps generate's concurrency as Cloud Run
//! would, at the sizing rule's value (docs/sizing.md). The emulator's own push keeps only about two
//! pushes in flight, so rows are pulled and pushed with Pub/Sub push's semantics by the topology's
//! `PullPusher` (2xx acks, anything else nacks; the subscription's retry and dead-letter policies
//! apply).
//!
//! `pacebench [--latency-scale F] [--only serve|functions] [--run ROWSxIPM]... [--repeat N]`: F
//! multiplies every latency (0.1 for a quick look); `--run` replaces the two runs (`--run 100x600`);
//! `--repeat` runs the plan N times. A serve run that does not finish keeps its data directory and
//! `serve.log` (`PACEBENCH_LOG` sets its `RUST_LOG`, default `warn`) and prints the rows not ended.

use anyhow::{Context, bail};
use assetgen_common::model::Pacing;
use assetgen_tests::events::until_done;
use assetgen_tests::quota_stub::{QuotaStubConfig, QuotaStubStats, serve_quota_gemini};
use assetgen_tests::topology::{OWNER, Topology, TopologyOptions};
use assetgen_tests::{acceptance_rows, release_binary, serve_refs, spawn_serve_logged};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// (rows, images per minute)
const RUNS: [(usize, u32); 2] = [(100, 600), (1000, 2000)];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// Peak resident set (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    let kib: f64 = line.split_whitespace().nth(1).context("VmHWM value")?.parse()?;
    Ok(kib / 1024.0)
}

struct Measured {
    path: &'static str,
    rows: usize,
    ipm: u32,
    images: u64,
    took: Duration,
    calls: u64,
    refused: u64,
    call_p50: f64,
    call_p95: f64,
    done_p50: f64,
    done_p95: f64,
    done_last: f64,
    call_max: f64,
    /// When the last accepted call arrived: the quota was in use until then, and idle after.
    last_call: f64,
    rss_mib: f64,
}

/// Sends `submit` (a `POST /v1/batches`, signed as its path needs) with the acceptance batch's
/// first `rows_n` rows, live; the accepted answer.
async fn submit_live(submit: reqwest::RequestBuilder, rows_n: usize, refs: &str) -> anyhow::Result<Value> {
    let response = submit.json(&json!({"rows": acceptance_rows(rows_n, refs), "run_mode": "live"})).send().await?;
    if response.status() != 202 {
        bail!("submit answered {}: {}", response.status(), response.text().await?);
    }
    Ok(response.json().await?)
}

/// Where a run that did not finish left its data and log: the rows not ended, as stored.
fn report_stuck(dir: &std::path::Path) {
    let rows = dir.join("data").join("batches");
    let mut open = 0;
    for entry in walk(&rows) {
        let Ok(text) = std::fs::read_to_string(&entry) else { continue };
        let Ok(state) = serde_json::from_str::<Value>(&text) else { continue };
        let status = state["status"].as_str().unwrap_or_default();
        if !matches!(status, "succeeded" | "failed" | "cancelled") && state.get("row").is_some() {
            open += 1;
            eprintln!("not ended: {}: {text}", entry.display());
        }
    }
    let pending = walk(&dir.join("data").join("queue")).len();
    eprintln!("{open} rows not ended, {pending} queue journal entries; data and log kept in {}", dir.display());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() { stack.push(path) } else { out.push(path) }
        }
    }
    out
}

async fn serve_run(rows_n: usize, ipm: u32, latency_scale: f64) -> anyhow::Result<Measured> {
    let stub = QuotaStubConfig { ipm, median: Duration::from_secs(3), p95: Duration::from_secs(10), latency_scale };
    let (gemini, stats) = serve_quota_gemini(stub).await?;
    let refs = serve_refs().await?;
    let dir = tempfile::tempdir()?;
    let ipm_text = ipm.to_string();
    let log_level = std::env::var("PACEBENCH_LOG").unwrap_or_else(|_| "warn".to_owned());
    let server = spawn_serve_logged(
        &release_binary()?,
        dir.path(),
        &[
            ("RUST_LOG", &log_level),
            ("ASSETGEN_MAX_ROWS", "1000"),
            ("ASSETGEN_ALLOW_PRIVATE_REFS", "true"),
            ("ASSETGEN_DAILY_LIMIT_USD", "1000"),
            ("GEMINI_API_KEY", "bench-key"),
            ("GEMINI_BASE_URL", &gemini),
            ("ASSETGEN_GEMINI_IPM", &ipm_text),
        ],
        &["--live"],
        &dir.path().join("serve.log"),
    )?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let accepted = submit_live(client.post(format!("{}/v1/batches", server.base)), rows_n, &refs).await?;
    let images = accepted["estimate"]["images"].as_u64().context("estimate")?;
    let ideal = Duration::from_secs_f64(images as f64 * 60.0 / f64::from(ipm));
    let events = accepted["links"]["events"].as_str().context("events link")?;
    let done = match until_done(&client, events, None, ideal * 4 + Duration::from_secs(120)).await {
        Ok(done) => done,
        Err(e) => {
            report_stuck(&dir.keep());
            return Err(e);
        }
    };
    let took = started.elapsed();
    measured("serve", rows_n, ipm, images, &done, took, started, &stats, peak_rss_mib(server.child.id())?)
}

#[allow(clippy::too_many_arguments)]
fn measured(
    path: &'static str,
    rows_n: usize,
    ipm: u32,
    images: u64,
    done: &Value,
    took: Duration,
    started: Instant,
    stats: &QuotaStubStats,
    rss_mib: f64,
) -> anyhow::Result<Measured> {
    let made = done["totals"]["images_done"].as_u64().unwrap_or(0);
    if made != images {
        bail!("the batch ended with {made} of {images} images: {}", done["totals"]);
    }
    let served = stats.served();
    let mut call: Vec<f64> = served.iter().map(|s| (s.answered - s.arrived).as_secs_f64()).collect();
    let mut done_at: Vec<f64> = served.iter().map(|s| s.answered.duration_since(started).as_secs_f64()).collect();
    let last_call = served.iter().map(|s| s.arrived.duration_since(started).as_secs_f64()).fold(0.0, f64::max);
    call.sort_by(f64::total_cmp);
    done_at.sort_by(f64::total_cmp);
    Ok(Measured {
        path,
        rows: rows_n,
        ipm,
        images,
        took,
        calls: stats.calls.load(Ordering::SeqCst),
        refused: stats.refused.load(Ordering::SeqCst),
        call_p50: percentile(&call, 0.5),
        call_p95: percentile(&call, 0.95),
        done_p50: percentile(&done_at, 0.5),
        done_p95: percentile(&done_at, 0.95),
        done_last: percentile(&done_at, 1.0),
        call_max: percentile(&call, 1.0),
        last_call,
        rss_mib,
    })
}

async fn functions_run(rows_n: usize, ipm: u32, latency_scale: f64) -> anyhow::Result<Measured> {
    let stub = QuotaStubConfig { ipm, median: Duration::from_secs(3), p95: Duration::from_secs(10), latency_scale };
    let (gemini, stats) = serve_quota_gemini(stub).await?;
    let refs = serve_refs().await?;
    // One generate instance, with the concurrency the sizing rule gives its share (as Cloud Run's
    // max_instance_request_concurrency would cap it).
    let concurrency = Pacing::share_of(ipm, 1, Duration::from_secs(60)).pushes_in_flight();
    let setting = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let topology = Topology::start(TopologyOptions {
        push_concurrency: concurrency,
        // The emulator's own push keeps about two pushes in flight; Pub/Sub's grows its window to
        // what generate absorbs. Pull, and push at the sizing rule's concurrency.
        pull_pushes: true,
        extra_env: vec![
            setting("ASSETGEN_MAX_ROWS", "1000"),
            setting("ASSETGEN_DAILY_LIMIT_USD", "1000"),
            setting("GEMINI_API_KEY", "bench-key"),
            setting("GEMINI_BASE_URL", &gemini),
            setting("ASSETGEN_GEMINI_IPM", &ipm.to_string()),
            setting("ASSETGEN_GEMINI_INSTANCES", "1"),
        ],
        ..TopologyOptions::default()
    })
    .await?;
    let user = topology.user_token(OWNER);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let submit = client.post(format!("{}/v1/batches", topology.submit.base)).bearer_auth(&user);
    let accepted = submit_live(submit, rows_n, &refs).await?;
    let id = accepted["batch_id"].as_str().context("batch id")?.to_owned();
    let images = accepted["estimate"]["images"].as_u64().context("estimate")?;
    let ideal = Duration::from_secs_f64(images as f64 * 60.0 / f64::from(ipm));
    let events = format!("{}/v1/batches/{id}/events", topology.relay.base);
    let done = until_done(&client, &events, Some(&user), ideal * 4 + Duration::from_secs(180)).await?;
    let took = started.elapsed();
    let rss: f64 = [&topology.submit, &topology.generate, &topology.relay]
        .iter()
        .map(|f| peak_rss_mib(f.pid()))
        .sum::<anyhow::Result<f64>>()?;
    measured("functions", rows_n, ipm, images, &done, took, started, &stats, rss)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut latency_scale = 1.0;
    let (mut serve, mut functions) = (true, true);
    let mut runs: Vec<(usize, u32)> = Vec::new();
    let mut repeat = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--latency-scale" => {
                latency_scale = args.next().context("--latency-scale needs a number")?.parse()?;
            }
            "--run" => {
                let run = args.next().context("--run needs ROWSxIPM")?;
                let (rows, ipm) = run.split_once('x').context("--run ROWSxIPM, e.g. 100x600")?;
                runs.push((rows.parse()?, ipm.parse()?));
            }
            "--repeat" => repeat = args.next().context("--repeat needs a number")?.parse()?,
            "--only" => match args.next().as_deref() {
                Some("serve") => functions = false,
                Some("functions") => serve = false,
                other => bail!("--only serve|functions, not {other:?}"),
            },
            other => bail!(
                "unknown argument {other:?}; usage: pacebench [--latency-scale F] [--only serve|functions] [--run ROWSxIPM]... [--repeat N]"
            ),
        }
    }
    println!(
        "pacing to the quota: assetgen serve --live (release, file store) and the three functions (release, \
         fake-gcs-server, Pub/Sub emulator, OIDC); Gemini stub with an IPM quota and log-normal latency \
         (median 3 s, p95 10 s, × {latency_scale}); peak RSS of the functions is their sum"
    );
    println!(
        "| path | rows / images | IPM | time ÷ ideal | calls answered 429 | call p50 / p95 / max | image done p50 / p95 / last | last call sent | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    if runs.is_empty() {
        runs = RUNS.to_vec();
    }
    let mut plan: Vec<(bool, usize, u32)> = Vec::new();
    for _ in 0..repeat {
        for &(rows, ipm) in &runs {
            if serve {
                plan.push((false, rows, ipm));
            }
        }
        for &(rows, ipm) in &runs {
            if functions {
                plan.push((true, rows, ipm));
            }
        }
    }
    for (on_functions, rows, ipm) in plan {
        let run = if on_functions {
            functions_run(rows, ipm, latency_scale).await
        } else {
            serve_run(rows, ipm, latency_scale).await
        };
        let m = match run {
            Ok(m) => m,
            Err(e) => {
                let path = if on_functions { "functions" } else { "serve" };
                println!("| {path} | {rows} rows | {ipm} | failed: {e:#} | | | | | |");
                continue;
            }
        };
        let ideal = m.images as f64 * 60.0 / f64::from(m.ipm);
        println!(
            "| {} | {} / {} | {} | {:.1} s ÷ {:.1} s = {:.3} | {} of {} ({:.2} %) | {:.2} / {:.2} / {:.1} s | {:.1} / {:.1} / {:.1} s | {:.1} s | {:.1} MiB |",
            m.path,
            m.rows,
            m.images,
            m.ipm,
            m.took.as_secs_f64(),
            ideal,
            m.took.as_secs_f64() / ideal,
            m.refused,
            m.calls,
            100.0 * m.refused as f64 / m.calls.max(1) as f64,
            m.call_p50,
            m.call_p95,
            m.call_max,
            m.done_p50,
            m.done_p95,
            m.done_last,
            m.last_call,
            m.rss_mib
        );
    }
    Ok(())
}
