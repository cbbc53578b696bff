//! Scenarios 1 and 2: N TenantAccess applied at once until all are Ready with a Secret, then an
//! admin-token rotation until all are re-signed; each against the floor client doing the same
//! per-tenant writes with the same concurrency and client-side QPS.

use std::collections::BTreeMap;
use std::time::Instant;

use kube::api::ListParams;
use kube::{Api, Client};
use serde::Serialize;
use tenant_access::adapters::kube_client::RateLimit;
use tenant_access::api::{ClusterTinybirdWorkspace, TenantAccess};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::signing_workspace::{SigningWorkspace, resolve};

use crate::apiserver::RequestCounts;
use crate::bench::{Applied, Bench, group_selector, median};
use crate::error::{BenchError, Result};
use crate::fixtures::BenchEnv;
use crate::floor::{FloorSettings, write_all};
use crate::machine::mib;
use crate::operator::ReconcileCounters;

/// One measured operator phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Convergence: all applied -> all Ready with a Secret. Rotation: admin Secret written ->
    /// every token re-signed.
    pub seconds: f64,
    /// Convergence only: first apply -> all Ready (the operator starts during creation).
    pub seconds_from_first_apply: Option<f64>,
    /// Convergence only: how long the harness took to apply the N TenantAccess.
    pub apply_seconds: Option<f64>,
    /// Operator CPU seconds used during the phase.
    pub operator_cpu_seconds: f64,
    /// Operator RSS at the end of the phase, MiB.
    pub operator_rss_mib: f64,
    /// Requests the operator made during the phase (by the API server's counters; the
    /// harness's own creation applies and watch lists are subtracted).
    pub api_requests: RequestCounts,
    /// The same per tenant.
    pub api_requests_per_tenant: BTreeMap<String, f64>,
    /// TenantAccess reconciles during the phase and the seconds they took (operator metrics).
    pub reconciles: Option<ReconcileCounters>,
}

/// One floor run.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRun {
    /// Secret apply + status apply for every tenant, first issuance.
    pub convergence_seconds: f64,
    /// The same with a new key (Secrets exist: updates).
    pub rotation_seconds: f64,
    /// The same again with no client-side limit: what the API server itself allows.
    pub unthrottled_rotation_seconds: f64,
    /// Requests of the first pass, by the API server's counters.
    pub api_requests: RequestCounts,
}

/// Scenarios 1 and 2.
#[derive(Debug, Clone, Serialize)]
pub struct ConvergenceResult {
    /// TenantAccess per run.
    pub tenants: usize,
    /// Floor runs.
    pub floor: Vec<FloorRun>,
    /// Operator convergence runs.
    pub convergence: Vec<Phase>,
    /// Operator rotation runs.
    pub rotation: Vec<Phase>,
    /// Median of `convergence[].seconds`.
    pub convergence_median_seconds: f64,
    /// Median of `convergence[].seconds_from_first_apply`.
    pub convergence_from_first_apply_median_seconds: f64,
    /// Median of `floor[].convergence_seconds`.
    pub floor_convergence_median_seconds: f64,
    /// Operator / floor (all applied -> all Ready).
    pub convergence_ratio: f64,
    /// Operator / floor (first apply -> all Ready).
    pub convergence_from_first_apply_ratio: f64,
    /// Median of `rotation[].seconds`.
    pub rotation_median_seconds: f64,
    /// Median of `floor[].rotation_seconds`.
    pub floor_rotation_median_seconds: f64,
    /// Operator / floor.
    pub rotation_ratio: f64,
    /// Median of `floor[].unthrottled_rotation_seconds`.
    pub unthrottled_rotation_median_seconds: f64,
    /// Operator / the unthrottled floor.
    pub rotation_unthrottled_ratio: f64,
}

