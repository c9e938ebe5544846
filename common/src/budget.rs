//! The budget port, called by submit before anything is written. The money issue replaces
//! [`Unmetered`] with the per-user daily reservation on `budget/{day}/{user}.json`.

use crate::api::BudgetView;
use crate::domain::{BatchId, Money, UserId};
use crate::problem::Problem;
use async_trait::async_trait;

#[async_trait]
pub trait Budget: Send + Sync + std::fmt::Debug {
    /// Reserves `amount` for `batch` from `user`'s day, or refuses with `BUDGET_EXCEEDED`.
    async fn reserve(&self, user: &UserId, batch: &BatchId, amount: Money) -> Result<BudgetView, Problem>;

    /// The user's day as it stands.
    async fn view(&self, user: &UserId) -> Result<BudgetView, Problem>;
}

/// No accounting: reports the configured limit and reserves nothing. Honest only for dry runs,
/// which cost nothing; live runs must not be enabled on it.
#[derive(Debug, Clone)]
pub struct Unmetered {
    pub limit: Money,
}

#[async_trait]
impl Budget for Unmetered {
    async fn reserve(&self, user: &UserId, _batch: &BatchId, _amount: Money) -> Result<BudgetView, Problem> {
        self.view(user).await
    }

    async fn view(&self, _user: &UserId) -> Result<BudgetView, Problem> {
        Ok(BudgetView {
            limit_usd: self.limit.usd(),
            spent_usd: 0.0,
            reserved_usd: 0.0,
            remaining_usd: self.limit.usd(),
        })
    }
}
