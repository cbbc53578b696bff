//! The server-side applies the operator makes for every tenant (the token Secret and the
//! TenantAccess status), with its field manager. Shared by the controller and the benchmark's
//! floor client, so that the floor makes exactly the operator's writes.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource as _};

use crate::api::{TenantAccess, TenantAccessStatus};
use crate::core::well_known::FIELD_MANAGER;

/// How a write treats fields another manager owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Take them over (the object is the operator's).
    Force,
    /// Fail with 409 on a conflicting field (an object believed absent must not be taken over).
    NoForce,
}

fn params(ownership: Ownership) -> PatchParams {
    let params = PatchParams::apply(FIELD_MANAGER);
    match ownership {
        Ownership::Force => params.force(),
        Ownership::NoForce => params,
    }
}

/// Server-side applies a Secret (created when absent). Returns the API server's answer.
///
/// # Errors
/// The API server's refusal.
pub async fn apply_secret(
    secrets: &Api<Secret>,
    secret: &Secret,
    ownership: Ownership,
) -> Result<Secret, kube::Error> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    secrets.patch(name, &params(ownership), &Patch::Apply(secret)).await
}

/// Server-side applies a TenantAccess's whole status. Returns the API server's answer.
///
/// # Errors
/// The API server's refusal.
pub async fn apply_status(
    accesses: &Api<TenantAccess>,
    name: &str,
    status: &TenantAccessStatus,
) -> Result<TenantAccess, kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": TenantAccess::api_version(&()),
        "kind": TenantAccess::kind(&()),
        "status": status,
    });
    accesses.patch_status(name, &params(Ownership::Force), &Patch::Apply(&patch)).await
}
