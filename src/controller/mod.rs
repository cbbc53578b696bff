//! The running operator: watches, caches and the two reconcilers (workspaces, TenantAccess).

pub mod admission;
pub mod cached_access;
pub mod clerk_sync;
pub mod context;
pub mod error;
pub mod known_secrets;
pub mod observe;
mod output_writes;
mod report;
pub mod tenants;
pub mod token_secrets;
pub mod workspace_cache;
pub mod workspace_reconciler;
pub mod writes;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _, future};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use self::cached_access::CachedTenantAccess;
use self::context::{Caches, Context, Settings};
use self::workspace_cache::{SecretRef, WorkspaceCache};
use crate::api::{ClusterTinybirdWorkspace, TinybirdWorkspace};
use crate::validate::WorkspaceKind;
use crate::well_known::{LABEL_MANAGED_BY, OPERATOR_NAME};

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
    pub metrics: crate::metrics::Metrics,
    /// Set once every watch has synced (for `/readyz`).
    pub synced: Arc<std::sync::atomic::AtomicBool>,
    /// Requests the operator may make to one Clerk instance per window (Clerk allows 100 per
    /// 10 s on development instances, 1000 on production ones; leave room for your app).
    pub clerk_budget: crate::clerk::RequestBudget,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn managed_selector() -> watcher::Config {
    watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={OPERATOR_NAME}"))
}

/// Runs the controllers until `shutdown` resolves (then finishes in-flight reconciles). Events
/// are sent with `client` too.
pub async fn run(client: Client, config: RunConfig, shutdown: impl Future<Output = ()> + Send + 'static) {
    run_with_event_client(client.clone(), client, config, shutdown).await;
}

