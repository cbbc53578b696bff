//! What comes back: each answer made the pipe's verdict or the token's own, the schedules
//! moved on, and the plan's rate limit honoured.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::{Id, JoinError};
use tokio::time::Instant;

use super::budget::PLAN_LIMIT_CAP;
use super::{
    AccessKey, DISPATCH_TICK, EndpointState, HealthChange, InFlight, PipeGroup, PipeKey, ProbeResult,
    Registered, Worker, earliest_of,
};
use crate::adapters::health::{AuthRejection, EndpointHealth, ProbeOutcome, ProbePlan, ProbeReason};
use crate::core::backoff::jitter;
use crate::runtime::health::probe_timing::{next_due, rate_limited_delay, recheck_delay};

impl Worker {
    /// Takes a probe's answer (or its task's failure): the verdict, the schedules, the report.
    pub(super) fn complete(&mut self, joined: Result<(Id, Option<ProbeResult>), JoinError>) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => {
                tracing::warn!(%error, "health probe task failed");
                (error.id(), None)
            }
        };
        let now = Instant::now();
        if let Some(pipe) = self.existence_in_flight.remove(&id) {
            self.complete_existence_check(&pipe, result, now);
            return;
        }
        let Some(target) = self.in_flight.remove(&id) else { return };
        let shared = Arc::clone(&self.shared);
        let mut accesses = shared.lock_accesses();
        let mut access = accesses.get_mut(&target.key).filter(|a| a.generation == target.generation);
        if let Some(endpoint) =
            access.as_mut().and_then(|a| a.endpoints.iter_mut().find(|e| e.resource == target.resource))
        {
            endpoint.in_flight = false;
        }
        let Some(ProbeResult { outcome, latency, believed_valid }) = result else {
            drop(accesses);
            self.reschedule_after_nothing(&target, now);
            return;
        };
        self.metrics.record(outcome.reason, latency);
        let rate_limited = outcome.reason == ProbeReason::RateLimited;
        // The plan's QPS ceiling (or a 429 of a token no longer registered): every probe to the
        // workspace waits, nothing is reported.
        let plan_limited =
            rate_limited && !access.as_ref().is_some_and(|a| own_rate_limit(&a.plan, &outcome));
        let paused_until = self.note_plan_limit(&target, &outcome, plan_limited, now);
        let per_token = outcome.reason.is_per_token();
        let stretch = self.workspaces.get(&target.workspace).map_or(1.0, |state| state.stretch);

        // The token's own part: its schedule, a suspected key rotation, a fault of its own.
        let mut held = false;
        let mut key_check = false;
        let mut changed = false;
        let mut pipe = target.pipe.clone();
        if let Some(access) = access {
            if pipe.is_none() && !rate_limited && !per_token {
                // A pipe-level answer to a verification is news about the pipe too.
                pipe = Some(PipeKey::new(&access.workspace, &target.resource));
            }
            let plan = Arc::clone(&access.plan);
            if let Some(endpoint) = access.endpoints.iter_mut().find(|e| e.resource == target.resource) {
                let token = TokenAnswer { target: &target, outcome: &outcome, believed_valid, now, stretch };
                (held, key_check, changed) = token.apply(endpoint, &plan, paused_until);
                if per_token && !held {
                    let group_health =
                        pipe.as_ref().and_then(|p| self.groups.get(p)).and_then(|g| g.health.as_ref());
                    changed |= endpoint.update_reported(group_health, &target.key);
                }
                if let Some(due) = endpoint.verify_due {
                    self.earliest_due = earliest_of(self.earliest_due, due);
                }
            }
        }
        let newly_flagged = key_check && self.shared.flag_key_check(&target.key);
        let mut changes = Vec::new();
        if (changed || newly_flagged)
            && let Some(access) = accesses.get(&target.key)
        {
            changes.push(HealthChange {
                key: target.key.clone(),
                endpoints: access.reported(),
                key_check,
                described: false,
            });
        }

        // The pipe's part: its schedule and, for a pipe-level answer, every member's health.
        if let Some(pipe) = pipe
            && let Some(group) = self.groups.get_mut(&pipe)
        {
            let interval = group.interval().mul_f64(stretch);
            if target.pipe.is_some() {
                group.in_flight = false;
                if let Some(until) = paused_until {
                    group.due = until;
                } else if rate_limited {
                    group.rate_limited = group.rate_limited.saturating_add(1);
                    let spread = jitter(&format!("{pipe}/{}", group.rate_limited));
                    group.due =
                        now + rate_limited_delay(outcome.retry_after, group.rate_limited, interval, spread);
                } else if per_token && (held || group.token_answers == 0) {
                    // The pipe's verdict is still unknown: soon again, with the next token.
                    group.rate_limited = 0;
                    group.token_answers = group.token_answers.saturating_add(1);
                    let spread = jitter(&format!("{pipe}/token/{}", group.token_answers));
                    group.due = now + recheck_delay(interval, spread);
                } else {
                    group.rate_limited = 0;
                    group.due = next_due(group.scheduled, interval, now);
                }
                self.earliest_due = earliest_of(self.earliest_due, group.due);
            }
            if !rate_limited && !per_token {
                if target.pipe.is_some() {
                    // The billed probe that was to confirm a recovery has answered.
                    group.exists.confirm = false;
                }
                let accepted = (&target.key, target.generation);
                spread_verdict(group, &pipe, &outcome, &mut accesses, Some(accepted), &mut changes);
            }
        }
        drop(accesses);
        for change in changes {
            self.publish(change);
        }
    }

    /// Holds back every probe to the target's workspace after the plan's rate limit refused one
    /// (`Retry-After`, else a backoff that grows with the 429s in a row); any other answer ends
    /// the streak. Until when, for a plan-level 429.
    fn note_plan_limit(
        &mut self,
        target: &InFlight,
        outcome: &ProbeOutcome,
        plan_limited: bool,
        now: Instant,
    ) -> Option<Instant> {
        let state = self.workspace_state(&target.workspace);
        if !plan_limited {
            if outcome.reason != ProbeReason::RateLimited && state.rate_limited > 0 {
                state.rate_limited = 0;
                state.paused_until = None;
            }
            return None;
        }
        state.rate_limited = state.rate_limited.saturating_add(1);
        let spread = jitter(&format!("{}/{}", target.workspace, state.rate_limited));
        // Growing up to minutes (beyond the interval): the plan is saturated.
        let cap = target.interval.max(PLAN_LIMIT_CAP);
        let until = now + rate_limited_delay(outcome.retry_after, state.rate_limited, cap, spread);
        state.paused_until = Some(until);
        tracing::info!(
            workspace = %target.workspace, retry_after = ?outcome.retry_after, wait_secs = until.duration_since(now).as_secs(),
            "Tinybird's plan rate limit refused a health probe: every probe to this workspace waits"
        );
        Some(until)
    }

    /// A probe that brought no answer (its plan was replaced): the next one on schedule.
    fn reschedule_after_nothing(&mut self, target: &InFlight, now: Instant) {
        let Some(pipe) = &target.pipe else { return };
        if let Some(group) = self.groups.get_mut(pipe) {
            group.in_flight = false;
            group.due = now + DISPATCH_TICK;
            if group.members.is_empty() && !group.busy() {
                self.drop_group(pipe);
                return;
            }
            let due = group.due;
            self.note_due(due);
        }
    }
}

