//! Scenario "probe cost": what the endpoint health checks cost the customer's Tinybird plan.
//!
//! For each tenant count, N TenantAccesses with 2 `PIPES:READ` scopes each out of 10 pipe names,
//! default settings (health checks every 5 minutes, the workspace's default budget). Over a
//! measured window the Tinybird emulator counts every request the operator sends, by call:
//! billed queries (pipe endpoints `GET /v0/pipes/{pipe}.json`, the Query API), pipe
//! descriptions (`GET /v0/pipes/{pipe}`: the existence checks, not billed) and admin-token
//! checks; the window's counts are extrapolated to a day. Then
//! "before": the same tenants with the design that preceded the budget (every token probed at
//! every interval: `tokenCheckInterval` equal to the interval and no budget), in the same run.
//! Last, pipe-level detection: one pipe is removed at the emulator and the time until every
//! TenantAccess granting it reports `EndpointsHealthy=False` is measured (bounded), then it is
//! restored and the recovery timed the same way.

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::json;
use tenant_access::api::{ClusterTinybirdWorkspace, TenantAccess};
use tenant_access_emulators::tinybird::{CALL_WORKSPACE, Column, PipeDefinition};

use crate::bench::{Bench, group_selector};
use crate::error::{BenchError, Result};
use crate::fixtures::{BenchEnv, GROUP_LABEL, TenantRef};
use crate::progress::wait_all;

/// Distinct pipe names the tenants' scopes are spread over.
pub const PIPES: usize = 10;
/// The health-check interval at defaults, seconds (`healthCheck.interval` unset).
pub const DEFAULT_INTERVAL_SECONDS: u64 = 300;
/// Target: Tinybird queries a day at defaults for 1,000 tenants.
pub const TARGET_QUERIES_PER_DAY_AT_1000: f64 = 5_000.0;
const DAY_SECONDS: f64 = 86_400.0;

/// One measured window.
#[derive(Debug, Clone, Serialize)]
pub struct CostWindow {
    /// Length, seconds.
    pub window_seconds: f64,
    /// Billed pipe queries in the window.
    pub pipe_queries: u64,
    /// Pipe descriptions (existence checks) in the window.
    pub pipe_descriptions: u64,
    /// Admin-token checks in the window.
    pub admin_token_checks: u64,
    /// Billed pipe queries a day, extrapolated from the window.
    pub pipe_queries_per_day: f64,
    /// Pipe descriptions a day, extrapolated from the window.
    pub pipe_descriptions_per_day: f64,
    /// Every Tinybird request a day, extrapolated from the window.
    pub requests_per_day: f64,
    /// The workspace's `status.healthChecks` at the end of the window, as JSON (planned
    /// queries a day against the budget, and what was cut).
    pub workspace_health_checks: Option<serde_json::Value>,
}

/// The result for one tenant count.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeCostRun {
    /// TenantAccesses (2 pipes each out of [`PIPES`]).
    pub tenants: usize,
    /// Default settings.
    pub defaults: CostWindow,
    /// The design before the budget (every token at every interval), same tenants.
    pub before: Option<CostWindow>,
    /// Seconds from a pipe's removal at Tinybird to every TenantAccess granting it reporting
    /// `EndpointsHealthy=False`, at defaults; `None` when not within `detection_bound_seconds`.
    pub removal_detected_seconds: Option<f64>,
    /// Seconds from the pipe's return to every one of them reporting healthy again; `None` when
    /// not within the bound (or not measured).
    pub recovery_detected_seconds: Option<f64>,
    /// The bound of each detection wait, seconds.
    pub detection_bound_seconds: u64,
    /// TenantAccesses granting the removed pipe.
    pub granting_removed_pipe: usize,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeCostResult {
    /// One entry per tenant count.
    pub runs: Vec<ProbeCostRun>,
}

/// The two pipes of tenant `i`: `i` and `i + 3` modulo [`PIPES`] (every pipe shared by a fifth
/// of the tenants).
#[must_use]
pub fn pipes_of(index: usize) -> [usize; 2] {
    [index % PIPES, (index + 3) % PIPES]
}

fn pipe_name(index: usize) -> String {
    format!("cost_pipe_{index}")
}

fn pipe(index: usize) -> PipeDefinition {
    PipeDefinition::new(pipe_name(index), vec![Column::new("org", "String"), Column::new("hits", "UInt64")])
        .with_row(json!({"org": "t-00000", "hits": 1}))
}

fn tenant_manifest(env: &BenchEnv, tenant: &TenantRef, index: usize, group: &str) -> serde_json::Value {
    let scopes: Vec<_> = pipes_of(index)
        .iter()
        .map(|pipe| json!({"resource": pipe_name(*pipe), "fixedParams": {"org": tenant.name}}))
        .collect();
    json!({
        "apiVersion": "tenantaccess.dev/v1alpha1",
        "kind": "TenantAccess",
        "metadata": {"name": tenant.name, "namespace": tenant.namespace, "labels": {GROUP_LABEL: group}},
        "spec": {
            "workspaceRef": {"kind": "ClusterTinybirdWorkspace", "name": env.workspace},
            "scopes": scopes,
            "secret": {"labels": {GROUP_LABEL: group}},
        },
    })
}

/// Runs the scenario for every tenant count.
///
/// # Errors
/// Any step failing or timing out.
pub async fn run(bench: &mut Bench) -> Result<ProbeCostResult> {
    for index in 0..PIPES {
        bench.env.tinybird.upsert_pipe(pipe(index)).map_err(|e| BenchError::Emulator(e.to_string()))?;
    }
    let mut runs = Vec::new();
    for tenants in bench.args.probe_cost_tenants.clone() {
        tracing::info!(tenants, "probe cost");
        runs.push(run_one(bench, tenants).await?);
    }
    set_budget(bench, None).await?;
    Ok(ProbeCostResult { runs })
}

