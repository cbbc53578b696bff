//! What the operator knows of its token Secrets, without caching them: per Secret, 64-bit hashes
//! of its labels, annotations, data entries and owner references, and of its token.
//!
//! A digest is far smaller than a cached Secret (BENCHMARKS.md has the figures). The reconciler
//! does not need the Secret's bytes as long as the Secret holds the token that the TenantAccess's
//! status describes: that token can be signed again (HS256 over the same claims, `iat` and `exp`
//! is the same JWT), and the digest says whether the Secret holds exactly it. When it does not
//! (the spec changed, the Secret was edited, the status is behind), the reconciler reads the
//! Secret, as it would without a cache. A hash collision would need two different values with
//! the same 64-bit hash in the same Secret position: not a practical concern for a cache whose
//! every answer is checked against the JWT it expects.
//!
//! The index is fed by the watch of managed Secrets (label-selected, as before) and by the
//! operator's own writes (the API server's answer), so a reconcile right after a write sees it.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;

pub use crate::core::reconcile::decide::TokenMatch;
use crate::core::well_known::secret_keys;

/// Most fields a digest keeps: more than a token Secret ever has (its labels and annotations,
/// at most 32 each of the spec's plus the operator's own, four data keys, an owner).
const MAX_DIGEST_FIELDS: usize = 96;

fn hash_one(value: impl Hash) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

fn parse_rv(secret: &Secret) -> Option<u64> {
    secret.metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok())
}

/// The hashes of everything [`crate::core::reconcile::decide::secret_needs_repair`] compares, tagged
/// by where they come from.
fn field_hashes(secret: &Secret) -> Vec<u64> {
    let metadata = &secret.metadata;
    let mut fields: Vec<u64> = metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| hash_one(("label", k, v)))
        .chain(metadata.annotations.iter().flatten().map(|(k, v)| hash_one(("annotation", k, v))))
        .chain(secret.data.iter().flatten().map(|(k, v)| hash_one(("data", k, &v.0))))
        .chain(
            metadata
                .owner_references
                .iter()
                .flatten()
                .map(|o| hash_one(("owner", &o.uid, o.controller.unwrap_or(false)))),
        )
        .collect();
    fields.sort_unstable();
    fields.dedup();
    fields
}

/// What is known of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDigest {
    resource_version: Option<u64>,
    /// Hash of the uid of its controller owner reference.
    controller: Option<u64>,
    /// Hashes of the JWT and of its signing input (`header.payload`).
    token: Option<(u64, u64)>,
    fields: Box<[u64]>,
}

impl SecretDigest {
    /// The digest of a Secret.
    #[must_use]
    pub fn of(secret: &Secret) -> Self {
        let controller = secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| hash_one(&o.uid));
        // Anyone may label a Secret as managed: the digest of one that no TenantAccess controls
        // keeps nothing else (a reconcile reads such a Secret, as without a digest), and one with
        // more fields than the operator ever writes keeps no fields (read too: its revision
        // annotation is not known), so each costs a constant.
        if controller.is_none() {
            return Self {
                resource_version: parse_rv(secret),
                controller,
                token: None,
                fields: Box::new([]),
            };
        }
        let mut fields = field_hashes(secret);
        if fields.len() > MAX_DIGEST_FIELDS {
            fields = Vec::new();
        }
        let token = secret
            .data
            .as_ref()
            .and_then(|d| d.get(secret_keys::TOKEN))
            .and_then(|t| std::str::from_utf8(&t.0).ok())
            .map(|jwt| (hash_one(jwt), hash_one(signing_input(jwt))));
        Self { resource_version: parse_rv(secret), controller, token, fields: fields.into_boxed_slice() }
    }

    /// Whether its controller is the TenantAccess with this uid.
    #[must_use]
    pub fn controlled_by(&self, owner_uid: &str) -> bool {
        self.controller == Some(hash_one(owner_uid))
    }

    /// How its token compares with `jwt`.
    #[must_use]
    pub fn token_match(&self, jwt: &str) -> TokenMatch {
        match self.token {
            Some((token, _)) if token == hash_one(jwt) => TokenMatch::Same,
            Some((_, input)) if input == hash_one(signing_input(jwt)) => TokenMatch::OtherSignature,
            _ => TokenMatch::Unknown,
        }
    }

    /// Whether it has the annotation `key` with `value`.
    #[must_use]
    pub fn has_annotation(&self, key: &str, value: &str) -> bool {
        self.has(hash_one(("annotation", key, value)))
    }

    /// Whether it has a `token` key.
    #[must_use]
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether it lacks something of `desired`: a label, an annotation, a data key or value, an
    /// owner reference (the digest form of `secret_needs_repair`).
    #[must_use]
    pub fn lacks(&self, desired: &Secret) -> bool {
        field_hashes(desired).into_iter().any(|field| !self.has(field))
    }

    fn has(&self, field: u64) -> bool {
        self.fields.binary_search(&field).is_ok()
    }
}

