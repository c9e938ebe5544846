use super::ParseError;
use serde::{Deserialize, Serialize};

/// How many images to make for a row: 1, 2 or 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct Variants(u8);

impl Variants {
    pub const MAX: u8 = 3;

    pub fn parse(n: i64) -> Result<Self, ParseError> {
        match u8::try_from(n) {
            Ok(v @ 1..=Self::MAX) => Ok(Self(v)),
            _ => Err(ParseError(format!("variants is {n}; ask for 1 to {}", Self::MAX))),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// The variant numbers, 1-based as users count them.
    pub fn numbers(self) -> impl Iterator<Item = u8> {
        1..=self.0
    }
}

impl TryFrom<i64> for Variants {
    type Error = ParseError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Variants> for u8 {
    fn from(value: Variants) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_three() {
        assert!(Variants::parse(0).is_err());
        assert_eq!(Variants::parse(3).map(|v| v.numbers().collect::<Vec<_>>()), Ok(vec![1, 2, 3]));
        assert!(Variants::parse(4).is_err());
        assert!(Variants::parse(-1).is_err());
        assert!(Variants::parse(256 + 1).is_err(), "must not wrap around");
    }
}