/// [`run`], with events sent by `events_client` (its own rate limit, so that events never take
/// the request budget of the writes).
pub async fn run_with_event_client(
    client: Client,
    events_client: Client,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown = shutdown.shared();
    let ns = match config.namespaces.as_slice() {
        [only] => Some(only.as_str()),
        _ => None,
    };
    let workspace_cache = WorkspaceCache::default();

    let last_writes = writes::LastWrites::default();
    let known_secrets = known_secrets::KnownSecrets::default();

    // Managed Secrets: not cached, only digested (see `token_secrets`); the watch still triggers
    // the owners.
    let token_secrets = token_secrets::TokenSecrets::default();
    let managed_secret_stream = watcher(api::<Secret>(&client, ns), managed_selector())
        .inspect_ok({
            let token_secrets = token_secrets.clone();
            move |event| token_secrets.observe(event)
        })
        // Deletions too: a deleted Secret (or one whose managed-by label was removed, which leaves
        // the selection) must be restored.
        .touched_objects()
        // The echo of the operator's own write needs no reconcile.
        .try_filter(not_own({
            let last_writes = last_writes.clone();
            move |namespace, name, rv| last_writes.own_secret_event(namespace, name, rv)
        }));

    let (managed_configmaps, configmap_writer) = reflector::store::<ConfigMap>();
    let managed_configmap_stream = reflector::reflector(
        configmap_writer,
        watcher(api::<ConfigMap>(&client, ns), managed_selector()).modify(|c| c.managed_fields_mut().clear()),
    )
    .touched_objects();

    let workspace_controller =
        Controller::new(api::<TinybirdWorkspace>(&client, ns), watcher::Config::default());
    let cluster_workspace_controller =
        Controller::new(Api::<ClusterTinybirdWorkspace>::all(client.clone()), watcher::Config::default());
    // TenantAccess cache, compact (see `cached_access`): at 10,000 objects it would otherwise be
    // most of the memory.
    let (tenant_store, tenant_writer) = reflector::store::<CachedTenantAccess>();
    let tenant_stream = reflector::reflector(
        tenant_writer,
        watcher(api::<CachedTenantAccess>(&client, ns), watcher::Config::default()),
    )
    .applied_objects()
    // The echo of the operator's own status write needs no reconcile.
    .try_filter(not_own({
        let last_writes = last_writes.clone();
        move |namespace, name, rv| last_writes.own_status_event(namespace, name, rv)
    }));
    let tenant_controller = Controller::for_stream(tenant_stream, tenant_store);

    // A single-namespace install has no cluster-wide rights: it serves TinybirdWorkspaces only,
    // and reads neither namespaces nor the cluster-resource namespace.
    let cluster_wide = ns.is_none();
    // Namespaces, metadata only: for allowedNamespaces and re-evaluation on label changes.
    let (namespaces, namespace_writer) = reflector::store();
    let namespace_stream = cluster_wide.then(|| {
        reflector::reflector(
            namespace_writer,
            watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default())
                .modify(|n| n.managed_fields_mut().clear()),
        )
        .applied_objects()
    });

    let caches = Caches {
        tenant_accesses: tenant_controller.store(),
        workspaces: workspace_controller.store(),
        cluster_workspaces: cluster_workspace_controller.store(),
        namespaces,
        managed_configmaps,
    };
    let settings = Settings {
        cluster_resource_namespace: config.cluster_resource_namespace.clone(),
        backoff: crate::backoff::Backoff::default(),
        resync: config.resync,
        cluster_wide: ns.is_none(),
        namespaces: (config.namespaces.len() > 1).then(|| config.namespaces.iter().cloned().collect()),
    };
    let clerk_options =
        crate::clerk::ClerkClientOptions { budget: config.clerk_budget, ..Default::default() };
    let prober = match crate::health::HttpProber::new() {
        Ok(prober) => prober,
        Err(error) => {
            tracing::error!(%error, "cannot start: the HTTP client could not be built");
            return;
        }
    };
    let (health, health_events) = crate::health::HealthScheduler::start(
        crate::health::HealthConfig { concurrency: config.probe_concurrency.max(1) },
        Arc::new(prober),
    );
    let (namespaced_recheck, namespaced_rechecks) = tokio::sync::mpsc::unbounded_channel();
    let (cluster_recheck, cluster_rechecks) = tokio::sync::mpsc::unbounded_channel();
    let rechecks = context::WorkspaceRechecks { namespaced: namespaced_recheck, cluster: cluster_recheck };
    let ctx = match Context::new(
        client.clone(),
        settings,
        caches.clone(),
        workspace_cache.clone(),
        context::Services {
            events: crate::events::EventPublisher::start(
                events_client,
                OPERATOR_NAME,
                config.instance.clone(),
                config.metrics.events_dropped.clone(),
            ),
            last_writes,
            known_secrets: known_secrets.clone(),
            token_secrets,
            clerk_options,
            health: health.clone(),
            workspace_rechecks: rechecks,
            metrics: config.metrics.clone(),
        },
    ) {
        Ok(ctx) => Arc::new(ctx),
        Err(error) => {
            tracing::error!(%error, "cannot start: HTTP clients could not be built");
            return;
        }
    };

    // Admin-token Secrets are watched metadata-only, with no cache: an event only says "this
    // Secret changed" (its data, or its metadata such as the allowed-workspaces annotation),
    // mapped to the workspaces that reference it.
    // They also tell which Secrets exist (names only), so a first issuance needs no GET.
    let admin_secret_events =
        watcher(api::<PartialObjectMeta<Secret>>(&client, ns), watcher::Config::default())
            .inspect_ok(move |event| known_secrets.observe(event))
            .touched_objects();
    let workspaces_for_secret = {
        let workspaces = caches.workspaces.clone();
        let workspace_cache = workspace_cache.clone();
        move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace().unwrap_or_default();
            let name = secret.name_any();
            let refs: Vec<ObjectRef<TinybirdWorkspace>> = workspaces
                .state()
                .iter()
                .filter(|ws| {
                    ws.namespace().as_deref() == Some(namespace.as_str())
                        && references_secret(&ws.spec.workspace, &name)
                })
                .map(|ws| ObjectRef::from_obj(ws.as_ref()))
                .collect();
            if !refs.is_empty() {
                workspace_cache.observe_secret(SecretRef { namespace, name }, secret.resource_version());
            }
            refs
        }
    };
    let cluster_workspaces_for_secret = {
        let workspaces = caches.cluster_workspaces.clone();
        let workspace_cache = workspace_cache.clone();
        move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace().unwrap_or_default();
            let name = secret.name_any();
            let refs: Vec<ObjectRef<ClusterTinybirdWorkspace>> = workspaces
                .state()
                .iter()
                .filter(|ws| references_secret(&ws.spec.workspace, &name))
                .map(|ws| ObjectRef::from_obj(ws.as_ref()))
                .collect();
            if !refs.is_empty() {
                workspace_cache.observe_secret(SecretRef { namespace, name }, secret.resource_version());
            }
            refs
        }
    };

    let controller_config = kube::runtime::controller::Config::default().concurrency(config.concurrency);
    let workspaces = workspace_controller
        .with_config(controller_config.clone())
        .watches_stream(admin_secret_events, workspaces_for_secret)
        .reconcile_on(receiver_stream(namespaced_rechecks))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            workspace_reconciler::reconcile::<TinybirdWorkspace>,
            workspace_reconciler::error_policy::<TinybirdWorkspace>,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    let cluster_workspaces = if cluster_wide {
        let cluster_admin_secret_events = watcher(
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &config.cluster_resource_namespace),
            watcher::Config::default(),
        )
        .touched_objects();
        cluster_workspace_controller
            .with_config(controller_config.clone())
            .watches_stream(cluster_admin_secret_events, cluster_workspaces_for_secret)
            .reconcile_on(receiver_stream(cluster_rechecks))
            .graceful_shutdown_on(shutdown.clone())
            .run(
                workspace_reconciler::reconcile::<ClusterTinybirdWorkspace>,
                workspace_reconciler::error_policy::<ClusterTinybirdWorkspace>,
                ctx.clone(),
            )
            .for_each(|_| future::ready(()))
            .boxed()
    } else {
        future::ready(()).boxed()
    };

    let mut tenants = tenant_controller
        .with_config(controller_config)
        .owns_stream(managed_secret_stream)
        .owns_stream(managed_configmap_stream)
        .watches(api::<TinybirdWorkspace>(&client, ns), watcher::Config::default(), {
            let tenants = caches.tenant_accesses.clone();
            move |ws: TinybirdWorkspace| {
                dependents(&tenants, WorkspaceKind::Namespaced, ws.namespace().as_deref(), &ws.name_any())
            }
        });
    if let Some(namespace_stream) = namespace_stream {
        tenants = tenants
            .watches(Api::<ClusterTinybirdWorkspace>::all(client.clone()), watcher::Config::default(), {
                let tenants = caches.tenant_accesses.clone();
                move |ws: ClusterTinybirdWorkspace| {
                    dependents(&tenants, WorkspaceKind::Cluster, None, &ws.name_any())
                }
            })
            .watches_stream(namespace_stream, {
                let tenants = caches.tenant_accesses.clone();
                move |namespace: PartialObjectMeta<Namespace>| {
                    let name = namespace.name_any();
                    tenants
                        .state()
                        .iter()
                        .filter(|ta| ta.namespace_name() == name)
                        .map(|ta| ObjectRef::from_obj(ta.as_ref()))
                        .collect::<Vec<_>>()
                }
            });
    }
    let health_triggers =
        health_events.map(|change| ObjectRef::new(&change.key.name).within(&change.key.namespace));
    let tenants = tenants
        .reconcile_on(health_triggers)
        .graceful_shutdown_on(shutdown.clone())
        .run(tenants::reconcile, tenants::error_policy, ctx.clone())
        .for_each(|_| future::ready(()));

    tracing::info!(namespace = ns.unwrap_or("<all>"), cluster_resource_namespace = %config.cluster_resource_namespace, "operator started");
    config.metrics.attach(
        caches.tenant_accesses.clone(),
        caches.workspaces.clone(),
        caches.cluster_workspaces.clone(),
        ctx.health.clone(),
    );
    let synced = {
        let caches = caches.clone();
        let flag = config.synced.clone();
        let token_secrets = ctx.token_secrets.clone();
        async move {
            let (a, b, c, ()) = futures::join!(
                caches.tenant_accesses.wait_until_ready(),
                caches.workspaces.wait_until_ready(),
                caches.managed_configmaps.wait_until_ready(),
                token_secrets.wait_until_synced(),
            );
            let cluster =
                if cluster_wide { caches.cluster_workspaces.wait_until_ready().await.is_ok() } else { true };
            if a.is_ok() && b.is_ok() && c.is_ok() && cluster {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("caches synced: ready");
            }
        }
    };
    let sweep = sweep_deleted(ctx.clone(), shutdown.clone());
    let sweep = async move {
        futures::join!(sweep, synced);
    };
    future::join4(workspaces, cluster_workspaces, tenants, sweep).await;
    ctx.health.shutdown().await;
    tracing::info!("operator stopped");
}