async fn run_one(bench: &mut Bench, n: usize) -> Result<ProbeCostRun> {
    let group = format!("cost-{n}");
    set_budget(bench, None).await?;
    let namespaces = bench.env.tenant_namespaces(&group, bench.args.tenant_namespaces).await?;
    let tenants = BenchEnv::tenants(&namespaces, n);
    let mut operator = bench.start_operator(&group).await?;
    let objects = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.namespace.clone(), t.name.clone(), tenant_manifest(&bench.env, t, i, &group)))
        .collect();
    crate::fixtures::apply_many::<TenantAccess>(&bench.env.client, objects, bench.args.apply_concurrency)
        .await?;
    bench.wait_ready(&group, n, None).await?;
    tracing::info!(tenants = n, "probe cost: all Ready; measuring at defaults");
    let window = Duration::from_secs(bench.args.probe_cost_seconds.max(1));
    let defaults = measure(bench, window).await?;

    let bound = Duration::from_secs(bench.args.probe_cost_detection_bound_seconds.max(1));
    let granting = tenants.iter().enumerate().filter(|(i, _)| pipes_of(*i).contains(&0)).count();
    let removed = pipe_name(0);
    let selector = group_selector(&group);
    let api: Api<TenantAccess> = Api::all(bench.env.client.clone());
    bench.env.tinybird.remove_pipe(&removed);
    let removed_at = Instant::now();
    let removal_detected_seconds = wait_all(api.clone(), &selector, granting, bound, "removal", |ta| {
        endpoint_state(ta, &removed) == Some(false)
    })
    .await
    .ok()
    .map(|at| at.duration_since(removed_at).as_secs_f64());
    bench.env.tinybird.upsert_pipe(pipe(0)).map_err(|e| BenchError::Emulator(e.to_string()))?;
    let restored_at = Instant::now();
    let recovery_detected_seconds = match removal_detected_seconds {
        Some(_) => wait_all(api, &selector, granting, bound, "recovery", |ta| {
            endpoint_state(ta, &removed) == Some(true)
        })
        .await
        .ok()
        .map(|at| at.duration_since(restored_at).as_secs_f64()),
        None => None,
    };

    tracing::info!(tenants = n, "probe cost: measuring the design before the budget");
    let before_budget =
        json!({"maxQueriesPerDay": 100_000_000, "maxQueriesPerSecond": 1000, "tokenCheckInterval": "5m"});
    set_budget(bench, Some(before_budget)).await?;
    let before = Some(measure(bench, window).await?);
    set_budget(bench, None).await?;

    bench.save_operator_metrics(&operator, &group).await;
    operator.sample()?;
    operator.stop().await?;
    bench.env.delete_group(&namespaces, &group).await?;
    bench.delete_canary(&group).await?;
    Ok(ProbeCostRun {
        tenants: n,
        defaults,
        before,
        removal_detected_seconds,
        recovery_detected_seconds,
        detection_bound_seconds: bound.as_secs(),
        granting_removed_pipe: granting,
    })
}

/// Whether the TenantAccess reports the endpoint `pipe` healthy (`None`: not reported).
fn endpoint_state(access: &TenantAccess, pipe: &str) -> Option<bool> {
    let status = access.status.as_ref()?;
    status.endpoints.iter().find(|e| e.resource == pipe).map(|e| e.healthy)
}

/// Counts the emulator's requests by route over `window`.
async fn measure(bench: &Bench, window: Duration) -> Result<CostWindow> {
    let tinybird = &bench.env.tinybird;
    let counts = || {
        let log = tinybird.request_log();
        (
            tinybird.billed_queries(),
            tinybird.pipe_metadata_calls(),
            log.count_call(CALL_WORKSPACE),
            log.total(),
        )
    };
    let before = counts();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = counts();
    let pipe_queries = after.0.saturating_sub(before.0);
    let pipe_descriptions = after.1.saturating_sub(before.1);
    let admin_token_checks = after.2.saturating_sub(before.2);
    let total = after.3.saturating_sub(before.3);
    let per_day = |count: u64| {
        #[allow(clippy::cast_precision_loss)]
        let count = count as f64;
        count * DAY_SECONDS / elapsed
    };
    let workspaces: Api<ClusterTinybirdWorkspace> = Api::all(bench.env.client.clone());
    let workspace_health_checks = workspaces
        .get(&bench.env.workspace)
        .await
        .ok()
        .and_then(|ws| ws.status)
        .and_then(|status| status.health_checks)
        .and_then(|checks| serde_json::to_value(checks).ok());
    Ok(CostWindow {
        window_seconds: elapsed,
        pipe_queries,
        pipe_descriptions,
        admin_token_checks,
        pipe_queries_per_day: per_day(pipe_queries),
        pipe_descriptions_per_day: per_day(pipe_descriptions),
        requests_per_day: per_day(total),
        workspace_health_checks,
    })
}

/// Sets (or, with `None`, removes: the defaults) the workspace's `spec.healthChecks`.
pub async fn set_budget(bench: &Bench, budget: Option<serde_json::Value>) -> Result<()> {
    let api: Api<ClusterTinybirdWorkspace> = Api::all(bench.env.client.clone());
    let patch = json!({"spec": {"healthChecks": budget}});
    api.patch(&bench.env.workspace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(BenchError::kube("setting the workspace's health-check budget"))?;
    Ok(())
}
