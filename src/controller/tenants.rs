//! The TenantAccess reconciler: fetch -> validate -> decide -> build -> apply -> status.

use std::sync::Arc;
use std::time::Duration;

use crate::events::EventType;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::admission::{self, Admission, Refused};
use super::cached_access::CachedTenantAccess;
use super::clerk_sync::{self, SyncOutcome, has_finalizer};
use super::context::Context;
use super::error::Error;
use super::keys::{ClerkCredentials, WorkspaceEntry, WorkspaceKey};
use super::observe::{self, ObservedSecret, SECRET_LIST_PATIENCE};
use crate::api::{EndpointStatus, TenantAccess, TenantAccessStatus};
use crate::apply::Ownership;
use crate::backoff::jitter;
use crate::conditions::{DesiredCondition, find, remove_condition, set_condition};
use crate::desired::clerk_configmap_name;
use crate::health::{AccessKey, EndpointHealth, ProbePlan, summarize};
use crate::names::{
    ANNOTATION_REVISION, CLERK_TEMPLATE_CONFIGMAP_SUFFIX, FIELD_MANAGER, FINALIZER,
    LABEL_RESTART_ON_TOKEN_CHANGE, condition, reason,
};
use crate::reconcile::admit::Retry;
use crate::reconcile::decide::ObservedToken;
use crate::reconcile::decide::{ConfigMapDecision, decide_configmap, is_owned_by};
use crate::reconcile::plan::{self, ClerkPlan, Issued, Kept, Plan, TokenPlan};
use crate::validate::{DeletionPolicy, ValidatedAccess, WorkspaceKind, validate_tenant_access};
use crate::workspace::SigningWorkspace;

