//! The running operator: the two reconcilers (workspaces, TenantAccess) assembled over the
//! watches and caches of `watches.rs`, and run until shutdown.

pub mod admission;
pub mod api_recovery;
pub mod budget_status;
pub mod cached_access;
pub mod clerk_sweep;
pub mod clerk_sync;
pub mod context;
pub mod error;
pub mod isolation_gate;
pub mod key_custody;
pub mod known_secrets;
pub mod observe;
mod output_writes;
mod report;
mod rotation;
pub mod template_configmaps;
pub mod tenants;
pub mod token_secrets;
pub mod wakeups;
mod watches;
pub mod workspace_cache;
pub mod workspace_reconciler;
pub mod writes;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _, future};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};

use self::context::{Context, Settings};
use self::watches::{Watches, receiver_stream, workspaces_for_secret};
use self::workspace_cache::WorkspaceCache;

/// The client-side limit a rotation's re-signing runs under, and the handle that lifts the
/// steady one to it ([`crate::adapters::kube_client::Pace`]).
#[derive(Debug, Clone)]
pub struct RotationBoost {
    /// The handle on the controllers' client limit.
    pub pace: crate::adapters::kube_client::Pace,
    /// The ceiling while a rotation re-signs.
    pub limit: crate::adapters::kube_client::RateLimit,
}

impl RotationBoost {
    /// How long one sighting of a rotation lifts the limit (each pass of a rotation still
    /// re-signing extends it).
    pub const WINDOW: Duration = Duration::from_secs(120);

    /// Lifts the limit for [`Self::WINDOW`].
    pub fn lift(&self) {
        self.pace.boost(self.limit, Self::WINDOW);
    }
}

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Namespaces to serve (empty: all). One namespace means namespace-scoped watches (and no
    /// cluster workspaces); several mean cluster-wide watches filtered to these namespaces.
    pub namespaces: Vec<String>,
    /// Namespace of ClusterTinybirdWorkspace admin tokens.
    pub cluster_resource_namespace: String,
    /// Concurrent reconciles per controller.
    pub concurrency: u16,
    /// Re-check interval when nothing else schedules an object.
    pub resync: Duration,
    /// Name of this replica (pod name), for events.
    pub instance: Option<String>,
    /// Health probes in flight at once, over all TenantAccess.
    pub probe_concurrency: usize,
    /// The metrics the controllers record (shared with the admin server).
    pub metrics: crate::runtime::metrics::Metrics,
    /// Set once every watch has synced (for `/readyz`).
    pub synced: Arc<std::sync::atomic::AtomicBool>,
    /// Lifts the client's limit while a rotation re-signs (`None`: the steady limit always).
    pub rotation_boost: Option<RotationBoost>,
    /// Requests the operator may make to one Clerk instance per window (Clerk allows 100 per
    /// 10 s on development instances, 1000 on production ones; leave room for your app).
    pub clerk_budget: crate::adapters::clerk::RequestBudget,
}

/// Why the controllers could not start.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot start: {0}")]
pub struct StartError(pub String);

/// Runs the controllers until `shutdown` resolves (then finishes in-flight reconciles). Events
/// are sent with `client` too.
///
/// # Errors
/// When the operator cannot start (its HTTP clients cannot be built): nothing ran.
pub async fn run(
    client: Client,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    run_with_event_client(client.clone(), client, config, shutdown).await
}

