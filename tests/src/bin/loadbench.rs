//! `make bench`: drives a release `assetgen serve` on loopback and prints the figures issue #3 asks
//! for — submit latency p50/p95 for 10- and 100-row batches, time from submit to `done` for the
//! 100-row dry run, and the server's idle RSS. Bounded: a fixed number of requests, then it stops.

use anyhow::{Context, bail};
use assetgen_tests::events::until_done;
use assetgen_tests::{acceptance_rows, release_binary, serve_refs, spawn_serve};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SUBMITS_10: usize = 40;
const SUBMITS_100: usize = 10;
const DONE_RUNS: usize = 3;
/// A dry run of 100 rows ends in seconds; this only bounds a run that hangs.
const DONE_WITHIN: Duration = Duration::from_secs(300);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

async fn submit(client: &reqwest::Client, base: &str, rows: &[Value]) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let response = client.post(format!("{base}/v1/batches")).json(&json!({"rows": rows})).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    let took = started.elapsed();
    if status.as_u16() != 202 {
        bail!("submit answered {status}: {body}");
    }
    Ok((took, body))
}

async fn latency(client: &reqwest::Client, base: &str, rows: &[Value], n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let (t, body) = submit(client, base, rows).await?;
        took.push(t);
        // Let each batch finish so every submit meets the same, idle server.
        let events = body["links"]["events"].as_str().context("events link")?;
        until_done(client, events, None, DONE_WITHIN).await?;
    }
    took.sort();
    Ok(took)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let refs = serve_refs().await?;
    let server = spawn_serve(
        &release_binary()?,
        dir.path(),
        &[("ASSETGEN_MAX_ROWS", "100"), ("ASSETGEN_ALLOW_PRIVATE_REFS", "true")],
    )?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_kib(pid)?;
    let client = reqwest::Client::new();

    let ten = acceptance_rows(10, &refs);
    let hundred = acceptance_rows(100, &refs);
    let lat10 = latency(&client, &server.base, &ten, SUBMITS_10).await?;
    let lat100 = latency(&client, &server.base, &hundred, SUBMITS_100).await?;

    let mut to_done = Vec::new();
    for _ in 0..DONE_RUNS {
        let started = Instant::now();
        let (_, body) = submit(&client, &server.base, &hundred).await?;
        let events = body["links"]["events"].as_str().context("events link")?;
        let done = until_done(&client, events, None, DONE_WITHIN).await?;
        to_done.push(started.elapsed());
        if done["totals"]["images_done"] != 199 {
            bail!("a 100-row run ended with {} images", done["totals"]["images_done"]);
        }
    }
    to_done.sort();
    let loaded_rss = rss_kib(pid)?;

    println!("assetgen load driver (release build, dry-run model, file store, loopback)");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| submit latency, 10 rows ({SUBMITS_10} submits) p50 / p95 | {:.1} ms / {:.1} ms |",
        ms(percentile(&lat10, 0.5)),
        ms(percentile(&lat10, 0.95))
    );
    println!(
        "| submit latency, 100 rows ({SUBMITS_100} submits) p50 / p95 | {:.1} ms / {:.1} ms |",
        ms(percentile(&lat100, 0.5)),
        ms(percentile(&lat100, 0.95))
    );
    println!(
        "| submit → done, 100 rows / 199 images ({DONE_RUNS} runs) median / worst | {:.2} s / {:.2} s |",
        to_done[DONE_RUNS / 2].as_secs_f64(),
        to_done[DONE_RUNS - 1].as_secs_f64()
    );
    println!(
        "| RSS of assetgen serve: idle / after the runs | {:.1} MiB / {:.1} MiB |",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
