//! Issue 27's `scale` scenario: N TenantAccesses (10,000 and 100,000 by default) over many
//! namespaces. For each N, one operator process: time to all Ready, RSS settled, cost per tenant
//! in bytes and requests; a restart with everything in place (writes seen by watches and by the
//! API server's counters, time to serving); an admin-token rotation, with another client's API
//! latency measured before and during it; then, with the operator stopped, the same rotation
//! writes by the floor client twice: under the operator's client limit, and with no client-side
//! limit (what the API server itself allows).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;
use tenant_access::api::{ClusterTinybirdWorkspace, TenantAccess};
use tenant_access::core::admin_token::AdminToken;

use crate::apiserver::RequestCounts;
use crate::bench::{Applied, Bench, group_selector, median};
use crate::convergence::{FloorPass, UNLIMITED, client_limited_to, operator_limit};
use crate::error::Result;
use crate::fixtures::{BENCH_MANAGER, BenchEnv};
use crate::machine::mib;
use crate::operator::OperatorProcess;

/// The other client's request spacing (one read and one write each time).
const OTHER_CLIENT_EVERY: Duration = Duration::from_millis(100);
/// The other client's quiet baseline before a rotation.
const BASELINE: Duration = Duration::from_secs(10);

/// One tenant count.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRun {
    /// TenantAccess resources.
    pub tenants: usize,
    /// Namespaces they are spread over.
    pub namespaces: usize,
    /// Time the harness took to apply them (64 concurrent applies, no client limit), seconds.
    pub apply_seconds: f64,
    /// All applied -> all Ready with a Secret, seconds.
    pub ready_seconds: f64,
    /// First apply -> all Ready with a Secret, seconds.
    pub ready_from_first_apply_seconds: f64,
    /// RSS of the operator serving only the canary, MiB.
    pub rss_mib_empty: f64,
    /// RSS with every TenantAccess Ready and settled (median of samples), MiB.
    pub rss_mib_settled: f64,
    /// Peak RSS (VmHWM) of the first process, MiB.
    pub peak_rss_mib: f64,
    /// `(rss_mib_settled - rss_mib_empty) / tenants`, bytes.
    pub bytes_per_tenant: f64,
    /// etcd's database size (the API server's `etcd_db_total_size_in_bytes`) growth over the
    /// creation and the first issuance, per tenant, bytes: history included until compaction, so an
    /// upper bound of what a tenant's objects weigh in etcd.
    pub etcd_bytes_per_tenant: Option<f64>,
    /// Operator CPU seconds from the first apply to all Ready.
    pub convergence_cpu_seconds: f64,
    /// The operator's requests during convergence (the harness's applies subtracted).
    pub convergence_requests: RequestCounts,
    /// Convergence requests per tenant.
    pub convergence_requests_per_tenant: std::collections::BTreeMap<String, f64>,
    /// The restart.
    pub restart: RestartResult,
    /// The rotation.
    pub rotation: RotationResult,
    /// The floor client's rotation under the operator's client limit, seconds.
    pub floor_limited_seconds: f64,
    /// The floor client's rotation with no client-side limit, seconds.
    pub floor_unthrottled_seconds: f64,
    /// The other client's latency while the unthrottled floor wrote.
    pub floor_unthrottled_other_client: LatencyWindow,
    /// `rotation.seconds / floor_unthrottled_seconds`.
    pub ratio_to_unthrottled: f64,
    /// `rotation.seconds / floor_limited_seconds`.
    pub ratio_to_limited: f64,
}

/// A restart with everything in place.
#[derive(Debug, Clone, Serialize)]
pub struct RestartResult {
    /// Process start -> /readyz (every cache listed and synced), seconds.
    pub seconds_to_ready: f64,
    /// Process start -> its start-up pass done (under a quarter of a core over 2 s), seconds.
    pub seconds_to_quiet: f64,
    /// Changes of the tenants' TenantAccesses, seen by a watch from before the stop to after the
    /// settling time.
    pub tenant_access_changes: u64,
    /// Changes of their token Secrets, the same way.
    pub secret_changes: u64,
    /// Changes of the ClusterTinybirdWorkspaces, the same way.
    pub workspace_changes: u64,
    /// Mutating requests by the API server's counters over the same window (events included).
    pub mutating_requests: u64,
    /// Every request of the window by the API server's counters.
    pub requests: RequestCounts,
    /// RSS after the start-up pass and the settling time, MiB.
    pub rss_mib: f64,
    /// Peak RSS of the restarted process, MiB.
    pub peak_rss_mib: f64,
}