/// Reconciles one TenantAccess.
///
/// # Errors
/// Transient API errors (retried with backoff); expected problems become conditions.
pub async fn reconcile(cached: Arc<CachedTenantAccess>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", kind = "TenantAccess", namespace = %cached.namespace_name(), name = %cached.object_name());
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
        .last_writes
        .fresher_status(&namespace, &name, access.metadata.resource_version.as_deref(), access.status.clone())
        .unwrap_or_default();
    let mut report = Report::new(&access, previous.clone(), now);

    let Admission { validated, signer, entry } = match admission::admit(&access, &ctx, now).await? {
        Ok(admission) => admission,
        Err(refused) => return refuse(&access, &ctx, report, &refused).await,
    };

    // Observe -> plan -> write -> status.
    let observed = observe::token(&access, &validated, &signer, &ctx, previous.token.as_ref()).await?;
    let Plan { token: token_plan, clerk: clerk_plan } =
        plan_writes(&access, &validated, &signer, &previous, observed.as_ref(), now)?;

    let token =
        write_token(&access, &validated, &signer, &ctx, &mut report, (token_plan, observed.as_ref())).await?;
    let mut retry_after =
        matches!(token, TokenOutcome::Refused).then(|| ctx.record_failure(access.as_ref()).1);
    let clerk = (clerk_plan, entry.as_ref(), &previous);
    if let Some(retry) = write_clerk(&access, &validated, &signer, &ctx, &mut report, clerk).await? {
        retry_after = Some(retry_after.map_or(retry, |r| r.min(retry)));
    }

    match &token {
        TokenOutcome::NoSecret => health_stage(&access, &validated, &signer, None, &ctx, &mut report).await,
        TokenOutcome::Written { jwt, .. } => {
            health_stage(&access, &validated, &signer, Some(jwt), &ctx, &mut report).await;
        }
        TokenOutcome::Refused => stop_probes(&ctx, &mut report, &namespace, &name),
    }
    if retry_after.is_none() {
        report.ready(&validated);
        ctx.record_success(access.as_ref());
    }
    report.finish(&ctx, &access).await?;
    if let Some(delay) = retry_after {
        return Ok(Action::requeue(delay));
    }
    let mut next_check = now.checked_add(ctx.settings.resync).unwrap_or(now);
    if let TokenOutcome::Written { renewal_time, .. } = token {
        next_check = next_check.min(renewal_time);
    }
    Ok(Action::requeue(requeue_after(now, next_check, &validated, &name)))
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

/// Writes what the plan decided for the Clerk template: its ConfigMap, the template in Clerk,
/// the finalizer; or, with the output removed, deletes them. Returns when to retry a failure.
async fn write_clerk(
    access: &TenantAccess,
    validated: &ValidatedAccess,
    signer: &SigningWorkspace,
    ctx: &Context,
    report: &mut Report,
    (planned, entry, previous): (Option<ClerkPlan>, &WorkspaceEntry, &TenantAccessStatus),
) -> Result<Option<Duration>, Error> {
    let (Some(output), Some(ClerkPlan { template, configmap })) = (&validated.clerk_template, planned) else {
        remove_clerk_output(access, ctx, report, entry, previous).await?;
        return Ok(None);
    };
    if let Err(conflict) = reconcile_configmap(access, ctx, &configmap).await? {
        // The ConfigMap is an output of the Clerk template: with someone else's ConfigMap in
        // the way, the Clerk output is refused as a whole (nothing pushed to Clerk), and that
        // ConfigMap is left untouched. The Secret output is not affected.
        report.not_ready(reason::CONFIGMAP_CONFLICT, &conflict);
        report.set(DesiredCondition::fails(
            condition::CLERK_TEMPLATE_SYNCED,
            reason::CONFIGMAP_CONFLICT,
            conflict,
        ));
        return Ok(Some(ctx.record_failure(access).1));
    }
    let wants_finalizer =
        output.deletion_policy == DeletionPolicy::Delete && matches!(entry.clerk, Some(Ok(_)));
    if wants_finalizer && !has_finalizer(access) {
        set_finalizer(access, ctx, true).await?;
    }
    let pushed = previous.clerk_template.as_ref();
    match clerk_sync::sync(access, &template, signer, entry.clerk.as_ref(), pushed, ctx).await {
        SyncOutcome::Done { condition, status } => {
            report.set(condition);
            report.status.clerk_template = status;
            Ok(None)
        }
        SyncOutcome::Failed { condition, retry_after } => {
            report.not_ready(condition.reason, &condition.message);
            report.set(condition);
            Ok(Some(retry_after))
        }
    }
}

/// The Clerk output was removed (or never asked for): a template created with deletionPolicy
/// Delete goes from Clerk, the finalizer goes, and the ConfigMap this TenantAccess created.
async fn remove_clerk_output(
    access: &TenantAccess,
    ctx: &Context,
    report: &mut Report,
    entry: &WorkspaceEntry,
    previous: &TenantAccessStatus,
) -> Result<(), Error> {
    remove_condition(&mut report.status.conditions, condition::CLERK_TEMPLATE_SYNCED);
    if let Some(pushed) = previous.clerk_template.as_ref() {
        if has_finalizer(access)
            && let (Some(id), Some(Ok(credentials))) = (pushed.id.as_deref(), entry.clerk.as_ref())
        {
            let why = "spec.clerkTemplate removed, deletionPolicy: Delete";
            clerk_sync::delete_remote(access, credentials, id, ctx, why).await?;
        }
        report.status.clerk_template = None;
    }
    if has_finalizer(access) {
        set_finalizer(access, ctx, false).await?;
    }
    let (namespace, name) = (access.namespace().unwrap_or_default(), access.name_any());
    delete_configmap(access, ctx, &namespace, &clerk_configmap_name(&name)).await
}

/// The one exit of a refused TenantAccess: the conditions say why, probes stop, what was issued
/// is revoked when the refusal withdraws access, the status is written, and the TenantAccess is
/// looked at again with backoff, or once something changes.
async fn refuse(
    access: &TenantAccess,
    ctx: &Context,
    mut report: Report,
    refused: &Refused,
) -> Result<Action, Error> {
    let refusal = &refused.refusal;
    report.refuse(refusal.reason, &refusal.message);
    stop_probes(ctx, &mut report, &access.namespace().unwrap_or_default(), &access.name_any());
    let clerk_retry = match refusal.revoke {
        Some(why) => revoke(access, ctx, &mut report, (refusal.reason, why), refused.clerk()).await?,
        None => None,
    };
    report.finish(ctx, access).await?;
    let backoff = (refusal.retry == Retry::Backoff).then(|| ctx.record_failure(access).1);
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
            match clerk_sync::delete_remote(access, credentials, id, ctx, why).await {
                Ok(()) => {
                    report.status.clerk_template = None;
                    Some(format!(
                        "the Clerk template {} was deleted from Clerk: {why}; it is created again if access is given back",
                        pushed.name
                    ))
                }
                Err(error) => {
                    retry = Some(error.retry_after().unwrap_or_else(|| ctx.record_failure(access).1));
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

/// Removes the token from this TenantAccess's Secret: the Secret stays, with its other keys, so
/// that apps see a missing token rather than a missing Secret.
async fn revoke_token(
    access: &TenantAccess,
    ctx: &Context,
    report: &mut Report,
    why: &str,
) -> Result<(), Error> {
    let namespace = access.namespace().unwrap_or_default();
    let secret_name =
        access.spec.secret.as_ref().and_then(|s| s.name.clone()).unwrap_or_else(|| access.name_any());
    let owner_uid = access.uid().unwrap_or_default();
    ctx.token_secrets.synced_within(SECRET_LIST_PATIENCE).await;
    let has_token = match ctx.token_secrets.get(&namespace, &secret_name) {
        Some(digest) => digest.controlled_by(&owner_uid) && digest.has_token(),
        None => false,
    };
    if !has_token {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({"data": {crate::names::secret_keys::TOKEN: null}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    let written =
        api.patch(&secret_name, &params, &Patch::Merge(&patch)).await.map_err(Error::WriteSecret)?;
    ctx.wrote_secret(&written);
    report.status.token = None;
    ctx.events.publish(
        access,
        EventType::Warning,
        "TokenRevoked",
        "RevokeToken",
        &format!("removed the token from Secret {secret_name}: {why} (a copy already taken stays valid until it expires)"),
    );
    Ok(())
}

/// Registers the probes of a TenantAccess, asks for a key check when Tinybird rejected a token
/// the operator believes valid, and reports health (status changes only on flips).
async fn health_stage(
    access: &TenantAccess,
    validated: &ValidatedAccess,
    signer: &SigningWorkspace,
    issued_jwt: Option<&str>,
    ctx: &Context,
    report: &mut Report,
) {
    let key = AccessKey::new(&validated.namespace, &validated.name);
    let Some(plan) = ProbePlan::for_access(validated, signer, issued_jwt) else {
        stop_probes(ctx, report, &validated.namespace, &validated.name);
        return;
    };
    ctx.health.register(key.clone(), plan);
    if let Ok(mut keys) = ctx.health_keys.lock() {
        keys.insert(key.clone());
    }
    if ctx.health.take_key_check(&key) {
        let workspace = WorkspaceKey {
            kind: validated.workspace_kind,
            namespace: if validated.workspace_kind == WorkspaceKind::Namespaced {
                validated.namespace.clone()
            } else {
                String::new()
            },
            name: validated.workspace_name.clone(),
        };
        ctx.force_verification(workspace);
        let _ = match validated.workspace_kind {
            WorkspaceKind::Namespaced => ctx
                .workspace_rechecks
                .namespaced
                .send(ObjectRef::new(&validated.workspace_name).within(&validated.namespace))
                .is_ok(),
            WorkspaceKind::Cluster => {
                ctx.workspace_rechecks.cluster.send(ObjectRef::new(&validated.workspace_name)).is_ok()
            }
        };
        ctx.events.publish(
            access,
            EventType::Warning,
            "SignatureRejected",
            "ProbeEndpoint",
            &format!("Tinybird rejected the signature of a token that should be valid: checking workspace {}'s admin token with Tinybird now (was it refreshed outside the cluster?)", validated.workspace_name),
        );
    }
    let Some(endpoints) = ctx.health.endpoints(&key) else { return };
    let Some(summary) = summarize(&endpoints) else { return };
    let new: Vec<EndpointStatus> = endpoints.iter().map(EndpointHealth::to_status).collect();
    // Linear in the endpoints: a map of the previous verdicts, not a search per endpoint.
    let was_healthy: std::collections::HashMap<&str, bool> =
        report.previous.endpoints.iter().map(|e| (e.resource.as_str(), e.healthy)).collect();
    for endpoint in &new {
        let before = was_healthy.get(endpoint.resource.as_str());
        let flipped = before.map_or(!endpoint.healthy, |healthy| *healthy != endpoint.healthy);
        if flipped {
            let (type_, reason) = if endpoint.healthy {
                (EventType::Normal, "EndpointRecovered")
            } else {
                (EventType::Warning, "EndpointUnhealthy")
            };
            let detail = endpoint.message.as_deref().unwrap_or(&endpoint.reason);
            ctx.events.publish(
                access,
                type_,
                reason,
                "ProbeEndpoint",
                &format!("pipe {}: {} ({detail})", endpoint.resource, endpoint.reason),
            );
        }
    }
    report.status.endpoints = new;
    report.set(if summary.healthy {
        DesiredCondition::holds(condition::ENDPOINTS_HEALTHY, summary.reason, summary.message)
    } else {
        DesiredCondition::fails(condition::ENDPOINTS_HEALTHY, summary.reason, summary.message)
    });
}

/// No probes for this TenantAccess (disabled, refused or deleted).
fn stop_probes(ctx: &Context, report: &mut Report, namespace: &str, name: &str) {
    let key = AccessKey::new(namespace, name);
    ctx.health.unregister(&key);
    if let Ok(mut keys) = ctx.health_keys.lock() {
        keys.remove(&key);
    }
    remove_condition(&mut report.status.conditions, condition::ENDPOINTS_HEALTHY);
    report.status.endpoints.clear();
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
                clerk_sync::delete_remote(access, &credentials, &id, ctx, "deletionPolicy: Delete").await?;
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
    ctx.last_writes.forget_access(&access.namespace().unwrap_or_default(), &access.name_any());
    Ok(Action::await_change())
}

/// Adds or removes the Clerk finalizer.
async fn set_finalizer(access: &TenantAccess, ctx: &Context, present: bool) -> Result<(), Error> {
    let current: Vec<String> = access.metadata.finalizers.clone().unwrap_or_default();
    let mut wanted: Vec<String> = current.iter().filter(|f| f.as_str() != FINALIZER).cloned().collect();
    if present {
        wanted.push(FINALIZER.to_owned());
    }
    if wanted == current {
        return Ok(());
    }
    // A merge patch replaces the list; the resourceVersion makes it fail (409) if someone
    // changed the object meanwhile, instead of dropping their finalizer.
    let patch = serde_json::json!({
        "metadata": {"finalizers": wanted, "resourceVersion": access.metadata.resource_version},
    });
    let api: Api<TenantAccess> = Api::namespaced(ctx.client.clone(), &access.namespace().unwrap_or_default());
    match api.patch(&access.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Gone already, or changed meanwhile (the change triggers another reconcile).
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(Error::WriteFinalizer(error)),
    }
}

/// Deletes the Clerk template ConfigMap once the output is removed, only when this TenantAccess
/// created it (its controller reference): someone else's ConfigMap of that name stays.
async fn delete_configmap(
    access: &TenantAccess,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let owner_uid = access.uid().unwrap_or_default();
    let Some(cached) = ctx.caches.managed_configmaps.get(&ObjectRef::new(name).within(namespace)) else {
        return Ok(());
    };
    if !is_owned_by(cached.as_ref(), &owner_uid) {
        return Ok(());
    }
    // Only that very object: not one created under the same name since the cache saw it.
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: cached.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(Error::WriteConfigMap(error)),
    }
}

/// Time until the next check, with a small jitter *after* it (never renew early) so that tokens
/// issued together do not all renew in the same instant.
fn requeue_after(now: Timestamp, at: Timestamp, access: &ValidatedAccess, key: &str) -> Duration {
    let until = Duration::try_from(at.duration_since(now)).unwrap_or_default();
    let spread = Duration::try_from(access.renew_before / 20).unwrap_or_default().min(Duration::from_secs(5));
    until + spread.mul_f64(jitter(key))
}

/// What became of the token Secret.
enum TokenOutcome {
    /// The spec asks for none.
    NoSecret,
    /// Refused (someone else's Secret).
    Refused,
    /// Written or kept: renewed at `renewal_time`.
    Written {
        /// When it is renewed.
        renewal_time: Timestamp,
        /// The JWT (for the probes).
        jwt: String,
    },
}

/// Writes what the plan decided for the token Secret.
async fn write_token(
    access: &TenantAccess,
    validated: &ValidatedAccess,
    signer: &SigningWorkspace,
    ctx: &Context,
    report: &mut Report,
    (planned, observed): (Option<TokenPlan>, Option<&ObservedSecret>),
) -> Result<TokenOutcome, Error> {
    let (Some(output), Some(planned)) = (&validated.secret, planned) else {
        remove_condition(&mut report.status.conditions, condition::TOKEN_ISSUED);
        report.status.token = None;
        return Ok(TokenOutcome::NoSecret);
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &validated.namespace);
    match planned {
        TokenPlan::Conflict { message } => {
            report.refuse(reason::SECRET_CONFLICT, &message);
            Ok(TokenOutcome::Refused)
        }
        TokenPlan::Issue(issued) => {
            let Issued { reason: issue_reason, event_reason, token, revision, secret, status, condition } =
                *issued;
            // A Secret the watch never saw is created without taking over one made meanwhile.
            let known_absent = matches!(observed, Some(ObservedSecret::Absent { known: true }));
            let ownership = if known_absent { Ownership::NoForce } else { Ownership::Force };
            apply_secret(ctx, &secrets, &secret, ownership).await?;
            ctx.metrics
                .tokens_signed
                .get_or_create(&crate::metrics::IssueLabels { reason: event_reason })
                .inc();
            report.status.token = Some(status);
            report.set(condition);
            ctx.events.publish(
                access,
                EventType::Normal,
                event_reason,
                "SignToken",
                &format!(
                    "signed token revision {revision} into Secret {} because {} (key {}, expires {})",
                    output.name,
                    issue_reason.describe(),
                    signer.signing_key_fingerprint,
                    token.expires_at
                ),
            );
            tracing::info!(reason = event_reason, revision, secret = %output.name, why = issue_reason.describe(), "token signed");
            rollout_restart(access, validated, revision, ctx).await;
            Ok(TokenOutcome::Written { renewal_time: token.renewal_time, jwt: token.jwt })
        }
        TokenPlan::Keep(kept) => {
            let Kept { token, revision, repair, status, condition } = *kept;
            if let Some(desired) = repair {
                apply_secret(ctx, &secrets, &desired, Ownership::Force).await?;
                tracing::info!(secret = %output.name, "repaired token Secret metadata");
                ctx.events.publish(
                    access,
                    EventType::Normal,
                    "Repaired",
                    "RepairSecret",
                    &format!("restored labels, owner or keys of Secret {} (token kept)", output.name),
                );
            }
            tracing::debug!(namespace = %validated.namespace, name = %validated.name, revision, "token kept");
            report.status.token = Some(status);
            report.set(condition);
            Ok(TokenOutcome::Written { renewal_time: token.renewal_time, jwt: token.jwt })
        }
    }
}

/// Server-side applies a token Secret. `Ownership::NoForce` is for a Secret believed absent (the
/// Secret watch never saw its name): a Secret created meanwhile by someone else with a conflicting
/// field then makes it fail (409) instead of being taken over, and the next attempt reads the
/// Secret and decides again (SecretConflict).
async fn apply_secret(
    ctx: &Context,
    secrets: &Api<Secret>,
    secret: &Secret,
    ownership: Ownership,
) -> Result<(), Error> {
    let written = match crate::apply::apply_secret(secrets, secret, ownership).await {
        Ok(written) => written,
        Err(error) => {
            if matches!(&error, kube::Error::Api(status) if status.code == 409) {
                let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
                ctx.secret_names.exists(namespace, secret.metadata.name.as_deref().unwrap_or_default());
            }
            return Err(Error::WriteSecret(error));
        }
    };
    ctx.wrote_secret(&written);
    Ok(())
}

/// Writes the Clerk template ConfigMap when it is this TenantAccess's (its controller reference)
/// and lacks something of the desired one, creates it when there is none. `Ok(Err(message))`:
/// another party's ConfigMap has that name; it was not touched.
async fn reconcile_configmap(
    access: &TenantAccess,
    ctx: &Context,
    configmap: &ConfigMap,
) -> Result<Result<(), String>, Error> {
    let namespace = configmap.metadata.namespace.clone().unwrap_or_default();
    let name = configmap.metadata.name.clone().unwrap_or_default();
    let owner_uid = access.uid().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    // The cache holds only labelled ConfigMaps: a name it lacks is read, since an unlabelled
    // ConfigMap of that name (someone else's, or this one with its label removed) may exist.
    let cached = managed_configmap(ctx, &namespace, &name).await;
    let observed = match cached {
        Some(cached) => Some(cached),
        None => api.get_opt(&name).await.map_err(Error::ReadConfigMap)?.map(Arc::new),
    };
    match decide_configmap(configmap, observed.as_deref(), &owner_uid) {
        ConfigMapDecision::Keep => Ok(Ok(())),
        ConfigMapDecision::Conflict => Ok(Err(format!(
            "ConfigMap {namespace}/{name} exists and was not created by this TenantAccess: it was left alone and the Clerk template is not synced; delete or rename that ConfigMap, or rename this TenantAccess (the ConfigMap is always <name>{CLERK_TEMPLATE_CONFIGMAP_SUFFIX})"
        ))),
        ConfigMapDecision::Create => {
            // A create, not an apply: a ConfigMap someone made since the read makes it fail
            // (409, retried) instead of being merged into.
            let params =
                kube::api::PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
            api.create(&params, configmap).await.map_err(Error::WriteConfigMap)?;
            Ok(Ok(()))
        }
        ConfigMapDecision::Update => {
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(configmap))
                .await
                .map_err(Error::WriteConfigMap)?;
            Ok(Ok(()))
        }
    }
}

/// How long a reconcile waits for the first list of managed ConfigMaps before reading one.
const CONFIGMAP_LIST_PATIENCE: Duration = Duration::from_secs(10);

/// The cached managed ConfigMap of that name, once the cache has its first list (bounded wait).
async fn managed_configmap(ctx: &Context, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
    let _ =
        tokio::time::timeout(CONFIGMAP_LIST_PATIENCE, ctx.caches.managed_configmaps.wait_until_ready()).await;
    ctx.caches.managed_configmaps.get(&ObjectRef::new(name).within(namespace))
}

/// Patches each listed workload's pod template with the new revision, when the workload opted in
/// with the label [`LABEL_RESTART_ON_TOKEN_CHANGE`]: `true` (read first; without it the
/// workload is left alone). Failures and refusals are warned about and do not block the token.
async fn rollout_restart(access: &TenantAccess, validated: &ValidatedAccess, revision: i64, ctx: &Context) {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    let Some(output) = &validated.secret else { return };
    for (kind, name) in &output.rollout_restart_targets {
        let (client, namespace) = (ctx.client.clone(), validated.namespace.as_str());
        let result = match kind.as_str() {
            "Deployment" => restart(&Api::<Deployment>::namespaced(client, namespace), name, revision).await,
            "StatefulSet" => {
                restart(&Api::<StatefulSet>::namespaced(client, namespace), name, revision).await
            }
            _ => restart(&Api::<DaemonSet>::namespaced(client, namespace), name, revision).await,
        };
        match result {
            Ok(Restart::Done) => {
                ctx.events.publish(
                    access,
                    EventType::Normal,
                    "RolloutRestarted",
                    "RolloutRestart",
                    &format!("{kind} {name} restarted for token revision {revision}"),
                );
            }
            Ok(Restart::NotOptedIn) => {
                ctx.events.publish(
                    access,
                    EventType::Warning,
                    "RolloutRestartRefused",
                    "RolloutRestart",
                    &format!(
                        "{kind} {name} was not restarted: it does not opt in; add the label {LABEL_RESTART_ON_TOKEN_CHANGE}: \"true\" to the {kind} (its metadata, not its pod template) to let the operator restart it on token changes"
                    ),
                );
            }
            Err(source) => {
                let error = Error::RolloutRestart { kind: kind.clone(), name: name.clone(), source };
                ctx.events.publish(
                    access,
                    EventType::Warning,
                    "RolloutRestartFailed",
                    "RolloutRestart",
                    &error.redacted(),
                );
            }
        }
    }
}

/// What a rollout restart did.
enum Restart {
    /// The pod template carries the new revision.
    Done,
    /// The workload lacks the opt-in label: not patched.
    NotOptedIn,
}

/// Restarts one workload when it opted in. (No resourceVersion precondition: the workload's
/// status changes often, and a restart must not fail for that.)
async fn restart<K>(api: &Api<K>, name: &str, revision: i64) -> Result<Restart, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let workload = api.get(name).await?;
    if !restart_opted_in(workload.meta().labels.as_ref()) {
        return Ok(Restart::NotOptedIn);
    }
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {ANNOTATION_REVISION: revision.to_string()}}}},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(Restart::Done)
}

/// Whether a workload's labels opt it in to rollout restarts (exactly `"true"`).
fn restart_opted_in(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(LABEL_RESTART_ON_TOKEN_CHANGE)).is_some_and(|v| v == "true")
}

