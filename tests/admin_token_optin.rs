//! Who can use an admin token: a workspace uses an admin-token or Clerk-key Secret only when the
//! Secret lists it in `tenantaccess.dev/allowed-workspaces`. Otherwise the Secret's data is
//! never read nor sent (the emulators' request logs show no call with it), nothing is signed,
//! and what was issued stays; annotating the Secret makes the workspace recover promptly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kube::Api;
use kube::api::{Patch, PatchParams};
use support::{ClusterWideEnv, Env, TIMEOUT, assert_no_secrets, clerk_synced, has_condition, is_ready, logs};
use tenant_access::api::{ClusterTinybirdWorkspace, Condition, TinybirdWorkspace, WorkspaceStatus};
use tenant_access::core::well_known::ANNOTATION_ALLOWED_WORKSPACES;
use tenant_access_emulators::{ClerkConfig, ClerkEmulator};
use tenant_access_testkit::wait_for;

/// A TenantAccess of `workspace` with a Secret output `<name>-token`, then `extra` spec lines.
fn access_spec(workspace: &str, name: &str, extra: &str) -> String {
    format!(
        "  workspaceRef: {{name: {workspace}}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  healthCheck: {{interval: '0'}}\n  secret: {{name: {name}-token}}\n{extra}"
    )
}

/// The Ready condition of a workspace status, if any.
fn ready(status: Option<&WorkspaceStatus>) -> Option<&Condition> {
    status?.conditions.iter().find(|c| c.type_ == "Ready")
}

/// Condition: a TinybirdWorkspace's Ready condition has this reason.
fn workspace_reason(reason: &'static str) -> impl kube::runtime::wait::Condition<TinybirdWorkspace> {
    move |ws: Option<&TinybirdWorkspace>| {
        ready(ws.and_then(|w| w.status.as_ref())).is_some_and(|c| c.reason == reason)
    }
}

/// Condition: a ClusterTinybirdWorkspace's Ready condition has this reason.
fn cluster_workspace_reason(
    reason: &'static str,
) -> impl kube::runtime::wait::Condition<ClusterTinybirdWorkspace> {
    move |ws: Option<&ClusterTinybirdWorkspace>| {
        ready(ws.and_then(|w| w.status.as_ref())).is_some_and(|c| c.reason == reason)
    }
}

async fn wait_workspace(env: &Env, name: &str, reason: &'static str) -> TinybirdWorkspace {
    let workspaces: Api<TinybirdWorkspace> = Api::namespaced(env.client.clone(), env.name());
    wait_for(workspaces, name, workspace_reason(reason), TIMEOUT).await.unwrap().expect("workspace exists")
}

/// The message of a workspace's Ready condition.
fn ready_message(status: Option<&WorkspaceStatus>) -> String {
    ready(status).map(|c| c.message.clone()).unwrap_or_default()
}

/// Waits until a TinybirdWorkspace is refused its Secret: the message of its Ready condition.
async fn refusal(env: &Env, name: &str) -> String {
    ready_message(wait_workspace(env, name, "SecretNotAllowed").await.status.as_ref())
}

/// Sets (or, with None, removes) the Secret's allowed-workspaces annotation, touching nothing
/// else: only its metadata changes.
async fn annotate(secrets: &Api<k8s_openapi::api::core::v1::Secret>, name: &str, allowed: Option<&str>) {
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_ALLOWED_WORKSPACES: allowed}}});
    secrets.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// GET /v1/workspace calls at the Tinybird emulator: the only request that carries the admin