/// An admin-token rotation.
#[derive(Debug, Clone, Serialize)]
pub struct RotationResult {
    /// Admin token refreshed -> every TenantAccess on the new key, seconds.
    pub seconds: f64,
    /// Operator CPU seconds meanwhile.
    pub cpu_seconds: f64,
    /// Peak RSS after it, MiB.
    pub peak_rss_mib: f64,
    /// The operator's requests during it.
    pub requests: RequestCounts,
    /// Per tenant.
    pub requests_per_tenant: std::collections::BTreeMap<String, f64>,
    /// Requests answered 429 (API Priority and Fairness, or max-inflight) during it.
    pub throttled_responses: u64,
    /// Another client's latency before the rotation.
    pub other_client_baseline: LatencyWindow,
    /// Another client's latency during it.
    pub other_client_during: LatencyWindow,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    /// One per tenant count.
    pub runs: Vec<ScaleRun>,
}

/// Runs the scenario for every `--scale-tenants` count.
///
/// # Errors
/// Any step failing or timing out.
pub async fn run(bench: &mut Bench) -> Result<ScaleResult> {
    let namespaces = bench.env.tenant_namespaces("scale", bench.args.scale_namespaces).await?;
    let mut runs = Vec::new();
    for &tenants in &bench.args.scale_tenants.clone() {
        // The waits grow with the count: 100,000 tenants at 200 writes/s need 1,000 s.
        let timeout = bench.timeout;
        bench.timeout = timeout.max(Duration::from_millis(u64::try_from(tenants).unwrap_or(u64::MAX) * 25));
        let result = run_one(bench, &namespaces, tenants).await;
        bench.timeout = timeout;
        let run = result?;
        tracing::info!(tenants, ?run, "scale: done");
        runs.push(run);
    }
    Ok(ScaleResult { runs })
}

