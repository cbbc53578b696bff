//! Which workspaces may use a Secret: the `tenantaccess.dev/allowed-workspaces` annotation that an
//! admin-token or Clerk-key Secret must carry before the operator reads it.
//!
//! A workspace makes the operator read a Secret and send it to the workspace's `apiUrl`. Without
//! an opt-in, whoever may create a workspace could use (or send elsewhere) any Secret of its
//! namespace. So the Secret names its users, as cert-manager's and External Secrets Operator's
//! secret references do: `<name>` (a TinybirdWorkspace of the Secret's namespace),
//! `ClusterTinybirdWorkspace/<name>` (its Secrets live in the cluster-resource namespace) or `*`
//! (every workspace that can reach the Secret), comma-separated. Pure: the controller asks with
//! the Secret's metadata alone, before it reads any data.

use std::fmt;

use crate::api::KIND_CLUSTER_WORKSPACE;
use crate::core::k8s_name_rules::is_dns_subdomain;
use crate::core::validate::WorkspaceKind;
use crate::core::well_known::ANNOTATION_ALLOWED_WORKSPACES;

/// Most entries an annotation may list (a bound on hostile input; real lists are short).
pub const MAX_ENTRIES: usize = 256;
/// Longest piece of an offending entry quoted back in a message.
const MAX_QUOTED: usize = 64;

/// One entry of the annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedWorkspace {
    /// `*`: every workspace that can reach the Secret.
    Any,
    /// `<name>`: the TinybirdWorkspace of that name in the Secret's namespace.
    Namespaced(String),
    /// `ClusterTinybirdWorkspace/<name>`.
    Cluster(String),
}

impl AllowedWorkspace {
    /// The entry naming this workspace, as it is written in the annotation.
    #[must_use]
    pub fn entry_for(kind: WorkspaceKind, name: &str) -> String {
        match kind {
            WorkspaceKind::Namespaced => name.to_owned(),
            WorkspaceKind::Cluster => format!("{KIND_CLUSTER_WORKSPACE}/{name}"),
        }
    }

    fn admits(&self, kind: WorkspaceKind, name: &str) -> bool {
        match (self, kind) {
            (Self::Any, _) => true,
            (Self::Namespaced(allowed), WorkspaceKind::Namespaced)
            | (Self::Cluster(allowed), WorkspaceKind::Cluster) => allowed == name,
            _ => false,
        }
    }
}

/// Why an annotation value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedAllowedWorkspaces {
    #[error("entry {position} is empty (a stray comma?): separate entries by single commas")]
    Empty { position: usize },
    #[error(
        "entry {position} {entry:?} is not a workspace name: write <name> for a TinybirdWorkspace of the Secret's namespace, ClusterTinybirdWorkspace/<name> or *"
    )]
    NotAName { position: usize, entry: String },
    #[error(
        "entry {position} {entry:?} names kind {kind:?}: only ClusterTinybirdWorkspace/<name> takes a kind (a TinybirdWorkspace is named alone)"
    )]
    UnknownKind { position: usize, entry: String, kind: String },
    #[error("it lists more than {MAX_ENTRIES} entries: use * to allow every workspace")]
    TooMany,
}

/// Parses an annotation value: entries separated by commas, each trimmed; no empty entry.
///
/// # Errors
/// An empty entry, an entry that is neither `*`, a Kubernetes name nor
/// `ClusterTinybirdWorkspace/<name>`, or more than [`MAX_ENTRIES`] entries.
pub fn parse(value: &str) -> Result<Vec<AllowedWorkspace>, MalformedAllowedWorkspaces> {
    let mut entries = Vec::new();
    for (index, raw) in value.split(',').enumerate() {
        if index == MAX_ENTRIES {
            return Err(MalformedAllowedWorkspaces::TooMany);
        }
        let position = index + 1;
        let entry = raw.trim();
        let quoted = || quote(entry);
        let parsed = match entry.split_once('/') {
            _ if entry.is_empty() => return Err(MalformedAllowedWorkspaces::Empty { position }),
            _ if entry == "*" => AllowedWorkspace::Any,
            None if is_dns_subdomain(entry) => AllowedWorkspace::Namespaced(entry.to_owned()),
            Some((KIND_CLUSTER_WORKSPACE, name)) if is_dns_subdomain(name) => {
                AllowedWorkspace::Cluster(name.to_owned())
            }
            Some((kind, _)) if kind != KIND_CLUSTER_WORKSPACE && is_kind_name(kind) => {
                return Err(MalformedAllowedWorkspaces::UnknownKind {
                    position,
                    entry: quoted(),
                    kind: quote(kind),
                });
            }
            _ => return Err(MalformedAllowedWorkspaces::NotAName { position, entry: quoted() }),
        };
        entries.push(parsed);
    }
    Ok(entries)
}

