//! The status step of the TenantAccess reconciler: the status being built by one reconcile
//! (conditions, token, endpoints), the health probes it registers, and the one status write.

use crate::adapters::events::EventType;
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::workspace_cache::WorkspaceKey;
use crate::adapters::health::{EndpointHealth, ProbePlan, summarize};
use std::collections::{BTreeMap, HashSet};

use crate::api::{EndpointStatus, ParamIsolation, TenantAccess, TenantAccessStatus};
use crate::core::conditions::{
    DesiredCondition, OutputState, find, ready_condition, remove_condition, set_condition,
};
use crate::core::desired::clerk_configmap_name;
use crate::core::isolation_report;
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::{ValidatedAccess, WorkspaceKind};
use crate::core::well_known::{condition, reason};
use crate::runtime::health::AccessKey;

/// Registers the probes of a TenantAccess, asks for a key check when Tinybird rejected a token
/// the operator believes valid (quietly: see [`crate::core::key_refusal`]), and reports health
/// (status changes only on flips). Returns the pipes it probes (`None`: health checks off).
pub(super) fn health_stage(
    access: &TenantAccess,
    validated: &ValidatedAccess,
    signer: &SigningWorkspace,
    issued_jwt: Option<&str>,
    ctx: &Context,
    report: &mut Report,
) -> Option<HashSet<String>> {
    let key = AccessKey::new(&validated.namespace, &validated.name);
    let Some(plan) = ProbePlan::for_access(validated, signer, issued_jwt) else {
        stop_probes(ctx, report, &validated.namespace, &validated.name);
        return None;
    };
    let probed = plan.probed_resources().map(str::to_owned).collect();
    // After a restart, the endpoints keep the verdicts the status holds until probed again.
    let last_reported =
        report.previous.endpoints.iter().filter_map(EndpointHealth::from_status).collect::<Vec<_>>();
    ctx.health.resume(key.clone(), plan, last_reported);
    report_health(access, validated, &key, ctx, report);
    Some(probed)
}