/// Runs the floor, then the operator, `runs` times each.
///
/// # Errors
/// Any step failing or timing out.
pub async fn run(bench: &mut Bench) -> Result<ConvergenceResult> {
    let runs = bench.args.runs.max(1);
    let tenants = bench.args.tenants;
    let mut floor = Vec::with_capacity(runs);
    for run in 0..runs {
        floor.push(floor_run(bench, run).await?);
        tracing::info!(
            run,
            convergence_s = floor[run].convergence_seconds,
            rotation_s = floor[run].rotation_seconds,
            "floor run done"
        );
    }
    let mut convergence = Vec::with_capacity(runs);
    let mut rotation = Vec::with_capacity(runs);
    for run in 0..runs {
        let (converged, rotated) = operator_run(bench, run).await?;
        tracing::info!(
            run,
            convergence_s = converged.seconds,
            rotation_s = rotated.seconds,
            "operator run done"
        );
        convergence.push(converged);
        rotation.push(rotated);
    }
    let convergence_median_seconds = median(&convergence.iter().map(|p| p.seconds).collect::<Vec<_>>());
    let convergence_from_first_apply_median_seconds =
        median(&convergence.iter().filter_map(|p| p.seconds_from_first_apply).collect::<Vec<_>>());
    let floor_convergence_median_seconds =
        median(&floor.iter().map(|f| f.convergence_seconds).collect::<Vec<_>>());
    let rotation_median_seconds = median(&rotation.iter().map(|p| p.seconds).collect::<Vec<_>>());
    let floor_rotation_median_seconds = median(&floor.iter().map(|f| f.rotation_seconds).collect::<Vec<_>>());
    let unthrottled_rotation_median_seconds =
        median(&floor.iter().map(|f| f.unthrottled_rotation_seconds).collect::<Vec<_>>());
    Ok(ConvergenceResult {
        rotation_unthrottled_ratio: ratio(rotation_median_seconds, unthrottled_rotation_median_seconds),
        unthrottled_rotation_median_seconds,
        tenants,
        convergence_ratio: ratio(convergence_median_seconds, floor_convergence_median_seconds),
        convergence_from_first_apply_ratio: ratio(
            convergence_from_first_apply_median_seconds,
            floor_convergence_median_seconds,
        ),
        rotation_ratio: ratio(rotation_median_seconds, floor_rotation_median_seconds),
        floor,
        convergence,
        rotation,
        convergence_median_seconds,
        convergence_from_first_apply_median_seconds,
        floor_convergence_median_seconds,
        rotation_median_seconds,
        floor_rotation_median_seconds,
    })
}

fn since(now: Option<ReconcileCounters>, before: Option<ReconcileCounters>) -> Option<ReconcileCounters> {
    Some(now?.since(before?))
}

fn ratio(measured: f64, floor: f64) -> f64 {
    if floor > 0.0 { measured / floor } else { 0.0 }
}

/// The signer of the workspace's current admin token, as the operator resolves it.
pub(crate) async fn current_signer(bench: &Bench, token: &str) -> Result<SigningWorkspace> {
    let api: Api<ClusterTinybirdWorkspace> = Api::all(bench.env.client.clone());
    let workspace = api.get(&bench.env.workspace).await.map_err(BenchError::kube("reading the workspace"))?;
    resolve(&workspace.spec.workspace, AdminToken::new(token))
        .map_err(|e| BenchError::Fixture(format!("resolving the workspace: {e}")))
}

/// A client with this client-side limit (`qps` 0: none) and the operator's request timeout.
pub(crate) async fn client_limited_to(bench: &Bench, limit: RateLimit) -> Result<Client> {
    let path = bench.env.cluster.admin_kubeconfig();
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| BenchError::Fixture(format!("reading {}: {e}", path.display())))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| BenchError::Fixture(format!("reading {}: {e}", path.display())))?;
    tenant_access::adapters::kube_client::build(
        config,
        limit,
        tenant_access::adapters::kube_client::RequestBounds::default(),
    )
    .map_err(BenchError::kube("building the floor client"))
}

/// No client-side limit: what the API server itself allows.
pub(crate) const UNLIMITED: RateLimit = RateLimit { qps: 0.0, burst: 1 };

/// Page size of the harness's own lists of a group's TenantAccesses.
const LIST_PAGE: u32 = 1000;

/// Every TenantAccess of a group, listed in pages (a single list of 100,000 is half a GB of JSON).
async fn list_group(bench: &Bench, group: &str) -> Result<Vec<TenantAccess>> {
    let api: Api<TenantAccess> = Api::all(bench.env.client.clone());
    let mut params = ListParams::default().labels(&group_selector(group)).limit(LIST_PAGE);
    let mut all = Vec::new();
    loop {
        let page =
            api.list(&params).await.map_err(BenchError::kube(format!("listing TenantAccess of {group}")))?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(all),
        }
    }
}

/// One pass of the floor client over a group, ready to write: its TenantAccesses, the signer of
/// `key`, and a client under `limit`.
pub(crate) struct FloorPass {
    client: Client,
    accesses: Vec<TenantAccess>,
    signer: SigningWorkspace,
}

impl FloorPass {
    /// Lists the group and resolves the signer and the client.
    pub(crate) async fn prepare(bench: &Bench, group: &str, key: &str, limit: RateLimit) -> Result<Self> {
        let accesses = list_group(bench, group).await?;
        let signer = current_signer(bench, key).await?;
        let client = client_limited_to(bench, limit).await?;
        Ok(Self { client, accesses, signer })
    }

    /// Writes every tenant's Secret and status as token revision `revision`: the wall time.
    pub(crate) async fn write(self, revision: i64, bench: &Bench) -> Result<std::time::Duration> {
        let settings = FloorSettings { concurrency: usize::from(bench.args.concurrency) };
        write_all(&self.client, self.accesses, &self.signer, revision, settings).await
    }
}

/// The operator's client limit.
pub(crate) fn operator_limit(bench: &Bench) -> RateLimit {
    RateLimit { qps: bench.args.kube_qps, burst: bench.args.kube_burst }
}

