//! The form in which TenantAccess resources are cached: the object as JSON compressed with LZ4
//! against a built-in dictionary, decoded when a reconcile runs, plus the few fields the watches
//! and `/metrics` read on every pass.
//!
//! A decoded `TenantAccess` costs several times its compressed form on the heap (an
//! `ObjectMeta` of optional fields, a B-tree node for every small map, a dozen strings per
//! condition), while the dictionary holds what every object repeats (field names, condition
//! types, message phrases). The measured sizes are in BENCHMARKS.md; `tests/cache_footprint.rs`
//! fails if they grow back. Decoding happens once per reconcile.

use std::borrow::Cow;
use std::num::NonZeroU64;

use kube::Resource;
use kube::api::ObjectMeta;
use serde::{Deserialize, Deserializer};

use crate::api::{KIND_CLUSTER_WORKSPACE, TenantAccess};
use crate::core::conditions::is_true;
use crate::core::validate::WorkspaceKind;
use crate::core::well_known::condition;

/// The annotation client-side `kubectl apply` keeps the last applied object in; nothing reads it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A cached TenantAccess. Its `metadata` holds only name, namespace and resourceVersion (what
/// the watch and the store key on); everything else is in the JSON.
#[derive(Clone, Debug)]
pub struct CachedTenantAccess {
    metadata: ObjectMeta,
    /// The object without managedFields, name, namespace and resourceVersion, as JSON compressed
    /// against [`dictionary`].
    compressed: Box<[u8]>,
    workspace_kind: WorkspaceKind,
    workspace_name: Box<str>,
    /// `status.token` `(expiresAt, renewalTime)`, Unix seconds.
    token_times: Option<(i64, i64)>,
    ready: bool,
    /// Its `PipesIsolated` condition (`None`: not judged yet).
    pipes_isolated: Option<bool>,
    /// [`key_tag`]s of the keys that signed `status.token` and `status.clerkTemplate` (pushed
    /// ones only), for counting the dependents on a new key during a rotation.
    key_tags: (Option<NonZeroU64>, Option<NonZeroU64>),
}

/// A signing-key fingerprint (`sha256:<16 hex>`) as a number, cheap to keep per TenantAccess.
#[must_use]
pub fn key_tag(fingerprint: &str) -> Option<NonZeroU64> {
    let hex = fingerprint.strip_prefix("sha256:")?;
    u64::from_str_radix(hex, 16).ok().and_then(NonZeroU64::new)
}

/// A cached object that does not decode (only if the operator's own encoding is broken).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the cached TenantAccess does not decompress: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
    #[error("the cached TenantAccess does not decode: {0}")]
    Json(#[from] serde_json::Error),
}

/// What the JSON of every TenantAccess is compressed against: a typical TenantAccess serialized
/// by the operator's own types (so in the same field order as the objects).
fn dictionary() -> &'static [u8] {
    static DICTIONARY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        serde_json::from_str::<TenantAccess>(include_str!("cached_access_dictionary.json"))
            .and_then(|example| serde_json::to_vec(&example))
            .unwrap_or_default()
    });
    &DICTIONARY
}

