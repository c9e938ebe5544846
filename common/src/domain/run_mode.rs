use super::ParseError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether images come from the real model (and cost money) or from the labelled placeholder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    #[default]
    DryRun,
    Live,
}

impl RunMode {
    /// The wire's spelling, exactly: `dry_run` or `live` (what `/openapi.json` states).
    pub fn from_wire(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "dry_run" => Ok(Self::DryRun),
            "live" => Ok(Self::Live),
            other => Err(ParseError(format!("run_mode {other:?} is not dry_run or live"))),
        }
    }

    /// A person's spelling (`Dry-Run`, `dry`): what clients normalize before sending.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "dry_run" | "dry" => Ok(Self::DryRun),
            "live" => Ok(Self::Live),
            other => Err(ParseError(format!("run_mode {other:?} is not dry_run or live"))),
        }
    }
}