pub(crate) async fn floor_run(bench: &mut Bench, run: usize) -> Result<FloorRun> {
    let group = format!("floor-{run}");
    let namespaces = bench.env.tenant_namespaces(&group, bench.args.tenant_namespaces).await?;
    let tenants = BenchEnv::tenants(&namespaces, bench.args.tenants);
    bench.env.apply_tenants(&tenants, &group, None, bench.args.apply_concurrency).await?;
    let token = bench.env.tinybird.admin_token();

    let pass = FloorPass::prepare(bench, &group, &token, operator_limit(bench)).await?;
    let before = RequestCounts::snapshot(&bench.env.client).await?;
    let convergence = pass.write(1, bench).await?;
    let api_requests = RequestCounts::snapshot(&bench.env.client).await?.since(&before);

    // Rotation: any other well-formed key of the same workspace (the floor never talks to
    // Tinybird, so the emulator's key stays as it is).
    let rotation = FloorPass::prepare(bench, &group, &format!("{token}r"), operator_limit(bench))
        .await?
        .write(2, bench)
        .await?;

    // And again with no client-side limit: the API server's own pace.
    let unthrottled =
        FloorPass::prepare(bench, &group, &format!("{token}u"), UNLIMITED).await?.write(3, bench).await?;

    bench.env.delete_group(&namespaces, &group).await?;
    Ok(FloorRun {
        convergence_seconds: convergence.as_secs_f64(),
        rotation_seconds: rotation.as_secs_f64(),
        unthrottled_rotation_seconds: unthrottled.as_secs_f64(),
        api_requests,
    })
}

async fn operator_run(bench: &mut Bench, run: usize) -> Result<(Phase, Phase)> {
    let tag = format!("convergence-{run}");
    let group = format!("conv-{run}");
    let n = bench.args.tenants;
    let namespaces = bench.env.tenant_namespaces(&group, bench.args.tenant_namespaces).await?;
    let tenants = BenchEnv::tenants(&namespaces, n);
    let mut operator = bench.start_operator(&tag).await?;

    // Convergence.
    let cpu_before = operator.sample()?.cpu_seconds;
    let reconciles_before = operator.reconcile_counters().await;
    let before = RequestCounts::snapshot(&bench.env.client).await?;
    let first_apply = Instant::now();
    let Applied { apply: apply_duration, all_applied, done } =
        bench.apply_until_ready(&tenants, &group).await?;
    let sample = operator.sample()?;
    let reconciles = since(operator.reconcile_counters().await, reconciles_before);
    let mut requests = RequestCounts::snapshot(&bench.env.client).await?.since(&before);
    requests.subtract("APPLY tenantaccesses", u64::try_from(n).unwrap_or(u64::MAX));
    requests.subtract("LIST tenantaccesses", 1);
    requests.subtract("LIST secrets", 1);
    let converged = Phase {
        seconds: done.saturating_duration_since(all_applied).as_secs_f64(),
        seconds_from_first_apply: Some(done.saturating_duration_since(first_apply).as_secs_f64()),
        apply_seconds: Some(apply_duration.as_secs_f64()),
        operator_cpu_seconds: sample.cpu_seconds - cpu_before,
        operator_rss_mib: mib(sample.rss_bytes),
        api_requests_per_tenant: requests.per_tenant(n),
        api_requests: requests,
        reconciles,
    };

    // Rotation: the admin token is refreshed at Tinybird and the new one written to the Secret.
    let cpu_before = operator.sample()?.cpu_seconds;
    let reconciles_before = operator.reconcile_counters().await;
    let before = RequestCounts::snapshot(&bench.env.client).await?;
    let new_token = bench.env.tinybird.refresh_admin_token();
    let fingerprint = AdminToken::new(&new_token).fingerprint();
    let started = Instant::now();
    let (resigned, written) =
        tokio::join!(bench.wait_ready(&group, n, Some(&fingerprint)), bench.env.put_admin_token(&new_token));
    written?;
    let done = resigned?;
    let sample = operator.sample()?;
    let reconciles = since(operator.reconcile_counters().await, reconciles_before);
    let mut requests = RequestCounts::snapshot(&bench.env.client).await?.since(&before);
    requests.subtract("APPLY secrets", 1);
    requests.subtract("LIST tenantaccesses", 1);
    let rotated = Phase {
        seconds: done.saturating_duration_since(started).as_secs_f64(),
        seconds_from_first_apply: None,
        apply_seconds: None,
        operator_cpu_seconds: sample.cpu_seconds - cpu_before,
        operator_rss_mib: mib(sample.rss_bytes),
        api_requests_per_tenant: requests.per_tenant(n),
        api_requests: requests,
        reconciles,
    };

    bench.save_operator_metrics(&operator, &tag).await;
    operator.stop().await?;
    bench.env.delete_group(&namespaces, &group).await?;
    bench.delete_canary(&tag).await?;
    Ok((converged, rotated))
}
