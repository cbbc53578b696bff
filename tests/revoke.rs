//! Rotating and revoking the admin token from the cluster (issue 19), on the real API server with
//! the Tinybird and Clerk emulators: by annotation, by `tenant-access revoke`, on a schedule; a
//! refresh Tinybird fails is never sent again; a tenant-only user cannot trigger it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kube::Api;
use kube::api::{Patch, PatchParams};
use support::{Env, TIMEOUT, assert_no_secrets, clerk_synced, is_ready, logs};
use tenant_access::api::{RotationRecord, TinybirdWorkspace};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::well_known::ANNOTATION_ROTATE;
use tenant_access_emulators::Fault;
use tenant_access_testkit::wait_for;

const CLI: &str = env!("CARGO_BIN_EXE_tenant-access");

/// TenantAccesses `t0`..`t{count-1}` with a token Secret and (when `clerk`) a Clerk template.
async fn tenants(env: &Env, count: usize, clerk: bool) {
    let mut all = String::new();
    for i in 0..count {
        let template = if clerk { format!("  clerkTemplate: {{name: tpl-t{i}}}\n") } else { String::new() };
        all.push_str(&format!(
            "---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: t{i}}}\nspec:\n  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  secret: {{}}\n{template}  healthCheck: {{interval: '0'}}\n"
        ));
    }
    env.apply_yaml(&all).await;
    for i in 0..count {
        let name = format!("t{i}");
        if clerk {
            env.wait_access(&name, clerk_synced()).await;
        }
        env.wait_access(&name, is_ready()).await;
    }
}

fn workspaces(env: &Env) -> Api<TinybirdWorkspace> {
    Api::namespaced(env.client.clone(), env.name())
}

/// Waits until the workspace has a rotation record for `request` in `phase`.
async fn wait_rotation(env: &Env, request: &str, phase: &str) -> RotationRecord {
    let (request, phase) = (request.to_owned(), phase.to_owned());
    let workspace = wait_for(
        workspaces(env),
        "analytics",
        move |ws: Option<&TinybirdWorkspace>| record_of(ws, &request).is_some_and(|r| r.phase == phase),
        TIMEOUT * 2,
    )
    .await
    .unwrap()
    .unwrap();
    let request = workspace.status.as_ref().unwrap().rotation.as_ref().unwrap().history[0].request.clone();
    record_of(Some(&workspace), &request).unwrap()
}

fn record_of(workspace: Option<&TinybirdWorkspace>, request: &str) -> Option<RotationRecord> {
    workspace?.status.as_ref()?.rotation.as_ref()?.history.iter().find(|r| r.request == request).cloned()
}

/// Waits until the operator has seen the workspace (its rotation status exists).
async fn wait_baseline(env: &Env) {
    wait_for(
        workspaces(env),
        "analytics",
        |ws: Option<&TinybirdWorkspace>| ws.and_then(|w| w.status.as_ref()?.rotation.as_ref()).is_some(),
        TIMEOUT,
    )
    .await
    .unwrap();
}

/// Waits until the workspace's `KeyRotation` condition has `status` and `reason` (it is written
/// just after the rotation record).
async fn wait_key_rotation_condition(
    env: &Env,
    status: &'static str,
    reason: &'static str,
) -> TinybirdWorkspace {
    wait_for(
        workspaces(env),
        "analytics",
        move |ws: Option<&TinybirdWorkspace>| {
            ws.and_then(|w| w.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "KeyRotation"))
                .is_some_and(|c| c.status == status && c.reason == reason)
        },
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap()
}

