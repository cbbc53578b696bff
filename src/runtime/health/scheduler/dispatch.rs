//! What goes out: the probes due now, started as each workspace's budget allows, within the
//! concurrency bounds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::budget::{ANSWER_WAIT, DAY};
use super::{
    AccessKey, DISPATCH_TICK, InFlight, MEMBER_TRIES, PipeKey, ProbeResult, Registered, Worker, earliest_of,
    earliest_of_both,
};
use crate::adapters::health::{ProbeOutcome, ProbePlan};

impl Worker {
    /// Starts every probe due now (pipes first, then the tokens' own checks, most overdue
    /// first) as its workspace's budget allows, and the existence checks due; notes the next wake.
    pub(super) fn dispatch_due(&mut self) {
        let now = Instant::now();
        self.last_dispatch = now;
        // Rebuilt by this scan.
        self.earliest_due = None;
        let mut earliest: Option<Instant> = None;
        self.groups.retain(|_, group| group.busy() || !group.members.is_empty());
        self.refresh_budgets();
        let shared = Arc::clone(&self.shared);
        let mut accesses = shared.lock_accesses();
        // Every probe due now: the most overdue goes first, as the workspace's budget allows.
        let mut due_now: Vec<(Instant, Due)> = Vec::new();
        for (pipe, group) in &self.groups {
            // A pipe the existence check found missing: its billed probe could only say so too.
            if group.in_flight || group.exists.missing {
                continue;
            }
            if group.due > now {
                earliest = earliest_of(earliest, group.due);
                continue;
            }
            due_now.push((group.due, Due::Pipe(pipe.clone())));
        }
        let (tokens, more) = self.tokens_due(&accesses, now, &mut earliest);
        if more {
            // More are due than one scan starts: the next tick looks again.
            earliest = earliest_of(earliest, now);
        }
        due_now.extend(tokens.into_iter().map(|(due, key, index)| (due, Due::Token(key, index))));
        // The pipes first (a pipe's probe speaks for every token of it; one confirming that a
        // pipe found again is back before all), then the tokens' own checks, in the slots the
        // pipes leave (see [`PLANNED_SHARE`]); each kind most overdue first.
        let groups = &self.groups;
        due_now.sort_by_key(|(due, kind)| {
            let rank = match kind {
                Due::Pipe(pipe) if groups.get(pipe).is_some_and(|g| g.exists.confirm) => 0,
                Due::Pipe(_) => 1,
                Due::Token(..) => 2,
            };
            (rank, *due)
        });
        let mut starts = Vec::new();
        for (_, due) in due_now {
            let workspace = match &due {
                Due::Pipe(pipe) => Arc::clone(&pipe.workspace),
                Due::Token(key, _) => match accesses.get(key) {
                    Some(access) => Arc::clone(&access.workspace),
                    None => continue,
                },
            };
            let state = self.workspace_state(&workspace);
            let allowed_at = state.allowed_at();
            if allowed_at > now {
                // Over budget (or held back by the plan's rate limit): it waits its turn.
                earliest = earliest_of(earliest, allowed_at);
                continue;
            }
            let start = match due {
                Due::Pipe(pipe) => self.start_pipe_probe(&mut accesses, pipe, now, &mut earliest),
                Due::Token(key, index) => start_verification(&mut accesses, key, index),
            };
            if let Some(start) = start {
                let state = self.workspace_state(&workspace);
                state.spend(now);
                if state.rate_limited > 0 {
                    // Refused by the plan's rate limit lately: this one probe's answer decides
                    // whether the others may go.
                    state.paused_until = Some(now + ANSWER_WAIT);
                }
                starts.push(start);
            }
        }
        let checks = self.start_existence_checks(&accesses, now, &mut earliest);
        drop(accesses);
        for (parts, target) in starts {
            self.spawn_probe(parts.plan, parts.places, target);
        }
        for (request, pipe) in checks {
            self.spawn_existence_check(request, pipe);
        }
        self.earliest_due = earliest_of_both(earliest, self.earliest_due);
    }

