//! The harness's errors: what failed, named after the action.

use std::time::Duration;

/// A benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The test cluster could not be started or used.
    #[error("test cluster: {0}")]
    Cluster(#[from] tenant_access_testkit::Error),
    /// The Tinybird emulator failed.
    #[error("tinybird emulator: {0}")]
    Emulator(String),
    /// A file or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Something did not happen in time (every wait is bounded).
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        timeout: Duration,
    },
    /// The operator process exited while it was being measured.
    #[error("the operator process exited early ({status}); its log: {log}")]
    OperatorExited {
        /// Exit status.
        status: String,
        /// Path of its log file.
        log: String,
    },
    /// The library refused a fixture (a bug in the harness's manifests).
    #[error("fixture: {0}")]
    Fixture(String),
    /// Serializing the report failed.
    #[error("writing the report: {0}")]
    Report(#[from] serde_json::Error),
}

impl BenchError {
    /// A `map_err` adapter for Kubernetes calls.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }

    /// A `map_err` adapter for I/O.
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| Self::Io { action, source }
    }
}

/// Results of the harness.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
