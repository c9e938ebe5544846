use super::ParseError;
use serde::{Deserialize, Serialize};

/// What to draw: trimmed, not empty, at most [`Prompt::parse`]'s `max_chars` characters, and free of
/// control characters other than newlines and tabs (Sheets cells sometimes carry them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Prompt(String);

impl Prompt {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, ParseError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ParseError("prompt is empty".into()));
        }
        let chars = s.chars().count();
        if chars > max_chars {
            return Err(ParseError(format!("prompt is {chars} characters long; the limit is {max_chars}")));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
            return Err(ParseError("prompt contains control characters".into()));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds() {
        assert_eq!(Prompt::parse("  a cat  ", 10).map(|p| p.as_str().to_owned()), Ok("a cat".into()));
        assert!(Prompt::parse("   ", 10).is_err());
        assert!(Prompt::parse("ééééé", 5).is_ok(), "the limit counts characters, not bytes");
        assert!(Prompt::parse("abcdef", 5).is_err());
        assert!(Prompt::parse("bell\u{7}", 50).is_err());
        assert!(Prompt::parse("two\nlines", 50).is_ok());
    }
}
