use std::process::ExitCode;

use kube::Resource as _;

use super::{CliError, parse_now, read_admin_token, read_input};
use crate::adapters::manifests::{Manifests, to_yaml_stream};
use crate::api::{TenantAccess, WorkspaceSpec};
use crate::core::reconcile::admit::{self, Refusal};
use crate::core::reconcile::decide::ObservedToken;
use crate::core::reconcile::plan::{self, TokenPlan};
use crate::core::signing_workspace::resolve;
use crate::core::validate::WorkspaceKind;

#[derive(Debug, clap::Args)]
pub(super) struct RenderArgs {
    /// Manifest files (`-` for stdin) holding TenantAccess resources and, optionally, the
    /// workspaces they reference. Other documents are ignored.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// File holding the workspace admin token (the signing key).
    #[arg(long, env = "TENANT_ACCESS_ADMIN_TOKEN_FILE")]
    admin_token_file: String,
    /// Sign as of this time (RFC 3339) instead of now, for reproducible output.
    #[arg(long)]
    now: Option<String>,
    /// Namespace of TenantAccess resources that do not name one.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Token revision to stamp on the Secret.
    #[arg(long, default_value_t = 1)]
    revision: i64,
    /// Labels of the TenantAccess's namespace, `key=value,...`, for policies whose required
    /// params come from namespace labels.
    #[arg(long, value_delimiter = ',')]
    namespace_labels: Vec<String>,
}

pub(super) fn run(args: &RenderArgs) -> Result<ExitCode, CliError> {
    let mut manifests = Manifests::default();
    for file in &args.files {
        manifests.parse(file, &read_input(file)?).map_err(|e| CliError::Input(e.to_string()))?;
    }
    if manifests.tenant_accesses.is_empty() {
        return Err(CliError::Input(format!(
            "no TenantAccess (apiVersion tenantaccess.dev/v1alpha1) in {}",
            args.files.join(", ")
        )));
    }
    let key = read_admin_token(&args.admin_token_file)?;
    let now = parse_now(args.now.as_deref())?;

    let mut objects: Vec<serde_json::Value> = Vec::new();
    for access in &manifests.tenant_accesses {
        let namespace = access.metadata.namespace.clone().unwrap_or_else(|| args.namespace.clone());
        let name = access.metadata.name.clone().unwrap_or_default();
        let label = format!("TenantAccess {namespace}/{name}");
        if name.is_empty() {
            return Err(CliError::Input("TenantAccess: metadata.name is missing".into()));
        }
        let refused = |refusal: Refusal| CliError::Input(format!("{label}: {}", refusal.message));
        let validated = admit::validate(&namespace, &name, &access.spec).map_err(refused)?;
        let workspace_spec = find_workspace(&manifests, &validated, args)?;
        let labels = namespace_labels(&args.namespace_labels)?;
        // The workspace as the controller resolves it; without the workspace in the input,
        // everything is derived from the admin token.
        let signer = resolve(workspace_spec.as_ref().unwrap_or(&WorkspaceSpec::default()), key.clone())
            .map_err(|e| admit::cannot_sign(&validated, e.reason(), &e.to_string()));
        let facts = admit::Facts {
            namespace: crate::core::policy::NamespaceFacts { name: &namespace, labels: Some(&labels) },
            labels_are_facts: true,
            workspace: workspace_spec.as_ref(),
        };
        let admitted =
            admit::admit(validated, facts, signer.as_ref().map_err(Clone::clone), now).map_err(refused)?;
        let (validated, workspace) = (admitted.access, admitted.signer);
        // The spec's warnings and the policy's (a Clerk template without a rate limit).
        for warning in &validated.warnings {
            eprintln!("warning: {label}: {warning}");
        }
        // Nothing observed: the plan of a first issuance, numbered --revision.
        let owner_uid = access.metadata.uid.clone().unwrap_or_default();
        let planned = plan::plan(&plan::Inputs {
            access: &validated,
            signer: workspace,
            owner_uid: &owner_uid,
            owner: owner_reference(access),
            secret: ObservedToken::Absent,
            secret_lacks: &|_| false,
            status_token: None,
            previous_conditions: &[],
            annotations: access.metadata.annotations.as_ref(),
            revision_floor: Some(args.revision.saturating_sub(1)),
            now,
        })
        .map_err(|e| CliError::Input(format!("{label}: {e}")))?;
        if let Some(TokenPlan::Issue(issued)) = &planned.token {
            objects.push(to_value(&issued.secret)?);
        }
        if let Some(clerk) = &planned.clerk {
            objects.push(to_value(&clerk.configmap)?);
        }
    }
    let yaml = to_yaml_stream(&objects).map_err(|e| CliError::Input(e.to_string()))?;
    print!("{yaml}");
    Ok(ExitCode::SUCCESS)
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<serde_json::Value, CliError> {
    serde_json::to_value(object).map_err(|e| CliError::Input(e.to_string()))
}

/// The controller's owner reference, when the manifest carries a uid (e.g. from `kubectl get -o yaml`).
fn owner_reference(
    access: &TenantAccess,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    access.controller_owner_ref(&())
}

/// The referenced workspace's spec from the manifests; without one (`None`), everything is
/// derived from the admin token, as for a workspace with only `adminTokenSecretRef`.
fn find_workspace(
    manifests: &Manifests,
    access: &crate::core::validate::ValidatedAccess,
    args: &RenderArgs,
) -> Result<Option<WorkspaceSpec>, CliError> {
    let wanted = &access.workspace_name;
    let found = match access.workspace_kind {
        WorkspaceKind::Namespaced => {
            let same_name: Vec<_> = manifests
                .workspaces
                .iter()
                .filter(|ws| ws.metadata.name.as_deref() == Some(wanted.as_str()))
                .collect();
            let in_namespace = same_name
                .iter()
                .find(|ws| ws.metadata.namespace.as_deref().unwrap_or(&args.namespace) == access.namespace);
            match (in_namespace, same_name.first()) {
                (Some(ws), _) => Some(ws.spec.workspace.clone()),
                (None, Some(other)) => {
                    return Err(CliError::Input(format!(
                        "TenantAccess {}/{}: spec.workspaceRef: TinybirdWorkspace {wanted:?} is in namespace {:?}; a TenantAccess may only use a TinybirdWorkspace of its own namespace (or a ClusterTinybirdWorkspace)",
                        access.namespace,
                        access.name,
                        other.metadata.namespace.as_deref().unwrap_or(&args.namespace)
                    )));
                }
                (None, None) => None,
            }
        }
        WorkspaceKind::Cluster => manifests
            .cluster_workspaces
            .iter()
            .find(|ws| ws.metadata.name.as_deref() == Some(wanted.as_str()))
            .map(|ws| ws.spec.workspace.clone()),
    };
    if found.is_none() {
        eprintln!(
            "note: {} {wanted:?} is not in the input: workspace id and API URL come from the admin token",
            access.workspace_kind.kind_name()
        );
    }
    Ok(found)
}

fn namespace_labels(pairs: &[String]) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    pairs
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| CliError::Input(format!("--namespace-labels: {pair:?} is not key=value")))
        })
        .collect()
}
