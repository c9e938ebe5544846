//! The budget kept in the store: one object per user and UTC day, updated by compare-and-swap, so
//! concurrent submits can never reserve more than the limit between them.

use super::day::{BudgetDay, object_name};
use super::{Budget, Reservation};
use crate::api::BudgetView;
use crate::batch_view::store_problem;
use crate::domain::{BatchId, Money, UserId};
use crate::ledger::{self, EventKind};
use crate::problem::{ErrorCode, Problem};
use crate::store::{ObjectStore, Precondition, StoreError, read_json, update_json, write_json};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use time::Date;

/// The daily limit per user: a default and per-user overrides (`ASSETGEN_USER_LIMITS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLimits {
    pub default: Money,
    pub overrides: HashMap<String, Money>,
}

impl UserLimits {
    pub fn for_user(&self, user: &UserId) -> Money {
        self.overrides.get(user.as_str()).copied().unwrap_or(self.default)
    }
}

#[derive(Debug, Clone)]
pub struct DailyBudget {
    pub store: Arc<dyn ObjectStore>,
    pub limits: UserLimits,
}

/// What a CAS round decided, kept outside the closure that may run several times.
enum Decision {
    Held(u32),
    Refused { committed: Money },
}

impl DailyBudget {
    /// Read-modify-write of the day's object, creating it on first use. `change` returns the new
    /// object or `None` to leave it; it may run again after a lost race.
    async fn modify<F>(&self, user: &UserId, day: Date, mut change: F) -> Result<(), Problem>
    where
        F: FnMut(&BudgetDay) -> Option<BudgetDay>,
    {
        let name = object_name(day, user);
        let limit = self.limits.for_user(user);
        loop {
            match update_json::<BudgetDay, StoreError, _>(self.store.as_ref(), &name, |current| Ok(change(current)))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::NotFound(_)) => {
                    let Some(first) = change(&BudgetDay::new(day, user.clone(), limit)) else { return Ok(()) };
                    match write_json(self.store.as_ref(), &name, &first, Precondition::DoesNotExist).await {
                        Ok(_) => return Ok(()),
                        Err(StoreError::PreconditionFailed(_)) => continue, // created meanwhile: update it
                        Err(e) => return Err(store_problem(e)),
                    }
                }
                Err(e) => return Err(store_problem(e)),
            }
        }
    }

    async fn hold(
        &self,
        user: &UserId,
        day: Date,
        batch: &BatchId,
        amount: Money,
        extend: bool,
    ) -> Result<Reservation, Problem> {
        let limit = self.limits.for_user(user);
        let mut decision = Decision::Held(0);
        self.modify(user, day, |current| {
            let existing = current.batches.get(&batch.to_string());
            if !extend && let Some(hold) = existing {
                // A retried submit of the same batch: it already holds its money.
                decision = Decision::Held(hold.reserves.len().saturating_sub(1) as u32);
                return None;
            }
            // A new hold, or a new round on top of what the batch already commits: `amount` more.
            let committed = current.committed();
            if committed + amount > limit {
                decision = Decision::Refused { committed };
                return None;
            }
            let mut next = current.clone();
            next.limit = limit;
            let hold = next.batches.entry(batch.to_string()).or_default();
            hold.reopen(amount);
            decision = Decision::Held(hold.reserves.len() as u32 - 1);
            Some(next)
        })
        .await?;
        match decision {
            Decision::Held(round) => Ok(Reservation { round, view: self.view(user, day).await? }),
            Decision::Refused { committed } => Err(exceeded(user, day, limit, committed, amount)),
        }
    }
}

fn exceeded(user: &UserId, day: Date, limit: Money, committed: Money, wanted: Money) -> Problem {
    let left = Money::from_micros((limit.micros() - committed.micros()).max(0));
    let resets = day.next_day().map(|d| format!("{d}T00:00:00Z")).unwrap_or_default();
    let mut p = Problem::new(
        ErrorCode::BudgetExceeded,
        format!("this batch needs {wanted}; {user} has {left} of {limit} left today; the budget resets at {resets}"),
    );
    p.budget = Some(BudgetView {
        limit_usd: limit.usd(),
        spent_usd: 0.0,
        reserved_usd: committed.usd(),
        remaining_usd: left.usd(),
    });
    p.resets_at = Some(resets);
    p
}

