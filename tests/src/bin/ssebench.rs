//! `make bench`, relay part: 1,000 concurrent SSE clients on one batch against one `assetgen
//! serve` (its relay), while this driver updates the batch's 100 row states in the store itself
//! (so the server only relays). Reports the server's RSS and CPU, its store calls per second
//! (`ASSETGEN_STORE_STATS`), and the delivery latency from a state write to each client's event.
//!
//! `SSEBENCH_CLIENTS`, `SSEBENCH_ROWS` and `SSEBENCH_WRITE_EVERY_MS` change the load (defaults 1000,
//! 100, 50). `SSEBENCH_QUIET_SECS` waits that long after every client connected before the first
//! write, so the relay's tail has slowed down (it does after 10 s without a change): the first
//! write's latency is then reported apart from the rest, which are the rows moving.

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

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

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
    let clients = setting("SSEBENCH_CLIENTS", 1000) as usize;
    let rows = setting("SSEBENCH_ROWS", 100) as usize;
    let write_every = Duration::from_millis(setting("SSEBENCH_WRITE_EVERY_MS", 50));
    let quiet = Duration::from_secs(setting("SSEBENCH_QUIET_SECS", 0));
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::open(&data)?);
    // The batch is written straight into the store, so nothing generates it but this driver.
    let rig = Rig::on(store.clone(), |p| p.limits.max_rows = rows);
    let batch = rig.submit_rows((0..rows).map(|i| row(&format!("S{i:03}"), 1)).collect()).await;

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
    // Read stdout to its end: serve prints more after its URL, and a closed pipe would kill it.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("assetgen is listening on ") {
                let _ = url_tx.send(url.trim_end_matches('/').to_owned());
            }
        }
    });
    let base = url_rx.recv_timeout(Duration::from_secs(60)).context("no URL")?;
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
    let latencies: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, events, written, latencies, connected) =
            (client.clone(), events.clone(), written.clone(), latencies.clone(), connected.clone());
        tasks.push(tokio::spawn(async move {
            // The batch is the test kit's user's: anyone else gets 404 (dev auth trusts this header).
            let response =
                client.get(&events).header("x-assetgen-user", "artist@studio.test").send().await?.error_for_status()?;
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
                                latencies.lock().expect("lock").push((row, now - *at));
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
    if tokio::time::timeout(Duration::from_secs(60), connected.acquire_many(clients as u32)).await.is_err() {
        let failed = tasks.iter().position(|t| t.is_finished());
        if let Some(task) = failed.map(|i| tasks.swap_remove(i)) {
            task.await??;
        }
        bail!("clients did not all connect within 60 s");
    }
    tokio::time::sleep(quiet).await;
    let (rss_idle, ticks_start) = proc_stat(pid)?;
    let started = Instant::now();
    let calls_before = calls.lock().expect("lock").last().copied();

    for i in 0..rows as u32 {
        let name = layout::row_state(&batch, i);
        written.lock().expect("lock").insert(u64::from(i), Instant::now());
        update_json::<RowState, StoreError, _>(store.as_ref(), &name, |s| {
            let mut next = s.clone();
            next.status = RowStatus::Succeeded;
            next.updated_at = time::OffsetDateTime::now_utc();
            Ok(Some(next))
        })
        .await?;
        tokio::time::sleep(write_every).await;
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

    let all = latencies.lock().expect("lock").clone();
    // After a quiet spell the first write waits for the slowed-down tail's next look, and so do the
    // writes made before that look (the snap back): both apart from the rows moving after it.
    let written = written.lock().expect("lock").clone();
    let first_seen = all.iter().filter(|(row, _)| *row == 0).map(|(_, l)| written[&0] + *l).min();
    let snap_back = |row: u64| quiet > Duration::ZERO && first_seen.is_none_or(|seen| written[&row] < seen);
    let first: Vec<Duration> = all.iter().filter(|(row, _)| snap_back(*row)).map(|l| l.1).collect();
    let caught = all.iter().filter(|(row, _)| snap_back(*row)).map(|(row, _)| *row).max();
    let mut lat: Vec<Duration> = all.iter().filter(|(row, _)| !snap_back(*row)).map(|l| l.1).collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let clk = 100.0; // USER_HZ on Linux
    let cpu = (ticks_end - ticks_start) as f64 / clk / elapsed.as_secs_f64() * 100.0;
    println!(
        "relay load driver: {clients} SSE clients on one batch, {rows} row updates {} ms apart, after {} s quiet (release, file store, loopback)",
        write_every.as_millis(),
        quiet.as_secs()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| row events delivered | {} of {} |", all.len(), clients * rows);
    if let (Some(max), Some(last)) = (first.iter().max(), caught) {
        println!(
            "| the snap back: rows 0..={last} written before the tail's first look after the quiet, worst | {:.0} ms |",
            max.as_secs_f64() * 1e3
        );
    }
    println!(
        "| delivery latency while rows move, p50 / p95 / max | {:.0} ms / {:.0} ms / {:.0} ms |",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
    println!(
        "| server RSS with {clients} clients connected / at the end | {:.1} MiB / {:.1} MiB |",
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
