//! The rotation step of a workspace reconcile: takes up a rotation request (the
//! `tenantaccess.dev/rotate` annotation, or the schedule), refreshes the admin token at
//! Tinybird, hands the new token to [`KeyCustody`] until it is in the admin-token Secret, and
//! follows the dependents onto the new key. The decisions are in [`crate::core::rotation`].
//!
//! Every write of `status.rotation` is a merge patch conditional on the workspace's
//! resourceVersion: the `Refreshing` record lands before the refresh is sent, and only one
//! process (or pass) can land it for one request, so a request is refreshed at most once.

use std::fmt::Write as _;
use std::time::Duration;

use kube::ResourceExt as _;
use kube::api::{Patch, PatchParams};

use super::context::Context;
use super::error::Error;
use super::key_custody::{Custody, SecretTarget};
use super::workspace_cache::WorkspaceEntry;
use super::workspace_reconciler::{Workspace, secret_namespace, workspace_key};
use crate::adapters::events::EventType;
use crate::adapters::tinybird::{RefreshError, VerifyError, refresh_admin_token, verify_admin_token};
use crate::api::{RotationProgress, RotationStatus};
use crate::core::rotation::{self, Recovery, Step, phase};
use crate::core::validate::WorkspaceKind;
use crate::core::well_known::{ANNOTATION_ROTATE, FIELD_MANAGER, reason};

/// How long a reconcile waits for a held token to land before it looks again later.
const LANDING_WAIT: Duration = Duration::from_secs(5);
/// How often the dependents are counted while they are re-signed.
const TRACK_EVERY: Duration = Duration::from_secs(1);
/// After this long re-signing, the dependents are counted less often (some may never get there:
/// a TenantAccess refused meanwhile).
const TRACK_PATIENCE: Duration = Duration::from_secs(600);
/// How soon a `Refreshing` record is looked at again while its outcome is unknown.
const RECHECK: Duration = Duration::from_secs(2);
/// How soon a Clerk push held back by a rotation is looked at again, should the workspace's
/// status not lift the hold first.
pub(super) const CLERK_HOLD_RECHECK: Duration = Duration::from_secs(10);
/// The admin token's name, usable in the refresh URL when the token carries no id.
const ADMIN_TOKEN_NAME: &str = "admin token";

/// What the rotation step found and did.
#[derive(Debug, Default)]
pub(super) struct RotationPass {
    /// The rotation status as last written or read.
    pub status: Option<RotationStatus>,
    /// `spec.rotation` cannot be used: why.
    pub schedule_problem: Option<String>,
    /// A refreshed token landed in the Secret in this pass: the entry must be loaded again.
    pub landed: bool,
    /// When to look again.
    pub requeue: Option<Duration>,
}

/// The rotation status writer of one reconcile: each write is conditional on the
/// resourceVersion the previous one left.
struct Writer<'a, W: Workspace> {
    workspace: &'a W,
    ctx: &'a Context,
    resource_version: Option<String>,
}

impl<W: Workspace> Writer<'_, W> {
    async fn write(&mut self, status: &RotationStatus) -> Result<(), Error> {
        let api = self.workspace.own_api(self.ctx.client.clone());
        // A merge patch keeps what it does not name: every field is named (null when unset).
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": self.resource_version},
            "status": {"rotation": {
                "handledRequest": status.handled_request,
                "interval": status.interval,
                "nextRotationTime": status.next_rotation_time,
                "history": status.history,
            }},
        });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        let written = api
            .patch_status(&self.workspace.name_any(), &params, &Patch::Merge(&patch))
            .await
            .map_err(Error::WriteStatus)?;
        self.resource_version.clone_from(&written.meta().resource_version);
        Ok(())
    }
}

