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

    /// The message, redacted.
    #[must_use]
    pub fn redacted(&self) -> String {
        redact(&self.to_string(), &[])
    }
}