/// What looks like a kind (`TinybirdWorkspace`, `Deployment`): a capital, then alphanumerics.
fn is_kind_name(text: &str) -> bool {
    text.len() <= MAX_QUOTED
        && text.starts_with(|c: char| c.is_ascii_uppercase())
        && text.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A bounded copy of hostile text, for a message.
fn quote(text: &str) -> String {
    let mut quoted = text.to_owned();
    crate::core::redact::truncate(&mut quoted, MAX_QUOTED);
    quoted
}

/// The workspace asking to use a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretUser<'a> {
    /// Its kind.
    pub kind: WorkspaceKind,
    /// Its namespace (empty for a ClusterTinybirdWorkspace).
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
}

impl fmt::Display for SecretUser<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            WorkspaceKind::Namespaced => {
                write!(f, "{} {}/{}", self.kind.kind_name(), self.namespace, self.name)
            }
            WorkspaceKind::Cluster => write!(f, "{} {}", self.kind.kind_name(), self.name),
        }
    }
}

/// Why a workspace may not use a Secret. The message names the Secret, the annotation and the
/// entry to add; it never holds Secret data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretNotAllowed {
    #[error(
        "Secret {namespace}/{name} does not allow {user} to use it: it has no annotation {ANNOTATION_ALLOWED_WORKSPACES}; add it with the value {entry:?} (kubectl annotate secret -n {namespace} {name} {ANNOTATION_ALLOWED_WORKSPACES}={entry})"
    )]
    NotAnnotated { namespace: String, name: String, user: String, entry: String },
    #[error(
        "Secret {namespace}/{name} does not allow {user} to use it: its annotation {ANNOTATION_ALLOWED_WORKSPACES} does not list {entry:?}; add {entry:?} to it (comma-separated)"
    )]
    NotListed { namespace: String, name: String, user: String, entry: String },
    #[error(
        "Secret {namespace}/{name} allows no workspace: its annotation {ANNOTATION_ALLOWED_WORKSPACES} is malformed ({error}); fix it and list {entry:?} to let {user} use it"
    )]
    Malformed {
        namespace: String,
        name: String,
        user: String,
        entry: String,
        error: Box<MalformedAllowedWorkspaces>,
    },
    #[error(
        "{user} cannot use Secret {namespace}/{name}: a TinybirdWorkspace reads Secrets of its own namespace only"
    )]
    OtherNamespace { namespace: String, name: String, user: String },
}

