//! The health scheduler: one tokio task owning every registered TenantAccess's probes.
//!
//! What a probe detects is mostly shared: each distinct (workspace, pipe) is probed once per
//! interval (the shortest of the accesses granting it) with the token of one of them in turn,
//! and its pipe-level verdict is what every access granting the pipe reports. What only a token
//! can get wrong (its signature or scopes refused, its own `limits.rps`) is found by checking
//! each token once soon after it is written, then every `tokenCheckInterval`; such a fault stays
//! with its access. Every probe to a workspace is paced within its budget (`spec.healthChecks`,
//! pipes first, intervals stretched to fit), a plan-level 429 holds back every probe to the
//! workspace, and health is reported only when it flips, so status is written only on flips.
//!
//! Beside the billed probes runs a free lane: each pipe's existence is checked at its interval
//! (never stretched) with the workspace admin token (`GET {api}/v0/pipes/{pipe}`, a metadata
//! call Tinybird does not bill), paced at the workspace's `maxQueriesPerSecond` on a pacer of its
//! own and outside its daily budget. A 404 is the pipe-level verdict `PipeNotFound` every member
//! reports, as a billed probe's 404 would be (and the billed probes of the pipe wait while it is
//! missing); a 200 for a pipe reported missing makes its billed probe due at once (first in line
//! for the budget's next slot) to confirm the recovery; a 403 asks for the admin token's check;
//! anything else (429, 5xx, no answer) is no verdict: the billed probes decide those. So a
//! removed pipe is found within one interval whatever the budget stretches.
//! Probes run under a global concurrency bound, of which one TenantAccess holds at most
//! [`PER_ACCESS_IN_FLIGHT`] places.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::{Id, JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::metrics::HealthMetrics;
use super::probe_timing::{first_probe_offset, next_due, rate_limited_delay, recheck_delay};
use crate::adapters::health::{
    AuthRejection, EndpointHealth, EndpointProber, ProbeOutcome, ProbePlan, ProbeReason, ProbeRequest,
};
use crate::core::backoff::jitter;
use crate::core::clock::Clock;

pub use self::budget::BudgetUse;
use self::budget::{ANSWER_WAIT, DAY, PLAN_LIMIT_CAP, WorkspaceState, lane_spacing};

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
    /// What each workspace's probes want against its budget, by `api_url#workspace_id`.
    budgets: Mutex<HashMap<Arc<str>, BudgetUse>>,
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

    fn lock_budgets(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, BudgetUse>> {
        self.budgets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets an access; the pipes it was a member of, if it was registered.
    fn forget(&self, key: &AccessKey) -> Option<Membership> {
        let removed = self.lock_accesses().remove(key);
        self.take_key_check(key);
        removed.as_ref().map(Membership::of)
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
    /// An access, and the pipes it was a member of when the handle forgot it.
    Unregister(AccessKey, Option<Membership>),
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
            existence_in_flight: HashMap::new(),
            groups: HashMap::new(),
            workspaces: HashMap::new(),
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
        let membership = self.shared.forget(key);
        let _ = self.commands.send(Command::Unregister(key.clone(), membership));
    }

    /// The TenantAccess resources registered (a registration still on its way may be missing).
    #[must_use]
    pub fn registered(&self) -> Vec<AccessKey> {
        self.shared.lock_accesses().keys().cloned().collect()
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

    /// What the probes of the workspace at `api_url` with `workspace_id` want against its
    /// budget (`None` before any of its TenantAccesses is registered): for its status.
    #[must_use]
    pub fn budget(&self, api_url: &str, workspace_id: &str) -> Option<BudgetUse> {
        let name = format!("{}#{workspace_id}", api_url.trim_end_matches('/'));
        self.shared.lock_budgets().get(name.as_str()).cloned()
    }

    /// Calls `visit(api_url#workspace_id, use)` for every workspace probed (for the budget
    /// gauge at scrape time).
    pub fn budgets(&self, mut visit: impl FnMut(&str, &BudgetUse)) {
        for (name, budget_use) in self.shared.lock_budgets().iter() {
            visit(name, budget_use);
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

/// A pipe of a workspace: what every token granting it shares (it exists or not, it answers or
/// fails, the workspace's key is accepted or not). Probed once per interval for all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PipeKey {
    /// API URL and workspace id.
    workspace: Arc<str>,
    /// The pipe.
    resource: Arc<str>,
}

impl PipeKey {
    fn new(workspace: &Arc<str>, resource: &str) -> Self {
        Self { workspace: Arc::clone(workspace), resource: resource.into() }
    }
}

/// The workspace a plan probes: its API URL and id.
fn workspace_of(plan: &ProbePlan) -> Arc<str> {
    format!("{}#{}", plan.api_url, plan.workspace_id).into()
}

/// Whether a 429 is the token's own `limits.rps` (its bucket's limit, when Tinybird says it, is
/// the token's rate) rather than the plan's QPS ceiling, which every probe to the workspace
/// shares.
fn own_rate_limit(plan: &ProbePlan, outcome: &ProbeOutcome) -> bool {
    plan.token_rps
        .is_some_and(|rps| rps > 0 && outcome.rate_limit.is_none_or(|limit| u64::from(rps) == limit))
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
            let health = EndpointHealth::from_outcome(&target.resource, outcome, previous);
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
                .then(|| Box::new(EndpointHealth::from_outcome(&target.resource, outcome, Some(false))));
        }
        (held, key_check, false)
    }
}

impl fmt::Display for PipeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workspace, self.resource)
    }
}