/// A watch-stream filter keeping the objects that are not the echo of the operator's own write,
/// as told by `own(namespace, name, resourceVersion)`.
fn not_own<K: Resource>(
    own: impl Fn(&str, &str, Option<&str>) -> bool,
) -> impl FnMut(&K) -> future::Ready<bool> {
    move |object| {
        let meta = object.meta();
        let own = own(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            meta.resource_version.as_deref(),
        );
        future::ready(!own)
    }
}

/// The TenantAccess resources that use a workspace.
fn dependents(
    tenants: &Store<CachedTenantAccess>,
    kind: WorkspaceKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<CachedTenantAccess>> {
    tenants
        .state()
        .iter()
        .filter(|ta| ta.uses_workspace(kind, namespace, name))
        .map(|ta| ObjectRef::from_obj(ta.as_ref()))
        .collect()
}

/// Whether a workspace reads this Secret (admin token or Clerk key) in its Secret namespace.
fn references_secret(spec: &crate::api::WorkspaceSpec, name: &str) -> bool {
    spec.admin_token_secret_ref.name == name
        || spec.clerk.as_ref().is_some_and(|c| c.secret_key_secret_ref.name == name)
}

/// A stream of the values sent on an unbounded channel.
fn receiver_stream<T: Send + 'static>(
    receiver: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// Stops probing (and forgets) TenantAccess resources that were deleted: a reconcile never runs
/// for an object that is gone.
async fn sweep_deleted(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let sweep = async {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            let registered: Vec<crate::health::AccessKey> =
                ctx.health_keys.lock().map(|keys| keys.iter().cloned().collect()).unwrap_or_default();
            for key in registered {
                if ctx.caches.tenant_accesses.get(&ObjectRef::new(&key.name).within(&key.namespace)).is_none()
                {
                    ctx.health.unregister(&key);
                    ctx.last_writes.forget_access(&key.namespace, &key.name);
                    if let Ok(mut keys) = ctx.health_keys.lock() {
                        keys.remove(&key);
                    }
                }
            }
        }
    };
    tokio::select! {
        () = sweep => {},
        () = shutdown => {},
    }
}
