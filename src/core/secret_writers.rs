//! Who else writes a Secret. A rotation writes the refreshed admin token into its Secret; a tool
//! that manages that Secret from a source of its own (External Secrets, Sealed Secrets, a GitOps
//! tool, Helm) writes its source's value back at its next sync: the old token, which Tinybird
//! refuses from the refresh on. The operator cannot update that source, so it says so.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The words by which a rotation's record and event say that another tool manages the
/// admin-token Secret (`tenant-access revoke` warns on them).
pub const MANAGED_ELSEWHERE: &str = "the admin-token Secret is managed by";

/// Labels and annotations by which GitOps and packaging tools mark what they manage, with the
/// tool's name (`None`: the value names the tool).
const MARKS: [(&str, Option<&str>); 5] = [
    ("argocd.argoproj.io/tracking-id", Some("Argo CD")),
    ("argocd.argoproj.io/instance", Some("Argo CD")),
    ("kustomize.toolkit.fluxcd.io/name", Some("Flux")),
    ("helm.toolkit.fluxcd.io/name", Some("Flux")),
    ("app.kubernetes.io/managed-by", None),
];

/// What a rotation means for an admin-token Secret that `manager` manages too (the event at the
/// refresh and the completed record say it).
#[must_use]
pub fn rotation_note(manager: &str) -> String {
    format!(
        "{MANAGED_ELSEWHERE} {manager}, which writes its own source's value back at its next sync: the old admin token, which Tinybird refuses since the refresh. Copy the new token from this Secret into that source now"
    )
}

/// Who else manages a Secret, said for people (`ExternalSecret tinybird-admin (its owner)`,
/// `Argo CD (annotation argocd.argoproj.io/tracking-id)`); `None` when nothing says so.
#[must_use]
pub fn managed_elsewhere(meta: &ObjectMeta) -> Option<String> {
    if let Some(owner) = meta.owner_references.as_ref().and_then(|owners| owners.first()) {
        return Some(format!("{} {} (its owner)", owner.kind, owner.name));
    }
    let labels = meta.labels.as_ref();
    let annotations = meta.annotations.as_ref();
    MARKS.iter().find_map(|(key, tool)| {
        let (place, value) = match (labels.and_then(|l| l.get(*key)), annotations.and_then(|a| a.get(*key))) {
            (Some(value), _) => ("label", value),
            (None, Some(value)) => ("annotation", value),
            (None, None) => return None,
        };
        Some(format!("{} ({place} {key})", tool.unwrap_or(value)))
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    #[test]
    fn an_owner_is_named_first() {
        let meta = ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                kind: "ExternalSecret".into(),
                name: "tinybird-admin".into(),
                ..OwnerReference::default()
            }]),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "Helm".to_owned())].into()),
            ..ObjectMeta::default()
        };
        assert_eq!(managed_elsewhere(&meta).as_deref(), Some("ExternalSecret tinybird-admin (its owner)"));
    }

    #[test]
    fn gitops_and_packaging_marks_name_the_tool() {
        let labelled = |key: &str, value: &str| ObjectMeta {
            labels: Some([(key.to_owned(), value.to_owned())].into()),
            ..ObjectMeta::default()
        };
        let annotated = |key: &str| ObjectMeta {
            annotations: Some([(key.to_owned(), "app:/Secret:ns/tb".to_owned())].into()),
            ..ObjectMeta::default()
        };
        assert_eq!(
            managed_elsewhere(&annotated("argocd.argoproj.io/tracking-id")).as_deref(),
            Some("Argo CD (annotation argocd.argoproj.io/tracking-id)")
        );
        assert_eq!(
            managed_elsewhere(&labelled("kustomize.toolkit.fluxcd.io/name", "apps")).as_deref(),
            Some("Flux (label kustomize.toolkit.fluxcd.io/name)")
        );
        assert_eq!(
            managed_elsewhere(&labelled("app.kubernetes.io/managed-by", "Helm")).as_deref(),
            Some("Helm (label app.kubernetes.io/managed-by)")
        );
    }

    #[test]
    fn a_secret_made_by_hand_is_nobody_elses() {
        let meta = ObjectMeta {
            labels: Some([("team".to_owned(), "platform".to_owned())].into()),
            annotations: Some(
                [("tenantaccess.dev/allowed-workspaces".to_owned(), "analytics".to_owned())].into(),
            ),
            ..ObjectMeta::default()
        };
        assert_eq!(managed_elsewhere(&meta), None);
    }
}
