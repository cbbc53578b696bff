//! The workspace cache: each workspace's admin token, decoded and checked, so that a
//! TenantAccess reconcile needs no API call to sign. Entries are keyed by workspace and
//! invalidated by the admin-token Secret's resourceVersion (learned from a metadata-only watch)
//! and the workspace's generation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;

use crate::api::WorkspaceSpec;
use crate::core::admin_token::AdminToken;
use crate::core::allowed_workspaces::{self, SecretUser};
use crate::core::key_refusal::PendingRefusal;
use crate::core::signing_workspace::{SigningWorkspace, resolve};
use crate::core::validate::WorkspaceKind;
use crate::core::well_known::{ANNOTATION_ALLOWED_WORKSPACES, reason};

/// Identity of a workspace: kind, namespace (empty for the cluster kind) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceKey {
    /// Kind.
    pub kind: WorkspaceKind,
    /// Namespace; empty for a ClusterTinybirdWorkspace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Identity of a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Why a workspace cannot sign right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceProblem {
    /// Condition reason (`SecretNotFound`, `SecretNotAllowed`, `KeyMissing`, `MalformedToken`, ...).
    pub reason: &'static str,
    /// What is wrong and how to fix it (never the token).
    pub message: String,
}

/// The Clerk connection of a workspace, with its secret key (never printed).
#[derive(Clone)]
pub struct ClerkCredentials {
    /// Clerk Backend API base URL.
    pub api_url: String,
    secret_key: String,
}

impl ClerkCredentials {
    /// The secret key, for the Clerk client only.
    #[must_use]
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
}

impl std::fmt::Debug for ClerkCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkCredentials").field("api_url", &self.api_url).finish_non_exhaustive()
    }
}

/// A loaded workspace: ready to sign, or why not.
#[derive(Debug, Clone)]
pub struct WorkspaceEntry {
    /// The workspace's generation the entry was loaded for.
    pub generation: Option<i64>,
    /// The Secrets read (admin token, Clerk key) and their resourceVersions (None: absent).
    pub secrets: Vec<(SecretRef, Option<String>)>,
    /// The spec the entry was loaded from.
    pub spec: WorkspaceSpec,
    /// The signer, or the problem.
    pub signer: Result<SigningWorkspace, WorkspaceProblem>,
    /// The Clerk connection when the workspace has one, or why it is unusable.
    pub clerk: Option<Result<ClerkCredentials, WorkspaceProblem>>,
    /// Who else manages the admin-token Secret ([`crate::core::secret_writers`]): a rotation's
    /// new token is written back over by it.
    pub admin_secret_manager: Option<String>,
}

/// The cache shared by the workspace and TenantAccess reconcilers.
#[derive(Debug, Default, Clone)]
pub struct WorkspaceCache {
    entries: Arc<RwLock<HashMap<WorkspaceKey, Arc<WorkspaceEntry>>>>,
    /// Latest resourceVersion seen for each referenced admin-token Secret.
    secret_versions: Arc<RwLock<HashMap<SecretRef, Option<String>>>>,
    /// Fingerprints of admin tokens Tinybird refused (`GET /v1/workspace` answered 401/403).
    refused: Arc<RwLock<std::collections::HashSet<String>>>,
    /// Refusals not confirmed yet, per workspace (a rotation may be in progress).
    pending_refusals: Arc<RwLock<HashMap<WorkspaceKey, PendingRefusal>>>,
}

impl WorkspaceCache {
    /// A cached entry that is still current for this workspace generation and Secret version.
    #[must_use]
    pub fn current(&self, key: &WorkspaceKey, generation: Option<i64>) -> Option<Arc<WorkspaceEntry>> {
        let entry = self.entries.read().ok()?.get(key).cloned()?;
        if entry.generation != generation {
            return None;
        }
        let versions = self.secret_versions.read().ok()?;
        let stale = entry
            .secrets
            .iter()
            .any(|(secret, version)| versions.get(secret).is_some_and(|latest| latest != version));
        (!stale).then_some(entry)
    }

