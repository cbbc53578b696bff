//! A cluster-wide operator on a private API server: ClusterTinybirdWorkspace admission by
//! namespace labels, admin tokens only from the cluster-resource namespace, and no use of
//! another namespace's TinybirdWorkspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::{Operator, TIMEOUT, capture_logs, has_condition, is_ready};
use tenant_access::api::TenantAccess;
use tenant_access_emulators::{TinybirdConfig, TinybirdEmulator};
use tenant_access_testkit::{TestCluster, wait_for};

async fn apply(cluster: &TestCluster, yaml: &str, namespace: Option<&str>) {
    cluster.apply_yaml(yaml, namespace).await.unwrap();
}

fn access(workspace_ref: &str) -> String {
    format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: reader}}\nspec:\n  workspaceRef: {workspace_ref}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  secret: {{}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_workspace_admits_only_selected_namespaces() {
    capture_logs();
    // A private cluster: a cluster-wide operator must not meet other tests' resources.
    let cluster = TestCluster::start_local().await.unwrap();
    cluster.apply_crds().await.unwrap();
    let client = cluster.client().await.unwrap();
    let tinybird = TinybirdEmulator::start(TinybirdConfig::default()).await.unwrap();
    let system = cluster.namespace("operator").await.unwrap();
    let acme = cluster.namespace("acme").await.unwrap();
    let globex = cluster.namespace("globex").await.unwrap();

    let admin = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: shared-admin}}\nstringData: {{token: '{}'}}\n",
        tinybird.admin_token()
    );
    apply(&cluster, &admin, Some(system.name())).await;
    // The same Secret name in a tenant namespace must never be used by the cluster workspace.
    apply(&cluster, "apiVersion: v1\nkind: Secret\nmetadata: {name: shared-admin}\nstringData: {token: 'p.eyJ1IjoiZm9yZ2VkIn0.x'}\n", Some(acme.name())).await;
    apply(
        &cluster,
        &format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: ClusterTinybirdWorkspace\nmetadata: {{name: shared}}\nspec:\n  adminTokenSecretRef: {{name: shared-admin}}\n  apiUrl: {}\n  policy:\n    allowedNamespaces: {{matchLabels: {{tinybird-tenants: enabled}}}}\n",
            tinybird.base_url()
        ),
        None,
    )
    .await;
    // A namespaced workspace in acme, referenced from globex: not allowed.
    apply(&cluster, "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {name: acme-ws}\nspec: {adminTokenSecretRef: {name: shared-admin}}\n", Some(acme.name())).await;

    let operator = Operator::start(client.clone(), None, system.name());
    let shared_ref = "{kind: ClusterTinybirdWorkspace, name: shared}";
    apply(&cluster, &access(shared_ref), Some(acme.name())).await;
    apply(&cluster, &access("{name: acme-ws}"), Some(globex.name())).await;

    let acme_access: Api<TenantAccess> = Api::namespaced(client.clone(), acme.name());
    let globex_access: Api<TenantAccess> = Api::namespaced(client.clone(), globex.name());
    let refused = wait_for(
        acme_access.clone(),
        "reader",
        has_condition("Ready", "False", "NamespaceNotAllowed"),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(format!("{:?}", refused.status).contains("allowedNamespaces"));
    wait_for(globex_access.clone(), "reader", has_condition("Ready", "False", "WorkspaceNotFound"), TIMEOUT)
        .await
        .unwrap();

    // Labelling the namespace admits it, promptly.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let label = serde_json::json!({"metadata": {"labels": {"tinybird-tenants": "enabled"}}});
    namespaces.patch(acme.name(), &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    wait_for(acme_access.clone(), "reader", is_ready(), TIMEOUT).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), acme.name());
    let token = support::token_of(&secrets.get("reader").await.unwrap()).unwrap();
    let key = tenant_access::admin_token::AdminToken::new(&tinybird.admin_token());
    assert!(
        tenant_access::jwt::ParsedToken::parse(&token).unwrap().signature_matches(&key),
        "signed with the cluster-resource namespace's key"
    );

    // Removing the label: refused again (the issued token stays; policy revocation is its own issue).
    let unlabel = serde_json::json!({"metadata": {"labels": {"tinybird-tenants": null}}});
    namespaces.patch(acme.name(), &PatchParams::default(), &Patch::Merge(&unlabel)).await.unwrap();
    wait_for(acme_access, "reader", has_condition("Ready", "False", "NamespaceNotAllowed"), TIMEOUT)
        .await
        .unwrap();
    assert!(
        Api::<Secret>::namespaced(client.clone(), globex.name()).get_opt("reader").await.unwrap().is_none()
    );
    operator.stop().await;
}
