//! What health checks cost at Tinybird, counted by the emulator: a pipe shared by many
//! TenantAccesses is probed once per interval for all of them, a workspace's probes stay within
//! its budget, a new token is verified once, a plan-level 429 holds probes back without
//! flipping anything, and at the default budget a removed pipe is still found within one
//! interval by the free existence checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;

use support::{Env, has_condition, is_ready};
use tenant_access::api::TenantAccess;
use tenant_access_emulators::Fault;

const PIPES: [&str; 5] = ["pipe_a", "pipe_b", "pipe_c", "pipe_d", "pipe_e"];

/// `count` TenantAccesses `t{i}`, each granting one of [`PIPES`] in turn, probed every
/// `interval`.
fn accesses(count: usize, interval: &str) -> String {
    (0..count)
        .map(|i| {
            format!(
                "---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: t{i}}}\nspec:\n  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: {}, fixedParams: {{org: acme}}}}]\n  secret: {{}}\n  healthCheck: {{interval: {interval}}}\n",
                PIPES[i % PIPES.len()]
            )
        })
        .collect()
}

/// The `analytics` workspace with `health_checks` as its budget.
async fn set_budget(env: &Env, health_checks: &str) {
    env.apply_yaml(&format!(
        "apiVersion: tenantaccess.dev/v1alpha1\nkind: TinybirdWorkspace\nmetadata: {{name: analytics}}\nspec:\n  adminTokenSecretRef: {{name: tinybird-admin, key: token}}\n  apiUrl: {}\n  healthChecks: {health_checks}\n",
        env.tinybird.base_url()
    ))
    .await;
}

/// Copies of the emulator's `top_pages` under the names of [`PIPES`].
fn add_pipes(env: &Env) {
    let top_pages = env.tinybird.pipes().into_iter().find(|p| p.name == "top_pages").unwrap();
    for name in PIPES {
        let mut pipe = top_pages.clone();
        pipe.name = name.to_owned();
        pipe.id = None;
        env.tinybird.upsert_pipe(pipe).unwrap();
    }
}

/// Whether TenantAccess `name`'s endpoint reports `reason`.
fn endpoint_is(reason: &'static str, healthy: bool) -> impl kube::runtime::wait::Condition<TenantAccess> {
    move |ta: Option<&TenantAccess>| {
        ta.and_then(|t| t.status.as_ref())
            .is_some_and(|s| s.endpoints.iter().any(|e| e.reason == reason && e.healthy == healthy))
    }
}

/// Pipe probes the emulator answered, by arrival (ms).
fn probe_times(env: &Env) -> Vec<u64> {
    env.tinybird
        .request_log()
        .records()
        .iter()
        .filter(|r| r.path.starts_with("/v0/pipes/") && r.path.ends_with(".json"))
        .map(|r| r.received_at_ms)
        .collect()
}

