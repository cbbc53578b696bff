//! Faults during a rotation of the admin token (issue 19, point 3): the operator as a separate
//! process on a private API server, SIGKILLed or cut off from the API server at each step of
//! the sequence, before the refresh, between the refresh and the Secret write, and after it.
//! Each test shows that the admin token is refreshed at most once for one request, and that the
//! new token ends in the Secret whenever the process that holds it lives on (the API server
//! down, the leader lease lost); a process killed while it held the only copy is the one way to
//! lose it, and the workspace then says so, with the runbook, and recovers once it is followed.
//!
//! Each step is held open on purpose, so the fault lands inside it: the refresh hangs at
//! Tinybird (an emulator fault), or the admin-token Secret is immutable (the write is refused
//! until the test deletes it; the operator then creates it again).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fault_support;
mod support;

use std::time::Duration;

use fault_support::OperatorProcess;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use support::{Env, TIMEOUT, eventually, has_condition};
use tenant_access::api::{RotationRecord, TinybirdWorkspace};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::well_known::ANNOTATION_ROTATE;
use tenant_access_emulators::Fault;
use tenant_access_testkit::wait_for;

/// Tenants per test.
const TENANTS: usize = 5;
/// How long the API server stays down: longer than the leader lease (15 s) where the lease must
/// be lost, short elsewhere.
const OUTAGE: Duration = Duration::from_secs(5);
const LEASE_LOST_OUTAGE: Duration = Duration::from_secs(20);

/// A private cluster, `TENANTS` TenantAccesses Ready, and the operator process number 1.
async fn setup(prefix: &str, vars: &[(&str, &str)]) -> (Env, OperatorProcess) {
    let env = Env::new_private(prefix).await;
    let operator = OperatorProcess::start_with(&env, 1, false, vars).await;
    let mut all = String::new();
    for i in 0..TENANTS {
        all.push_str(&format!(
            "---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: t{i}}}\nspec:\n  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  secret: {{}}\n  healthCheck: {{interval: '0'}}\n"
        ));
    }
    env.apply_yaml(&all).await;
    for i in 0..TENANTS {
        env.wait_access(&format!("t{i}"), has_condition("Ready", "True", "Ready")).await;
    }
    wait_for(
        workspaces(&env),
        "analytics",
        |ws: Option<&TinybirdWorkspace>| ws.and_then(|w| w.status.as_ref()?.rotation.as_ref()).is_some(),
        TIMEOUT,
    )
    .await
    .unwrap();
    (env, operator)
}

fn workspaces(env: &Env) -> Api<TinybirdWorkspace> {
    Api::namespaced(env.client.clone(), env.name())
}

