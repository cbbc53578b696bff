//! Which Clerk templates have outlived their right: pure judgements over the templates a
//! workspace pushed (found by their markers) and the facts of the caches.
//!
//! Every template the operator pushes carries its TenantAccess (`tenant_access`), the pushing
//! workspace (`tenant_access_workspace`) and, when kept after its TenantAccess is deleted,
//! `tenant_access_retain`. A workspace removes, whatever the template's `deletionPolicy` (the
//! team's choice for its own deletions, not for the platform's withdrawals):
//! - every template of a namespace it no longer admits (its labels no longer match
//!   `allowedNamespaces`, or the namespace is gone);
//! - every template whose TenantAccess no longer exists, unless it is marked retained.
//!
//! A template of another workspace (another marker), or without the markers (pushed by hand or
//! by an earlier release and not updated since), is never touched.

use serde_json::Value;

use crate::core::desired::{CLERK_OWNER_CLAIM, CLERK_RETAIN_CLAIM, CLERK_WORKSPACE_CLAIM};

/// A template pushed by one workspace, as its markers tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedTemplate {
    /// Clerk's id.
    pub id: String,
    /// Template name.
    pub name: String,
    /// The TenantAccess's namespace.
    pub namespace: String,
    /// The TenantAccess's name.
    pub access: String,
    /// Kept after its TenantAccess's deletion (`deletionPolicy: Retain`).
    pub retained: bool,
}

/// The template, when its markers say `workspace` (a [`crate::core::desired::clerk_workspace_marker`])
/// pushed it for workspace id `workspace_id`.
#[must_use]
pub fn pushed_by(
    id: &str,
    name: &str,
    claims: &Value,
    workspace: &str,
    workspace_id: &str,
) -> Option<PushedTemplate> {
    if claims.get(CLERK_WORKSPACE_CLAIM)?.as_str()? != workspace
        || claims.get("workspace_id")?.as_str()? != workspace_id
    {
        return None;
    }
    let (namespace, access) = claims.get(CLERK_OWNER_CLAIM)?.as_str()?.split_once('/')?;
    if namespace.is_empty() || access.is_empty() {
        return None;
    }
    Some(PushedTemplate {
        id: id.to_owned(),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        access: access.to_owned(),
        retained: claims.get(CLERK_RETAIN_CLAIM).and_then(Value::as_bool) == Some(true),
    })
}

/// What the caches show of a template's TenantAccess and namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepFacts {
    /// Whether the workspace admits the namespace: `None` when that cannot be told (a selector
    /// that does not evaluate), which never removes anything.
    pub namespace_admitted: Option<bool>,
    /// Whether the TenantAccess exists.
    pub access_exists: bool,
}

/// Why a template is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Its namespace is no longer admitted by the workspace.
    Withdrawn,
    /// Its TenantAccess no longer exists and it was not retained.
    Orphaned,
}

impl Removal {
    /// The reason recorded in status and events.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::Withdrawn => "NamespaceWithdrawn",
            Self::Orphaned => "TenantAccessDeleted",
        }
    }

    /// The sentence naming why, for a template of `namespace/access`.
    #[must_use]
    pub fn explain(self, template: &PushedTemplate) -> String {
        match self {
            Self::Withdrawn => format!(
                "namespace {} is no longer admitted by the workspace (whatever its deletionPolicy: a withdrawal is the platform's)",
                template.namespace
            ),
            Self::Orphaned => format!(
                "its TenantAccess {}/{} no longer exists and the template was not retained",
                template.namespace, template.access
            ),
        }
    }
}

/// Whether a template pushed by the workspace is removed, and why.
#[must_use]
pub fn judge(template: &PushedTemplate, facts: SweepFacts) -> Option<Removal> {
    match facts.namespace_admitted {
        Some(false) => Some(Removal::Withdrawn),
        Some(true) if !facts.access_exists && !template.retained => Some(Removal::Orphaned),
        // Admitted and live (or retained), or admission unknown: never on a doubt.
        Some(true) | None => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const WORKSPACE: &str = "ClusterTinybirdWorkspace/shared";

    fn claims(retain: bool) -> Value {
        let mut claims = json!({"workspace_id": "ws-1", "name": "n", "tenant_access": "acme/dash",
            "tenant_access_workspace": WORKSPACE});
        if retain {
            claims["tenant_access_retain"] = json!(true);
        }
        claims
    }

    fn template(retain: bool) -> PushedTemplate {
        pushed_by("jtmpl_1", "dash", &claims(retain), WORKSPACE, "ws-1").unwrap()
    }

    #[test]
    fn finds_only_the_templates_the_workspace_pushed() {
        assert_eq!(template(true).namespace, "acme");
        assert!(template(true).retained && !template(false).retained);
        assert!(pushed_by("id", "n", &claims(false), "ClusterTinybirdWorkspace/other", "ws-1").is_none());
        assert!(pushed_by("id", "n", &claims(false), WORKSPACE, "ws-2").is_none());
        let hand_made = json!({"workspace_id": "ws-1", "tenant_access": "acme/dash"});
        assert!(pushed_by("id", "n", &hand_made, WORKSPACE, "ws-1").is_none());
        let broken =
            json!({"workspace_id": "ws-1", "tenant_access": "acme", "tenant_access_workspace": WORKSPACE});
        assert!(pushed_by("id", "n", &broken, WORKSPACE, "ws-1").is_none());
    }

    #[test]
    fn a_withdrawn_namespace_loses_every_template_retained_or_not() {
        for retain in [false, true] {
            for exists in [false, true] {
                let facts = SweepFacts { namespace_admitted: Some(false), access_exists: exists };
                assert_eq!(judge(&template(retain), facts), Some(Removal::Withdrawn));
            }
        }
    }

    #[test]
    fn an_orphan_is_removed_unless_retained() {
        let facts = SweepFacts { namespace_admitted: Some(true), access_exists: false };
        assert_eq!(judge(&template(false), facts), Some(Removal::Orphaned));
        assert_eq!(judge(&template(true), facts), None);
        let live = SweepFacts { namespace_admitted: Some(true), access_exists: true };
        assert_eq!(judge(&template(false), live), None);
    }

    #[test]
    fn nothing_is_removed_on_a_selector_that_cannot_be_evaluated() {
        let facts = SweepFacts { namespace_admitted: None, access_exists: false };
        assert_eq!(judge(&template(false), facts), None);
    }
}
