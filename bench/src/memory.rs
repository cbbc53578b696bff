//! Scenario 4: operator RSS with many TenantAccess, then with many unrelated Secrets added in
//! other namespaces (they must not be cached), then after a restart with everything in place.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{Bench, median};
use crate::error::Result;
use crate::fixtures::BenchEnv;
use crate::machine::{ProcSample, mib};
use crate::operator::OperatorProcess;

/// RSS samples taken per measurement, and their spacing.
const SAMPLES: usize = 6;
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Scenario 4.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    /// TenantAccess resources.
    pub tenants: usize,
    /// Unrelated Secrets added.
    pub unrelated_secrets: usize,
    /// Size of each, bytes.
    pub unrelated_secret_bytes: usize,
    /// RSS with only the canary, MiB.
    pub rss_mib_empty: f64,
    /// RSS with every TenantAccess Ready, MiB (median of the samples).
    pub rss_mib_tenants: f64,
    /// RSS after the unrelated Secrets were added, MiB.
    pub rss_mib_with_unrelated: f64,
    /// `rss_mib_with_unrelated / rss_mib_tenants - 1`, percent.
    pub unrelated_increase_percent: f64,
    /// RSS of a fresh operator with everything in place, after its start-up work, MiB.
    pub rss_mib_after_restart: Option<f64>,
    /// Peak RSS (VmHWM) of that fresh operator, MiB.
    pub peak_rss_mib_after_restart: Option<f64>,
    /// Peak RSS (VmHWM) of the first operator, MiB.
    pub peak_rss_mib: f64,
    /// Time to create the TenantAccess resources, seconds.
    pub apply_seconds: f64,
    /// All applied -> all Ready, seconds.
    pub ready_seconds: f64,
    /// Time to create the unrelated Secrets, seconds.
    pub unrelated_apply_seconds: f64,
    /// Operator CPU seconds while the unrelated Secrets arrived (and the settling time after).
    pub unrelated_cpu_seconds: f64,
}

/// Runs the memory scenario.
///
/// # Errors
/// Any step failing or timing out.
pub async fn run(bench: &mut Bench) -> Result<MemoryResult> {
    let n = bench.args.memory_tenants;
    let group = "memory".to_owned();
    let namespaces = bench.env.tenant_namespaces(&group, bench.args.tenant_namespaces).await?;
    let tenants = BenchEnv::tenants(&namespaces, n);
    let mut operator = bench.start_operator("memory").await?;
    bench.settle(bench.args.settle_seconds.min(10)).await;
    let rss_mib_empty = rss_median(&mut operator).await?;

    let started = Instant::now();
    bench.env.apply_tenants(&tenants, &group, None, bench.args.apply_concurrency).await?;
    let apply_seconds = started.elapsed().as_secs_f64();
    let all_applied = Instant::now();
    tracing::info!(tenants = n, apply_seconds, "memory: all applied");
    let ready = bench.wait_ready(&group, n, None).await?;
    let ready_seconds = ready.saturating_duration_since(all_applied).as_secs_f64();
    tracing::info!(ready_seconds, "memory: all Ready");
    bench.settle(bench.args.settle_seconds).await;
    let rss_mib_tenants = rss_median(&mut operator).await?;

    let mut unrelated_namespaces = Vec::new();
    for i in 0..bench.args.tenant_namespaces.max(1) {
        let name = format!("{}-unrelated-{i}", bench.env.prefix);
        bench.env.create_namespace(&name, false).await?;
        unrelated_namespaces.push(name);
    }
    let cpu_before = operator.sample()?.cpu_seconds;
    let unrelated_apply = bench
        .env
        .create_unrelated_secrets(
            &unrelated_namespaces,
            bench.args.unrelated_secrets,
            bench.args.unrelated_secret_bytes,
            bench.args.apply_concurrency,
        )
        .await?;
    tracing::info!(seconds = unrelated_apply.as_secs_f64(), "memory: unrelated Secrets created");
    bench.settle(bench.args.settle_seconds).await;
    let rss_mib_with_unrelated = rss_median(&mut operator).await?;
    let unrelated_cpu_seconds = operator.sample()?.cpu_seconds - cpu_before;
    let peak_rss_mib = mib(operator.sample()?.peak_rss_bytes);
    bench.save_operator_metrics(&operator, "memory").await;
    operator.stop().await?;
    bench.delete_canary("memory").await?;

    let (rss_mib_after_restart, peak_rss_mib_after_restart) = if bench.args.memory_restart {
        let mut restarted = bench.start_operator("memory-restart").await?;
        wait_quiet(&mut restarted, bench.timeout).await?;
        bench.settle(bench.args.settle_seconds).await;
        let rss = rss_median(&mut restarted).await?;
        let peak = mib(restarted.sample()?.peak_rss_bytes);
        bench.save_operator_metrics(&restarted, "memory-restart").await;
        restarted.stop().await?;
        bench.delete_canary("memory-restart").await?;
        (Some(rss), Some(peak))
    } else {
        (None, None)
    };

    bench.env.delete_all_secrets(&unrelated_namespaces).await?;
    bench.env.delete_group(&namespaces, &group).await?;
    Ok(MemoryResult {
        tenants: n,
        unrelated_secrets: bench.args.unrelated_secrets,
        unrelated_secret_bytes: bench.args.unrelated_secret_bytes,
        rss_mib_empty,
        rss_mib_tenants,
        rss_mib_with_unrelated,
        unrelated_increase_percent: if rss_mib_tenants > 0.0 {
            (rss_mib_with_unrelated / rss_mib_tenants - 1.0) * 100.0
        } else {
            0.0
        },
        rss_mib_after_restart,
        peak_rss_mib_after_restart,
        peak_rss_mib,
        apply_seconds,
        ready_seconds,
        unrelated_apply_seconds: unrelated_apply.as_secs_f64(),
        unrelated_cpu_seconds,
    })
}

/// Median RSS over a few samples, MiB.
pub(crate) async fn rss_median(operator: &mut OperatorProcess) -> Result<f64> {
    let samples: Vec<ProcSample> = operator.sample_over(SAMPLES, SAMPLE_EVERY).await?;
    Ok(median(&samples.iter().map(|s| mib(s.rss_bytes)).collect::<Vec<_>>()))
}

/// Waits (at most `timeout`, and 5 minutes) until the operator uses less than a quarter of a
/// core over 2 s: its start-up pass over every object is done (health probes go on).
pub(crate) async fn wait_quiet(operator: &mut OperatorProcess, timeout: Duration) -> Result<()> {
    let timeout = timeout.min(Duration::from_secs(300));
    let deadline = Instant::now() + timeout;
    let mut last = operator.sample()?.cpu_seconds;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = operator.sample()?.cpu_seconds;
        if now - last < 0.5 {
            return Ok(());
        }
        last = now;
    }
    tracing::warn!("the restarted operator did not go quiet within {timeout:?}; measuring anyway");
    Ok(())
}
