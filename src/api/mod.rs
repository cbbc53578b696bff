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
    ClerkTemplateOutput, ClerkTemplateStatus, EndpointStatus, HealthCheckSpec, Limits, ParamIsolation,
    RolloutTarget, Scope, SecretObserved, SecretOutput, TenantAccess, TenantAccessSpec, TenantAccessStatus,
    TokenStatus, WorkspaceRef,
};
pub use workspace::{
    ClerkConnection, ClerkTemplatesStatus, ClusterTinybirdWorkspace, ClusterTinybirdWorkspaceSpec,
    HealthCheckBudgetStatus, RemovedClerkTemplate, RequiredParamSource, RotationProgress, RotationRecord,
    RotationSpec, RotationStatus, TinybirdWorkspace, TinybirdWorkspaceSpec, WorkspaceHealthChecks,
    WorkspacePipeStatus, WorkspacePolicy, WorkspaceSpec, WorkspaceStatus,
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

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// Every CRD of the API group, in a stable order.
///
/// The optional fields of `spec` are not `nullable`: null means nothing in a spec, and a server
/// that publishes OpenAPI v2 drops the schema of a nullable field, so `kubectl explain` could not
/// show it and kubectl's validation could not check it. In `status` null is meaningful (the
/// operator's server-side apply clears a field by writing null), so it stays nullable there.
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt as _;
    let mut crds = vec![TenantAccess::crd(), TinybirdWorkspace::crd(), ClusterTinybirdWorkspace::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            let spec = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                .and_then(|root| root.properties.as_mut())
                .and_then(|properties| properties.get_mut("spec"));
            if let Some(spec) = spec {
                not_nullable(spec);
            }
        }
    }
    crds
}

fn not_nullable(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        not_nullable(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        not_nullable(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = schema.additional_properties.as_mut() {
        not_nullable(values);
    }
    for alternatives in [&mut schema.any_of, &mut schema.one_of, &mut schema.all_of] {
        for child in alternatives.iter_mut().flatten() {
            not_nullable(child);
        }
    }
}

/// File name of a CRD in `crds/`: `<plural>.<group>.yaml`.
#[must_use]
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}