async fn run_one(bench: &mut Bench, namespaces: &[String], n: usize) -> Result<ScaleRun> {
    let group = format!("scale-{n}");
    let tag = format!("scale-{n}");
    let tenants = BenchEnv::tenants(namespaces, n);
    let mut operator = bench.start_operator(&tag).await?;
    bench.settle(bench.args.settle_seconds.min(10)).await;
    let rss_mib_empty = crate::memory::rss_median(&mut operator).await?;

    // Convergence.
    let cpu_before = operator.sample()?.cpu_seconds;
    let before = RequestCounts::snapshot(&bench.env.client).await?;
    let etcd_before = etcd_db_bytes(&bench.env.client).await?;
    let first_apply = Instant::now();
    let Applied { apply, all_applied, done } = bench.apply_until_ready(&tenants, &group).await?;
    let apply_seconds = apply.as_secs_f64();
    let convergence_cpu_seconds = operator.sample()?.cpu_seconds - cpu_before;
    #[allow(clippy::cast_precision_loss)]
    let etcd_bytes_per_tenant = match (etcd_before, etcd_db_bytes(&bench.env.client).await?) {
        (Some(before), Some(after)) => Some((after - before) / n.max(1) as f64),
        _ => None,
    };
    let mut convergence_requests = RequestCounts::snapshot(&bench.env.client).await?.since(&before);
    convergence_requests.subtract("APPLY tenantaccesses", u64::try_from(n).unwrap_or(u64::MAX));
    convergence_requests.subtract("LIST tenantaccesses", 1);
    convergence_requests.subtract("LIST secrets", 1);
    tracing::info!(
        tenants = n,
        seconds = done.saturating_duration_since(all_applied).as_secs_f64(),
        "scale: all Ready"
    );
    bench.settle(bench.args.settle_seconds).await;
    let rss_mib_settled = crate::memory::rss_median(&mut operator).await?;
    let peak_rss_mib = mib(operator.sample()?.peak_rss_bytes);
    bench.save_operator_metrics(&operator, &tag).await;

    let (restart, mut operator) = restart(bench, operator, &group, &format!("{tag}-restart")).await?;
    let rotation = rotation(bench, &mut operator, &group, n).await?;
    bench.save_operator_metrics(&operator, &format!("{tag}-rotation")).await;
    operator.stop().await?;

    let (floor_limited_seconds, floor_unthrottled_seconds, floor_unthrottled_other_client) =
        floors(bench, &group).await?;
    bench.env.delete_group(namespaces, &group).await?;
    bench.delete_canary(&tag).await?;

    #[allow(clippy::cast_precision_loss)]
    let bytes_per_tenant = (rss_mib_settled - rss_mib_empty) * 1024.0 * 1024.0 / n.max(1) as f64;
    let ratio = |measured: f64, floor: f64| if floor > 0.0 { measured / floor } else { 0.0 };
    Ok(ScaleRun {
        tenants: n,
        namespaces: namespaces.len(),
        apply_seconds,
        ready_seconds: done.saturating_duration_since(all_applied).as_secs_f64(),
        ready_from_first_apply_seconds: done.saturating_duration_since(first_apply).as_secs_f64(),
        rss_mib_empty,
        rss_mib_settled,
        peak_rss_mib,
        bytes_per_tenant,
        convergence_cpu_seconds,
        etcd_bytes_per_tenant,
        convergence_requests_per_tenant: convergence_requests.per_tenant(n),
        convergence_requests,
        ratio_to_unthrottled: ratio(rotation.seconds, floor_unthrottled_seconds),
        ratio_to_limited: ratio(rotation.seconds, floor_limited_seconds),
        restart,
        rotation,
        floor_limited_seconds,
        floor_unthrottled_seconds,
        floor_unthrottled_other_client,
    })
}

/// Stops `operator` and starts another with everything in place, without a canary (so it has
/// nothing to write): what changed across it, and how long it took to serve.
async fn restart(
    bench: &Bench,
    operator: OperatorProcess,
    group: &str,
    tag: &str,
) -> Result<(RestartResult, OperatorProcess)> {
    let client = &bench.env.client;
    let selector = group_selector(group);
    let accesses = crate::progress::ChangeCounter::start(
        Api::<TenantAccess>::all(client.clone()),
        &selector,
        bench.timeout,
    )
    .await?;
    let secrets =
        crate::progress::ChangeCounter::start(Api::<Secret>::all(client.clone()), &selector, bench.timeout)
            .await?;
    let workspaces = crate::progress::ChangeCounter::start(
        Api::<ClusterTinybirdWorkspace>::all(client.clone()),
        "",
        bench.timeout,
    )
    .await?;
    let before = RequestCounts::snapshot(client).await?;
    operator.stop().await?;

    let mut restarted = OperatorProcess::start(&bench.operator, tag).await?;
    restarted.wait_ready(bench.timeout).await;
    let seconds_to_ready = restarted.started.elapsed().as_secs_f64();
    crate::memory::wait_quiet(&mut restarted, bench.timeout).await?;
    let seconds_to_quiet = restarted.started.elapsed().as_secs_f64();
    tracing::info!(tag, seconds_to_ready, seconds_to_quiet, "scale: restarted");
    bench.settle(bench.args.settle_seconds).await;
    let rss_mib = crate::memory::rss_median(&mut restarted).await?;
    let mut requests = RequestCounts::snapshot(client).await?.since(&before);
    // The change watches' own lists.
    requests.subtract("LIST tenantaccesses", 1);
    requests.subtract("LIST secrets", 1);
    requests.subtract("LIST clustertinybirdworkspaces", 1);
    Ok((
        RestartResult {
            seconds_to_ready,
            seconds_to_quiet,
            tenant_access_changes: accesses.finish(),
            secret_changes: secrets.finish(),
            workspace_changes: workspaces.finish(),
            mutating_requests: requests.writes(),
            requests,
            rss_mib,
            peak_rss_mib: mib(restarted.sample()?.peak_rss_bytes),
        },
        restarted,
    ))
}