/// The shared probe of one pipe: its schedule, the TenantAccesses granting it, and the
/// pipe-level verdict they all report (unless their own token has a fault of its own).
struct PipeGroup {
    /// Each granting TenantAccess and its interval: the pipe is probed at the shortest.
    members: BTreeMap<AccessKey, Duration>,
    /// The member whose token probed last: the next probe uses the next member's, so that
    /// every token takes its turn.
    cursor: Option<AccessKey>,
    due: Instant,
    scheduled: Instant,
    in_flight: bool,
    /// The last pipe-level verdict.
    health: Option<EndpointHealth>,
    /// 429s in a row.
    rate_limited: u32,
    /// Per-token answers in a row (the pipe's verdict still unknown): the first is retried
    /// soon with the next member's token, later ones wait for the interval.
    token_answers: u32,
    /// The free existence check of the pipe.
    exists: ExistenceLane,
}

/// The existence check of a pipe (`GET {api}/v0/pipes/{pipe}` with the admin token): at the
/// pipe's interval, never stretched by the budget, which it is not charged to.
struct ExistenceLane {
    due: Instant,
    scheduled: Instant,
    in_flight: bool,
    /// Its last answer was a 404: the pipe's billed probes wait (they could only say the same)
    /// until a check finds it again or brings no verdict.
    missing: bool,
    /// A check found the pipe reported missing: its billed probe is due at once, ahead of the
    /// others, to confirm the recovery.
    confirm: bool,
}

impl PipeGroup {
    fn interval(&self) -> Duration {
        self.members.values().min().copied().unwrap_or(Duration::from_secs(300))
    }

    /// A probe or existence check of it is in flight: its answer still needs the group.
    fn busy(&self) -> bool {
        self.in_flight || self.exists.in_flight
    }

    /// Whether the pipe's reported verdict is "it does not exist".
    fn reported_missing(&self) -> bool {
        self.health.as_ref().is_some_and(|health| health.reason == ProbeReason::PipeNotFound)
    }

    /// The member whose token probes next.
    fn next_member(&self) -> Option<AccessKey> {
        let after = self.cursor.as_ref().and_then(|cursor| {
            self.members.range::<AccessKey, _>((Bound::Excluded(cursor), Bound::Unbounded)).next()
        });
        after.or_else(|| self.members.iter().next()).map(|(key, _)| key.clone())
    }
}

struct EndpointState {
    resource: String,
    skipped: Option<String>,
    /// When this token's own verification is due: soon after the token is written, then at the
    /// plan's token interval (`None`: not wanted).
    verify_due: Option<Instant>,
    /// A probe with this access's token is in flight (its verification or the pipe's probe).
    in_flight: bool,
    /// The health last reported; changes only on flips.
    reported: Option<EndpointHealth>,
    /// A fault of this token alone (its signature or scope refused): reported instead of the
    /// pipe's verdict until the token is replaced or accepted.
    token_fault: Option<Box<EndpointHealth>>,
    /// 429s in a row of its own rate limit.
    rate_limited: u32,
    /// Its own rate limit holds probes with its token back until then.
    limited_until: Option<Instant>,
    /// The last probe's signature was rejected while the token was believed valid: a key
    /// rotation is suspected, the key check was asked for, and the verdict waits for a second
    /// probe (by then the controller has usually re-signed, and this probe is moot).
    suspect_signature: bool,
}

