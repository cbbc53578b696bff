//! The controller's side of admission: the facts read from its caches (the workspace, its
//! loaded entry, the namespace's labels), handed to the pure [`crate::core::reconcile::admit`] stage
//! that `tenant-access render` runs too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::context::Context;
use super::error::Error;
use super::workspace_cache::{ClerkCredentials, WorkspaceEntry, WorkspaceKey};
use super::workspace_reconciler::{Workspace, refresh_entry, workspace_key};
use crate::api::TenantAccess;
use crate::core::policy::NamespaceFacts;
use crate::core::reconcile::admit::{self, Facts, Refusal, Retry};
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::{ValidatedAccess, WorkspaceKind};
use crate::core::well_known::reason;

/// A TenantAccess admitted by its workspace.
#[derive(Debug)]
pub struct Admission {
    /// Its access, the workspace's policy applied.
    pub validated: ValidatedAccess,
    /// The workspace that signs.
    pub signer: SigningWorkspace,
    /// The workspace's entry (its Clerk connection).
    pub entry: Arc<WorkspaceEntry>,
}

/// A refused TenantAccess, with the workspace's entry when one was loaded (its Clerk connection
/// deletes a pushed template when the refusal revokes).
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why.
    pub refusal: Refusal,
    /// The entry, if loaded.
    pub entry: Option<Arc<WorkspaceEntry>>,
}

impl Refused {
    /// The workspace's usable Clerk connection, if any.
    pub fn clerk(&self) -> Option<&ClerkCredentials> {
        self.entry.as_ref().and_then(|e| e.clerk.as_ref()).and_then(|c| c.as_ref().ok())
    }
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Self { refusal, entry: None }
    }
}

/// Validates the TenantAccess and admits it with the facts of the caches at `now`.
///
/// # Errors
/// Transient API errors while loading the workspace.
pub async fn admit(
    access: &TenantAccess,
    ctx: &Context,
    now: Timestamp,
) -> Result<Result<Admission, Refused>, Error> {
    let namespace = access.namespace().unwrap_or_default();
    let validated = match admit::validate(&namespace, &access.name_any(), &access.spec) {
        Ok(validated) => validated,
        Err(refusal) => return Ok(Err(refusal.into())),
    };
    for warning in &validated.warnings {
        tracing::debug!(%warning, "spec warning");
    }
    let seen = match workspace_seen(&validated, ctx).await? {
        Ok(seen) => seen,
        Err(refused) => return Ok(Err(refused)),
    };
    // A namespace the workspace does not admit is refused before the workspace is loaded.
    let entry = match &seen.verdict {
        Ok(entry) => entry.clone(),
        Err(refused) => return Ok(Err(refused.clone())),
    };
    let signer = entry
        .signer
        .as_ref()
        .map_err(|problem| admit::cannot_sign(&validated, problem.reason, &problem.message));
    match admit::admit(validated, seen.facts(), signer, now) {
        Ok(admitted) => {
            let signer = admitted.signer.clone();
            Ok(Ok(Admission { validated: admitted.access, signer, entry }))
        }
        Err(refusal) => Ok(Err(Refused { refusal, entry: Some(entry) })),
    }
}

/// The workspace's entry when the workspace exists and admits the namespace (for a deletion,
/// which needs the workspace's Clerk connection).
///
/// # Errors
/// Transient API errors while loading the workspace.
pub async fn admitted_entry(
    validated: &ValidatedAccess,
    ctx: &Context,
) -> Result<Option<Arc<WorkspaceEntry>>, Error> {
    Ok(match workspace_seen(validated, ctx).await? {
        Ok(seen) => seen.verdict.ok(),
        _ => None,
    })
}

/// What the caches show of a TenantAccess's workspace and namespace.
struct Seen {
    spec: crate::api::WorkspaceSpec,
    namespace: String,
    labels: Option<BTreeMap<String, String>>,
    labels_are_facts: bool,
    /// The loaded entry when the workspace admits the namespace; else the refusal, with the
    /// entry only when the refusal revokes (and then only if it could be loaded).
    verdict: Result<Arc<WorkspaceEntry>, Refused>,
}

impl Seen {
    fn facts(&self) -> Facts<'_> {
        Facts {
            namespace: NamespaceFacts { name: &self.namespace, labels: self.labels.as_ref() },
            labels_are_facts: self.labels_are_facts,
            workspace: Some(&self.spec),
        }
    }
}

