//! The health scheduler: one tokio task owning every registered TenantAccess's probes. Probes
//! are spread with jitter over each interval, run under a global concurrency bound (of which one
//! TenantAccess holds at most [`PER_ACCESS_IN_FLIGHT`] places, so none can starve the others),
//! back off on 429, and are reported only when an endpoint's health changes, so that status is
//! written only on flips.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::{Id, JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::classify::{AuthRejection, ProbeOutcome, ProbeReason};
use super::metrics::HealthMetrics;
use super::plan::ProbePlan;
use super::probe::EndpointProber;
use super::probe_timing::{first_probe_offset, next_due, rate_limited_delay, recheck_delay};
use super::report::EndpointHealth;
use crate::core::backoff::jitter;
use crate::core::clock::Clock;

/// Default bound of probes in flight at once, over all TenantAccesses.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Most probes of one TenantAccess in flight, or waiting for the global bound, at once: one
/// access with hundreds of slow or failing endpoints holds at most this many of the shared
/// places, and every other access's probe waits behind at most this many of its probes.
pub const PER_ACCESS_IN_FLIGHT: usize = 2;

/// Identity of a TenantAccess: namespace and name. Its clones share the strings (the scheduler,
/// its readers and the controller each keep one per TenantAccess).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessKey {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl AccessKey {
    /// The key of `namespace/name`.
    #[must_use]
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A change of a TenantAccess's endpoint health: some endpoint flipped (verdict or reason), the
/// set of endpoints changed, or a key check is requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    /// The TenantAccess.
    pub key: AccessKey,
    /// Every endpoint's reported health, in spec order (only those probed or skipped so far).
    pub endpoints: Vec<EndpointHealth>,
    /// Tinybird rejected a token's signature while the operator believed the token valid:
    /// re-check the workspace's admin token now (it was probably refreshed).
    pub key_check: bool,
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// Most probes in flight at once (at least 1).
    pub concurrency: usize,
    /// The wall clock that dates probe tokens and judges whether a token is still valid.
    pub clock: Clock,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { concurrency: DEFAULT_CONCURRENCY, clock: Clock::system() }
    }
}

/// The changes reported by a [`HealthScheduler`]; a `Stream` for `Controller::reconcile_on`.
/// Ends when the scheduler shuts down.
#[derive(Debug)]
pub struct HealthEvents {
    receiver: mpsc::UnboundedReceiver<HealthChange>,
}

impl HealthEvents {
    /// The next change; `None` once the scheduler stopped.
    pub async fn recv(&mut self) -> Option<HealthChange> {
        self.receiver.recv().await
    }

    /// A change already reported, without waiting.
    pub fn try_recv(&mut self) -> Option<HealthChange> {
        self.receiver.try_recv().ok()
    }
}

impl futures::Stream for HealthEvents {
    type Item = HealthChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// Handle of the running scheduler; cheap to clone, never blocks the caller.
#[derive(Debug, Clone)]
pub struct HealthScheduler {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    metrics: HealthMetrics,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// The schedule, shared by the task (which changes it) and the handle (which reads the reported
/// health from it): one copy of each TenantAccess's state.
#[derive(Default)]
struct Shared {
    accesses: Mutex<HashMap<AccessKey, Registered>>,
    key_checks: Mutex<HashSet<AccessKey>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// The schedule (a panic elsewhere while it was held leaves it as consistent as any state).
    fn lock_accesses(&self) -> std::sync::MutexGuard<'_, HashMap<AccessKey, Registered>> {
        self.accesses.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget(&self, key: &AccessKey) {
        self.lock_accesses().remove(key);
        self.take_key_check(key);
    }

    /// Raises the key-check flag; whether it was newly raised.
    fn flag_key_check(&self, key: &AccessKey) -> bool {
        self.key_checks.lock().is_ok_and(|mut set| set.insert(key.clone()))
    }

