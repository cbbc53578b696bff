//! The Helm chart against a real API server: a server-side dry run of what it renders, a real
//! `helm install` / `upgrade` / `uninstall` (the CRDs stay), the operator running under the
//! chart's own ServiceAccount and RBAC (the rules suffice), and every verb of its ClusterRole and
//! of its leader-election Role removed in turn (each one is needed). What needs no cluster (lint,
//! render, CRD copies, the Argo CD health check) is in `tests/chart_render.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helm;
mod support;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::Condition;
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use support::{
    Operator, TIMEOUT, audit_mark, audited_since, capture_logs, clerk_fingerprint_is, clerk_synced,
    eventually, eventually_some, is_ready, logs, query_pipe, revision_at_least, token_of,
};
use tenant_access::api::TenantAccess;
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::jwt::ParsedToken;
use tenant_access::core::well_known::ANNOTATION_ALLOWED_WORKSPACES;
use tenant_access::runtime::leader::LeaderElection;
use tenant_access_emulators::{ClerkConfig, ClerkEmulator, TinybirdConfig, TinybirdEmulator};
use tenant_access_testkit::{TestCluster, wait_crd_established, wait_for};

use helm::{
    CRD_NAMES, EVERY_OPTION, FULLNAME, Helm, RELEASE, chart, helm, helm_with, raw_documents, render,
    with_values,
};
// ---------------------------------------------------------------------------------------------
// 2. what the chart renders, applied to a real API server (dry run)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_chart_applies_to_the_api_server_in_a_server_side_dry_run() {
    let cluster = TestCluster::shared().await.unwrap();
    let client = cluster.client().await.unwrap();
    // Render for this server (policy/v1 PodDisruptionBudget only from 1.21).
    let version = client.apiserver_version().await.unwrap().git_version;
    let groups = client.list_api_groups().await.unwrap();
    let has_service_monitors = groups.groups.iter().any(|g| g.name == "monitoring.coreos.com");
    let release = cluster.namespace("chart-dry-run").await.unwrap();
    let watched = cluster.namespace("chart-dry-run-watched").await.unwrap();
    let single = format!("watchNamespace={}", watched.name());
    let every_option_single: Vec<&str> = EVERY_OPTION.iter().copied().chain([single.as_str()]).collect();

    for set in [&[][..], EVERY_OPTION, &every_option_single[..]] {
        let rendered = render(release.name(), set, &["--kube-version", &version]).await;
        let mut applied = Vec::new();
        let mut skipped = Vec::new();
        for document in raw_documents(&rendered) {
            // The local server has no Prometheus Operator CRDs: the ServiceMonitor and the
            // PrometheusRule are checked by the render tests instead (the rules by promtool), and
            // applied here only where their CRDs exist.
            let monitoring =
                document.lines().any(|l| l == "kind: ServiceMonitor" || l == "kind: PrometheusRule");
            if monitoring && !has_service_monitors {
                skipped.push(document);
            } else {
                applied.push(document);
            }
        }
        let monitoring_objects = usize::from(set.contains(&"serviceMonitor.enabled=true"))
            + usize::from(set.contains(&"prometheusRule.enabled=true"));
        assert_eq!(skipped.len(), if has_service_monitors { 0 } else { monitoring_objects });
        let stream = applied.iter().map(|d| format!("---\n{d}")).collect::<String>();
        let out =
            cluster.kubectl_with_stdin(["apply", "--dry-run=server", "-f", "-"], &stream).await.unwrap();
        assert!(out.success(), "kubectl apply --dry-run=server {set:?}:\n{}", out.stderr);
        let accepted = out.stdout.lines().filter(|l| l.ends_with("(server dry run)")).count();
        assert_eq!(accepted, applied.len(), "{}", out.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. a real helm install, upgrade and uninstall

async fn helm_install(version: Helm, cluster: &TestCluster, release: &str, namespace: &str, set: &[&str]) {
    let chart = chart();
    let args = with_values(vec!["install", release, &chart, "--namespace", namespace], set);
    let out = helm_with(version, &args, Some(cluster.admin_kubeconfig())).await;
    assert!(out.success, "helm {version:?} install {release} {set:?}:\n{}", out.stderr);
}

async fn crds_established(client: &Client) {
    for name in CRD_NAMES {
        wait_crd_established(client.clone(), name, TIMEOUT).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall_keep_the_crds() {
    install_upgrade_and_uninstall(Helm::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm3_install_upgrade_and_uninstall_keep_the_crds() {
    install_upgrade_and_uninstall(Helm::V3).await;
}

async fn install_upgrade_and_uninstall(version: Helm) {
    // A private cluster: the release owns the cluster-scoped CRDs.
    let cluster = TestCluster::start_local().await.unwrap();
    let kubeconfig = cluster.admin_kubeconfig().to_path_buf();
    let admin = cluster.client().await.unwrap();
    let system = cluster.namespace("tenant-access-system").await.unwrap();
    let ns = system.name();
    let chart = chart();

    helm_install(version, &cluster, RELEASE, ns, &[]).await;
    crds_established(&admin).await;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for name in CRD_NAMES {
        let crd = crds.get(name).await.unwrap();
        assert_eq!(crd.metadata.annotations.unwrap()["helm.sh/resource-policy"], "keep");
    }
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    assert!(roles.get_opt(FULLNAME).await.unwrap().is_some());
    assert!(accounts.get_opt(FULLNAME).await.unwrap().is_some());
    assert!(deployments.get_opt(FULLNAME).await.unwrap().is_some());

    // Resources created meanwhile must survive everything below.
    let tenant = cluster.namespace("tenant").await.unwrap();
    cluster
        .apply_yaml(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {name: keep-me}\nspec:\n  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n",
            Some(tenant.name()),
        )
        .await
        .unwrap();

    // The webhook's configuration, its caBundle as the operator writes it.
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    let configuration = format!("{FULLNAME}-{ns}");
    let bundle = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";
    let written = cluster
        .kubectl([
            "patch",
            "validatingwebhookconfiguration",
            &configuration,
            "--type=json",
            "-p",
            &json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]).to_string(),
        ])
        .await
        .unwrap();
    assert!(written.success(), "{}", written.stderr);

    // An upgrade to two replicas turns leader election on and adds its Role.
    let out = helm_with(
        version,
        &["upgrade", RELEASE, &chart, "--namespace", ns, "--set", "replicaCount=2"],
        Some(&kubeconfig),
    )
    .await;
    assert!(out.success, "helm upgrade:\n{}", out.stderr);
    // The upgrade keeps the caBundle (an empty one would leave the webhook untrusted until the
    // operator writes it again).
    let kept = configurations.get(&configuration).await.unwrap().webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone();
    assert_eq!(kept.map(|b| b.0), Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()));
    let deployment = deployments.get(FULLNAME).await.unwrap();
    let args = deployment.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&"--leader-election".to_owned()), "{args:?}");
    let lease_roles: Api<Role> = Api::namespaced(admin.clone(), ns);
    assert!(lease_roles.get_opt("tao-tenant-access-operator-leader-election").await.unwrap().is_some());

    let out = helm_with(version, &["uninstall", RELEASE, "--namespace", ns], Some(&kubeconfig)).await;
    assert!(out.success, "helm uninstall:\n{}", out.stderr);
    assert!(roles.get_opt(FULLNAME).await.unwrap().is_none());
    assert!(
        configurations.get_opt(&configuration).await.unwrap().is_none(),
        "the webhook stays after uninstall"
    );
    assert!(deployments.get_opt(FULLNAME).await.unwrap().is_none());
    assert!(accounts.get_opt(FULLNAME).await.unwrap().is_none());
    for name in CRD_NAMES {
        assert!(crds.get_opt(name).await.unwrap().is_some(), "{name} was deleted by helm uninstall");
    }
    let accesses: Api<TenantAccess> = Api::namespaced(admin.clone(), tenant.name());
    assert!(accesses.get_opt("keep-me").await.unwrap().is_some());

    // Installing again adopts the kept CRDs.
    helm_install(version, &cluster, RELEASE, ns, &[]).await;
    // A second, namespace-scoped release next to it: no CRDs (the first owns them), no
    // cluster-scoped RBAC.
    helm_install(
        version,
        &cluster,
        "tao-ns",
        ns,
        &["crds.install=false", &format!("watchNamespace={}", tenant.name())],
    )
    .await;
    assert!(roles.get_opt("tao-ns-tenant-access-operator").await.unwrap().is_none());
    let tenant_roles: Api<Role> = Api::namespaced(admin.clone(), tenant.name());
    assert!(tenant_roles.get_opt("tao-ns-tenant-access-operator").await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// 4. the operator under the chart's own ServiceAccount and RBAC

/// A client authenticated as a ServiceAccount (a TokenRequest token), for the same server as
/// the admin kubeconfig.
async fn service_account_client(cluster: &TestCluster, namespace: &str, name: &str) -> Client {
    let out = cluster
        .kubectl(["create", "token", name, "-n", namespace, "--duration=2h"])
        .await
        .unwrap()
        .ok()
        .unwrap();
    let token = out.stdout.trim().to_owned();
    let admin = Kubeconfig::read_from(cluster.admin_kubeconfig()).unwrap();
    let context = admin.current_context.clone().unwrap_or_else(|| admin.contexts[0].name.clone());
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap();
    let named_cluster = admin.clusters.iter().find(|c| c.name == cluster_name).unwrap();
    let kubeconfig: Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [serde_json::to_value(named_cluster).unwrap()],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster_name, "user": name}}],
        "current-context": name,
    }))
    .unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// The requests of `user` that the API server refused (403) after `mark` in the audit log, as