/// [`run`], with events sent by `events_client` (its own rate limit, so that events never take
/// the request budget of the writes).
///
/// # Errors
/// As [`run`].
pub async fn run_with_event_client(
    client: Client,
    events_client: Client,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let shutdown = shutdown.shared();
    let ns = match config.namespaces.as_slice() {
        [only] => Some(only.as_str()),
        _ => None,
    };
    let workspace_cache = WorkspaceCache::default();
    let ledger = context::Ledger::default();
    let Watches {
        caches,
        workspaces: workspace_controller,
        cluster_workspaces: cluster_workspace_controller,
        tenants: tenant_controller,
        tenant_dependencies,
        admin_secrets,
        cluster_admin_secrets,
    } = Watches::new(&client, ns, &config.cluster_resource_namespace, &ledger);
    let cluster_wide = ns.is_none();
    // Every cache a TenantAccess reconcile reads, synced: before that, a reconcile would decide
    // from a partial view (a workspace or namespace not listed yet, a token Secret not digested)
    // and flip a healthy TenantAccess, write, and warn, only to undo it a moment later.
    let synced = caches_synced(caches.clone(), ledger.clone(), cluster_wide).boxed().shared();

    let settings = Settings {
        cluster_resource_namespace: config.cluster_resource_namespace.clone(),
        backoff: crate::core::backoff::Backoff::default(),
        resync: config.resync,
        cluster_wide,
        namespaces: (config.namespaces.len() > 1).then(|| config.namespaces.iter().cloned().collect()),
    };
    let Started { services, health_events, namespaced_rechecks, cluster_rechecks } =
        start_services(&config, events_client, ledger).map_err(StartError)?;
    let ctx = Arc::new(
        Context::new(client.clone(), settings, caches.clone(), workspace_cache.clone(), services)
            .map_err(StartError)?,
    );

    let controller_config = kube::runtime::controller::Config::default().concurrency(config.concurrency);
    let workspaces = run_workspaces(
        workspace_controller,
        admin_secrets,
        caches.workspaces.clone(),
        namespaced_rechecks,
        controller_config.clone(),
        shutdown.clone(),
        &ctx,
    )
    .boxed();
    let cluster_workspaces = match cluster_admin_secrets {
        Some(secrets) => run_workspaces(
            cluster_workspace_controller,
            secrets,
            caches.cluster_workspaces.clone(),
            cluster_rechecks,
            controller_config.clone(),
            shutdown.clone(),
            &ctx,
        )
        .boxed(),
        None => future::ready(()).boxed(),
    };

    let ready = synced.clone();
    let tenants = watches::with_dependencies(
        &client,
        ns,
        tenant_controller.with_config(controller_config),
        tenant_dependencies,
    )
    .trigger_backoff(watches::WatchBackoff::merged());
    let health_triggers =
        health_events.map(|change| ObjectRef::new(&change.key.name).within(&change.key.namespace));
    let (outage_retry, outage_retries) = tokio::sync::mpsc::unbounded_channel();
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let woken = receiver_stream(woken)
        .map(|key: crate::runtime::health::AccessKey| ObjectRef::new(&key.name).within(&key.namespace));
    let tenants = tenants
        .reconcile_on(health_triggers)
        .reconcile_on(receiver_stream(outage_retries))
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            move |access, ctx| {
                let synced = synced.clone();
                async move {
                    synced.await;
                    tenants::reconcile(access, ctx).await
                }
            },
            tenants::error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));

    tracing::info!(namespace = ns.unwrap_or("<all>"), cluster_resource_namespace = %config.cluster_resource_namespace, "operator started");
    config.metrics.attach(
        caches.tenant_accesses.clone(),
        caches.workspaces.clone(),
        caches.cluster_workspaces.clone(),
        ctx.health.clone(),
    );
    let synced = ready_when_synced(ready, config.synced.clone());
    let sweep = sweep_deleted(ctx.clone(), shutdown.clone());
    let templates = clerk_sweep::run(ctx.clone(), config.synced.clone(), shutdown.clone());
    let recovery =
        api_recovery::run(client, ctx.retries.outage.clone(), outage_retry, ctx.workspace_rechecks.clone());
    let budgets =
        budget_status::run(ctx.clone(), caches.workspaces.clone(), caches.cluster_workspaces.clone());
    let recovery = async {
        tokio::select! {
            () = future::join(recovery, budgets).map(|_| ()) => {},
            () = shutdown.clone() => {},
        }
    };
    let wakeups = ctx.wakeups.clone().run(
        move |key| {
            // The receiver is gone only once the controller stopped.
            let _ = wake.send(key);
        },
        shutdown.clone(),
    );
    let sweep = async move {
        futures::join!(sweep, templates, synced, recovery, wakeups);
    };
    future::join4(workspaces, cluster_workspaces, tenants, sweep).await;
    ctx.health.shutdown().await;
    // What was decided is told: the events still queued are sent before the process exits.
    ctx.events.flush(Duration::from_secs(10)).await;
    tracing::info!("operator stopped");
    Ok(())
}

/// The services of the reconcilers, and the streams of what they ask to reconcile.
struct Started {
    services: context::Services,
    health_events: crate::runtime::health::HealthEvents,
    namespaced_rechecks: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<crate::api::TinybirdWorkspace>>,
    cluster_rechecks: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<crate::api::ClusterTinybirdWorkspace>>,
}