/// The health part of [`health_stage`]: a key check if one was flagged, and the endpoints'
/// verdicts.
fn report_health(
    access: &TenantAccess,
    validated: &ValidatedAccess,
    key: &AccessKey,
    ctx: &Context,
    report: &mut Report,
) {
    if ctx.health.take_key_check(key) {
        let workspace = WorkspaceKey {
            kind: validated.workspace_kind,
            namespace: if validated.workspace_kind == WorkspaceKind::Namespaced {
                validated.namespace.clone()
            } else {
                String::new()
            },
            name: validated.workspace_name.clone(),
        };
        ctx.admin_checks.force(workspace);
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
        // Not an alarm (no event): during a routine rotation the key was refreshed at Tinybird a
        // moment before the Secret changes. The workspace reports `Unauthorized` (and every
        // dependent its refusal) only if Tinybird still refuses the key once the grace is over.
        tracing::info!(workspace = %validated.workspace_name, "Tinybird rejected the signature of a token that should be valid: checking the workspace's admin token with Tinybird");
    }
    let Some(endpoints) = ctx.health.endpoints(key) else { return };
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
pub(super) fn stop_probes(ctx: &Context, report: &mut Report, namespace: &str, name: &str) {
    let key = AccessKey::new(namespace, name);
    ctx.health.unregister(&key);
    remove_condition(&mut report.status.conditions, condition::ENDPOINTS_HEALTHY);
    remove_condition(&mut report.status.conditions, condition::PIPES_ISOLATED);
    report.status.endpoints.clear();
}

/// Reports whether each granted pipe's SQL filters by the params this TenantAccess pins
/// ([`crate::core::isolation_report`]), from the verdicts judged
/// ([`super::isolation_gate::reported`]): `status.endpoints[].isolation`, the `PipesIsolated`
/// condition, and an event for each verdict that changed (and for a first verdict that is
/// neither `Enforced` nor `Optional`).
pub(super) fn isolation_stage(
    access: &TenantAccess,
    judged: &BTreeMap<&str, Vec<ParamIsolation>>,
    ctx: &Context,
    report: &mut Report,
) {
    let outcome = isolation_report::report(&mut report.status.endpoints, &report.previous.endpoints, judged);
    for (pipe, param, before, now) in outcome.changed {
        let safe = now == "Enforced" || now == "Optional";
        if before.is_none() && safe {
            continue;
        }
        let (type_, reason) =
            if safe { (EventType::Normal, "PipeIsolated") } else { (EventType::Warning, "PipeNotIsolated") };
        let was = before.map(|before| format!(" (was {before})")).unwrap_or_default();
        ctx.events.publish(
            access,
            type_,
            reason,
            "AnalysePipe",
            &format!("pipe {pipe}: param {param} is {now}{was}"),
        );
    }
    if let Some(condition) = outcome.condition {
        report.set(condition);
    }
}

/// The status being built by one reconcile.
pub(super) struct Report {
    pub(super) previous: TenantAccessStatus,
    pub(super) status: TenantAccessStatus,
    generation: Option<i64>,
    pub(super) now: Timestamp,
    /// Why the token, or the Clerk template, is not current, as set by this reconcile.
    token_failure: Option<(&'static str, String)>,
    clerk_failure: Option<(&'static str, String)>,
}

impl Report {
    pub(super) fn new(access: &TenantAccess, previous: TenantAccessStatus, now: Timestamp) -> Self {
        let mut status = previous.clone();
        status.observed_generation = access.meta().generation;
        let generation = access.meta().generation;
        Self { previous, status, generation, now, token_failure: None, clerk_failure: None }
    }

    pub(super) fn set(&mut self, condition: DesiredCondition) {
        let failure = (!condition.status).then(|| (condition.reason, condition.message.clone()));
        match condition.type_ {
            condition::TOKEN_ISSUED => self.token_failure = failure,
            condition::CLERK_TEMPLATE_SYNCED => self.clerk_failure = failure,
            _ => {}
        }
        set_condition(&mut self.status.conditions, condition, self.generation, self.now);
    }

    /// `Ready` from the outputs as this reconcile left them ([`ready_condition`]).
    fn readiness(&self, validated: &ValidatedAccess) -> DesiredCondition {
        let state = |requested: Option<String>, failure: &Option<(&'static str, String)>| match (
            requested, failure,
        ) {
            (None, _) => OutputState::NotRequested,
            (Some(_), Some((reason, message))) => OutputState::Failed { reason, message: message.clone() },
            (Some(what), None) => OutputState::Usable(what),
        };
        let token = validated.secret.as_ref().map(|secret| format!("token in Secret {}", secret.name));
        let clerk = validated
            .clerk_template
            .as_ref()
            .map(|_| format!("Clerk template in ConfigMap {}", clerk_configmap_name(&validated.name)));
        ready_condition(&state(token, &self.token_failure), &state(clerk, &self.clerk_failure))
    }

    /// Nothing is issued: Ready and TokenIssued false with the reason. What was issued before
    /// stays where it is.
    pub(super) fn refuse(&mut self, reason: &'static str, message: &str) {
        self.set(DesiredCondition::fails(condition::READY, reason, message));
        self.set(DesiredCondition::fails(condition::TOKEN_ISSUED, reason, message));
        self.status.failed_attempts = Some(self.previous.failed_attempts.unwrap_or(0).saturating_add(1));
    }

    /// The Clerk template is not synced (`condition`, a failing `ClerkTemplateSynced`): `Ready`
    /// says what that leaves usable (a current token Secret stays Ready, `Degraded`). Comes after
    /// the token's outcome is set.
    pub(super) fn clerk_failed(&mut self, validated: &ValidatedAccess, condition: DesiredCondition) {
        self.set(condition);
        let ready = self.readiness(validated);
        self.set(ready);
    }

    pub(super) fn ready(&mut self, validated: &ValidatedAccess) {
        let ready = self.readiness(validated);
        self.set(ready);
        self.status.failed_attempts = None;
    }

    /// Writes the status if it changed, and announces a new refusal (or degradation) once.
    pub(super) async fn finish(self, ctx: &Context, access: &TenantAccess) -> Result<(), Error> {
        let was = find(&self.previous.conditions, condition::READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
        let now = find(&self.status.conditions, condition::READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
        if let Some((status, reason, message)) = &now
            && (status == "False" || reason == reason::DEGRADED)
            && was.as_ref() != now.as_ref()
        {
            ctx.events.publish(access, EventType::Warning, reason, "Reconcile", message);
            // Logged once, when it starts (the reconciles that keep it say nothing new).
            tracing::warn!(%reason, detail = %crate::core::redact::redact(message, &[]), "not ready");
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
        if self.previous.token.is_some() && self.status.token.is_none() {
            // The token goes whole. A server-side apply removes only the fields its manager owns:
            // a field of status.token another manager set (an earlier version's, a person's)
            // would stay, alone, and the API server would refuse the status as invalid.
            let patch = serde_json::json!({"status": {"token": null}});
            api.patch_status(
                &access.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map_err(Error::WriteStatus)?;
        }
        let written = crate::adapters::apply::apply_status(&api, &access.name_any(), &self.status)
            .await
            .map_err(Error::WriteStatus)?;
        ctx.ledger.last_writes.wrote_status(
            &access.namespace().unwrap_or_default(),
            &access.name_any(),
            written.metadata.resource_version,
            self.status,
        );
        Ok(())
    }
}
