//! The write step of the TenantAccess reconciler: what the plan decided, applied to the
//! cluster (the token Secret, the Clerk template ConfigMap, the finalizer, rollout restarts) and
//! to Clerk, each write reported in the status being built.

use std::time::Duration;

use crate::adapters::events::EventType;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::clerk_sync::{self, SyncOutcome, has_finalizer};
use super::context::Context;
use super::error::Error;
use super::observe::{ObservedSecret, SECRET_LIST_PATIENCE, SeenConfigMap};
use super::workspace_cache::WorkspaceEntry;
use crate::adapters::apply::Ownership;
use crate::api::{SecretObserved, TenantAccess, TenantAccessStatus, TokenStatus};
use crate::core::conditions::{DesiredCondition, remove_condition};
use crate::core::desired::{IssuedToken, clerk_configmap_name};
use crate::core::reconcile::decide::{ConfigMapDecision, decide_configmap, is_owned_by};
use crate::core::reconcile::plan::{ClerkPlan, Issued, Kept, TokenPlan};
use crate::core::restarts::{self, RestartDecision, RestartPolicy, RestartedFor, TokenIdentity};
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::{DeletionPolicy, ValidatedAccess};
use crate::core::well_known::{
    CLERK_TEMPLATE_CONFIGMAP_SUFFIX, FIELD_MANAGER, FINALIZER, LABEL_RESTART_ON_TOKEN_CHANGE, condition,
    reason,
};

use super::report::Report;

/// Writes what the plan decided for the Clerk template: its ConfigMap, the template in Clerk,
/// the finalizer; or, with the output removed, deletes them. Returns when to retry a failure.
pub(super) async fn write_clerk(
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
        let failed =
            DesiredCondition::fails(condition::CLERK_TEMPLATE_SYNCED, reason::CONFIGMAP_CONFLICT, conflict);
        report.clerk_failed(validated, failed);
        return Ok(Some(ctx.retries.failed(access).1));
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
            report.clerk_failed(validated, condition);
            Ok(Some(retry_after))
        }
        // Waiting for Clerk's rate limit is not a failure: Ready is left as it was.
        SyncOutcome::Waiting { condition, retry_after } => {
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
            clerk_sync::delete_remote(access, credentials, id, ctx, why, false).await?;
        }
        report.status.clerk_template = None;
    }
    if has_finalizer(access) {
        set_finalizer(access, ctx, false).await?;
    }
    let (namespace, name) = (access.namespace().unwrap_or_default(), access.name_any());
    delete_configmap(access, ctx, &namespace, &clerk_configmap_name(&name)).await
}

