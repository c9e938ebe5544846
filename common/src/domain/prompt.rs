use super::ParseError;
use serde::{Deserialize, Serialize};

/// What to draw: trimmed, not empty, at most [`Prompt::parse`]'s `max_chars` characters, and free of
/// control characters other than newlines and tabs (Sheets cells sometimes carry them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Prompt(String);

impl Prompt {
    /// What [`Self::parse`] accepts, for `/openapi.json` (with `maxLength` for the limit): no
    /// control character but tab, line feed and carriage return, and at least one character that
    /// is neither a control nor white space (Unicode `White_Space`, what `str::trim` removes). The
    /// characters are written literally, so Rust, Python and ECMAScript read the classes alike.
    pub fn pattern() -> String {
        let controls = "\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{7f}-\u{9f}";
        let blank = "\u{0}-\u{20}\u{7f}-\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}";
        format!("^[^{controls}]*[^{blank}][^{controls}]*$")
    }

    /// The limit counts the characters as sent (surrounding white space included); the prompt
    /// kept is trimmed.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, ParseError> {
        let chars = raw.chars().count();
        if chars > max_chars {
            return Err(ParseError(format!("prompt is {chars} characters long; the limit is {max_chars}")));
        }
        if raw.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
            return Err(ParseError("prompt contains control characters".into()));
        }
        let s = raw.trim();
        if s.is_empty() {
            return Err(ParseError("prompt is empty".into()));
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
        assert!(Prompt::parse(" abcde ", 6).is_err(), "the limit counts what was sent");
    }

    #[test]
    fn the_pattern_says_what_parse_accepts() {
        let pattern = regex::Regex::new(&Prompt::pattern()).expect("pattern");
        for s in [
            "a",
            " a ",
            "\ta\n",
            "",
            " ",
            "\n\t\r",
            "\u{a0}\u{3000}",
            "\u{85}",
            "a\u{7}",
            "a\u{9f}b",
            "\u{feff}",
            "\u{180e}",
            "é",
            "\u{1f600}",
            "a\u{0}",
        ] {
            assert_eq!(pattern.is_match(s), Prompt::parse(s, 100).is_ok(), "{s:?}");
        }
    }
}
