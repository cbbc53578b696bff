//! Probes on a shared ClusterTinybirdWorkspace cannot be turned against another tenant by a team
//! that may only create TenantAccess in its own namespace (a real RBAC Role for the unprivileged
//! user): a probe token always carries the value the policy pins, and probe params cannot make
//! the probe a query of the team's choosing. The Tinybird emulator's request log shows what the
//! operator actually sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kube::Api;
use support::{ClusterWideEnv, TIMEOUT, recorded_fixed_params};
use tenant_access::api::TenantAccess;
use tenant_access_testkit::wait_for;

const POLICY: &str = "  policy:
    allowedNamespaces: {matchExpressions: [{key: tenant, operator: Exists}]}
    requiredParams:
      org: {namespaceLabel: tenant, clerkShortcode: '{{org.slug}}'}
";

/// A Clerk-only TenantAccess (probed with tokens the operator signs in memory) on the shared
/// workspace, with `health` as its healthCheck (flow YAML).
fn clerk_only(health: &str) -> String {
    format!(
        "  workspaceRef: {{kind: ClusterTinybirdWorkspace, name: shared}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: '{{{{org.slug}}}}'}}}}]\n  clerkTemplate: {{}}\n  healthCheck: {health}\n"
    )
}

/// Condition: Ready=False with `reason`, its message containing each of `fragments`.
fn refused(
    reason: &'static str,
    fragments: &'static [&'static str],
) -> impl kube::runtime::wait::Condition<TenantAccess> {
    move |ta: Option<&TenantAccess>| {
        support::condition(ta, "Ready").is_some_and(|c| {
            c.status == "False" && c.reason == reason && fragments.iter().all(|f| c.message.contains(f))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_team_cannot_point_probes_at_another_tenant() {
    let env = ClusterWideEnv::new().await;
    env.tenant_namespace("acme", serde_json::json!({"tenant": "acme"})).await;
    env.apply(&env.shared_workspace_yaml(POLICY), None).await;
    let operator = env.start_operator();
    let accesses: Api<TenantAccess> = Api::namespaced(env.client.clone(), "acme");

    // A sample standing in for the pinned org with another tenant's value: refused, naming the
    // field and the pinned value.
    env.tenant_applies("acme", "foreign-sample", &clerk_only("{interval: 5s, sampleParams: {org: globex}}"))
        .await;
    let fields: &[&str] = &["spec.healthCheck.sampleParams.org", "\"acme\""];
    wait_for(accesses.clone(), "foreign-sample", refused("PolicyViolation", fields), TIMEOUT).await.unwrap();

    // A probe param that would run SQL of the team's choosing over the pipe: refused.
    env.tenant_applies(
        "acme",
        "sql-param",
        &clerk_only("{interval: 5s, sampleParams: {org: acme}, params: {q: 'SELECT * FROM top_pages'}}"),
    )
    .await;
    let fields: &[&str] = &["spec.healthCheck.params.q", "reserved"];
    wait_for(accesses.clone(), "sql-param", refused("InvalidSpec", fields), TIMEOUT).await.unwrap();

    // The team's own value: probed, healthy.
    env.tenant_applies("acme", "own-sample", &clerk_only("{interval: 5s, sampleParams: {org: acme}}")).await;
    wait_for(
        accesses.clone(),
        "own-sample",
        |ta: Option<&TenantAccess>| {
            ta.and_then(|t| t.status.as_ref())
                .is_some_and(|s| s.endpoints.iter().any(|e| e.resource == "top_pages" && e.healthy))
        },
        TIMEOUT,
    )
    .await
    .unwrap();

    // Two probes of own-sample, an interval apart: any probe of the refused accesses (applied
    // before it, same interval) would have been sent by then.
    let probes = support::eventually_some("two probes of top_pages", || async {
        let probes: Vec<_> = env
            .tinybird
            .request_log()
            .records()
            .into_iter()
            .filter(|r| r.path == "/v0/pipes/top_pages.json")
            .collect();
        (probes.len() >= 2).then_some(probes)
    })
    .await;
    for probe in &probes {
        let fixed = recorded_fixed_params(probe);
        assert!(!fixed.is_empty(), "every probe carries a signed token: {probe:?}");
        assert!(
            fixed.iter().all(|params| params["org"] == "acme"),
            "a probe token for another org: {fixed:?}"
        );
        assert!(probe.query.iter().all(|(name, _)| name != "q"), "a probe sent q: {:?}", probe.query);
        assert_eq!(probe.status, 200);
    }
    let names: Vec<String> =
        probes.iter().filter_map(|p| p.bearer_claims.as_ref()?["name"].as_str().map(str::to_owned)).collect();
    assert!(names.iter().all(|name| name == "acme_own-sample"), "only own-sample was probed: {names:?}");
    operator.stop().await;
}
