//! Faults of a private cluster's control plane, for fault tests: kube-apiserver stopped and
//! restarted on the same port and etcd, etcd paused (SIGSTOP) and resumed, and the audited
//! `operator` identity (every request of that user is in the audit log).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::io_err;
use crate::paths::repo_root;
use crate::{Error, Result, TestCluster};

impl TestCluster {
    /// The kubeconfig of user `operator` (group `system:masters`) of a private cluster: every
    /// request made with it is recorded in [`TestCluster::audit_log`].
    ///
    /// # Errors
    /// [`Error::Other`] on an external cluster.
    pub fn operator_kubeconfig(&self) -> Result<PathBuf> {
        Ok(self.private_dir("an audited operator identity")?.join("operator.kubeconfig"))
    }

    /// The audit log of a private cluster (JSON lines: the requests of ServiceAccounts and of
    /// user `operator`).
    ///
    /// # Errors
    /// [`Error::Other`] on an external cluster.
    pub fn audit_log(&self) -> Result<PathBuf> {
        Ok(self.private_dir("an audit log")?.join("logs/audit.log"))
    }

    /// Kills kube-apiserver at once (SIGKILL; etcd keeps running); [`TestCluster::start_apiserver`]
    /// brings it back.
    ///
    /// # Errors
    /// An external cluster, or `hack/cluster.sh apiserver-stop` failing.
    pub async fn stop_apiserver(&self) -> Result<()> {
        self.fault("apiserver-stop").await
    }

    /// Starts kube-apiserver again on the same port, certificates and etcd, and waits until it
    /// answers `/readyz`.
    ///
    /// # Errors
    /// An external cluster, or `hack/cluster.sh apiserver-start` failing.
    pub async fn start_apiserver(&self) -> Result<()> {
        self.fault("apiserver-start").await
    }

    /// Pauses etcd (SIGSTOP): requests that need it hang until [`TestCluster::resume_etcd`].
    ///
    /// # Errors
    /// An external cluster, or `hack/cluster.sh etcd-pause` failing.
    pub async fn pause_etcd(&self) -> Result<()> {
        self.fault("etcd-pause").await
    }

    /// Resumes a paused etcd (SIGCONT).
    ///
    /// # Errors
    /// An external cluster, or `hack/cluster.sh etcd-resume` failing.
    pub async fn resume_etcd(&self) -> Result<()> {
        self.fault("etcd-resume").await
    }

    fn private_dir(&self, what: &str) -> Result<&Path> {
        self.local_dir().ok_or_else(|| {
            Error::Other(format!(
                "{what} needs a private cluster (TestCluster::start_local), not an external one"
            ))
        })
    }

    async fn fault(&self, command: &str) -> Result<()> {
        let dir = self.private_dir(command)?;
        let script = repo_root().join("hack/cluster.sh");
        let output = tokio::process::Command::new("bash")
            .arg(&script)
            .arg(command)
            .arg(dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(io_err(format!("running {} {command}", script.display())))?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::Other(format!(
            "`hack/cluster.sh {command}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}
