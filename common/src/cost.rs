//! What images cost. Prices are per generated image and per model, kept as exact micro-dollars.

use crate::api::{Estimate, ModelPrice};
use crate::domain::{Money, RunMode};
use std::collections::BTreeMap;

pub const DEFAULT_MODEL: &str = "gemini-2.5-flash-image";

/// The price list. Unknown models are refused at submit, so every accepted batch has a price.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable(BTreeMap<String, Money>);

impl Default for PriceTable {
    fn default() -> Self {
        Self(BTreeMap::from([
            (DEFAULT_MODEL.to_owned(), Money::from_micros(39_000)),
            ("gemini-3-pro-image-preview".to_owned(), Money::from_micros(134_000)),
        ]))
    }
}

impl PriceTable {
    pub fn with(mut self, model: impl Into<String>, per_image: Money) -> Self {
        self.0.insert(model.into(), per_image);
        self
    }

    pub fn per_image(&self, model: &str) -> Option<Money> {
        self.0.get(model).copied()
    }

    pub fn knows(&self, model: &str) -> bool {
        self.0.contains_key(model)
    }

    pub fn list(&self) -> Vec<ModelPrice> {
        self.0.iter().map(|(m, p)| ModelPrice { model: m.clone(), usd_per_image: p.usd() }).collect()
    }

    /// The live price of `images` images; what a run charges depends on its mode.
    pub fn live_cost(&self, model: &str, images: u64) -> Money {
        self.per_image(model).unwrap_or(Money::ZERO).times(images)
    }

    pub fn charge(&self, mode: RunMode, model: &str, images: u64) -> Money {
        match mode {
            RunMode::DryRun => Money::ZERO,
            RunMode::Live => self.live_cost(model, images),
        }
    }

    pub fn estimate(&self, mode: RunMode, model: &str, images: u64) -> Estimate {
        Estimate {
            images,
            usd: self.charge(mode, model, images).usd(),
            usd_if_live: self.live_cost(model, images).usd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_runs_are_estimated_but_free() {
        let prices = PriceTable::default();
        let e = prices.estimate(RunMode::DryRun, DEFAULT_MODEL, 199);
        assert_eq!(e.usd, 0.0);
        assert_eq!(prices.live_cost(DEFAULT_MODEL, 199), Money::from_micros(7_761_000));
        assert!((e.usd_if_live - 7.761).abs() < 1e-9);
        assert_eq!(prices.charge(RunMode::Live, "gemini-3-pro-image-preview", 3), Money::from_micros(402_000));
    }
}
