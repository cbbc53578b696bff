//! The observe step: what a reconcile knows of the objects it writes (the token Secret, the
//! Clerk template ConfigMap), read from the caches when they can tell and from the API server
//! when they cannot.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::token_secrets::SecretDigest;
use crate::api::{TenantAccess, TokenStatus};
use crate::core::desired::{desired_secret, token_described_by};
use crate::core::jwt::SignError;
use crate::core::reconcile::decide::{ObservedToken, TokenMatch, secret_needs_repair};
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
            Self::Digest { digest, .. } => digest.lacks(desired),
        }
    }
}

/// How long a reconcile waits for the first list of managed ConfigMaps before reading one.
pub const CONFIGMAP_LIST_PATIENCE: Duration = Duration::from_secs(10);

/// The Clerk template ConfigMap `namespace/name` as it is: from the cache of managed
/// (labelled) ConfigMaps once it has its first list (bounded wait), else read, since an
/// unlabelled ConfigMap of that name (someone else's, or this one with its label removed) may
/// exist. `None`: there is none.
///
/// # Errors
/// The read failed.
pub async fn configmap(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Arc<ConfigMap>>, Error> {
    let managed = &ctx.caches.managed_configmaps;
    let _ = tokio::time::timeout(CONFIGMAP_LIST_PATIENCE, managed.wait_until_ready()).await;
    if let Some(cached) = managed.get(&ObjectRef::new(name).within(namespace)) {
        return Ok(Some(cached));
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api.get_opt(name).await.map_err(Error::ReadConfigMap)?.map(Arc::new))
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
                && let Some((secret, token)) = rebuild(&digest, validated, signer, owner_uid, status, owner)?
            {
                return Ok(ObservedSecret::Digest { secret, digest, token });
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
        Some(secret) => ObservedSecret::Read(secret),
        None => ObservedSecret::Absent { known: false },
    })
}

/// The Secret as the operator wrote it for the token `status` describes, when `digest` shows
/// that the Secret holds that token (or the same claims signed with another key, during a
/// rotation) at that revision, under the control of the TenantAccess `owner_uid`. For every
/// decision it is the same as reading the Secret. `None`: read it.
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
) -> Result<Option<(Secret, TokenMatch)>, SignError> {
    if !digest.controlled_by(owner_uid)
        || !digest.has_annotation(ANNOTATION_REVISION, &status.revision.to_string())
    {
        return Ok(None);
    }
    let token = token_described_by(validated, signer, status)?;
    let token_match = digest.token_match(&token.jwt);
    if token_match == TokenMatch::Unknown {
        return Ok(None);
    }
    Ok(desired_secret(validated, signer, &token, status.revision, owner).map(|secret| (secret, token_match)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;
    use crate::core::reconcile::decide::tests::{SPEC, UID, access, issued, owner, workspace};

    #[test]
    fn rebuilds_the_secret_that_holds_the_token_the_status_describes() {
        let (access, ws) = (access(SPEC), workspace("key-1"));
        let (secret, status, _) = issued(&access, &ws);
        let digest = SecretDigest::of(&secret);
        let (rebuilt, token_match) =
            rebuild(&digest, &access, &ws, UID, &status, Some(owner())).unwrap().unwrap();
        assert_eq!(token_match, TokenMatch::Same);
        assert_eq!(rebuilt, secret, "exactly the Secret that was written");
    }

    #[test]
    fn recognises_the_old_signature_after_a_rotation_without_the_old_key() {
        let (access, old) = (access(SPEC), workspace("key-1"));
        let (secret, status, _) = issued(&access, &old);
        let rotated = workspace("key-2");
        let (_, token_match) =
            rebuild(&SecretDigest::of(&secret), &access, &rotated, UID, &status, Some(owner()))
                .unwrap()
                .unwrap();
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
        assert_eq!(rebuild(&secret, &validated, &status, "another-uid"), None);
        // The token was edited.
        let mut edited = secret.clone();
        edited.data.as_mut().unwrap().insert("token".into(), ByteString(b"eyJ.edited.x".to_vec()));
        assert_eq!(rebuild(&edited, &validated, &status, UID), None);
        // The status is behind the Secret (another revision).
        let mut behind = status.clone();
        behind.revision = 2;
        assert_eq!(rebuild(&secret, &validated, &behind, UID), None);
        // The spec asks for other claims: the token is not the one rebuilt.
        let changed = access(&SPEC.replace("org: acme", "org: globex"));
        assert_eq!(rebuild(&secret, &changed, &status, UID), None);
    }
}