    /// Stores a freshly loaded entry.
    pub fn insert(&self, key: WorkspaceKey, entry: WorkspaceEntry) -> Arc<WorkspaceEntry> {
        let entry = Arc::new(entry);
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(key, entry.clone());
        }
        entry
    }

    /// Forgets a workspace (deleted).
    pub fn remove(&self, key: &WorkspaceKey) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(key);
        }
        self.set_pending_refusal(key, None);
    }

    /// Records Tinybird's verdict on a key: refused keys sign nothing (fail closed).
    pub fn set_refused(&self, fingerprint: &str, refused: bool) {
        if let Ok(mut set) = self.refused.write() {
            if refused {
                set.insert(fingerprint.to_owned());
            } else {
                set.remove(fingerprint);
            }
        }
    }

    /// Whether Tinybird refused this key.
    #[must_use]
    pub fn is_refused(&self, fingerprint: &str) -> bool {
        self.refused.read().is_ok_and(|set| set.contains(fingerprint))
    }

    /// The refusal of this workspace's key not confirmed yet, if any.
    #[must_use]
    pub fn pending_refusal(&self, key: &WorkspaceKey) -> Option<PendingRefusal> {
        self.pending_refusals.read().ok()?.get(key).cloned()
    }

    /// Records (`Some`) or forgets (`None`) the refusal pending for a workspace.
    pub fn set_pending_refusal(&self, key: &WorkspaceKey, pending: Option<PendingRefusal>) {
        if let Ok(mut map) = self.pending_refusals.write() {
            match pending {
                Some(pending) => map.insert(key.clone(), pending),
                None => map.remove(key),
            };
        }
    }

    /// Records the latest resourceVersion of an admin-token Secret (None: deleted).
    pub fn observe_secret(&self, secret: SecretRef, resource_version: Option<String>) {
        if let Ok(mut versions) = self.secret_versions.write() {
            versions.insert(secret, resource_version);
        }
    }
}