/// Runs the rotation step of a workspace reconcile.
///
/// # Errors
/// Failed status writes (a conflict included: the pass is retried with the fresh object).
pub(super) async fn drive<W: Workspace>(
    workspace: &W,
    entry: &WorkspaceEntry,
    ctx: &Context,
) -> Result<RotationPass, Error> {
    let spec = workspace.workspace_spec();
    let (interval, schedule_problem) = match rotation::interval(spec.rotation.as_ref()) {
        Ok(interval) => (interval, None),
        Err(problem) => (None, Some(problem)),
    };
    let interval_text = spec.rotation.as_ref().and_then(|r| r.interval.as_deref()).unwrap_or_default();
    let schedule = interval.map(|every| (interval_text, every));
    let annotation = workspace.annotations().get(ANNOTATION_ROTATE).map(String::as_str);
    let now = ctx.now();
    let mut writer = Writer { workspace, ctx, resource_version: workspace.meta().resource_version.clone() };
    let mut pass = RotationPass { schedule_problem, ..RotationPass::default() };

    let Some(mut status) = workspace.workspace_status().and_then(|s| s.rotation.clone()) else {
        let baseline = rotation::baseline(annotation, schedule, now);
        writer.write(&baseline).await?;
        pass.requeue = due_in(&baseline, now);
        pass.status = Some(baseline);
        return Ok(pass);
    };
    if rotation::reschedule(&mut status, schedule, now) {
        writer.write(&status).await?;
    }
    let step = rotation::next_step(annotation, &status, now);
    let (status, requeue, landed) = match step {
        Step::Idle => (status, None, false),
        Step::Start { request, trigger } => {
            let started = start(&mut writer, entry, status, (&request, trigger), interval).await?;
            (started.0, Some(started.1), started.2)
        }
        Step::Refreshing => refreshing(&mut writer, entry, status).await?,
        Step::Lost => {
            let (status, requeue) = lost(&mut writer, entry, status).await?;
            (status, requeue, false)
        }
        Step::Track => {
            let (status, requeue) = track(&mut writer, status, entry.admin_secret_manager.as_deref()).await?;
            (status, Some(requeue), false)
        }
    };
    pass.requeue = [requeue, due_in(&status, ctx.now())].into_iter().flatten().min();
    pass.landed = landed;
    pass.status = Some(status);
    Ok(pass)
}

/// Time until the next scheduled rotation.
fn due_in(status: &RotationStatus, now: jiff::Timestamp) -> Option<Duration> {
    let due = status.next_rotation_time.as_ref()?;
    Some(Duration::try_from(due.0.duration_since(now)).unwrap_or_default())
}

