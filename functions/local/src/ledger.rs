//! `assetgen ledger compact|check --date D`: work on the store `ASSETGEN_STORE` names directly.

use anyhow::Context;
use assetgen_common::config::{Config, Profile};
use assetgen_common::{ledger, reconcile};
use std::process::ExitCode;
use time::Date;
use time::macros::format_description;

#[derive(Debug, clap::Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Write the day's events to ledger/{DATE}.jsonl.
    Compact(DateArg),
    /// Reconcile the day's ledger with the budget objects and the stored images; exits 1 on any difference.
    Check(DateArg),
}

#[derive(Debug, clap::Args)]
struct DateArg {
    /// The UTC day, YYYY-MM-DD (default: today).
    #[arg(long, value_parser = parse_date)]
    date: Option<Date>,
}

fn parse_date(raw: &str) -> Result<Date, String> {
    Date::parse(raw, format_description!("[year]-[month]-[day]")).map_err(|e| format!("{raw:?} is not YYYY-MM-DD: {e}"))
}

pub async fn run(args: LedgerArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_env(Profile::Local).context("configuration")?;
    let store = assetgen_common::cloud::store(&config).await?;
    let today = time::OffsetDateTime::now_utc().date();
    match args.action {
        Action::Compact(d) => {
            let day = d.date.unwrap_or(today);
            let n = ledger::compact(store.as_ref(), day).await?;
            println!("wrote {n} events to {}", ledger::compacted_name(day));
            Ok(ExitCode::SUCCESS)
        }
        Action::Check(d) => {
            let day = d.date.unwrap_or(today);
            let report = reconcile::check(store.as_ref(), day).await?;
            println!(
                "{day}: {} events over {} batches; reserved {}, spent {}, released {}",
                report.events, report.batches, report.reserved, report.spent, report.released
            );
            if report.is_clean() {
                println!("ledger and budget reconcile to the cent");
                Ok(ExitCode::SUCCESS)
            } else {
                for d in &report.differences {
                    println!("DIFFERENCE: {d}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
