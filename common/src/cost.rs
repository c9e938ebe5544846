//! What images cost. Prices are per generated image and per model, kept as exact micro-dollars.
//! Gemini's Batch API (run mode `bulk`) costs half the live price unless the table names a bulk
//! price of its own for a model.

use crate::api::{Estimate, ModelPrice};
use crate::domain::{Money, RunMode};
use std::collections::BTreeMap;

pub const DEFAULT_MODEL: &str = "gemini-2.5-flash-image";

/// The price list. Unknown models are refused at submit, so every accepted batch has a price.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    live: BTreeMap<String, Money>,
    /// Bulk prices that are not half the live one.
    bulk: BTreeMap<String, Money>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            live: BTreeMap::from([
                (DEFAULT_MODEL.to_owned(), Money::from_micros(39_000)),
                ("gemini-3-pro-image-preview".to_owned(), Money::from_micros(134_000)),
            ]),
            bulk: BTreeMap::new(),
        }
    }
}

impl PriceTable {
    pub fn with(mut self, model: impl Into<String>, per_image: Money) -> Self {
        self.live.insert(model.into(), per_image);
        self
    }

    /// A bulk price for `model` other than half its live price.
    pub fn with_bulk(mut self, model: impl Into<String>, per_image: Money) -> Self {
        self.bulk.insert(model.into(), per_image);
        self
    }

    /// The Batch API's price of one image: the table's, or half the live price (rounded down to
    /// the micro-dollar, so a bulk batch never holds more than half).
    pub fn bulk_per_image(&self, model: &str) -> Option<Money> {
        self.bulk
            .get(model)
            .copied()
            .or_else(|| self.per_image(model).map(|live| Money::from_micros(live.micros() / 2)))
    }

    /// The price of one image of a run in `mode` (zero for a dry run).
    pub fn per_image_in(&self, mode: RunMode, model: &str) -> Money {
        match mode {
            RunMode::DryRun => Money::ZERO,
            RunMode::Live => self.per_image(model).unwrap_or(Money::ZERO),
            RunMode::Bulk => self.bulk_per_image(model).unwrap_or(Money::ZERO),
        }
    }

    pub fn per_image(&self, model: &str) -> Option<Money> {
        self.live.get(model).copied()
    }

    pub fn knows(&self, model: &str) -> bool {
        self.live.contains_key(model)
    }

    pub fn list(&self) -> Vec<ModelPrice> {
        self.live
            .iter()
            .map(|(m, p)| ModelPrice {
                model: m.clone(),
                usd_per_image: p.usd(),
                usd_per_image_bulk: self.bulk_per_image(m).unwrap_or(Money::ZERO).usd(),
            })
            .collect()
    }

    /// The live price of `images` images; what a run charges depends on its mode.
    pub fn live_cost(&self, model: &str, images: u64) -> Money {
        self.per_image(model).unwrap_or(Money::ZERO).times(images)
    }

    pub fn charge(&self, mode: RunMode, model: &str, images: u64) -> Money {
        self.per_image_in(mode, model).times(images)
    }

    pub fn estimate(&self, mode: RunMode, model: &str, images: u64) -> Estimate {
        Estimate {
            images,
            usd: self.charge(mode, model, images).usd(),
            usd_if_live: self.live_cost(model, images).usd(),
            usd_if_bulk: self.charge(RunMode::Bulk, model, images).usd(),
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

    #[test]
    fn bulk_costs_half_unless_the_table_says_otherwise() {
        let prices = PriceTable::default();
        assert_eq!(prices.charge(RunMode::Bulk, DEFAULT_MODEL, 10), Money::from_micros(195_000));
        assert_eq!(prices.charge(RunMode::Bulk, "gemini-3-pro-image-preview", 1), Money::from_micros(67_000));
        let e = prices.estimate(RunMode::Bulk, DEFAULT_MODEL, 199);
        assert!((e.usd - 3.8805).abs() < 1e-9, "{}", e.usd);
        assert!((e.usd_if_bulk - e.usd).abs() < 1e-9);
        let odd = PriceTable::default().with("m", Money::from_micros(39_001));
        assert_eq!(odd.bulk_per_image("m"), Some(Money::from_micros(19_500)), "rounded down, never more than half");
        let own = PriceTable::default().with_bulk(DEFAULT_MODEL, Money::from_micros(20_000));
        assert_eq!(own.charge(RunMode::Bulk, DEFAULT_MODEL, 2), Money::from_micros(40_000));
        assert_eq!(prices.list()[0].usd_per_image_bulk, 0.0195);
    }
}
