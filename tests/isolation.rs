//! What a hostile tenant team (rights: TenantAccess in its own namespace, reading its Secrets)
//! can no longer do through the operator's rights, and what the platform team's withdrawal of a
//! namespace takes away:
//! - have the operator overwrite or delete a ConfigMap someone else created (`ConfigMapConflict`);
//! - have the operator restart a workload that did not opt in;
//! - keep a valid token in its Secret after its namespace is withdrawn from a shared workspace;
//! - take another namespace's default Clerk template name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::Condition as _;
use kube::{Api, Client};
use serde_json::json;
use support::{
    ClusterWideEnv, Env, TIMEOUT, clerk_synced, condition, condition_is_true, eventually, grant_tenant_team,
    has_condition, is_ready, tenant_access_yaml, tenant_apply, token_of,
};
use tenant_access::api::TenantAccess;
use tenant_access::core::well_known::{
    LABEL_MANAGED_BY, LABEL_RESTART_ON_TOKEN_CHANGE, LABEL_TENANT_ACCESS, OPERATOR_NAME,
};
use tenant_access_emulators::{ClerkConfig, ClerkEmulator};
use tenant_access_testkit::wait_for;

/// Condition: the spec of this generation was handled and the TenantAccess is Ready.
fn ready_at_generation(generation: i64) -> impl kube::runtime::wait::Condition<TenantAccess> {
    move |ta: Option<&TenantAccess>| {
        ta.and_then(|t| t.status.as_ref()).is_some_and(|s| s.observed_generation == Some(generation))
            && condition_is_true(ta, "Ready")
    }
}