impl CachedTenantAccess {
    /// Compacts a TenantAccess as the watch delivered it.
    ///
    /// # Errors
    /// Only if the object does not serialize to JSON.
    pub fn new(mut access: TenantAccess) -> Result<Self, serde_json::Error> {
        access.metadata.managed_fields = None;
        if let Some(annotations) = access.metadata.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
        let workspace_kind = match access.spec.workspace_ref.kind.as_deref() {
            Some(KIND_CLUSTER_WORKSPACE) => WorkspaceKind::Cluster,
            _ => WorkspaceKind::Namespaced,
        };
        let workspace_name = access.spec.workspace_ref.name.clone().into_boxed_str();
        let status = access.status.as_ref();
        let token_times = status
            .and_then(|s| s.token.as_ref())
            .map(|t| (t.expires_at.0.as_second(), t.renewal_time.0.as_second()));
        let ready = status.is_some_and(|s| is_true(&s.conditions, condition::READY));
        let pipes_isolated = status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::PIPES_ISOLATED))
            .map(|c| c.status == "True");
        let key_tags = (
            status.and_then(|s| s.token.as_ref()).and_then(|t| key_tag(&t.signing_key_fingerprint)),
            status
                .and_then(|s| s.clerk_template.as_ref())
                .filter(|t| t.id.is_some())
                .and_then(|t| key_tag(&t.signing_key_fingerprint)),
        );
        let metadata = ObjectMeta {
            name: access.metadata.name.take(),
            namespace: access.metadata.namespace.take(),
            resource_version: access.metadata.resource_version.take(),
            ..ObjectMeta::default()
        };
        let json = serde_json::to_vec(&access)?;
        let compressed =
            lz4_flex::block::compress_prepend_size_with_dict(&json, dictionary()).into_boxed_slice();
        Ok(Self {
            metadata,
            compressed,
            workspace_kind,
            workspace_name,
            token_times,
            ready,
            pipes_isolated,
            key_tags,
        })
    }

    /// The whole TenantAccess.
    ///
    /// # Errors
    /// Only if the operator's own encoding is broken.
    pub fn decode(&self) -> Result<TenantAccess, DecodeError> {
        let json = lz4_flex::block::decompress_size_prepended_with_dict(&self.compressed, dictionary())?;
        let mut access: TenantAccess = serde_json::from_slice(&json)?;
        access.metadata.name.clone_from(&self.metadata.name);
        access.metadata.namespace.clone_from(&self.metadata.namespace);
        access.metadata.resource_version.clone_from(&self.metadata.resource_version);
        Ok(access)
    }

    /// Whether it uses this workspace (`namespace` is the workspace's, for the namespaced kind).
    #[must_use]
    pub fn uses_workspace(&self, kind: WorkspaceKind, namespace: Option<&str>, name: &str) -> bool {
        self.workspace_kind == kind
            && *self.workspace_name == *name
            && (kind == WorkspaceKind::Cluster || self.metadata.namespace.as_deref() == namespace)
    }

    /// `status.token`'s expiry and renewal time (Unix seconds), if a token was issued.
    #[must_use]
    pub fn token_times(&self) -> Option<(i64, i64)> {
        self.token_times
    }

    /// The [`key_tag`]s of the keys its token and its pushed Clerk template were signed with.
    #[must_use]
    pub fn key_tags(&self) -> (Option<NonZeroU64>, Option<NonZeroU64>) {
        self.key_tags
    }

    /// Whether its Ready condition is True.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether its `PipesIsolated` condition is True (`None`: no pipe judged yet).
    #[must_use]
    pub fn pipes_isolated(&self) -> Option<bool> {
        self.pipes_isolated
    }

    /// Its namespace.
    #[must_use]
    pub fn namespace_name(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// Its name.
    #[must_use]
    pub fn object_name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

impl Resource for CachedTenantAccess {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        TenantAccess::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        TenantAccess::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        TenantAccess::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        TenantAccess::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<'de> Deserialize<'de> for CachedTenantAccess {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let access = TenantAccess::deserialize(deserializer)?;
        Self::new(access).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt as _;

    use super::*;

    fn access() -> TenantAccess {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tenantaccess.dev/v1alpha1",
            "kind": "TenantAccess",
            "metadata": {
                "name": "acme", "namespace": "team-a", "uid": "u-1", "resourceVersion": "42",
                "generation": 3,
                "annotations": {LAST_APPLIED: "{}", "tenantaccess.dev/renew": "1"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {
                "workspaceRef": {"kind": "ClusterTinybirdWorkspace", "name": "shared"},
                "scopes": [{"resource": "top_pages", "fixedParams": {"org": "acme"}}],
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
                                "lastTransitionTime": "2026-11-26T09:00:00Z"}],
                "token": {"name": "t", "issuedAt": "2026-11-26T09:00:00Z", "expiresAt": "2026-11-26T10:00:00Z",
                          "renewalTime": "2026-11-26T09:40:00Z", "revision": 2, "claimsHash": "sha256:1",
                          "signingKeyFingerprint": "sha256:2", "secretName": "acme"},
            },
        }))
        .unwrap()
    }

    #[test]
    fn decodes_to_the_object_without_managed_fields_or_last_applied() {
        let cached = CachedTenantAccess::new(access()).unwrap();
        let decoded = cached.decode().unwrap();
        let mut expected = access();
        expected.metadata.managed_fields = None;
        expected.annotations_mut().remove(LAST_APPLIED);
        assert_eq!(serde_json::to_value(&decoded).unwrap(), serde_json::to_value(&expected).unwrap());
        assert_eq!(cached.resource_version().as_deref(), Some("42"));
        assert_eq!(cached.meta().uid, None, "the uid stays in the JSON only");
    }

    #[test]
    fn keeps_what_watches_and_metrics_read_without_decoding() {
        let cached = CachedTenantAccess::new(access()).unwrap();
        assert!(cached.uses_workspace(WorkspaceKind::Cluster, None, "shared"));
        assert!(!cached.uses_workspace(WorkspaceKind::Namespaced, Some("team-a"), "shared"));
        assert!(!cached.uses_workspace(WorkspaceKind::Cluster, None, "other"));
        assert!(cached.is_ready());
        assert_eq!(cached.token_times(), Some((1_795_687_200, 1_795_686_000)));
    }

    #[test]
    fn the_dictionary_is_a_tenant_access() {
        assert!(dictionary().len() > 2000, "the built-in example must parse as a TenantAccess");
    }

    #[test]
    fn deserializes_from_the_api_servers_json() {
        let json = serde_json::to_string(&access()).unwrap();
        let cached: CachedTenantAccess = serde_json::from_str(&json).unwrap();
        assert_eq!(cached.object_name(), "acme");
        assert_eq!(cached.namespace_name(), "team-a");
        assert_eq!(cached.decode().unwrap().metadata.generation, Some(3));
    }
}
