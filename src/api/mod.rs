//! Custom resource types of `tenantaccess.dev/v1alpha1`.
//!
//! Every field carries a doc comment: it becomes the `kubectl explain` text. Enumerations are
//! plain strings with a schema `enum`, validated again in Rust (see `crate::core::validate`), so that a
//! resource the API server let through (stored before a schema change, or a rule the schema
//! cannot express) still deserializes and gets a condition naming the bad field instead of a
//! watch error.

mod common;
pub mod limits;
mod tenant_access;
mod workspace;

pub use common::{Condition, SecretKeySelector};
pub use tenant_access::{
    ClerkTemplateOutput, ClerkTemplateStatus, EndpointStatus, HealthCheckSpec, Limits, RolloutTarget, Scope,
    SecretOutput, TenantAccess, TenantAccessSpec, TenantAccessStatus, TokenStatus, WorkspaceRef,
};
pub use workspace::{
    ClerkConnection, ClusterTinybirdWorkspace, ClusterTinybirdWorkspaceSpec, RequiredParamSource,
    TinybirdWorkspace, TinybirdWorkspaceSpec, WorkspacePolicy, WorkspaceSpec, WorkspaceStatus,
};

/// Scope type granting read access to a pipe endpoint.
pub const SCOPE_PIPES_READ: &str = "PIPES:READ";
/// Scope type granting read access to a data source (with an optional SQL filter).
pub const SCOPE_DATASOURCES_READ: &str = "DATASOURCES:READ";
/// Scope types a TenantAccess may ask for.
pub const SCOPE_TYPES: [&str; 2] = [SCOPE_PIPES_READ, SCOPE_DATASOURCES_READ];

/// Kind name of the namespaced workspace.
pub const KIND_WORKSPACE: &str = "TinybirdWorkspace";
/// Kind name of the cluster-scoped workspace.
pub const KIND_CLUSTER_WORKSPACE: &str = "ClusterTinybirdWorkspace";

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CRD of the API group, in a stable order.
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt as _;
    vec![TenantAccess::crd(), TinybirdWorkspace::crd(), ClusterTinybirdWorkspace::crd()]
}

/// File name of a CRD in `crds/`: `<plural>.<group>.yaml`.
#[must_use]
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}
