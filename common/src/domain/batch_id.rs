use super::ParseError;
use serde::{Deserialize, Serialize};

/// A batch's id: a UUIDv7, so ids sort by creation time in bucket listings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchId(uuid::Uuid);

impl BatchId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        uuid::Uuid::try_parse(raw.trim()).map(Self).map_err(|_| ParseError(format!("{raw:?} is not a batch id")))
    }
}

impl Default for BatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for BatchId {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<BatchId> for String {
    fn from(value: BatchId) -> Self {
        value.0.to_string()
    }
}
