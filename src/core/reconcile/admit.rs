//! The admission stage: may this TenantAccess have a token from its workspace, and with what
//! access? validate -> admit the namespace -> the workspace can sign -> the workspace's policy
//! -> the token's size, as one pure function over facts. The controller reads the facts from
//! its caches, `tenant-access render` from manifests and files: both run this very sequence, so
//! `render` shows exactly what the controller admits.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::api::{TenantAccessSpec, WorkspaceSpec};
use crate::core::policy::NamespaceFacts;
use crate::core::selector;
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::{ValidatedAccess, WorkspaceKind, validate_tenant_access};
use crate::core::well_known::reason;

/// Why nothing is issued for a TenantAccess, and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Condition reason (`InvalidSpec`, `WorkspaceNotFound`, `PolicyViolation`, ...).
    pub reason: &'static str,
    /// What is wrong and how to fix it (never a token or key).
    pub message: String,
    /// `Some(why)` when the refusal withdraws access already given, so that what was issued is
    /// revoked: only a decision of the platform team read from synced facts (the namespace no
    /// longer admitted, the policy now forbidding the access). Never a state that may be
    /// transient or that a start-up shows (a workspace absent from a cache, an admin token that
    /// cannot be read or checked).
    pub revoke: Option<&'static str>,
    /// Whether trying again may help without a change of the spec.
    pub retry: Retry,
}

/// When a refused TenantAccess is looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Only once something changes (the spec, the workspace, the namespace): retrying cannot help.
    OnChange,
    /// With backoff: the cause may pass (a workspace not ready, facts not read yet).
    Backoff,
    /// After this long, when what is refused is out of the cluster's sight (a pipe edited at
    /// Tinybird) and must be looked at again.
    After(std::time::Duration),
}

impl Refusal {
    /// A refusal that revokes nothing.
    #[must_use]
    pub fn new(reason: &'static str, message: impl Into<String>, retry: Retry) -> Self {
        Self { reason, message: message.into(), revoke: None, retry }
    }
}

/// Why a revocation happens (for the messages that announce it).
pub mod revoke_why {
    /// The workspace no longer admits the namespace.
    pub const NAMESPACE: &str = "its namespace is no longer admitted by the workspace";
    /// The workspace's policy now forbids the access.
    pub const POLICY: &str = "it no longer complies with its workspace's policy";
    /// A granted pipe's SQL no longer filters by a pinned param, and the workspace enforces it.
    pub const PIPE_NOT_ISOLATED: &str =
        "a granted pipe's SQL does not filter by a param it pins, and its workspace enforces pipe isolation";
}

/// Validates a TenantAccess spec (step 1).
///
/// # Errors
/// An `InvalidSpec` refusal naming every problem.
pub fn validate(namespace: &str, name: &str, spec: &TenantAccessSpec) -> Result<ValidatedAccess, Refusal> {
    validate_tenant_access(namespace, name, spec).map_err(|invalid| {
        Refusal::new(
            reason::INVALID_SPEC,
            format!("{invalid}; nothing is issued until the spec is fixed"),
            Retry::OnChange,
        )
    })
}

/// What admission looks at besides the spec.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The TenantAccess's namespace: its name, and its labels (`None` when they cannot be read:
    /// a single-namespace install).
    pub namespace: NamespaceFacts<'a>,
    /// Whether the labels are facts (the namespace cache had its first list and holds the
    /// namespace): only then does a refusal read from them revoke.
    pub labels_are_facts: bool,
    /// The referenced workspace's spec (its policy, its allowedNamespaces); `None` when it is
    /// not known (render without the workspace in its input): no policy, and namespace
    /// admission is not checked.
    pub workspace: Option<&'a WorkspaceSpec>,
}

/// A TenantAccess admitted: its access with the policy applied, and the workspace that signs.
#[derive(Debug, Clone)]
pub struct Admitted<'a> {
    /// The access, required params injected and limits applied.
    pub access: ValidatedAccess,
    /// The signer.
    pub signer: &'a SigningWorkspace,
}

/// Steps 2 to 5: admits the namespace, checks the signer, applies the workspace's policy and
/// measures the token at `now`.
///
/// # Errors
/// The first [`Refusal`] met.
pub fn admit<'a>(
    validated: ValidatedAccess,
    facts: Facts<'_>,
    signer: Result<&'a SigningWorkspace, Refusal>,
    now: Timestamp,
) -> Result<Admitted<'a>, Refusal> {
    admit_namespace(&validated, facts)?;
    let signer = signer?;
    let access = apply_policy(validated, facts)?;
    // A token no HTTP server takes: refused like an invalid spec (retrying cannot help).
    crate::core::desired::check_token_size(&access, signer, now).map_err(|too_large| {
        Refusal::new(
            reason::TOKEN_TOO_LARGE,
            format!("{too_large}; nothing is issued until the spec is fixed"),
            Retry::OnChange,
        )
    })?;
    Ok(Admitted { access, signer })
}