/// `header.payload` of a JWT (all of it when it has no dot).
fn signing_input(jwt: &str) -> &str {
    jwt.rsplit_once('.').map_or(jwt, |(input, _)| input)
}

#[derive(Debug, Default)]
struct Index {
    secrets: HashMap<u64, SecretDigest>,
    /// The list in progress (after a watch (re)start), swapped in when complete.
    relisting: Option<HashMap<u64, SecretDigest>>,
}

impl Index {
    /// Records a digest unless a newer one is known.
    fn record(&mut self, key: u64, digest: SecretDigest) {
        let newer_known = self
            .secrets
            .get(&key)
            .and_then(|known| known.resource_version)
            .zip(digest.resource_version)
            .is_some_and(|(known, new)| known > new);
        if !newer_known {
            self.secrets.insert(key, digest);
        }
    }
}

/// The digests of the managed Secrets in the watched namespaces; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct TokenSecrets {
    index: Arc<Mutex<Index>>,
    /// True once the watch has listed every managed Secret.
    synced: Arc<tokio::sync::watch::Sender<bool>>,
}

fn key_of(secret: &Secret) -> u64 {
    super::known_secrets::hash(
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default(),
    )
}

impl TokenSecrets {
    /// Follows one event of the managed-Secret watch.
    pub fn observe(&self, event: &watcher::Event<Secret>) {
        let Ok(mut index) = self.index.lock() else { return };
        match event {
            watcher::Event::Init => index.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(secret) => {
                if let Some(relisting) = index.relisting.as_mut() {
                    relisting.insert(key_of(secret), SecretDigest::of(secret));
                }
            }
            watcher::Event::InitDone => {
                if let Some(relisting) = index.relisting.take() {
                    index.secrets = relisting;
                    index.secrets.shrink_to_fit();
                }
                self.synced.send_replace(true);
            }
            watcher::Event::Apply(secret) => index.record(key_of(secret), SecretDigest::of(secret)),
            watcher::Event::Delete(secret) => {
                let key = key_of(secret);
                let recreated = index
                    .secrets
                    .get(&key)
                    .and_then(|known| known.resource_version)
                    .zip(parse_rv(secret))
                    .is_some_and(|(known, deleted)| known > deleted);
                if !recreated {
                    index.secrets.remove(&key);
                }
            }
        }
    }

    /// Records a Secret the operator wrote (the API server's answer).
    pub fn wrote(&self, secret: &Secret) {
        if let Ok(mut index) = self.index.lock() {
            index.record(key_of(secret), SecretDigest::of(secret));
        }
    }