/// Refreshes the admin token at the emulator, writes it to its Secret, and waits until every
/// TenantAccess of `group` is on the new key, with another client measuring its latency.
async fn rotation(
    bench: &Bench,
    operator: &mut OperatorProcess,
    group: &str,
    n: usize,
) -> Result<RotationResult> {
    let other = OtherClient::start(bench).await?;
    tokio::time::sleep(BASELINE).await;
    let other_client_baseline = other.window();

    let cpu_before = operator.sample()?.cpu_seconds;
    let before = RequestCounts::snapshot(&bench.env.client).await?;
    let throttled_before = throttled(&bench.env.client).await?;
    let new_token = bench.env.tinybird.refresh_admin_token();
    let fingerprint = AdminToken::new(&new_token).fingerprint();
    let started = Instant::now();
    let (resigned, written) =
        tokio::join!(bench.wait_ready(group, n, Some(&fingerprint)), bench.env.put_admin_token(&new_token));
    written?;
    let done = resigned?;
    let other_client_during = other.stop().await;

    let throttled_responses = throttled(&bench.env.client).await?.saturating_sub(throttled_before);
    let sample = operator.sample()?;
    let mut requests = RequestCounts::snapshot(&bench.env.client).await?.since(&before);
    requests.subtract("APPLY secrets", 1);
    requests.subtract("LIST tenantaccesses", 1);
    // The other client's reads and writes since the snapshot (its baseline came before it).
    requests.subtract("GET namespaces", u64::try_from(other_client_during.reads.count).unwrap_or(u64::MAX));
    requests
        .subtract("APPLY configmaps", u64::try_from(other_client_during.writes.count).unwrap_or(u64::MAX));
    let seconds = done.saturating_duration_since(started).as_secs_f64();
    tracing::info!(tenants = n, seconds, "scale: rotated");
    Ok(RotationResult {
        seconds,
        cpu_seconds: sample.cpu_seconds - cpu_before,
        peak_rss_mib: mib(sample.peak_rss_bytes),
        requests_per_tenant: requests.per_tenant(n),
        requests,
        throttled_responses,
        other_client_baseline,
        other_client_during,
    })
}

/// The rotation's writes by the floor client on the group's objects (the operator stopped):
/// under the operator's client limit, then with none (and another client measuring).
async fn floors(bench: &Bench, group: &str) -> Result<(f64, f64, LatencyWindow)> {
    let token = bench.env.tinybird.admin_token();
    let pass = FloorPass::prepare(bench, group, &format!("{token}f"), operator_limit(bench)).await?;
    let limited = pass.write(101, bench).await?;
    tracing::info!(seconds = limited.as_secs_f64(), "scale: floor under the client limit");

    let pass = FloorPass::prepare(bench, group, &format!("{token}u"), UNLIMITED).await?;
    let other = OtherClient::start(bench).await?;
    let unthrottled = pass.write(102, bench).await?;
    let latency = other.stop().await;
    tracing::info!(seconds = unthrottled.as_secs_f64(), "scale: floor with no client limit");
    Ok((limited.as_secs_f64(), unthrottled.as_secs_f64(), latency))
}

/// Responses with code 429 so far, by the API server's counters (every resource).
async fn throttled(client: &Client) -> Result<u64> {
    Ok(count_throttled(&crate::apiserver::metrics_text(client).await?))
}

/// etcd's database size as the API server reports it (the largest endpoint), when it does.
async fn etcd_db_bytes(client: &Client) -> Result<Option<f64>> {
    Ok(etcd_db_size(&crate::apiserver::metrics_text(client).await?))
}

/// The largest `etcd_db_total_size_in_bytes` sample.
fn etcd_db_size(text: &str) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with("etcd_db_total_size_in_bytes"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .reduce(f64::max)
}

