use super::ParseError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether images come from the real model (and cost money) or from the labelled placeholder; and
/// whether the real model is called image by image (`live`) or through Gemini's Batch API
/// (`bulk`: half the price, its own limits, results within a day).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    #[default]
    DryRun,
    Live,
    Bulk,
}

impl RunMode {
    /// The wire's spelling, exactly: `dry_run`, `live` or `bulk` (what `/openapi.json` states).
    pub fn from_wire(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "dry_run" => Ok(Self::DryRun),
            "live" => Ok(Self::Live),
            "bulk" => Ok(Self::Bulk),
            other => Err(ParseError(format!("run_mode {other:?} is not dry_run, live or bulk"))),
        }
    }

    /// A person's spelling (`Dry-Run`, `dry`): what clients normalize before sending.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "dry_run" | "dry" => Ok(Self::DryRun),
            "live" => Ok(Self::Live),
            "bulk" | "batch" => Ok(Self::Bulk),
            other => Err(ParseError(format!("run_mode {other:?} is not dry_run, live or bulk"))),
        }
    }

    /// Whether a batch of this mode holds, spends and settles money.
    pub fn costs_money(self) -> bool {
        !matches!(self, Self::DryRun)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DryRun => "dry_run",
            Self::Live => "live",
            Self::Bulk => "bulk",
        }
    }
}
