//! An operator restart with everything in place: the new operator reconciles nothing before its
//! caches are synced, and then finds nothing to do. It writes nothing, flips nothing, emits no
//! event, and keeps each endpoint's health (the status is its memory). It reads no token Secret
//! either: it watches their metadata only, and each TenantAccess's `status.token.secretObserved`
//! vouches for a Secret that kept its resourceVersion. The new operator runs on a loaded machine
//! (a CPU burner beside it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use support::{
    ClusterWideEnv, CpuBurner, UNMETERED, audit_mark, audited_since, condition_is_true, eventually,
    eventually_some,
};
use tenant_access::api::{ClusterTinybirdWorkspace, TenantAccess, TinybirdWorkspace};

const NAMESPACES: usize = 3;
const PER_WORKSPACE_KIND: usize = 4;
/// Workspaces of each kind that no TenantAccess uses.
const DECOY_WORKSPACES: usize = 150;

/// A TenantAccess of the cluster workspace `shared`, with a probed token Secret.
const CLUSTER_ACCESS: &str = "  workspaceRef: {kind: ClusterTinybirdWorkspace, name: shared}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  healthCheck: {interval: 5s}\n";
/// A TenantAccess of the namespace's workspace `local`, with a probed token Secret.
const LOCAL_ACCESS: &str = "  workspaceRef: {name: local}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  healthCheck: {interval: 5s}\n";
/// A Clerk-template-only TenantAccess (rendered to its ConfigMap) with one probed endpoint and
/// one that is not probed (a Clerk shortcode without a sample value).
const MIXED_ACCESS: &str = "  workspaceRef: {name: local}\n  scopes:\n    - {resource: top_pages, fixedParams: {org: acme}}\n    - {resource: tenant_events, fixedParams: {org: '{{org.slug}}'}}\n  clerkTemplate: {}\n  healthCheck: {interval: 5s}\n";

/// A condition as a restart must keep it: type, status, reason, lastTransitionTime.
type ConditionSeen = (String, String, String, String);

/// What a restart must leave exactly as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Per TenantAccess: resourceVersion, each condition, and status.endpoints as JSON.
    accesses: BTreeMap<String, (String, Vec<ConditionSeen>, String)>,
    /// resourceVersion of every managed Secret and ConfigMap, and of every workspace.
    versions: BTreeMap<String, String>,
    /// Every event: name and series count.
    events: BTreeMap<String, i32>,
}

struct Fixture {
    env: ClusterWideEnv,
    namespaces: Vec<String>,
    /// Deleted when dropped.
    _namespaces: Vec<tenant_access_testkit::TestNamespace>,
}

