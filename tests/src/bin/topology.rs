//! Starts the cloud topology on loopback (submit, generate and relay as three processes with OIDC
//! on, fake-gcs-server, the Pub/Sub emulator; see `assetgen_tests::topology`), prints its URLs and
//! users' ID tokens as one JSON line on stdout, and keeps it up until stdin closes. The browser
//! tests (`web/tests/cloud.test.js`) drive it.
//!
//! ```text
//! topology [--push-concurrency N] [--env KEY=VALUE]...
//! ```

use anyhow::{Context, bail};
use assetgen_tests::topology::{Topology, TopologyOptions};
use std::io::{Read, Write};
use std::process::ExitCode;

fn options() -> anyhow::Result<TopologyOptions> {
    let mut options = TopologyOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--push-concurrency" => {
                let n = args.next().context("--push-concurrency needs a number")?;
                options.push_concurrency = n.parse().with_context(|| format!("--push-concurrency {n:?}"))?;
            }
            "--env" => {
                let pair = args.next().context("--env needs KEY=VALUE")?;
                let (key, value) = pair.split_once('=').with_context(|| format!("--env {pair:?} is not KEY=VALUE"))?;
                options.extra_env.push((key.to_owned(), value.to_owned()));
            }
            other => bail!("unknown argument {other:?}; usage: topology [--push-concurrency N] [--env KEY=VALUE]..."),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("topology: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let topology = Topology::start(options()?).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", topology.describe())?;
    stdout.flush()?;
    drop(stdout);
    // Up until the driver closes our stdin (or dies, which closes it too).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    drop(topology);
    Ok(())
}
