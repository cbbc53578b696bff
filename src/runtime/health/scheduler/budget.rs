//! What a workspace's health checks cost: its budget, the pacing of its billed probes and of
//! its existence checks, a plan-level rate limit, and the budget use it reports.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::DISPATCH_TICK;
use crate::adapters::health::TokenBasis;
use crate::core::admin_token::AdminToken;
use crate::core::signing_workspace::HealthBudget;

/// A day.
pub(super) const DAY: Duration = Duration::from_secs(86_400);
/// Longest wait for the answer of the one probe sent after a plan-level 429 (beyond any probe
/// timeout).
pub(super) const ANSWER_WAIT: Duration = Duration::from_secs(90);
/// Longest backoff after plan-level 429s in a row without `Retry-After`.
pub(super) const PLAN_LIMIT_CAP: Duration = Duration::from_secs(300);
/// The share of a workspace's budget the planned probes (pipes at their interval, tokens at the
/// token-check interval) may use: the rest verifies the tokens written meanwhile.
pub(super) const PLANNED_SHARE: f64 = 0.8;

/// What a workspace's health checks cost: its budget, its pacing, a plan-level rate limit.
pub(super) struct WorkspaceState {
    /// The shared name (`api_url#workspace_id`).
    pub(super) name: Arc<str>,
    pub(super) budget: HealthBudget,
    /// No probe to the workspace before this: one per [`HealthBudget::spacing`] at most, from
    /// the start (so a restart is no burst).
    pub(super) next_slot: Instant,
    /// The plan's rate limit refused a probe: nothing before this.
    pub(super) paused_until: Option<Instant>,
    /// Plan-level 429s in a row.
    pub(super) rate_limited: u32,
    /// Probes sent since the start.
    pub(super) spent: u64,
    /// Distinct pipes, tokens, and the queries a day they want at their intervals.
    pub(super) pipes: u32,
    pub(super) tokens: u64,
    pub(super) planned_per_day: u64,
    /// How much longer than asked the intervals are, to fit the budget (at least 1).
    pub(super) stretch: f64,
    /// The pipes or tokens changed: recompute the plan.
    pub(super) dirty: bool,
    /// The admin token its plans carry, one copy for all of them (the last one registered).
    pub(super) admin_token: Option<Arc<AdminToken>>,
    /// What its plans' issued tokens are kept compressed against (the first one registered).
    pub(super) token_basis: Option<TokenBasis>,
    /// Its plans' API URL and workspace id, one copy for all of them.
    pub(super) ids: Option<(Arc<str>, Arc<str>)>,
    /// Existence checks a day at the pipes' intervals (not billed, not in the budget).
    pub(super) existence_per_day: u64,
    /// No existence check before this: one per `1 s / maxQueriesPerSecond` at most, on a pacer
    /// of their own (they are not billed, but they are requests to the customer's Tinybird).
    pub(super) lane_next_slot: Instant,
    /// Tinybird rate-limited an existence check: none before this.
    pub(super) lane_paused_until: Option<Instant>,
    /// Existence checks rate-limited in a row.
    pub(super) lane_rate_limited: u32,
    /// An existence check's refused admin token asked for the key check: no other before this.
    pub(super) lane_key_check_after: Option<Instant>,
}

impl WorkspaceState {
    pub(super) fn new(name: Arc<str>) -> Self {
        let budget = HealthBudget::default();
        Self {
            name,
            budget,
            next_slot: Instant::now() + budget.spacing(DISPATCH_TICK),
            paused_until: None,
            rate_limited: 0,
            spent: 0,
            pipes: 0,
            tokens: 0,
            planned_per_day: 0,
            stretch: 1.0,
            dirty: true,
            admin_token: None,
            token_basis: None,
            ids: None,
            existence_per_day: 0,
            lane_next_slot: Instant::now() + lane_spacing(&budget),
            lane_paused_until: None,
            lane_rate_limited: 0,
            lane_key_check_after: None,
        }
    }

    /// When the next existence check may go.
    pub(super) fn lane_allowed_at(&self) -> Instant {
        self.lane_paused_until.map_or(self.lane_next_slot, |paused| paused.max(self.lane_next_slot))
    }

    /// One existence check sent at `now`.
    pub(super) fn spend_lane(&mut self, now: Instant) {
        let slot = self.lane_next_slot.max(now.checked_sub(DISPATCH_TICK).unwrap_or(now));
        self.lane_next_slot = slot + lane_spacing(&self.budget);
    }

    /// When the next probe may go.
    pub(super) fn allowed_at(&self) -> Instant {
        self.paused_until.map_or(self.next_slot, |paused| paused.max(self.next_slot))
    }

    /// One probe sent at `now`.
    /// (Its slot is at most one dispatch tick before `now`: see [`HealthBudget::spacing`].)
    pub(super) fn spend(&mut self, now: Instant) {
        self.spent += 1;
        let slot = self.next_slot.max(now.checked_sub(DISPATCH_TICK).unwrap_or(now));
        self.next_slot = slot + self.budget.spacing(DISPATCH_TICK);
    }

