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
use tokio::task::{Id, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::metrics::HealthMetrics;
use super::probe_timing::{first_probe_offset, recheck_delay};
use crate::adapters::health::{
    EndpointHealth, EndpointProber, PipeDescribed, ProbeOutcome, ProbePlan, ProbeReason, ProbeRequest,
};
use crate::core::backoff::jitter;
use crate::core::clock::Clock;

pub use self::budget::BudgetUse;
use self::budget::{WorkspaceState, lane_spacing};

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
    /// Not a change of health: a pipe's description was read for the first time or changed
    /// (edited at Tinybird), so the TenantAccess judges the pipe's isolation again.
    pub described: bool,
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
    /// Each probed pipe's description, as its last existence check read it (kept while the pipe
    /// has members).
    descriptions: Mutex<HashMap<PipeKey, Described>>,
}

/// A pipe's description, and the verdicts already judged from it, by the params judged (few:
/// the distinct sets of params the TenantAccesses granting the pipe pin). Judging parses the
/// pipe's SQL: once per description and set of params, not at every reconcile.
struct Described {
    description: PipeDescribed,
    verdicts: HashMap<Vec<String>, Vec<crate::api::ParamIsolation>>,
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

    fn lock_descriptions(&self) -> std::sync::MutexGuard<'_, HashMap<PipeKey, Described>> {
        self.descriptions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// The verdicts on `params` of the pipe `resource` that a registered TenantAccess probes,
    /// judged from the description its last existence check read
    /// ([`crate::core::isolation_report::judge_pipe`]; `None`: not checked yet, or not probed).
    #[must_use]
    pub fn pipe_verdicts(
        &self,
        key: &AccessKey,
        resource: &str,
        params: &[&str],
    ) -> Option<Vec<crate::api::ParamIsolation>> {
        let workspace = self.shared.lock_accesses().get(key).map(|access| Arc::clone(&access.workspace))?;
        self.verdicts_in(&workspace, resource, params)
    }

    /// The verdicts on `params` of the pipe `resource` of the workspace at `api_url` with
    /// `workspace_id`, when some registered TenantAccess probes it (`None` otherwise, or before
    /// its first existence check): whoever asks, one description per pipe.
    #[must_use]
    pub fn workspace_pipe_verdicts(
        &self,
        api_url: &str,
        workspace_id: &str,
        resource: &str,
        params: &[&str],
    ) -> Option<Vec<crate::api::ParamIsolation>> {
        self.verdicts_in(&workspace_name(api_url, workspace_id).into(), resource, params)
    }

    /// Every described pipe's verdicts, on every param judged so far, by workspace
    /// ([`workspace_name`]): what the workspaces' statuses list.
    #[must_use]
    pub fn described_pipes(&self) -> DescribedPipes {
        let mut by_workspace = DescribedPipes::new();
        self.visit_described(None, |workspace, pipe, verdicts| {
            by_workspace.entry(Arc::clone(workspace)).or_default().push((pipe.to_owned(), verdicts));
        });
        by_workspace
    }

    /// [`described_pipes`](Self::described_pipes) of one workspace.
    #[must_use]
    pub fn described_pipes_of(&self, workspace: &str) -> PipeVerdicts {
        let mut pipes = Vec::new();
        self.visit_described(Some(workspace), |_, pipe, verdicts| pipes.push((pipe.to_owned(), verdicts)));
        pipes
    }

    /// Calls `visit` with each described pipe's merged verdicts (of `only` that workspace, when
    /// given: the others are not merged).
    fn visit_described(
        &self,
        only: Option<&str>,
        mut visit: impl FnMut(&Arc<str>, &str, Vec<crate::api::ParamIsolation>),
    ) {
        for (pipe, described) in self.shared.lock_descriptions().iter() {
            if only.is_some_and(|workspace| *pipe.workspace != *workspace) {
                continue;
            }
            let verdicts = crate::core::isolation_report::merge_params(described.verdicts.values());
            if !verdicts.is_empty() {
                visit(&pipe.workspace, &pipe.resource, verdicts);
            }
        }
    }