async fn annotate(env: &Env, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_ROTATE: value}}});
    workspaces(env).patch("analytics", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

fn refreshes(env: &Env) -> usize {
    env.tinybird.request_log().count_matching("POST", "/v0/tokens/")
}

async fn admin_token_in_secret(env: &Env) -> String {
    env.token("tinybird-admin").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotating_the_workspace_rotates_the_admin_token_and_every_dependent_follows() {
    let mut env = Env::new("rotate-annotation").await;
    env.connect_clerk().await;
    env.start_operator();
    const N: usize = 4;
    tenants(&env, N, true).await;
    wait_baseline(&env).await;
    let old_admin = env.tinybird.admin_token();
    let mut old_tokens = Vec::new();
    for i in 0..N {
        old_tokens.push(env.token(&format!("t{i}")).await);
    }

    annotate(&env, "incident-42").await;
    let record = wait_rotation(&env, "incident-42", "Complete").await;

    // Tinybird refreshed once, and the Secret holds what it answered.
    let new_admin = env.tinybird.admin_token();
    assert_ne!(new_admin, old_admin);
    assert_eq!(admin_token_in_secret(&env).await, new_admin);
    assert_eq!(refreshes(&env), 1);
    assert_eq!(record.trigger, "Annotation");
    assert_eq!(record.old_key_fingerprint, Some(AdminToken::new(&old_admin).fingerprint()));
    assert_eq!(record.new_key_fingerprint, Some(AdminToken::new(&new_admin).fingerprint()));
    assert_eq!(record.tokens.map(|p| (p.on_new_key, p.total)), Some((4, 4)));
    assert_eq!(record.templates.map(|p| (p.on_new_key, p.total)), Some((4, 4)));
    assert!(record.secrets_on_new_key_after.is_some() && record.templates_on_new_key_after.is_some());

    // Every old token is dead, every new one and every Clerk-minted one works.
    for (i, old) in old_tokens.iter().enumerate() {
        assert_eq!(env.query("top_pages", old, "").await.0, 403, "t{i}: the old token still works");
        let new = env.token(&format!("t{i}")).await;
        assert_eq!(env.query("top_pages", &new, "").await.0, 200, "t{i}: the new token is refused");
    }
    let minted = env.mint_clerk_token("tpl-t0").await;
    assert_eq!(env.query("top_pages", &minted, "").await.0, 200, "a Clerk-minted token is refused");

    let workspace = wait_key_rotation_condition(&env, "True", "RotationComplete").await;
    let events = env
        .events_with(&[
            "\"reason\":\"RotationStarted\"",
            "\"reason\":\"AdminTokenRefreshed\"",
            "\"reason\":\"RotationComplete\"",
        ])
        .await;
    let status = serde_json::to_string(&workspace).unwrap();
    for (what, text) in [("events", &events), ("workspace", &status), ("logs", &logs())] {
        assert_no_secrets(what, text, &[old_admin.clone(), new_admin.clone()]);
    }
    env.stop_operator().await;
}

/// `tenant-access revoke` of the test's workspace `analytics` as the cluster admin, waiting for
/// the result.
async fn revoke_analytics(env: &Env) -> (Option<i32>, String, String) {
    let workspace = format!("{}/analytics", env.name());
    revoke(&["--workspace", &workspace, "--wait", "120"], env.cluster.admin_kubeconfig()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revoke_command_rotates_and_reports_progress_and_the_result() {
    let mut env = Env::new("revoke-cli").await;
    env.start_operator();
    tenants(&env, 3, false).await;
    wait_baseline(&env).await;
    let old_admin = env.tinybird.admin_token();
    let (code, stdout, stderr) = revoke_analytics(&env).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("rotation requested (tenantaccess.dev/rotate=cli-"), "{stdout}");
    assert!(stdout.contains("done (Complete)") && stdout.contains("(3/3)"), "{stdout}");
    let new_admin = env.tinybird.admin_token();
    assert_ne!(new_admin, old_admin);
    assert_eq!(admin_token_in_secret(&env).await, new_admin);
    assert_eq!(refreshes(&env), 1);
    let rotation = workspaces(&env).get("analytics").await.unwrap().status.unwrap().rotation.unwrap();
    assert_eq!(rotation.history[0].trigger, "CLI");
    assert_no_secrets("revoke's output", &format!("{stdout}{stderr}"), &[old_admin, new_admin]);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_of_an_admin_secret_another_tool_manages_says_to_update_its_source() {
    let mut env = Env::new("revoke-managed").await;
    // As External Secrets or Helm would mark it: that tool writes its own value back later.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client.clone(), env.name());
    let label =
        serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "external-secrets"}}});
    secrets.patch("tinybird-admin", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    env.start_operator();
    tenants(&env, 1, false).await;
    wait_baseline(&env).await;
    let old_admin = env.tinybird.admin_token();
    let (code, stdout, stderr) = revoke_analytics(&env).await;
    // The rotation itself is done; the warning says what is left to a person.
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("done (Complete)"), "{stdout}");
    let said = "the admin-token Secret is managed by external-secrets (label app.kubernetes.io/managed-by)";
    assert!(stderr.starts_with("warning: ") && stderr.contains(said), "{stderr}");
    assert!(stderr.contains("Copy the new token from this Secret into that source"), "{stderr}");
    let record =
        workspaces(&env).get("analytics").await.unwrap().status.unwrap().rotation.unwrap().history[0].clone();
    assert!(record.message.as_deref().is_some_and(|m| m.contains(said)), "{record:?}");
    env.events_with(&["AdminTokenSecretManagedElsewhere", "tinybird-admin", said]).await;
    let new_admin = env.tinybird.admin_token();
    assert_no_secrets("revoke's output", &format!("{stdout}{stderr}"), &[old_admin, new_admin]);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_only_user_cannot_revoke() {
    let mut env = Env::new("revoke-rbac").await;
    support::grant_tenant_team(&env.cluster, env.name()).await;
    env.start_operator();
    wait_baseline(&env).await;
    let old_admin = env.tinybird.admin_token();
    let workspace = format!("{}/analytics", env.name());
    let tenant = env.cluster.tenant_kubeconfig().await.unwrap();
    let (code, _, stderr) = revoke(&["--workspace", &workspace, "--wait", "30"], &tenant).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("TinybirdWorkspace"), "{stderr}");
    // Nor with kubectl: RBAC is the gate, whatever the client.
    let annotate = env
        .cluster
        .tenant_kubectl([
            "annotate",
            "-n",
            env.name(),
            "tinybirdworkspace",
            "analytics",
            &format!("{ANNOTATION_ROTATE}=by-a-tenant"),
        ])
        .await
        .unwrap();
    assert!(!annotate.success(), "a tenant annotated the workspace");
    let workspace = workspaces(&env).get("analytics").await.unwrap();
    assert!(!workspace.metadata.annotations.unwrap_or_default().contains_key(ANNOTATION_ROTATE));
    assert_eq!(env.tinybird.admin_token(), old_admin);
    assert_eq!(refreshes(&env), 0);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_tinybird_fails_is_never_sent_again_and_nothing_changes() {
    let mut env = Env::new("rotate-refused").await;
    env.start_operator();
    tenants(&env, 1, false).await;
    wait_baseline(&env).await;
    let old_admin = env.tinybird.admin_token();
    let old_token = env.token("t0").await;
    env.tinybird
        .add_fault(Fault { path_prefix: Some("/v0/tokens/".into()), times: Some(1), ..Fault::status(503) })
        .unwrap();

    annotate(&env, "attempt-1").await;
    let record = wait_rotation(&env, "attempt-1", "NotRefreshed").await;
    assert!(record.message.as_deref().unwrap().contains("still accepts"), "{record:?}");
    assert_eq!(refreshes(&env), 1, "the refresh was sent again");
    assert_eq!(env.tinybird.admin_token(), old_admin);
    assert_eq!(admin_token_in_secret(&env).await, old_admin);
    assert_eq!(env.query("top_pages", &old_token, "").await.0, 200);
    wait_key_rotation_condition(&env, "False", "NotRefreshed").await;

    // A new value tries again.
    annotate(&env, "attempt-2").await;
    wait_rotation(&env, "attempt-2", "Complete").await;
    assert_eq!(refreshes(&env), 2);
    assert_eq!(admin_token_in_secret(&env).await, env.tinybird.admin_token());
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_rotation_happens_at_the_next_rotation_time() {
    let mut env = Env::new("rotate-schedule").await;
    env.start_operator();
    tenants(&env, 2, false).await;
    wait_baseline(&env).await;
    let old_admin = env.tinybird.admin_token();
    let patch = serde_json::json!({"spec": {"rotation": {"interval": "1m"}}});
    workspaces(&env).patch("analytics", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let scheduled = wait_for(
        workspaces(&env),
        "analytics",
        |ws: Option<&TinybirdWorkspace>| {
            ws.and_then(|w| w.status.as_ref()?.rotation.as_ref()?.next_rotation_time.as_ref()).is_some()
        },
        TIMEOUT,
    )
    .await
    .unwrap()
    .unwrap();
    let due = scheduled.status.unwrap().rotation.unwrap().next_rotation_time.unwrap();
    let series = format!(
        "tenant_access_rotation_next_timestamp_seconds{{namespace=\"{}\",name=\"analytics\",kind=\"TinybirdWorkspace\"}} {}",
        env.name(),
        due.0.as_second()
    );
    let registry = env.operator.as_ref().unwrap().metrics.registry();
    support::eventually("the next rotation time as a metric", || async {
        let format = tenant_access::runtime::exposition::Format::OpenMetrics;
        tenant_access::runtime::metrics::encode(&registry, format).unwrap().contains(&series)
    })
    .await;

    let request = format!("schedule-{}", due.0);
    let record = wait_rotation(&env, &request, "Complete").await;
    assert_eq!(record.trigger, "Schedule");
    assert!(record.refreshed_at.unwrap().0 >= due.0);
    assert_ne!(env.tinybird.admin_token(), old_admin);
    assert_eq!(admin_token_in_secret(&env).await, env.tinybird.admin_token());
    let next = workspaces(&env).get("analytics").await.unwrap().status.unwrap().rotation.unwrap();
    assert!(next.next_rotation_time.unwrap().0 > due.0, "the schedule did not move on");
    env.stop_operator().await;
}

/// Runs `tenant-access revoke` with `args` as the user of `kubeconfig`.
async fn revoke(args: &[&str], kubeconfig: &std::path::Path) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(CLI)
        .arg("revoke")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("TENANT_ACCESS_KUBECONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_cluster_workspace_names_it_alone_and_writes_its_secret_in_the_operators_namespace() {
    let env = support::ClusterWideEnv::new().await;
    let team = env.cluster.namespace("team").await.unwrap();
    env.apply(&env.shared_workspace_yaml("  policy: {allowedNamespaces: {}}\n"), None).await;
    env.apply(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {name: reader}\nspec:\n  workspaceRef: {kind: ClusterTinybirdWorkspace, name: shared}\n  scopes: [{resource: top_pages, fixedParams: {org: acme}}]\n  secret: {}\n  healthCheck: {interval: '0'}\n",
        Some(team.name()),
    )
    .await;
    let operator = env.start_operator();
    let accesses: Api<tenant_access::api::TenantAccess> = Api::namespaced(env.client.clone(), team.name());
    wait_for(accesses.clone(), "reader", is_ready(), TIMEOUT).await.unwrap();
    let clusters: Api<tenant_access::api::ClusterTinybirdWorkspace> = Api::all(env.client.clone());
    wait_for(
        clusters.clone(),
        "shared",
        |ws: Option<&tenant_access::api::ClusterTinybirdWorkspace>| {
            ws.and_then(|w| w.status.as_ref()?.rotation.as_ref()).is_some()
        },
        TIMEOUT,
    )
    .await
    .unwrap();
    let old_admin = env.tinybird.admin_token();

    let (code, stdout, stderr) =
        revoke(&["--workspace", "shared", "--wait", "120"], env.cluster.admin_kubeconfig()).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("ClusterTinybirdWorkspace shared: rotation requested"), "{stdout}");
    assert!(stdout.contains("done (Complete)") && stdout.contains("(1/1)"), "{stdout}");
    let new_admin = env.tinybird.admin_token();
    assert_ne!(new_admin, old_admin);
    let system_secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), env.system.name());
    let secret = system_secrets.get("shared-admin").await.unwrap();
    assert_eq!(support::token_of(&secret).as_deref(), Some(new_admin.as_str()));
    let team_secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), team.name());
    let token = support::token_of(&team_secrets.get("reader").await.unwrap()).unwrap();
    assert_eq!(support::query_pipe(&env.tinybird.base_url(), "top_pages", &token, "").await.0, 200);
    operator.stop().await;
}