    pub(super) fn refresh(&mut self, pipes: u32, tokens: u64, pipe_queries: f64) {
        // One existence check per pipe and interval, as the billed probes would be unstretched.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let existence_per_day = pipe_queries.ceil() as u64;
        self.existence_per_day = existence_per_day;
        let token_queries = if self.budget.token_check_interval.is_zero() {
            0.0
        } else {
            tokens as f64 * DAY.as_secs_f64() / self.budget.token_check_interval.as_secs_f64()
        };
        let planned = pipe_queries + token_queries;
        let per_day = f64::from(
            self.budget.max_queries_per_day.min(self.budget.max_queries_per_second.saturating_mul(86_400)),
        );
        self.pipes = pipes;
        self.tokens = tokens;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let planned_per_day = planned.ceil() as u64;
        self.planned_per_day = planned_per_day;
        let stretch = (planned / (per_day * PLANNED_SHARE)).max(1.0);
        if (stretch - self.stretch).abs() > f64::EPSILON {
            tracing::info!(
                workspace = %self.name, planned_per_day, budget_per_day = self.budget.max_queries_per_day, stretch,
                "health-check budget: probe intervals stretched to fit"
            );
        }
        self.stretch = stretch;
    }

    pub(super) fn budget_use(&self) -> BudgetUse {
        BudgetUse {
            max_queries_per_day: self.budget.max_queries_per_day,
            planned_queries_per_day: self.planned_per_day,
            pipes: self.pipes,
            tokens: self.tokens,
            stretch: self.stretch,
            existence_checks_per_day: self.existence_per_day,
            existence_capacity_per_day: lane_capacity_per_day(&self.budget),
            max_queries_per_second: self.budget.max_queries_per_second,
        }
    }
}

/// Existence checks a day the lane's pacing allows (one per [`lane_spacing`]).
fn lane_capacity_per_day(budget: &HealthBudget) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let capacity = (DAY.as_secs_f64() / lane_spacing(budget).as_secs_f64()).floor() as u64;
    capacity
}

/// Time between two existence checks of a workspace: `maxQueriesPerSecond`, for a pacer that
/// sends each at most one dispatch tick after its slot (see [`HealthBudget::spacing`]).
pub(super) fn lane_spacing(budget: &HealthBudget) -> Duration {
    (Duration::from_secs(1) + DISPATCH_TICK) / budget.max_queries_per_second.max(1) + Duration::from_millis(1)
}

/// What the health checks of one workspace want against its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetUse {
    /// `spec.healthChecks.maxQueriesPerDay` in effect.
    pub max_queries_per_day: u32,
    /// Queries a day the probes want at their intervals (each pipe at the shortest interval of
    /// the TenantAccesses granting it, each token at the token-check interval).
    pub planned_queries_per_day: u64,
    /// Distinct pipes probed.
    pub pipes: u32,
    /// Tokens (TenantAccess endpoints) sharing those pipes.
    pub tokens: u64,
    /// How much longer than asked every interval is, to fit the budget (1: not at all).
    pub stretch: f64,
    /// Existence checks a day (one per pipe and interval, never stretched): free metadata calls
    /// with the admin token, not billed and not counted in the budget.
    pub existence_checks_per_day: u64,
    /// Existence checks a day that `maxQueriesPerSecond` allows: beyond it, each pipe's check
    /// comes later than its interval.
    pub existence_capacity_per_day: u64,
    /// `spec.healthChecks.maxQueriesPerSecond` in effect.
    pub max_queries_per_second: u32,
}

impl BudgetUse {
    /// The share of the daily budget the probes use (at most 1: the budget is never exceeded).
    #[must_use]
    pub fn ratio(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let planned = self.planned_queries_per_day as f64;
        (planned / f64::from(self.max_queries_per_day.max(1))).min(1.0)
    }

    /// How much later than their interval the existence checks come, because the pipes want
    /// more of them than `maxQueriesPerSecond` allows (1: on time).
    #[must_use]
    pub fn existence_lag(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let lag = self.existence_checks_per_day as f64 / self.existence_capacity_per_day.max(1) as f64;
        lag.max(1.0)
    }

    /// What was cut to fit the budget, for `status.healthChecks.cut`; `None` when it fits: the
    /// billed probes stretched to fit `maxQueriesPerDay`, the free existence checks later than
    /// their interval to fit `maxQueriesPerSecond`, or both.
    #[must_use]
    pub fn cut(&self) -> Option<String> {
        let billed = (self.stretch > 1.0).then(|| {
            format!(
                "the probes want {} queries a day ({} pipes, {} tokens), over spec.healthChecks.maxQueriesPerDay {}: every probe interval is {:.1}x longer than asked",
                self.planned_queries_per_day, self.pipes, self.tokens, self.max_queries_per_day, self.stretch
            )
        });
        let lag = self.existence_lag();
        let existence = (lag > 1.0).then(|| {
            format!(
                "the existence checks of {} pipes want {} requests a day, more than spec.healthChecks.maxQueriesPerSecond {} allows ({} a day): each pipe's removal is found {lag:.1}x later than its interval; raise maxQueriesPerSecond",
                self.pipes, self.existence_checks_per_day, self.max_queries_per_second, self.existence_capacity_per_day
            )
        });
        match (billed, existence) {
            (Some(billed), None) => Some(format!(
                "{billed} (a removed pipe is still found within its interval by {} free existence checks a day); raise the budget or lengthen healthCheck.interval",
                self.existence_checks_per_day
            )),
            (Some(billed), Some(existence)) => {
                Some(format!("{billed}; raise the budget or lengthen healthCheck.interval. And {existence}"))
            }
            (None, existence) => existence,
        }
    }
}
