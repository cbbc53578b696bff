//! The observe step: what a reconcile knows of the objects it writes (the token Secret, the
//! Clerk template ConfigMap), read from the caches when they can tell and from the API server
//! when they cannot.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::token_secrets::SecretDigest;
use crate::api::{SecretObserved, TenantAccess, TokenStatus};
use crate::core::desired::{desired_secret, secret_data_hash, token_described_by};
use crate::core::jwt::SignError;
use crate::core::reconcile::decide::{
    ObservedConfigMap, ObservedToken, TokenMatch, is_owned_by, secret_needs_repair,
};
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::ValidatedAccess;
use crate::core::well_known::ANNOTATION_REVISION;

/// How long a reconcile waits for the first list of managed Secrets before reading its Secret.
pub const SECRET_LIST_PATIENCE: Duration = Duration::from_secs(10);

/// What a reconcile knows of the token Secret.
#[derive(Debug)]
pub enum ObservedSecret {
    /// There is none (`known`: the Secret watch never saw the name, so nothing was read).
    Absent {
        /// Whether that is known without a read.
        known: bool,
    },
    /// Read from the API server.
    Read(Secret),
    /// The Secret the operator wrote for the token the status describes (built again, not
    /// read), with the digest that matched it: the same as reading it, for every decision.
    Digest {
        /// The Secret built again.
        secret: Secret,
        /// Its digest.
        digest: SecretDigest,
        /// How its token compares with the status's.
        token: TokenMatch,
        /// When its data is known from `status.token.secretObserved` (the digest has only its
        /// metadata): the hash of the keys the operator writes, as they still are.
        data_hash: Option<String>,
    },
}

impl ObservedSecret {
    /// The decide stage's view of it.
    #[must_use]
    pub fn as_token(&self) -> ObservedToken<'_> {
        match self {
            Self::Absent { .. } => ObservedToken::Absent,
            Self::Read(secret) => ObservedToken::Read(secret),
            Self::Digest { secret, token, .. } => ObservedToken::Digest { secret, token: *token },
        }
    }

    /// Whether the Secret as observed lacks something of `desired` (its digest tells, when it
    /// was not read).
    #[must_use]
    pub fn lacks(&self, desired: &Secret) -> bool {
        match self {
            Self::Absent { .. } => false,
            Self::Read(observed) => secret_needs_repair(desired, observed),
            Self::Digest { digest, data_hash, .. } => {
                digest.metadata_lacks(desired)
                    || digest
                        .data_lacks(desired)
                        .unwrap_or_else(|| data_hash.as_deref() != Some(secret_data_hash(desired).as_str()))
            }
        }
    }

    /// The Secret as observed, for `status.token.secretObserved`, when it holds what it should
    /// (nothing [`Self::lacks`]): its resourceVersion and the hash of the keys the operator writes.
    #[must_use]
    pub fn seen(&self) -> Option<SecretObserved> {
        let (resource_version, secret) = match self {
            Self::Absent { .. } => return None,
            Self::Read(secret) => (secret.metadata.resource_version.clone()?, secret),
            Self::Digest { secret, digest, .. } => (digest.resource_version()?.to_string(), secret),
        };
        Some(SecretObserved { resource_version, data_hash: secret_data_hash(secret) })
    }
}

/// How long a reconcile waits for the first list of managed ConfigMaps before reading one.
pub const CONFIGMAP_LIST_PATIENCE: Duration = Duration::from_secs(10);

/// What a reconcile knows of the Clerk template ConfigMap.
#[derive(Debug)]
pub enum SeenConfigMap {
    /// Read from the API server.
    Read(Box<ConfigMap>),
    /// From the metadata-only cache, with the hash of its data when the operator saw it at this
    /// resourceVersion (always, for one this TenantAccess controls).
    Cached {
        /// Its metadata.
        metadata: Arc<PartialObjectMeta<ConfigMap>>,
        /// The hash of its template key.
        data_hash: Option<String>,
    },
}

impl SeenConfigMap {
    /// The decide stage's view of it.
    #[must_use]
    pub fn as_observed(&self) -> ObservedConfigMap<'_> {
        match self {
            Self::Read(configmap) => ObservedConfigMap::Read(configmap),
            Self::Cached { metadata, data_hash } => {
                ObservedConfigMap::Metadata { metadata: &metadata.metadata, data_hash: data_hash.as_deref() }
            }
        }
    }
}

