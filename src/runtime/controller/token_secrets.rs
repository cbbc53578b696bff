//! What the operator knows of its token Secrets, without caching them: per Secret, 64-bit hashes
//! of its labels, annotations and owner references, and, once the operator has seen its data
//! (its own write, or a read), of the keys it writes and of its token.
//!
//! Token Secrets are watched metadata-only: anyone may set the managed-by label on a Secret of
//! up to 1 MiB, and a watch with data would carry (and, at a relist, hold a page of) every such
//! Secret. A watch event says that a Secret changed and how its metadata looks; what its data
//! holds is known only from a whole Secret the operator had in hand at that very
//! resourceVersion, or from the TenantAccess's `status.token.secretObserved` (see
//! `observe::rebuild`). When neither tells, the reconciler reads the Secret, as it would without
//! the index.
//!
//! A digest is far smaller than a cached Secret (BENCHMARKS.md has the figures). The reconciler
//! does not need the Secret's bytes as long as the Secret holds the token that the TenantAccess's
//! status describes: that token can be signed again (HS256 over the same claims, `iat` and `exp`
//! is the same JWT), and the digest says whether the Secret holds exactly it. A hash collision
//! would need two different values with the same 64-bit hash in the same Secret position: not a
//! practical concern for an index whose every answer is checked against the JWT it expects.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

pub use crate::core::reconcile::decide::TokenMatch;
use crate::core::well_known::{LABEL_MANAGED_BY, OPERATOR_NAME, secret_keys};

/// Most metadata fields a digest keeps: more than a token Secret ever has (its labels and
/// annotations, at most 32 each of the spec's plus the operator's own, an owner).
const MAX_DIGEST_FIELDS: usize = 96;

fn hash_one(value: impl Hash) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

fn parse_rv(metadata: &ObjectMeta) -> Option<u64> {
    metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok())
}

/// The hashes of the metadata [`crate::core::reconcile::decide::secret_needs_repair`] compares,
/// tagged by where they come from.
fn metadata_hashes(metadata: &ObjectMeta) -> Vec<u64> {
    let mut fields: Vec<u64> = metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| hash_one(("label", k, v)))
        .chain(metadata.annotations.iter().flatten().map(|(k, v)| hash_one(("annotation", k, v))))
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

/// The hashes of the keys the operator writes, as `secret` holds them.
fn data_hashes(secret: &Secret) -> Vec<u64> {
    let data = secret.data.as_ref();
    let mut fields: Vec<u64> = secret_keys::ALL
        .iter()
        .filter_map(|key| data.and_then(|d| d.get(*key)).map(|v| hash_one(("data", key, &v.0))))
        .collect();
    fields.sort_unstable();
    fields
}

/// What is known of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDigest {
    resource_version: Option<u64>,
    /// Hash of the uid of its controller owner reference.
    controller: Option<u64>,
    /// Labels, annotations, owner references.
    fields: Box<[u64]>,
    /// Its data at this resourceVersion, when the operator had the whole Secret in hand.
    data: Option<DataDigest>,
}

/// What a whole Secret showed of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DataDigest {
    /// Hashes of the JWT and of its signing input (`header.payload`).
    token: Option<(u64, u64)>,
    /// The keys the operator writes.
    fields: Box<[u64]>,
}

