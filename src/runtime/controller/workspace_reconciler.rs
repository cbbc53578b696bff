//! The workspace reconciler (both kinds): load and check the admin token, cache it for the
//! TenantAccess reconciler, and report `Ready` with a precise reason.

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::events::EventType;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::error::Error;
use super::workspace_cache::{WorkspaceEntry, WorkspaceKey, WorkspaceProblem, load};
use crate::api::{ClusterTinybirdWorkspace, TinybirdWorkspace, WorkspaceSpec, WorkspaceStatus};
use crate::core::conditions::{DesiredCondition, set_condition};
use crate::core::key_refusal::{KeyAnswer, KeyVerdict, REFUSAL_GRACE, judge};
use crate::core::validate::WorkspaceKind;
use crate::core::well_known::{FIELD_MANAGER, condition, reason};

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
    let mut entry = load(
        secrets,
        &namespace,
        &workspace_key(workspace),
        workspace.workspace_spec(),
        workspace.meta().generation,
    )
    .await
    .map_err(Error::ReadAdminSecret)?;
    if let Ok(signer) = &entry.signer
        && ctx.workspace_cache.is_refused(&signer.signing_key_fingerprint)
    {
        entry.signer = Err(unauthorized_problem(&signer.signing_key_fingerprint));
    }
    for (secret, version) in &entry.secrets {
        ctx.workspace_cache.observe_secret(secret.clone(), version.clone());
    }
    Ok(ctx.workspace_cache.insert(workspace_key(workspace), entry))
}

fn unauthorized_problem(fingerprint: &str) -> WorkspaceProblem {
    WorkspaceProblem {
        reason: reason::UNAUTHORIZED,
        message: format!(
            "Tinybird refused the admin token (key {fingerprint}) at GET /v1/workspace: it was refreshed or revoked; put the current admin token in the Secret"
        ),
    }
}

/// How long until an admin-token check that Tinybird did not answer is tried again.
const UNANSWERED_CHECK_RETRY: Duration = Duration::from_secs(60);

/// Checks the key with Tinybird once when it is first loaded or changes (so that a key Tinybird
/// refuses never reports Ready), then every `verifyInterval` if set, when a probe suspected the
/// key, or when a refusal awaits confirmation. Returns when the next check is due. A refusal of
/// a key Tinybird accepted before is the verdict only once confirmed
/// ([`crate::core::key_refusal`]): a rotation in progress is not an alarm. A check Tinybird does
/// not answer keeps the last verdict (unreachable is not refused) and is tried again.
async fn verify_if_due<W: Workspace>(
    workspace: &W,
    entry: &mut Arc<WorkspaceEntry>,
    ctx: &Context,
) -> Result<Option<Duration>, WorkspaceProblem> {
    let key = workspace_key(workspace);
    let pending = ctx.workspace_cache.pending_refusal(&key);
    let forced = ctx.admin_checks.take_forced(&key) || pending.is_some();
    let interval = crate::core::signing_workspace::verify_interval(workspace.workspace_spec())
        .map_err(|message| WorkspaceProblem { reason: reason::INVALID_SPEC, message })?;
    let Ok(signer) = &entry.signer else { return Ok(None) };
    let fingerprint = &signer.signing_key_fingerprint;
    let now = ctx.now();
    let accepted_before = ctx.admin_checks.answered(&key, fingerprint);
    if !forced && accepted_before {
        if interval.is_zero() {
            return Ok(None);
        }
        if let Some(next) = ctx.admin_checks.due_in(&key, fingerprint, interval, now) {
            return Ok(Some(next));
        }
    }
    let result =
        crate::adapters::tinybird::verify_admin_token(&ctx.apis.tinybird, &signer.api_url, &signer.key).await;
    match result {
        Ok(info) if info.id != signer.workspace_id => {
            let problem = WorkspaceProblem {
                reason: reason::WORKSPACE_MISMATCH,
                message: format!(
                    "Tinybird says the admin token belongs to workspace {:?}, the token itself says {:?}",
                    info.id, signer.workspace_id
                ),
            };
            Err(problem)
        }
        Ok(_) => {
            ctx.admin_checks.record(key.clone(), fingerprint, now);
            ctx.workspace_cache.set_pending_refusal(&key, None);
            ctx.workspace_cache.set_refused(fingerprint, false);
            Ok((!interval.is_zero()).then_some(interval))
        }
        Err(crate::adapters::tinybird::VerifyError::Unauthorized { .. }) => {
            // A key Tinybird never accepted is refused at once; one it accepted may be a
            // rotation in progress (the new key reaches the Secret within seconds).
            if accepted_before {
                let verdict = judge(KeyAnswer::Refused, fingerprint, pending.as_ref(), now, REFUSAL_GRACE);
                if let KeyVerdict::Pending { pending, recheck_in } = verdict {
                    tracing::info!(key = %fingerprint, ?recheck_in, "Tinybird refused the admin token; not a verdict yet (a rotation writes the new one to the Secret within seconds): checking again");
                    ctx.workspace_cache.set_pending_refusal(&key, Some(pending));
                    return Ok(Some(recheck_in));
                }
            }
            ctx.workspace_cache.set_pending_refusal(&key, None);
            ctx.workspace_cache.set_refused(fingerprint, true);
            let problem = unauthorized_problem(fingerprint);
            let mut downgraded = entry.as_ref().clone();
            downgraded.signer = Err(problem.clone());
            *entry = ctx.workspace_cache.insert(key, downgraded);
            Err(problem)
        }
        Err(error) => {
            tracing::warn!(error = %error, "admin token check failed (Tinybird did not answer); keeping the last verdict and trying again");
            let retry = if interval.is_zero() {
                UNANSWERED_CHECK_RETRY
            } else {
                interval.min(UNANSWERED_CHECK_RETRY)
            };
            Ok(Some(retry))
        }
    }
}

