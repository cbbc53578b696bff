//! Reconcile errors: transient failures worth a retry. Expected problems (invalid spec, missing
//! Secret, conflicts) are not errors: they become conditions and events.

use crate::adapters::kube_error::{describe, is_not_found};
use crate::core::redact::redact;

/// A failed reconcile step, named after the action.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the admin-token Secret: {}", describe(.0))]
    ReadAdminSecret(#[source] kube::Error),
    #[error("reading the token Secret: {}", describe(.0))]
    ReadSecret(#[source] kube::Error),
    #[error("writing the token Secret: {}", describe(.0))]
    WriteSecret(#[source] kube::Error),
    #[error("reading the Clerk template ConfigMap: {}", describe(.0))]
    ReadConfigMap(#[source] kube::Error),
    #[error("writing the Clerk template ConfigMap: {}", describe(.0))]
    WriteConfigMap(#[source] kube::Error),
    #[error("writing status: {}", describe(.0))]
    WriteStatus(#[source] kube::Error),
    #[error("restarting {kind} {name}: {}", restart_failure(kind, name, source))]
    RolloutRestart { kind: String, name: String, source: kube::Error },
    #[error("signing: {0}")]
    Sign(#[from] crate::core::jwt::SignError),
    #[error("Clerk: {0}")]
    Clerk(#[from] crate::adapters::clerk::ClerkError),
    #[error("updating finalizers: {}", describe(.0))]
    WriteFinalizer(#[source] kube::Error),
    #[error("{0}")]
    DecodeCache(#[from] super::cached_access::DecodeError),
}

/// Why a workload restart failed: a missing workload by its kind and name.
fn restart_failure(kind: &str, name: &str, error: &kube::Error) -> String {
    if is_not_found(error) { format!("{kind} {name} not found") } else { describe(error) }
}

impl Error {
    /// Bounded category for metrics and events.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadAdminSecret(_) | Self::ReadSecret(_) | Self::ReadConfigMap(_) => "kube_read",
            Self::WriteSecret(_)
            | Self::WriteConfigMap(_)
            | Self::WriteStatus(_)
            | Self::WriteFinalizer(_)
            | Self::RolloutRestart { .. } => "kube_write",
            Self::Sign(_) => "sign",
            Self::Clerk(_) => "clerk",
            Self::DecodeCache(_) => "cache",
        }
    }

    /// Whether the API server could not be reached, or answered that it cannot serve now (5xx,
    /// 429): an outage, retried as soon as it answers again (see `api_recovery`).
    #[must_use]
    pub fn is_api_unavailable(&self) -> bool {
        let source = match self {
            Self::ReadAdminSecret(source)
            | Self::ReadSecret(source)
            | Self::WriteSecret(source)
            | Self::ReadConfigMap(source)
            | Self::WriteConfigMap(source)
            | Self::WriteStatus(source)
            | Self::WriteFinalizer(source)
            | Self::RolloutRestart { source, .. } => source,
            Self::Sign(_) | Self::Clerk(_) | Self::DecodeCache(_) => return false,
        };
        match source {
            kube::Error::Api(status) => status.code >= 500 || status.code == 429,
            kube::Error::HyperError(_) | kube::Error::Service(_) => true,
            _ => false,
        }
    }

    /// The message, redacted.
    #[must_use]
    pub fn redacted(&self) -> String {
        redact(&self.to_string(), &[])
    }
}
