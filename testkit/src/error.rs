//! The testkit's error type.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::KubeconfigError;

/// Errors of the testkit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation (spawning a process, writing a file) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: KubeconfigError,
    },
    /// A request to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// `hack/cluster.sh up` failed.
    #[error("starting the local cluster failed ({status}):\n{stderr}")]
    ClusterStart {
        /// Exit status of the script.
        status: String,
        /// Its standard error (logs tail; no tokens).
        stderr: String,
    },
    /// A kubectl invocation that had to succeed failed.
    #[error("`kubectl {args}` failed ({status}):\n{stderr}")]
    Kubectl {
        /// The arguments (without the kubeconfig).
        args: String,
        /// Exit status.
        status: String,
        /// Standard error.
        stderr: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout.
        timeout: Duration,
    },
    /// A watch used for waiting failed.
    #[error("waiting for {what}: {source}")]
    Wait {
        /// What was awaited.
        what: String,
        /// The underlying error.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// Something else went wrong.
    #[error("{0}")]
    Other(String),
}

/// Result with the testkit [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
