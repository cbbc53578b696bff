//! An admin-token rotation while Clerk is throttled: every token Secret is re-signed within
//! seconds, whatever Clerk is doing. Clerk template syncs wait for Clerk's budget without holding
//! the reconcile workers that re-sign Secrets, and catch up once the budget allows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use kube::api::ListParams;
use support::{Env, TIMEOUT, eventually, is_ready};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::jwt::ParsedToken;

const ACCESSES: usize = 40;

/// Longest an admin-token rotation may leave a token Secret signed with the old key: the
/// bound of this issue ("a token Secret is re-signed within seconds of a rotation").
const RE_SIGN_BOUND: Duration = Duration::from_secs(15);

/// A TenantAccess with both outputs: a token Secret and a Clerk template.
fn both_outputs(i: usize) -> String {
    format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: t{i}}}\nspec:\n  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  secret: {{}}\n  clerkTemplate: {{name: t{i}}}\n  healthCheck: {{interval: '0'}}\n---\n"
    )
}

/// How many of the test's token Secrets hold a token signed with `key`.
async fn signed_with(env: &Env, key: &AdminToken) -> usize {
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=tenant-access-operator");
    let secrets = env.secrets().list(&managed).await.unwrap().items;
    secrets
        .iter()
        .filter_map(support::token_of)
        .filter(|token| ParsedToken::parse(token).is_ok_and(|t| t.signature_matches(key)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_re_signs_every_secret_within_seconds_while_clerk_is_throttled() {
    let mut env = Env::new("clerk-throttled").await;
    env.connect_clerk().await;
    env.start_operator();
    let all: String = (0..ACCESSES).map(both_outputs).collect();
    env.apply_yaml(&all).await;
    for i in 0..ACCESSES {
        env.wait_access(&format!("t{i}"), is_ready()).await;
        env.wait_access(&format!("t{i}"), support::clerk_synced()).await;
    }

    // Clerk's budget drops to one request per second: the rotation's 40 template PATCHes need
    // 40 s of it, and most of them are answered 429 on the way.
    env.clerk().set_request_budget(1, Duration::from_secs(1));
    let new_admin = env.tinybird.refresh_admin_token();
    let new_key = AdminToken::new(&new_admin);
    let rotated_at = Instant::now();
    env.put_admin_token("tinybird-admin", &new_admin).await;

    // Every token Secret re-signed with the new key (waited for generously)...
    let mut last_old_key_seen = rotated_at;
    let deadline = rotated_at + TIMEOUT;
    loop {
        let checked_at = Instant::now();
        if signed_with(&env, &new_key).await == ACCESSES {
            break;
        }
        last_old_key_seen = checked_at;
        assert!(Instant::now() < deadline, "token Secrets still signed with the old key after {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...within the bound, measured from the admin-token Secret's update to the last check that
    // still found a token signed with the old key.
    let old_key_for = last_old_key_seen - rotated_at;
    assert!(
        old_key_for <= RE_SIGN_BOUND,
        "a token Secret kept an old-key token for {old_key_for:?} after the rotation (bound {RE_SIGN_BOUND:?})"
    );

    // Meanwhile the templates wait for Clerk's budget: a wait, not a failure.
    eventually("a template sync waiting for Clerk's rate limit", || async {
        let accesses = env.tenant_accesses().list(&ListParams::default()).await.unwrap().items;
        accesses.iter().any(|ta| {
            support::condition(Some(ta), "ClerkTemplateSynced").is_some_and(|c| {
                c.reason == "RateLimited" && c.message.contains("waiting for Clerk's rate limit")
            })
        })
    })
    .await;

    // Nothing is lost: every template catches up with the new key once the budget allows.
    let fingerprint = new_key.fingerprint();
    env.wait_clerk_keys(ACCESSES, &fingerprint).await;
    for template in env.clerk().templates() {
        assert_eq!(env.clerk().signing_key(&template.id).as_deref(), Some(new_admin.as_str()));
    }
    assert!(env.clerk().request_log().count_status(429) > 0, "Clerk was throttled");
    // Waiting for Clerk never made a TenantAccess not Ready.
    let events = env.events_text().await;
    assert!(!events.contains("\"reason\":\"RateLimited\""), "a RateLimited warning: {events}");
    for i in 0..ACCESSES {
        env.wait_access(&format!("t{i}"), is_ready()).await;
    }
    env.stop_operator().await;
}
