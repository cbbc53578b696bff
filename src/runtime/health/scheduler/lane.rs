//! The free existence lane of the scheduler: each pipe's `GET {api}/v0/pipes/{pipe}` with the
//! admin token at its interval, paced apart from the billed probes, and what its answers mean.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::answers::spread_verdict;
use super::budget::PLAN_LIMIT_CAP;
use super::{
    AccessKey, DISPATCH_TICK, HealthChange, PipeDescribed, PipeKey, ProbeOutcome, ProbeReason, ProbeRequest,
    ProbeResult, Registered, Worker, earliest_of,
};
use crate::core::backoff::jitter;
use crate::runtime::health::probe_timing::{next_due, rate_limited_delay};

impl Worker {
    /// The existence checks due now, most overdue first, as each workspace's pace allows (one
    /// per `1 s / maxQueriesPerSecond`, on a pacer apart from the billed probes'); each with the
    /// admin token of one member's plan.
    pub(super) fn start_existence_checks(
        &mut self,
        accesses: &HashMap<AccessKey, Registered>,
        now: Instant,
        earliest: &mut Option<Instant>,
    ) -> Vec<(ProbeRequest, PipeKey)> {
        let mut due_now: Vec<(Instant, PipeKey)> = Vec::new();
        for (pipe, group) in &self.groups {
            if group.exists.in_flight || group.members.is_empty() {
                continue;
            }
            if group.exists.due > now {
                *earliest = earliest_of(*earliest, group.exists.due);
                continue;
            }
            due_now.push((group.exists.due, pipe.clone()));
        }
        due_now.sort_by_key(|(due, _)| *due);
        let mut checks = Vec::new();
        for (_, pipe) in due_now {
            let state = self.workspace_state(&pipe.workspace);
            let allowed_at = state.lane_allowed_at();
            if allowed_at > now {
                *earliest = earliest_of(*earliest, allowed_at);
                continue;
            }
            let key = state.admin_token.clone();
            let Some(group) = self.groups.get_mut(&pipe) else { continue };
            let Some(plan) = group.members.keys().find_map(|member| accesses.get(member)).map(|a| &a.plan)
            else {
                continue;
            };
            // The workspace's admin token as last registered (a plan registered before a key
            // rotation may still carry the old one).
            let request = match key {
                Some(key) => ProbeRequest::existence(&plan.api_url, &pipe.resource, &key, plan.timeout),
                None => plan.existence_request(&pipe.resource),
            };
            group.exists.in_flight = true;
            group.exists.scheduled = group.exists.due;
            self.workspace_state(&pipe.workspace).spend_lane(now);
            checks.push((request, pipe));
        }
        checks
    }

    pub(super) fn spawn_existence_check(&mut self, request: ProbeRequest, pipe: PipeKey) {
        let prober = Arc::clone(&self.prober);
        let semaphore = Arc::clone(&self.semaphore);
        let handle = self.probes.spawn(async move {
            // Within the global bound, like every request to Tinybird.
            let _permit = semaphore.acquire_owned().await.ok();
            let started = Instant::now();
            let outcome = prober.probe(request).await;
            Some(ProbeResult { outcome, latency: started.elapsed(), believed_valid: true })
        });
        self.existence_in_flight.insert(handle.id(), pipe);
    }