/// Sums `apiserver_request_total{code="429"}`.
fn count_throttled(text: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with("apiserver_request_total{") && line.contains("code=\"429\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// Another client of the API server (its own connection, no client-side limit): every 100 ms a
/// GET of a Namespace and a server-side apply of a ConfigMap, timed.
struct OtherClient {
    samples: std::sync::Arc<std::sync::Mutex<Samples>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the other client measured since its last window.
#[derive(Debug, Default)]
struct Samples {
    reads: Vec<f64>,
    writes: Vec<f64>,
    failures: u64,
}

/// Another client's latencies over a window, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyWindow {
    /// Reads (GET of a Namespace).
    pub reads: Latency,
    /// Writes (server-side apply of a ConfigMap).
    pub writes: Latency,
    /// Requests that failed (429 included).
    pub failures: u64,
}

/// p50, p99, max of a set of requests, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Requests.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted.get(index).copied().unwrap_or(0.0)
        };
        Self { count: sorted.len(), p50_ms: median(&sorted), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

impl OtherClient {
    async fn start(bench: &Bench) -> Result<Self> {
        let client = client_limited_to(bench, UNLIMITED).await?;
        let namespace = format!("{}-canary", bench.env.prefix);
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Samples::default()));
        let task = {
            let samples = samples.clone();
            tokio::spawn(async move {
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let configmaps: Api<ConfigMap> = Api::namespaced(client, &namespace);
                let params = PatchParams::apply(BENCH_MANAGER).force();
                let mut tick = tokio::time::interval(OTHER_CLIENT_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for i in 0u64.. {
                    tick.tick().await;
                    let started = Instant::now();
                    let read = namespaces.get(&namespace).await.is_ok();
                    let read_ms = started.elapsed().as_secs_f64() * 1000.0;
                    let object = json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "other-client", "namespace": namespace},
                        "data": {"i": i.to_string()},
                    });
                    let started = Instant::now();
                    let written =
                        configmaps.patch("other-client", &params, &Patch::Apply(&object)).await.is_ok();
                    let write_ms = started.elapsed().as_secs_f64() * 1000.0;
                    let mut guard = samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    guard.failures += u64::from(!read) + u64::from(!written);
                    if read {
                        guard.reads.push(read_ms);
                    }
                    if written {
                        guard.writes.push(write_ms);
                    }
                }
            })
        };
        Ok(Self { samples, task })
    }

    /// The window so far, and a fresh one from now.
    fn window(&self) -> LatencyWindow {
        let taken =
            std::mem::take(&mut *self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        LatencyWindow {
            reads: Latency::of(&taken.reads),
            writes: Latency::of(&taken.writes),
            failures: taken.failures,
        }
    }

    async fn stop(self) -> LatencyWindow {
        self.task.abort();
        let window = self.window();
        let _ = self.task.await;
        window
    }
}

/// Issue 27's target: the rotation within this times the unthrottled floor.
pub const TARGET_UNTHROTTLED_RATIO: f64 = 1.3;
/// Issue 27's target: RSS at 100,000 TenantAccesses, MiB.
pub const TARGET_RSS_MIB_AT_100K: f64 = 200.0;
/// Issue 27's target: a restart serves within this, seconds.
pub const TARGET_SERVING_SECONDS: f64 = 60.0;

