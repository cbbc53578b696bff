//! The TenantAccess reconciler: admit -> observe -> plan -> write -> status. Admission and the
//! plan are pure (`crate::core::reconcile`, shared with `tenant-access render`); observing is in
//! `observe.rs`, the writes in `output_writes.rs`, the status in `report.rs`.

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::events::EventType;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::admission::{self, Admission, Refused};
use super::cached_access::CachedTenantAccess;
use super::clerk_sync::{self, has_finalizer};
use super::context::Context;
use super::error::Error;
use super::observe::{self, ObservedSecret};
use super::workspace_cache::ClerkCredentials;
use crate::api::{TenantAccess, TenantAccessStatus};
use crate::core::conditions::{DesiredCondition, find};
use crate::core::isolation_report::{self, IsolationPolicy};
use crate::core::reconcile::admit::Retry;
use crate::core::reconcile::decide::ObservedToken;
use crate::core::reconcile::plan::{self, Plan, TokenPlan};
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::{ValidatedAccess, validate_tenant_access};
use crate::core::well_known::condition;

use super::output_writes::{TokenOutcome, revoke_token, set_finalizer, write_clerk, write_token};
use super::report::{Report, health_stage, isolation_stage, stop_probes};

/// Reconciles one TenantAccess.
///
/// # Errors
/// Transient API errors (retried with backoff); expected problems become conditions.
pub async fn reconcile(cached: Arc<CachedTenantAccess>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", kind = "TenantAccess", namespace = %cached.namespace_name(), object = %cached.object_name());
    let started = std::time::Instant::now();
    let result = match cached.decode() {
        Ok(access) => {
            tracing::Instrument::instrument(reconcile_inner(Arc::new(access), ctx.clone()), span).await
        }
        Err(error) => Err(Error::DecodeCache(error)),
    };
    let outcome = match &result {
        Ok(_) => "success",
        Err(error) => error.category(),
    };
    ctx.metrics.reconciled("TenantAccess", outcome, started.elapsed());
    result
}

async fn reconcile_inner(access: Arc<TenantAccess>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = access.namespace().unwrap_or_default();
    let name = access.name_any();
    if !ctx.settings.serves(&namespace) {
        return Ok(Action::await_change());
    }
    if access.meta().deletion_timestamp.is_some() {
        return finalize(&access, &ctx).await;
    }
    let now = ctx.now();
    let previous = ctx
        .ledger
        .last_writes
        .fresher_status(&namespace, &name, access.metadata.resource_version.as_deref(), access.status.clone())
        .unwrap_or_default();
    let mut report = Report::new(&access, previous.clone(), now);

    let Admission { validated, signer, entry } = match admission::admit(&access, &ctx, now).await? {
        Ok(admission) => admission,
        Err(refused) => return refuse(&access, &ctx, report, &refused, None).await,
    };
    // Under `pipeIsolation: Enforce`, a granted pipe that does not filter by a pinned param
    // refuses the TenantAccess before anything is issued, and withdraws what was.
    let enforced = if validated.isolation_policy == IsolationPolicy::Enforce {
        let judged = super::isolation_gate::judged(&validated, &signer, &ctx).await;
        if let Some(refusal) = isolation_report::enforce(&validated, &judged) {
            let isolation = isolation_report::condition_of_judged(&judged);
            let refused = Refused { refusal, entry: Some(entry) };
            return refuse(&access, &ctx, report, &refused, isolation).await;
        }
        Some(judged)
    } else {
        None
    };

    // Observe -> plan -> write -> status.
    let observed = observe::token(&access, &validated, &signer, &ctx, previous.token.as_ref()).await?;
    let Plan { token: token_plan, clerk: clerk_plan } =
        plan_writes(&access, &validated, &signer, &previous, observed.as_ref(), now)?;

    // A token that replaces another (a rotation, a renewal) is written in a pass of its own when
    // the Clerk template must be pushed too: the push comes in the next pass, requeued at once
    // (behind the passes already due). After a rotation every token Secret is thus re-signed
    // before any reconcile worker waits on Clerk, however slow Clerk is.
    let replaces_token = matches!(token_plan, Some(TokenPlan::Issue(_))) && previous.token.is_some();
    let clerk_next_pass = replaces_token
        && clerk_plan.as_ref().is_some_and(|plan| {
            clerk_sync::needs_push(
                &plan.template,
                &signer,
                entry.clerk.as_ref(),
                previous.clerk_template.as_ref(),
            )
        });
    let token =
        write_token(&access, &validated, &signer, &ctx, &mut report, (token_plan, observed.as_ref())).await?;
    let mut retry_after =
        matches!(token, TokenOutcome::Refused).then(|| ctx.retries.failed(access.as_ref()).1);
    // Secrets first during a rotation: a push of the new key waits until every token Secret of
    // the workspace is on it. The workspace's status says when, and triggers this pass again.
    let clerk_held = clerk_plan.is_some()
        && previous
            .clerk_template
            .as_ref()
            .is_some_and(|pushed| pushed.signing_key_fingerprint != signer.signing_key_fingerprint)
        && super::rotation::holds_clerk_push(&ctx, &access, &signer.signing_key_fingerprint);
    if clerk_held {
        retry_after = Some(super::rotation::CLERK_HOLD_RECHECK);
    } else if clerk_next_pass {
        retry_after = Some(Duration::ZERO);
    } else {
        let clerk = (clerk_plan, entry.as_ref(), &previous);
        if let Some(retry) = write_clerk(&access, &validated, &signer, &ctx, &mut report, clerk).await? {
            retry_after = Some(retry_after.map_or(retry, |r| r.min(retry)));
        }
    }

    if matches!(token, TokenOutcome::Refused) {
        stop_probes(&ctx, &mut report, &namespace, &name);
    } else {
        let jwt = match &token {
            TokenOutcome::Written { jwt, .. } => Some(jwt.as_str()),
            TokenOutcome::NoSecret | TokenOutcome::Refused => None,
        };
        let probed = health_stage(&access, &validated, &signer, jwt, &ctx, &mut report);
        // Under Enforce the verdicts were judged before anything was issued.
        let judged = match enforced {
            Some(judged) => judged,
            None => super::isolation_gate::reported(&validated, &signer, probed.as_ref(), &ctx).await,
        };
        isolation_stage(&access, &judged, &ctx, &mut report);
    }
    if retry_after.is_none() {
        report.ready(&validated);
    }
    report.finish(&ctx, &access).await?;
    // Only once the status is written: a status write that fails is a failure, and the backoff
    // must keep growing across such failures.
    if retry_after.is_none() {
        ctx.retries.succeeded(access.as_ref());
    }
    if let Some(delay) = retry_after {
        return Ok(Action::requeue(delay));
    }
    let (renewal_time, restart_after) = match token {
        TokenOutcome::Written { renewal_time, restart_after, .. } => (Some(renewal_time), restart_after),
        TokenOutcome::NoSecret | TokenOutcome::Refused => (None, None),
    };
    let look_again = plan::look_again(renewal_time, &validated, now, ctx.settings.resync);
    // Kept compactly apart from kube-runtime's scheduler (see `wakeups`).
    ctx.wakeups.set(&namespace, &name, restart_after.map_or(look_again, |restart| restart.min(look_again)));
    Ok(Action::await_change())
}

