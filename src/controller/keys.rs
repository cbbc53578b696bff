//! The workspace key cache: each workspace's admin token, decoded and checked, so that a
//! TenantAccess reconcile needs no API call to sign. Entries are keyed by workspace and
//! invalidated by the admin-token Secret's resourceVersion (learned from a metadata-only watch)
//! and the workspace's generation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::admin_token::AdminToken;
use crate::api::WorkspaceSpec;
use crate::names::reason;
use crate::validate::WorkspaceKind;
use crate::workspace::{SigningWorkspace, resolve};

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
pub struct SecretKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Why a workspace cannot sign right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceProblem {
    /// Condition reason (`SecretNotFound`, `KeyMissing`, `MalformedToken`, ...).
    pub reason: &'static str,
    /// What is wrong and how to fix it (never the token).
    pub message: String,
}

/// A loaded workspace: ready to sign, or why not.
#[derive(Debug, Clone)]
pub struct WorkspaceEntry {
    /// The workspace's generation the entry was loaded for.
    pub generation: Option<i64>,
    /// The admin-token Secret.
    pub secret: SecretKey,
    /// That Secret's resourceVersion when loaded (None when it did not exist).
    pub secret_resource_version: Option<String>,
    /// The spec the entry was loaded from.
    pub spec: WorkspaceSpec,
    /// The signer, or the problem.
    pub signer: Result<SigningWorkspace, WorkspaceProblem>,
}

/// The cache shared by the workspace and TenantAccess reconcilers.
#[derive(Debug, Default, Clone)]
pub struct KeyStore {
    entries: Arc<RwLock<HashMap<WorkspaceKey, Arc<WorkspaceEntry>>>>,
    /// Latest resourceVersion seen for each referenced admin-token Secret.
    secret_versions: Arc<RwLock<HashMap<SecretKey, Option<String>>>>,
    /// Fingerprints of admin tokens Tinybird refused (`GET /v1/workspace` answered 401/403).
    refused: Arc<RwLock<std::collections::HashSet<String>>>,
}

impl KeyStore {
    /// A cached entry that is still current for this workspace generation and Secret version.
    #[must_use]
    pub fn current(&self, key: &WorkspaceKey, generation: Option<i64>) -> Option<Arc<WorkspaceEntry>> {
        let entry = self.entries.read().ok()?.get(key).cloned()?;
        if entry.generation != generation {
            return None;
        }
        let versions = self.secret_versions.read().ok()?;
        match versions.get(&entry.secret) {
            Some(latest) if *latest != entry.secret_resource_version => None,
            _ => Some(entry),
        }
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

    /// Records the latest resourceVersion of an admin-token Secret (None: deleted).
    pub fn observe_secret(&self, secret: SecretKey, resource_version: Option<String>) {
        if let Ok(mut versions) = self.secret_versions.write() {
            versions.insert(secret, resource_version);
        }
    }
}

/// Loads a workspace's admin token from its Secret and checks it. Never fails: problems are
/// part of the entry, so the caller can put them in conditions.
///
/// # Errors
/// Only API errors other than "not found" (transient: the reconcile is retried).
pub async fn load(
    secrets: Api<Secret>,
    secret_namespace: &str,
    spec: &WorkspaceSpec,
    generation: Option<i64>,
) -> Result<WorkspaceEntry, kube::Error> {
    let reference = &spec.admin_token_secret_ref;
    let secret_key = SecretKey { namespace: secret_namespace.to_owned(), name: reference.name.clone() };
    let key_name = reference.key_or_default();
    let secret = secrets.get_opt(&reference.name).await?;
    let resource_version = secret.as_ref().and_then(|s| s.metadata.resource_version.clone());
    let signer = match &secret {
        None => Err(WorkspaceProblem {
            reason: reason::SECRET_NOT_FOUND,
            message: format!(
                "Secret {secret_namespace}/{} holding the admin token does not exist: create it with the workspace admin token under key {key_name:?}",
                reference.name
            ),
        }),
        Some(secret) => match admin_token_value(secret, key_name) {
            None => Err(WorkspaceProblem {
                reason: reason::KEY_MISSING,
                message: format!(
                    "Secret {secret_namespace}/{} has no non-empty key {key_name:?}: put the workspace admin token there or set adminTokenSecretRef.key",
                    reference.name
                ),
            }),
            Some(token) => resolve(spec, token).map_err(|e| WorkspaceProblem {
                reason: e.reason(),
                message: format!("Secret {secret_namespace}/{} key {key_name:?}: {e}", reference.name),
            }),
        },
    };
    Ok(WorkspaceEntry {
        generation,
        secret: secret_key,
        secret_resource_version: resource_version,
        spec: spec.clone(),
        signer,
    })
}

fn admin_token_value(secret: &Secret, key: &str) -> Option<AdminToken> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&bytes.0).ok()?;
    let token = AdminToken::new(text);
    (!token.expose().is_empty()).then_some(token)
}