/// The scenario's tables.
#[must_use]
pub fn markdown(scale: &ScaleResult) -> String {
    use std::fmt::Write as _;
    let mut md = String::from(
        "\n### Scale\n\n| Tenants (namespaces) | Applied → all Ready | RSS settled (empty) | Bytes per tenant | etcd per tenant | Restart: to /readyz, to quiet | Restart: changes (TenantAccess, Secret, workspace), mutating requests | Rotation | Floor, our limit | Floor, no limit | Ratio to no limit | Other client p99 read / write: before, rotation, floor no limit |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &scale.runs {
        let p99 = |w: &LatencyWindow| format!("{:.0} / {:.0} ms", w.reads.p99_ms, w.writes.p99_ms);
        let _ = writeln!(
            md,
            "| {} ({}) | {:.1} s | {:.1} MiB ({:.1}) | {:.0} B | {} | {:.1} s, {:.1} s | {}, {}, {}; {} | {:.1} s | {:.1} s | {:.1} s | {:.2}x | {}; {}; {} |",
            r.tenants,
            r.namespaces,
            r.ready_seconds,
            r.rss_mib_settled,
            r.rss_mib_empty,
            r.bytes_per_tenant,
            r.etcd_bytes_per_tenant.map_or_else(|| "-".to_owned(), |b| format!("≤ {b:.0} B")),
            r.restart.seconds_to_ready,
            r.restart.seconds_to_quiet,
            r.restart.tenant_access_changes,
            r.restart.secret_changes,
            r.restart.workspace_changes,
            r.restart.mutating_requests,
            r.rotation.seconds,
            r.floor_limited_seconds,
            r.floor_unthrottled_seconds,
            r.ratio_to_unthrottled,
            p99(&r.rotation.other_client_baseline),
            p99(&r.rotation.other_client_during),
            p99(&r.floor_unthrottled_other_client),
        );
    }
    md.push_str("\n| Tenants | Requests per tenant, convergence | Requests per tenant, rotation | 429s in the rotation | Targets (issue 27) |\n|---|---|---|---|---|\n");
    for r in &scale.runs {
        let per = |counts: &std::collections::BTreeMap<String, f64>| {
            counts
                .iter()
                .filter(|(_, v)| **v >= 0.01)
                .map(|(k, v)| format!("`{k}` {v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut targets = vec![format!(
            "rotation ≤ {TARGET_UNTHROTTLED_RATIO}x: {}",
            if r.ratio_to_unthrottled <= TARGET_UNTHROTTLED_RATIO { "met" } else { "not met" }
        )];
        targets.push(format!(
            "restart writes 0: {}",
            if r.restart.tenant_access_changes + r.restart.secret_changes + r.restart.workspace_changes == 0 {
                "met"
            } else {
                "not met"
            }
        ));
        targets.push(format!(
            "serving ≤ {TARGET_SERVING_SECONDS} s: {}",
            if r.restart.seconds_to_ready <= TARGET_SERVING_SECONDS { "met" } else { "not met" }
        ));
        if r.tenants >= 100_000 {
            targets.push(format!(
                "RSS < {TARGET_RSS_MIB_AT_100K} MiB: {}",
                if r.rss_mib_settled < TARGET_RSS_MIB_AT_100K { "met" } else { "not met" }
            ));
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r.tenants,
            per(&r.convergence_requests_per_tenant),
            per(&r.rotation.requests_per_tenant),
            r.rotation.throttled_responses,
            targets.join("; ")
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_throttled_responses_only() {
        let text = "apiserver_request_total{code=\"429\",resource=\"secrets\",verb=\"APPLY\"} 3\n\
                    apiserver_request_total{code=\"200\",resource=\"secrets\",verb=\"APPLY\"} 40\n\
                    apiserver_request_total{code=\"429\",resource=\"tenantaccesses\",verb=\"APPLY\"} 2\n";
        assert_eq!(count_throttled(text), 5);
    }

    #[test]
    fn reads_the_etcd_database_size() {
        let text = "# TYPE etcd_db_total_size_in_bytes gauge\n\
                    etcd_db_total_size_in_bytes{endpoint=\"http://127.0.0.1:2379\"} 2.4576e+07\n";
        assert_eq!(etcd_db_size(text), Some(24_576_000.0));
        assert_eq!(etcd_db_size("apiserver_request_total 3\n"), None);
    }

    #[test]
    fn latency_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let latency = Latency::of(&samples);
        assert_eq!(latency.count, 100);
        assert!((latency.p50_ms - 50.5).abs() < 1e-9);
        assert!((latency.p99_ms - 99.0).abs() < 1e-9);
        assert!((latency.max_ms - 100.0).abs() < 1e-9);
    }
}
