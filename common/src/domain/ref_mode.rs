use super::ParseError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How the model should use the reference images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefMode {
    /// Palette, lighting and texture only; the composition comes from the prompt.
    #[default]
    StyleOnly,
    /// Follow the references' layout and framing as well as their style.
    StyleAndComposition,
}

impl RefMode {
    /// The wire's spelling, exactly: `style_only` or `style_and_composition`.
    pub fn from_wire(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "style_only" => Ok(Self::StyleOnly),
            "style_and_composition" => Ok(Self::StyleAndComposition),
            other => Err(ParseError(format!("ref_mode {other:?} is not style_only or style_and_composition"))),
        }
    }

    /// The wire's spelling of this mode.
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::StyleOnly => "style_only",
            Self::StyleAndComposition => "style_and_composition",
        }
    }

    /// A person's spelling (`Composition`, `style only`, empty for the default): what clients
    /// normalize before sending.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw.trim().to_ascii_lowercase().replace(['-', ' '], "_").as_str() {
            "" | "style_only" | "style" => Ok(Self::StyleOnly),
            "style_and_composition" | "style_composition" | "composition" => Ok(Self::StyleAndComposition),
            other => Err(ParseError(format!("ref_mode {other:?} is not style_only or style_and_composition"))),
        }
    }

    /// The instruction added to the prompt when the row has references.
    pub fn instruction(self) -> &'static str {
        match self {
            Self::StyleOnly => {
                "Use the attached reference images only for style: palette, lighting, texture and rendering. Do not copy their composition or subjects."
            }
            Self::StyleAndComposition => {
                "Follow the attached reference images for both style and composition: keep their framing, layout and camera angle."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sheet_spellings() {
        assert_eq!(RefMode::parse(""), Ok(RefMode::StyleOnly));
        assert_eq!(RefMode::parse("Style and composition"), Ok(RefMode::StyleAndComposition));
        assert!(RefMode::parse("collage").is_err());
    }
}