/// Starts the services the reconcilers share: the event publisher, the health scheduler and
/// the Clerk settings, on one clock.
fn start_services(
    config: &RunConfig,
    events_client: Client,
    ledger: context::Ledger,
) -> Result<Started, String> {
    let clock = crate::core::clock::Clock::system();
    // Reconciles never wait for Clerk: a throttled call comes back later (a requeue), so that a
    // reconcile worker is never held by Clerk while token Secrets wait to be re-signed.
    let clerk_options = crate::adapters::clerk::ClerkClientOptions {
        budget: config.clerk_budget,
        clock,
        max_wait: Duration::ZERO,
        ..Default::default()
    };
    let prober = crate::adapters::health::HttpProber::new().map_err(|error| error.to_string())?;
    let (health, health_events) = crate::runtime::health::HealthScheduler::start(
        crate::runtime::health::HealthConfig { concurrency: config.probe_concurrency.max(1), clock },
        Arc::new(prober),
    );
    let (namespaced, namespaced_rechecks) = tokio::sync::mpsc::unbounded_channel();
    let (cluster, cluster_rechecks) = tokio::sync::mpsc::unbounded_channel();
    let events = crate::adapters::events::EventPublisher::start(
        events_client,
        crate::core::well_known::REPORTING_CONTROLLER,
        config.instance.clone(),
        config.metrics.events_dropped.clone(),
        config.metrics.events_failed.clone(),
        clock,
    );
    let services = context::Services {
        events,
        ledger,
        clerk_options,
        health,
        workspace_rechecks: context::WorkspaceRechecks { namespaced, cluster },
        metrics: config.metrics.clone(),
        clock,
        rotation_boost: config.rotation_boost.clone(),
    };
    Ok(Started { services, health_events, namespaced_rechecks, cluster_rechecks })
}

/// Runs the controller of one workspace kind: its objects, the admin-token Secrets they
/// reference, and the rechecks other reconcilers ask for.
fn run_workspaces<W: workspace_reconciler::Workspace>(
    controller: Controller<W>,
    secrets: BoxStream<'static, Result<PartialObjectMeta<Secret>, watcher::Error>>,
    store: Store<W>,
    rechecks: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<W>>,
    config: kube::runtime::controller::Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ctx: &Arc<Context>,
) -> impl Future<Output = ()> + Send {
    controller
        .with_config(config)
        .trigger_backoff(watches::WatchBackoff::default())
        .watches_stream(secrets, workspaces_for_secret(store, ctx.workspace_cache.clone()))
        .reconcile_on(receiver_stream(rechecks))
        .graceful_shutdown_on(shutdown)
        .run(workspace_reconciler::reconcile::<W>, workspace_reconciler::error_policy::<W>, Arc::clone(ctx))
        .for_each(|_| future::ready(()))
}

/// Whether every cache the reconcilers read has its first list: the TenantAccesses, the
/// workspaces (and, cluster-wide, the cluster workspaces and the namespaces), the managed
/// ConfigMaps, the token-Secret digests and the names of the Secrets. Resolves `false` if a
/// watch ended first (the operator is stopping).
///
/// The workspace reconcilers need no gate of their own: they read only their own cache (which
/// kube's controller lists before it reconciles anything) and the admin-token Secrets, fresh
/// from the API.
async fn caches_synced(caches: context::Caches, ledger: context::Ledger, cluster_wide: bool) -> bool {
    let (tenant_accesses, workspaces, configmaps, (), ()) = futures::join!(
        caches.tenant_accesses.wait_until_ready(),
        caches.workspaces.wait_until_ready(),
        caches.managed_configmaps.wait_until_ready(),
        ledger.token_secrets.wait_until_synced(),
        ledger.known_secrets.wait_until_synced(),
    );
    let cluster = if cluster_wide {
        let (workspaces, namespaces) = futures::join!(
            caches.cluster_workspaces.wait_until_ready(),
            caches.namespaces.wait_until_ready()
        );
        workspaces.is_ok() && namespaces.is_ok()
    } else {
        true
    };
    let synced = tenant_accesses.is_ok() && workspaces.is_ok() && configmaps.is_ok() && cluster;
    if synced {
        tracing::info!("caches synced: reconciling");
    }
    synced
}

/// Sets `flag` once every cache has synced (for `/readyz`).
async fn ready_when_synced(synced: impl Future<Output = bool>, flag: Arc<std::sync::atomic::AtomicBool>) {
    if synced.await {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("caches synced: ready");
    }
}

/// Stops probing (and forgets, wake-ups included) TenantAccess resources that were deleted: a
/// reconcile never runs for an object that is gone.
async fn sweep_deleted(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let sweep = async {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            for key in ctx.health.registered() {
                if ctx.caches.tenant_accesses.get(&ObjectRef::new(&key.name).within(&key.namespace)).is_none()
                {
                    ctx.health.unregister(&key);
                    ctx.ledger.last_writes.forget_access(&key.namespace, &key.name);
                }
            }
            ctx.wakeups.retain(|namespace, name| {
                ctx.caches.tenant_accesses.get(&ObjectRef::new(name).within(namespace)).is_some()
            });
        }
    };
    tokio::select! {
        () = sweep => {},
        () = shutdown => {},
    }
}