    fn take_key_check(&self, key: &AccessKey) -> bool {
        self.key_checks.lock().is_ok_and(|mut set| set.remove(key))
    }
}

enum Command {
    /// A plan, and the health last reported for it by an earlier run (see
    /// [`HealthScheduler::resume`]).
    Register(AccessKey, Box<ProbePlan>, Vec<EndpointHealth>),
    Unregister(AccessKey),
    Shutdown,
}

impl HealthScheduler {
    /// Starts the scheduler task on the current tokio runtime.
    #[must_use]
    pub fn start(config: HealthConfig, prober: Arc<dyn EndpointProber>) -> (Self, HealthEvents) {
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let (events, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let metrics = HealthMetrics::default();
        let worker = Worker {
            prober,
            semaphore: Arc::new(Semaphore::new(config.concurrency.max(1))),
            probes: JoinSet::new(),
            in_flight: HashMap::new(),
            events,
            shared: Arc::clone(&shared),
            metrics: metrics.clone(),
            next_generation: 0,
            earliest_due: None,
            last_dispatch: Instant::now(),
            clock: config.clock,
        };
        let task = tokio::spawn(worker.run(command_receiver));
        let scheduler = Self { commands, shared, metrics, task: Arc::new(Mutex::new(Some(task))) };
        (scheduler, HealthEvents { receiver })
    }

    /// Registers or updates a TenantAccess's probes. An identical plan changes nothing; a new
    /// token keeps each endpoint's schedule and health (unhealthy ones are re-probed within
    /// seconds); a new interval re-spreads the probes.
    pub fn register(&self, key: AccessKey, plan: ProbePlan) {
        // Fails only after shutdown, when there is nothing left to schedule.
        let _ = self.commands.send(Command::Register(key, Box::new(plan), Vec::new()));
    }

    /// [`register`](Self::register), starting from `last_reported` when the TenantAccess is not
    /// registered yet: the health its status reports, from an earlier run of the operator. Status
    /// is the memory: after a restart an endpoint keeps its verdict (and `status.endpoints` its
    /// entry) until a probe says otherwise, instead of going blank until the first probe. An
    /// access already registered keeps its own (newer) verdicts.
    pub fn resume(&self, key: AccessKey, plan: ProbePlan, last_reported: Vec<EndpointHealth>) {
        let _ = self.commands.send(Command::Register(key, Box::new(plan), last_reported));
    }

    /// Stops probing a TenantAccess and forgets its health.
    pub fn unregister(&self, key: &AccessKey) {
        self.shared.forget(key);
        let _ = self.commands.send(Command::Unregister(key.clone()));
    }

    /// The reported health of a TenantAccess's endpoints (changes only on flips): what
    /// `status.endpoints` should hold. `None` when it is not registered.
    #[must_use]
    pub fn endpoints(&self, key: &AccessKey) -> Option<Vec<EndpointHealth>> {
        self.shared.lock_accesses().get(key).map(Registered::reported)
    }

    /// Calls `visit(key, resource, healthy)` for every probed endpoint with a verdict (for the
    /// `endpoint_up` gauge at scrape time; a held verdict keeps the previous one).
    pub fn endpoint_up(&self, mut visit: impl FnMut(&AccessKey, &str, bool)) {
        for (key, access) in self.shared.lock_accesses().iter() {
            for endpoint in access.endpoints.iter().filter(|e| e.skipped.is_none()) {
                if let Some(reported) = &endpoint.reported {
                    visit(key, &endpoint.resource, reported.healthy);
                }
            }
        }
    }

    /// Whether a signature rejection of a token believed valid was seen since the last call
    /// (or since the credential last changed); clears the flag.
    #[must_use]
    pub fn take_key_check(&self, key: &AccessKey) -> bool {
        self.shared.take_key_check(key)
    }

    /// The probe metrics.
    #[must_use]
    pub fn metrics(&self) -> &HealthMetrics {
        &self.metrics
    }

    /// Stops the task, cancelling probes in flight, and waits for it.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "health scheduler task ended abnormally");
        }
    }
}

/// One probe's result, as the probe task hands it back.
struct ProbeResult {
    outcome: ProbeOutcome,
    latency: Duration,
    believed_valid: bool,
}

struct EndpointState {
    resource: String,
    skipped: Option<String>,
    /// When the next probe is due.
    due: Instant,
    /// When the probe in flight (or the last one) was due: the phase of the schedule.
    scheduled: Instant,
    in_flight: bool,
    /// The health last reported; changes only on flips.
    reported: Option<EndpointHealth>,
    /// 429s in a row.
    rate_limited: u32,
    /// The last probe's signature was rejected while the token was believed valid: a key
    /// rotation is suspected, the key check was asked for, and the verdict waits for a second
    /// probe (by then the controller has usually re-signed, and this probe is moot).
    suspect_signature: bool,
}

struct Registered {
    plan: Arc<ProbePlan>,
    generation: u64,
    endpoints: Vec<EndpointState>,
    /// [`PER_ACCESS_IN_FLIGHT`] places: a probe takes one before it queues for the global
    /// bound. Closed when the plan is replaced or unregistered, which drops its queued probes.
    places: Arc<Semaphore>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.places.close();
    }
}

