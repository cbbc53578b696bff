//! The operator under test: a separate release process (`tenant-access run`), its CPU time and
//! memory read from /proc, and its admin endpoint (/metrics) when the binary has one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::machine::{ProcSample, clock_ticks, sample};

/// How the operator is started.
#[derive(Debug, Clone)]
pub struct OperatorSpec {
    /// The `tenant-access` binary.
    pub binary: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `--cluster-resource-namespace`.
    pub cluster_resource_namespace: String,
    /// `--concurrency`.
    pub concurrency: u16,
    /// `--kube-qps`.
    pub kube_qps: f64,
    /// `--kube-burst`.
    pub kube_burst: u32,
    /// More arguments, passed as they are.
    pub extra_args: Vec<String>,
    /// More environment variables.
    pub extra_env: Vec<(String, String)>,
    /// Directory for the logs.
    pub log_dir: PathBuf,
}

/// A running operator process. Killed (SIGKILL) if dropped without [`OperatorProcess::stop`].
#[derive(Debug)]
pub struct OperatorProcess {
    child: tokio::process::Child,
    pid: u32,
    ticks: f64,
    log: PathBuf,
    admin_url: Option<String>,
    /// When the process was spawned.
    pub started: Instant,
}

impl OperatorProcess {
    /// Spawns `tenant-access run` with its log in `log_dir/operator-<tag>.log`.
    ///
    /// # Errors
    /// The binary cannot be started.
    pub async fn start(spec: &OperatorSpec, tag: &str) -> Result<Self> {
        std::fs::create_dir_all(&spec.log_dir).map_err(BenchError::io("creating the log directory"))?;
        let log = spec.log_dir.join(format!("operator-{tag}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(BenchError::io(format!("creating {}", log.display())))?;
        let admin = if supports_admin_address(&spec.binary).await { free_loopback_port() } else { None };
        let mut command = tokio::process::Command::new(&spec.binary);
        command
            .arg("run")
            .arg("--kubeconfig")
            .arg(&spec.kubeconfig)
            .arg("--cluster-resource-namespace")
            .arg(&spec.cluster_resource_namespace)
            .arg("--concurrency")
            .arg(spec.concurrency.to_string())
            .arg("--kube-qps")
            .arg(spec.kube_qps.to_string())
            .arg("--kube-burst")
            .arg(spec.kube_burst.to_string())
            .arg("--log-format")
            .arg("json")
            .args(&spec.extra_args)
            .env_remove("RUST_LOG")
            .envs(spec.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        if let Some(port) = admin {
            command.arg("--admin-address").arg(format!("127.0.0.1:{port}"));
        }
        let child = command.spawn().map_err(BenchError::io(format!("starting {}", spec.binary.display())))?;
        let pid = child.id().ok_or_else(|| BenchError::OperatorExited {
            status: "exited at once".into(),
            log: log.display().to_string(),
        })?;
        tracing::info!(pid, log = %log.display(), "operator started");
        Ok(Self {
            child,
            pid,
            ticks: clock_ticks(),
            log,
            admin_url: admin.map(|port| format!("http://127.0.0.1:{port}")),
            started: Instant::now(),
        })
    }

    /// CPU seconds and memory now.
    ///
    /// # Errors
    /// The process is gone.
    pub fn sample(&mut self) -> Result<ProcSample> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(BenchError::OperatorExited {
                status: status.to_string(),
                log: self.log.display().to_string(),
            });
        }
        sample(self.pid, self.ticks).ok_or_else(|| BenchError::OperatorExited {
            status: "no /proc entry".into(),
            log: self.log.display().to_string(),
        })
    }

    /// Samples memory `count` times, `every` apart, and returns the samples.
    ///
    /// # Errors
    /// The process is gone.
    pub async fn sample_over(&mut self, count: usize, every: Duration) -> Result<Vec<ProcSample>> {
        let mut samples = Vec::with_capacity(count);
        for i in 0..count {
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            samples.push(self.sample()?);
        }
        Ok(samples)
    }

    /// The operator's Prometheus text, when it serves /metrics.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("{}/metrics", self.admin_url.as_deref()?);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
        let response = client.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// Waits (bounded) until /readyz answers 200, when the operator has an admin endpoint.
    pub async fn wait_ready(&self, timeout: Duration) {
        let Some(base) = self.admin_url.as_deref() else { return };
        let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).build() else { return };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(response) = client.get(format!("{base}/readyz")).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!("the operator's /readyz did not answer 200 in {timeout:?}; continuing");
    }

    /// SIGTERM, wait (bounded), SIGKILL if needed. Returns the last sample taken before the
    /// signal.
    ///
    /// # Errors
    /// The process was already gone.
    pub async fn stop(mut self) -> Result<ProcSample> {
        let last = self.sample()?;
        // No libc: `kill` is always there. Only this process's own PID is signalled.
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(pid = self.pid, "operator did not stop within 30 s: killing it");
                let _ = self.child.kill().await;
            }
        }
        Ok(last)
    }
}

/// Whether `tenant-access run` accepts `--admin-address` (being added; older binaries do not).
async fn supports_admin_address(binary: &Path) -> bool {
    let help = tokio::process::Command::new(binary)
        .args(["run", "--help"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await;
    help.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--admin-address"))
}

/// A loopback port free right now.
fn free_loopback_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok().map(|a| a.port())
}

/// Reconciles of TenantAccess resources and the seconds they took, from the operator's metrics.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq)]
pub struct ReconcileCounters {
    /// `tenant_access_reconciles_total{kind="TenantAccess"}`.
    pub reconciles: f64,
    /// `tenant_access_reconcile_duration_seconds_sum{kind="TenantAccess"}`.
    pub seconds: f64,
}

impl ReconcileCounters {
    /// Reads them from a /metrics text.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let kind = [("kind", "TenantAccess")];
        Self {
            reconciles: counter_sum(text, "tenant_access_reconciles_total", &kind),
            seconds: counter_sum(text, "tenant_access_reconcile_duration_seconds_sum", &kind),
        }
    }

    /// `self - earlier`.
    #[must_use]
    pub fn since(self, earlier: Self) -> Self {
        Self { reconciles: self.reconciles - earlier.reconciles, seconds: self.seconds - earlier.seconds }
    }
}

impl OperatorProcess {
    /// The reconcile counters now (None when the operator serves no metrics).
    pub async fn reconcile_counters(&self) -> Option<ReconcileCounters> {
        self.metrics().await.map(|text| ReconcileCounters::parse(&text))
    }
}

/// Sums every sample of a Prometheus family whose labels contain all of `labels`.
#[must_use]
pub fn counter_sum(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let matches = labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.split_whitespace().next()?.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_counter_samples_by_labels() {
        let text = "# HELP x\nreconciles_total{kind=\"TenantAccess\",outcome=\"ok\"} 3\nreconciles_total{kind=\"TenantAccess\",outcome=\"error\"} 2\nreconciles_total_created 9\nother 1\n";
        assert!((counter_sum(text, "reconciles_total", &[]) - 5.0).abs() < f64::EPSILON);
        assert!((counter_sum(text, "reconciles_total", &[("outcome", "ok")]) - 3.0).abs() < f64::EPSILON);
        assert!(counter_sum(text, "missing", &[]).abs() < f64::EPSILON);
    }
}