/// The status being built by one reconcile.
struct Report {
    previous: TenantAccessStatus,
    status: TenantAccessStatus,
    generation: Option<i64>,
    now: Timestamp,
}

impl Report {
    fn new(access: &TenantAccess, previous: TenantAccessStatus, now: Timestamp) -> Self {
        let mut status = previous.clone();
        status.observed_generation = access.meta().generation;
        Self { previous, status, generation: access.meta().generation, now }
    }

    fn set(&mut self, condition: DesiredCondition) {
        set_condition(&mut self.status.conditions, condition, self.generation, self.now);
    }

    /// Nothing is issued: Ready and TokenIssued false with the reason. What was issued before
    /// stays where it is.
    fn refuse(&mut self, reason: &'static str, message: &str) {
        self.set(DesiredCondition::fails(condition::READY, reason, message));
        self.set(DesiredCondition::fails(condition::TOKEN_ISSUED, reason, message));
        self.status.failed_attempts = Some(self.previous.failed_attempts.unwrap_or(0).saturating_add(1));
    }

    /// Ready false for a reason that does not concern the token (e.g. Clerk sync).
    fn not_ready(&mut self, reason: &'static str, message: &str) {
        self.set(DesiredCondition::fails(condition::READY, reason, message));
    }

    fn ready(&mut self, validated: &ValidatedAccess) {
        let mut outputs = Vec::new();
        if let Some(secret) = &validated.secret {
            outputs.push(format!("token in Secret {}", secret.name));
        }
        if validated.clerk_template.is_some() {
            outputs.push(format!("Clerk template in ConfigMap {}", clerk_configmap_name(&validated.name)));
        }
        self.set(DesiredCondition::holds(condition::READY, reason::READY, outputs.join("; ")));
        self.status.failed_attempts = None;
    }