    /// The tokens' own checks due now in the workspaces whose budget lets a probe go now, the
    /// [`TOKEN_PICKS`] most overdue of them; whether more were due. A workspace held back by its
    /// budget is not walked: its next slot is the wake-up (a key rotation makes every token due
    /// at once, and the budget lets them go a few a second, while the scans run at every tick).
    fn tokens_due(
        &self,
        accesses: &HashMap<AccessKey, Registered>,
        now: Instant,
        earliest: &mut Option<Instant>,
    ) -> (Vec<(Instant, AccessKey, usize)>, bool) {
        let mut open: HashSet<&str> = HashSet::new();
        for (name, state) in &self.workspaces {
            let allowed_at = state.allowed_at();
            if allowed_at > now {
                // Earlier than its tokens may be due (never later): the scan at its slot walks
                // it and finds their true due times.
                *earliest = earliest_of(*earliest, allowed_at);
            } else {
                open.insert(name);
            }
        }
        if open.is_empty() {
            return (Vec::new(), false);
        }
        // The pipes an existence check found missing: their tokens' checks could only say so.
        let missing: HashSet<(&str, &str)> = self
            .groups
            .iter()
            .filter(|(_, group)| group.exists.missing)
            .map(|(pipe, _)| (&*pipe.workspace, &*pipe.resource))
            .collect();
        let mut due_now: Vec<(Instant, &AccessKey, usize)> = Vec::new();
        for (key, access) in accesses {
            if !open.contains(&*access.workspace) {
                continue;
            }
            for (index, endpoint) in access.endpoints.iter().enumerate() {
                if endpoint.skipped.is_some() || endpoint.in_flight {
                    continue;
                }
                let Some(due) = endpoint.verify_due else { continue };
                if due > now {
                    *earliest = earliest_of(*earliest, due);
                    continue;
                }
                if !missing.is_empty() && missing.contains(&(&*access.workspace, endpoint.resource.as_str()))
                {
                    continue;
                }
                due_now.push((due, key, index));
            }
        }
        let more = due_now.len() > TOKEN_PICKS;
        if more {
            due_now.select_nth_unstable_by_key(TOKEN_PICKS - 1, |(due, _, _)| *due);
            due_now.truncate(TOKEN_PICKS);
        }
        let picked = due_now.into_iter().map(|(due, key, index)| (due, key.clone(), index)).collect();
        (picked, more)
    }

    /// The pipe's probe with the next member whose token can go now (not busy, not held back by
    /// its own rate limit); `None` (and the pipe due again soon) when none can.
    fn start_pipe_probe(
        &mut self,
        accesses: &mut HashMap<AccessKey, Registered>,
        pipe: PipeKey,
        now: Instant,
        earliest: &mut Option<Instant>,
    ) -> Option<(InFlightParts, InFlight)> {
        let group = self.groups.get_mut(&pipe)?;
        let mut wait: Option<Instant> = None;
        for _ in 0..group.members.len().min(MEMBER_TRIES) {
            let Some(member) = group.next_member() else { break };
            group.cursor = Some(member.clone());
            // Unregistered a moment ago: the next member's turn.
            let Some(access) = accesses.get_mut(&member) else { continue };
            let parts = InFlightParts::of(access);
            let Some(endpoint) = access.endpoints.iter_mut().find(|e| *e.resource == *pipe.resource) else {
                continue;
            };
            if endpoint.in_flight {
                wait = earliest_of(wait, now + DISPATCH_TICK);
                continue;
            }
            if let Some(until) = endpoint.limited_until.filter(|until| *until > now) {
                wait = earliest_of(wait, until);
                continue;
            }
            endpoint.in_flight = true;
            group.in_flight = true;
            group.scheduled = group.due;
            let interval = group.interval();
            let target = InFlight {
                key: member,
                generation: parts.generation,
                resource: pipe.resource.to_string(),
                workspace: Arc::clone(&pipe.workspace),
                pipe: Some(pipe),
                interval,
            };
            return Some((parts, target));
        }
        group.due = wait.unwrap_or(now + DISPATCH_TICK);
        *earliest = earliest_of(*earliest, group.due);
        None
    }