/// token itself (a check of the key, asked for by `verifyInterval`).
fn admin_token_checks(env: &Env) -> usize {
    env.tinybird.request_log().count_matching("GET", "/v1/workspace")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_not_listed_by_its_secret_reads_and_sends_nothing_until_the_secret_allows_it() {
    let mut env = Env::new("optin").await;
    // Only the workspace under test: another one's key check would be counted below.
    let out =
        env.cluster.kubectl(["delete", "tinybirdworkspace", "analytics", "-n", env.name()]).await.unwrap();
    assert!(out.success(), "{}", out.stderr);
    let admin = env.tinybird.admin_token();
    env.put_secret_allowing("guarded-admin", "token", &admin, None).await;
    // verifyInterval: an allowed workspace sends its admin token to Tinybird at once.
    env.apply_yaml(&format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: guarded}}\nspec:\n  adminTokenSecretRef: {{name: guarded-admin}}\n  apiUrl: {}\n  verifyInterval: 10m\n",
        env.tinybird.base_url()
    ))
    .await;
    env.tenant_access("acme", &access_spec("guarded", "acme", "")).await;
    env.start_operator();

    let message = refusal(&env, "guarded").await;
    assert!(message.contains(&format!("Secret {}/guarded-admin", env.name())), "{message}");
    assert!(message.contains(ANNOTATION_ALLOWED_WORKSPACES), "{message}");
    assert!(message.contains("\"guarded\""), "{message}");
    let access = env.wait_access("acme", has_condition("Ready", "False", "WorkspaceNotReady")).await;
    assert!(format!("{:?}", access.status).contains("SecretNotAllowed"));
    assert!(env.secrets().get_opt("acme-token").await.unwrap().is_none(), "nothing signed");
    assert_eq!(admin_token_checks(&env), 0, "the admin token was sent to Tinybird");

    // The Secret's owner adds the workspace: only metadata changes, and the workspace recovers.
    annotate(&env.secrets(), "guarded-admin", Some("other, guarded")).await;
    wait_workspace(&env, "guarded", "Ready").await;
    env.wait_access("acme", is_ready()).await;
    let token = env.token("acme-token").await;
    assert_eq!(env.query("top_pages", &token, "").await.0, 200);
    assert!(admin_token_checks(&env) > 0, "an allowed workspace checks its key with Tinybird");

    // Taking the permission back stops the workspace; what was issued is left as it is.
    let issued = env.secrets().get("acme-token").await.unwrap();
    annotate(&env.secrets(), "guarded-admin", Some("other")).await;
    wait_workspace(&env, "guarded", "SecretNotAllowed").await;
    env.wait_access("acme", has_condition("Ready", "False", "WorkspaceNotReady")).await;
    let kept = env.secrets().get("acme-token").await.unwrap();
    assert_eq!(kept.data, issued.data, "the issued token was left as it is");

    assert_no_secrets("logs", &logs(), &[admin]);
    assert_no_secrets("events", &env.events_text().await, &[env.tinybird.admin_token()]);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_allowed_for_one_workspace_cannot_be_used_by_another_of_its_namespace() {
    let mut env = Env::new("optin-other").await;
    env.put_secret_allowing("team-admin", "token", &env.tinybird.admin_token(), Some("a")).await;
    for name in ["a", "b"] {
        env.apply_yaml(&format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: {name}}}\nspec:\n  adminTokenSecretRef: {{name: team-admin}}\n  apiUrl: {}\n",
            env.tinybird.base_url()
        ))
        .await;
        env.tenant_access(name, &access_spec(name, name, "")).await;
    }
    env.start_operator();

    wait_workspace(&env, "a", "Ready").await;
    env.wait_access("a", is_ready()).await;
    let message = refusal(&env, "b").await;
    assert!(message.contains("does not list \"b\""), "{message}");
    env.wait_access("b", has_condition("Ready", "False", "WorkspaceNotReady")).await;
    assert!(env.secrets().get_opt("b-token").await.unwrap().is_none(), "nothing signed for b");
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_secret_key_is_neither_read_nor_sent_unless_its_secret_allows_the_workspace() {
    let mut env = Env::new("optin-clerk").await;
    let config = ClerkConfig {
        request_budget: 100,
        budget_window: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let clerk = ClerkEmulator::start(config).await.unwrap();
    env.put_secret_allowing("c-admin", "token", &env.tinybird.admin_token(), Some("c")).await;
    env.put_secret_allowing("c-clerk", "secret-key", clerk.secret_key(), None).await;
    env.apply_yaml(&format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: c}}\nspec:\n  adminTokenSecretRef: {{name: c-admin}}\n  apiUrl: {}\n  clerk:\n    secretKeySecretRef: {{name: c-clerk, key: secret-key}}\n    apiUrl: {}\n",
        env.tinybird.base_url(),
        clerk.api_url()
    ))
    .await;
    env.tenant_access("frontend", &access_spec("c", "frontend", "  clerkTemplate: {name: frontend}\n")).await;
    env.start_operator();

    let message = refusal(&env, "c").await;
    assert!(message.contains(&format!("Secret {}/c-clerk", env.name())), "{message}");
    env.wait_access("frontend", has_condition("Ready", "False", "WorkspaceNotReady")).await;
    assert_eq!(clerk.request_log().total(), 0, "the Clerk secret key was sent to Clerk");

    annotate(&env.secrets(), "c-clerk", Some("c")).await;
    wait_workspace(&env, "c", "Ready").await;
    env.wait_access("frontend", clerk_synced()).await;
    assert!(clerk.template_by_name("frontend").is_some());
    assert_no_secrets("logs", &logs(), &[clerk.secret_key().to_owned()]);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_workspace_must_be_listed_with_its_kind() {
    let env = ClusterWideEnv::new().await;
    let acme = env.cluster.namespace("acme").await.unwrap();
    env.label_namespace(acme.name(), serde_json::json!({"tinybird-tenants": "enabled"})).await;
    // Listed by bare name: that names a TinybirdWorkspace of the operator's namespace, not the
    // ClusterTinybirdWorkspace `reports`.
    env.apply(
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: reports-admin, annotations: {{{ANNOTATION_ALLOWED_WORKSPACES}: reports}}}}\nstringData: {{token: '{}'}}\n",
            env.tinybird.admin_token()
        ),
        Some(env.system.name()),
    )
    .await;
    env.apply(
        &format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: ClusterTinybirdWorkspace\nmetadata: {{name: reports}}\nspec:\n  adminTokenSecretRef: {{name: reports-admin}}\n  apiUrl: {}\n  policy:\n    allowedNamespaces: {{matchLabels: {{tinybird-tenants: enabled}}}}\n",
            env.tinybird.base_url()
        ),
        None,
    )
    .await;
    env.apply(
        &format!(
            "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: reader}}\nspec:\n{}",
            access_spec("reports", "reader", "").replace("{name: reports}", "{kind: ClusterTinybirdWorkspace, name: reports}")
        ),
        Some(acme.name()),
    )
    .await;
    let operator = env.start_operator();

    let workspaces: Api<ClusterTinybirdWorkspace> = Api::all(env.client.clone());
    let refused =
        wait_for(workspaces.clone(), "reports", cluster_workspace_reason("SecretNotAllowed"), TIMEOUT)
            .await
            .unwrap()
            .unwrap();
    let message = ready_message(refused.status.as_ref());
    assert!(message.contains("\"ClusterTinybirdWorkspace/reports\""), "{message}");
    let accesses: Api<tenant_access::api::TenantAccess> = Api::namespaced(env.client.clone(), acme.name());
    wait_for(accesses.clone(), "reader", has_condition("Ready", "False", "WorkspaceNotReady"), TIMEOUT)
        .await
        .unwrap();

    let secrets = Api::namespaced(env.client.clone(), env.system.name());
    annotate(&secrets, "reports-admin", Some("ClusterTinybirdWorkspace/reports")).await;
    wait_for(workspaces, "reports", cluster_workspace_reason("Ready"), TIMEOUT).await.unwrap();
    wait_for(accesses, "reader", is_ready(), TIMEOUT).await.unwrap();
    operator.stop().await;
}