async fn annotate(env: &Env, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_ROTATE: value}}});
    workspaces(env).patch("analytics", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Waits until the record of `request` is in `phase`.
async fn wait_phase(env: &Env, request: &str, phase: &str) -> RotationRecord {
    let (wanted, phase) = (request.to_owned(), phase.to_owned());
    let workspace = wait_for(
        workspaces(env),
        "analytics",
        move |ws: Option<&TinybirdWorkspace>| record(ws, &wanted).is_some_and(|r| r.phase == phase),
        TIMEOUT,
    )
    .await
    .unwrap();
    record(workspace.as_ref(), request).unwrap()
}

fn record(workspace: Option<&TinybirdWorkspace>, request: &str) -> Option<RotationRecord> {
    workspace?.status.as_ref()?.rotation.as_ref()?.history.iter().find(|r| r.request == request).cloned()
}

/// The admin-token Secret made immutable: every write of the new token is refused until the
/// test deletes it.
async fn freeze_admin_secret(env: &Env) {
    let patch = serde_json::json!({"immutable": true});
    env.secrets().patch("tinybird-admin", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Waits until Tinybird has refreshed the admin token (away from `before`).
async fn wait_refreshed(env: &Env, before: &str) {
    eventually("Tinybird refreshed the admin token", || async { env.tinybird.admin_token() != before }).await;
}

/// With the admin-token Secret frozen, asks for rotation `r1` and waits until Tinybird has
/// refreshed: the new token is then held by the operator and refused by the Secret. Returns it.
async fn refresh_held_back(env: &Env) -> String {
    let old_admin = env.tinybird.admin_token();
    freeze_admin_secret(env).await;
    annotate(env, "r1").await;
    wait_refreshed(env, &old_admin).await;
    env.tinybird.admin_token()
}

/// Lets the held token in (the frozen Secret deleted: the operator creates it anew) and waits
/// until the Secret holds `token`.
async fn let_the_secret_write_land(env: &Env, token: &str) {
    env.secrets().delete("tinybird-admin", &DeleteParams::default()).await.unwrap();
    let token = token.to_owned();
    env.wait_secret("tinybird-admin", move |s: Option<&k8s_openapi::api::core::v1::Secret>| {
        s.and_then(support::token_of).is_some_and(|t| t == token)
    })
    .await;
}

/// Every tenant's token in its Secret works at Tinybird (signed with the current admin token).
async fn every_token_works(env: &Env) {
    let fingerprint = AdminToken::new(&env.tinybird.admin_token()).fingerprint();
    for i in 0..TENANTS {
        let name = format!("t{i}");
        let fingerprint = fingerprint.clone();
        wait_for(
            env.tenant_accesses(),
            &name,
            move |ta: Option<&tenant_access::api::TenantAccess>| {
                ta.and_then(|ta| ta.status.as_ref()?.token.as_ref())
                    .is_some_and(|t| t.signing_key_fingerprint == fingerprint)
            },
            TIMEOUT,
        )
        .await
        .unwrap();
        let token = env.token(&name).await;
        assert_eq!(env.query("top_pages", &token, "").await.0, 200, "{name}: its token is refused");
    }
}

/// The request is recorded and the refresh is on its way, hanging at Tinybird (never reaching
/// its handler), when the operator is killed: the new process never sends it again, finds that
/// Tinybird still accepts the Secret's token and says nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_refresh_nothing_changes_and_nothing_is_sent_again() {
    let (env, operator) = setup("rf-kill-before", &[]).await;
    let old_admin = env.tinybird.admin_token();
    env.tinybird
        .add_fault(Fault { path_prefix: Some("/v0/tokens/".into()), timeout: true, ..Fault::default() })
        .unwrap();
    annotate(&env, "r1").await;
    wait_phase(&env, "r1", "Refreshing").await;
    operator.kill().await;
    env.tinybird.clear_faults();

    let operator = OperatorProcess::start(&env, 2).await;
    let record = wait_phase(&env, "r1", "NotRefreshed").await;
    assert!(record.message.unwrap().contains("still accepts"));
    assert_eq!(env.tinybird.admin_token(), old_admin, "refreshed after all");
    every_token_works(&env).await;
    operator.stop().await;
}

/// The API server goes away while the refresh hangs at Tinybird (the operator gives up on it
/// after its timeout): once the API server is back, the operator judges the Secret's token
/// instead of refreshing again: nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_before_the_refresh_nothing_is_sent_again() {
    let (env, operator) = setup("rf-api-before", &[]).await;
    let old_admin = env.tinybird.admin_token();
    env.tinybird
        .add_fault(Fault { path_prefix: Some("/v0/tokens/".into()), timeout: true, ..Fault::default() })
        .unwrap();
    annotate(&env, "r1").await;
    wait_phase(&env, "r1", "Refreshing").await;
    env.cluster.stop_apiserver().await.unwrap();
    tokio::time::sleep(OUTAGE).await;
    env.tinybird.clear_faults();
    env.cluster.start_apiserver().await.unwrap();

    wait_phase(&env, "r1", "NotRefreshed").await;
    assert_eq!(env.tinybird.admin_token(), old_admin);
    every_token_works(&env).await;
    operator.stop().await;
}

/// Tinybird refreshed and the Secret write is refused when the operator is killed: the new
/// token existed only in the killed process. The next process never refreshes again (that needs
/// a valid admin token); it says the key was lost, with the runbook; once the runbook is
/// followed (a refresh by hand, the token put into the Secret) every tenant is re-signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_refresh_and_the_secret_write_the_loss_is_said_with_the_runbook() {
    let (env, operator) = setup("rf-kill-between", &[]).await;
    let lost_admin = refresh_held_back(&env).await;
    operator.kill().await;

    let operator = OperatorProcess::start(&env, 2).await;
    let record = wait_phase(&env, "r1", "KeyLost").await;
    assert_eq!(env.tinybird.admin_token(), lost_admin, "refreshed a second time");
    let message = record.message.unwrap();
    assert!(message.contains("tb token refresh") && message.contains("tinybird-admin"), "{message}");
    // The condition says so too (written just after the record).
    wait_for(
        workspaces(&env),
        "analytics",
        |ws: Option<&TinybirdWorkspace>| {
            ws.and_then(|w| w.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "KeyRotation"))
                .is_some_and(|c| {
                    c.status == "False" && c.reason == "KeyLost" && c.message.contains("tb token refresh")
                })
        },
        TIMEOUT,
    )
    .await
    .unwrap();

    // The runbook: refresh by hand, put the token into the Secret.
    let recovered_admin = env.tinybird.refresh_admin_token();
    env.secrets().delete("tinybird-admin", &DeleteParams::default()).await.unwrap();
    env.put_admin_token("tinybird-admin", &recovered_admin).await;
    wait_phase(&env, "r1", "Complete").await;
    every_token_works(&env).await;
    operator.stop().await;
}