/// The day with `batch`'s hold settled at `spent`, or `None` (nothing to write) when the batch holds
/// nothing or is already settled at that.
fn with_settled(current: &BudgetDay, batch: &str, spent: Money) -> Option<BudgetDay> {
    if current.batches.get(batch)?.settled == Some(spent) {
        return None;
    }
    let mut next = current.clone();
    if let Some(hold) = next.batches.get_mut(batch) {
        hold.settled = Some(spent);
    }
    Some(next)
}

#[async_trait]
impl Budget for DailyBudget {
    async fn reserve(&self, user: &UserId, day: Date, batch: &BatchId, amount: Money) -> Result<Reservation, Problem> {
        if amount == Money::ZERO {
            // Dry runs hold nothing and never touch the (hot) budget object.
            return Ok(Reservation { round: 0, view: self.view(user, day).await? });
        }
        self.hold(user, day, batch, amount, false).await
    }

    async fn extend(&self, user: &UserId, day: Date, batch: &BatchId, amount: Money) -> Result<Reservation, Problem> {
        self.hold(user, day, batch, amount, true).await
    }

    async fn settle(&self, user: &UserId, day: Date, batch: &BatchId, spent: Money) -> Result<(), Problem> {
        let key = batch.to_string();
        self.modify(user, day, |current| with_settled(current, &key, spent)).await
    }

    async fn rounds(&self, user: &UserId, day: Date, batch: &BatchId) -> Result<Option<u32>, Problem> {
        match read_json::<BudgetDay>(self.store.as_ref(), &object_name(day, user)).await {
            Ok(o) => Ok(o.value.batches.get(&batch.to_string()).map(|h| h.reserves.len() as u32)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(store_problem(e)),
        }
    }

    async fn settle_unless_reopened(
        &self,
        user: &UserId,
        day: Date,
        batch: &BatchId,
        spent: Money,
        rounds: Option<u32>,
    ) -> Result<bool, Problem> {
        let key = batch.to_string();
        let mut settled = true;
        self.modify(user, day, |current| {
            let hold = current.batches.get(&key);
            settled = hold.map(|h| h.reserves.len() as u32) == rounds;
            if !settled {
                return None;
            }
            with_settled(current, &key, spent)
        })
        .await?;
        Ok(settled)
    }

    async fn view(&self, user: &UserId, day: Date) -> Result<BudgetView, Problem> {
        let limit = self.limits.for_user(user);
        let stored = match read_json::<BudgetDay>(self.store.as_ref(), &object_name(day, user)).await {
            Ok(o) => o.value,
            Err(StoreError::NotFound(_)) => BudgetDay::new(day, user.clone(), limit),
            Err(e) => return Err(store_problem(e)),
        };
        let (mut spent, mut held) = (Money::ZERO, Money::ZERO);
        for (batch, hold) in &stored.batches {
            match hold.settled {
                Some(s) => spent = spent + s,
                None => {
                    // While a batch runs, its spend is the sum of its ledger events.
                    let so_far = match BatchId::parse(batch) {
                        Ok(id) => ledger::total(
                            &ledger::events_of_batch(self.store.as_ref(), day, &id).await.map_err(store_problem)?,
                            EventKind::Spend,
                        ),
                        Err(_) => Money::ZERO,
                    };
                    spent = spent + so_far;
                    held = held + Money::from_micros((hold.committed().micros() - so_far.micros()).max(0));
                }
            }
        }
        Ok(BudgetView {
            limit_usd: limit.usd(),
            spent_usd: spent.usd(),
            reserved_usd: held.usd(),
            remaining_usd: Money::from_micros(limit.micros() - spent.micros() - held.micros()).usd(),
        })
    }
}