/// Whether the Secret `secret_namespace/secret_name`, whose annotation
/// `tenantaccess.dev/allowed-workspaces` is `annotation` (None: absent), lets `user` read it.
/// A ClusterTinybirdWorkspace's Secret is in the cluster-resource namespace (the caller's
/// concern); a TinybirdWorkspace's must be in its own namespace. A malformed annotation allows
/// nobody.
///
/// # Errors
/// When the workspace is not allowed: the message says what to add.
pub fn check(
    secret_namespace: &str,
    secret_name: &str,
    annotation: Option<&str>,
    user: SecretUser<'_>,
) -> Result<(), SecretNotAllowed> {
    let (namespace, name) = (secret_namespace.to_owned(), secret_name.to_owned());
    let entry = AllowedWorkspace::entry_for(user.kind, user.name);
    let user_text = user.to_string();
    if user.kind == WorkspaceKind::Namespaced && user.namespace != secret_namespace {
        return Err(SecretNotAllowed::OtherNamespace { namespace, name, user: user_text });
    }
    let Some(annotation) = annotation else {
        return Err(SecretNotAllowed::NotAnnotated { namespace, name, user: user_text, entry });
    };
    match parse(annotation) {
        Err(error) => Err(SecretNotAllowed::Malformed {
            namespace,
            name,
            user: user_text,
            entry,
            error: Box::new(error),
        }),
        Ok(allowed) if allowed.iter().any(|allowed| allowed.admits(user.kind, user.name)) => Ok(()),
        Ok(_) => Err(SecretNotAllowed::NotListed { namespace, name, user: user_text, entry }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANALYTICS: SecretUser<'static> =
        SecretUser { kind: WorkspaceKind::Namespaced, namespace: "acme", name: "analytics" };
    const SHARED: SecretUser<'static> =
        SecretUser { kind: WorkspaceKind::Cluster, namespace: "", name: "shared" };

    fn allowed(annotation: Option<&str>, user: SecretUser<'_>) -> bool {
        let namespace = if user.kind == WorkspaceKind::Cluster { "tenant-access-system" } else { "acme" };
        check(namespace, "tinybird-admin", annotation, user).is_ok()
    }

    #[test]
    fn parses_names_cluster_names_and_star_trimmed() {
        assert_eq!(
            parse(" analytics ,ClusterTinybirdWorkspace/shared,\t*"),
            Ok(vec![
                AllowedWorkspace::Namespaced("analytics".into()),
                AllowedWorkspace::Cluster("shared".into()),
                AllowedWorkspace::Any,
            ])
        );
        assert_eq!(parse("a.b-c"), Ok(vec![AllowedWorkspace::Namespaced("a.b-c".into())]));
    }

    #[test]
    fn refuses_empty_entries() {
        for (value, position) in [("", 1), (" ", 1), ("a,,b", 2), ("a,", 2), (",a", 1), ("a, ,b", 2)] {
            assert_eq!(parse(value), Err(MalformedAllowedWorkspaces::Empty { position }), "{value:?}");
        }
    }

    #[test]
    fn refuses_garbage_naming_the_entry() {
        for (value, entry) in [
            ("Analytics", "Analytics"),
            ("a b", "a b"),
            ("a;b", "a;b"),
            ("ClusterTinybirdWorkspace/", "ClusterTinybirdWorkspace/"),
            ("ClusterTinybirdWorkspace/Shared", "ClusterTinybirdWorkspace/Shared"),
            ("ClusterTinybirdWorkspace/a/b", "ClusterTinybirdWorkspace/a/b"),
            ("clustertinybirdworkspace/shared", "clustertinybirdworkspace/shared"),
            ("**", "**"),
            ("/a", "/a"),
        ] {
            assert_eq!(
                parse(value),
                Err(MalformedAllowedWorkspaces::NotAName { position: 1, entry: entry.into() }),
                "{value:?}"
            );
        }
        assert_eq!(
            parse("a,TinybirdWorkspace/analytics"),
            Err(MalformedAllowedWorkspaces::UnknownKind {
                position: 2,
                entry: "TinybirdWorkspace/analytics".into(),
                kind: "TinybirdWorkspace".into()
            })
        );
    }

    #[test]
    fn bounds_entries_and_quoted_text() {
        let many = vec!["a"; MAX_ENTRIES].join(",");
        assert_eq!(parse(&many).map(|entries| entries.len()), Ok(MAX_ENTRIES));
        assert_eq!(parse(&format!("{many},b")), Err(MalformedAllowedWorkspaces::TooMany));
        let long = "X".repeat(10_000);
        let message = parse(&long).map_err(|e| e.to_string()).unwrap_err();
        assert!(message.len() < 400, "{message}");
    }

    #[test]
    fn a_namespaced_workspace_needs_its_name_or_star() {
        assert!(allowed(Some("analytics"), ANALYTICS));
        assert!(allowed(Some("other, analytics"), ANALYTICS));
        assert!(allowed(Some("*"), ANALYTICS));
        assert!(!allowed(None, ANALYTICS));
        assert!(!allowed(Some("other"), ANALYTICS));
        assert!(!allowed(Some("ClusterTinybirdWorkspace/analytics"), ANALYTICS));
    }

    #[test]
    fn a_cluster_workspace_needs_its_kind_and_name_or_star() {
        assert!(allowed(Some("ClusterTinybirdWorkspace/shared"), SHARED));
        assert!(allowed(Some("*"), SHARED));
        assert!(!allowed(Some("shared"), SHARED));
        assert!(!allowed(Some("ClusterTinybirdWorkspace/other"), SHARED));
        assert!(!allowed(None, SHARED));
    }

    #[test]
    fn a_malformed_annotation_allows_nobody_even_a_listed_workspace() {
        assert!(!allowed(Some("analytics,,"), ANALYTICS));
        assert!(!allowed(Some("*,Bad"), SHARED));
    }

    #[test]
    fn a_namespaced_workspace_never_uses_another_namespace_s_secret() {
        let refused = check("globex", "tinybird-admin", Some("*"), ANALYTICS);
        assert!(matches!(refused, Err(SecretNotAllowed::OtherNamespace { .. })), "{refused:?}");
    }

    #[test]
    fn messages_name_the_secret_the_annotation_and_the_entry_to_add() {
        let message = |annotation, user| {
            let namespace = if user == SHARED { "tenant-access-system" } else { "acme" };
            check(namespace, "tinybird-admin", annotation, user).unwrap_err().to_string()
        };
        assert_eq!(
            message(None, ANALYTICS),
            "Secret acme/tinybird-admin does not allow TinybirdWorkspace acme/analytics to use it: it has no annotation tenantaccess.dev/allowed-workspaces; add it with the value \"analytics\" (kubectl annotate secret -n acme tinybird-admin tenantaccess.dev/allowed-workspaces=analytics)"
        );
        assert_eq!(
            message(Some("other"), SHARED),
            "Secret tenant-access-system/tinybird-admin does not allow ClusterTinybirdWorkspace shared to use it: its annotation tenantaccess.dev/allowed-workspaces does not list \"ClusterTinybirdWorkspace/shared\"; add \"ClusterTinybirdWorkspace/shared\" to it (comma-separated)"
        );
        let malformed = message(Some("analytics,"), ANALYTICS);
        assert!(malformed.contains("allows no workspace"), "{malformed}");
        assert!(malformed.contains("entry 2 is empty"), "{malformed}");
        assert!(malformed.contains("list \"analytics\""), "{malformed}");
    }
}