/// Reconciles one workspace.
///
/// # Errors
/// Transient API errors (retried with backoff).
pub async fn reconcile<W: Workspace>(workspace: Arc<W>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", kind = W::KIND.kind_name(), object = %workspace.name_any());
    let started = std::time::Instant::now();
    let result = tracing::Instrument::instrument(reconcile_inner(workspace, ctx.clone()), span).await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(error) => error.category(),
    };
    ctx.metrics.reconciled(W::KIND.kind_name(), outcome, started.elapsed());
    result
}

async fn reconcile_inner<W: Workspace>(workspace: Arc<W>, ctx: Arc<Context>) -> Result<Action, Error> {
    if W::KIND == WorkspaceKind::Namespaced
        && !ctx.settings.serves(&workspace.namespace().unwrap_or_default())
    {
        return Ok(Action::await_change());
    }
    let mut entry = refresh_entry(workspace.as_ref(), &ctx).await?;
    let rotation = super::rotation::drive(workspace.as_ref(), &entry, &ctx).await?;
    if rotation.landed {
        // A refreshed token is in the Secret: sign with it from now on.
        entry = refresh_entry(workspace.as_ref(), &ctx).await?;
    }
    let previous_fingerprint =
        workspace.workspace_status().and_then(|s| s.signing_key_fingerprint.as_deref());
    let rotated_now = entry
        .signer
        .as_ref()
        .is_ok_and(|signer| previous_fingerprint.is_some_and(|old| old != signer.signing_key_fingerprint));
    // A new admin token: its status comes first (it makes every dependent re-sign), the check
    // with Tinybird right after, in the next pass, so that a slow Tinybird never holds back the
    // re-signing. A key Tinybird then refuses stops the signing as always (fail closed); the
    // tokens signed with it meanwhile are worthless to anyone, as Tinybird refuses them too.
    let verification = if rotated_now && workspace.workspace_spec().verify_interval.is_some() {
        Ok(Some(Duration::ZERO))
    } else {
        verify_if_due(workspace.as_ref(), &mut entry, &ctx).await
    };
    let next_verification = verification.as_ref().ok().copied().flatten();
    if let Err(problem) = verification
        && entry.signer.is_ok()
    {
        let mut downgraded = entry.as_ref().clone();
        downgraded.signer = Err(problem);
        entry = ctx.workspace_cache.insert(workspace_key(workspace.as_ref()), downgraded);
    }
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
            // When its TenantAccesses' health checks want more than the budget: how much, and
            // what was cut (`budget_status` asks for this reconcile when it changes). Kept as it
            // was while no probe is registered yet (just after a start), so a restart writes
            // nothing.
            // The same for the verdicts of its pipes (`status.pipes`).
            super::budget_status::Wanted::of(&ctx, (&signer.api_url, &signer.workspace_id), None, &previous)
                .apply(&mut status);
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
        && crate::core::conditions::find(&previous.conditions, condition::READY)
            .is_none_or(|c| c.status != "False" || c.reason != ready.reason);
    let rotated = matches!((&previous.signing_key_fingerprint, &status.signing_key_fingerprint), (Some(old), Some(new)) if old != new);
    if rotated && let Some(boost) = &ctx.rotation_boost {
        // The dependents re-sign once this status lands: lifted before they start writing.
        boost.lift();
    }
    set_condition(&mut status.conditions, ready, workspace.meta().generation, now);
    let rotation_status = rotation.status.clone().unwrap_or_default();
    if let Some(desired) =
        crate::core::rotation::condition(&rotation_status, rotation.schedule_problem.as_deref())
    {
        set_condition(&mut status.conditions, desired, workspace.meta().generation, now);
    }
    if status != previous {
        patch_status(workspace.as_ref(), &ctx, &status).await?;
    }
    if rotated {
        ctx.events.publish(
            workspace.as_ref(),
            EventType::Normal,
            "KeyRotated",
            "LoadAdminToken",
            &format!(
                "admin token changed (key {} -> {}): re-signing every dependent token",
                previous.signing_key_fingerprint.unwrap_or_default(),
                status.signing_key_fingerprint.unwrap_or_default()
            ),
        );
    }
    if became_unready && let Err(problem) = &entry.signer {
        ctx.events.publish(
            workspace.as_ref(),
            EventType::Warning,
            problem.reason,
            "LoadAdminToken",
            &problem.message,
        );
    }
    // A pass that got this far succeeded: the next failure backs off from the start again.
    ctx.retries.succeeded(workspace.as_ref());
    let next = [next_verification, rotation.requeue].into_iter().flatten().min();
    Ok(Action::requeue(next.map_or(ctx.settings.resync, |next| next.min(ctx.settings.resync))))
}