fn clerk_config() -> ClerkConfig {
    ClerkConfig {
        request_budget: 100,
        budget_window: std::time::Duration::from_secs(1),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_someone_else_created_is_neither_written_nor_deleted() {
    let mut env = Env::new("cm-conflict").await;
    env.connect_clerk().await;
    let ns = env.name().to_owned();
    grant_tenant_team(&env.cluster, &ns).await;

    // ConfigMaps of another party, named as the tenant's Clerk ConfigMaps would be: one plain, one
    // carrying the operator's labels (anyone who can write a ConfigMap can set them).
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    let data = BTreeMap::from([("app.conf".to_owned(), "owner=platform".to_owned())]);
    for (name, labels) in [
        ("plain-clerk-template", json!({})),
        (
            "labelled-clerk-template",
            json!({LABEL_MANAGED_BY: OPERATOR_NAME, LABEL_TENANT_ACCESS: "labelled"}),
        ),
    ] {
        let theirs: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
                .unwrap();
        configmaps.create(&PostParams::default(), &theirs).await.unwrap();
    }
    env.start_operator();

    let with_clerk = "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  healthCheck: {interval: '0'}\n  secret: {}\n  clerkTemplate: {}\n";
    for name in ["plain", "labelled", "own"] {
        tenant_apply(&env.cluster, &ns, &tenant_access_yaml(name, with_clerk)).await;
    }
    for name in ["plain", "labelled"] {
        let refused =
            env.wait_access(name, has_condition("ClerkTemplateSynced", "False", "ConfigMapConflict")).await;
        // The token Secret is current: Ready, degraded by the Clerk output it names.
        let ready = condition(Some(&refused), "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Degraded"));
        assert!(
            ready.message.contains(&format!("ConfigMap {ns}/{name}-clerk-template"))
                && ready.message.contains("not created by this TenantAccess"),
            "{}",
            ready.message
        );
        // The Secret output is not affected.
        assert!(condition_is_true(Some(&refused), "TokenIssued"), "{name}: {:?}", refused.status);
        assert!(token_of(&env.secrets().get(name).await.unwrap()).is_some(), "{name}: a token");
        // Their ConfigMap is untouched, and nothing went to Clerk.
        let configmap = configmaps.get(&format!("{name}-clerk-template")).await.unwrap();
        assert_eq!(configmap.data.as_ref(), Some(&data), "{name}: data unchanged");
        assert!(configmap.metadata.owner_references.is_none(), "{name}: no owner added");
        assert!(env.clerk().template_by_name(&format!("{ns}_{name}")).is_none(), "{name}: not pushed");
    }
    env.wait_access("own", is_ready()).await;
    assert!(configmaps.get("own-clerk-template").await.unwrap().data.unwrap().contains_key("template.json"));

    // The team removes the Clerk output: its own ConfigMap goes, the others' stay as they were.
    let without_clerk = with_clerk.replace("  clerkTemplate: {}\n", "");
    for name in ["plain", "labelled", "own"] {
        tenant_apply(&env.cluster, &ns, &tenant_access_yaml(name, &without_clerk)).await;
    }
    for name in ["plain", "labelled", "own"] {
        env.wait_access(name, ready_at_generation(2)).await;
    }
    eventually("the TenantAccess's own ConfigMap deleted", || async {
        configmaps.get_opt("own-clerk-template").await.unwrap().is_none()
    })
    .await;
    for name in ["plain", "labelled"] {
        let configmap = configmaps.get(&format!("{name}-clerk-template")).await.unwrap();
        assert_eq!(configmap.data.as_ref(), Some(&data), "{name}: still there, unchanged");
    }
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_workloads_that_opt_in_are_restarted() {
    let mut env = Env::new("restart-opt-in").await;
    let ns = env.name().to_owned();
    grant_tenant_team(&env.cluster, &ns).await;
    let deployment = |name: &str, labels: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
        )
    };
    env.apply_yaml(&deployment("opted-in", &format!("{LABEL_RESTART_ON_TOKEN_CHANGE}: 'true'"))).await;
    env.apply_yaml(&deployment("bystander", "app: bystander")).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns);
    let bystander_before = deployments.get("bystander").await.unwrap();
    env.start_operator();

    tenant_apply(
        &env.cluster,
        &ns,
        &tenant_access_yaml(
            "web",
            "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  healthCheck: {interval: '0'}\n  secret:\n    rolloutRestartTargets: [{kind: Deployment, name: opted-in}, {kind: Deployment, name: bystander}]\n",
        ),
    )
    .await;
    env.wait_access("web", is_ready()).await;
    let annotations = |d: &Deployment| {
        d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.annotations.clone())
    };
    wait_for(
        deployments.clone(),
        "opted-in",
        move |d: Option<&Deployment>| {
            d.and_then(annotations).is_some_and(|a| {
                a.get(tenant_access::core::well_known::ANNOTATION_REVISION).map(String::as_str) == Some("1")
            })
        },
        TIMEOUT,
    )
    .await
    .unwrap();
    let events = env.events_with(&["RolloutRestartRefused", "Deployment bystander"]).await;
    assert!(events.contains(LABEL_RESTART_ON_TOKEN_CHANGE), "the event names the label to add: {events}");
    let bystander = deployments.get("bystander").await.unwrap();
    assert_eq!(annotations(&bystander), annotations(&bystander_before), "pod template annotations unchanged");
    assert_eq!(bystander.metadata.generation, bystander_before.metadata.generation, "not patched");
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_a_namespace_revokes_its_token_and_a_missing_workspace_does_not() {
    let env = ClusterWideEnv::new().await;
    admitted_namespace(&env.client, "acme").await;
    grant_tenant_team(&env.cluster, "acme").await;
    let (clerk, workspace) = shared_workspace_with_clerk(&env).await;
    let operator = env.start_operator();
    tenant_apply(&env.cluster, "acme", &tenant_access_yaml("front", CLERK_ONLY)).await;

    tenant_apply(
        &env.cluster,
        "acme",
        &tenant_access_yaml(
            "reader",
            "  workspaceRef: {kind: ClusterTinybirdWorkspace, name: shared}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  healthCheck: {interval: '0'}\n  secret: {}\n",
        ),
    )
    .await;
    let accesses: Api<TenantAccess> = Api::namespaced(env.client.clone(), "acme");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "acme");
    wait_for(accesses.clone(), "reader", is_ready(), TIMEOUT).await.unwrap();
    wait_for(accesses.clone(), "front", clerk_synced(), TIMEOUT).await.unwrap();
    let token = token_of(&secrets.get("reader").await.unwrap()).unwrap();

    // Not a withdrawal: a workspace that is missing (deleted to be re-created, here while the
    // operator restarts) refuses new tokens and leaves the issued one alone.
    operator.stop().await;
    let workspaces: Api<tenant_access::api::ClusterTinybirdWorkspace> = Api::all(env.client.clone());
    workspaces.delete("shared", &DeleteParams::default()).await.unwrap();
    let operator = env.start_operator();
    wait_for(accesses.clone(), "reader", has_condition("Ready", "False", "WorkspaceNotFound"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(token_of(&secrets.get("reader").await.unwrap()), Some(token), "the token stays");
    wait_for(accesses.clone(), "front", has_condition("Ready", "False", "WorkspaceNotFound"), TIMEOUT)
        .await
        .unwrap();
    assert!(clerk.template_by_name("acme_front").is_some(), "the Clerk template stays");
    env.apply(&workspace, None).await;
    wait_for(accesses.clone(), "reader", is_ready(), TIMEOUT).await.unwrap();
    wait_for(accesses.clone(), "front", is_ready(), TIMEOUT).await.unwrap();

    // The platform team withdraws the namespace: refused, and the token leaves the Secret.
    env.label_namespace("acme", json!({"tinybird-tenants": null})).await;
    wait_for(accesses.clone(), "reader", has_condition("Ready", "False", "NamespaceNotAllowed"), TIMEOUT)
        .await
        .unwrap();
    let revoked = wait_for(
        secrets.clone(),
        "reader",
        |s: Option<&Secret>| s.is_some_and(|s| token_of(s).is_none()),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(revoked.data.unwrap().contains_key("api-url"), "the Secret stays, without its token");
    // The status follows (written after the Secret, by the same reconcile or the next).
    let no_token =
        |ta: Option<&TenantAccess>| ta.and_then(|t| t.status.as_ref()).is_some_and(|s| s.token.is_none());
    wait_for(accesses.clone(), "reader", no_token, TIMEOUT).await.unwrap();
    // The Clerk template goes from Clerk too (no new token is minted from it).
    let front = wait_for(
        accesses.clone(),
        "front",
        has_condition("ClerkTemplateSynced", "False", "NamespaceNotAllowed"),
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(front.status.unwrap().clerk_template.is_none());
    assert!(clerk.template_by_name("acme_front").is_none(), "deleted from Clerk");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), "acme");
    eventually("a TokenRevoked event", || async {
        events.list(&Default::default()).await.unwrap().items.iter().any(|e| {
            e.reason.as_deref() == Some("TokenRevoked")
                && e.note.as_deref().is_some_and(|n| n.contains("no longer admitted"))
        })
    })
    .await;

    // Admitted again: a new token and the template again.
    env.label_namespace("acme", json!({"tinybird-tenants": "enabled"})).await;
    wait_for(secrets, "reader", |s: Option<&Secret>| s.is_some_and(|s| token_of(s).is_some()), TIMEOUT)
        .await
        .unwrap();
    wait_for(accesses, "front", clerk_synced(), TIMEOUT).await.unwrap();
    assert!(clerk.template_by_name("acme_front").is_some(), "created again");
    operator.stop().await;
}

/// A Clerk emulator, its key in Secret `clerk-key` of the operator's namespace, and the
/// ClusterTinybirdWorkspace `shared` connected to it, admitting namespaces labelled
/// `tinybird-tenants: enabled`.
async fn shared_workspace_with_clerk(env: &ClusterWideEnv) -> (ClerkEmulator, String) {
    let clerk = ClerkEmulator::start(clerk_config()).await.unwrap();
    env.apply(
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: clerk-key, annotations: {{tenantaccess.dev/allowed-workspaces: ClusterTinybirdWorkspace/shared}}}}\nstringData: {{secret-key: '{}'}}\n",
            clerk.secret_key()
        ),
        Some(env.system.name()),
    )
    .await;
    let workspace = env.shared_workspace_yaml(&format!(
        "  clerk:\n    secretKeySecretRef: {{name: clerk-key, key: secret-key}}\n    apiUrl: {}\n  policy:\n    allowedNamespaces: {{matchLabels: {{tinybird-tenants: enabled}}}}\n",
        clerk.api_url()
    ));
    env.apply(&workspace, None).await;
    (clerk, workspace)
}