/// The plan of this reconcile, from what was observed of the token Secret.
fn plan_writes(
    access: &TenantAccess,
    validated: &ValidatedAccess,
    signer: &SigningWorkspace,
    previous: &TenantAccessStatus,
    observed: Option<&ObservedSecret>,
    now: Timestamp,
) -> Result<Plan, Error> {
    let owner_uid = access.uid().unwrap_or_default();
    let lacks = |desired: &Secret| observed.is_some_and(|o| o.lacks(desired));
    Ok(plan::plan(&plan::Inputs {
        access: validated,
        signer,
        owner_uid: &owner_uid,
        owner: access.controller_owner_ref(&()),
        secret: observed.map_or(ObservedToken::Absent, ObservedSecret::as_token),
        secret_lacks: &lacks,
        status_token: previous.token.as_ref(),
        previous_conditions: &previous.conditions,
        annotations: access.metadata.annotations.as_ref(),
        revision_floor: None,
        now,
    })?)
}

/// The one exit of a refused TenantAccess: the conditions say why, probes stop, what was issued
/// is revoked when the refusal withdraws access, the status is written, and the TenantAccess is
/// looked at again with backoff, or once something changes.
async fn refuse(
    access: &TenantAccess,
    ctx: &Context,
    mut report: Report,
    refused: &Refused,
    isolation: Option<DesiredCondition>,
) -> Result<Action, Error> {
    let refusal = &refused.refusal;
    report.refuse(refusal.reason, &refusal.message);
    stop_probes(ctx, &mut report, &access.namespace().unwrap_or_default(), &access.name_any());
    if let Some(isolation) = isolation {
        report.set(isolation);
    }
    let clerk_retry = match refusal.revoke {
        Some(why) => revoke(access, ctx, &mut report, (refusal.reason, why), refused.clerk()).await?,
        None => None,
    };
    report.finish(ctx, access).await?;
    let backoff = match refusal.retry {
        Retry::Backoff => Some(ctx.retries.failed(access).1),
        Retry::After(delay) => Some(delay),
        Retry::OnChange => None,
    };
    Ok(match (backoff, clerk_retry) {
        (Some(delay), Some(retry)) => Action::requeue(retry.min(delay)),
        (Some(delay), None) | (None, Some(delay)) => Action::requeue(delay),
        (None, None) => Action::await_change(),
    })
}

