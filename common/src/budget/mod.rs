//! The budget port: a per-user, per-UTC-day limit that submit reserves against before anything is
//! written, and that generate settles when a batch ends. [`DailyBudget`] keeps it in the store
//! (`budget/{YYYY-MM-DD}/{user}.json`); [`Unmetered`] is for tests that are not about money.

mod daily;
mod day;

pub use daily::{DailyBudget, UserLimits};
pub use day::{BudgetDay, Hold, object_name};

use crate::api::BudgetView;
use crate::domain::{BatchId, Money, UserId};
use crate::problem::Problem;
use async_trait::async_trait;
use time::Date;

/// A batch's hold after a reserve: which reserve round it was (0 at submit, +1 per retry).
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub round: u32,
    pub view: BudgetView,
}

#[async_trait]
pub trait Budget: Send + Sync + std::fmt::Debug {
    /// Holds `amount` for `batch` on `user`'s `day`, or refuses with `BUDGET_EXCEEDED` and writes
    /// nothing. Idempotent per batch: a batch that already holds money is not charged again.
    async fn reserve(&self, user: &UserId, day: Date, batch: &BatchId, amount: Money) -> Result<Reservation, Problem>;

    /// Holds `amount` more for a batch being retried (a new round), reopening it if it was settled.
    async fn extend(&self, user: &UserId, day: Date, batch: &BatchId, amount: Money) -> Result<Reservation, Problem>;

    /// Closes a batch: it spent `spent` (from the ledger); the rest of its hold is freed.
    async fn settle(&self, user: &UserId, day: Date, batch: &BatchId, spent: Money) -> Result<(), Problem>;

    /// How many reserve rounds the batch's hold has (1 after submit, +1 per retry); `None` when it
    /// holds nothing (a dry run, or no accounting). No default: a wrapper must pass it on.
    async fn rounds(&self, user: &UserId, day: Date, batch: &BatchId) -> Result<Option<u32>, Problem>;

    /// [`Budget::settle`], unless a retry added a round since the hold had `rounds` rounds: a batch
    /// whose rows were seen ended after reading `rounds` may have been reopened meanwhile, and its
    /// new round must stay held while its rows run. Returns whether the hold is settled. No
    /// default: a wrapper that settled unconditionally would free a reopened batch's new hold.
    async fn settle_unless_reopened(
        &self,
        user: &UserId,
        day: Date,
        batch: &BatchId,
        spent: Money,
        rounds: Option<u32>,
    ) -> Result<bool, Problem>;

    /// The user's day as it stands: limit, spent, reserved, remaining.
    async fn view(&self, user: &UserId, day: Date) -> Result<BudgetView, Problem>;
}

/// No accounting: reports the limit and holds nothing. For tests that are not about money.
#[derive(Debug, Clone)]
pub struct Unmetered {
    pub limit: Money,
}

#[async_trait]
impl Budget for Unmetered {
    async fn reserve(&self, user: &UserId, day: Date, _: &BatchId, _: Money) -> Result<Reservation, Problem> {
        Ok(Reservation { round: 0, view: self.view(user, day).await? })
    }

    async fn extend(&self, user: &UserId, day: Date, _: &BatchId, _: Money) -> Result<Reservation, Problem> {
        Ok(Reservation { round: 1, view: self.view(user, day).await? })
    }

    async fn settle(&self, _: &UserId, _: Date, _: &BatchId, _: Money) -> Result<(), Problem> {
        Ok(())
    }

    async fn rounds(&self, _: &UserId, _: Date, _: &BatchId) -> Result<Option<u32>, Problem> {
        Ok(None)
    }

    async fn settle_unless_reopened(
        &self,
        _: &UserId,
        _: Date,
        _: &BatchId,
        _: Money,
        _: Option<u32>,
    ) -> Result<bool, Problem> {
        Ok(true)
    }

    async fn view(&self, _: &UserId, _: Date) -> Result<BudgetView, Problem> {
        Ok(BudgetView {
            limit_usd: self.limit.usd(),
            spent_usd: 0.0,
            reserved_usd: 0.0,
            remaining_usd: self.limit.usd(),
        })
    }
}