async fn admitted_namespace(client: &Client, name: &str) {
    let namespace: Namespace = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"tinybird-tenants": "enabled"}}}),
    )
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
}

const CLERK_ONLY: &str = "  workspaceRef: {kind: ClusterTinybirdWorkspace, name: shared}\n  scopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\n  healthCheck: {interval: '0'}\n  clerkTemplate: {}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_clerk_template_names_of_two_namespaces_never_collide() {
    let env = ClusterWideEnv::new().await;
    let (clerk, _) = shared_workspace_with_clerk(&env).await;
    // With `<namespace>-<name>` both would be `acme-corp-dash`.
    for (namespace, name) in [("acme", "corp-dash"), ("acme-corp", "dash")] {
        admitted_namespace(&env.client, namespace).await;
        env.apply(&tenant_access_yaml(name, CLERK_ONLY), Some(namespace)).await;
    }
    let operator = env.start_operator();
    let mut ids = Vec::new();
    for (namespace, name, template) in
        [("acme", "corp-dash", "acme_corp-dash"), ("acme-corp", "dash", "acme-corp_dash")]
    {
        let accesses: Api<TenantAccess> = Api::namespaced(env.client.clone(), namespace);
        let synced = wait_for(accesses, name, clerk_synced(), TIMEOUT).await.unwrap().unwrap();
        let pushed = synced.status.unwrap().clerk_template.unwrap();
        assert_eq!(pushed.name, template);
        let remote = clerk.template_by_name(template).unwrap_or_else(|| panic!("{template} in Clerk"));
        assert_eq!(pushed.id.as_deref(), Some(remote.id.as_str()));
        ids.push(remote.id);
    }
    assert_ne!(ids[0], ids[1], "two templates");
    assert_eq!(clerk.templates().len(), 2);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_pushed_under_the_old_default_name_is_renamed_in_place() {
    let env = ClusterWideEnv::new().await;
    let (clerk, _) = shared_workspace_with_clerk(&env).await;
    admitted_namespace(&env.client, "acme").await;
    env.apply(&tenant_access_yaml("dash", CLERK_ONLY), Some("acme")).await;

    // What a release with the `<namespace>-<name>` default left: the template in Clerk, and its
    // record in the status.
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/jwt_templates", clerk.api_url()))
        .bearer_auth(clerk.secret_key())
        .json(&json!({"name": "acme-dash", "claims": {"tenant_access": "acme/dash"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let accesses: Api<TenantAccess> = Api::namespaced(env.client.clone(), "acme");
    let status = json!({"status": {"clerkTemplate": {
        "id": id, "name": "acme-dash", "claimsHash": "pushed-by-an-older-release", "signingKeyFingerprint": "old",
    }}});
    accesses.patch_status("dash", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    let operator = env.start_operator();
    let renamed = wait_for(
        accesses,
        "dash",
        |ta: Option<&TenantAccess>| {
            clerk_synced().matches_object(ta)
                && ta
                    .and_then(|t| t.status.as_ref()?.clerk_template.as_ref())
                    .is_some_and(|t| t.name == "acme_dash")
        },
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(renamed.status.unwrap().clerk_template.unwrap().id.as_deref(), Some(id.as_str()));
    let templates = clerk.templates();
    assert_eq!(templates.len(), 1, "renamed, not duplicated: {templates:?}");
    assert_eq!((templates[0].id.as_str(), templates[0].name.as_str()), (id.as_str(), "acme_dash"));
    let log = clerk.request_log();
    assert_eq!(log.count_matching("POST", "/v1/jwt_templates"), 1, "only the test's own create");
    assert_eq!(log.count_matching("DELETE", "/v1/jwt_templates"), 0);
    assert!(log.count_matching("PATCH", &format!("/v1/jwt_templates/{id}")) >= 1);
    operator.stop().await;
}