/// One answer to a probe with an access's token, as it concerns that token.
struct TokenAnswer<'a> {
    target: &'a InFlight,
    outcome: &'a ProbeOutcome,
    believed_valid: bool,
    now: Instant,
    /// How much the workspace's intervals are stretched to fit its budget.
    stretch: f64,
}

impl TokenAnswer<'_> {
    /// Updates the endpoint's own schedule, suspicion and fault; whether the verdict is held
    /// (a first signature rejection), a key check is asked for, and the report changed.
    fn apply(
        &self,
        endpoint: &mut EndpointState,
        plan: &ProbePlan,
        paused_until: Option<Instant>,
    ) -> (bool, bool, bool) {
        let Self { target, outcome, believed_valid, now, stretch } = *self;
        let rate_limited = outcome.reason == ProbeReason::RateLimited;
        // Any answer but a 429 verified the token (a pipe's probe with it, too).
        if let Some(until) = paused_until {
            endpoint.verify_due = endpoint.verify_due.map(|due| due.max(until));
        } else if rate_limited {
            endpoint.rate_limited = endpoint.rate_limited.saturating_add(1);
            let spread = jitter(&format!("{}/{}/{}", target.key, target.resource, endpoint.rate_limited));
            let delay = rate_limited_delay(outcome.retry_after, endpoint.rate_limited, plan.interval, spread);
            endpoint.verify_due = endpoint.verify_due.map(|_| now + delay);
            endpoint.limited_until = Some(now + delay);
        } else {
            endpoint.rate_limited = 0;
            endpoint.limited_until = None;
            let token_interval = plan.budget.token_check_interval.mul_f64(stretch);
            endpoint.verify_due = (!token_interval.is_zero()).then(|| now + token_interval);
        }
        if rate_limited {
            if paused_until.is_some() {
                return (false, false, false);
            }
            // The token's own rate limit: said of this token, with the verdict it had.
            let previous = endpoint.reported.as_ref().map(|r| r.healthy);
            let health = Arc::new(EndpointHealth::from_outcome(&target.resource, outcome, previous));
            return (false, false, endpoint.update_reported(Some(&health), &target.key));
        }
        let key_check = outcome.reason == ProbeReason::SignatureRejected
            && believed_valid
            && outcome.auth_rejection.is_some_and(AuthRejection::suspects_the_key);
        // A first rejection of a token believed valid is most often a key rotation the
        // controller is re-signing for right now: ask for the key check, re-probe soon, and
        // report the verdict only if the second probe (with the same token) is rejected too.
        // That keeps a routine rotation from flipping every endpoint to unhealthy and back.
        let held = key_check && !endpoint.suspect_signature;
        endpoint.suspect_signature = key_check;
        if held && target.pipe.is_none() {
            let spread = jitter(&format!("{}/{}/suspect", target.key, target.resource));
            endpoint.verify_due = Some(now + recheck_delay(plan.interval, spread));
        }
        if !held {
            endpoint.token_fault = outcome
                .reason
                .is_per_token()
                .then(|| Arc::new(EndpointHealth::from_outcome(&target.resource, outcome, Some(false))));
        }
        (held, key_check, false)
    }
}