/// The Clerk template ConfigMap `namespace/name` as it is: from the metadata-only cache of
/// managed (labelled) ConfigMaps once it has its first list (bounded wait), with its data's
/// hash as the operator last wrote or read it at that resourceVersion; else read (the data not
/// known, or an unlabelled ConfigMap of that name may exist: someone else's, or this one with
/// its label removed). `None`: there is none.
///
/// # Errors
/// The read failed.
pub async fn configmap(
    ctx: &Context,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<Option<SeenConfigMap>, Error> {
    let managed = &ctx.caches.managed_configmaps;
    let _ = tokio::time::timeout(CONFIGMAP_LIST_PATIENCE, managed.wait_until_ready()).await;
    if let Some(cached) = managed.get(&ObjectRef::new(name).within(namespace)) {
        let data_hash = ctx.ledger.template_configmaps.data_hash(
            namespace,
            name,
            cached.metadata.resource_version.as_deref(),
        );
        // Someone else's needs no data to be refused; this one's, when the data is known.
        if !is_owned_by(cached.as_ref(), owner_uid) || data_hash.is_some() {
            return Ok(Some(SeenConfigMap::Cached { metadata: cached, data_hash }));
        }
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let read = api.get_opt(name).await.map_err(Error::ReadConfigMap)?;
    if let Some(configmap) = &read
        && is_owned_by(configmap, owner_uid)
    {
        ctx.ledger.template_configmaps.seen(configmap);
    }
    Ok(read.map(|configmap| SeenConfigMap::Read(Box::new(configmap))))
}

/// What is known of a TenantAccess's token Secret (`None`: the spec asks for none).
///
/// # Errors
/// The read failed, or signing the status's token again did.
pub async fn token(
    access: &TenantAccess,
    validated: &ValidatedAccess,
    signer: &SigningWorkspace,
    ctx: &Context,
    status_token: Option<&TokenStatus>,
) -> Result<Option<ObservedSecret>, Error> {
    let Some(output) = &validated.secret else { return Ok(None) };
    let owner_uid = access.uid().unwrap_or_default();
    let owner = access.controller_owner_ref(&());
    token_secret(ctx, &output.name, validated, signer, &owner_uid, status_token, owner).await.map(Some)
}

/// Finds out what the token Secret holds, reading it only when its digest cannot tell.
///
/// # Errors
/// The read failed, or signing the status's token again did.
async fn token_secret(
    ctx: &Context,
    secret_name: &str,
    validated: &ValidatedAccess,
    signer: &SigningWorkspace,
    owner_uid: &str,
    status_token: Option<&TokenStatus>,
    owner: Option<OwnerReference>,
) -> Result<ObservedSecret, Error> {
    let namespace = &validated.namespace;
    // At a (re)start, the list of managed Secrets is on its way: wait for it rather than read
    // each Secret (bounded, should that watch be failing).
    ctx.ledger.token_secrets.synced_within(SECRET_LIST_PATIENCE).await;
    match ctx.ledger.token_secrets.get(namespace, secret_name) {
        Some(digest) => {
            if let Some(status) = status_token
                && let Some(rebuilt) = rebuild(&digest, validated, signer, owner_uid, status, owner)?
            {
                return Ok(rebuilt);
            }
        }
        // Not a managed Secret: either absent (then the Secret watch has never seen the name,
        // and a first issuance needs no GET) or someone else's (read it, to refuse with
        // SecretConflict).
        None if ctx.ledger.known_secrets.certainly_absent(namespace, secret_name) => {
            return Ok(ObservedSecret::Absent { known: true });
        }
        None => {}
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(match secrets.get_opt(secret_name).await.map_err(Error::ReadSecret)? {
        Some(secret) => {
            // What the read showed holds until the Secret changes: the next reconcile need not
            // read it again.
            ctx.ledger.token_secrets.read(&secret);
            ObservedSecret::Read(secret)
        }
        None => ObservedSecret::Absent { known: false },
    })
}

/// The Secret as the operator wrote it for the token `status` describes, when the digest shows
/// that the Secret holds that token (or the same claims signed with another key, during a
/// rotation) at that revision, under the control of the TenantAccess `owner_uid`. For every
/// decision it is the same as reading the Secret. `None`: read it.
///
/// The digest shows the token when it knows the Secret's data (the operator wrote or read it at
/// this resourceVersion), or when the Secret still has the resourceVersion at which
/// `status.token.secretObserved` saw it: then it holds the token the status describes, signed
/// with the key the status names (a restart reads no Secret that did not change).
///
/// # Errors
/// Only if signing fails.
pub fn rebuild(
    digest: &SecretDigest,
    validated: &ValidatedAccess,
    signer: &SigningWorkspace,
    owner_uid: &str,
    status: &TokenStatus,
    owner: Option<OwnerReference>,
) -> Result<Option<ObservedSecret>, SignError> {
    if !digest.controlled_by(owner_uid)
        || !digest.has_annotation(ANNOTATION_REVISION, &status.revision.to_string())
    {
        return Ok(None);
    }
    let token = token_described_by(validated, signer, status)?;
    let (token_match, data_hash) = if digest.data_known() {
        (digest.token_match(&token.jwt), None)
    } else {
        match status_observed(digest, validated, status) {
            Some(seen) if token.claims_hash == status.claims_hash => {
                let same_key = status.signing_key_fingerprint == signer.signing_key_fingerprint;
                let token_match = if same_key { TokenMatch::Same } else { TokenMatch::OtherSignature };
                (token_match, Some(seen.data_hash.clone()))
            }
            _ => (TokenMatch::Unknown, None),
        }
    };
    if token_match == TokenMatch::Unknown {
        return Ok(None);
    }
    Ok(desired_secret(validated, signer, &token, status.revision, owner).map(|secret| {
        ObservedSecret::Digest { secret, digest: digest.clone(), token: token_match, data_hash }
    }))
}

/// `status.token.secretObserved`, when it is of this very Secret as it still is (same name,
/// same resourceVersion).
fn status_observed<'a>(
    digest: &SecretDigest,
    validated: &ValidatedAccess,
    status: &'a TokenStatus,
) -> Option<&'a SecretObserved> {
    let seen = status.secret_observed.as_ref()?;
    let same_secret = validated.secret.as_ref().is_some_and(|output| output.name == status.secret_name);
    let same_version = digest.resource_version().is_some()
        && seen.resource_version.parse::<u64>().ok() == digest.resource_version();
    (same_secret && same_version).then_some(seen)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;
    use crate::core::reconcile::decide::tests::{SPEC, UID, access, issued, owner, workspace};

    fn rebuilt(
        digest: &SecretDigest,
        access: &ValidatedAccess,
        ws: &SigningWorkspace,
        status: &TokenStatus,
    ) -> Option<(Secret, TokenMatch, ObservedSecret)> {
        match rebuild(digest, access, ws, UID, status, Some(owner())).unwrap()? {
            observed @ ObservedSecret::Digest { .. } => {
                let ObservedSecret::Digest { secret, token, .. } = &observed else { unreachable!() };
                Some((secret.clone(), *token, observed))
            }
            other => panic!("{other:?}"),
        }
    }

    /// The Secret as the API server holds it after the operator's write, and the status that
    /// records having seen it.
    fn written(access: &ValidatedAccess, ws: &SigningWorkspace) -> (Secret, TokenStatus) {
        let (mut secret, mut status, _) = issued(access, ws);
        secret.metadata.resource_version = Some("41".into());
        status.secret_observed =
            Some(SecretObserved { resource_version: "41".into(), data_hash: secret_data_hash(&secret) });
        (secret, status)
    }

    #[test]
    fn rebuilds_the_secret_that_holds_the_token_the_status_describes() {
        let (access, ws) = (access(SPEC), workspace("key-1"));
        let (secret, status, _) = issued(&access, &ws);
        let (rebuilt, token_match, observed) =
            rebuilt(&SecretDigest::of(&secret), &access, &ws, &status).unwrap();
        assert_eq!(token_match, TokenMatch::Same);
        assert_eq!(rebuilt, secret, "exactly the Secret that was written");
        assert!(!observed.lacks(&secret));
    }

    #[test]
    fn recognises_the_old_signature_after_a_rotation_without_the_old_key() {
        let (access, old) = (access(SPEC), workspace("key-1"));
        let (secret, status, _) = issued(&access, &old);
        let rotated = workspace("key-2");
        let (_, token_match, _) = rebuilt(&SecretDigest::of(&secret), &access, &rotated, &status).unwrap();
        assert_eq!(token_match, TokenMatch::OtherSignature);
    }

    #[test]
    fn says_read_it_when_the_digest_cannot_tell() {
        let (validated, ws) = (access(SPEC), workspace("key-1"));
        let (secret, status, _) = issued(&validated, &ws);
        let rebuild = |secret: &Secret, access: &ValidatedAccess, status: &TokenStatus, uid: &str| {
            rebuild(&SecretDigest::of(secret), access, &ws, uid, status, Some(owner())).unwrap()
        };
        // Someone else's Secret.
        assert!(rebuild(&secret, &validated, &status, "another-uid").is_none());
        // The token was edited.
        let mut edited = secret.clone();
        edited.data.as_mut().unwrap().insert("token".into(), ByteString(b"eyJ.edited.x".to_vec()));
        assert!(rebuild(&edited, &validated, &status, UID).is_none());
        // The status is behind the Secret (another revision).
        let mut behind = status.clone();
        behind.revision = 2;
        assert!(rebuild(&secret, &validated, &behind, UID).is_none());
        // The spec asks for other claims: the token is not the one rebuilt.
        let changed = access(&SPEC.replace("org: acme", "org: globex"));
        assert!(rebuild(&secret, &changed, &status, UID).is_none());
    }

    #[test]
    fn after_a_restart_the_status_vouches_for_a_secret_that_kept_its_resource_version() {
        let (validated, ws) = (access(SPEC), workspace("key-1"));
        let (secret, status) = written(&validated, &ws);
        // The metadata-only watch: no data.
        let digest = SecretDigest::of_metadata(&secret.metadata);
        let (secret_again, token_match, observed) = rebuilt(&digest, &validated, &ws, &status).unwrap();
        assert_eq!(token_match, TokenMatch::Same);
        assert_eq!(secret_again.data, secret.data);
        assert!(!observed.lacks(&secret), "nothing to repair");
        assert_eq!(observed.seen(), status.secret_observed, "the status stays as it is");

        // Rotated while the operator was away: the same claims under the old key.
        let (_, token_match, _) = rebuilt(&digest, &validated, &workspace("key-2"), &status).unwrap();
        assert_eq!(token_match, TokenMatch::OtherSignature);

        // The workspace's API URL changed meanwhile: the same token, a key to repair.
        let mut moved = ws.clone();
        moved.api_url = "https://elsewhere.example".into();
        let (desired, token_match, observed) = rebuilt(&digest, &validated, &moved, &status).unwrap();
        assert_eq!(token_match, TokenMatch::Same);
        assert!(observed.lacks(&desired), "the api-url key must be rewritten");
    }

    #[test]
    fn the_status_does_not_vouch_for_a_secret_that_changed_or_for_other_claims() {
        let (validated, ws) = (access(SPEC), workspace("key-1"));
        let (secret, status) = written(&validated, &ws);
        // Someone wrote the Secret since (another resourceVersion): read it.
        let mut changed = secret.clone();
        changed.metadata.resource_version = Some("42".into());
        assert!(rebuilt(&SecretDigest::of_metadata(&changed.metadata), &validated, &ws, &status).is_none());
        // A status from before this field existed: read it.
        let mut older = status.clone();
        older.secret_observed = None;
        assert!(rebuilt(&SecretDigest::of_metadata(&secret.metadata), &validated, &ws, &older).is_none());
        // The spec asks for other claims: the Secret holds the old ones; read it.
        let other = access(&SPEC.replace("org: acme", "org: globex"));
        assert!(rebuilt(&SecretDigest::of_metadata(&secret.metadata), &other, &ws, &status).is_none());
        // Another Secret name than the one the status saw.
        let mut renamed = status.clone();
        renamed.secret_name = "elsewhere".into();
        assert!(rebuilt(&SecretDigest::of_metadata(&secret.metadata), &validated, &ws, &renamed).is_none());
    }
}
