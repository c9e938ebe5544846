//! The stored budget object of one user and day.

use crate::domain::{Money, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::Date;

/// One batch's money on the day: every reserve round it held and, once it ended, what it spent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// One entry per reserve round: the submit, then each retry. Never rewritten, so the ledger's
    /// reserve events reconcile with it.
    pub reserves: Vec<Money>,
    /// What earlier settlements freed (reserved but not spent) before a retry reopened the batch.
    #[serde(default)]
    pub freed: Money,
    /// Set when the batch ended: what it spent in all. Its hold then counts for this much only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<Money>,
}

impl Hold {
    pub fn reserved(&self) -> Money {
        self.reserves.iter().copied().sum()
    }

    /// What this batch takes from the day's limit.
    pub fn committed(&self) -> Money {
        self.settled.unwrap_or_else(|| Money::from_micros(self.reserved().micros() - self.freed.micros()))
    }

    /// A retry: what the last settlement freed stays freed, and the new round is held.
    pub fn reopen(&mut self, amount: Money) {
        if let Some(spent) = self.settled.take() {
            self.freed = Money::from_micros(self.reserved().micros() - spent.micros());
        }
        self.reserves.push(amount);
    }
}

/// `budget/{YYYY-MM-DD}/{user}.json`. Written at batch granularity only (reserve, retry, settle):
/// GCS sustains about one write per second per object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetDay {
    pub day: Date,
    pub user: UserId,
    /// The limit in force at the last write (informative; the configured limit is enforced).
    pub limit: Money,
    /// By batch id.
    pub batches: BTreeMap<String, Hold>,
}

impl BudgetDay {
    pub fn new(day: Date, user: UserId, limit: Money) -> Self {
        Self { day, user, limit, batches: BTreeMap::new() }
    }

    pub fn committed(&self) -> Money {
        self.batches.values().map(Hold::committed).sum()
    }
}

pub fn object_name(day: Date, user: &UserId) -> String {
    // An email is a safe object-name segment once '/' (never valid in one anyway) is excluded.
    format!("budget/{day}/{}.json", user.as_str().replace('/', "_"))
}
