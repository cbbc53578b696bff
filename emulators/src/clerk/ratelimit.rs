//! The instance's request budget: N authenticated requests per fixed window (100 / 10 s, like a
//! development instance), then 429 with `Retry-After`.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::duration_millis;
use crate::sync::lock;

/// Default budget of a development instance.
pub const DEFAULT_REQUEST_BUDGET: u32 = 100;
/// Default budget window.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct RequestBudget {
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    /// Requests allowed per window; 0 disables the limit.
    limit: u32,
    window_ms: i64,
    window_started_ms: Option<i64>,
    used: u32,
}

impl RequestBudget {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            state: Mutex::new(BudgetState {
                limit,
                window_ms: duration_millis(window).max(1),
                window_started_ms: None,
                used: 0,
            }),
        }
    }

    /// Changes the budget and starts a fresh window.
    pub(crate) fn configure(&self, limit: u32, window: Duration) {
        *lock(&self.state) = BudgetState {
            limit,
            window_ms: duration_millis(window).max(1),
            window_started_ms: None,
            used: 0,
        };
    }

    /// `(limit, window)`.
    pub(crate) fn settings(&self) -> (u32, Duration) {
        let state = lock(&self.state);
        let window = Duration::from_millis(u64::try_from(state.window_ms).unwrap_or(1));
        (state.limit, window)
    }

    /// Counts one request; `Err(seconds)` to wait when the budget is spent (refusals are free).
    pub(crate) fn acquire(&self, now_ms: i64) -> Result<(), u64> {
        let mut state = lock(&self.state);
        if state.limit == 0 {
            return Ok(());
        }
        let started = match state.window_started_ms {
            Some(started) if now_ms >= started && now_ms < started + state.window_ms => started,
            _ => {
                state.used = 0;
                state.window_started_ms = Some(now_ms);
                now_ms
            }
        };
        if state.used < state.limit {
            state.used += 1;
            return Ok(());
        }
        let wait_ms = started + state.window_ms - now_ms;
        Err(u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_budget_until_the_window_ends() {
        let budget = RequestBudget::new(2, Duration::from_secs(10));
        assert!(budget.acquire(0).is_ok());
        assert!(budget.acquire(1_000).is_ok());
        assert_eq!(budget.acquire(2_500), Err(8));
        assert_eq!(budget.acquire(9_999), Err(1));
        assert!(budget.acquire(10_000).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let budget = RequestBudget::new(0, Duration::from_secs(1));
        for _ in 0..1_000 {
            assert!(budget.acquire(0).is_ok());
        }
    }
}
