//! What every reconcile shares: the client, the caches, the event publisher, the settings.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, core::PartialObjectMeta};

use super::workspace_cache::{WorkspaceCache, WorkspaceKey};
use crate::adapters::events::EventPublisher;
use crate::api::{ClusterTinybirdWorkspace, TinybirdWorkspace};
use crate::core::backoff::{Backoff, jitter};
use crate::core::clock::Clock;

/// Settings of a running operator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of ClusterTinybirdWorkspace admin tokens (the operator's own).
    pub cluster_resource_namespace: String,
    /// Backoff of failing objects.
    pub backoff: Backoff,
    /// Re-check interval of healthy objects when nothing else schedules them.
    pub resync: Duration,
    /// Whether the operator watches every namespace (and so may use cluster workspaces).
    pub cluster_wide: bool,
    /// When set, only these namespaces are served (the rest is ignored).
    pub namespaces: Option<std::collections::BTreeSet<String>>,
}

impl Settings {
    /// Whether objects of this namespace are served.
    #[must_use]
    pub fn serves(&self, namespace: &str) -> bool {
        self.namespaces.as_ref().is_none_or(|set| set.contains(namespace))
    }
}

/// The shared state of the reconcilers.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// The workspaces, loaded and checked (admin token, Clerk key).
    pub workspace_cache: WorkspaceCache,
    /// The watch caches.
    pub caches: Caches,
    /// The operator's own writes and the Secrets that exist, fed by the watches.
    pub ledger: Ledger,
    /// Tinybird and Clerk clients.
    pub apis: Apis,
    /// Events, sent off the reconcile path.
    pub events: EventPublisher,
    /// Metrics.
    pub metrics: crate::runtime::metrics::Metrics,
    /// The endpoint health checks.
    pub health: crate::runtime::health::HealthScheduler,
    /// When each workspace's admin token was last checked with Tinybird, and which are due.
    pub admin_checks: AdminTokenChecks,
    /// Failures per object (backoff) and reconciles waiting for the API server.
    pub retries: Retries,
    /// Asks the workspace controllers to reconcile a workspace now.
    pub workspace_rechecks: WorkspaceRechecks,
    /// Refreshed admin tokens on their way to their Secrets (the process's one custody).
    pub custody: super::key_custody::KeyCustody,
    /// Pipe isolation verdicts read outside the health checks (for `pipeIsolation: Enforce`).
    pub isolation_gate: Arc<super::isolation_gate::IsolationGate>,
    /// Lifts the client's limit while a rotation re-signs.
    pub rotation_boost: Option<super::RotationBoost>,
    /// When each TenantAccess in order is looked at again.
    pub wakeups: super::wakeups::Wakeups,
    /// The wall clock.
    clock: Clock,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// What the operator knows of its own writes and of the Secrets that exist, fed by the watches.
#[derive(Clone, Default)]
#[allow(missing_debug_implementations)]
pub struct Ledger {
    /// The objects last written, preferred over older cached copies; their echoes trigger nothing.
    pub last_writes: super::writes::LastWrites,
    /// Digests of the managed token Secrets (instead of a cache of them).
    pub token_secrets: super::token_secrets::TokenSecrets,
    /// Which Secrets exist (names only), to create a token Secret without a GET first.
    pub known_secrets: super::known_secrets::KnownSecrets,
    /// The data of the Clerk template ConfigMaps, as last written or read.
    pub template_configmaps: super::template_configmaps::TemplateConfigMaps,
}

impl Ledger {
    /// Records a token Secret the operator wrote (the API server's answer): its digest, and its
    /// resourceVersion to recognise the watch event it causes.
    pub fn wrote_secret(&self, secret: &Secret) {
        self.token_secrets.wrote(secret);
        self.last_writes.wrote_secret(secret);
    }
}

/// The clients of the services outside the cluster.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Apis {
    /// The HTTP client of Tinybird calls (admin-token checks and refreshes).
    pub tinybird: reqwest::Client,
    /// Clerk clients, one rate limiter per Clerk instance.
    pub clerk: crate::adapters::clerk::ClerkClients,
}

/// The admin-token checks with Tinybird: when each workspace's key was last answered, and which
/// workspaces must be checked at their next reconcile.
#[derive(Clone, Default, Debug)]
pub struct AdminTokenChecks {
    /// Workspaces whose admin token must be checked at their next reconcile.
    forced: Arc<Mutex<HashSet<WorkspaceKey>>>,
    /// Last check per workspace: (key fingerprint, when).
    answered: Arc<Mutex<HashMap<WorkspaceKey, (String, Timestamp)>>>,
}

impl AdminTokenChecks {
    /// Asks for a Tinybird check of this workspace's admin token at its next reconcile.
    pub fn force(&self, workspace: WorkspaceKey) {
        if let Ok(mut forced) = self.forced.lock() {
            forced.insert(workspace);
        }
    }

    /// Whether a check was asked for (and forgets the request).
    #[must_use]
    pub fn take_forced(&self, workspace: &WorkspaceKey) -> bool {
        self.forced.lock().is_ok_and(|mut forced| forced.remove(workspace))
    }

    /// Whether Tinybird answered a check of this key (its fingerprint) of this workspace.
    #[must_use]
    pub fn answered(&self, workspace: &WorkspaceKey, fingerprint: &str) -> bool {
        self.answered
            .lock()
            .is_ok_and(|checks| checks.get(workspace).is_some_and(|(checked, _)| checked == fingerprint))
    }