    /// Writes the status if it changed, and announces a new refusal once.
    async fn finish(self, ctx: &Context, access: &TenantAccess) -> Result<(), Error> {
        let was = find(&self.previous.conditions, condition::READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
        let now = find(&self.status.conditions, condition::READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
        if let Some((status, reason, message)) = &now
            && status == "False"
            && was.as_ref() != now.as_ref()
        {
            ctx.events.publish(access, EventType::Warning, reason, "Reconcile", message);
        }
        // failedAttempts alone never causes a write: a status write triggers the next reconcile,
        // and a counter that changes on every pass would turn a refusal into a busy loop.
        let unchanged =
            TenantAccessStatus { failed_attempts: self.previous.failed_attempts, ..self.status.clone() };
        if unchanged == self.previous {
            return Ok(());
        }
        let api: Api<TenantAccess> =
            Api::namespaced(ctx.client.clone(), &access.namespace().unwrap_or_default());
        let written = crate::apply::apply_status(&api, &access.name_any(), &self.status)
            .await
            .map_err(Error::WriteStatus)?;
        ctx.last_writes.wrote_status(
            &access.namespace().unwrap_or_default(),
            &access.name_any(),
            written.metadata.resource_version,
            self.status,
        );
        Ok(())
    }
}

/// Backoff on transient errors. (The signature is the one `Controller::run` expects.)
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(access: Arc<CachedTenantAccess>, error: &Error, ctx: Arc<Context>) -> Action {
    let (attempts, delay) = ctx.record_failure(access.as_ref());
    tracing::warn!(namespace = %access.namespace_name(), name = %access.object_name(), attempts, category = error.category(), error = %error.redacted(), "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_label_value_true_opts_a_workload_in_to_restarts() {
        let labels = |value: &str| {
            std::collections::BTreeMap::from([(LABEL_RESTART_ON_TOKEN_CHANGE.to_owned(), value.to_owned())])
        };
        assert!(restart_opted_in(Some(&labels("true"))));
        for refused in ["false", "True", "yes", ""] {
            assert!(!restart_opted_in(Some(&labels(refused))), "{refused:?}");
        }
        assert!(!restart_opted_in(None));
        assert!(!restart_opted_in(Some(&std::collections::BTreeMap::from([(
            "app".to_owned(),
            "web".to_owned()
        )]))));
    }
}