fn not_found(message: String) -> Refusal {
    Refusal::new(reason::WORKSPACE_NOT_FOUND, message, Retry::Backoff)
}

/// Finds the workspace in the caches, reads the namespace's facts, admits the namespace and
/// loads the workspace's entry.
async fn workspace_seen(validated: &ValidatedAccess, ctx: &Context) -> Result<Result<Seen, Refused>, Error> {
    let namespace = &validated.namespace;
    let name = &validated.workspace_name;
    match validated.workspace_kind {
        WorkspaceKind::Namespaced => {
            let Some(workspace) = ctx.caches.workspaces.get(&ObjectRef::new(name).within(namespace)) else {
                return Ok(Err(not_found(format!(
                    "TinybirdWorkspace {namespace}/{name} does not exist: a TenantAccess can use a TinybirdWorkspace of its own namespace, or a ClusterTinybirdWorkspace (workspaceRef.kind)"
                ))
                .into()));
            };
            seen(workspace.as_ref(), validated, ctx).await.map(Ok)
        }
        WorkspaceKind::Cluster => {
            if !ctx.settings.cluster_wide {
                return Ok(Err(not_found(format!(
                    "this operator is installed for one namespace and cannot use ClusterTinybirdWorkspace {name}: use a TinybirdWorkspace in {namespace}, or install the operator cluster-wide"
                ))
                .into()));
            }
            let Some(workspace) = ctx.caches.cluster_workspaces.get(&ObjectRef::new(name)) else {
                return Ok(Err(not_found(format!("ClusterTinybirdWorkspace {name} does not exist")).into()));
            };
            seen(workspace.as_ref(), validated, ctx).await.map(Ok)
        }
    }
}

async fn seen<W: Workspace>(
    workspace: &W,
    validated: &ValidatedAccess,
    ctx: &Context,
) -> Result<Seen, Error> {
    let namespace = validated.namespace.clone();
    // Namespace labels are facts only once the namespace cache has its first list: a refusal
    // read from an unsynced cache (a restart) must not revoke anything.
    let (labels, labels_are_facts) = if ctx.settings.cluster_wide {
        let synced = namespace_facts_synced(ctx, &namespace).await;
        let labels = ctx
            .caches
            .namespaces
            .get(&ObjectRef::new(&namespace))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        (Some(labels), synced)
    } else {
        (None, true)
    };
    let spec = workspace.workspace_spec().clone();
    let facts = Facts {
        namespace: NamespaceFacts { name: &namespace, labels: labels.as_ref() },
        labels_are_facts,
        workspace: Some(&spec),
    };
    let verdict = match admit::admit_namespace(validated, facts) {
        Ok(()) => Ok(cached_or_load(workspace, ctx).await?),
        Err(refusal) => {
            let entry = match refusal.revoke {
                Some(_) => cached_or_load(workspace, ctx).await.ok(),
                None => None,
            };
            Err(Refused { refusal, entry })
        }
    };
    let seen = Seen { spec, namespace, labels, labels_are_facts, verdict };
    Ok(seen)
}

async fn cached_or_load<W: Workspace>(workspace: &W, ctx: &Context) -> Result<Arc<WorkspaceEntry>, Error> {
    let key: WorkspaceKey = workspace_key(workspace);
    match ctx.workspace_cache.current(&key, workspace.meta().generation) {
        Some(entry) => Ok(entry),
        None => refresh_entry(workspace, ctx).await,
    }
}

/// Whether the namespace cache has its first list (bounded wait) and holds this namespace: only
/// then is a refusal that reads namespace labels a fact rather than a start-up state.
async fn namespace_facts_synced(ctx: &Context, namespace: &str) -> bool {
    let listed =
        tokio::time::timeout(NAMESPACE_LIST_PATIENCE, ctx.caches.namespaces.wait_until_ready()).await;
    matches!(listed, Ok(Ok(()))) && ctx.caches.namespaces.get(&ObjectRef::new(namespace)).is_some()
}

/// How long a reconcile waits for the first list of namespaces before deciding on their labels.
const NAMESPACE_LIST_PATIENCE: Duration = Duration::from_secs(10);
