//! The progress stream's events (`GET /v1/batches/{id}/events`), shared by the relay that sends
//! them and the clients (CLI, page) that read them.
//!
//! Wire form, one SSE event each: `event: snapshot|row|batch|done`, `id: <cursor>`, `data: <JSON>`.
//! - `snapshot` ([`crate::api::BatchView`]): once on connect, unless resuming.
//! - `row` ([`crate::api::RowView`]): a row's state changed.
//! - `batch` ([`crate::api::BatchProgress`]): the totals changed.
//! - `done` ([`crate::api::BatchView`]): every row ended; the server closes the stream after it.
//!
//! The id is a cursor: the highest row-state generation the client has been sent. Row states are
//! written with strictly increasing generations, so resuming from cursor `c` means "every row whose
//! state generation is above `c`": nothing lost, nothing sent twice.

use crate::api::{BatchProgress, BatchView, RowView};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum BatchEvent {
    Snapshot(BatchView),
    Row(RowView),
    Batch(BatchProgress),
    Done(BatchView),
}

impl BatchEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Snapshot(_) => "snapshot",
            Self::Row(_) => "row",
            Self::Batch(_) => "batch",
            Self::Done(_) => "done",
        }
    }

    /// The JSON of the `data:` line.
    pub fn data_json(&self) -> String {
        let json = match self {
            Self::Snapshot(v) | Self::Done(v) => serde_json::to_string(v),
            Self::Row(r) => serde_json::to_string(r),
            Self::Batch(b) => serde_json::to_string(b),
        };
        json.unwrap_or_else(|_| "{}".to_owned())
    }

    /// Parses an SSE event back (what a client does with `event:` and `data:`).
    pub fn parse(event: &str, data: &str) -> Result<Self, serde_json::Error> {
        Ok(match event {
            "snapshot" => Self::Snapshot(serde_json::from_str(data)?),
            "row" => Self::Row(serde_json::from_str(data)?),
            "batch" => Self::Batch(serde_json::from_str(data)?),
            "done" => Self::Done(serde_json::from_str(data)?),
            other => return Err(serde::de::Error::custom(format!("unknown event {other:?}"))),
        })
    }
}

/// A stream cursor: the `id:` of an event and the `Last-Event-ID` of a resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn parse(raw: &str) -> Option<Self> {
        raw.trim().parse().ok().map(Self)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