impl EndpointState {
    /// Reports the token's fault, else the pipe's verdict; whether that flipped the health.
    fn update_reported(&mut self, pipe: Option<&EndpointHealth>, key: &AccessKey) -> bool {
        let Some(health) = self.token_fault.as_deref().or(pipe) else { return false };
        if self.reported.as_ref().is_some_and(|reported| reported.same_health(health)) {
            return false;
        }
        tracing::info!(
            namespace = %key.namespace, name = %key.name, resource = %self.resource, reason = %health.reason,
            healthy = health.healthy, status = health.status_code, "endpoint health changed"
        );
        let mut health = health.clone();
        health.resource.clone_from(&self.resource);
        self.reported = Some(health);
        true
    }
}

struct Registered {
    plan: Arc<ProbePlan>,
    /// [`workspace_of`] the plan.
    workspace: Arc<str>,
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

/// The pipes an access is a member of: its workspace and plan.
struct Membership {
    workspace: Arc<str>,
    plan: Arc<ProbePlan>,
}

impl Membership {
    fn of(registered: &Registered) -> Self {
        Self { workspace: Arc::clone(&registered.workspace), plan: Arc::clone(&registered.plan) }
    }
}

/// What a probe in flight is for.
struct InFlight {
    /// The access whose token it carries, and its plan generation.
    key: AccessKey,
    generation: u64,
    resource: String,
    /// The pipe's shared probe (else the token's own verification).
    pipe: Option<PipeKey>,
    /// The workspace probed.
    workspace: Arc<str>,
    /// The interval of what it probes (the longest a 429 without `Retry-After` holds it back).
    interval: Duration,
}

struct Worker {
    prober: Arc<dyn EndpointProber>,
    semaphore: Arc<Semaphore>,
    /// Each probe's result; `None` for a probe dropped because its plan was replaced.
    probes: JoinSet<Option<ProbeResult>>,
    /// What each probe task is for.
    in_flight: HashMap<Id, InFlight>,
    /// The pipe each existence-check task is for.
    existence_in_flight: HashMap<Id, PipeKey>,
    /// The shared probe of each pipe.
    groups: HashMap<PipeKey, PipeGroup>,
    /// Each workspace probed: its budget, pacing and rate-limit pause.
    workspaces: HashMap<Arc<str>, WorkspaceState>,
    events: mpsc::UnboundedSender<HealthChange>,
    shared: Arc<Shared>,
    metrics: HealthMetrics,
    next_generation: u64,
    /// Nothing idle is due before this (it may be earlier than the true next due time, never
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
/// Most members tried for a pipe's probe in one scan (when the next ones are busy or held back
/// by their own rate limit).
const MEMBER_TRIES: usize = 8;

impl Worker {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Register(key, plan, seed)) => self.register(key, *plan, &seed),
                    Some(Command::Unregister(key, membership)) => self.unregister(&key, membership),
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

    /// Something idle is now due at `due`.
    fn note_due(&mut self, due: Instant) {
        self.earliest_due = earliest_of(self.earliest_due, due);
    }