/// Loads a workspace's admin token (and Clerk key) from their Secrets and checks them. Problems
/// are part of the entry, so the caller can put them in conditions.
///
/// Each Secret's metadata is read first: unless its `tenantaccess.dev/allowed-workspaces`
/// annotation lists the workspace, no Secret's data is read at all and the workspace cannot sign
/// (`SecretNotAllowed`).
///
/// # Errors
/// Only API errors other than "not found" (transient: the reconcile is retried).
pub async fn load(
    secrets: Api<Secret>,
    secret_namespace: &str,
    workspace: &WorkspaceKey,
    spec: &WorkspaceSpec,
    generation: Option<i64>,
) -> Result<WorkspaceEntry, kube::Error> {
    let admin_ref = &spec.admin_token_secret_ref;
    let clerk_ref = spec.clerk.as_ref().map(|connection| &connection.secret_key_secret_ref);
    let mut read = Vec::with_capacity(2);
    let mut refusal = None;
    let mut admin_secret_manager = None;
    for (index, reference) in std::iter::once(admin_ref).chain(clerk_ref).enumerate() {
        let metadata = secrets.get_metadata_opt(&reference.name).await?;
        let key = SecretRef { namespace: secret_namespace.to_owned(), name: reference.name.clone() };
        read.push((key, metadata.as_ref().and_then(|m| m.metadata.resource_version.clone())));
        if index == 0 {
            admin_secret_manager =
                metadata.as_ref().and_then(|m| crate::core::secret_writers::managed_elsewhere(&m.metadata));
        }
        if refusal.is_none()
            && let Some(metadata) = metadata
        {
            refusal = allows(&metadata.metadata, secret_namespace, &reference.name, workspace).err();
        }
    }
    // A Secret that exists has a resourceVersion.
    let exists = |index: usize| read.get(index).is_some_and(|(_, version)| version.is_some());
    if let Some(problem) = refusal {
        return Ok(WorkspaceEntry {
            generation,
            secrets: read,
            spec: spec.clone(),
            signer: Err(problem.clone()),
            clerk: spec.clerk.as_ref().map(|_| Err(problem)),
            admin_secret_manager,
        });
    }
    let key_name = admin_ref.key_or_default();
    let secret = read_allowed(&secrets, exists(0), secret_namespace, &admin_ref.name, workspace).await?;
    let signer = match secret.and_then(|secret| {
        secret_value(
            secret.as_ref(),
            secret_namespace,
            &admin_ref.name,
            key_name,
            "the workspace admin token",
        )
    }) {
        Err(problem) => Err(problem),
        Ok(token) => resolve(spec, AdminToken::new(&token)).map_err(|e| WorkspaceProblem {
            reason: e.reason(),
            message: format!("Secret {secret_namespace}/{} key {key_name:?}: {e}", admin_ref.name),
        }),
    };
    let clerk = match &spec.clerk {
        None => None,
        Some(connection) => {
            let reference = &connection.secret_key_secret_ref;
            let secret =
                read_allowed(&secrets, exists(1), secret_namespace, &reference.name, workspace).await?;
            let key_name = reference.key_or_default();
            let what = "the Clerk secret key (sk_...)";
            Some(
                secret
                    .and_then(|secret| {
                        secret_value(secret.as_ref(), secret_namespace, &reference.name, key_name, what)
                    })
                    .map(|secret_key| ClerkCredentials {
                        api_url: connection
                            .api_url
                            .as_deref()
                            .unwrap_or(crate::adapters::clerk::DEFAULT_API_URL)
                            .trim_end_matches('/')
                            .to_owned(),
                        secret_key,
                    }),
            )
        }
    };
    Ok(WorkspaceEntry { generation, secrets: read, spec: spec.clone(), signer, clerk, admin_secret_manager })
}

/// Whether a Secret's metadata lets the workspace use it, as a workspace problem when not.
fn allows(
    metadata: &ObjectMeta,
    namespace: &str,
    name: &str,
    workspace: &WorkspaceKey,
) -> Result<(), WorkspaceProblem> {
    let annotation = metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ANNOTATION_ALLOWED_WORKSPACES))
        .map(String::as_str);
    let user = SecretUser { kind: workspace.kind, namespace: &workspace.namespace, name: &workspace.name };
    allowed_workspaces::check(namespace, name, annotation, user).map_err(|refused| WorkspaceProblem {
        reason: reason::SECRET_NOT_ALLOWED,
        message: refused.to_string(),
    })
}

/// A Secret whose metadata allowed the workspace a moment ago (`exists`: there was one), read
/// with its data. The annotation is checked again on what was read: it may have been removed in
/// between.
async fn read_allowed(
    secrets: &Api<Secret>,
    exists: bool,
    namespace: &str,
    name: &str,
    workspace: &WorkspaceKey,
) -> Result<Result<Option<Secret>, WorkspaceProblem>, kube::Error> {
    let secret = if exists { secrets.get_opt(name).await? } else { None };
    Ok(match secret {
        Some(secret) => allows(&secret.metadata, namespace, name, workspace).map(|()| Some(secret)),
        None => Ok(None),
    })
}

