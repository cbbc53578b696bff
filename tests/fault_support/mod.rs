//! Support of the fault suite (`tests/faults.rs`): the operator as a separate process on a
//! private API server, and a watcher checking every token Secret against the current key.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod watcher;

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::support::{Env, eventually, free_port, http_get};
// Not every test binary that includes this module watches the Secrets.
#[allow(unused_imports)]
pub use watcher::Watcher;

/// `tenant-access run` as a separate process serving the test namespace of a private cluster
/// with the audited `operator` identity; its log in the cluster's `logs/operator-<n>.log`.
pub struct OperatorProcess {
    child: Child,
    /// Its admin server (metrics, probes): `127.0.0.1:{port}`.
    pub port: u16,
}

impl OperatorProcess {
    /// Starts run number `n` and waits until it reports ready (caches synced).
    pub async fn start(env: &Env, n: u32) -> Self {
        Self::start_with(env, n, false, &[]).await
    }

    /// [`OperatorProcess::start`], cluster-wide (`cluster_wide`: every namespace of the private
    /// cluster, with the ClusterTinybirdWorkspaces) or not, with extra environment variables.
    pub async fn start_with(env: &Env, n: u32, cluster_wide: bool, vars: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = env.cluster.local_dir().expect("a private cluster");
        let log = std::fs::File::create(dir.join(format!("logs/operator-{n}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-access"));
        command.args(["run", "--kubeconfig"]).arg(env.cluster.operator_kubeconfig().unwrap());
        if !cluster_wide {
            command.args(["--namespaces", env.name()]);
        }
        let child = command
            .args(["--cluster-resource-namespace", env.name()])
            .args(["--admin-address", &format!("127.0.0.1:{port}"), "--log-format", "json"])
            // Clerk's development budget scaled to a 1 s window, as the emulator's.
            .args(["--clerk-request-budget", "90", "--clerk-budget-window-seconds", "1"])
            .env("POD_NAME", format!("faults-{n}"))
            .env_remove("RUST_LOG")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let operator = Self { child, port };
        eventually("the operator's /readyz", || async {
            http_get(port, "/readyz").await.is_some_and(|(code, _)| code == 200)
        })
        .await;
        operator
    }

    /// SIGKILL: no graceful anything.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Waits for the process to exit on its own (e.g. after losing its leader lease).
    pub async fn exited(mut self) -> std::process::ExitStatus {
        tokio::time::timeout(crate::support::TIMEOUT, self.child.wait()).await.unwrap().unwrap()
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running").to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        let status = tokio::time::timeout(crate::support::TIMEOUT, self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "graceful shutdown exits 0: {status}");
    }

    /// `/metrics` (empty while the admin server does not answer).
    pub async fn metrics(&self) -> String {
        http_get(self.port, "/metrics").await.map(|(_, text)| text).unwrap_or_default()
    }

    /// Reconciles of `kind` that ended in anything but success, so far.
    pub async fn failed_reconciles(&self, kind: &str) -> u64 {
        let prefix = format!("tenant_access_reconciles_total{{kind=\"{kind}\",outcome=\"");
        self.metrics()
            .await
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter(|rest| !rest.starts_with("success\""))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|value| value as u64)
            .sum()
    }

    /// The value of a counter series (its full name with labels), 0 while absent.
    pub async fn counter(&self, series: &str) -> u64 {
        let prefix = format!("{series} ");
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    }
}

/// Seconds, for printing.
pub fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// How far the audit log of the env's private cluster goes now.
pub fn audit_mark(env: &Env) -> usize {
    crate::support::audit_mark(&env.cluster)
}

/// The write requests (`verb resource[/subresource] name`) of user `operator` after `mark` in
/// the audit log.
pub fn operator_writes_since(env: &Env, mark: usize) -> Vec<String> {
    crate::support::audited_since(&env.cluster, mark)
        .into_iter()
        .filter(|request| request.user == "operator")
        .filter(|request| {
            matches!(request.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
        })
        .map(|request| format!("{} {} {}", request.verb, request.resource, request.name))
        .collect()
}