impl SecretDigest {
    /// The digest of a Secret's metadata (a watch event): its data is not known.
    #[must_use]
    pub fn of_metadata(metadata: &ObjectMeta) -> Self {
        let controller = metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| hash_one(&o.uid));
        // Anyone may label a Secret as managed: the digest of one that no TenantAccess controls
        // keeps nothing else (a reconcile reads such a Secret, as without a digest), and one with
        // more fields than the operator ever writes keeps no fields (read too: its revision
        // annotation is not known), so each costs a constant.
        let mut fields = if controller.is_some() { metadata_hashes(metadata) } else { Vec::new() };
        if fields.len() > MAX_DIGEST_FIELDS {
            fields = Vec::new();
        }
        Self {
            resource_version: parse_rv(metadata),
            controller,
            fields: fields.into_boxed_slice(),
            data: None,
        }
    }

    /// The digest of a whole Secret (the operator's own write, or a read).
    #[must_use]
    pub fn of(secret: &Secret) -> Self {
        let mut digest = Self::of_metadata(&secret.metadata);
        if digest.controller.is_some() {
            let token = secret
                .data
                .as_ref()
                .and_then(|d| d.get(secret_keys::TOKEN))
                .and_then(|t| std::str::from_utf8(&t.0).ok())
                .map(|jwt| (hash_one(jwt), hash_one(signing_input(jwt))));
            digest.data = Some(DataDigest { token, fields: data_hashes(secret).into_boxed_slice() });
        }
        digest
    }

    /// Its resourceVersion, as the API server wrote it.
    #[must_use]
    pub fn resource_version(&self) -> Option<u64> {
        self.resource_version
    }

    /// Whether its controller is the TenantAccess with this uid.
    #[must_use]
    pub fn controlled_by(&self, owner_uid: &str) -> bool {
        self.controller == Some(hash_one(owner_uid))
    }

    /// Whether its data is known (the operator had the whole Secret at this resourceVersion).
    #[must_use]
    pub fn data_known(&self) -> bool {
        self.data.is_some()
    }

    /// How its token compares with `jwt` (`Unknown` when its data is not known).
    #[must_use]
    pub fn token_match(&self, jwt: &str) -> TokenMatch {
        match self.data.as_ref().and_then(|d| d.token) {
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

    /// Whether it may hold a token: false only when its data is known and has no `token` key.
    #[must_use]
    pub fn may_have_token(&self) -> bool {
        self.data.as_ref().is_none_or(|d| d.token.is_some())
    }

    /// Whether its metadata lacks something of `desired`'s: a label, an annotation, an owner
    /// reference (the digest form of `secret_needs_repair`).
    #[must_use]
    pub fn metadata_lacks(&self, desired: &Secret) -> bool {
        metadata_hashes(&desired.metadata).into_iter().any(|field| !self.has(field))
    }

    /// Whether its data lacks a key or value of `desired`'s (`None`: its data is not known).
    #[must_use]
    pub fn data_lacks(&self, desired: &Secret) -> Option<bool> {
        let data = self.data.as_ref()?;
        Some(data_hashes(desired).into_iter().any(|field| data.fields.binary_search(&field).is_err()))
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
    /// What to keep of `digest` for `key`: the known digest instead when it is newer, or when it
    /// is of the same resourceVersion and knows the data (a metadata event echoing a write).
    fn merged(&self, key: u64, digest: SecretDigest) -> Option<SecretDigest> {
        let Some(known) = self.secrets.get(&key) else { return Some(digest) };
        match (known.resource_version, digest.resource_version) {
            (Some(known_rv), Some(new)) if known_rv > new => None,
            (Some(known_rv), Some(new))
                if known_rv == new && known.data.is_some() && digest.data.is_none() =>
            {
                None
            }
            _ => Some(digest),
        }
    }

    /// Records a digest unless a newer one (or the same with its data) is known.
    fn record(&mut self, key: u64, digest: SecretDigest) {
        if let Some(digest) = self.merged(key, digest) {
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

fn key_of(metadata: &ObjectMeta) -> u64 {
    super::known_secrets::hash(
        metadata.namespace.as_deref().unwrap_or_default(),
        metadata.name.as_deref().unwrap_or_default(),
    )
}

impl TokenSecrets {
    /// Follows one event of the managed-Secret watch (metadata only).
    pub fn observe(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let Ok(mut index) = self.index.lock() else { return };
        match event {
            watcher::Event::Init => index.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(secret) => {
                let key = key_of(&secret.metadata);
                let digest = SecretDigest::of_metadata(&secret.metadata);
                // The data seen at this very resourceVersion before the relist still holds.
                let digest = match index.secrets.get(&key) {
                    Some(known)
                        if known.resource_version == digest.resource_version && known.data.is_some() =>
                    {
                        known.clone()
                    }
                    _ => digest,
                };
                if let Some(relisting) = index.relisting.as_mut() {
                    relisting.insert(key, digest);
                }
            }
            watcher::Event::InitDone => {
                if let Some(relisting) = index.relisting.take() {
                    index.secrets = relisting;
                    index.secrets.shrink_to_fit();
                }
                self.synced.send_replace(true);
            }
            watcher::Event::Apply(secret) => {
                index.record(key_of(&secret.metadata), SecretDigest::of_metadata(&secret.metadata));
            }
            watcher::Event::Delete(secret) => {
                let key = key_of(&secret.metadata);
                let recreated = index
                    .secrets
                    .get(&key)
                    .and_then(|known| known.resource_version)
                    .zip(parse_rv(&secret.metadata))
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
            index.record(key_of(&secret.metadata), SecretDigest::of(secret));
        }
    }

    /// Records a Secret the operator read whole, when it is one the watch follows (labelled as
    /// managed): one it does not follow could go without the index hearing of it.
    pub fn read(&self, secret: &Secret) {
        let managed = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_MANAGED_BY))
            .is_some_and(|v| v == OPERATOR_NAME);
        if managed {
            self.wrote(secret);
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
        secret.metadata.labels = Some(BTreeMap::from([
            ("team".to_owned(), "a".to_owned()),
            (LABEL_MANAGED_BY.to_owned(), OPERATOR_NAME.to_owned()),
        ]));
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

    fn meta(secret: &Secret) -> PartialObjectMeta<Secret> {
        PartialObjectMeta::<Secret> { metadata: secret.metadata.clone(), ..Default::default() }
    }

    fn lacks(digest: &SecretDigest, desired: &Secret) -> bool {
        digest.metadata_lacks(desired) || digest.data_lacks(desired).unwrap()
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
        assert!(digest.may_have_token());

        let mut no_token = secret("1", "x");
        no_token.data.as_mut().unwrap().remove("token");
        assert!(!SecretDigest::of(&no_token).may_have_token());
        assert_eq!(SecretDigest::of(&no_token).token_match("x"), TokenMatch::Unknown);
    }

    #[test]
    fn a_metadata_event_knows_the_metadata_and_not_the_data() {
        let whole = secret("1", "aaa.bbb.sig1");
        let digest = SecretDigest::of_metadata(&whole.metadata);
        assert!(digest.controlled_by("owner") && digest.has_annotation("rev", "1"));
        assert!(!digest.data_known());
        assert_eq!(digest.token_match("aaa.bbb.sig1"), TokenMatch::Unknown, "the Secret must be read");
        assert_eq!(digest.data_lacks(&whole), None);
        assert!(!digest.metadata_lacks(&whole));
        assert!(digest.may_have_token(), "a revocation must not assume the token is gone");
    }

    #[test]
    fn lacks_what_secret_needs_repair_would_restore_and_ignores_extras() {
        let desired = secret("", "a.b.c");
        let mut observed = secret("5", "a.b.c");
        observed.metadata.labels.as_mut().unwrap().insert("extra".into(), "kept".into());
        observed.data.as_mut().unwrap().insert("extra".into(), ByteString(b"kept".to_vec()));
        assert!(!lacks(&SecretDigest::of(&observed), &desired));
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
            assert!(
                lacks(&SecretDigest::of(&observed), &desired)
                    || !SecretDigest::of(&observed).controlled_by("owner")
            );
            assert!(crate::core::reconcile::decide::secret_needs_repair(&desired, &observed));
        }
    }

    #[test]
    fn keeps_a_constant_of_a_labelled_secret_no_tenant_access_controls_or_of_an_oversized_one() {
        let mut foreign = secret("1", "a.b.c");
        foreign.metadata.owner_references = None;
        for i in 0..1000 {
            foreign.data.as_mut().unwrap().insert(format!("k{i}"), ByteString(vec![b'x'; 1024]));
            foreign.metadata.annotations.as_mut().unwrap().insert(format!("a{i}"), "x".repeat(100));
        }
        for digest in [SecretDigest::of(&foreign), SecretDigest::of_metadata(&foreign.metadata)] {
            assert!(digest.fields.is_empty() && digest.data.is_none(), "{digest:?}");
            assert!(!digest.controlled_by("owner"));
        }

        // Controlled, but with more fields than the operator writes: no fields, so it is read;
        // its token is still known (a revocation must see it), and only the operator's keys.
        let mut padded = secret("1", "a.b.c");
        for i in 0..1000 {
            padded.metadata.labels.as_mut().unwrap().insert(format!("l{i}"), "x".into());
            padded.data.as_mut().unwrap().insert(format!("k{i}"), ByteString(vec![b'x'; 1024]));
        }
        let digest = SecretDigest::of(&padded);
        assert!(digest.fields.is_empty());
        assert!(digest.data.as_ref().is_some_and(|d| d.fields.len() == 2), "{digest:?}");
        assert!(digest.may_have_token() && digest.controlled_by("owner"));
        assert!(!digest.has_annotation("rev", "1"), "its revision is not known: it is read");
    }

    #[test]
    fn follows_the_watch_and_own_writes_without_going_back_in_time() {
        let secrets = TokenSecrets::default();
        assert_eq!(secrets.get("ns", "s"), None);
        secrets.observe(&watcher::Event::Init);
        secrets.observe(&watcher::Event::InitApply(meta(&secret("10", "t.1.a"))));
        assert_eq!(secrets.get("ns", "s"), None, "a list counts once complete");
        secrets.observe(&watcher::Event::InitDone);
        let listed = secrets.get("ns", "s").unwrap();
        assert!(listed.controlled_by("owner") && !listed.data_known());

        // The operator's write is seen at once; the watch's older event does not undo it, nor
        // does the echo of the write (the same resourceVersion, metadata only).
        secrets.wrote(&secret("20", "t.2.a"));
        secrets.observe(&watcher::Event::Apply(meta(&secret("15", "t.1.b"))));
        assert_eq!(secrets.get("ns", "s").unwrap().token_match("t.2.a"), TokenMatch::Same);
        secrets.observe(&watcher::Event::Apply(meta(&secret("20", "t.2.a"))));
        assert_eq!(secrets.get("ns", "s").unwrap().token_match("t.2.a"), TokenMatch::Same);
        // A relist at that resourceVersion keeps what the write showed.
        secrets.observe(&watcher::Event::Init);
        secrets.observe(&watcher::Event::InitApply(meta(&secret("20", "t.2.a"))));
        secrets.observe(&watcher::Event::InitDone);
        assert_eq!(secrets.get("ns", "s").unwrap().token_match("t.2.a"), TokenMatch::Same);

        // Someone else's change: the data is no longer known, until a read shows it.
        secrets.observe(&watcher::Event::Apply(meta(&secret("30", "t.3.a"))));
        assert!(!secrets.get("ns", "s").unwrap().data_known());
        secrets.read(&secret("30", "t.3.a"));
        assert_eq!(secrets.get("ns", "s").unwrap().token_match("t.3.a"), TokenMatch::Same);

        // A read of a Secret the watch does not follow (unlabelled) is not kept.
        let mut unlabelled = secret("40", "t.4.a");
        unlabelled.metadata.name = Some("other".into());
        unlabelled.metadata.labels = None;
        secrets.read(&unlabelled);
        assert_eq!(secrets.get("ns", "other"), None);

        // The delete of an older incarnation keeps the newer one; its own delete removes it.
        secrets.observe(&watcher::Event::Delete(meta(&secret("25", "t.1.a"))));
        assert!(secrets.get("ns", "s").is_some());
        secrets.observe(&watcher::Event::Delete(meta(&secret("30", "t.3.a"))));
        assert_eq!(secrets.get("ns", "s"), None);
    }
}