async fn patch_status<W: Workspace>(
    workspace: &W,
    ctx: &Context,
    status: &WorkspaceStatus,
) -> Result<(), Error> {
    let api = workspace.own_api(ctx.client.clone());
    // `status.rotation` is written apart, conditionally (`rotation.rs`): never applied here.
    // `status.clerkTemplates` too (`clerk_sweep.rs`).
    let status = WorkspaceStatus { rotation: None, clerk_templates: None, ..status.clone() };
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

/// Backoff on transient errors. (The signature is the one `Controller::run` expects.)
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy<W: Workspace>(workspace: Arc<W>, error: &Error, ctx: Arc<Context>) -> Action {
    let (attempts, delay) = ctx.retries.failed(workspace.as_ref());
    if error.is_api_unavailable() {
        let name = workspace.name_any();
        ctx.retries.outage.wait_for_api(match W::KIND {
            WorkspaceKind::Namespaced => super::api_recovery::Waiting::Workspace {
                namespace: workspace.namespace().unwrap_or_default(),
                name,
            },
            WorkspaceKind::Cluster => super::api_recovery::Waiting::ClusterWorkspace { name },
        });
    }
    tracing::warn!(kind = W::KIND.kind_name(), name = %workspace.name_any(), attempts, error = %error, "workspace reconcile failed");
    Action::requeue(delay)
}
