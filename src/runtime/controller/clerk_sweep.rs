//! No Clerk template outlives its right. Each workspace with a usable Clerk connection keeps an
//! inventory of the templates it pushed (found by their markers, see
//! [`crate::core::template_sweep`]), listed from Clerk every [`INVENTORY_INTERVAL`], at once when
//! a namespace stops being admitted or the workspace's policy changes, and judged against the
//! caches every [`TICK`]: templates of a withdrawn namespace, and orphans that were not retained,
//! are deleted from Clerk, with an event on the workspace and a line in its
//! `status.clerkTemplates`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use super::context::Context;
use super::workspace_cache::WorkspaceKey;
use super::workspace_reconciler::{Workspace, workspace_key};
use crate::adapters::events::EventType;
use crate::api::{ClerkTemplatesStatus, RemovedClerkTemplate};
use crate::core::desired::clerk_workspace_marker;
use crate::core::reconcile::admit::cluster_workspace_admits;
use crate::core::template_sweep::{PushedTemplate, Removal, SweepFacts, judge, pushed_by};
use crate::core::validate::WorkspaceKind;
use crate::core::well_known::FIELD_MANAGER;

/// How often the inventories are judged against the caches (no Clerk call).
pub const TICK: Duration = Duration::from_secs(5);
/// How often a workspace lists its Clerk instance's templates when nothing asks for it sooner.
pub const INVENTORY_INTERVAL: Duration = Duration::from_secs(600);
/// How long after a failed listing the next one is tried.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// Removals kept in a workspace's status.
const REMOVALS_KEPT: usize = 10;

/// What a workspace knows of its templates in Clerk.
#[derive(Debug, Default)]
struct Inventory {
    /// When the templates were last listed (or a listing failed).
    listed_at: Option<Instant>,
    /// Whether the last listing failed.
    failed: bool,
    /// The policy the inventory was judged under (a change lists again).
    policy: String,
    /// The namespaces admitted at the last tick (one leaving lists again).
    admitted: BTreeSet<String>,
    /// The templates the workspace pushed.
    templates: Vec<PushedTemplate>,
}

impl Inventory {
    fn due(&self, now: Instant, policy: &str, admitted: &BTreeSet<String>) -> bool {
        let interval = if self.failed { RETRY_AFTER_FAILURE } else { INVENTORY_INTERVAL };
        self.listed_at.is_none_or(|at| now.duration_since(at) >= interval)
            || self.policy != policy
            || !self.admitted.is_subset(admitted)
    }
}

/// Runs the sweep until `shutdown`; nothing is judged before every cache is synced.
pub(super) async fn run(ctx: Arc<Context>, synced: Arc<AtomicBool>, shutdown: impl Future<Output = ()>) {
    let sweep = async {
        let mut inventories: HashMap<WorkspaceKey, Inventory> = HashMap::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if !synced.load(Ordering::SeqCst) {
                continue;
            }
            let mut seen = BTreeSet::new();
            for workspace in ctx.caches.workspaces.state() {
                if ctx.settings.serves(&workspace.namespace().unwrap_or_default()) {
                    seen.insert(sweep_workspace(workspace.as_ref(), &ctx, &mut inventories).await);
                }
            }
            for workspace in ctx.caches.cluster_workspaces.state() {
                seen.insert(sweep_workspace(workspace.as_ref(), &ctx, &mut inventories).await);
            }
            inventories.retain(|key, _| seen.contains(key));
        }
    };
    tokio::select! {
        () = sweep => {},
        () = shutdown => {},
    }
}