/// Takes up a request: the `Refreshing` record first, then the refresh, then custody of the
/// new token. Returns the status, when to look again, and whether the token landed.
async fn start<W: Workspace>(
    writer: &mut Writer<'_, W>,
    entry: &WorkspaceEntry,
    status: RotationStatus,
    (request, trigger): (&str, &'static str),
    interval: Option<Duration>,
) -> Result<(RotationStatus, Duration, bool), Error> {
    let ctx = writer.ctx;
    let workspace = writer.workspace;
    let now = ctx.now();
    let signer = match &entry.signer {
        Ok(signer) => signer,
        Err(problem) => {
            // Refreshing needs an admin token Tinybird accepts: there is none to send.
            let marked = rotation::started(&status, (request, trigger), None, interval, now);
            let message = format!(
                "not refreshed: the workspace has no usable admin token ({}: {}); a refresh needs one. Fix that, then set a new value",
                problem.reason, problem.message
            );
            let ended = rotation::ended(&marked, phase::NOT_REFRESHED, message);
            writer.write(&ended).await?;
            finished(workspace, ctx, &ended);
            return Ok((ended, ctx.settings.resync, false));
        }
    };
    let marked =
        rotation::started(&status, (request, trigger), Some(&signer.signing_key_fingerprint), interval, now);
    writer.write(&marked).await?;
    ctx.events.publish(
        workspace,
        EventType::Normal,
        "RotationStarted",
        "RotateAdminToken",
        &format!(
            "refreshing the admin token (key {}) at Tinybird for rotation {request} ({trigger}): every token of the workspace is refused until it is re-signed",
            signer.signing_key_fingerprint
        ),
    );
    let token_ref = signer
        .key
        .decode()
        .ok()
        .and_then(|facts| facts.token_id)
        .unwrap_or_else(|| ADMIN_TOKEN_NAME.to_owned());
    match refresh_admin_token(&ctx.apis.tinybird, &signer.api_url, &signer.key, &token_ref).await {
        Ok(token) => {
            let target = secret_target(workspace, ctx);
            let key = workspace_key(workspace);
            tracing::info!(request, old = %signer.signing_key_fingerprint, new = %token.fingerprint(), "Tinybird refreshed the admin token: writing it into its Secret");
            if let Some(manager) = &entry.admin_secret_manager {
                ctx.events.publish(
                    workspace,
                    EventType::Warning,
                    "AdminTokenSecretManagedElsewhere",
                    "RotateAdminToken",
                    &format!("Secret {target}: {}", crate::core::secret_writers::rotation_note(manager)),
                );
            }
            ctx.custody.hold(
                ctx.client.clone(),
                (key.clone(), request.to_owned()),
                target,
                token,
                ctx.clock(),
            );
            if ctx.custody.wait_landed(&key, LANDING_WAIT).await {
                let (status, landed) = take_landed(writer, marked).await?;
                return Ok((status, TRACK_EVERY, landed));
            }
            Ok((marked, TRACK_EVERY, false))
        }
        Err(error @ (RefreshError::Refused { .. } | RefreshError::NotSent(_))) => {
            let ended = rotation::ended(
                &marked,
                phase::NOT_REFRESHED,
                format!("{error}: nothing changed; set a new value to try again"),
            );
            writer.write(&ended).await?;
            finished(workspace, ctx, &ended);
            Ok((ended, ctx.settings.resync, false))
        }
        Err(error @ RefreshError::Unanswered(_)) => {
            // Maybe refreshed, maybe not: the Secret's token tells (never a second refresh).
            tracing::warn!(request, error = %error, "the refresh got no answer: checking the Secret's token with Tinybird");
            Ok((marked, RECHECK, false))
        }
    }
}

/// Where the workspace's admin token lives.
fn secret_target<W: Workspace>(workspace: &W, ctx: &Context) -> SecretTarget {
    let reference = &workspace.workspace_spec().admin_token_secret_ref;
    SecretTarget {
        namespace: secret_namespace(workspace, ctx),
        name: reference.name.clone(),
        key: reference.key_or_default().to_owned(),
        allowed_as: match W::KIND {
            WorkspaceKind::Namespaced => workspace.name_any(),
            WorkspaceKind::Cluster => {
                format!("{}/{}", crate::api::KIND_CLUSTER_WORKSPACE, workspace.name_any())
            }
        },
    }
}

/// A `Refreshing` record: the token this process holds lands, or (held by nobody) the
/// Secret's token is judged with Tinybird. Never a second refresh.
async fn refreshing<W: Workspace>(
    writer: &mut Writer<'_, W>,
    entry: &WorkspaceEntry,
    status: RotationStatus,
) -> Result<(RotationStatus, Option<Duration>, bool), Error> {
    let ctx = writer.ctx;
    let key = workspace_key(writer.workspace);
    let request = status.history.first().map(|r| r.request.clone()).unwrap_or_default();
    match ctx.custody.state(&key) {
        Some(Custody::Holding { request: held }) if held == request => {
            return Ok((status, Some(TRACK_EVERY), false));
        }
        Some(Custody::Landed { request: held, .. }) if held == request => {
            let (status, landed) = take_landed(writer, status).await?;
            return Ok((status, Some(TRACK_EVERY), landed));
        }
        _ => {}
    }
    let accepted = judge_secret(entry, ctx).await;
    let (Some((accepted, fingerprint)), Some(record)) = (accepted, status.history.first()) else {
        tracing::warn!(
            request,
            "a rotation was recorded as refreshing and its outcome is not known yet (Tinybird or the Secret unavailable): checking again"
        );
        return Ok((status, Some(RECHECK), false));
    };
    let secret = secret_target(writer.workspace, ctx).to_string();
    let next = match rotation::recovered(record, &fingerprint, accepted) {
        Recovery::Landed => {
            let at = ctx.now();
            let mut landed = rotation::landed(&status, &fingerprint, at);
            if let Some(record) = landed.history.first_mut() {
                record.refreshed_at = None;
                record.message = Some("the new admin token was found in the Secret after a restart: re-signing every dependent token and Clerk template".to_owned());
            }
            landed
        }
        Recovery::NotRefreshed => rotation::ended(
            &status,
            phase::NOT_REFRESHED,
            format!(
                "Tinybird still accepts the admin token in Secret {secret}: the refresh did not happen (the operator stopped or got no answer); nothing changed; set a new value to try again"
            ),
        ),
        Recovery::KeyLost => {
            rotation::ended(&status, phase::KEY_LOST, rotation::key_lost_message(&request, &secret))
        }
    };
    writer.write(&next).await?;
    finished(writer.workspace, ctx, &next);
    let tracking = next.history.first().is_some_and(|r| r.phase == phase::RESIGNING);
    if tracking && let Some(boost) = &ctx.rotation_boost {
        // Every tenant holds a dead token until its Secret is re-signed: at the API server's pace.
        boost.lift();
    }
    Ok((next, tracking.then_some(TRACK_EVERY), false))
}

/// Whether Tinybird accepts the Secret's token, and its fingerprint; `None` when that cannot be
/// told now (Tinybird unavailable, the Secret unreadable or missing).
async fn judge_secret(entry: &WorkspaceEntry, ctx: &Context) -> Option<(bool, String)> {
    match &entry.signer {
        Ok(signer) => match verify_admin_token(&ctx.apis.tinybird, &signer.api_url, &signer.key).await {
            Ok(_) => Some((true, signer.signing_key_fingerprint.clone())),
            Err(VerifyError::Unauthorized { .. }) => Some((false, signer.signing_key_fingerprint.clone())),
            Err(VerifyError::Unavailable(_)) => None,
        },
        Err(problem) if problem.reason == reason::UNAUTHORIZED => Some((false, String::new())),
        Err(_) => None,
    }
}

/// A `KeyLost` record: once the Secret holds another token Tinybird accepts (put there by the
/// runbook, or a write that landed late), the dependents follow it as after any rotation.
async fn lost<W: Workspace>(
    writer: &mut Writer<'_, W>,
    entry: &WorkspaceEntry,
    status: RotationStatus,
) -> Result<(RotationStatus, Option<Duration>), Error> {
    let Some(record) = status.history.first() else { return Ok((status, None)) };
    let changed = entry.signer.as_ref().is_ok_and(|signer| {
        record.old_key_fingerprint.as_deref() != Some(signer.signing_key_fingerprint.as_str())
    });
    if !changed {
        return Ok((status, None));
    }
    let Some((accepted, fingerprint)) = judge_secret(entry, writer.ctx).await else {
        return Ok((status, Some(RECHECK)));
    };
    if !rotation::found_again(record, &fingerprint, accepted) {
        return Ok((status, None));
    }
    let mut found = rotation::landed(&status, &fingerprint, writer.ctx.now());
    if let Some(record) = found.history.first_mut() {
        record.message = Some("a new admin token Tinybird accepts is in the Secret (the lost key was replaced): re-signing every dependent token and Clerk template".to_owned());
    }
    writer.write(&found).await?;
    Ok((found, Some(TRACK_EVERY)))
}

/// The held token is in the Secret: the record says `Resigning`, and the custody forgets it.
async fn take_landed<W: Workspace>(
    writer: &mut Writer<'_, W>,
    status: RotationStatus,
) -> Result<(RotationStatus, bool), Error> {
    let ctx = writer.ctx;
    let key = workspace_key(writer.workspace);
    let Some(Custody::Landed { fingerprint, refreshed_at, .. }) = ctx.custody.state(&key) else {
        return Ok((status, false));
    };
    // The new token came from Tinybird itself: no need to check it before signing with it.
    ctx.admin_checks.record(key.clone(), &fingerprint, refreshed_at);
    let landed = rotation::landed(&status, &fingerprint, refreshed_at);
    writer.write(&landed).await?;
    ctx.custody.release(&key);
    let old = landed.history.first().and_then(|r| r.old_key_fingerprint.clone()).unwrap_or_default();
    ctx.events.publish(
        writer.workspace,
        EventType::Normal,
        "AdminTokenRefreshed",
        "RotateAdminToken",
        &format!("the refreshed admin token (key {old} -> {fingerprint}) is in its Secret: re-signing every dependent token and Clerk template"),
    );
    Ok((landed, true))
}

/// Counts the dependents on the new key; the record follows (and completes, saying so when
/// another tool manages the admin-token Secret).
async fn track<W: Workspace>(
    writer: &mut Writer<'_, W>,
    status: RotationStatus,
    admin_secret_manager: Option<&str>,
) -> Result<(RotationStatus, Duration), Error> {
    let ctx = writer.ctx;
    let workspace = writer.workspace;
    let Some(record) = status.history.first() else { return Ok((status, ctx.settings.resync)) };
    let new_key = record.new_key_fingerprint.as_deref().and_then(super::cached_access::key_tag);
    let (mut tokens, mut templates) = (RotationProgress::default(), RotationProgress::default());
    let namespace = workspace.namespace();
    let name = workspace.name_any();
    for access in ctx.caches.tenant_accesses.state() {
        if !access.uses_workspace(W::KIND, namespace.as_deref(), &name) {
            continue;
        }
        let (token, template) = access.key_tags();
        count(&mut tokens, token, new_key);
        count(&mut templates, template, new_key);
    }
    let now = ctx.now();
    let next = rotation::progressed(&status, (tokens, templates), admin_secret_manager, now);
    if next != status {
        writer.write(&next).await?;
        finished(workspace, ctx, &next);
    }
    let patient = record.refreshed_at.as_ref().is_some_and(|at| {
        now.duration_since(at.0) > jiff::SignedDuration::try_from(TRACK_PATIENCE).unwrap_or_default()
    });
    let again = if patient { TRACK_EVERY * 10 } else { TRACK_EVERY };
    Ok((next, again))
}

fn count(
    progress: &mut RotationProgress,
    key: Option<std::num::NonZeroU64>,
    new_key: Option<std::num::NonZeroU64>,
) {
    if let Some(key) = key {
        progress.total = progress.total.saturating_add(1);
        if Some(key) == new_key {
            progress.on_new_key = progress.on_new_key.saturating_add(1);
        }
    }
}

/// The event and metric of a rotation that reached an end in this write.
fn finished<W: Workspace>(workspace: &W, ctx: &Context, status: &RotationStatus) {
    let Some(record) = status.history.first() else { return };
    let (event_type, event_reason) = match record.phase.as_str() {
        phase::COMPLETE => (EventType::Normal, "RotationComplete"),
        phase::NOT_REFRESHED => (EventType::Warning, "RotationNotRefreshed"),
        phase::KEY_LOST => (EventType::Warning, "AdminTokenLost"),
        _ => return,
    };
    ctx.metrics.rotated(&record.phase);
    let mut note = format!(
        "rotation {} ({}): {}",
        record.request,
        record.trigger,
        record.message.as_deref().unwrap_or_default()
    );
    if let Some(after) = &record.secrets_on_new_key_after {
        let _ = write!(note, "; every token Secret on the new key {after} after the refresh");
    }
    if let Some(after) = &record.templates_on_new_key_after {
        let _ = write!(note, ", every Clerk template {after} after");
    }
    ctx.events.publish(workspace, event_type, event_reason, "RotateAdminToken", &note);
}

/// Whether a Clerk push of the key `fingerprint` for `access` waits for the token Secrets of a
/// rotation of its workspace ([`rotation::holds_clerk`]), as the workspace cache shows it.
pub(super) fn holds_clerk_push(ctx: &Context, access: &crate::api::TenantAccess, fingerprint: &str) -> bool {
    use kube::runtime::reflector::ObjectRef;
    let reference = &access.spec.workspace_ref;
    let now = ctx.now();
    let holds = |status: Option<&crate::api::WorkspaceStatus>| {
        status.and_then(|s| s.rotation.as_ref()).is_some_and(|r| rotation::holds_clerk(r, fingerprint, now))
    };
    if reference.kind.as_deref() == Some(crate::api::KIND_CLUSTER_WORKSPACE) {
        let key = ObjectRef::new(&reference.name);
        ctx.caches.cluster_workspaces.get(&key).is_some_and(|w| holds(w.status.as_ref()))
    } else {
        let key = ObjectRef::new(&reference.name).within(&access.namespace().unwrap_or_default());
        ctx.caches.workspaces.get(&key).is_some_and(|w| holds(w.status.as_ref()))
    }
}