impl Fixture {
    async fn new() -> Self {
        let env = ClusterWideEnv::new().await;
        let policy = "  policy:\n    allowedNamespaces: {matchLabels: {tinybird-tenants: enabled}}\n";
        env.apply(&env.shared_workspace_yaml(policy), None).await;
        // Workspaces no TenantAccess uses, many of them: their lists take longer than the
        // TenantAccesses', as in a large cluster, where a restart used to reconcile TenantAccesses
        // against workspace caches not yet listed.
        let mut decoys = String::new();
        for i in 0..DECOY_WORKSPACES {
            decoys.push_str(&format!(
                "apiVersion: tenantaccess.dev/v1alpha1\nkind: ClusterTinybirdWorkspace\nmetadata: {{name: decoy-{i}}}\nspec:\n  adminTokenSecretRef: {{name: decoy-admin}}\n  apiUrl: {}\n---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: decoy-{i}, namespace: {}}}\nspec:\n  adminTokenSecretRef: {{name: decoy-admin}}\n  apiUrl: {}\n---\n",
                env.tinybird.base_url(),
                env.system.name(),
                env.tinybird.base_url()
            ));
        }
        env.apply(&decoys, None).await;
        let (mut namespaces, mut handles) = (Vec::new(), Vec::new());
        for i in 0..NAMESPACES {
            let handle = env.cluster.namespace(&format!("team{i}")).await.unwrap();
            let namespace = handle.name().to_owned();
            handles.push(handle);
            env.label_namespace(&namespace, serde_json::json!({"tinybird-tenants": "enabled"})).await;
            let local = format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: local-admin, annotations: {{tenantaccess.dev/allowed-workspaces: '*'}}}}\nstringData: {{token: '{}'}}\n---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: local}}\nspec:\n  adminTokenSecretRef: {{name: local-admin}}\n  apiUrl: {}\n{UNMETERED}",
                env.tinybird.admin_token(),
                env.tinybird.base_url()
            );
            env.apply(&local, Some(&namespace)).await;
            let mut accesses = String::new();
            for n in 0..PER_WORKSPACE_KIND {
                accesses.push_str(&support::tenant_access_yaml(&format!("cluster-{n}"), CLUSTER_ACCESS));
                accesses.push_str("---\n");
                accesses.push_str(&support::tenant_access_yaml(&format!("local-{n}"), LOCAL_ACCESS));
                accesses.push_str("---\n");
            }
            accesses.push_str(&support::tenant_access_yaml("mixed", MIXED_ACCESS));
            env.apply(&accesses, Some(&namespace)).await;
            namespaces.push(namespace);
        }
        Self { env, namespaces, _namespaces: handles }
    }

    fn accesses(&self, namespace: &str) -> Api<TenantAccess> {
        Api::namespaced(self.env.client.clone(), namespace)
    }

    /// Every TenantAccess Ready, with healthy endpoints all reported (the mixed one's two), and
    /// its pipes' isolation judged.
    async fn all_ready_and_healthy(&self) -> bool {
        for namespace in &self.namespaces {
            let list = self.accesses(namespace).list(&ListParams::default()).await.unwrap();
            if list.items.len() != 2 * PER_WORKSPACE_KIND + 1 {
                return false;
            }
            for access in &list.items {
                let endpoints = access.status.as_ref().map_or(0, |s| s.endpoints.len());
                let wanted = if access.name_any() == "mixed" { 2 } else { 1 };
                let judged = access
                    .status
                    .as_ref()
                    .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "PipesIsolated"));
                if !condition_is_true(Some(access), "Ready")
                    || !condition_is_true(Some(access), "EndpointsHealthy")
                    || endpoints != wanted
                    || !judged
                {
                    return false;
                }
            }
        }
        true
    }

    /// Whether every workspace (both kinds, decoys included) has a status for its generation,
    /// and each one TenantAccesses use lists its pipes' isolation verdicts (written once they
    /// held still for a period).
    async fn every_workspace_observed(&self) -> bool {
        fn observed(generation: Option<i64>, status: Option<&tenant_access::api::WorkspaceStatus>) -> bool {
            status.is_some_and(|s| s.observed_generation.is_some() && s.observed_generation == generation)
        }
        // Every pipe of the Tinybird workspace that TenantAccesses pin a param on: top_pages
        // (probed) and tenant_events (a Clerk scope without samples, judged at reconciles).
        // `local` and `shared` are the same Tinybird workspace (the emulator's): the same list.
        fn lists_pipes(name: &str, status: Option<&tenant_access::api::WorkspaceStatus>) -> bool {
            let wanted = match name {
                "local" | "shared" => 2,
                _ => 0,
            };
            status.map_or(0, |s| s.pipes.len()) == wanted
        }
        let cluster: Api<ClusterTinybirdWorkspace> = Api::all(self.env.client.clone());
        let namespaced: Api<TinybirdWorkspace> = Api::all(self.env.client.clone());
        let cluster = cluster.list(&ListParams::default()).await.unwrap().items;
        let namespaced = namespaced.list(&ListParams::default()).await.unwrap().items;
        cluster.len() > DECOY_WORKSPACES
            && namespaced.len() >= DECOY_WORKSPACES + self.namespaces.len()
            && cluster.iter().all(|w| observed(w.metadata.generation, w.status.as_ref()))
            && namespaced.iter().all(|w| observed(w.metadata.generation, w.status.as_ref()))
            && cluster.iter().all(|w| lists_pipes(&w.name_any(), w.status.as_ref()))
            && namespaced.iter().all(|w| lists_pipes(&w.name_any(), w.status.as_ref()))
    }

    /// Every event of the tenant namespaces and of the operator's, by name with its count.
    async fn events(&self) -> BTreeMap<String, i32> {
        let mut events = BTreeMap::new();
        let namespaces =
            self.namespaces.iter().map(String::as_str).chain([self.env.system.name(), "kube-system"]);
        for namespace in namespaces {
            let api: Api<Event> = Api::namespaced(self.env.client.clone(), namespace);
            for event in api.list(&ListParams::default()).await.unwrap().items {
                let count = event.series.as_ref().map_or(1, |s| s.count);
                events.insert(format!("{namespace}/{}", event.name_any()), count);
            }
        }
        events
    }

    async fn snapshot(&self) -> Snapshot {
        let mut accesses = BTreeMap::new();
        let mut versions = BTreeMap::new();
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=tenant-access-operator");
        for namespace in &self.namespaces {
            for access in self.accesses(namespace).list(&ListParams::default()).await.unwrap().items {
                let status = access.status.clone().unwrap_or_default();
                let conditions = status
                    .conditions
                    .iter()
                    .map(|c| {
                        let since = serde_json::to_string(&c.last_transition_time).unwrap();
                        (c.type_.clone(), c.status.clone(), c.reason.clone(), since)
                    })
                    .collect();
                let endpoints = serde_json::to_string(&status.endpoints).unwrap();
                let version = access.resource_version().unwrap_or_default();
                accesses
                    .insert(format!("{namespace}/{}", access.name_any()), (version, conditions, endpoints));
            }
            let secrets: Api<Secret> = Api::namespaced(self.env.client.clone(), namespace);
            for secret in secrets.list(&managed).await.unwrap().items {
                versions.insert(
                    format!("Secret {namespace}/{}", secret.name_any()),
                    secret.resource_version().unwrap(),
                );
            }
            let configmaps: Api<ConfigMap> = Api::namespaced(self.env.client.clone(), namespace);
            for configmap in configmaps.list(&managed).await.unwrap().items {
                versions.insert(
                    format!("ConfigMap {namespace}/{}", configmap.name_any()),
                    configmap.resource_version().unwrap(),
                );
            }
            let workspaces: Api<TinybirdWorkspace> = Api::namespaced(self.env.client.clone(), namespace);
            for workspace in workspaces.list(&ListParams::default()).await.unwrap().items {
                versions.insert(
                    format!("TinybirdWorkspace {namespace}/{}", workspace.name_any()),
                    workspace.resource_version().unwrap(),
                );
            }
        }
        let cluster_workspaces: Api<ClusterTinybirdWorkspace> = Api::all(self.env.client.clone());
        for workspace in cluster_workspaces.list(&ListParams::default()).await.unwrap().items {
            versions.insert(
                format!("ClusterTinybirdWorkspace {}", workspace.name_any()),
                workspace.resource_version().unwrap(),
            );
        }
        Snapshot { accesses, versions, events: self.events().await }
    }

    /// The pipe probes the emulator received since `since_ms`.
    fn probes_since(&self, since_ms: u64) -> impl Iterator<Item = tenant_access_emulators::RequestRecord> {
        self.env
            .tinybird
            .request_log()
            .records()
            .into_iter()
            .filter(move |r| r.path.starts_with("/v0/pipes/") && r.received_at_ms >= since_ms)
    }

    /// The pipes probed at the emulator since `since_ms`.
    fn probed_pipes_since(&self, since_ms: u64) -> BTreeSet<String> {
        self.probes_since(since_ms).map(|r| r.path).collect()
    }

    /// The `name` claim of each token that probed a pipe at the emulator since `since_ms`.
    fn probing_tokens_since(&self, since_ms: u64) -> BTreeSet<String> {
        self.probes_since(since_ms)
            .filter_map(|r| r.bearer_claims?["name"].as_str().map(str::to_owned))
            .collect()
    }
}

fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_everything_in_place_writes_nothing_flips_nothing_and_keeps_endpoint_health() {
    let fixture = Fixture::new().await;
    let first = fixture.env.start_operator();
    eventually("every TenantAccess Ready with healthy endpoints", || fixture.all_ready_and_healthy()).await;
    // Every token Secret's issuance event has landed (events are sent in the background).
    let issued = fixture.namespaces.len() * 2 * PER_WORKSPACE_KIND;
    eventually("an event for every issued token", || async { fixture.events().await.len() >= issued }).await;
    let total = fixture.namespaces.len() * (2 * PER_WORKSPACE_KIND + 1);
    // Each token was checked once when it was written.
    eventually_some("every TenantAccess's token probed", || async {
        let tokens = fixture.probing_tokens_since(0);
        (tokens.len() == total).then_some(tokens)
    })
    .await;
    let decoys = u64::try_from(DECOY_WORKSPACES).unwrap();
    // Every workspace's status written (a count of reconciles is not that: one may be
    // reconciled twice while another waits its turn).
    eventually("every workspace's status written", || fixture.every_workspace_observed()).await;
    first.stop().await;
    let before = fixture.snapshot().await;
    assert_eq!(before.accesses.len(), total);

    // The new operator starts on a loaded machine: every CPU busy beside it, the API server and
    // etcd included. A restart writes nothing however slowly it gets through its start-up.
    let burner = CpuBurner::start();
    let restarted_at = now_ms();
    let mark = audit_mark(&fixture.env.cluster);
    let second = fixture.env.start_audited_operator().await;
    // The new operator has looked at everything: every TenantAccess and workspace reconciled,
    // and every endpoint probed again.
    let workspaces = u64::try_from(fixture.namespaces.len() + DECOY_WORKSPACES).unwrap();
    let accesses = u64::try_from(before.accesses.len()).unwrap();
    eventually("every object reconciled by the new operator", || async {
        second.reconciles("TenantAccess", "success") >= accesses
            && second.reconciles("TinybirdWorkspace", "success") >= workspaces
            && second.reconciles("ClusterTinybirdWorkspace", "success") > decoys
    })
    .await;
    // Each pipe is probed again (once for all the tokens granting it); the tokens, checked when
    // written, are checked again only at the token-check interval (a restart is no burst).
    let pipes_before = fixture.probed_pipes_since(0);
    eventually("every pipe probed by the new operator", || async {
        fixture.probed_pipes_since(restarted_at).is_superset(&pipes_before)
    })
    .await;
    let after = fixture.snapshot().await;
    second.stop().await;
    drop(burner);

    for (name, (version, conditions, endpoints)) in &before.accesses {
        let (version_after, conditions_after, endpoints_after) = &after.accesses[name];
        assert_eq!(conditions_after, conditions, "conditions of {name} changed across the restart");
        assert_eq!(endpoints_after, endpoints, "status.endpoints of {name} changed across the restart");
        assert_eq!(version_after, version, "{name} was written across the restart");
    }
    assert_eq!(after.versions, before.versions, "objects written across the restart");
    assert_eq!(after.events, before.events, "events emitted across the restart");

    // Reads of single objects by the new operator: no token Secret (their data is never
    // watched; the status vouches for each), and at most one per Clerk template ConfigMap, whose
    // data the operator keeps nothing of across a restart.
    let gets: Vec<_> = audited_since(&fixture.env.cluster, mark)
        .into_iter()
        .filter(|request| request.user == "operator" && request.verb == "get")
        .collect();
    let token_secret_reads: Vec<_> = gets
        .iter()
        .filter(|get| {
            get.resource == "secrets"
                && before.versions.contains_key(&format!("Secret {}/{}", get.namespace, get.name))
        })
        .collect();
    let configmap_reads = gets.iter().filter(|get| get.resource == "configmaps").count();
    println!(
        "GETs after the restart: {} in all, {} of token Secrets, {configmap_reads} of ConfigMaps",
        gets.len(),
        token_secret_reads.len()
    );
    assert!(token_secret_reads.is_empty(), "token Secrets read across the restart: {token_secret_reads:?}");
    assert!(
        configmap_reads <= NAMESPACES,
        "{configmap_reads} ConfigMap reads for {NAMESPACES} Clerk templates"
    );
}
