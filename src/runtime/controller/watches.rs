//! The watches of the running operator: every watch stream and cache the controllers consume,
//! and the maps from a watched object to the objects it triggers. Nothing here runs until the
//! controllers assembled in [`super::run`] poll it.

use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _, future};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::cached_access::CachedTenantAccess;
use super::context::Caches;
use super::workspace_cache::{SecretRef, WorkspaceCache};
use super::workspace_reconciler::Workspace;
use crate::api::{ClusterTinybirdWorkspace, TinybirdWorkspace};
use crate::core::validate::WorkspaceKind;
use crate::core::well_known::{LABEL_MANAGED_BY, OPERATOR_NAME};

/// A watch stream of objects, as the controllers consume it.
type Objects<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// Objects per page when listing what a tenant team can write: TenantAccesses, and the Secrets
/// and ConfigMaps (anyone may label them as managed) that are listed metadata only. An object
/// may take up to what etcd stores, 1.5 MiB, metadata included (labels have no total bound of
/// their own, annotations 256 KiB). A page is read whole before it is parsed, so a page of 500
/// (kube's default) could take 750 MiB at a restart; 16 bound a page to 24 MiB.
pub const LIST_PAGE_SIZE: u32 = 16;

/// The watches of one operator, built and not yet polled.
pub(super) struct Watches {
    /// The caches the reconcilers read.
    pub caches: Caches,
    /// The TinybirdWorkspace controller (its own watch and cache).
    pub workspaces: Controller<TinybirdWorkspace>,
    /// The ClusterTinybirdWorkspace controller (its own watch and cache).
    pub cluster_workspaces: Controller<ClusterTinybirdWorkspace>,
    /// The TenantAccess controller, over the compact TenantAccess cache.
    pub tenants: Controller<CachedTenantAccess>,
    /// The watches of what a TenantAccess depends on, for [`with_dependencies`].
    pub tenant_dependencies: TenantDependencies,
    /// Secrets of the served namespaces, metadata only: admin tokens and Clerk keys.
    pub admin_secrets: Objects<PartialObjectMeta<Secret>>,
    /// Secrets of the cluster-resource namespace (cluster-wide installs only), metadata only.
    pub cluster_admin_secrets: Option<Objects<PartialObjectMeta<Secret>>>,
}

