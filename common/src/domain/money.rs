use serde::{Deserialize, Serialize};

/// An amount of US dollars in micro-dollars, so sums are exact (an image at $0.039 is 39 000).
/// Serialized as a plain number of dollars for people; stored and summed as integers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Self = Self(0);

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Dollars for display and JSON answers (never for arithmetic).
    pub fn usd(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    pub fn times(self, n: u64) -> Self {
        Self(self.0.saturating_mul(i64::try_from(n).unwrap_or(i64::MAX)))
    }
}

impl std::ops::Add for Money {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, |a, b| a + b)
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${:.3}", self.usd())
    }
}
