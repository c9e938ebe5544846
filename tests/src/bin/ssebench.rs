//! `make bench`, relay part: 1,000 concurrent SSE clients on one batch against one `assetgen
//! serve` (its relay), while this driver updates the batch's 100 row states in the store itself
//! (so the server only relays). Reports the server's RSS and CPU, its store calls per second
//! (`ASSETGEN_STORE_STATS`), and the delivery latency from a state write to each client's event.

use anyhow::{Context, bail};
use assetgen_common::api::RowStatus;
use assetgen_common::layout;
use assetgen_common::state::RowState;
use assetgen_common::store::{FileStore, ObjectStore, StoreError, update_json};
use assetgen_common::testkit::{Rig, row};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 1000;
const ROWS: usize = 100;
const WRITE_EVERY: Duration = Duration::from_millis(50);

fn proc_stat(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("VmRSS")?
        .parse()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?; // utime + stime
    Ok((rss, ticks))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(&data)?);
    // The batch is written straight into the store, so nothing generates it but this driver.
    let rig = Rig::on(store.clone(), |p| p.limits.max_rows = ROWS);
    let batch = rig.submit_rows((0..ROWS).map(|i| row(&format!("S{i:03}"), 1)).collect()).await;

    let binary = assetgen_tests::release_binary()?;
    let mut child = Command::new(binary)
        .args(["serve", "--port", "0"])
        .env("ASSETGEN_STORE", format!("file://{}", data.display()))
        .env("ASSETGEN_STORE_STATS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().context("stdout")?;
    let base = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("assetgen is listening on ").map(|u| u.trim_end_matches('/').to_owned()))
        .context("no URL")?;
    let calls: Arc<Mutex<Vec<(Instant, u64, u64)>>> = Arc::default();
    let stderr = child.stderr.take().context("stderr")?;
    let seen = calls.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("store calls so far: ") {
                let num = |k: &str| {
                    rest.split_whitespace().find_map(|p| p.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap_or(0)
                };
                seen.lock().expect("lock").push((Instant::now(), num("gets="), num("lists=")));
            }
        }
    });

    let events = format!("{base}/v1/batches/{batch}/events");
    let written: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, events, written, latencies, connected) =
            (client.clone(), events.clone(), written.clone(), latencies.clone(), connected.clone());
        tasks.push(tokio::spawn(async move {
            let response = client.get(&events).send().await?;
            let mut stream = response.bytes_stream().eventsource();
            while let Some(event) = stream.next().await {
                let event = event?;
                match event.event.as_str() {
                    "snapshot" => connected.add_permits(1),
                    "row" => {
                        let now = Instant::now();
                        let data: serde_json::Value = serde_json::from_str(&event.data)?;
                        if data["status"] == "succeeded" {
                            let row = data["row"].as_u64().unwrap_or(0);
                            if let Some(at) = written.lock().expect("lock").get(&row) {
                                latencies.lock().expect("lock").push(now - *at);
                            }
                        }
                    }
                    "done" => return anyhow::Ok(()),
                    _ => {}
                }
            }
            bail!("stream ended before done")
        }));
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), connected.acquire_many(CLIENTS as u32))
        .await
        .context("clients did not all connect")??;
    let (rss_idle, ticks_start) = proc_stat(pid)?;
    let started = Instant::now();
    let calls_before = calls.lock().expect("lock").last().copied();

    for i in 0..ROWS as u32 {
        let name = layout::row_state(&batch, i);
        written.lock().expect("lock").insert(u64::from(i), Instant::now());
        update_json::<RowState, StoreError, _>(store.as_ref(), &name, |s| {
            let mut next = s.clone();
            next.status = RowStatus::Succeeded;
            next.updated_at = time::OffsetDateTime::now_utc();
            Ok(Some(next))
        })
        .await?;
        tokio::time::sleep(WRITE_EVERY).await;
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    let (rss_end, ticks_end) = proc_stat(pid)?;
    tokio::time::sleep(Duration::from_secs(10)).await; // one more stats line
    let calls_after = calls.lock().expect("lock").last().copied();
    let _ = child.kill();
    let _ = child.wait();

    let mut lat = latencies.lock().expect("lock").clone();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let clk = 100.0; // USER_HZ on Linux
    let cpu = (ticks_end - ticks_start) as f64 / clk / elapsed.as_secs_f64() * 100.0;
    println!(
        "relay load driver: {CLIENTS} SSE clients on one batch, {ROWS} row updates {} ms apart (release, file store, loopback)",
        WRITE_EVERY.as_millis()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| row events delivered | {} of {} |", lat.len(), CLIENTS * ROWS);
    println!(
        "| delivery latency p50 / p95 / max | {:.0} ms / {:.0} ms / {:.0} ms |",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
    println!(
        "| server RSS with {CLIENTS} clients connected / at the end | {:.1} MiB / {:.1} MiB |",
        rss_idle as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!("| server CPU during the {:.1} s of updates | {cpu:.0}% of one core |", elapsed.as_secs_f64());
    if let (Some((t0, g0, l0)), Some((t1, g1, l1))) = (calls_before, calls_after) {
        let secs = (t1 - t0).as_secs_f64().max(1.0);
        println!(
            "| store reads per second (lists + gets), over {secs:.0} s | {:.1} lists/s + {:.1} gets/s |",
            (l1 - l0) as f64 / secs,
            (g1 - g0) as f64 / secs
        );
    }
    Ok(())
}
