//! The Gemini Batch API stub (`assetgen_tests::bulk_stub`) as a process, for the tests written in
//! other languages (the Sheet's, `apps-script/tests/`): the same stub, speaking the wire format the
//! Rust tests check against the SDK's captured requests. Prints `bulk stub listening on URL` and
//! serves until it is killed.
//!
//! ```text
//! bulkstub [--polls-before-end N] [--fail-marker TEXT] [--results-as-file]
//! ```

use anyhow::{Context, bail};
use assetgen_tests::bulk_stub::{BulkOutcome, BulkStubConfig, serve_bulk_gemini};
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "bulkstub [--polls-before-end N] [--fail-marker TEXT] [--results-as-file]";

fn config() -> anyhow::Result<BulkStubConfig> {
    let mut config = BulkStubConfig {
        polls_before_end: 2,
        outcome: BulkOutcome::Succeed,
        fail_marker: String::new(),
        results_as_file: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--polls-before-end" => {
                let n = args.next().context("--polls-before-end needs a number")?;
                config.polls_before_end = n.parse().with_context(|| format!("--polls-before-end {n:?}"))?;
            }
            "--fail-marker" => config.fail_marker = args.next().context("--fail-marker needs a text")?,
            "--results-as-file" => config.results_as_file = true,
            other => bail!("unknown argument {other:?}; usage: {USAGE}"),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkstub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let stub = serve_bulk_gemini(config()?).await?;
    println!("bulk stub listening on {}", stub.base);
    std::io::stdout().flush()?;
    // Serves until killed (the tests start it with stdin closed, so it cannot wait on that).
    std::future::pending::<()>().await;
    Ok(())
}
