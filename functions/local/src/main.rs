//! `assetgen`: `serve` runs the whole pipeline in one process; the other commands are clients of
//! any deployment, local or cloud.

mod client;
mod ledger;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "assetgen", version, about = "Turn rows of a Sheet into images made by Gemini")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: client::ClientOptions,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run submit, generate and relay in one process, on the local store and queue.
    Serve(serve::ServeArgs),
    /// Compact or reconcile a day's ledger in the store ASSETGEN_STORE names.
    Ledger(ledger::LedgerArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Ledger(args) => ledger::run(args).await,
        Command::Client(command) => client::run(cli.client, command).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