/// `(verb, resource)` with the resource as RBAC names it (`tenantaccesses/status`).
fn refusals_since(cluster: &TestCluster, user: &str, mark: usize) -> Vec<(String, String)> {
    audited_since(cluster, mark)
        .into_iter()
        .filter(|request| request.user == user && request.code == 403)
        .map(|request| (request.verb, request.resource))
        .collect()
}

/// Whether a refusal is the one of `verb` on `resource`. A server-side apply that would create
/// the object is a `patch` request refused for want of `create`.
fn refuses((refused_verb, refused_resource): &(String, String), verb: &str, resource: &str) -> bool {
    refused_resource == resource && (refused_verb == verb || (verb == "create" && refused_verb == "patch"))
}

/// What the operator logged from `offset` on (the last lines), for failure messages.
fn log_tail(offset: usize) -> String {
    let text = logs();
    let lines: Vec<&str> = text.get(offset..).unwrap_or_default().lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Unwraps a wait, or fails with the operator's recent logs.
fn waited<T, E: std::fmt::Display>(result: Result<T, E>, offset: usize) -> T {
    result.unwrap_or_else(|error| panic!("{error}\noperator log (tail):\n{}", log_tail(offset)))
}

async fn apply(cluster: &TestCluster, namespace: Option<&str>, yaml: &str) {
    cluster.apply_yaml(yaml, namespace).await.unwrap();
}

/// A Secret usable by every workspace that can reach it (`allowed-workspaces: *`).
fn secret_yaml(name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, annotations: {{{ANNOTATION_ALLOWED_WORKSPACES}: '*'}}}}\nstringData: {{{key}: '{value}'}}\n"
    )
}

