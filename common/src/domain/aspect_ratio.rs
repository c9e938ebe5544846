use super::ParseError;
use serde::{Deserialize, Serialize};

/// One of the aspect ratios the Gemini image models accept in `imageConfig.aspectRatio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AspectRatio {
    w: u8,
    h: u8,
}

impl AspectRatio {
    pub const SUPPORTED: [(u8, u8); 10] =
        [(1, 1), (2, 3), (3, 2), (3, 4), (4, 3), (4, 5), (5, 4), (9, 16), (16, 9), (21, 9)];

    /// The wire's spelling, exactly one of [`Self::SUPPORTED`] written `w:h`.
    pub fn from_wire(raw: &str) -> Result<Self, ParseError> {
        Self::parse(raw)
            .ok()
            .filter(|r| r.to_string() == raw)
            .ok_or_else(|| ParseError(format!("aspect_ratio {raw:?} is not supported")))
    }

    /// Every supported ratio as the wire spells it.
    pub fn wire_values() -> Vec<String> {
        Self::SUPPORTED.iter().map(|&(w, h)| format!("{w}:{h}")).collect()
    }

    /// A person's spelling (`16 : 9`): what clients normalize before sending.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let refuse = || ParseError(format!("aspect_ratio {raw:?} is not supported"));
        let (w, h) = raw.trim().split_once(':').ok_or_else(refuse)?;
        let (w, h) = (w.trim().parse().map_err(|_| refuse())?, h.trim().parse().map_err(|_| refuse())?);
        if Self::SUPPORTED.contains(&(w, h)) { Ok(Self { w, h }) } else { Err(refuse()) }
    }

    /// Pixel size of a placeholder whose long side is `long_side`.
    pub fn dimensions(self, long_side: u32) -> (u32, u32) {
        let (w, h) = (u32::from(self.w), u32::from(self.h));
        if w >= h { (long_side, (long_side * h / w).max(1)) } else { ((long_side * w / h).max(1), long_side) }
    }
}

impl Default for AspectRatio {
    fn default() -> Self {
        Self { w: 1, h: 1 }
    }
}

impl std::fmt::Display for AspectRatio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.w, self.h)
    }
}

impl TryFrom<String> for AspectRatio {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AspectRatio> for String {
    fn from(value: AspectRatio) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_and_sizes() {
        let r = AspectRatio::parse("16:9").expect("supported");
        assert_eq!(r.to_string(), "16:9");
        assert_eq!(r.dimensions(512), (512, 288));
        assert_eq!(AspectRatio::parse("9:16").map(|r| r.dimensions(512)), Ok((288, 512)));
        assert!(AspectRatio::parse("7:5").is_err());
        assert!(AspectRatio::parse("wide").is_err());
    }
}