    /// An existence check's answer: a 404 is the pipe's verdict for every member, a 200 for a
    /// pipe reported missing calls its billed probe at once, a 403 asks for the admin token's
    /// check; anything else is no verdict.
    pub(super) fn complete_existence_check(
        &mut self,
        pipe: &PipeKey,
        result: Option<ProbeResult>,
        now: Instant,
    ) {
        let Some(group) = self.groups.get_mut(pipe) else { return };
        group.exists.in_flight = false;
        if group.members.is_empty() {
            if !group.busy() {
                self.drop_group(pipe);
            }
            return;
        }
        let interval = group.interval();
        let Some(ProbeResult { outcome, .. }) = result else {
            group.exists.due = now + DISPATCH_TICK;
            self.note_due(now + DISPATCH_TICK);
            return;
        };
        group.exists.due = next_due(group.exists.scheduled, interval, now);
        let missing_before = group.exists.missing;
        group.exists.missing = outcome.reason == ProbeReason::PipeNotFound;
        let (due, missing) = (group.exists.due, group.exists.missing);
        self.note_due(due);
        if missing_before && !missing {
            // The probes and token checks it held back may go.
            self.note_due(now);
        }
        if outcome.reason != ProbeReason::RateLimited {
            let state = self.workspace_state(&pipe.workspace);
            state.lane_rate_limited = 0;
            state.lane_paused_until = None;
        }
        match outcome.reason {
            ProbeReason::Healthy => {
                if let Some(description) = &outcome.description {
                    self.described(pipe, description);
                }
                let shared = Arc::clone(&self.shared);
                let accesses = shared.lock_accesses();
                let Some(group) = self.groups.get_mut(pipe) else { return };
                // Reported missing: by the pipe's last verdict, or by a member that still holds
                // the verdict of an earlier run (its status, after a restart).
                let reported_missing = group.reported_missing()
                    || missing_before
                    || group.members.keys().filter_map(|member| accesses.get(member)).any(|access| {
                        access.endpoints.iter().any(|e| {
                            *e.resource == *pipe.resource
                                && e.reported.as_ref().is_some_and(|r| r.reason == ProbeReason::PipeNotFound)
                        })
                    });
                drop(accesses);
                if reported_missing {
                    tracing::info!(pipe = %pipe, "the pipe reported missing exists again: probing it now");
                    group.exists.confirm = true;
                    if !group.in_flight {
                        group.due = group.due.min(now);
                        self.note_due(now);
                    }
                }
            }
            ProbeReason::PipeNotFound => {
                let shared = Arc::clone(&self.shared);
                let mut accesses = shared.lock_accesses();
                let mut changes = Vec::new();
                if let Some(group) = self.groups.get_mut(pipe) {
                    group.exists.confirm = false;
                    spread_verdict(group, pipe, &outcome, &mut accesses, None, &mut changes);
                }
                drop(accesses);
                for change in changes {
                    self.publish(change);
                }
            }
            ProbeReason::RateLimited => {
                let state = self.workspace_state(&pipe.workspace);
                state.lane_rate_limited = state.lane_rate_limited.saturating_add(1);
                let spread = jitter(&format!("{}/exists/{}", pipe.workspace, state.lane_rate_limited));
                let cap = interval.max(PLAN_LIMIT_CAP);
                let until =
                    now + rate_limited_delay(outcome.retry_after, state.lane_rate_limited, cap, spread);
                state.lane_paused_until = Some(until);
                tracing::debug!(
                    pipe = %pipe, retry_after = ?outcome.retry_after, wait_secs = until.duration_since(now).as_secs(),
                    "Tinybird rate-limited a pipe existence check: the existence checks of this workspace wait"
                );
            }
            reason if reason.is_per_token() => self.admin_token_refused(pipe, &outcome, interval, now),
            reason => tracing::debug!(
                pipe = %pipe, %reason, status = outcome.status_code, message = %outcome.message,
                "a pipe existence check brought no verdict: the billed probes decide"
            ),
        }
    }

    /// Keeps the description an existence check read; when it is new or changed (a pipe edited
    /// at Tinybird), every member is told, so that its TenantAccess judges the pipe again.
    fn described(&mut self, pipe: &PipeKey, description: &PipeDescribed) {
        {
            let mut descriptions = self.shared.lock_descriptions();
            if descriptions.get(pipe).is_some_and(|known| known.description == *description) {
                return;
            }
            let described = super::Described { description: description.clone(), verdicts: HashMap::new() };
            descriptions.insert(pipe.clone(), described);
        }
        let Some(group) = self.groups.get(pipe) else { return };
        let changes: Vec<HealthChange> = {
            let accesses = self.shared.lock_accesses();
            group
                .members
                .keys()
                .filter_map(|member| accesses.get(member).map(|access| (member, access)))
                .map(|(member, access)| HealthChange {
                    key: member.clone(),
                    endpoints: access.reported(),
                    key_check: false,
                    described: true,
                })
                .collect()
        };
        for change in changes {
            self.publish(change);
        }
    }

    /// Tinybird refused the admin token of an existence check: one member asks for the admin
    /// token's check (at most once per interval for the workspace), nothing is reported.
    pub(super) fn admin_token_refused(
        &mut self,
        pipe: &PipeKey,
        outcome: &ProbeOutcome,
        interval: Duration,
        now: Instant,
    ) {
        tracing::debug!(
            pipe = %pipe, reason = %outcome.reason, message = %outcome.message,
            "Tinybird refused the admin token of a pipe existence check"
        );
        let state = self.workspace_state(&pipe.workspace);
        if state.lane_key_check_after.is_some_and(|after| after > now) {
            return;
        }
        state.lane_key_check_after = Some(now + interval);
        let Some(member) = self.groups.get(pipe).and_then(|group| group.members.keys().next().cloned())
        else {
            return;
        };
        if !self.shared.flag_key_check(&member) {
            return;
        }
        let endpoints = self.shared.lock_accesses().get(&member).map(Registered::reported);
        if let Some(endpoints) = endpoints {
            self.publish(HealthChange { key: member, endpoints, key_check: true, described: false });
        }
    }
}