/// Tinybird refreshed, the Secret write is refused, and then the API server goes away for
/// longer than the leader lease: the operator loses its lease, stops reconciling, and keeps the
/// new token and its write going until it lands (the Secret is writable once the API server is
/// back), and only then exits. The next leader completes the rotation from the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_between_the_refresh_and_the_secret_write_the_held_token_lands_despite_a_lost_lease()
{
    let leading = [("TENANT_ACCESS_LEADER_ELECTION", "true")];
    let (env, operator) = setup("rf-api-between", &leading).await;
    let new_admin = refresh_held_back(&env).await;
    env.cluster.stop_apiserver().await.unwrap();
    tokio::time::sleep(LEASE_LOST_OUTAGE).await;
    env.cluster.start_apiserver().await.unwrap();
    let_the_secret_write_land(&env, &new_admin).await;
    let status = operator.exited().await;
    assert!(!status.success(), "the lease was lost: the process exits with an error ({status})");

    let operator = OperatorProcess::start_with(&env, 2, false, &leading).await;
    wait_phase(&env, "r1", "Complete").await;
    assert_eq!(env.tinybird.admin_token(), env.token("tinybird-admin").await);
    every_token_works(&env).await;
    operator.stop().await;
}

/// Killed just after the new token reached the Secret (before or after the record says so):
/// the next process finds the new token in the Secret, Tinybird accepts it, and the rotation
/// completes without another refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_secret_write_the_rotation_completes_without_another_refresh() {
    let (env, operator) = setup("rf-kill-after", &[]).await;
    let new_admin = refresh_held_back(&env).await;
    let_the_secret_write_land(&env, &new_admin).await;
    operator.kill().await;

    let operator = OperatorProcess::start(&env, 2).await;
    wait_phase(&env, "r1", "Complete").await;
    assert_eq!(env.tinybird.admin_token(), new_admin, "refreshed a second time");
    every_token_works(&env).await;
    operator.stop().await;
}

/// The API server goes away just after the new token reached the Secret: once it is back the
/// rotation completes, without another refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_after_the_secret_write_the_rotation_completes_without_another_refresh() {
    let (env, operator) = setup("rf-api-after", &[]).await;
    let new_admin = refresh_held_back(&env).await;
    let_the_secret_write_land(&env, &new_admin).await;
    env.cluster.stop_apiserver().await.unwrap();
    tokio::time::sleep(OUTAGE).await;
    env.cluster.start_apiserver().await.unwrap();

    wait_phase(&env, "r1", "Complete").await;
    assert_eq!(env.tinybird.admin_token(), new_admin, "refreshed a second time");
    every_token_works(&env).await;
    operator.stop().await;
}