    fn register(&mut self, key: AccessKey, plan: ProbePlan, seed: &[EndpointHealth]) {
        if plan.interval.is_zero() || plan.endpoints.is_empty() {
            self.unregister(&key, None);
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
        self.leave_groups(&key, previous.as_ref().map(Membership::of));
        let mut registered = self.schedule(&key, plan, previous.as_ref(), seed);
        self.join_groups(&key, &mut registered);
        for due in registered.endpoints.iter().filter(|e| !e.in_flight).filter_map(|e| e.verify_due) {
            self.note_due(due);
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

    /// Makes `key` a member of the shared probe of each pipe it probes; an endpoint without a
    /// verdict yet takes the pipe's.
    fn join_groups(&mut self, key: &AccessKey, registered: &mut Registered) {
        let now = Instant::now();
        let interval = registered.plan.interval;
        for endpoint in registered.endpoints.iter_mut().filter(|e| e.skipped.is_none()) {
            let pipe = PipeKey::new(&registered.workspace, &endpoint.resource);
            let fresh = now + first_probe_offset(interval, jitter(&pipe.to_string()));
            let fresh_check = now + first_probe_offset(interval, jitter(&format!("{pipe}/exists")));
            let group = self.groups.entry(pipe.clone()).or_insert_with(|| PipeGroup {
                members: BTreeMap::new(),
                cursor: None,
                due: fresh,
                scheduled: fresh,
                in_flight: false,
                health: None,
                rate_limited: 0,
                token_answers: 0,
                exists: ExistenceLane {
                    due: fresh_check,
                    scheduled: fresh_check,
                    in_flight: false,
                    missing: false,
                    confirm: false,
                },
            });
            if interval < group.interval() {
                if !group.in_flight {
                    group.due = group.due.min(fresh);
                }
                if !group.exists.in_flight {
                    group.exists.due = group.exists.due.min(fresh_check);
                }
            }
            group.members.insert(key.clone(), interval);
            if endpoint.reported.is_none() {
                endpoint.update_reported(group.health.as_ref(), key);
            }
            let due = group.due.min(group.exists.due);
            self.note_due(due);
        }
        self.workspace_state(&registered.workspace).dirty = true;
    }

    fn leave_groups(&mut self, key: &AccessKey, membership: Option<Membership>) {
        let Some(Membership { workspace, plan }) = membership else { return };
        for resource in plan.probed_resources() {
            let pipe = PipeKey::new(&workspace, resource);
            if let Some(group) = self.groups.get_mut(&pipe) {
                group.members.remove(key);
                if group.members.is_empty() && !group.busy() {
                    self.groups.remove(&pipe);
                }
            }
        }
        self.workspace_state(&workspace).dirty = true;
    }

    /// The state of a workspace (created on first use).
    fn workspace_state(&mut self, workspace: &Arc<str>) -> &mut WorkspaceState {
        self.workspaces
            .entry(Arc::clone(workspace))
            .or_insert_with(|| WorkspaceState::new(Arc::clone(workspace)))
    }

    /// The schedule of a new plan, keeping the previous one's health where the endpoints are
    /// the same; without a previous one, starting from the `seed` health. A new token is
    /// verified within seconds; a resumed one (verified by an earlier run) over its interval.
    fn schedule(
        &mut self,
        key: &AccessKey,
        mut plan: ProbePlan,
        previous: Option<&Registered>,
        seed: &[EndpointHealth],
    ) -> Registered {
        let now = Instant::now();
        let credential_changed = previous.is_some_and(|p| p.plan.credential != plan.credential);
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
                let soon = now + recheck_delay(plan.interval, spread);
                let (verify_due, reported, token_fault) = match (&planned.skipped, old) {
                    (Some(message), _) => {
                        (None, Some(EndpointHealth::skipped(&planned.resource, message)), None)
                    }
                    (None, Some(old)) if credential_changed => (Some(soon), old.reported.clone(), None),
                    (None, Some(old)) => (old.verify_due, old.reported.clone(), old.token_fault.clone()),
                    (None, None) => {
                        let seeded = seed.iter().find(|s| {
                            s.resource == planned.resource && s.reason != ProbeReason::NoSampleParams
                        });
                        // Verified by an earlier run: re-verified over the token interval, so
                        // that a restart is no burst.
                        let verify = match seeded {
                            Some(_) if plan.budget.token_check_interval.is_zero() => None,
                            Some(_) => {
                                Some(now + first_probe_offset(plan.budget.token_check_interval, spread))
                            }
                            None => Some(soon),
                        };
                        (verify, seeded.cloned(), None)
                    }
                };
                EndpointState {
                    resource: planned.resource.clone(),
                    skipped: planned.skipped.clone(),
                    verify_due,
                    in_flight: false,
                    reported,
                    token_fault,
                    rate_limited: old.map_or(0, |o| o.rate_limited),
                    limited_until: old.and_then(|o| o.limited_until),
                    suspect_signature: false,
                }
            })
            .collect();
        let generation = self.next_generation;
        self.next_generation += 1;
        let places = Arc::new(Semaphore::new(PER_ACCESS_IN_FLIGHT));
        let workspace = self.intern_workspace(&mut plan);
        Registered { workspace, plan: Arc::new(plan), generation, endpoints, places }
    }

    fn unregister(&mut self, key: &AccessKey, membership: Option<Membership>) {
        // Registered again after the handle forgot it (its command was queued first).
        let registered = self.shared.forget(key);
        self.leave_groups(key, membership);
        self.leave_groups(key, registered);
    }

    /// The plan's workspace, one shared string per workspace; takes the plan's budget (the
    /// workspace's spec, the same for all its plans) and shares its admin token with the
    /// workspace's other plans (one copy per workspace).
    fn intern_workspace(&mut self, plan: &mut ProbePlan) -> Arc<str> {
        let name = workspace_of(plan);
        let state = self.workspace_state(&name);
        match &state.admin_token {
            Some(shared) if **shared == *plan.admin_token => plan.admin_token = Arc::clone(shared),
            _ => state.admin_token = Some(Arc::clone(&plan.admin_token)),
        }
        if state.budget != plan.budget {
            state.budget = plan.budget;
            state.dirty = true;
            // Paced from now at the new rate.
            state.next_slot = Instant::now() + plan.budget.spacing(DISPATCH_TICK);
            state.lane_next_slot = Instant::now() + lane_spacing(&plan.budget);
        }
        Arc::clone(&state.name)
    }

    fn dispatch_due(&mut self) {
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
        for (key, access) in accesses.iter() {
            for (index, endpoint) in access.endpoints.iter().enumerate() {
                if endpoint.skipped.is_some() || endpoint.in_flight {
                    continue;
                }
                let Some(due) = endpoint.verify_due else { continue };
                if due > now {
                    earliest = earliest_of(earliest, due);
                    continue;
                }
                // A token of a pipe known missing: its check could only say so too.
                let pipe = PipeKey::new(&access.workspace, &endpoint.resource);
                if self.groups.get(&pipe).is_some_and(|group| group.exists.missing) {
                    continue;
                }
                due_now.push((due, Due::Token(key.clone(), index)));
            }
        }
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
                Err(error) => ProbeOutcome::not_sent(&format!("cannot sign the probe token: {error}")),
            };
            Some(ProbeResult { outcome, latency: started.elapsed(), believed_valid })
        });
        self.in_flight.insert(handle.id(), target);
    }

    fn complete(&mut self, joined: Result<(Id, Option<ProbeResult>), JoinError>) {
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
            changes.push(HealthChange { key: target.key.clone(), endpoints: access.reported(), key_check });
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
                self.groups.remove(pipe);
                return;
            }
            let due = group.due;
            self.note_due(due);
        }
    }

    fn publish(&self, change: HealthChange) {
        // The receiver is gone only when the controller stopped listening.
        let _ = self.events.send(change);
    }
}

/// Makes `outcome` (a pipe-level answer) the pipe's verdict and reports it for every member
/// whose health it flips (a member with a fault of its own keeps reporting that). `accepted`:
/// the access (and plan generation) whose token brought the answer, which has no fault of its
/// own then; `None` for an existence check, made with the admin token.
fn spread_verdict(
    group: &mut PipeGroup,
    pipe: &PipeKey,
    outcome: &ProbeOutcome,
    accesses: &mut HashMap<AccessKey, Registered>,
    accepted: Option<(&AccessKey, u64)>,
    changes: &mut Vec<HealthChange>,
) {
    group.token_answers = 0;
    let previous = group.health.as_ref().map(|h| h.healthy);
    group.health = Some(EndpointHealth::from_outcome(&pipe.resource, outcome, previous));
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
            });
        }
    }
}

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

fn earliest_of(earliest: Option<Instant>, due: Instant) -> Option<Instant> {
    Some(earliest.map_or(due, |earliest| earliest.min(due)))
}

fn earliest_of_both(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), b) => earliest_of(b, a),
        (None, b) => b,
    }
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

mod budget;
mod lane;
#[cfg(test)]
mod tests;