/// Whether a 429 is the token's own `limits.rps` (its bucket's limit, when Tinybird says it, is
/// the token's rate) rather than the plan's QPS ceiling, which every probe to the workspace
/// shares.
fn own_rate_limit(plan: &ProbePlan, outcome: &ProbeOutcome) -> bool {
    plan.token_rps
        .is_some_and(|rps| rps > 0 && outcome.rate_limit.is_none_or(|limit| u64::from(rps) == limit))
}

/// Makes `outcome` (a pipe-level answer) the pipe's verdict and reports it for every member
/// whose health it flips (a member with a fault of its own keeps reporting that). `accepted`:
/// the access (and plan generation) whose token brought the answer, which has no fault of its
/// own then; `None` for an existence check, made with the admin token.
pub(super) fn spread_verdict(
    group: &mut PipeGroup,
    pipe: &PipeKey,
    outcome: &ProbeOutcome,
    accesses: &mut HashMap<AccessKey, Registered>,
    accepted: Option<(&AccessKey, u64)>,
    changes: &mut Vec<HealthChange>,
) {
    group.token_answers = 0;
    let previous = group.health.as_ref().map(|h| h.healthy);
    group.health = Some(Arc::new(EndpointHealth::from_outcome(&pipe.resource, outcome, previous)));
    let health = group.health.as_ref();
    for member in group.members.keys() {
        let Some(access) = accesses.get_mut(member) else { continue };
        let generation = access.generation;
        let Some(endpoint) = access.endpoints.iter_mut().find(|e| *e.resource == *pipe.resource) else {
            continue;
        };
        if accepted
            .is_some_and(|(key, accepted_generation)| key == member && accepted_generation == generation)
        {
            // Its own token was accepted: no fault of its own.
            endpoint.token_fault = None;
        }
        if endpoint.update_reported(health, member) {
            changes.retain(|change: &HealthChange| change.key != *member || change.key_check);
            changes.push(HealthChange {
                key: member.clone(),
                endpoints: access.reported(),
                key_check: false,
                described: false,
            });
        }
    }
}
