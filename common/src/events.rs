//! The progress stream's events (`GET /v1/batches/{id}/events`), shared by the relay that sends
//! them and the clients (CLI, page) that read them.
//!
//! Wire form, one SSE event each: `event: snapshot|row|batch|done`, `id: <cursor>`, `data: <JSON>`.
//! - `snapshot` ([`crate::api::BatchView`]): once on connect, unless resuming.
//! - `row` ([`crate::api::RowView`]): a row's state changed.
//! - `batch` ([`crate::api::BatchProgress`]): the totals changed.
//! - `done` ([`crate::api::BatchView`]): every row ended; the server closes the stream after it.
//!
//! The id is a [`Cursor`]: what the client has been sent, so a resume sends exactly the rows whose
//! state is newer than that — nothing lost, nothing sent twice. It does not assume that writes to
//! different rows become visible in generation order (GCS generations are timestamps, and a
//! concurrent writer's lower one can appear after a higher one): it is a watermark below which
//! every state is settled and sent, plus the rows sent above it.

use crate::api::{BatchProgress, BatchView, RowView};
use crate::store::Generation;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
///
/// The client has, for every row, the newest state whose generation is at or below `low`, and for
/// each row in `above` the state at that generation. Wire form: `LOW`, then `~ROW:DELTA` for each
/// row above it (`DELTA` = generation − `LOW`), e.g. `1732791234567890~12:340112~40:512007`; where
/// writes become visible in order (the file and memory stores) `above` stays empty and the id is
/// one number, as before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub low: Generation,
    pub above: BTreeMap<u32, Generation>,
}

/// Rows a cursor may name above its watermark; a longer id is not ours.
const MAX_ABOVE: usize = 10_000;

impl Cursor {
    /// A cursor that names no row above `low`.
    pub fn at(low: Generation) -> Self {
        Self { low, above: BTreeMap::new() }
    }

    /// Whether a client at this cursor already has `row` at `generation` (or newer).
    pub fn covers(&self, row: u32, generation: Generation) -> bool {
        generation <= self.low || self.above.get(&row).is_some_and(|g| *g >= generation)
    }

    /// Reads an id back; `None` for anything this server did not write.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split('~');
        let low: Generation = parts.next()?.parse().ok().filter(|g| *g >= 0)?;
        let mut above = BTreeMap::new();
        for part in parts {
            let (row, delta) = part.split_once(':')?;
            let delta: Generation = delta.parse().ok().filter(|d| *d > 0)?;
            above.insert(row.parse().ok()?, low.checked_add(delta)?);
            if above.len() > MAX_ABOVE {
                return None;
            }
        }
        Some(Self { low, above })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.low)?;
        for (row, generation) in &self.above {
            write!(f, "~{row}:{}", generation - self.low)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote() {
        let plain = Cursor::at(1_732_791_234_567_890);
        assert_eq!(plain.to_string(), "1732791234567890");
        let mut above = Cursor::at(100);
        above.above.insert(12, 150);
        above.above.insert(3, 101);
        assert_eq!(above.to_string(), "100~3:1~12:50");
        for c in [plain, above, Cursor::default()] {
            assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        }
    }

    #[test]
    fn a_cursor_covers_what_it_names_and_nothing_newer() {
        let c = Cursor::parse("100~3:1~12:50").expect("parses");
        assert!(c.covers(7, 100) && c.covers(7, 5), "everything at or below the watermark");
        assert!(!c.covers(7, 101), "a row above it that the cursor does not name");
        assert!(c.covers(12, 150) && c.covers(12, 120), "a named row up to its generation");
        assert!(!c.covers(12, 151), "but not a newer state of it");
    }

    #[test]
    fn ids_this_server_did_not_write_are_refused() {
        for raw in ["", "x", "-5", "10~", "10~3", "10~3:0", "10~3:-1", "10~x:1", "10~3:1:2", "9223372036854775807~1:1"]
        {
            assert_eq!(Cursor::parse(raw), None, "{raw:?}");
        }
    }
}