impl Registered {
    fn reported(&self) -> Vec<EndpointHealth> {
        self.endpoints.iter().filter_map(|e| e.reported.clone()).collect()
    }
}

struct Worker {
    prober: Arc<dyn EndpointProber>,
    semaphore: Arc<Semaphore>,
    /// Each probe's result; `None` for a probe dropped because its plan was replaced.
    probes: JoinSet<Option<ProbeResult>>,
    /// Which endpoint (and plan generation) each probe task is for.
    in_flight: HashMap<Id, (AccessKey, u64, String)>,
    events: mpsc::UnboundedSender<HealthChange>,
    shared: Arc<Shared>,
    metrics: HealthMetrics,
    next_generation: u64,
    /// No idle endpoint is due before this (it may be earlier than the true next due time, never
    /// later): the wake-up time without a scan of every endpoint.
    earliest_due: Option<Instant>,
    /// When the last dispatch scan ran.
    last_dispatch: Instant,
    /// The wall clock of probe tokens.
    clock: Clock,
}

/// Shortest time between two dispatch scans (each looks at every endpoint): probes due within
/// it go together, a few milliseconds late at most this much, instead of one scan per probe.
const DISPATCH_TICK: Duration = Duration::from_millis(50);

impl Worker {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Register(key, plan, seed)) => self.register(key, *plan, &seed),
                    Some(Command::Unregister(key)) => self.unregister(&key),
                    Some(Command::Shutdown) | None => break,
                },
                Some(joined) = self.probes.join_next_with_id(), if !self.probes.is_empty() => {
                    self.complete(joined);
                }
                () = sleep_until(wake) => self.dispatch_due(),
            }
        }
        self.probes.shutdown().await;
    }

    fn next_wake(&self) -> Option<Instant> {
        self.earliest_due.map(|due| due.max(self.last_dispatch + DISPATCH_TICK))
    }

    /// An idle endpoint is now due at `due`.
    fn note_due(&mut self, due: Instant) {
        self.earliest_due = earliest_of(self.earliest_due, due);
    }

    fn register(&mut self, key: AccessKey, plan: ProbePlan, seed: &[EndpointHealth]) {
        if plan.interval.is_zero() || plan.endpoints.is_empty() {
            self.unregister(&key);
            return;
        }
        // One lock over the whole swap: a reader (a reconcile taking the reported health) must
        // never find the access missing while it is being re-registered.
        let shared = Arc::clone(&self.shared);
        let mut accesses = shared.lock_accesses();
        if accesses.get(&key).is_some_and(|registered| *registered.plan == plan) {
            return;
        }
        let previous = accesses.remove(&key);
        // The health of an earlier run counts only for an access this run has not registered.
        let seed = if previous.is_some() { &[] } else { seed };
        let registered = self.schedule(&key, plan, previous.as_ref(), seed);
        for endpoint in registered.endpoints.iter().filter(|e| e.skipped.is_none() && !e.in_flight) {
            self.note_due(endpoint.due);
        }
        // A resumed access reports a change only where the plan differs from what was reported.
        let before = previous.map_or_else(|| seed.to_vec(), |p| p.reported());
        let after = registered.reported();
        accesses.insert(key.clone(), registered);
        drop(accesses);
        if !same_health(&before, &after) {
            self.publish(HealthChange { key, endpoints: after, key_check: false });
        }
    }

    /// The schedule of a new plan, keeping the previous one's timing and health where the
    /// endpoints are the same; without a previous one, starting from the `seed` health.
    fn schedule(
        &mut self,
        key: &AccessKey,
        plan: ProbePlan,
        previous: Option<&Registered>,
        seed: &[EndpointHealth],
    ) -> Registered {
        let now = Instant::now();
        let credential_changed = previous.is_some_and(|p| p.plan.credential != plan.credential);
        let interval_changed = previous.is_some_and(|p| p.plan.interval != plan.interval);
        if credential_changed {
            self.shared.take_key_check(key);
        }
        let endpoints = plan
            .endpoints
            .iter()
            .map(|planned| {
                let old = previous.and_then(|p| {
                    p.endpoints.iter().find(|e| e.resource == planned.resource && e.skipped.is_none())
                });
                let spread = jitter(&format!("{key}/{}", planned.resource));
                let fresh = now + first_probe_offset(plan.interval, spread);
                let (due, reported) = match (&planned.skipped, old) {
                    (Some(message), _) => (fresh, Some(EndpointHealth::skipped(&planned.resource, message))),
                    (None, Some(old)) => {
                        let mut due = if interval_changed { fresh } else { old.due };
                        let unhealthy = old.reported.as_ref().is_some_and(|r| !r.healthy);
                        if credential_changed && unhealthy {
                            due = due.min(now + recheck_delay(plan.interval, spread));
                        }
                        (due, old.reported.clone())
                    }
                    (None, None) => {
                        let seeded = seed.iter().find(|s| {
                            s.resource == planned.resource && s.reason != ProbeReason::NoSampleParams
                        });
                        (fresh, seeded.cloned())
                    }
                };
                EndpointState {
                    resource: planned.resource.clone(),
                    skipped: planned.skipped.clone(),
                    due,
                    scheduled: due,
                    in_flight: false,
                    reported,
                    rate_limited: old.map_or(0, |o| o.rate_limited),
                    suspect_signature: false,
                }
            })
            .collect();
        let generation = self.next_generation;
        self.next_generation += 1;
        let places = Arc::new(Semaphore::new(PER_ACCESS_IN_FLIGHT));
        Registered { plan: Arc::new(plan), generation, endpoints, places }
    }

    fn unregister(&mut self, key: &AccessKey) {
        self.shared.forget(key);
    }

    fn dispatch_due(&mut self) {
        let now = Instant::now();
        self.last_dispatch = now;
        let mut earliest: Option<Instant> = None;
        let shared = Arc::clone(&self.shared);
        let mut accesses = shared.lock_accesses();
        for (key, access) in accesses.iter_mut() {
            for endpoint in access.endpoints.iter_mut().filter(|e| e.skipped.is_none() && !e.in_flight) {
                if endpoint.due > now {
                    earliest = earliest_of(earliest, endpoint.due);
                    continue;
                }
                endpoint.in_flight = true;
                endpoint.scheduled = endpoint.due;
                let plan = Arc::clone(&access.plan);
                let prober = Arc::clone(&self.prober);
                let semaphore = Arc::clone(&self.semaphore);
                let places = Arc::clone(&access.places);
                let resource = endpoint.resource.clone();
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
                        Ok(request) => prober.probe(request).await,
                        Err(error) => {
                            ProbeOutcome::not_sent(&format!("cannot sign the probe token: {error}"))
                        }
                    };
                    Some(ProbeResult { outcome, latency: started.elapsed(), believed_valid })
                });
                self.in_flight
                    .insert(handle.id(), (key.clone(), access.generation, endpoint.resource.clone()));
            }
        }
        self.earliest_due = earliest;
    }

    fn complete(&mut self, joined: Result<(Id, Option<ProbeResult>), JoinError>) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => {
                tracing::warn!(%error, "health probe task failed");
                (error.id(), None)
            }
        };
        let Some((key, generation, resource)) = self.in_flight.remove(&id) else { return };
        let shared = Arc::clone(&self.shared);
        let mut accesses = shared.lock_accesses();
        let Some(access) = accesses.get_mut(&key) else { return };
        if access.generation != generation {
            return;
        }
        let interval = access.plan.interval;
        let Some(endpoint) = access.endpoints.iter_mut().find(|e| e.resource == resource) else { return };
        endpoint.in_flight = false;
        let now = Instant::now();
        let Some(ProbeResult { outcome, latency, believed_valid }) = result else {
            endpoint.due = next_due(endpoint.scheduled, interval, now);
            self.note_due(endpoint.due);
            return;
        };

        if outcome.reason == ProbeReason::RateLimited {
            endpoint.rate_limited = endpoint.rate_limited.saturating_add(1);
            let spread = jitter(&format!("{key}/{resource}/{}", endpoint.rate_limited));
            endpoint.due =
                now + rate_limited_delay(outcome.retry_after, endpoint.rate_limited, interval, spread);
        } else {
            endpoint.rate_limited = 0;
            endpoint.due = next_due(endpoint.scheduled, interval, now);
        }

        let health =
            EndpointHealth::from_outcome(&resource, &outcome, endpoint.reported.as_ref().map(|r| r.healthy));
        self.metrics.record(outcome.reason, latency);
        let key_check = outcome.reason == ProbeReason::SignatureRejected
            && believed_valid
            && outcome.auth_rejection.is_some_and(AuthRejection::suspects_the_key);
        let newly_flagged = key_check && self.shared.flag_key_check(&key);
        // A first rejection of a token believed valid is most often a key rotation the controller
        // is re-signing for right now: ask for the key check, re-probe soon, and report the
        // verdict only if the second probe (with the same token) is rejected too. That keeps a
        // routine rotation from flipping every endpoint to unhealthy and back.
        let held = key_check && !endpoint.suspect_signature;
        endpoint.suspect_signature = key_check;
        if held {
            let spread = jitter(&format!("{key}/{resource}/suspect"));
            endpoint.due = now + recheck_delay(interval, spread);
        }
        self.note_due(endpoint.due);
        let flipped =
            !held && endpoint.reported.as_ref().is_none_or(|reported| !reported.same_health(&health));
        if flipped {
            tracing::info!(
                namespace = %key.namespace, name = %key.name, %resource, reason = %health.reason,
                healthy = health.healthy, status = health.status_code, "endpoint health changed"
            );
            endpoint.reported = Some(health);
        }
        if flipped || newly_flagged {
            let endpoints = access.reported();
            self.publish(HealthChange { key, endpoints, key_check });
        }
    }

    fn publish(&self, change: HealthChange) {
        // The receiver is gone only when the controller stopped listening.
        let _ = self.events.send(change);
    }
}

fn earliest_of(earliest: Option<Instant>, due: Instant) -> Option<Instant> {
    Some(earliest.map_or(due, |earliest| earliest.min(due)))
}

fn same_health(before: &[EndpointHealth], after: &[EndpointHealth]) -> bool {
    before.len() == after.len() && before.iter().zip(after).all(|(b, a)| b.same_health(a))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
