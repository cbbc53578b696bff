//! Scenario 3: N tenants with health checks on (every token probed at every interval, the
//! workspace's budget lifted: the most probing load), nothing changing. Every write the operator makes
//! is counted (watches on the TenantAccess resources and their Secrets, and the API server's
//! request counters, events included), with its CPU seconds per minute and RSS.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Serialize;
use tenant_access::api::TenantAccess;

use crate::apiserver::RequestCounts;
use crate::bench::{Bench, group_selector, median};
use crate::error::Result;
use crate::fixtures::BenchEnv;
use crate::machine::mib;
use crate::operator::ReconcileCounters;
use crate::progress::{ChangeCounter, has_health_report, wait_all};

/// Scenario 3.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Tenants.
    pub tenants: usize,
    /// Health-check interval of every tenant, seconds.
    pub health_interval_seconds: u64,
    /// Length of the measured window, seconds.
    pub window_seconds: f64,
    /// TenantAccess changes seen by a watch during the window.
    pub tenant_access_writes: u64,
    /// Token Secret changes seen by a watch during the window.
    pub secret_writes: u64,
    /// Requests the operator made during the window (API server counters; no harness requests
    /// but its watches).
    pub api_requests: RequestCounts,
    /// Mutating requests among them (events included).
    pub api_writes: u64,
    /// Operator CPU seconds per minute during the window.
    pub cpu_seconds_per_minute: f64,
    /// Operator RSS, MiB: median of the samples of the window.
    pub rss_mib_median: f64,
    /// Operator RSS, MiB: largest sample.
    pub rss_mib_max: f64,
    /// Health probes the Tinybird emulator answered per minute during the window.
    pub probes_per_minute: f64,
    /// Time until every tenant was Ready, seconds (from all applied).
    pub ready_seconds: f64,
    /// TenantAccess reconciles during the window (operator metrics).
    pub reconciles: Option<ReconcileCounters>,
}

/// Runs the idle scenario.
///
/// # Errors
/// Any step failing or timing out.
pub async fn run(bench: &mut Bench) -> Result<IdleResult> {
    let n = bench.args.tenants;
    let interval = bench.args.idle_health_interval_seconds.max(1);
    let group = "idle".to_owned();
    let namespaces = bench.env.tenant_namespaces(&group, bench.args.tenant_namespaces).await?;
    let tenants = BenchEnv::tenants(&namespaces, n);
    // Every token probed at every interval and no budget stretching them (the design before
    // the budget): the most probing load, one probe per tenant and interval.
    let unmetered = serde_json::json!({
        "maxQueriesPerDay": 100_000_000, "maxQueriesPerSecond": 1000, "tokenCheckInterval": format!("{interval}s"),
    });
    crate::probe_cost::set_budget(bench, Some(unmetered)).await?;
    let mut operator = bench.start_operator("idle").await?;

    let health = format!("{interval}s");
    let applied = Instant::now();
    bench.env.apply_tenants(&tenants, &group, Some(&health), bench.args.apply_concurrency).await?;
    let all_applied = Instant::now();
    let ready = bench.wait_ready(&group, n, None).await?;
    let ready_seconds = ready.saturating_duration_since(all_applied).as_secs_f64();
    tracing::info!(
        ready_seconds,
        apply_seconds = all_applied.duration_since(applied).as_secs_f64(),
        "idle: all Ready; waiting for every first health report"
    );
    // The first probe of each tenant falls somewhere in its first interval, and its first
    // report is written once: wait for all of them, then let things settle.
    let api: Api<TenantAccess> = Api::all(bench.env.client.clone());
    wait_all(api, &group_selector(&group), n, bench.timeout, "every first health report", has_health_report)
        .await?;
    bench.settle(bench.args.settle_seconds).await;

    let accesses = ChangeCounter::start(
        Api::<TenantAccess>::all(bench.env.client.clone()),
        &group_selector(&group),
        bench.timeout,
    )
    .await?;
    let secrets = ChangeCounter::start(
        Api::<Secret>::all(bench.env.client.clone()),
        &group_selector(&group),
        bench.timeout,
    )
    .await?;
    let before = RequestCounts::snapshot(&bench.env.client).await?;
    let probes_before = bench.env.tinybird.request_log().total();
    let reconciles_before = operator.reconcile_counters().await;
    let start = operator.sample()?;
    let started = Instant::now();
    tracing::info!(seconds = bench.args.idle_seconds, "idle: measuring");
    let mut rss = Vec::new();
    let window = Duration::from_secs(bench.args.idle_seconds.max(1));
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(5).min(window.saturating_sub(started.elapsed()))).await;
        rss.push(mib(operator.sample()?.rss_bytes));
    }
    let end = operator.sample()?;
    let elapsed = started.elapsed().as_secs_f64();
    let reconciles = match (operator.reconcile_counters().await, reconciles_before) {
        (Some(now), Some(before)) => Some(now.since(before)),
        _ => None,
    };
    let probes = bench.env.tinybird.request_log().total().saturating_sub(probes_before);
    let mut requests = RequestCounts::snapshot(&bench.env.client).await?.since(&before);
    requests.subtract("LIST tenantaccesses", 1);
    requests.subtract("LIST secrets", 1);
    let tenant_access_writes = accesses.finish();
    let secret_writes = secrets.finish();

    bench.save_operator_metrics(&operator, "idle").await;
    operator.stop().await?;
    crate::probe_cost::set_budget(bench, None).await?;
    bench.env.delete_group(&namespaces, &group).await?;
    bench.delete_canary("idle").await?;
    let minutes = elapsed / 60.0;
    #[allow(clippy::cast_precision_loss)]
    let probes_per_minute = probes as f64 / minutes;
    Ok(IdleResult {
        tenants: n,
        health_interval_seconds: interval,
        window_seconds: elapsed,
        tenant_access_writes,
        secret_writes,
        api_writes: requests.writes(),
        api_requests: requests,
        cpu_seconds_per_minute: (end.cpu_seconds - start.cpu_seconds) / minutes,
        rss_mib_median: median(&rss),
        rss_mib_max: rss.iter().copied().fold(0.0, f64::max),
        probes_per_minute,
        ready_seconds,
        reconciles,
    })
}