/// Steps 2 and 4 without a signer: admits the namespace and applies the workspace's policy.
/// What the admission webhook checks at apply time (it never reads an admin token); the
/// controller runs the same two steps inside [`admit`].
///
/// # Errors
/// A `NamespaceNotAllowed` or `PolicyViolation` refusal.
pub fn admit_without_signer(
    validated: ValidatedAccess,
    facts: Facts<'_>,
) -> Result<ValidatedAccess, Refusal> {
    admit_namespace(&validated, facts)?;
    apply_policy(validated, facts)
}

/// Step 4: the workspace's policy, required params injected and limits applied.
fn apply_policy(validated: ValidatedAccess, facts: Facts<'_>) -> Result<ValidatedAccess, Refusal> {
    let policy = facts.workspace.and_then(|w| w.policy.as_ref());
    let workspace_name = validated.workspace_name.clone();
    crate::core::policy::apply(validated, policy, &workspace_name, facts.namespace).map_err(|violation| {
        Refusal {
            reason: reason::POLICY_VIOLATION,
            message: format!("refused by the workspace policy: {violation}"),
            revoke: facts.labels_are_facts.then_some(revoke_why::POLICY),
            // Decided on a namespace not yet seen: decide again once it is.
            retry: if facts.labels_are_facts { Retry::OnChange } else { Retry::Backoff },
        }
    })
}

/// Whether the workspace admits the TenantAccess's namespace: a ClusterTinybirdWorkspace's
/// spec.policy.allowedNamespaces on the namespace's labels (a TinybirdWorkspace admits its own
/// namespace). A refusal revokes when the labels are facts and the workspace definitely does
/// not admit the namespace (no allowedNamespaces, or labels that do not match); a selector that
/// cannot be evaluated refuses without revoking.
///
/// # Errors
/// A `NamespaceNotAllowed` refusal.
pub fn admit_namespace(validated: &ValidatedAccess, facts: Facts<'_>) -> Result<(), Refusal> {
    let Some(workspace) = facts.workspace.filter(|_| validated.workspace_kind == WorkspaceKind::Cluster)
    else {
        return Ok(());
    };
    let (name, namespace) = (&validated.workspace_name, &validated.namespace);
    let refuse = |message: String, definite: bool| {
        Err(Refusal {
            reason: reason::NAMESPACE_NOT_ALLOWED,
            message,
            revoke: (definite && facts.labels_are_facts).then_some(revoke_why::NAMESPACE),
            retry: Retry::Backoff,
        })
    };
    if workspace.policy.as_ref().and_then(|p| p.allowed_namespaces.as_ref()).is_none() {
        return refuse(
            format!(
                "ClusterTinybirdWorkspace {name} admits no namespace: its spec.policy.allowedNamespaces is not set"
            ),
            true,
        );
    }
    match cluster_workspace_admits(workspace, facts.namespace.labels) {
        Ok(true) => Ok(()),
        Ok(false) => refuse(
            format!(
                "ClusterTinybirdWorkspace {name} does not admit namespace {namespace}: its labels do not match spec.policy.allowedNamespaces"
            ),
            true,
        ),
        Err(error) => {
            refuse(format!("ClusterTinybirdWorkspace {name}: spec.policy.allowedNamespaces: {error}"), false)
        }
    }
}

/// Whether a ClusterTinybirdWorkspace admits a namespace with these labels (`None`: unknown,
/// taken as none): its `spec.policy.allowedNamespaces`, and no namespace without one (fail
/// closed).
///
/// # Errors
/// A selector that cannot be evaluated.
pub fn cluster_workspace_admits(
    workspace: &WorkspaceSpec,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, selector::InvalidSelector> {
    let Some(selector) = workspace.policy.as_ref().and_then(|p| p.allowed_namespaces.as_ref()) else {
        return Ok(false);
    };
    selector::matches(selector, labels.unwrap_or(&BTreeMap::new()))
}

/// A workspace that exists but cannot sign (`problem_reason`: its own condition reason), as seen
/// from a TenantAccess.
#[must_use]
pub fn cannot_sign(validated: &ValidatedAccess, problem_reason: &str, problem: &str) -> Refusal {
    Refusal::new(
        reason::WORKSPACE_NOT_READY,
        format!(
            "{} {} cannot sign ({problem_reason}): {problem}",
            validated.workspace_kind.kind_name(),
            validated.workspace_name,
        ),
        Retry::Backoff,
    )
}

#[cfg(test)]
mod tests;