    /// Recomputes what each changed workspace's probes want a day, and how far their intervals
    /// stretch to fit its budget.
    fn refresh_budgets(&mut self) {
        if !self.workspaces.values().any(|state| state.dirty) {
            return;
        }
        let mut wanted: HashMap<Arc<str>, (u32, u64, f64)> = HashMap::new();
        for (pipe, group) in &self.groups {
            let (pipes, tokens, per_day) = wanted.entry(Arc::clone(&pipe.workspace)).or_default();
            *pipes += 1;
            *tokens += group.members.len() as u64;
            *per_day += DAY.as_secs_f64() / group.interval().as_secs_f64().max(0.001);
        }
        let mut uses = Vec::new();
        for (name, state) in self.workspaces.iter_mut().filter(|(_, state)| state.dirty) {
            state.dirty = false;
            let (pipes, tokens, pipe_queries) = wanted.get(name).copied().unwrap_or_default();
            state.refresh(pipes, tokens, pipe_queries);
            uses.push((Arc::clone(name), state.budget_use()));
        }
        let mut budgets = self.shared.lock_budgets();
        for (name, budget_use) in uses {
            budgets.insert(name, budget_use);
        }
    }

    fn spawn_probe(&mut self, plan: Arc<ProbePlan>, places: Arc<Semaphore>, target: InFlight) {
        let prober = Arc::clone(&self.prober);
        let semaphore = Arc::clone(&self.semaphore);
        let resource = target.resource.clone();
        let token_check = target.pipe.is_none();
        let clock = self.clock;
        let handle = self.probes.spawn(async move {
            // One of the access's places first, then the global bound (fair between
            // accesses: the global queue holds at most a few probes of each). Closed
            // once this plan is replaced: the result would be dropped anyway.
            let _place = places.acquire_owned().await.ok()?;
            // Only closed at shutdown, when the result no longer matters.
            let _permit = semaphore.acquire_owned().await.ok();
            // The token is made once a permit is held, so a queued probe never sends a
            // probe token that aged while waiting.
            let wall_now = clock.now();
            let believed_valid = plan.credential.believed_valid_at(wall_now);
            let started = Instant::now();
            let outcome = match plan.request_for(&resource, wall_now) {
                Ok(request) if token_check => prober.probe(request.as_token_check()).await,
                Ok(request) => prober.probe(request).await,
                Err(error) => ProbeOutcome::not_sent(&error.to_string()),
            };
            Some(ProbeResult { outcome, latency: started.elapsed(), believed_valid })
        });
        self.in_flight.insert(handle.id(), target);
    }
}

/// Most token checks one scan considers: a budget lets a few go per tick (its slots are at least
/// [`DISPATCH_TICK`] apart, one late slot may be caught up), so the most overdue of a backlog of
/// any size are picked without sorting it.
pub(super) const TOKEN_PICKS: usize = 64;

/// A probe due now.
enum Due {
    /// A pipe's shared probe.
    Pipe(PipeKey),
    /// The verification of an access's token, for its endpoint at this index.
    Token(AccessKey, usize),
}

/// The verification of `key`'s token for its endpoint at `index`.
fn start_verification(
    accesses: &mut HashMap<AccessKey, Registered>,
    key: AccessKey,
    index: usize,
) -> Option<(InFlightParts, InFlight)> {
    let access = accesses.get_mut(&key)?;
    let parts = InFlightParts::of(access);
    let workspace = Arc::clone(&access.workspace);
    let interval = access.plan.interval;
    let endpoint = access.endpoints.get_mut(index)?;
    endpoint.in_flight = true;
    let resource = endpoint.resource.clone();
    let target = InFlight { key, generation: parts.generation, resource, pipe: None, workspace, interval };
    Some((parts, target))
}

/// What a probe with an access's token needs from its registration.
#[derive(Clone)]
struct InFlightParts {
    generation: u64,
    plan: Arc<ProbePlan>,
    places: Arc<Semaphore>,
}

impl InFlightParts {
    fn of(access: &Registered) -> Self {
        Self {
            generation: access.generation,
            plan: Arc::clone(&access.plan),
            places: Arc::clone(&access.places),
        }
    }
}