    /// Resolves once the watch has listed every managed Secret (for `/readyz`).
    pub async fn wait_until_synced(&self) {
        let mut synced = self.synced.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// Waits (at most `patience`) for the watch's first list, so that the reconciles of a
    /// (re)start do not each GET a Secret that the list is about to deliver.
    pub async fn synced_within(&self, patience: std::time::Duration) {
        if !*self.synced.borrow() {
            let _ = tokio::time::timeout(patience, self.wait_until_synced()).await;
        }
    }

    /// The digest of a managed Secret, if the watch (or a write) has seen it.
    #[must_use]
    pub fn get(&self, namespace: &str, name: &str) -> Option<SecretDigest> {
        self.index.lock().ok()?.secrets.get(&super::known_secrets::hash(namespace, name)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn secret(rv: &str, jwt: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.namespace = Some("ns".into());
        secret.metadata.name = Some("s".into());
        secret.metadata.resource_version = Some(rv.into());
        secret.metadata.labels = Some(BTreeMap::from([("team".to_owned(), "a".to_owned())]));
        secret.metadata.annotations = Some(BTreeMap::from([("rev".to_owned(), "1".to_owned())]));
        secret.metadata.owner_references = Some(vec![OwnerReference {
            uid: "owner".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        secret.data = Some(BTreeMap::from([
            ("token".to_owned(), ByteString(jwt.as_bytes().to_vec())),
            ("api-url".to_owned(), ByteString(b"http://tb".to_vec())),
        ]));
        secret
    }

    #[test]
    fn tells_the_same_token_from_a_re_signed_one_and_from_anything_else() {
        let digest = SecretDigest::of(&secret("1", "aaa.bbb.sig1"));
        assert_eq!(digest.token_match("aaa.bbb.sig1"), TokenMatch::Same);
        assert_eq!(digest.token_match("aaa.bbb.sig2"), TokenMatch::OtherSignature);
        assert_eq!(digest.token_match("aaa.ccc.sig1"), TokenMatch::Unknown);
        assert!(digest.controlled_by("owner"));
        assert!(!digest.controlled_by("someone-else"));
        assert!(digest.has_annotation("rev", "1"));
        assert!(!digest.has_annotation("rev", "2"));
        assert!(digest.has_token());

        let mut no_token = secret("1", "x");
        no_token.data.as_mut().unwrap().remove("token");
        assert!(!SecretDigest::of(&no_token).has_token());
        assert_eq!(SecretDigest::of(&no_token).token_match("x"), TokenMatch::Unknown);
    }

    #[test]
    fn lacks_what_secret_needs_repair_would_restore_and_ignores_extras() {
        let desired = secret("", "a.b.c");
        let mut observed = secret("5", "a.b.c");
        observed.metadata.labels.as_mut().unwrap().insert("extra".into(), "kept".into());
        observed.data.as_mut().unwrap().insert("extra".into(), ByteString(b"kept".to_vec()));
        assert!(!SecretDigest::of(&observed).lacks(&desired));
        assert!(!crate::core::reconcile::decide::secret_needs_repair(&desired, &observed));

        let drifted: [fn(&mut Secret); 4] = [
            |s| drop(s.metadata.labels.as_mut().unwrap().remove("team")),
            |s| drop(s.metadata.annotations.as_mut().unwrap().insert("rev".into(), "9".into())),
            |s| drop(s.data.as_mut().unwrap().insert("api-url".into(), ByteString(b"elsewhere".to_vec()))),
            |s| s.metadata.owner_references = None,
        ];
        for drift in drifted {
            let mut observed = observed.clone();
            drift(&mut observed);
            assert!(SecretDigest::of(&observed).lacks(&desired));
            assert!(crate::core::reconcile::decide::secret_needs_repair(&desired, &observed));
        }
    }

    #[test]
    fn keeps_a_constant_of_a_labelled_secret_no_tenant_access_controls_or_of_an_oversized_one() {
        let mut foreign = secret("1", "a.b.c");
        foreign.metadata.owner_references = None;
        for i in 0..1000 {
            foreign.data.as_mut().unwrap().insert(format!("k{i}"), ByteString(vec![b'x'; 1024]));
        }
        let digest = SecretDigest::of(&foreign);
        assert!(digest.fields.is_empty() && digest.token.is_none(), "{digest:?}");
        assert!(!digest.controlled_by("owner"));

        // Controlled, but with more fields than the operator writes: no fields, so it is read;
        // its token is still known (a revocation must see it).
        let mut padded = secret("1", "a.b.c");
        for i in 0..1000 {
            padded.metadata.labels.as_mut().unwrap().insert(format!("l{i}"), "x".into());
        }
        let digest = SecretDigest::of(&padded);
        assert!(digest.fields.is_empty());
        assert!(digest.has_token() && digest.controlled_by("owner"));
        assert!(!digest.has_annotation("rev", "1"), "its revision is not known: it is read");
    }

    #[test]
    fn follows_the_watch_and_own_writes_without_going_back_in_time() {
        let secrets = TokenSecrets::default();
        assert_eq!(secrets.get("ns", "s"), None);
        secrets.observe(&watcher::Event::Init);
        secrets.observe(&watcher::Event::InitApply(secret("10", "t.1.a")));
        assert_eq!(secrets.get("ns", "s"), None, "a list counts once complete");
        secrets.observe(&watcher::Event::InitDone);
        assert_eq!(secrets.get("ns", "s").unwrap().token_match("t.1.a"), TokenMatch::Same);

        // The operator's write is seen at once; the watch's older event does not undo it.
        secrets.wrote(&secret("20", "t.2.a"));
        secrets.observe(&watcher::Event::Apply(secret("15", "t.1.b")));
        assert_eq!(secrets.get("ns", "s").unwrap().token_match("t.2.a"), TokenMatch::Same);
        secrets.observe(&watcher::Event::Apply(secret("30", "t.3.a")));
        assert_eq!(secrets.get("ns", "s").unwrap().token_match("t.3.a"), TokenMatch::Same);

        // The delete of an older incarnation keeps the newer one; its own delete removes it.
        secrets.observe(&watcher::Event::Delete(secret("25", "t.1.a")));
        assert!(secrets.get("ns", "s").is_some());
        secrets.observe(&watcher::Event::Delete(secret("30", "t.3.a")));
        assert_eq!(secrets.get("ns", "s"), None);
    }
}