/// Removes the token from this TenantAccess's Secret: the Secret stays, with its other keys, so
/// that apps see a missing token rather than a missing Secret.
pub(super) async fn revoke_token(
    access: &TenantAccess,
    ctx: &Context,
    report: &mut Report,
    why: &str,
) -> Result<(), Error> {
    let namespace = access.namespace().unwrap_or_default();
    let secret_name =
        access.spec.secret.as_ref().and_then(|s| s.name.clone()).unwrap_or_else(|| access.name_any());
    let owner_uid = access.uid().unwrap_or_default();
    ctx.ledger.token_secrets.synced_within(SECRET_LIST_PATIENCE).await;
    let has_token = match ctx.ledger.token_secrets.get(&namespace, &secret_name) {
        Some(digest) => digest.controlled_by(&owner_uid) && digest.may_have_token(),
        None => false,
    };
    if !has_token {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({"data": {crate::core::well_known::secret_keys::TOKEN: null}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    let written =
        api.patch(&secret_name, &params, &Patch::Merge(&patch)).await.map_err(Error::WriteSecret)?;
    ctx.ledger.wrote_secret(&written);
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

/// Adds or removes the Clerk finalizer.
pub(super) async fn set_finalizer(access: &TenantAccess, ctx: &Context, present: bool) -> Result<(), Error> {
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

/// What became of the token Secret.
pub(super) enum TokenOutcome {
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
        /// When a workload restart held back by `restartMinInterval` is due.
        restart_after: Option<Duration>,
    },
}

/// Writes what the plan decided for the token Secret.
pub(super) async fn write_token(
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
            let seen = apply_secret(ctx, &secrets, &secret, ownership).await?;
            ctx.metrics
                .tokens_signed
                .get_or_create(&crate::runtime::metrics::IssueLabels { reason: event_reason })
                .inc();
            report.status.token = Some(TokenStatus { secret_observed: seen, ..status });
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
            let restart_after =
                rollout_restart(access, validated, (&token, revision, signer), true, ctx).await;
            Ok(TokenOutcome::Written { renewal_time: token.renewal_time, jwt: token.jwt, restart_after })
        }
        TokenPlan::Keep(kept) => {
            let Kept { token, revision, repair, status, condition } = *kept;
            // As observed, unless repaired.
            let mut seen = observed.and_then(ObservedSecret::seen);
            if let Some(desired) = repair {
                seen = apply_secret(ctx, &secrets, &desired, Ownership::Force).await?;
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
            report.status.token = Some(TokenStatus { secret_observed: seen, ..status });
            report.set(condition);
            // Workloads converge to the token too: a restart deferred or failed earlier is made.
            let restart_after =
                rollout_restart(access, validated, (&token, revision, signer), false, ctx).await;
            Ok(TokenOutcome::Written { renewal_time: token.renewal_time, jwt: token.jwt, restart_after })
        }
    }
}

/// Server-side applies a token Secret. `Ownership::NoForce` is for a Secret believed absent (the
/// Secret watch never saw its name): a Secret created meanwhile by someone else with a conflicting
/// field then makes it fail (409) instead of being taken over, and the next attempt reads the
/// Secret and decides again (SecretConflict). Returns the Secret as written, for
/// `status.token.secretObserved`.
async fn apply_secret(
    ctx: &Context,
    secrets: &Api<Secret>,
    secret: &Secret,
    ownership: Ownership,
) -> Result<Option<SecretObserved>, Error> {
    let written = match crate::adapters::apply::apply_secret(secrets, secret, ownership).await {
        Ok(written) => written,
        Err(error) => {
            if matches!(&error, kube::Error::Api(status) if status.code == 409) {
                let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
                ctx.ledger
                    .known_secrets
                    .exists(namespace, secret.metadata.name.as_deref().unwrap_or_default());
            }
            return Err(Error::WriteSecret(error));
        }
    };
    ctx.ledger.wrote_secret(&written);
    Ok(written.metadata.resource_version.clone().map(|resource_version| SecretObserved {
        resource_version,
        data_hash: crate::core::desired::secret_data_hash(&written),
    }))
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
    let observed = super::observe::configmap(ctx, &namespace, &name, &owner_uid).await?;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    match decide_configmap(configmap, observed.as_ref().map(SeenConfigMap::as_observed), &owner_uid) {
        ConfigMapDecision::Keep => Ok(Ok(())),
        ConfigMapDecision::Conflict => Ok(Err(format!(
            "ConfigMap {namespace}/{name} exists and was not created by this TenantAccess: it was left alone and the Clerk template is not synced; delete or rename that ConfigMap, or rename this TenantAccess (the ConfigMap is always <name>{CLERK_TEMPLATE_CONFIGMAP_SUFFIX})"
        ))),
        ConfigMapDecision::Create => {
            // A create, not an apply: a ConfigMap someone made since the read makes it fail
            // (409, retried) instead of being merged into.
            let params =
                kube::api::PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
            let written = api.create(&params, configmap).await.map_err(Error::WriteConfigMap)?;
            ctx.ledger.template_configmaps.seen(&written);
            Ok(Ok(()))
        }
        ConfigMapDecision::Update => {
            let written = api
                .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(configmap))
                .await
                .map_err(Error::WriteConfigMap)?;
            ctx.ledger.template_configmaps.seen(&written);
            Ok(Ok(()))
        }
    }
}

/// Brings each listed workload to the token as the restart policy asks
/// ([`crate::core::restarts`]): a workload that opted in with the label
/// [`LABEL_RESTART_ON_TOKEN_CHANGE`]: `true` and was not restarted for what the policy counts
/// gets its pod template annotated (which restarts it), unless `restartMinInterval` holds it back.
/// A workload that did not opt in is left alone, and said so when a token was just `issued`.
/// Failures are warned about and never block the token. Returns when a held-back restart is due.
async fn rollout_restart(
    access: &TenantAccess,
    validated: &ValidatedAccess,
    (token, revision, signer): (&IssuedToken, i64, &SigningWorkspace),
    issued: bool,
    ctx: &Context,
) -> Option<Duration> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    let output = validated.secret.as_ref()?;
    let identity =
        TokenIdentity { revision, key: &signer.signing_key_fingerprint, claims: &token.claims_hash };
    let mut due: Option<Duration> = None;
    for (kind, name) in &output.rollout_restart_targets {
        let (client, namespace) = (ctx.client.clone(), validated.namespace.as_str());
        let policy = (output.restart, identity, ctx.now());
        let result = match kind.as_str() {
            "Deployment" => restart(&Api::<Deployment>::namespaced(client, namespace), name, policy).await,
            "StatefulSet" => restart(&Api::<StatefulSet>::namespaced(client, namespace), name, policy).await,
            _ => restart(&Api::<DaemonSet>::namespaced(client, namespace), name, policy).await,
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
            Ok(Restart::HeldBack(left)) => {
                due = Some(due.map_or(left, |d| d.min(left)));
                if issued {
                    ctx.events.publish(
                        access,
                        EventType::Normal,
                        "RolloutRestartDeferred",
                        "RolloutRestart",
                        &format!(
                            "{kind} {name} restarts for token revision {revision} in {}s (spec.secret.restartMinInterval)",
                            left.as_secs()
                        ),
                    );
                }
            }
            Ok(Restart::NotOptedIn) if issued => {
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
            Err(source) if issued || !crate::adapters::kube_error::is_not_found(&source) => {
                let error = Error::RolloutRestart { kind: kind.clone(), name: name.clone(), source };
                ctx.events.publish(
                    access,
                    EventType::Warning,
                    "RolloutRestartFailed",
                    "RolloutRestart",
                    &error.redacted(),
                );
            }
            // Up to date; or, between new tokens, a refusal or a missing workload already said.
            Ok(Restart::UpToDate | Restart::NotOptedIn) | Err(_) => {}
        }
    }
    due
}

/// What a rollout restart did.
enum Restart {
    /// The pod template now records the token: the workload restarts.
    Done,
    /// The workload already runs with what the policy asks for.
    UpToDate,
    /// `restartMinInterval` holds the restart back for this long.
    HeldBack(Duration),
    /// The workload lacks the opt-in label: not patched.
    NotOptedIn,
}

/// Restarts one workload when it opted in and the policy asks for it. (No resourceVersion
/// precondition: the workload's status changes often, and a restart must not fail for that.)
async fn restart<K>(
    api: &Api<K>,
    name: &str,
    (policy, token, now): (RestartPolicy, TokenIdentity<'_>, Timestamp),
) -> Result<Restart, kube::Error>
where
    K: Resource + PodTemplated + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let workload = api.get(name).await?;
    if !restart_opted_in(workload.meta().labels.as_ref()) {
        return Ok(Restart::NotOptedIn);
    }
    let restarted = RestartedFor::from_annotations(workload.template_annotations());
    match restarts::decide(policy, token, &restarted, now) {
        RestartDecision::UpToDate => Ok(Restart::UpToDate),
        RestartDecision::After(left) => Ok(Restart::HeldBack(left)),
        RestartDecision::Now => {
            let patch = serde_json::json!({
                "spec": {"template": {"metadata": {"annotations": restarts::annotations(token, now)}}},
            });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok(Restart::Done)
        }
    }
}

/// A workload with a pod template (what a rollout restart annotates).
trait PodTemplated {
    /// The pod template's annotations.
    fn template_annotations(&self) -> Option<&std::collections::BTreeMap<String, String>>;
}

macro_rules! pod_templated {
    ($($kind:ty),*) => {$(
        impl PodTemplated for $kind {
            fn template_annotations(&self) -> Option<&std::collections::BTreeMap<String, String>> {
                self.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()
            }
        }
    )*};
}

pod_templated!(
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::apps::v1::StatefulSet,
    k8s_openapi::api::apps::v1::DaemonSet
);

/// Whether a workload's labels opt it in to rollout restarts (exactly `"true"`).
fn restart_opted_in(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(LABEL_RESTART_ON_TOKEN_CHANGE)).is_some_and(|v| v == "true")
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