/// Revocation: this TenantAccess may no longer have the access it was given (`why`, e.g. the
/// workspace's policy forbids it, or its namespace was withdrawn). The token leaves its Secret,
/// and a template pushed to Clerk is deleted from Clerk (whatever the deletionPolicy, which is
/// the team's choice for its own deletions, not the platform's withdrawals), so that no new
/// token is minted from it; both come back if access is given back. Returns when to retry a
/// Clerk deletion that failed.
async fn revoke(
    access: &TenantAccess,
    ctx: &Context,
    report: &mut Report,
    (reason, why): (&'static str, &str),
    clerk: Option<&ClerkCredentials>,
) -> Result<Option<Duration>, Error> {
    let mut retry = None;
    let pushed = report.status.clerk_template.clone();
    let message = match (pushed.as_ref().and_then(|p| p.id.as_deref().map(|id| (p, id))), clerk) {
        (Some((pushed, id)), Some(credentials)) => {
            match clerk_sync::delete_remote(access, credentials, id, ctx, why, true).await {
                Ok(()) => {
                    report.status.clerk_template = None;
                    Some(format!(
                        "the Clerk template {} was deleted from Clerk: {why}; it is created again if access is given back",
                        pushed.name
                    ))
                }
                Err(error) => {
                    retry = Some(error.retry_after().unwrap_or_else(|| ctx.retries.failed(access).1));
                    Some(format!(
                        "the Clerk template {} must be deleted from Clerk ({why}) and could not be yet: {error}; retrying",
                        pushed.name
                    ))
                }
            }
        }
        (Some((pushed, _)), None) => Some(format!(
            "the Clerk template {} was left in Clerk, where it still mints tokens: {why}, and the workspace has no usable Clerk connection to delete it; delete it in Clerk, or refresh the workspace admin token",
            pushed.name
        )),
        // Nothing pushed, or deleted by an earlier pass (whose condition stays).
        (None, _) => {
            let said = find(&report.status.conditions, condition::CLERK_TEMPLATE_SYNCED)
                .is_some_and(|c| c.status == "False" && c.reason == reason);
            (access.spec.clerk_template.is_some() && !said)
                .then(|| format!("nothing is pushed to Clerk: {why}"))
        }
    };
    if let Some(message) = message {
        report.set(DesiredCondition::fails(condition::CLERK_TEMPLATE_SYNCED, reason, message));
    }
    revoke_token(access, ctx, report, why).await?;
    Ok(retry)
}

/// Deletion: remove the Clerk template (deletionPolicy Delete, finalizer present), then the
/// finalizer. Owned Secrets and ConfigMaps go with the TenantAccess (owner references).
async fn finalize(access: &TenantAccess, ctx: &Context) -> Result<Action, Error> {
    if !has_finalizer(access) {
        return Ok(Action::await_change());
    }
    let pushed = access.status.as_ref().and_then(|s| s.clerk_template.as_ref()).and_then(|t| t.id.clone());
    if let Some(id) = pushed {
        let namespace = access.namespace().unwrap_or_default();
        let credentials = match validate_tenant_access(&namespace, &access.name_any(), &access.spec) {
            Ok(validated) => {
                admission::admitted_entry(&validated, ctx).await?.and_then(|entry| entry.clerk.clone()?.ok())
            }
            Err(_) => None,
        };
        match credentials {
            Some(credentials) => {
                clerk_sync::delete_remote(access, &credentials, &id, ctx, "deletionPolicy: Delete", false)
                    .await?;
            }
            None => {
                ctx.events.publish(
                    access,
                    EventType::Warning,
                    "ClerkTemplateLeft",
                    "DeleteClerkTemplate",
                    &format!("Clerk template {id} was left in Clerk: the workspace has no usable Clerk connection any more; delete it in the Clerk dashboard if it is not needed"),
                );
            }
        }
    }
    set_finalizer(access, ctx, false).await?;
    ctx.ledger.last_writes.forget_access(&access.namespace().unwrap_or_default(), &access.name_any());
    Ok(Action::await_change())
}

/// Backoff on transient errors. (The signature is the one `Controller::run` expects.)
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(access: Arc<CachedTenantAccess>, error: &Error, ctx: Arc<Context>) -> Action {
    let (attempts, delay) = ctx.retries.failed(access.as_ref());
    if error.is_api_unavailable() {
        ctx.retries.outage.wait_for_api(super::api_recovery::Waiting::TenantAccess {
            namespace: access.namespace_name().to_owned(),
            name: access.object_name().to_owned(),
        });
    }
    tracing::warn!(namespace = %access.namespace_name(), name = %access.object_name(), attempts, category = error.category(), error = %error.redacted(), "reconcile failed");
    Action::requeue(delay)
}
