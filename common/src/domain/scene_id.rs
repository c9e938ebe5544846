use super::ParseError;
use serde::{Deserialize, Serialize};

/// A row's stable name, chosen by the user. It becomes part of object names
/// (`images/{batch}/{scene_id}-v{n}.png`), so it is restricted to characters that are safe there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SceneId(String);

impl SceneId {
    pub const MAX_LEN: usize = 64;

    /// Exactly [`Self::PATTERN`]: nothing is trimmed, so the wire and `/openapi.json` agree.
    pub const PATTERN: &'static str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$";

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw;
        if s.is_empty() {
            return Err(ParseError("scene_id is empty".into()));
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseError(format!("scene_id is {} characters long; the limit is {}", s.len(), Self::MAX_LEN)));
        }
        if s.starts_with('.') {
            return Err(ParseError(format!("scene_id {s:?} starts with '.'")));
        }
        if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
            return Err(ParseError(format!("scene_id {s:?} contains {bad:?}; use letters, digits, '-', '_' or '.'")));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SceneId {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SceneId> for String {
    fn from(value: SceneId) -> Self {
        value.0
    }
}

impl std::fmt::Display for SceneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sheet_style_ids_exactly() {
        assert_eq!(SceneId::parse("BATCH-001").map(|s| s.to_string()), Ok("BATCH-001".into()));
        assert!(SceneId::parse("hero_shot.v2").is_ok());
        assert!(SceneId::parse(" BATCH-001 ").is_err(), "clients trim; the wire does not");
    }

    #[test]
    fn the_pattern_says_what_parse_accepts() {
        let pattern = regex::Regex::new(SceneId::PATTERN).expect("pattern");
        for s in
            ["a", "A-1", "_x", "-", "a.b", &"x".repeat(64), "", " a", "a ", ".a", "a/b", "é", &"x".repeat(65), "a\n"]
        {
            assert_eq!(pattern.is_match(s), SceneId::parse(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn refuses_what_would_escape_an_object_name() {
        for bad in ["", "  ", "../etc", "a/b", ".hidden", "a b", "é", &"x".repeat(65)] {
            assert!(SceneId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn deserializing_validates_too() {
        assert!(serde_json::from_str::<SceneId>("\"a/b\"").is_err());
        assert!(serde_json::from_str::<SceneId>("\"ok-1\"").is_ok());
    }
}
