//! What the cluster scenarios share: the environment, starting the operator process, waiting
//! for groups of tenants.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tenant_access::api::TenantAccess;

use crate::args::Args;
use crate::error::Result;
use crate::fixtures::{BenchEnv, GROUP_LABEL, TenantRef};
use crate::operator::{OperatorProcess, OperatorSpec};
use crate::progress::{is_ready_with_token, wait_all};

/// The running benchmark.
#[allow(missing_debug_implementations)]
pub struct Bench {
    /// Parameters.
    pub args: Args,
    /// Cluster, emulator, workspace.
    pub env: BenchEnv,
    /// How the operator is started.
    pub operator: OperatorSpec,
    /// Bound of every wait.
    pub timeout: Duration,
    canary_namespace: String,
}

impl Bench {
    /// Sets up the environment.
    ///
    /// # Errors
    /// The cluster, emulator or workspace could not be set up.
    pub async fn setup(args: Args, operator_binary: &Path) -> Result<Self> {
        let mut env = BenchEnv::setup().await?;
        let canary_namespace = format!("{}-canary", env.prefix);
        env.create_namespace(&canary_namespace, true).await?;
        let operator = OperatorSpec {
            binary: operator_binary.to_path_buf(),
            kubeconfig: env.cluster.admin_kubeconfig().to_path_buf(),
            cluster_resource_namespace: env.system_namespace.clone(),
            concurrency: args.concurrency,
            kube_qps: args.kube_qps,
            kube_burst: args.kube_burst,
            extra_args: args.operator_args.clone(),
            extra_env: args.operator_env.clone(),
            log_dir: args.output_dir.join("logs"),
        };
        let timeout = Duration::from_secs(args.timeout_seconds.max(1));
        Ok(Self { args, env, operator, timeout, canary_namespace })
    }

    /// Starts an operator process and waits until it serves: /readyz when it has one, and in
    /// any case until a fresh canary TenantAccess is Ready (its caches are synced and it writes).
    ///
    /// # Errors
    /// The process did not start, or the canary did not become Ready in time.
    pub async fn start_operator(&self, tag: &str) -> Result<OperatorProcess> {
        let mut operator = OperatorProcess::start(&self.operator, tag).await?;
        operator.wait_ready(self.timeout).await;
        let group = format!("canary-{tag}");
        let canary = TenantRef { namespace: self.canary_namespace.clone(), name: group.clone() };
        self.env.apply_tenants(&[canary], &group, Some("0"), 1).await?;
        self.wait_ready(&group, 1, None).await?;
        operator.sample()?;
        tracing::info!(tag, elapsed_ms = operator.started.elapsed().as_millis(), "operator serving");
        Ok(operator)
    }

    /// Waits until `expected` TenantAccess of `group` are Ready with a token (signed with
    /// `fingerprint` when given).
    ///
    /// # Errors
    /// Timeout.
    pub async fn wait_ready(
        &self,
        group: &str,
        expected: usize,
        fingerprint: Option<&str>,
    ) -> Result<Instant> {
        let api: Api<TenantAccess> = Api::all(self.env.client.clone());
        wait_all(
            api,
            &group_selector(group),
            expected,
            self.timeout,
            &format!("{expected} Ready TenantAccess of {group}"),
            |ta| is_ready_with_token(ta, fingerprint),
        )
        .await
    }

    /// Applies the TenantAccesses of `tenants` as group `group` and waits until every one is
    /// Ready with a token and has its token Secret.
    ///
    /// # Errors
    /// An apply failed, or a wait timed out.
    pub async fn apply_until_ready(&self, tenants: &[TenantRef], group: &str) -> Result<Applied> {
        let n = tenants.len();
        let apply = async {
            let result = self.env.apply_tenants(tenants, group, None, self.args.apply_concurrency).await;
            (result, Instant::now())
        };
        let (ready, secrets, (applied, all_applied)) =
            tokio::join!(self.wait_ready(group, n, None), self.wait_secrets(group, n), apply);
        let apply = applied?;
        Ok(Applied { apply, all_applied, done: ready?.max(secrets?) })
    }

    /// Waits until `expected` token Secrets of `group` exist with a token.
    ///
    /// # Errors
    /// Timeout.
    pub async fn wait_secrets(&self, group: &str, expected: usize) -> Result<Instant> {
        let api: Api<Secret> = Api::all(self.env.client.clone());
        wait_all(
            api,
            &group_selector(group),
            expected,
            self.timeout,
            &format!("{expected} token Secrets of {group}"),
            |s: &Secret| s.data.as_ref().is_some_and(|d| d.contains_key("token")),
        )
        .await
    }

    /// Removes the canary of an operator run.
    ///
    /// # Errors
    /// The delete failed.
    pub async fn delete_canary(&self, tag: &str) -> Result<()> {
        self.env.delete_group(std::slice::from_ref(&self.canary_namespace), &format!("canary-{tag}")).await
    }

    /// Saves the operator's /metrics (when it has them) next to the results.
    pub async fn save_operator_metrics(&self, operator: &OperatorProcess, tag: &str) {
        let Some(text) = operator.metrics().await else { return };
        let path = self.args.output_dir.join(format!("operator-metrics-{tag}.txt"));
        if let Err(error) = std::fs::write(&path, text) {
            tracing::warn!(%error, path = %path.display(), "could not save the operator's metrics");
        }
    }

    /// Sleeps `seconds` (settling time before a measurement).
    pub async fn settle(&self, seconds: u64) {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
}

/// What [`Bench::apply_until_ready`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// How long the applies took.
    pub apply: Duration,
    /// When the last apply returned.
    pub all_applied: Instant,
    /// When the last TenantAccess was Ready with its Secret.
    pub done: Instant,
}

/// The label selector of a group.
#[must_use]
pub fn group_selector(group: &str) -> String {
    format!("{GROUP_LABEL}={group}")
}

/// Median of a list (0 when empty).
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).abs() < f64::EPSILON);
    }
}
