//! Endpoint health checks run by the operator: each reason from the matching emulator
//! behaviour and recovery, status written only on flips, probes spread, renewals on time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::{Env, TIMEOUT, has_condition, is_ready, revision_at_least};
use tenant_access::api::TenantAccess;
use tenant_access_emulators::Fault;

const PROBED: &str = "  workspaceRef: {name: analytics}\n  scopes:\n    - resource: top_pages\n      fixedParams: {org: acme}\n  secret: {}\n  healthCheck: {interval: 5s, timeout: 1s}\n";

/// Condition: endpoint `resource` reports `reason` with `healthy`.
fn endpoint(
    resource: &'static str,
    reason: &'static str,
    healthy: bool,
) -> impl kube::runtime::wait::Condition<TenantAccess> {
    move |ta: Option<&TenantAccess>| {
        ta.and_then(|t| t.status.as_ref()).is_some_and(|s| {
            s.endpoints.iter().any(|e| e.resource == resource && e.reason == reason && e.healthy == healthy)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_gives_its_reason_and_health_recovers() {
    let mut env = Env::new("health").await;
    env.start_operator();
    env.tenant_access("probed", PROBED).await;
    env.wait_access("probed", has_condition("EndpointsHealthy", "True", "Healthy")).await;

    // Missing pipe.
    let pipe = env.tinybird.pipes().into_iter().find(|p| p.name == "top_pages").unwrap();
    env.tinybird.remove_pipe("top_pages");
    let access = env.wait_access("probed", endpoint("top_pages", "PipeNotFound", false)).await;
    let condition =
        access.status.unwrap().conditions.into_iter().find(|c| c.type_ == "EndpointsHealthy").unwrap();
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "PipeNotFound"));
    env.tinybird.upsert_pipe(pipe).unwrap();
    env.wait_access("probed", endpoint("top_pages", "Healthy", true)).await;

    // Server errors, then latency beyond the timeout.
    env.tinybird.add_fault(Fault::status(503).for_pipe("top_pages")).unwrap();
    env.wait_access("probed", endpoint("top_pages", "ServerError", false)).await;
    env.tinybird.clear_faults();
    env.wait_access("probed", endpoint("top_pages", "Healthy", true)).await;
    env.tinybird.add_fault(Fault::latency(Duration::from_secs(3)).for_pipe("top_pages")).unwrap();
    env.wait_access("probed", endpoint("top_pages", "Unreachable", false)).await;
    env.tinybird.clear_faults();
    env.wait_access("probed", endpoint("top_pages", "Healthy", true)).await;

    // The admin token refreshed at Tinybird but not in the cluster: the signature is rejected,
    // the operator re-checks the key at once (quietly: a rotation may be in progress), and once
    // Tinybird still refuses it with the Secret unchanged, the workspace is Unauthorized (a
    // warning event) and stops signing with the refused key. (The endpoint's verdict waits for
    // a confirming probe, which the refusal usually makes moot: the probes stop with it.)
    let new_admin = env.tinybird.refresh_admin_token();
    env.wait_access("probed", has_condition("Ready", "False", "WorkspaceNotReady")).await;
    env.events_with(&["\"reason\":\"Unauthorized\""]).await;
    // Fixed by putting the current admin token in the Secret: re-signed and healthy again.
    env.put_admin_token("tinybird-admin", &new_admin).await;
    env.wait_access("probed", is_ready()).await;
    env.wait_access("probed", endpoint("top_pages", "Healthy", true)).await;

    let events = env
        .events_with(&[
            "\"reason\":\"EndpointUnhealthy\"",
            "\"reason\":\"EndpointRecovered\"",
            "\"reason\":\"Unauthorized\"",
        ])
        .await;
    support::assert_no_secrets("events", &events, &[new_admin]);
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_probe_is_not_unhealthy() {
    let mut env = Env::new("health-429").await;
    env.start_operator();
    // rps 1 and the test itself spends the bucket right before each probe.
    env.tenant_access("limited", &PROBED.replace("  secret: {}", "  limits: {rps: 1}\n  secret: {}")).await;
    env.wait_access("limited", has_condition("EndpointsHealthy", "True", "Healthy")).await;
    let token = env.token("limited").await;
    let burner = tokio::spawn({
        let url = format!("{}/v0/pipes/top_pages.json", env.tinybird.base_url());
        async move {
            let client = reqwest::Client::new();
            loop {
                let _ = client.get(&url).bearer_auth(&token).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    env.wait_access("limited", endpoint("top_pages", "RateLimited", true)).await;
    burner.abort();
    let access = env.wait_access("limited", endpoint("top_pages", "Healthy", true)).await;
    assert!(
        access.status.unwrap().conditions.iter().all(|c| c.type_ != "EndpointsHealthy" || c.status == "True")
    );
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_only_access_is_probed_with_its_sample_params() {
    let mut env = Env::new("health-clerk").await;
    env.start_operator();
    env.tenant_access(
        "clerk-only",
        "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\n  clerkTemplate: {}\n  healthCheck: {interval: 5s, sampleParams: {org: acme}}\n",
    )
    .await;
    env.wait_access("clerk-only", endpoint("top_pages", "Healthy", true)).await;
    // A shortcode without a sample value is reported, not probed.
    env.tenant_access(
        "no-sample",
        "  workspaceRef: {name: analytics}\n  scopes: [{resource: top_pages, fixedParams: {org: '{{org.slug}}'}}]\n  clerkTemplate: {}\n  healthCheck: {interval: 5s}\n",
    )
    .await;
    env.wait_access("no-sample", endpoint("top_pages", "NoSampleParams", true)).await;
    env.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tenants_of_one_pipe_share_its_probe_cause_no_status_writes_and_renew_on_time() {
    const N: usize = 100;
    let mut env = Env::new("health-many").await;
    env.start_operator();
    let mut all = String::new();
    for i in 0..N {
        all.push_str(&format!(
            "---\napiVersion: tenantaccess.dev/v1alpha1\nkind: TenantAccess\nmetadata: {{name: t{i}}}\nspec:\n  workspaceRef: {{name: analytics}}\n  scopes: [{{resource: top_pages, fixedParams: {{org: acme}}}}]\n  secret: {{}}\n  healthCheck: {{interval: 10s}}\n"
        ));
    }
    // One of them renews during the observation.
    all = all.replace(
        "metadata: {name: t0}\nspec:\n",
        "metadata: {name: t0}\nspec:\n  lifetime: 1m\n  renewBefore: 30s\n",
    );
    env.apply_yaml(&all).await;
    for i in 0..N {
        env.wait_access(&format!("t{i}"), has_condition("EndpointsHealthy", "True", "Healthy")).await;
        env.wait_access(&format!("t{i}"), support::isolation_judged()).await;
    }
    let t0 = env.tenant_accesses().get("t0").await.unwrap();
    let renewal = t0.status.as_ref().unwrap().token.as_ref().unwrap().renewal_time.0;
    let expiry = t0.status.as_ref().unwrap().token.as_ref().unwrap().expires_at.0;

    // Observe every TenantAccess change for 35 s of steady probing (3 intervals), which
    // includes t0's renewal.
    let list = env.tenant_accesses().list(&Default::default()).await.unwrap();
    let from = list.metadata.resource_version.unwrap();
    // Each new token was verified once (their first probes), before the window.
    support::eventually_some("every new token verified", || async {
        let names: std::collections::BTreeSet<String> = env
            .tinybird
            .request_log()
            .records()
            .iter()
            .filter_map(|r| r.bearer_claims.as_ref()?["name"].as_str().map(str::to_owned))
            .collect();
        (names.len() >= N).then_some(())
    })
    .await;
    env.tinybird.request_log().clear();
    let mut stream = futures::StreamExt::boxed(
        env.tenant_accesses().watch(&kube::api::WatchParams::default().timeout(35), &from).await.unwrap(),
    );
    let mut writes = std::collections::BTreeMap::<String, usize>::new();
    while let Some(Ok(event)) = futures::StreamExt::next(&mut stream).await {
        if let kube::api::WatchEvent::Modified(ta) = event {
            *writes.entry(ta.metadata.name.unwrap()).or_default() += 1;
        }
    }
    // Only the renewal of t0 wrote status; health did not flip, so nothing else did.
    assert_eq!(writes.keys().collect::<Vec<_>>(), ["t0"], "status writes: {writes:?}");
    let t0 = env.wait_access("t0", revision_at_least(2)).await;
    let renewed = t0.status.unwrap().token.unwrap();
    assert!(renewed.issued_at.0 >= renewal && renewed.issued_at.0 < expiry, "renewed on time");

    // The pipe they all grant was probed once per interval for all of them (about 4 in 35 s),
    // plus the one verification of t0's renewed token: not 100 per interval.
    let records = env.tinybird.request_log().records();
    let probes: Vec<&tenant_access_emulators::RequestRecord> =
        records.iter().filter(|r| r.path == "/v0/pipes/top_pages.json").collect();
    println!("probes of the pipe shared by {N} TenantAccesses in 35 s: {}", probes.len());
    assert!((3..=8).contains(&probes.len()), "{} probes in 35 s", probes.len());
    let renewed_iat = renewed.issued_at.0.as_second();
    let verified = probes
        .iter()
        .filter(|r| {
            r.bearer_claims.as_ref().and_then(|c| c["iat"].as_i64()).is_some_and(|iat| iat >= renewed_iat)
        })
        .count();
    assert!(verified >= 1, "t0's renewed token was verified");
    let _ = TIMEOUT;
    env.stop_operator().await;
}