/// Watches TenantAccess changes for `seconds` (the observation window); writes per name.
async fn observe(env: &Env, seconds: u32) -> BTreeMap<String, usize> {
    let list = env.tenant_accesses().list(&Default::default()).await.unwrap();
    let from = list.metadata.resource_version.unwrap();
    let mut stream = futures::StreamExt::boxed(
        env.tenant_accesses()
            .watch(&kube::api::WatchParams::default().timeout(seconds), &from)
            .await
            .unwrap(),
    );
    let mut writes = BTreeMap::<String, usize>::new();
    while let Some(Ok(event)) = futures::StreamExt::next(&mut stream).await {
        if let kube::api::WatchEvent::Modified(ta) = event {
            *writes.entry(ta.metadata.name.unwrap()).or_default() += 1;
        }
    }
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_tenants_over_five_pipes_stay_within_a_small_budget_and_flip_together() {
    const N: usize = 300;
    let mut env = Env::new("probe-budget").await;
    add_pipes(&env);
    // 43,200 a day: one probe every 2 s at most. Five pipes at 5 s want 86,400 a day: stretched.
    set_budget(&env, "{maxQueriesPerDay: 43200, maxQueriesPerSecond: 1, tokenCheckInterval: '0'}").await;
    env.start_operator();
    env.apply_yaml(&accesses(N, "5s")).await;
    for i in 0..N {
        env.wait_access(&format!("t{i}"), has_condition("EndpointsHealthy", "True", "Healthy")).await;
        env.wait_access(&format!("t{i}"), support::isolation_judged()).await;
    }

    // A window of 30 s of steady probing: within the budget (one per 2 s), nothing written.
    env.tinybird.request_log().clear();
    let writes = observe(&env, 30).await;
    let probes = probe_times(&env);
    println!("probes in a 30 s window with {N} TenantAccesses over 5 pipes: {}", probes.len());
    assert!(probes.len() <= 16, "{} probes in 30 s over a budget of one per 2 s", probes.len());
    let closest = probes.windows(2).map(|pair| pair[1].saturating_sub(pair[0])).min().unwrap_or(u64::MAX);
    assert!(closest >= 1900, "two probes {closest} ms apart");
    assert!(writes.is_empty(), "health did not flip, yet status was written: {writes:?}");

    // The workspace says what its health checks want against the budget, and what was cut, as
    // soon as the TenantAccesses registered: nothing of the workspace changed meanwhile.
    let workspaces: kube::Api<tenant_access::api::TinybirdWorkspace> =
        kube::Api::namespaced(env.client.clone(), env.ns.name());
    let budget_status = |max: u32| {
        let workspaces = workspaces.clone();
        support::eventually_some("the workspace's health-check budget status", move || {
            let workspaces = workspaces.clone();
            async move {
                let workspace = workspaces.get("analytics").await.ok()?;
                workspace.status?.health_checks.filter(|checks| checks.max_queries_per_day == max)
            }
        })
    };
    let status = budget_status(43_200).await;
    assert_eq!((status.pipes, status.planned_queries_per_day), (5, 5 * 17_280), "{status:?}");
    let cut = status.cut.unwrap_or_default();
    assert!(cut.contains("86400 queries a day") && cut.contains("longer than asked"), "{cut}");
    // And follows a change of the budget.
    set_budget(&env, "{maxQueriesPerDay: 43201, maxQueriesPerSecond: 1, tokenCheckInterval: '0'}").await;
    assert_eq!(budget_status(43_201).await.planned_queries_per_day, 5 * 17_280);

    // One pipe removed: every TenantAccess granting it flips, the others do not.
    let removed = env.tinybird.pipes().into_iter().find(|p| p.name == "pipe_c").unwrap();
    env.tinybird.remove_pipe("pipe_c");
    for i in (2..N).step_by(PIPES.len()) {
        env.wait_access(&format!("t{i}"), endpoint_is("PipeNotFound", false)).await;
    }
    let others = env.tenant_accesses().list(&Default::default()).await.unwrap();
    let unhealthy: Vec<String> = others
        .items
        .iter()
        .filter(|ta| ta.status.as_ref().is_some_and(|s| s.endpoints.iter().any(|e| !e.healthy)))
        .map(|ta| ta.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(unhealthy.len(), N / PIPES.len(), "only the accesses granting pipe_c: {unhealthy:?}");
    // Back: they all flip back.
    env.tinybird.upsert_pipe(removed).unwrap();
    for i in (2..N).step_by(PIPES.len()) {
        env.wait_access(&format!("t{i}"), endpoint_is("Healthy", true)).await;
    }
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_is_verified_once_soon_after_it_is_written() {
    let mut env = Env::new("probe-verify").await;
    env.start_operator();
    // The pipe's own probes are an hour apart: only a token's verification comes within seconds.
    env.apply_yaml(
        &accesses(3, "1h")
            .replace("pipe_a", "top_pages")
            .replace("pipe_b", "top_pages")
            .replace("pipe_c", "top_pages"),
    )
    .await;
    for i in 0..3 {
        env.wait_access(&format!("t{i}"), has_condition("EndpointsHealthy", "True", "Healthy")).await;
        env.wait_access(&format!("t{i}"), support::isolation_judged()).await;
    }
    let by_token = |env: &Env| {
        let mut names = BTreeMap::<String, usize>::new();
        for record in env.tinybird.request_log().records() {
            if let Some(name) = record.bearer_claims.as_ref().and_then(|c| c["name"].as_str()) {
                *names.entry(name.to_owned()).or_default() += 1;
            }
        }
        names
    };
    let probes = support::eventually_some("each token verified", || async {
        let names = by_token(&env);
        (names.len() == 3).then_some(names)
    })
    .await;
    assert!(probes.values().all(|count| *count == 1), "each new token verified once: {probes:?}");
    // No token checked again within the hour (a window of 10 s). The pipe's own first probe
    // (one, with one member's token) falls anywhere in its first hour: it may be in the window.
    let writes = observe(&env, 10).await;
    let after = by_token(&env);
    let more: usize = after.iter().map(|(name, count)| count - probes.get(name).copied().unwrap_or(0)).sum();
    assert!(more <= 1, "no probe after the verifications but the pipe's own: {probes:?} then {after:?}");
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(writes.is_empty(), "{writes:?}");
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_level_429_holds_probes_back_and_flips_nothing() {
    let mut env = Env::new("probe-429").await;
    add_pipes(&env);
    env.start_operator();
    env.apply_yaml(&accesses(10, "5s")).await;
    for i in 0..10 {
        env.wait_access(&format!("t{i}"), has_condition("EndpointsHealthy", "True", "Healthy")).await;
        env.wait_access(&format!("t{i}"), support::isolation_judged()).await;
    }
    // Tinybird refuses everything with 429 (no token here has limits.rps: the plan's ceiling).
    env.tinybird.add_fault(Fault::status(429).for_path_prefix("/v0/pipes/")).unwrap();
    support::eventually_some("a refused probe", || async {
        env.tinybird.request_log().records().iter().any(|r| r.status == 429).then_some(())
    })
    .await;
    env.tinybird.request_log().clear();
    // 20 s: five pipes at 5 s would be 20 probes; held back (one at a time, growing backoff):
    // a handful.
    let writes = observe(&env, 20).await;
    let refused = probe_times(&env).len();
    println!("probes in 20 s while the plan's rate limit refuses: {refused}");
    assert!(refused <= 8, "{refused} probes in 20 s while Tinybird answers 429");
    assert!(writes.is_empty(), "a plan-level 429 flips nothing: {writes:?}");
    env.tinybird.clear_faults();
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_budget_a_removed_pipe_flips_every_access_granting_it_within_one_interval() {
    const N: usize = 20;
    let mut env = Env::new("probe-exists").await;
    add_pipes(&env);
    // The defaults: 200 billed queries a day (one per 432 s), one a second. The pipes' billed
    // probes and the new tokens' checks wait for that pace; the existence checks do not.
    set_budget(&env, "{}").await;
    env.tinybird.request_log().clear();
    let started = std::time::Instant::now();
    env.start_operator();
    env.apply_yaml(&accesses(N, "15s")).await;
    for i in 0..N {
        env.wait_access(&format!("t{i}"), is_ready()).await;
    }

    // Removed: every TenantAccess granting it reports it missing, as a billed probe's 404 would.
    env.tinybird.remove_pipe("pipe_c");
    for i in (2..N).step_by(PIPES.len()) {
        let access = env.wait_access(&format!("t{i}"), endpoint_is("PipeNotFound", false)).await;
        let status = access.status.unwrap();
        let condition = status.conditions.iter().find(|c| c.type_ == "EndpointsHealthy").unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "PipeNotFound"));
        let endpoint = &status.endpoints[0];
        assert_eq!((endpoint.resource.as_str(), endpoint.status_code), ("pipe_c", Some(404)));
        assert!(endpoint.message.as_deref().unwrap_or_default().contains("does not exist"), "{endpoint:?}");
    }
    env.events_with(&["\"reason\":\"EndpointUnhealthy\""]).await;
    let accesses = env.tenant_accesses().list(&Default::default()).await.unwrap();
    let missing: Vec<String> = accesses
        .items
        .iter()
        .filter(|ta| {
            ta.status.as_ref().is_some_and(|s| s.endpoints.iter().any(|e| e.reason == "PipeNotFound"))
        })
        .map(|ta| ta.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(missing.len(), N / PIPES.len(), "only the accesses granting pipe_c: {missing:?}");

    // The billed queries over the whole test kept the default budget's pace; the existence
    // checks were counted apart, as the operator's own request count says too.
    let billed = env.tinybird.billed_queries();
    let checks = env.tinybird.pipe_metadata_calls();
    let elapsed = started.elapsed().as_secs();
    println!("in {elapsed} s at the default budget: {billed} billed queries, {checks} existence checks");
    let found_missing = env.tinybird.request_log().records().iter().any(|r| {
        r.call == Some(tenant_access_emulators::tinybird::CALL_PIPE_METADATA)
            && r.path == "/v0/pipes/pipe_c"
            && r.status == 404
    });
    assert!(found_missing, "an existence check found pipe_c missing");
    assert!(billed <= 1 + elapsed / 432, "{billed} billed queries in {elapsed} s: more than one per 432 s");
    let counted = |outcome: &'static str| {
        tenant_access::adapters::request_counts::tinybird_family()
            .get_or_create(&tenant_access::adapters::request_counts::RequestLabels {
                call: "pipe_exists",
                outcome,
            })
            .get()
    };
    // (The operator counts an answer once it has it: the emulator may have answered one more.)
    assert!(counted("PipeNotFound") >= 1, "the existence checks that found pipe_c missing are counted");
    assert!(counted("ok") + counted("PipeNotFound") <= checks, "existence checks counted as such");
    env.stop_operator().await;
}