    fn verdicts_in(
        &self,
        workspace: &Arc<str>,
        resource: &str,
        params: &[&str],
    ) -> Option<Vec<crate::api::ParamIsolation>> {
        let mut descriptions = self.shared.lock_descriptions();
        let described = descriptions.get_mut(&PipeKey::new(workspace, resource))?;
        let wanted: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
        if let Some(verdicts) = described.verdicts.get(&wanted) {
            return Some(verdicts.clone());
        }
        let description = described.description.as_ref().map(AsRef::as_ref).map_err(String::as_str);
        let verdicts = crate::core::isolation_report::judge_pipe(Some(description), params)?;
        described.verdicts.insert(wanted, verdicts.clone());
        Some(verdicts)
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
        self.shared.lock_budgets().get(workspace_name(api_url, workspace_id).as_str()).cloned()
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

/// Pipes and their verdicts on every param judged, by pipe name.
pub type PipeVerdicts = Vec<(String, Vec<crate::api::ParamIsolation>)>;

/// [`PipeVerdicts`] by workspace ([`workspace_name`]).
pub type DescribedPipes = HashMap<Arc<str>, PipeVerdicts>;

/// The name of the Tinybird workspace at `api_url` with `workspace_id` (`api_url#workspace_id`):
/// how the scheduler, the isolation gate and the workspaces' statuses key what they know of it.
#[must_use]
pub fn workspace_name(api_url: &str, workspace_id: &str) -> String {
    format!("{}#{workspace_id}", api_url.trim_end_matches('/'))
}

/// The workspace a plan probes: its API URL and id.
fn workspace_of(plan: &ProbePlan) -> Arc<str> {
    workspace_name(&plan.api_url, &plan.workspace_id).into()
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
    health: Option<Arc<EndpointHealth>>,
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
    /// (Shared with its pipe's verdict when it reports that: one copy for all the members.)
    reported: Option<Arc<EndpointHealth>>,
    /// A fault of this token alone (its signature or scope refused): reported instead of the
    /// pipe's verdict until the token is replaced or accepted.
    token_fault: Option<Arc<EndpointHealth>>,
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
    fn update_reported(&mut self, pipe: Option<&Arc<EndpointHealth>>, key: &AccessKey) -> bool {
        let Some(health) = self.token_fault.as_ref().or(pipe) else { return false };
        if let Some(reported) = &self.reported
            && reported.same_health(health)
        {
            // The same verdict: shared with the pipe's from now on (one resumed from the status
            // of an earlier run is a copy of its own until then).
            if !Arc::ptr_eq(reported, health) && health.resource == self.resource && **reported == **health {
                self.reported = Some(Arc::clone(health));
            }
            return false;
        }
        tracing::info!(
            namespace = %key.namespace, name = %key.name, resource = %self.resource, reason = %health.reason,
            healthy = health.healthy, status = health.status_code, "endpoint health changed"
        );
        self.reported = Some(if health.resource == self.resource {
            Arc::clone(health)
        } else {
            Arc::new(EndpointHealth { resource: self.resource.clone(), ..(**health).clone() })
        });
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
        self.endpoints.iter().filter_map(|e| e.reported.as_deref().cloned()).collect()
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
            self.publish(HealthChange { key, endpoints: after, key_check: false, described: false });
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
            // A new pipe's description is read at once (free, paced by the lane), so that its
            // isolation verdict comes with the first report, not up to an interval later.
            let fresh_check = now;
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
                    self.drop_group(&pipe);
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
                        (None, Some(Arc::new(EndpointHealth::skipped(&planned.resource, message))), None)
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
                        (verify, seeded.cloned().map(Arc::new), None)
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
    /// workspace's spec, the same for all its plans), shares its admin token, API URL and
    /// workspace id with the workspace's other plans (one copy per workspace) and keeps its
    /// issued token compacted against the workspace's first.
    fn intern_workspace(&mut self, plan: &mut ProbePlan) -> Arc<str> {
        let name = workspace_of(plan);
        let state = self.workspace_state(&name);
        match &state.admin_token {
            Some(shared) if **shared == *plan.admin_token => plan.admin_token = Arc::clone(shared),
            _ => state.admin_token = Some(Arc::clone(&plan.admin_token)),
        }
        plan.credential.compact(&mut state.token_basis);
        match &state.ids {
            Some((api_url, workspace_id))
                if *api_url == plan.api_url && *workspace_id == plan.workspace_id =>
            {
                plan.api_url = Arc::clone(api_url);
                plan.workspace_id = Arc::clone(workspace_id);
            }
            _ => state.ids = Some((Arc::clone(&plan.api_url), Arc::clone(&plan.workspace_id))),
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

    /// Removes a pipe's group (it has no members and nothing in flight), and what is known of
    /// the pipe.
    fn drop_group(&mut self, pipe: &PipeKey) {
        self.groups.remove(pipe);
        self.shared.lock_descriptions().remove(pipe);
    }

    fn publish(&self, change: HealthChange) {
        // The receiver is gone only when the controller stopped listening.
        let _ = self.events.send(change);
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

mod answers;
mod budget;
mod dispatch;
mod lane;
#[cfg(test)]
mod tests;
