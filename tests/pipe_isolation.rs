//! Whether the pipes a TenantAccess is granted filter by the params it pins (issue 26), judged
//! from the description the free existence check reads (`GET /v0/pipes/{pipe}`, admin token),
//! on a real API server, against the Tinybird emulator's pipes written as Tinybird users write
//! them: `org_events_strict` (`String(org, required=True)`), `org_events` (`{% if defined(org)
//! %}`), `org_event_totals` (`org` read in an upstream node) and `event_counts` (never reads it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Env, has_condition};
use tenant_access::api::TenantAccess;

/// One TenantAccess over the four pipes, each with `org: acme` pinned, checked every 5 s.
const ACCESS: &str = "apiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {name: dash}\nspec:\n  workspaceRef: {name: analytics}\n  scopes:\n    - {resource: org_events_strict, fixedParams: {org: acme}}\n    - {resource: org_events, fixedParams: {org: acme}}\n    - {resource: org_event_totals, fixedParams: {org: acme}}\n    - {resource: event_counts, fixedParams: {org: acme}}\n  secret: {}\n  healthCheck: {interval: 5s}\n";

/// Whether the TenantAccess reports `verdict` for `org` on `pipe`.
fn verdict_is(
    pipe: &'static str,
    verdict: &'static str,
) -> impl kube::runtime::wait::Condition<TenantAccess> {
    move |ta: Option<&TenantAccess>| {
        ta.and_then(|t| t.status.as_ref()).is_some_and(|s| {
            s.endpoints.iter().any(|e| {
                e.resource == pipe && e.isolation.iter().any(|i| i.param == "org" && i.verdict == verdict)
            })
        })
    }
}

#[tokio::test]
async fn each_granted_pipe_is_judged_from_its_sql_and_an_edit_that_drops_the_filter_is_caught() {
    let mut env = Env::new("isolation").await;
    env.start_operator();
    env.apply_yaml(ACCESS).await;

    for (pipe, verdict) in [
        ("org_events_strict", "Enforced"),
        ("org_events", "Optional"),
        ("org_event_totals", "Enforced"),
        ("event_counts", "Unused"),
    ] {
        env.wait_access("dash", verdict_is(pipe, verdict)).await;
    }
    env.wait_access("dash", has_condition("PipesIsolated", "False", "PipeNotIsolated")).await;
    let access = env.tenant_accesses().get("dash").await.unwrap();
    let isolated =
        access.status.unwrap().conditions.into_iter().find(|c| c.type_ == "PipesIsolated").unwrap();
    assert!(isolated.message.contains("event_counts (org)"), "{}", isolated.message);
    assert!(!isolated.message.contains("org_events_strict"), "{}", isolated.message);
    env.events_with(&["PipeNotIsolated", "pipe event_counts: param org is Unused"]).await;

    // The pipe is edited at Tinybird to drop its filter: the next existence check (free) reads
    // the new SQL, and no billed query is needed to see it.
    let billed = env.tinybird.billed_queries();
    let described = env.tinybird.pipe_metadata_calls();
    env.tinybird
        .set_node_sql(
            "org_events_strict",
            "org_events_strict_endpoint",
            "SELECT org, user, event, amount FROM tenant_events ORDER BY amount",
        )
        .unwrap();
    env.wait_access("dash", verdict_is("org_events_strict", "Unused")).await;
    env.events_with(&["pipe org_events_strict: param org is Unused (was Enforced)"]).await;
    assert!(env.tinybird.pipe_metadata_calls() > described, "seen through an existence check");
    let access = env.tenant_accesses().get("dash").await.unwrap();
    let isolated =
        access.status.unwrap().conditions.into_iter().find(|c| c.type_ == "PipesIsolated").unwrap();
    assert!(isolated.message.contains("org_events_strict (org)"), "{}", isolated.message);
    println!(
        "billed queries meanwhile: {} (health probes at their own pace); existence checks: {}",
        env.tinybird.billed_queries() - billed,
        env.tinybird.pipe_metadata_calls() - described
    );

    // Fixed again: back to Enforced, and the condition holds once every pipe filters.
    env.tinybird
        .set_node_sql(
            "org_events_strict",
            "org_events_strict_endpoint",
            "%\nSELECT org, user, event, amount FROM tenant_events WHERE org = {{String(org, required=True)}}",
        )
        .unwrap();
    env.wait_access("dash", verdict_is("org_events_strict", "Enforced")).await;
    env.events_with(&["pipe org_events_strict: param org is Enforced (was Unused)"]).await;
}