/// A non-empty text value of a Secret key, or the problem (naming the Secret, never the value).
fn secret_value(
    secret: Option<&Secret>,
    namespace: &str,
    name: &str,
    key: &str,
    what: &str,
) -> Result<String, WorkspaceProblem> {
    let Some(secret) = secret else {
        return Err(WorkspaceProblem {
            reason: reason::SECRET_NOT_FOUND,
            message: format!(
                "Secret {namespace}/{name} does not exist: create it with {what} under key {key:?}"
            ),
        });
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|bytes| std::str::from_utf8(&bytes.0).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    value.map(str::to_owned).ok_or_else(|| WorkspaceProblem {
        reason: reason::KEY_MISSING,
        message: format!(
            "Secret {namespace}/{name} has no non-empty key {key:?}: put {what} there or set the reference's key"
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::task::{Context, Poll};

    use k8s_openapi::ByteString;
    use kube::client::Body;

    use super::*;
    use crate::api::SecretKeySelector;
    use crate::core::admin_token::tests::fake_admin_token;

    /// An API server holding one Secret `acme/tinybird-admin`, recording each request as
    /// (path, metadata only).
    #[derive(Clone)]
    struct OneSecret {
        secret: Secret,
        requests: Arc<Mutex<Vec<(String, bool)>>>,
    }

    impl tower::Service<http::Request<Body>> for OneSecret {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let metadata_only = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
            self.requests.lock().unwrap().push((request.uri().path().to_owned(), metadata_only));
            let body = if metadata_only {
                serde_json::json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": self.secret.metadata,
                })
            } else {
                serde_json::to_value(&self.secret).unwrap()
            };
            let response = http::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            std::future::ready(Ok(response))
        }
    }

    /// Loads workspace `acme/analytics` against a Secret allowing `allowed` (None: not annotated):
    /// the entry and the requests made.
    async fn load_with(allowed: Option<&str>) -> (WorkspaceEntry, Vec<(String, bool)>) {
        let mut secret = Secret::default();
        secret.metadata.name = Some("tinybird-admin".into());
        secret.metadata.namespace = Some("acme".into());
        secret.metadata.resource_version = Some("7".into());
        secret.metadata.annotations =
            allowed.map(|allowed| [(ANNOTATION_ALLOWED_WORKSPACES.to_owned(), allowed.to_owned())].into());
        let token = ByteString(fake_admin_token("ws-1", None).into_bytes());
        secret.data = Some([("token".to_owned(), token)].into());
        let api_server = OneSecret { secret, requests: Arc::default() };
        let client = kube::Client::new(api_server.clone(), "acme");
        let spec = WorkspaceSpec {
            admin_token_secret_ref: SecretKeySelector { name: "tinybird-admin".into(), key: None },
            ..WorkspaceSpec::default()
        };
        let workspace = WorkspaceKey {
            kind: WorkspaceKind::Namespaced,
            namespace: "acme".into(),
            name: "analytics".into(),
        };
        let entry = load(Api::namespaced(client, "acme"), "acme", &workspace, &spec, Some(1)).await.unwrap();
        let requests = api_server.requests.lock().unwrap().clone();
        (entry, requests)
    }

    const SECRET_PATH: &str = "/api/v1/namespaces/acme/secrets/tinybird-admin";

    #[tokio::test]
    async fn a_secret_that_does_not_allow_the_workspace_is_never_read_past_its_metadata() {
        for allowed in [None, Some("other"), Some("analytics,,")] {
            let (entry, requests) = load_with(allowed).await;
            let problem = entry.signer.unwrap_err();
            assert_eq!(problem.reason, reason::SECRET_NOT_ALLOWED, "{allowed:?}");
            assert!(problem.message.contains("acme/tinybird-admin"), "{}", problem.message);
            assert_eq!(requests, [(SECRET_PATH.to_owned(), true)], "{allowed:?}: only the metadata is read");
            assert_eq!(entry.secrets[0].1.as_deref(), Some("7"), "its version is watched for a change");
        }
    }

    #[tokio::test]
    async fn a_secret_that_allows_the_workspace_is_read_after_its_metadata() {
        for allowed in ["analytics", "*", "other, analytics"] {
            let (entry, requests) = load_with(Some(allowed)).await;
            assert_eq!(
                entry.signer.map(|signer| signer.workspace_id).ok().as_deref(),
                Some("ws-1"),
                "{allowed}"
            );
            assert_eq!(requests, [(SECRET_PATH.to_owned(), true), (SECRET_PATH.to_owned(), false)]);
        }
    }
}