/// Secrets first: while Clerk is throttled, a revoke puts every token Secret on the new key
/// (the record says when) while Clerk templates still carry the old one, and the templates
/// catch up afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_puts_every_secret_on_the_new_key_before_the_clerk_templates() {
    let mut env = Env::new("revoke-secrets-first").await;
    env.connect_clerk().await;
    env.start_operator();
    const N: usize = 8;
    tenants(&env, N, true).await;
    wait_baseline(&env).await;
    env.clerk().set_request_budget(1, std::time::Duration::from_secs(1));

    annotate(&env, "secrets-first").await;
    let workspace = wait_for(
        workspaces(&env),
        "analytics",
        |ws: Option<&TinybirdWorkspace>| {
            record_of(ws, "secrets-first").is_some_and(|r| {
                r.secrets_on_new_key_after.is_some() && r.templates.is_some_and(|t| t.on_new_key < t.total)
            })
        },
        TIMEOUT,
    )
    .await
    .unwrap();
    let record = record_of(workspace.as_ref(), "secrets-first").unwrap();
    assert_eq!(record.tokens.map(|p| (p.on_new_key, p.total)), Some((8, 8)));
    assert_eq!(record.templates_on_new_key_after, None);
    let record = wait_rotation(&env, "secrets-first", "Complete").await;
    assert_eq!(record.templates.map(|p| (p.on_new_key, p.total)), Some((8, 8)));
    env.stop_operator().await;
}