/// One workspace's turn: list if due, judge, remove. Returns its key.
async fn sweep_workspace<W: Workspace>(
    workspace: &W,
    ctx: &Context,
    inventories: &mut HashMap<WorkspaceKey, Inventory>,
) -> WorkspaceKey {
    let key = workspace_key(workspace);
    let Some(entry) = ctx.workspace_cache.current(&key, workspace.meta().generation) else { return key };
    let (Ok(signer), Some(Ok(credentials))) = (&entry.signer, &entry.clerk) else { return key };
    let Ok(client) = ctx.apis.clerk.get_or_create(&credentials.api_url, credentials.secret_key()) else {
        return key;
    };
    let spec = workspace.workspace_spec();
    let admitted = admitted_namespaces(W::KIND, &key.namespace, spec, ctx);
    let policy = serde_json::to_string(&spec.policy).unwrap_or_default();
    let inventory = inventories.entry(key.clone()).or_default();
    let now = Instant::now();
    if inventory.due(now, &policy, &admitted.known) {
        let marker = clerk_workspace_marker(W::KIND, &key.namespace, &key.name);
        match client.list_templates().await {
            Ok(remote) => {
                inventory.templates = remote
                    .iter()
                    .filter_map(|t| pushed_by(&t.id, &t.name, &t.claims, &marker, &signer.workspace_id))
                    .collect();
                inventory.failed = false;
            }
            Err(error) => {
                tracing::info!(workspace = %key.name, %error, "listing the Clerk templates failed; tried again later");
                inventory.failed = true;
            }
        }
        inventory.listed_at = Some(now);
        inventory.policy = policy;
    }
    inventory.admitted.clone_from(&admitted.known);

    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for template in std::mem::take(&mut inventory.templates) {
        // A namespace this operator does not serve has TenantAccesses it cannot see: never judged.
        if !ctx.settings.serves(&template.namespace) {
            kept.push(template);
            continue;
        }
        let facts = SweepFacts {
            namespace_admitted: admitted.verdict(&template.namespace),
            access_exists: ctx
                .caches
                .tenant_accesses
                .get(&ObjectRef::new(&template.access).within(&template.namespace))
                .is_some(),
        };
        let Some(removal) = judge(&template, facts) else {
            kept.push(template);
            continue;
        };
        // A withdrawal's deletion goes ahead of routine pushes.
        let remover = client.on_behalf_of(crate::adapters::clerk::Requester::urgent(&template.namespace));
        match remover.delete(&template.id).await {
            Ok(_) => removed.push((template, removal)),
            Err(error) => {
                tracing::info!(template = %template.name, %error, "removing a Clerk template failed; tried again at the next tick");
                kept.push(template);
            }
        }
    }
    inventory.templates = kept;
    if !removed.is_empty() {
        report(workspace, ctx, &removed).await;
    }
    key
}

/// The namespaces a workspace admits, as the caches tell.
struct Admitted {
    /// Namespaces known to be admitted.
    known: BTreeSet<String>,
    /// Namespaces whose admission cannot be told (a selector that does not evaluate).
    unknown: BTreeSet<String>,
    /// Whether the workspace admits only its own namespace (a TinybirdWorkspace).
    own: Option<String>,
}

impl Admitted {
    fn verdict(&self, namespace: &str) -> Option<bool> {
        if let Some(own) = &self.own {
            return Some(own == namespace);
        }
        if self.unknown.contains(namespace) {
            return None;
        }
        Some(self.known.contains(namespace))
    }
}

fn admitted_namespaces(
    kind: WorkspaceKind,
    own_namespace: &str,
    spec: &crate::api::WorkspaceSpec,
    ctx: &Context,
) -> Admitted {
    if kind == WorkspaceKind::Namespaced {
        return Admitted {
            known: BTreeSet::from([own_namespace.to_owned()]),
            unknown: BTreeSet::new(),
            own: Some(own_namespace.to_owned()),
        };
    }
    let mut admitted = Admitted { known: BTreeSet::new(), unknown: BTreeSet::new(), own: None };
    for namespace in ctx.caches.namespaces.state() {
        let name = namespace.name_any();
        match cluster_workspace_admits(spec, namespace.metadata.labels.as_ref()) {
            Ok(true) => {
                admitted.known.insert(name);
            }
            Ok(false) => {}
            Err(_) => {
                admitted.unknown.insert(name);
            }
        }
    }
    admitted
}

/// An event per removal on the workspace, and the removals at the head of its status.
async fn report<W: Workspace>(workspace: &W, ctx: &Context, removed: &[(PushedTemplate, Removal)]) {
    let now = Time(ctx.now());
    let mut lines: Vec<RemovedClerkTemplate> = removed
        .iter()
        .map(|(template, removal)| {
            ctx.events.publish(
                workspace,
                EventType::Normal,
                "ClerkTemplateRemoved",
                "SweepClerkTemplates",
                &format!(
                    "deleted Clerk template {} ({}) of TenantAccess {}/{}: {}",
                    template.name,
                    template.id,
                    template.namespace,
                    template.access,
                    removal.explain(template)
                ),
            );
            RemovedClerkTemplate {
                name: crate::core::redact::prefix(&template.name, 256).to_owned(),
                id: crate::core::redact::prefix(&template.id, 128).to_owned(),
                tenant_access: format!("{}/{}", template.namespace, template.access),
                reason: removal.reason().to_owned(),
                removed_at: now.clone(),
            }
        })
        .collect();
    lines.reverse();
    let previous = workspace.workspace_status().and_then(|s| s.clerk_templates.as_ref());
    lines.extend(previous.iter().flat_map(|p| p.removed.iter().cloned()));
    lines.truncate(REMOVALS_KEPT);
    let patch = serde_json::json!({"status": {"clerkTemplates": ClerkTemplatesStatus { removed: lines }}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    if let Err(error) = workspace
        .own_api(ctx.client.clone())
        .patch_status(&workspace.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(workspace = %workspace.name_any(), %error, "recording the removed Clerk templates in status failed");
    }
}