/// A Deployment, a StatefulSet and a DaemonSet called `name`, each opting in to rollout restarts.
fn workloads_yaml(name: &str) -> String {
    let metadata = format!(
        "metadata: {{name: {name}, labels: {{{}: 'true'}}}}",
        tenant_access::core::well_known::LABEL_RESTART_ON_TOKEN_CHANGE
    );
    let template = format!(
        "  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: registry.k8s.io/pause:3.9}}]}}\n"
    );
    format!(
        "apiVersion: apps/v1\nkind: Deployment\n{metadata}\nspec:\n{template}---\napiVersion: apps/v1\nkind: StatefulSet\n{metadata}\nspec:\n  serviceName: {name}\n{template}---\napiVersion: apps/v1\nkind: DaemonSet\n{metadata}\nspec:\n{template}"
    )
}

fn clerk_config() -> ClerkConfig {
    ClerkConfig { request_budget: 100, budget_window: Duration::from_secs(1), ..Default::default() }
}

/// Writes a Secret usable by every workspace that can reach it (`allowed-workspaces: *`).
async fn put_secret(client: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "annotations": {ANNOTATION_ALLOWED_WORKSPACES: "*"}},
        "stringData": {key: value},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&secret))
        .await
        .unwrap();
}

fn annotation_is(key: &'static str, value: String) -> impl Condition<Deployment> {
    move |d: Option<&Deployment>| {
        d.and_then(|d| d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(key).cloned())
            .as_deref()
            == Some(value.as_str())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_under_the_charts_service_account_issues_rotates_and_syncs_clerk() {
    capture_logs();
    // A private cluster: a cluster-wide operator must not meet other tests' resources.
    let cluster = TestCluster::start_local().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let system = cluster.namespace("tenant-access-system").await.unwrap();
    let acme = cluster.namespace("acme").await.unwrap();
    helm_install(Helm::V4, &cluster, RELEASE, system.name(), &[]).await;
    crds_established(&admin).await;
    let client = service_account_client(&cluster, system.name(), FULLNAME).await;
    // The operator runs as the ServiceAccount, not as an admin.
    let error = Api::<ClusterRole>::all(client.clone()).list(&Default::default()).await.unwrap_err();
    assert!(matches!(error, kube::Error::Api(ref s) if s.code == 403), "{error}");

    let tinybird = TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap();
    let shared_tinybird = TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap();
    let clerk = ClerkEmulator::start(clerk_config()).await.unwrap();
    let ns = acme.name();
    put_secret(&admin, ns, "tinybird-admin", "token", &tinybird.admin_token()).await;
    put_secret(&admin, ns, "clerk-key", "secret-key", clerk.secret_key()).await;
    put_secret(&admin, system.name(), "shared-admin", "token", &shared_tinybird.admin_token()).await;
    apply(&cluster, Some(ns), &workloads_yaml("acme-dashboard")).await;
    apply(&cluster, Some(ns), &format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: analytics}}\nspec:\n  adminTokenSecretRef: {{name: tinybird-admin, key: token}}\n  apiUrl: {}\n  clerk:\n    secretKeySecretRef: {{name: clerk-key, key: secret-key}}\n    apiUrl: {}\n",
        tinybird.base_url(), clerk.api_url()
    ))
    .await;
    apply(&cluster, None, &format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: ClusterTinybirdWorkspace\nmetadata: {{name: shared}}\nspec:\n  adminTokenSecretRef: {{name: shared-admin}}\n  apiUrl: {}\n  policy:\n    allowedNamespaces: {{matchLabels: {{tinybird-tenants: enabled}}}}\n",
        shared_tinybird.base_url()
    ))
    .await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let label = json!({"metadata": {"labels": {"tinybird-tenants": "enabled"}}});
    namespaces.patch(ns, &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    apply(&cluster, Some(ns), "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {name: acme}\nspec:\n  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret:\n    name: acme-tinybird-token\n    rolloutRestartTargets: [{kind: Deployment, name: acme-dashboard}]\n").await;
    apply(&cluster, Some(ns), "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {name: shared}\nspec:\n  workspaceRef: {kind: ClusterTinybirdWorkspace, name: shared}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n").await;
    cluster
        .apply_file(tenant_access_testkit::examples_dir().join("clerk-template.yaml"), Some(ns))
        .await
        .unwrap();

    let offset = logs().len();
    let audit = audit_mark(&cluster);
    let operator = Operator::start(client.clone(), None, system.name());
    let accesses: Api<TenantAccess> = Api::namespaced(admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);

    // A token Secret that Tinybird accepts, for acme's rows only.
    waited(wait_for(accesses.clone(), "acme", is_ready(), TIMEOUT).await, offset);
    let first = token_of(&secrets.get("acme-tinybird-token").await.unwrap()).unwrap();
    let (status, body) = query_pipe(&tinybird.base_url(), "top_pages", &first, "org=globex").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"].as_array().unwrap().iter().all(|row| row["org"] == "acme"), "{body}");
    let revision = tenant_access::core::well_known::ANNOTATION_REVISION;
    waited(
        wait_for(deployments.clone(), "acme-dashboard", annotation_is(revision, "1".into()), TIMEOUT).await,
        offset,
    );

    // The cluster workspace: namespace admission by label, admin token from the release namespace.
    waited(wait_for(accesses.clone(), "shared", is_ready(), TIMEOUT).await, offset);
    let shared = token_of(&secrets.get("shared").await.unwrap()).unwrap();
    assert_eq!(query_pipe(&shared_tinybird.base_url(), "top_pages", &shared, "").await.0, 200);

    // The Clerk template, pushed with the admin token as its signing key.
    waited(wait_for(accesses.clone(), "tinybird-clerk", clerk_synced(), TIMEOUT).await, offset);
    let template = clerk.template_by_name("tinybird").expect("template created in Clerk");
    assert_eq!(clerk.signing_key(&template.id), Some(tinybird.admin_token()));

    // Rotation: every dependent output is re-signed with the new key, promptly.
    let rotated = tinybird.refresh_admin_token();
    put_secret(&admin, ns, "tinybird-admin", "token", &rotated).await;
    waited(wait_for(accesses.clone(), "acme", revision_at_least(2), TIMEOUT).await, offset);
    let second = token_of(&secrets.get("acme-tinybird-token").await.unwrap()).unwrap();
    assert!(ParsedToken::parse(&second).unwrap().signature_matches(&AdminToken::new(&rotated)));
    assert_eq!(query_pipe(&tinybird.base_url(), "top_pages", &second, "").await.0, 200);
    assert_eq!(
        query_pipe(&tinybird.base_url(), "top_pages", &first, "").await.0,
        403,
        "the old token still works"
    );
    waited(
        wait_for(deployments.clone(), "acme-dashboard", annotation_is(revision, "2".into()), TIMEOUT).await,
        offset,
    );
    let fingerprint = AdminToken::new(&rotated).fingerprint();
    waited(
        wait_for(accesses.clone(), "tinybird-clerk", clerk_fingerprint_is(fingerprint), TIMEOUT).await,
        offset,
    );
    assert_eq!(clerk.signing_key(&template.id), Some(rotated.clone()));

    let events: Api<Event> = Api::namespaced(admin.clone(), ns);
    // Events are sent in the background: wait for them.
    eventually("Issued, Resigned and RolloutRestarted events", || {
        let events = events.clone();
        async move {
            let reasons: Vec<String> = events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            ["Issued", "Resigned", "RolloutRestarted"]
                .iter()
                .all(|reason| reasons.iter().any(|r| r == reason))
        }
    })
    .await;
    operator.stop().await;
    let user = format!("system:serviceaccount:{}:{FULLNAME}", system.name());
    let refused = refusals_since(&cluster, &user, audit);
    assert!(refused.is_empty(), "the chart's ClusterRole refused the operator: {refused:?}");

    // The namespace-scoped install: a Role in one namespace is enough there.
    let beta = cluster.namespace("beta").await.unwrap();
    helm_install(
        Helm::V4,
        &cluster,
        "tao-ns",
        system.name(),
        &["crds.install=false", &format!("watchNamespace={}", beta.name())],
    )
    .await;
    let namespaced_client =
        service_account_client(&cluster, system.name(), "tao-ns-tenant-access-operator").await;
    let error = Api::<Namespace>::all(namespaced_client.clone()).list(&Default::default()).await.unwrap_err();
    assert!(matches!(error, kube::Error::Api(ref s) if s.code == 403), "{error}");
    put_secret(&admin, beta.name(), "tinybird-admin", "token", &rotated).await;
    apply(&cluster, Some(beta.name()), &format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: analytics}}\nspec:\n  adminTokenSecretRef: {{name: tinybird-admin}}\n  apiUrl: {}\n",
        tinybird.base_url()
    ))
    .await;
    apply(&cluster, Some(beta.name()), "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {name: beta}\nspec:\n  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: beta}}]\n  secret: {}\n").await;
    let offset = logs().len();
    let audit = audit_mark(&cluster);
    let operator = Operator::start(namespaced_client, Some(beta.name()), system.name());
    let beta_accesses: Api<TenantAccess> = Api::namespaced(admin.clone(), beta.name());
    waited(wait_for(beta_accesses, "beta", is_ready(), TIMEOUT).await, offset);
    let token =
        token_of(&Api::<Secret>::namespaced(admin.clone(), beta.name()).get("beta").await.unwrap()).unwrap();
    assert_eq!(query_pipe(&tinybird.base_url(), "top_pages", &token, "").await.0, 200);
    operator.stop().await;
    let user = format!("system:serviceaccount:{}:tao-ns-tenant-access-operator", system.name());
    let refused = refusals_since(&cluster, &user, audit);
    assert!(refused.is_empty(), "the chart's namespaced Role refused the operator: {refused:?}");
}