impl Watches {
    /// The watches of the namespace `ns` (`None`: all namespaces). A single-namespace install has
    /// no cluster-wide rights: it serves TinybirdWorkspaces only, and reads neither namespaces
    /// nor the cluster-resource namespace.
    pub(super) fn new(
        client: &Client,
        ns: Option<&str>,
        cluster_resource_namespace: &str,
        ledger: &super::context::Ledger,
    ) -> Self {
        // Managed Secrets: metadata only, not cached, only digested (see `token_secrets`); the
        // watch still triggers the owners.
        let managed_secrets = paced(api::<PartialObjectMeta<Secret>>(client, ns), managed_selector())
            .inspect_ok({
                let token_secrets = ledger.token_secrets.clone();
                move |event| token_secrets.observe(event)
            })
            // Deletions too: a deleted Secret (or one whose managed-by label was removed, which
            // leaves the selection) must be restored.
            .touched_objects()
            // The echo of the operator's own write needs no reconcile.
            .try_filter(not_own({
                let last_writes = ledger.last_writes.clone();
                move |namespace, name, rv| last_writes.own_secret_event(namespace, name, rv)
            }))
            .boxed();

        // Managed ConfigMaps: metadata only, cached in part (see `keep_only_what_is_owned`);
        // the data of the operator's own is known from its writes and reads.
        let (managed_configmaps, configmap_writer) = reflector::store::<PartialObjectMeta<ConfigMap>>();
        let managed_configmap_stream = reflector::reflector(
            configmap_writer,
            paced(api::<PartialObjectMeta<ConfigMap>>(client, ns), managed_selector())
                .inspect_ok({
                    let template_configmaps = ledger.template_configmaps.clone();
                    move |event| template_configmaps.observe(event)
                })
                .modify(keep_only_what_is_owned),
        )
        .touched_objects()
        .boxed();

        let workspaces = Controller::new(api::<TinybirdWorkspace>(client, ns), watcher::Config::default());
        let cluster_workspaces =
            Controller::new(Api::<ClusterTinybirdWorkspace>::all(client.clone()), watcher::Config::default());
        // TenantAccess cache, compact (see `cached_access`): at 10,000 objects it would otherwise
        // be most of the memory.
        let (tenant_store, tenant_writer) = reflector::store::<CachedTenantAccess>();
        let tenant_stream = reflector::reflector(
            tenant_writer,
            paced(
                api::<CachedTenantAccess>(client, ns),
                watcher::Config::default().page_size(LIST_PAGE_SIZE),
            ),
        )
        .applied_objects()
        // The echo of the operator's own status write needs no reconcile.
        .try_filter(not_own({
            let last_writes = ledger.last_writes.clone();
            move |namespace, name, rv| last_writes.own_status_event(namespace, name, rv)
        }));
        let tenants = Controller::for_stream(tenant_stream, tenant_store);

        let cluster_wide = ns.is_none();
        // Namespaces, metadata only: for allowedNamespaces and re-evaluation on label changes.
        let (namespaces, namespace_writer) = reflector::store();
        let namespace_stream = cluster_wide.then(|| {
            reflector::reflector(
                namespace_writer,
                paced(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default())
                    .modify(|n| n.managed_fields_mut().clear()),
            )
            .applied_objects()
            .boxed()
        });

        // Admin-token Secrets are watched metadata-only, with no cache: an event only says "this
        // Secret changed" (its data, or its metadata such as the allowed-workspaces annotation),
        // mapped to the workspaces that reference it.
        // They also tell which Secrets exist (names only), so a first issuance needs no GET.
        let admin_secrets = paced(api::<PartialObjectMeta<Secret>>(client, ns), metadata_pages())
            .inspect_ok({
                let known_secrets = ledger.known_secrets.clone();
                move |event| known_secrets.observe(event)
            })
            .touched_objects()
            .boxed();
        let cluster_admin_secrets = cluster_wide.then(|| {
            paced(
                Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), cluster_resource_namespace),
                metadata_pages(),
            )
            .touched_objects()
            .boxed()
        });

        let caches = Caches {
            tenant_accesses: tenants.store(),
            workspaces: workspaces.store(),
            cluster_workspaces: cluster_workspaces.store(),
            namespaces,
            managed_configmaps,
        };
        let tenant_dependencies = TenantDependencies {
            tenant_accesses: caches.tenant_accesses.clone(),
            managed_secrets,
            managed_configmaps: managed_configmap_stream,
            namespaces: namespace_stream,
        };
        Self {
            caches,
            workspaces,
            cluster_workspaces,
            tenants,
            tenant_dependencies,
            admin_secrets,
            cluster_admin_secrets,
        }
    }
}

/// A watch of `api` with its own [`WatchBackoff`]: a stream that fails (the API server gone, a
/// watch answered 410 Gone after the API server restarted) waits on its own before it is
/// retried, instead of making the whole controller wait. A controller merges its streams with
/// one backoff, so several streams failing one after another would add up their delays: after
/// an API server restart, five watches answered 410 kept a controller from relisting for about
/// 6 s. With one backoff per stream the controller's own is a short constant
/// ([`WatchBackoff::merged`]), and recovery takes the longest of the streams' delays, not their
/// sum.
pub(super) fn paced<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    use kube::runtime::WatchStreamExt as _;
    watcher(api, config).backoff(WatchBackoff::default())
}

/// The API of `K` in namespace `namespace` (`None`: all namespaces).
pub(super) fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The managed-by label selects the operator's Secrets and ConfigMaps, and whatever else
/// anyone labels so: watched metadata only, listed in pages of [`LIST_PAGE_SIZE`].
fn managed_selector() -> watcher::Config {
    metadata_pages().labels(&format!("{LABEL_MANAGED_BY}={OPERATOR_NAME}"))
}

