//! A cluster-wide operator on a private API server: ClusterTinybirdWorkspace admission by
//! namespace labels, admin tokens only from the cluster-resource namespace, and no use of
//! another namespace's TinybirdWorkspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use support::{ClusterWideEnv, TIMEOUT, has_condition, is_ready};
use tenant_access::api::TenantAccess;
use tenant_access_testkit::wait_for;

fn access(workspace_ref: &str) -> String {
    format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: reader}}\nspec:\n  workspaceRef: {workspace_ref}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  secret: {{}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_workspace_admits_only_selected_namespaces() {
    let env = ClusterWideEnv::new().await;
    let (cluster, client, tinybird) = (&env.cluster, &env.client, &env.tinybird);
    let acme = cluster.namespace("acme").await.unwrap();
    let globex = cluster.namespace("globex").await.unwrap();

    // The same Secret name in a tenant namespace must never be used by the cluster workspace.
    env.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: shared-admin}\nstringData: {token: 'p.eyJ1IjoiZm9yZ2VkIn0.x'}\n", Some(acme.name())).await;
    let policy = "  policy:\n    allowedNamespaces: {matchLabels: {tinybird-tenants: enabled}}\n";
    env.apply(&env.shared_workspace_yaml(policy), None).await;
    // A namespaced workspace in acme, referenced from globex: not allowed.
    env.apply("apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {name: acme-ws}\nspec: {adminTokenSecretRef: {name: shared-admin}}\n", Some(acme.name())).await;

    let operator = env.start_operator();
    let shared_ref = "{kind: ClusterTinybirdWorkspace, name: shared}";
    env.apply(&access(shared_ref), Some(acme.name())).await;
    env.apply(&access("{name: acme-ws}"), Some(globex.name())).await;

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
    env.label_namespace(acme.name(), serde_json::json!({"tinybird-tenants": "enabled"})).await;
    wait_for(acme_access.clone(), "reader", is_ready(), TIMEOUT).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), acme.name());
    let token = support::token_of(&secrets.get("reader").await.unwrap()).unwrap();
    let key = tenant_access::core::admin_token::AdminToken::new(&tinybird.admin_token());
    assert!(
        tenant_access::core::jwt::ParsedToken::parse(&token).unwrap().signature_matches(&key),
        "signed with the cluster-resource namespace's key"
    );

    // A new admin token for the cluster workspace: re-signed, and the KeyRotated event about the
    // cluster-scoped workspace is accepted by the API server (it goes to `kube-system`).
    let new_admin = tinybird.refresh_admin_token();
    env.apply(
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: shared-admin, annotations: {{tenantaccess.dev/allowed-workspaces: ClusterTinybirdWorkspace/shared}}}}\nstringData: {{token: '{new_admin}'}}\n"),
        Some(env.system.name()),
    )
    .await;
    let new_key = tenant_access::core::admin_token::AdminToken::new(&new_admin);
    support::eventually("the token re-signed with the new key", || {
        let secrets = secrets.clone();
        let new_key = new_key.clone();
        async move {
            let token = support::token_of(&secrets.get("reader").await.unwrap()).unwrap();
            tenant_access::core::jwt::ParsedToken::parse(&token).unwrap().signature_matches(&new_key)
        }
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "kube-system");
    support::eventually("a KeyRotated event about ClusterTinybirdWorkspace shared", || {
        let events = events.clone();
        async move {
            events.list(&Default::default()).await.unwrap().items.iter().any(|e| {
                e.reason.as_deref() == Some("KeyRotated")
                    && e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some("ClusterTinybirdWorkspace")
                            && r.name.as_deref() == Some("shared")
                    })
            })
        }
    })
    .await;
    assert_eq!(operator.metrics.events_failed.get(), 0, "an event was refused");

    // Removing the label: refused again, and the issued token is revoked.
    env.label_namespace(acme.name(), serde_json::json!({"tinybird-tenants": null})).await;
    wait_for(acme_access, "reader", has_condition("Ready", "False", "NamespaceNotAllowed"), TIMEOUT)
        .await
        .unwrap();
    wait_for(
        secrets,
        "reader",
        |s: Option<&Secret>| s.is_some_and(|s| support::token_of(s).is_none()),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(
        Api::<Secret>::namespaced(client.clone(), globex.name()).get_opt("reader").await.unwrap().is_none()
    );
    operator.stop().await;
}