    /// None when a check of this key is due now; else the time until it is.
    #[must_use]
    pub fn due_in(
        &self,
        workspace: &WorkspaceKey,
        fingerprint: &str,
        interval: Duration,
        now: Timestamp,
    ) -> Option<Duration> {
        let answered = self.answered.lock().ok()?;
        let (checked_fingerprint, at) = answered.get(workspace)?;
        if checked_fingerprint != fingerprint {
            return None;
        }
        let elapsed = Duration::try_from(now.duration_since(*at)).unwrap_or_default();
        interval.checked_sub(elapsed).filter(|left| !left.is_zero())
    }

    /// Records that a key was answered now.
    pub fn record(&self, workspace: WorkspaceKey, fingerprint: &str, now: Timestamp) {
        if let Ok(mut answered) = self.answered.lock() {
            answered.insert(workspace, (fingerprint.to_owned(), now));
        }
    }
}

/// When failing objects are tried again: the backoff of each, and the reconciles that wait for
/// the API server.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Retries {
    /// The backoff of failing objects.
    backoff: Backoff,
    /// Consecutive failures per object.
    failures: Arc<Mutex<HashMap<String, u32>>>,
    /// Objects whose reconcile failed for want of the API server, retried once it is back.
    pub outage: super::api_recovery::OutageRetries,
}

impl Retries {
    /// Records a failure of `object` and returns the attempts so far and the backoff delay before
    /// the next.
    #[must_use]
    pub fn failed<K: Resource<DynamicType = ()>>(&self, object: &K) -> (u32, Duration) {
        let key = ObjectRef::from_obj(object).to_string();
        let attempts = self.failures.lock().map_or(1, |mut failures| {
            let count = failures.entry(key.clone()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        });
        (attempts, self.backoff.delay(attempts, jitter(&key)))
    }

    /// Forgets the failures of `object` after a success.
    pub fn succeeded<K: Resource<DynamicType = ()>>(&self, object: &K) {
        let key = ObjectRef::from_obj(object).to_string();
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&key);
        }
    }
}

/// The caches a Context reads.
#[allow(missing_debug_implementations)]
#[derive(Clone)]
pub struct Caches {
    /// TenantAccess cache.
    pub tenant_accesses: Store<super::cached_access::CachedTenantAccess>,
    /// Namespaced workspaces cache.
    pub workspaces: Store<TinybirdWorkspace>,
    /// Cluster workspaces cache.
    pub cluster_workspaces: Store<ClusterTinybirdWorkspace>,
    /// Namespaces cache.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Managed ConfigMaps cache, metadata only (see `watches::keep_only_what_is_owned`).
    pub managed_configmaps: Store<PartialObjectMeta<ConfigMap>>,
}

impl Context {
    /// A context over the given caches.
    ///
    /// # Errors
    /// When the HTTP clients cannot be built (TLS backend): the process does not start rather
    /// than run a client without timeouts.
    pub fn new(
        client: Client,
        settings: Settings,
        caches: Caches,
        workspace_cache: WorkspaceCache,
        services: Services,
    ) -> Result<Self, String> {
        let Services {
            events,
            ledger,
            clerk_options,
            health,
            workspace_rechecks,
            metrics,
            clock,
            rotation_boost,
        } = services;
        let tinybird = crate::adapters::http::client(crate::adapters::tinybird::VERIFY_TIMEOUT)
            .map_err(|error| format!("the Tinybird HTTP client could not be built: {error}"))?;
        let clerk = crate::adapters::clerk::ClerkClients::new(clerk_options)
            .map_err(|error| format!("the Clerk HTTP client could not be built: {error}"))?;
        let isolation_gate =
            Arc::new(super::isolation_gate::IsolationGate::new(clock.now(), settings.resync));
        Ok(Self {
            apis: Apis { tinybird, clerk },
            retries: Retries {
                backoff: settings.backoff,
                failures: Arc::default(),
                outage: super::api_recovery::OutageRetries::default(),
            },
            events,
            ledger,
            health,
            admin_checks: AdminTokenChecks::default(),
            workspace_rechecks,
            metrics,
            client,
            settings,
            workspace_cache,
            caches,
            custody: super::key_custody::KeyCustody::process(),
            isolation_gate,
            rotation_boost,
            wakeups: super::wakeups::Wakeups::default(),
            clock,
        })
    }

    /// Now, by the context's clock.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The context's clock.
    #[must_use]
    pub fn clock(&self) -> Clock {
        self.clock
    }
}

/// Senders that make the workspace controllers reconcile a workspace now.
#[derive(Debug, Clone)]
pub struct WorkspaceRechecks {
    /// Namespaced workspaces.
    pub namespaced: tokio::sync::mpsc::UnboundedSender<ObjectRef<crate::api::TinybirdWorkspace>>,
    /// Cluster workspaces.
    pub cluster: tokio::sync::mpsc::UnboundedSender<ObjectRef<crate::api::ClusterTinybirdWorkspace>>,
}

/// The services a Context is built with.
#[allow(missing_debug_implementations)]
pub struct Services {
    /// The event publisher.
    pub events: EventPublisher,
    /// The ledger the watches feed.
    pub ledger: Ledger,
    /// Clerk client settings (budget, timeouts).
    pub clerk_options: crate::adapters::clerk::ClerkClientOptions,
    /// The health-check scheduler.
    pub health: crate::runtime::health::HealthScheduler,
    /// Channels to the workspace controllers.
    pub workspace_rechecks: WorkspaceRechecks,
    /// Metrics.
    pub metrics: crate::runtime::metrics::Metrics,
    /// The wall clock of every decision (token times, verification intervals).
    pub clock: Clock,
    /// Lifts the client's limit while a rotation re-signs.
    pub rotation_boost: Option<super::RotationBoost>,
}
