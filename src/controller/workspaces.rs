//! The workspace reconciler (both kinds): load and check the admin token, cache it for the
//! TenantAccess reconciler, and report `Ready` with a precise reason.

use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::error::Error;
use super::keys::{WorkspaceEntry, WorkspaceKey, load};
use crate::api::{ClusterTinybirdWorkspace, TinybirdWorkspace, WorkspaceSpec, WorkspaceStatus};
use crate::conditions::{DesiredCondition, set_condition};
use crate::names::{FIELD_MANAGER, condition, reason};
use crate::validate::WorkspaceKind;

/// What the reconciler needs of either workspace kind.
pub trait Workspace:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static
{
    /// The kind.
    const KIND: WorkspaceKind;
    /// The spec.
    fn workspace_spec(&self) -> &WorkspaceSpec;
    /// The status.
    fn workspace_status(&self) -> Option<&WorkspaceStatus>;
    /// The API to write this object's status through.
    fn own_api(&self, client: kube::Client) -> Api<Self>;
}

impl Workspace for TinybirdWorkspace {
    const KIND: WorkspaceKind = WorkspaceKind::Namespaced;
    fn workspace_spec(&self) -> &WorkspaceSpec {
        &self.spec.workspace
    }
    fn workspace_status(&self) -> Option<&WorkspaceStatus> {
        self.status.as_ref()
    }
    fn own_api(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl Workspace for ClusterTinybirdWorkspace {
    const KIND: WorkspaceKind = WorkspaceKind::Cluster;
    fn workspace_spec(&self) -> &WorkspaceSpec {
        &self.spec.workspace
    }
    fn workspace_status(&self) -> Option<&WorkspaceStatus> {
        self.status.as_ref()
    }
    fn own_api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

/// The cache key of a workspace.
#[must_use]
pub fn workspace_key<W: Workspace>(workspace: &W) -> WorkspaceKey {
    WorkspaceKey {
        kind: W::KIND,
        namespace: workspace.namespace().unwrap_or_default(),
        name: workspace.name_any(),
    }
}

/// Namespace of a workspace's admin-token (and Clerk key) Secrets.
#[must_use]
pub fn secret_namespace<W: Workspace>(workspace: &W, ctx: &Context) -> String {
    match W::KIND {
        WorkspaceKind::Namespaced => workspace.namespace().unwrap_or_default(),
        WorkspaceKind::Cluster => ctx.settings.cluster_resource_namespace.clone(),
    }
}

/// Loads a workspace's key (fresh from the API) and caches it.
///
/// # Errors
/// Transient API errors.
pub async fn refresh_entry<W: Workspace>(workspace: &W, ctx: &Context) -> Result<Arc<WorkspaceEntry>, Error> {
    let namespace = secret_namespace(workspace, ctx);
    let secrets = Api::namespaced(ctx.client.clone(), &namespace);
    let entry = load(secrets, &namespace, workspace.workspace_spec(), workspace.meta().generation)
        .await
        .map_err(Error::ReadAdminSecret)?;
    ctx.keys.observe_secret(entry.secret.clone(), entry.secret_resource_version.clone());
    Ok(ctx.keys.insert(workspace_key(workspace), entry))
}

/// Reconciles one workspace.
///
/// # Errors
/// Transient API errors (retried with backoff).
pub async fn reconcile<W: Workspace>(workspace: Arc<W>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", kind = W::KIND.kind_name(), name = %workspace.name_any());
    tracing::Instrument::instrument(reconcile_inner(workspace, ctx), span).await
}

async fn reconcile_inner<W: Workspace>(workspace: Arc<W>, ctx: Arc<Context>) -> Result<Action, Error> {
    let entry = refresh_entry(workspace.as_ref(), &ctx).await?;
    let now = ctx.now();
    let previous = workspace.workspace_status().cloned().unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = workspace.meta().generation;
    let ready = match &entry.signer {
        Ok(signer) => {
            status.workspace_id = Some(signer.workspace_id.clone());
            status.api_url = Some(signer.api_url.clone());
            status.region.clone_from(&signer.region);
            status.signing_key_fingerprint = Some(signer.signing_key_fingerprint.clone());
            DesiredCondition::holds(
                condition::READY,
                reason::READY,
                format!(
                    "admin token of workspace {} loaded (key {})",
                    signer.workspace_id, signer.signing_key_fingerprint
                ),
            )
        }
        Err(problem) => {
            // Fail closed: no fingerprint means no key; dependents stop signing.
            status.signing_key_fingerprint = None;
            DesiredCondition::fails(condition::READY, problem.reason, problem.message.clone())
        }
    };
    let became_unready = entry.signer.is_err()
        && crate::conditions::find(&previous.conditions, condition::READY)
            .is_none_or(|c| c.status != "False" || c.reason != ready.reason);
    let rotated = matches!((&previous.signing_key_fingerprint, &status.signing_key_fingerprint), (Some(old), Some(new)) if old != new);
    set_condition(&mut status.conditions, ready, workspace.meta().generation, now);
    if status != previous {
        patch_status(workspace.as_ref(), &ctx, &status).await?;
    }
    if rotated {
        ctx.publish(
            workspace.as_ref(),
            EventType::Normal,
            "KeyRotated",
            "LoadAdminToken",
            &format!(
                "admin token changed (key {} -> {}): re-signing every dependent token",
                previous.signing_key_fingerprint.unwrap_or_default(),
                status.signing_key_fingerprint.unwrap_or_default()
            ),
        )
        .await;
    }
    if became_unready && let Err(problem) = &entry.signer {
        ctx.publish(
            workspace.as_ref(),
            EventType::Warning,
            problem.reason,
            "LoadAdminToken",
            &problem.message,
        )
        .await;
    }
    Ok(Action::requeue(ctx.settings.resync))
}

async fn patch_status<W: Workspace>(
    workspace: &W,
    ctx: &Context,
    status: &WorkspaceStatus,
) -> Result<(), Error> {
    let api = workspace.own_api(ctx.client.clone());
    let patch = serde_json::json!({
        "apiVersion": W::api_version(&()),
        "kind": W::kind(&()),
        "status": status,
    });
    api.patch_status(
        &workspace.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::WriteStatus)?;
    Ok(())
}

/// Backoff on transient errors.
pub fn error_policy<W: Workspace>(workspace: Arc<W>, error: &Error, ctx: Arc<Context>) -> Action {
    let (attempts, delay) = ctx.record_failure(workspace.as_ref());
    tracing::warn!(kind = W::KIND.kind_name(), name = %workspace.name_any(), attempts, error = %error, "workspace reconcile failed");
    Action::requeue(delay)
}