// ---------------------------------------------------------------------------------------------
// 4b. the admission webhook under the chart's ServiceAccount and RBAC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_runs_under_the_charts_service_account_and_configuration() {
    use tenant_access::runtime::webhook::{CertificateSource, WebhookConfig, rotation::Managed, serve_on};
    capture_logs();
    let cluster = TestCluster::start_local().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let system = cluster.namespace("tenant-access-system").await.unwrap();
    let tenant = cluster.namespace("tenant").await.unwrap();
    helm_install(Helm::V4, &cluster, RELEASE, system.name(), &[]).await;
    crds_established(&admin).await;
    // The chart's configuration, pointed at this process instead of the Service (no pod runs here).
    let configuration = format!("{FULLNAME}-{}", system.name());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/validate", listener.local_addr().unwrap().port());
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    let to_here = json!([{"op": "replace", "path": "/webhooks/0/clientConfig", "value": {"url": url}},
                         {"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"}]);
    let patched = cluster
        .kubectl([
            "patch",
            "validatingwebhookconfiguration",
            &configuration,
            "--type=json",
            "-p",
            &to_here.to_string(),
        ])
        .await
        .unwrap();
    assert!(patched.success(), "{}", patched.stderr);

    // The webhook as the Deployment runs it, as the chart's ServiceAccount.
    let client = service_account_client(&cluster, system.name(), FULLNAME).await;
    let audit = audit_mark(&cluster);
    let config = WebhookConfig {
        address: "127.0.0.1:0".parse().unwrap(),
        certificate: CertificateSource::Managed(Managed {
            namespace: system.name().to_owned(),
            secret_name: format!("{FULLNAME}-webhook-tls"),
            configuration_name: Some(configuration.clone()),
            hosts: vec!["127.0.0.1".to_owned()],
            validity: Default::default(),
        }),
        namespaces: None,
        cluster_wide: true,
        client_ca: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let webhook = tokio::spawn(serve_on(listener, client, config, async {
        let _ = stopped.await;
    }));

    // It reads the workspace and the namespace, and refuses what the workspace policy forbids.
    apply(&cluster, Some(tenant.name()), "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {name: analytics}\nspec:\n  adminTokenSecretRef: {name: tinybird-admin}\n").await;
    let forbidden = "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {name: forbidden}\nspec:\n  workspaceRef: {name: analytics}\n  scopes: [{type: DATASOURCES:READ, resource: events}]\n  secret: {}\n";
    let refused = eventually_some("the chart's webhook to refuse", || async {
        let out = cluster
            .kubectl_with_stdin(["apply", "--dry-run=server", "-n", tenant.name(), "-f", "-"], forbidden)
            .await
            .unwrap();
        (!out.success() && out.stderr.contains("denied the request")).then_some(out.stderr)
    })
    .await;
    assert!(refused.contains("refused by the workspace policy: spec.scopes[0].type"), "{refused}");
    let _ = stop.send(());
    webhook.await.unwrap().unwrap();
    // The operator wrote its CA into the configuration, and the chart's RBAC refused nothing.
    let written = configurations.get(&configuration).await.unwrap();
    assert!(written.webhooks.unwrap()[0].client_config.ca_bundle.is_some());
    let user = format!("system:serviceaccount:{}:{FULLNAME}", system.name());
    let refused = refusals_since(&cluster, &user, audit);
    assert!(refused.is_empty(), "the chart's RBAC refused the webhook: {refused:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. every verb of the ClusterRole is needed

/// Whether the API server lets `user` (a ServiceAccount of `account_namespace`) do `verb` on
/// the rule's first resource (and first resource name), in `namespace` or cluster-wide.
async fn allowed(
    admin: &Client,
    user: &str,
    account_namespace: &str,
    rule: &PolicyRule,
    verb: &str,
    namespace: Option<&str>,
) -> bool {
    let group = rule.api_groups.as_ref().and_then(|g| g.first().cloned()).unwrap_or_default();
    let resource = rule.resources.as_ref().and_then(|r| r.first().cloned()).unwrap_or_default();
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource.to_owned(), Some(sub.to_owned())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{account_namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group),
                resource: Some(resource),
                subresource,
                verb: Some(verb.to_owned()),
                namespace: namespace.map(str::to_owned),
                name: rule.resource_names.as_ref().and_then(|n| n.first().cloned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer =
        Api::<SubjectAccessReview>::all(admin.clone()).create(&PostParams::default(), &review).await.unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

/// The rules without `verb` in rule `index` (and without that rule when it has no verb left).
fn without_verb(rules: &[PolicyRule], index: usize, verb: &str) -> Vec<PolicyRule> {
    let mut reduced = rules.to_vec();
    reduced[index].verbs.retain(|v| v != verb);
    if reduced[index].verbs.is_empty() {
        reduced.remove(index);
    }
    reduced
}

async fn set_rules(roles: &Api<ClusterRole>, rules: &[PolicyRule]) {
    roles.patch(FULLNAME, &PatchParams::default(), &Patch::Merge(&json!({"rules": rules}))).await.unwrap();
}

/// One run of the scenario that exercises every verb of the ClusterRole, in a fresh namespace
/// (so that every write happens again): a namespaced workspace with a Clerk connection and a
/// cluster workspace; a TenantAccess issuing a token that restarts three workloads (three
/// events of one kind: the second and third patch the first, an event series); one using the
/// cluster workspace (namespace admission); one with a Clerk template (ConfigMap, finalizer)
/// whose template is changed once synced (ConfigMap patched), then removed (ConfigMap deleted,
/// finalizer removed).
struct ScenarioRun {
    namespace: tenant_access_testkit::TestNamespace,
    remove_clerk_output: tokio::task::JoinHandle<()>,
}

struct Emulators {
    tinybird: TinybirdEmulator,
    clerk: ClerkEmulator,
}

impl ScenarioRun {
    async fn start(cluster: &TestCluster, admin: &Client, emulators: &Emulators) -> Self {
        let namespace = cluster.namespace("verbs").await.unwrap();
        let ns = namespace.name().to_owned();
        let labels = json!({"metadata": {"labels": {"tinybird-tenants": "enabled"}}});
        Api::<Namespace>::all(admin.clone())
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
            .await
            .unwrap();
        let (tinybird, clerk) = (&emulators.tinybird, &emulators.clerk);
        let mut yaml = secret_yaml("tinybird-admin", "token", &tinybird.admin_token());
        yaml.push_str("---\n");
        yaml.push_str(&secret_yaml("clerk-key", "secret-key", clerk.secret_key()));
        yaml.push_str("---\n");
        yaml.push_str(&workloads_yaml("app"));
        yaml.push_str(&format!(
            "---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: analytics}}\nspec:\n  adminTokenSecretRef: {{name: tinybird-admin}}\n  apiUrl: {}\n  clerk:\n    secretKeySecretRef: {{name: clerk-key, key: secret-key}}\n    apiUrl: {}\n",
            tinybird.base_url(),
            clerk.api_url()
        ));
        let access = |name: &str, workspace: &str, outputs: &str| {
            format!(
                "---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: {name}}}\nspec:\n  workspaceRef: {workspace}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  healthCheck: {{interval: '0'}}\n{outputs}"
            )
        };
        yaml.push_str(&access(
            "token",
            "{name: analytics}",
            "  secret:\n    rolloutRestartTargets: [{kind: Deployment, name: app}, {kind: StatefulSet, name: app}, {kind: DaemonSet, name: app}]\n",
        ));
        yaml.push_str(&access(
            "shared",
            &format!("{{kind: ClusterTinybirdWorkspace, name: {ns}}}"),
            "  secret: {}\n",
        ));
        yaml.push_str(&access(
            "clerk",
            "{name: analytics}",
            &format!("  secret: {{}}\n  clerkTemplate: {{name: {ns}, deletionPolicy: Delete}}\n"),
        ));
        cluster.apply_yaml(&yaml, Some(&ns)).await.unwrap();
        cluster
            .apply_yaml(
                &format!(
                    "apiVersion: tenantaccess.dev/v1alpha1\nkind: ClusterTinybirdWorkspace\nmetadata: {{name: {ns}}}\nspec:\n  adminTokenSecretRef: {{name: shared-admin}}\n  apiUrl: {}\n  policy:\n    allowedNamespaces: {{matchLabels: {{tinybird-tenants: enabled}}}}\n",
                    tinybird.base_url()
                ),
                None,
            )
            .await
            .unwrap();
        // Once the template is synced, change it (the operator's own ConfigMap is patched), then
        // remove the Clerk output (when a step never happens because a verb is missing, this
        // just gives up).
        let accesses: Api<TenantAccess> = Api::namespaced(admin.clone(), &ns);
        let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
        let remove_clerk_output = tokio::spawn(async move {
            if wait_for(accesses.clone(), "clerk", clerk_synced(), TIMEOUT).await.is_err() {
                return;
            }
            let longer = json!({"spec": {"clerkTemplate": {"lifetime": "120s"}}});
            let _ = accesses.patch("clerk", &PatchParams::default(), &Patch::Merge(&longer)).await;
            let patched = |c: Option<&ConfigMap>| {
                c.and_then(|c| c.data.as_ref()?.get("template.json"))
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .is_some_and(|t| t["lifetime"] == 120)
            };
            if wait_for(configmaps, "clerk-clerk-template", patched, TIMEOUT).await.is_ok() {
                let patch = json!({"spec": {"clerkTemplate": null}});
                let _ = accesses.patch("clerk", &PatchParams::default(), &Patch::Merge(&patch)).await;
            }
        });
        Self { namespace, remove_clerk_output }
    }

    fn name(&self) -> &str {
        self.namespace.name()
    }

    /// Stops the helper task. The namespace is kept until the end of the test: a deleted
    /// namespace stays Terminating on a server without controller-manager, and the operator's
    /// writes into it would be refused for another reason.
    fn finish(self) -> tenant_access_testkit::TestNamespace {
        self.remove_clerk_output.abort();
        self.namespace
    }

    /// Waits until everything the scenario does has happened.
    async fn wait_complete(&self, admin: &Client) {
        let ns = self.name();
        let accesses: Api<TenantAccess> = Api::namespaced(admin.clone(), ns);
        wait_for(accesses.clone(), "token", is_ready(), TIMEOUT).await.unwrap();
        wait_for(accesses.clone(), "shared", is_ready(), TIMEOUT).await.unwrap();
        eventually("the three workloads restarted for revision 1", || async {
            restarted::<Deployment>(admin, ns).await
                && restarted::<StatefulSet>(admin, ns).await
                && restarted::<DaemonSet>(admin, ns).await
        })
        .await;
        let events: Api<Event> = Api::namespaced(admin.clone(), ns);
        eventually("a RolloutRestarted event series", || {
            let events = events.clone();
            async move {
                events.list(&Default::default()).await.unwrap().items.iter().any(|e| {
                    e.reason.as_deref() == Some("RolloutRestarted")
                        && e.series.as_ref().is_some_and(|s| s.count >= 2)
                })
            }
        })
        .await;
        // The Clerk output removed: finalizer gone, ConfigMap deleted.
        let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
        eventually("the Clerk output removed", || {
            let (accesses, configmaps) = (accesses.clone(), configmaps.clone());
            async move {
                let access = accesses.get("clerk").await.unwrap();
                access.spec.clerk_template.is_none()
                    && access.metadata.finalizers.unwrap_or_default().is_empty()
                    && configmaps.get_opt("clerk-clerk-template").await.unwrap().is_none()
            }
        })
        .await;
        let workspaces: Api<tenant_access::api::TinybirdWorkspace> = Api::namespaced(admin.clone(), ns);
        let ready = |status: Option<&tenant_access::api::WorkspaceStatus>| {
            status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        eventually("both workspaces Ready", || {
            let workspaces = workspaces.clone();
            let cluster_workspaces: Api<tenant_access::api::ClusterTinybirdWorkspace> =
                Api::all(admin.clone());
            async move {
                ready(workspaces.get("analytics").await.unwrap().status.as_ref())
                    && ready(cluster_workspaces.get(ns).await.unwrap().status.as_ref())
            }
        })
        .await;
    }
}

/// Whether workload `app` carries the token revision 1 on its pod template.
async fn restarted<K>(admin: &Client, namespace: &str) -> bool
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let api: Api<K> = Api::namespaced(admin.clone(), namespace);
    let object = serde_json::to_value(api.get("app").await.unwrap()).unwrap();
    // JSON pointer: "/" in the annotation key is written "~1".
    let pointer = format!(
        "/spec/template/metadata/annotations/{}",
        tenant_access::core::well_known::ANNOTATION_REVISION.replace('/', "~1")
    );
    object.pointer(&pointer) == Some(&json!("1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_of_the_charts_cluster_role_is_needed() {
    capture_logs();
    let cluster = TestCluster::start_local().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let system = cluster.namespace("tenant-access-system").await.unwrap();
    helm_install(Helm::V4, &cluster, RELEASE, system.name(), &[]).await;
    crds_established(&admin).await;
    let client = service_account_client(&cluster, system.name(), FULLNAME).await;
    let user = format!("system:serviceaccount:{}:{FULLNAME}", system.name());
    let emulators = Emulators {
        tinybird: TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap(),
        clerk: ClerkEmulator::start(clerk_config()).await.unwrap(),
    };
    put_secret(&admin, system.name(), "shared-admin", "token", &emulators.tinybird.admin_token()).await;
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let rules = roles.get(FULLNAME).await.unwrap().rules.unwrap();

    // With every rule: the scenario completes and nothing is refused.
    let audit = audit_mark(&cluster);
    let run = ScenarioRun::start(&cluster, &admin, &emulators).await;
    let operator = Operator::start(client.clone(), None, system.name());
    let started = std::time::Instant::now();
    run.wait_complete(&admin).await;
    eprintln!("baseline complete after {:?}", started.elapsed());
    operator.stop().await;
    let mut namespaces = vec![run.finish()];
    let refused = refusals_since(&cluster, &user, audit);
    assert!(refused.is_empty(), "refused with the full ClusterRole: {refused:?}");

    // Without each verb in turn: the operator's request is refused (and so the function it
    // serves breaks), or the verb is superfluous.
    let mut report = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let resource = rule.resources.as_ref().unwrap()[0].clone();
        for verb in &rule.verbs {
            set_rules(&roles, &without_verb(&rules, index, verb)).await;
            eventually(&format!("RBAC to deny {verb} on {resource}"), || async {
                !allowed(&admin, &user, system.name(), rule, verb, None).await
            })
            .await;

            let audit = audit_mark(&cluster);
            let started = std::time::Instant::now();
            let run = ScenarioRun::start(&cluster, &admin, &emulators).await;
            let operator = Operator::start(client.clone(), None, system.name());
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            let seen = loop {
                // The API server's record of what it refused the operator's ServiceAccount.
                let refusals = refusals_since(&cluster, &user, audit);
                if let Some(refusal) = refusals.into_iter().find(|r| refuses(r, verb, &resource)) {
                    break Some(refusal);
                }
                if tokio::time::Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            eprintln!("{resource} {verb}: refusal seen: {} after {:?}", seen.is_some(), started.elapsed());
            // Aborted, not stopped: a graceful stop waits for caches that a refused list never
            // fills.
            drop(operator);
            namespaces.push(run.finish());
            let (refused_verb, refused_resource) = seen.unwrap_or_else(|| {
                panic!(
                    "without {verb} on {resource} the scenario saw no refusal: the verb looks unneeded, remove it from the chart (or extend the scenario)"
                )
            });
            report.push(format!("{resource} {verb}: {refused_verb} {refused_resource} refused"));
        }
    }
    set_rules(&roles, &rules).await;
    eprintln!("every verb is needed ({} scenario runs):\n{}", namespaces.len(), report.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// leader election under the chart's Lease Role

fn lease_refusal(result: &Result<bool, kube::Error>, verb: &str) -> bool {
    matches!(result, Err(kube::Error::Api(status))
        if status.code == 403 && status.message.contains(&format!("cannot {verb} resource \"leases\"")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_works_with_the_charts_lease_role_and_needs_each_of_its_verbs() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let namespace = cluster.namespace("lease").await.unwrap();
    let ns = namespace.name();
    // Namespace-scoped, no CRDs: the release puts nothing cluster-wide into a shared cluster.
    let watch = format!("watchNamespace={ns}");
    helm_install(Helm::V4, &cluster, RELEASE, ns, &["replicaCount=2", "crds.install=false", &watch]).await;
    let client = service_account_client(&cluster, ns, FULLNAME).await;
    // The Lease the Deployment's flags name: the release namespace and the full name.
    let candidate = |lease: &str, identity: &str| {
        LeaderElection::new(client.clone(), ns, lease, identity, Duration::from_secs(15))
    };

    // The first replica creates the Lease and renews it, the second stands by and takes over
    // once the first releases it.
    let (a, b) = (candidate(FULLNAME, "replica-a"), candidate(FULLNAME, "replica-b"));
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    a.release().await;
    assert!(b.try_acquire_or_renew().await.unwrap());
    // Only that Lease: another one cannot even be read.
    assert!(lease_refusal(&candidate("another-lease", "replica-a").try_acquire_or_renew().await, "get"));

    // Without each verb in turn, a replica starting from no Lease is refused.
    let roles: Api<Role> = Api::namespaced(admin.clone(), ns);
    let role = format!("{FULLNAME}-leader-election");
    let rules = roles.get(&role).await.unwrap().rules.unwrap();
    let leases: Api<Lease> = Api::namespaced(admin.clone(), ns);
    let user = format!("system:serviceaccount:{ns}:{FULLNAME}");
    let mut checked = 0;
    for (index, rule) in rules.iter().enumerate() {
        for verb in &rule.verbs {
            let reduced = without_verb(&rules, index, verb);
            roles
                .patch(&role, &PatchParams::default(), &Patch::Merge(&json!({"rules": reduced})))
                .await
                .unwrap();
            eventually(&format!("RBAC to deny {verb} on leases"), || async {
                !allowed(&admin, &user, ns, rule, verb, Some(ns)).await
            })
            .await;
            let _ = leases.delete(FULLNAME, &Default::default()).await;
            let replica = candidate(FULLNAME, "replica-a");
            let mut result = replica.try_acquire_or_renew().await;
            if result.is_ok() {
                result = replica.try_acquire_or_renew().await;
            }
            assert!(
                lease_refusal(&result, verb),
                "without {verb} on leases leader election still works: remove it from the chart"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "get, create and update");
    let out = helm(&["uninstall", RELEASE, "--namespace", ns], Some(cluster.admin_kubeconfig())).await;
    assert!(out.success, "{}", out.stderr);
}