/// Metadata-only lists in pages of [`LIST_PAGE_SIZE`].
fn metadata_pages() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// What the ConfigMap cache keeps of a labelled ConfigMap (its metadata: the watch carries no
/// data). All of it (less managedFields) only for the Clerk template ConfigMap of a
/// TenantAccess: controlled by a TenantAccess and named after it (`<name>-clerk-template`), so
/// at most one per TenantAccess. Of any other (the label is no proof: anyone may set it) only
/// what a reconcile needs to refuse to touch it: its name, namespace, uid, resourceVersion and
/// controller reference. So the cache holds a constant per labelled ConfigMap, and the
/// metadata of at most one per TenantAccess.
pub(super) fn keep_only_what_is_owned(configmap: &mut PartialObjectMeta<ConfigMap>) {
    configmap.managed_fields_mut().clear();
    let name = configmap.metadata.name.as_deref().unwrap_or_default();
    let controller =
        configmap.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    let template_of_its_owner = controller.is_some_and(|owner| {
        owner.kind == crate::api::TenantAccess::kind(&())
            && owner.api_version == crate::api::TenantAccess::api_version(&())
            && crate::core::desired::clerk_configmap_name(&owner.name) == name
    });
    if template_of_its_owner {
        return;
    }
    let controller = controller.cloned();
    let meta = &mut configmap.metadata;
    meta.owner_references = controller.map(|c| vec![c]);
    meta.labels = None;
    meta.annotations = None;
    meta.finalizers = None;
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

/// Maps a Secret event to the workspaces of `workspaces` that read that Secret (a namespaced
/// workspace only in its own namespace), recording the Secret's resourceVersion in the cache
/// when one does.
pub(super) fn workspaces_for_secret<W: Workspace>(
    workspaces: Store<W>,
    workspace_cache: WorkspaceCache,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<W>> + Send + Sync + 'static {
    move |secret: PartialObjectMeta<Secret>| {
        let namespace = secret.namespace().unwrap_or_default();
        let name = secret.name_any();
        let refs: Vec<ObjectRef<W>> = workspaces
            .state()
            .iter()
            .filter(|ws| {
                (W::KIND == WorkspaceKind::Cluster || ws.namespace().as_deref() == Some(namespace.as_str()))
                    && references_secret(ws.workspace_spec(), &name)
            })
            .map(|ws| ObjectRef::from_obj(ws.as_ref()))
            .collect();
        if !refs.is_empty() {
            workspace_cache.observe_secret(SecretRef { namespace, name }, secret.resource_version());
        }
        refs
    }
}

/// Whether a workspace reads this Secret (admin token or Clerk key) in its Secret namespace.
fn references_secret(spec: &crate::api::WorkspaceSpec, name: &str) -> bool {
    spec.admin_token_secret_ref.name == name
        || spec.clerk.as_ref().is_some_and(|c| c.secret_key_secret_ref.name == name)
}

/// The TenantAccess controller with the triggers of its dependencies: its managed Secrets and
/// ConfigMaps, the workspaces it uses and (cluster-wide) its namespace.
pub(super) fn with_dependencies(
    client: &Client,
    ns: Option<&str>,
    tenants: Controller<CachedTenantAccess>,
    dependencies: TenantDependencies,
) -> Controller<CachedTenantAccess> {
    let store = dependencies.tenant_accesses;
    let mut tenants = tenants
        .owns_stream(dependencies.managed_secrets)
        .owns_stream(dependencies.managed_configmaps)
        .watches_stream(
            changes_for_dependents(paced(api::<TinybirdWorkspace>(client, ns), watcher::Config::default())),
            {
                let tenants = store.clone();
                move |ws: TinybirdWorkspace| {
                    dependents(&tenants, WorkspaceKind::Namespaced, ws.namespace().as_deref(), &ws.name_any())
                }
            },
        );
    if let Some(namespace_stream) = dependencies.namespaces {
        tenants = tenants
            .watches_stream(
                changes_for_dependents(paced(
                    Api::<ClusterTinybirdWorkspace>::all(client.clone()),
                    watcher::Config::default(),
                )),
                {
                    let tenants = store.clone();
                    move |ws: ClusterTinybirdWorkspace| {
                        dependents(&tenants, WorkspaceKind::Cluster, None, &ws.name_any())
                    }
                },
            )
            .watches_stream(namespace_stream, {
                let tenants = store;
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
    tenants
}

/// The watches [`with_dependencies`] adds to the TenantAccess controller.
pub(super) struct TenantDependencies {
    /// The TenantAccess cache (to map a dependency to its dependents).
    pub tenant_accesses: Store<CachedTenantAccess>,
    /// Managed Secrets (token outputs): they trigger their owners.
    pub managed_secrets: Objects<PartialObjectMeta<Secret>>,
    /// Managed ConfigMaps (Clerk templates), metadata only: they trigger their owners.
    pub managed_configmaps: Objects<PartialObjectMeta<ConfigMap>>,
    /// Namespaces (cluster-wide installs only): a label change re-evaluates their TenantAccess.
    pub namespaces: Option<Objects<PartialObjectMeta<Namespace>>>,
}

/// The workspace changes its TenantAccesses depend on: a workspace that is new, deleted, or whose
/// generation or status (other than `status.healthChecks`, which only reports the health
/// scheduler's budget use, and `status.rotation`, but for the moment a rotation's token Secrets
/// are all on the new key) changed. A rotation writes its progress to
/// `status.rotation` every second while the dependents are re-signed: were each write to re-run
/// every dependent, a thousand tenants would make a thousand no-op reconciles a second, competing
/// with the re-signing itself. (Metadata, the rotate annotation included, matters to no
/// dependent either.)
fn changes_for_dependents<W: Workspace>(
    events: impl futures::Stream<Item = Result<watcher::Event<W>, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<W, watcher::Error>> + Send + 'static {
    let mut seen: std::collections::HashMap<(Option<String>, String), u64> = std::collections::HashMap::new();
    events.filter_map(move |event| {
        let change = match event {
            Err(error) => Some(Err(error)),
            Ok(watcher::Event::Apply(workspace) | watcher::Event::InitApply(workspace)) => {
                let view = dependents_view(&workspace);
                let changed = seen.insert((workspace.namespace(), workspace.name_any()), view) != Some(view);
                changed.then_some(Ok(workspace))
            }
            Ok(watcher::Event::Delete(workspace)) => {
                seen.remove(&(workspace.namespace(), workspace.name_any()));
                Some(Ok(workspace))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        };
        future::ready(change)
    })
}

/// A hash of what a workspace's dependents read of it.
fn dependents_view<W: Workspace>(workspace: &W) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let status = workspace.workspace_status().map(|status| crate::api::WorkspaceStatus {
        rotation: None,
        health_checks: None,
        clerk_templates: None,
        pipes: Vec::new(),
        pipes_not_listed: None,
        ..status.clone()
    });
    let secrets_done = workspace
        .workspace_status()
        .and_then(|s| s.rotation.as_ref())
        .is_some_and(crate::core::rotation::secrets_done);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    workspace.meta().generation.hash(&mut hasher);
    // The one rotation fact dependents follow: every token Secret is on the new key, so the
    // Clerk pushes held back until then may go.
    secrets_done.hash(&mut hasher);
    serde_json::to_string(&status).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
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

/// The backoff of a controller's watch streams after an error: [`crate::core::backoff::WATCH`],
/// at most a few seconds, with jitter, and from the start again after any event.
///
/// A controller merges its watch streams (its own, those it owns, those it watches) into one
/// stream with one backoff, and polls none of them while it backs off. kube's default
/// (0.8 s doubling to 30 s, plus up to as much again of jitter, reset only after an event) grows
/// with every error of every stream: during an API server outage each of the several watches
/// fails on every retry, so within a few retries the whole controller sleeps 30 to 60 s, and
/// after the API server is back nothing (not even a new TenantAccess) is seen until that
/// sleep ends.
pub(super) struct WatchBackoff(crate::core::backoff::Retries);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self(crate::core::backoff::Retries::new(crate::core::backoff::WATCH))
    }
}

impl WatchBackoff {
    /// The backoff of a controller whose every stream is [`paced`]: a short constant pause, so
    /// that the streams' own backoffs are not added up.
    pub(super) fn merged() -> Self {
        Self(crate::core::backoff::Retries::new(crate::core::backoff::WATCH_MERGED))
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0.reset();
    }
}

/// A stream of the values sent on an unbounded channel.
pub(super) fn receiver_stream<T: Send + 'static>(
    receiver: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::api::{RotationStatus, TinybirdWorkspace, WorkspaceStatus};

    fn workspace(fingerprint: &str, rotation: Option<&str>) -> TinybirdWorkspace {
        let mut workspace: TinybirdWorkspace = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenantaccess.dev/v1alpha1", "kind": "TinybirdWorkspace",
            "metadata": {"name": "analytics", "namespace": "team-a", "generation": 1},
            "spec": {"adminTokenSecretRef": {"name": "admin"}},
        }))
        .unwrap();
        workspace.status = Some(WorkspaceStatus {
            signing_key_fingerprint: Some(fingerprint.into()),
            rotation: rotation
                .map(|r| RotationStatus { handled_request: Some(r.into()), ..RotationStatus::default() }),
            ..WorkspaceStatus::default()
        });
        workspace
    }

    #[tokio::test]
    async fn dependents_follow_a_new_key_and_a_deletion_but_not_a_rotation_progress_write() {
        use kube::runtime::watcher::Event;
        let events = vec![
            Ok(Event::InitApply(workspace("sha256:a", None))),
            Ok(Event::InitDone),
            Ok(Event::Apply(workspace("sha256:a", Some("1")))),
            Ok(Event::Apply(workspace("sha256:a", Some("2")))),
            Ok(Event::Apply(workspace("sha256:b", Some("2")))),
            Ok(Event::Delete(workspace("sha256:b", Some("2")))),
        ];
        let passed: Vec<Option<String>> = super::changes_for_dependents(futures::stream::iter(events))
            .map(|w| w.unwrap().status.unwrap().signing_key_fingerprint)
            .collect()
            .await;
        assert_eq!(passed, [Some("sha256:a".into()), Some("sha256:b".into()), Some("sha256:b".into())]);
    }

    #[tokio::test]
    async fn dependents_do_not_follow_the_budget_use_the_workspace_reports() {
        use kube::runtime::watcher::Event;
        let with_budget = |planned: u64| {
            let mut ws = workspace("sha256:a", None);
            if let Some(status) = ws.status.as_mut() {
                status.health_checks = Some(crate::api::HealthCheckBudgetStatus {
                    max_queries_per_day: 200,
                    planned_queries_per_day: planned,
                    pipes: 1,
                    cut: Some("stretched".into()),
                });
            }
            ws
        };
        let events = vec![
            Ok(Event::InitApply(workspace("sha256:a", None))),
            Ok(Event::InitDone),
            Ok(Event::Apply(with_budget(300))),
            Ok(Event::Apply(with_budget(400))),
        ];
        let passed = super::changes_for_dependents(futures::stream::iter(events)).count().await;
        assert_eq!(passed, 1, "only the first sight of the workspace re-runs its dependents");
    }

    use futures::StreamExt as _;
    use kube::runtime::utils::{Backoff, StreamBackoff};
    use tokio::time::Instant;

    use super::WatchBackoff;

    /// The longest pause between two items of a watch stream that fails `errors` times in a
    /// row (each retry of an API server that is down) and then delivers an event, under
    /// `backoff` (on tokio's paused clock).
    async fn longest_pause(backoff: impl Backoff + 'static, errors: usize) -> Duration {
        let items = (0..errors).map(|_| Err::<(), ()>(())).chain([Ok(())]);
        let mut stream = std::pin::pin!(StreamBackoff::new(futures::stream::iter(items), backoff));
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        while stream.next().await.is_some() {
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        longest
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_long_outage_the_watches_are_retried_within_seconds() {
        // kube's default backoff grows with every error to 30 s plus up to as much jitter: after
        // an outage the controller's watches (and so new objects) wait up to a minute.
        let default = longest_pause(kube::runtime::watcher::DefaultBackoff::default(), 40).await;
        assert!(default >= Duration::from_secs(30), "{default:?}");
        // The operator's: a few seconds at most, however many errors came before.
        let ours = longest_pause(WatchBackoff::default(), 40).await;
        assert!(ours < Duration::from_secs(2), "{ours:?}");
    }

    #[test]
    fn the_configmap_cache_keeps_metadata_only_of_a_tenant_access_clerk_template() {
        use std::collections::BTreeMap;

        use k8s_openapi::api::core::v1::ConfigMap;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        use kube::core::PartialObjectMeta;

        use super::keep_only_what_is_owned;

        let configmap = |name: &str, owner: Option<&str>| {
            let mut configmap = PartialObjectMeta::<ConfigMap>::default();
            configmap.metadata.name = Some(name.into());
            configmap.metadata.namespace = Some("team".into());
            configmap.metadata.labels =
                Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), "x".into())]));
            configmap.metadata.annotations = Some(BTreeMap::from([("big".into(), "a".repeat(200_000))]));
            configmap.metadata.owner_references = owner.map(|owner| {
                vec![OwnerReference {
                    api_version: "tenantaccess.dev/v1alpha1".into(),
                    kind: "TenantAccess".into(),
                    name: owner.into(),
                    uid: "u".into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            });
            configmap
        };
        let mut template = configmap("dash-clerk-template", Some("dash"));
        keep_only_what_is_owned(&mut template);
        assert!(template.metadata.labels.is_some(), "the template's metadata is kept whole");

        for (name, owner) in
            [("ballast", None), ("ballast-clerk-template", Some("dash")), ("dash", Some("dash"))]
        {
            let mut labelled = configmap(name, owner);
            keep_only_what_is_owned(&mut labelled);
            assert_eq!(labelled.metadata.annotations, None, "{name}");
            assert_eq!(labelled.metadata.labels, None, "{name}");
            assert_eq!(labelled.metadata.owner_references.map(|o| o.len()), owner.map(|_| 1), "{name}");
            assert_eq!(labelled.metadata.name.as_deref(), Some(name));
        }
    }
}
