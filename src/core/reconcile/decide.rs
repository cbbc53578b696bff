//! The decide stage: does this TenantAccess need a new token, and why? A pure chain of checks on
//! what is observed (the Secret, the status, the key) at `now`, in the spirit of cert-manager's
//! "needs re-issuing" policy chain. Re-signing only for a reason matters: a fresh `iat` changes
//! the Secret, which restarts pods and feeds back into reconciles.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::api::TokenStatus;
use crate::core::jwt::ParsedToken;
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::ValidatedAccess;
use crate::core::well_known::{ANNOTATION_RENEW, secret_keys};

/// Why a new token is signed. Each maps to an event reason and a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// No Secret yet (first issuance, or the Secret was deleted).
    SecretMissing,
    /// The Secret has no `token` key.
    TokenMissing,
    /// The `token` key does not hold a JWT.
    TokenUnparseable,
    /// The token does not verify with the current key, and the key did not change: edited.
    TokenInvalid,
    /// The admin token rotated since the token was signed.
    SigningKeyChanged,
    /// The spec asks for other claims (scopes, params, name, limits, workspace).
    ClaimsChanged,
    /// The spec asks for another lifetime.
    LifetimeChanged,
    /// The `tenantaccess.dev/renew` annotation changed.
    RenewRequested,
    /// The renewal time is reached (or the token expired).
    RenewalDue,
}

impl IssueReason {
    /// Event reason: `Issued` for a first token, `Renewed` on schedule, `Resigned` otherwise.
    #[must_use]
    pub fn event_reason(self, first: bool) -> &'static str {
        use crate::core::well_known::reason;
        match self {
            _ if first => reason::ISSUED,
            Self::RenewalDue => reason::RENEWED,
            _ => reason::RESIGNED,
        }
    }

    /// Human explanation for events and logs.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::SecretMissing => "the token Secret does not exist",
            Self::TokenMissing => "the token Secret has no `token` key",
            Self::TokenUnparseable => "the token Secret's `token` is not a JWT",
            Self::TokenInvalid => {
                "the token in the Secret does not verify with the workspace key (it was edited)"
            }
            Self::SigningKeyChanged => "the workspace admin token (signing key) rotated",
            Self::ClaimsChanged => "the requested access (scopes, params, name, limits) changed",
            Self::LifetimeChanged => "the requested lifetime changed",
            Self::RenewRequested => "a renewal was requested with the tenantaccess.dev/renew annotation",
            Self::RenewalDue => "the renewal time was reached",
        }
    }
}

/// What the Secret currently holds, for a token that is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentToken {
    /// The JWT in the Secret.
    pub jwt: String,
    /// Its `iat`.
    pub issued_at: Timestamp,
    /// Its `exp`.
    pub expires_at: Timestamp,
    /// When it is renewed ([`renewal_time`]).
    pub renewal_time: Timestamp,
    /// Hash of its access claims.
    pub claims_hash: String,
}

/// The decision about the token Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDecision {
    /// A Secret of that name exists and is not this TenantAccess's: leave it alone.
    Conflict,
    /// Sign a new token.
    Issue(IssueReason),
    /// The token stays; only metadata may need repair.
    Keep(CurrentToken),
}

/// How a Secret's token compares with the token the status describes, from the Secret's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMatch {
    /// The very same JWT.
    Same,
    /// The same header and claims with another signature: signed with another key (or edited).
    OtherSignature,
    /// Something else, or no token: the Secret must be read to tell.
    Unknown,
}

/// What is known of the token Secret.
#[derive(Debug, Clone, Copy)]
pub enum ObservedToken<'a> {
    /// There is no Secret of the output's name.
    Absent,
    /// The Secret, as read.
    Read(&'a Secret),
    /// The Secret known from its digest: as the operator wrote it for the token the status
    /// describes (built again, not read), and how the token it holds compares with that one.
    /// The same as reading it, for every decision.
    Digest {
        /// The Secret built again.
        secret: &'a Secret,
        /// Its token against the one the status describes.
        token: TokenMatch,
    },
}

/// Everything `decide` looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The TenantAccess's uid (owner of its Secret).
    pub owner_uid: &'a str,
    /// The token Secret.
    pub token: ObservedToken<'a>,
    /// Hash of the access claims the spec asks for (`crate::core::desired::access_claims`).
    pub desired_claims_hash: &'a str,
    /// `status.token` of the TenantAccess.
    pub status_token: Option<&'a TokenStatus>,
    /// Its annotations.
    pub annotations: Option<&'a BTreeMap<String, String>>,
}

/// Whether this object (a token Secret, a Clerk template ConfigMap) is controlled by the
/// TenantAccess with this uid: its controller owner reference, which only its creator sets. The
/// managed-by label does not count: anyone who can write the object can set a label.
#[must_use]
pub fn is_owned_by<K: Resource>(object: &K, owner_uid: &str) -> bool {
    object.meta().owner_references.iter().flatten().any(|o| o.uid == owner_uid && o.controller == Some(true))
}

/// The renew annotation's value, if set, in the form status keeps it
/// (`status.token.renewRequest`): as written when short and printable, else a short hash
/// ([`crate::core::rotation::request_id`]), so an annotation's size never reaches status.
#[must_use]
pub fn renew_request(annotations: Option<&BTreeMap<String, String>>) -> Option<String> {
    annotations
        .and_then(|a| a.get(ANNOTATION_RENEW))
        .map(String::as_str)
        .map(crate::core::rotation::request_id)
}

/// Why a token whose signature does not verify with the workspace key is re-signed: the key
/// rotated since the status's token was signed, or else the token was edited.
#[must_use]
pub fn other_signature_reason(
    status_token: Option<&TokenStatus>,
    workspace: &SigningWorkspace,
) -> IssueReason {
    if status_token.is_some_and(|t| t.signing_key_fingerprint != workspace.signing_key_fingerprint) {
        IssueReason::SigningKeyChanged
    } else {
        IssueReason::TokenInvalid
    }
}

/// Decides what to do with the token at `now`.
#[must_use]
pub fn decide_token(
    access: &ValidatedAccess,
    workspace: &SigningWorkspace,
    observed: Observed<'_>,
    now: Timestamp,
) -> TokenDecision {
    let secret = match observed.token {
        ObservedToken::Absent => return TokenDecision::Issue(IssueReason::SecretMissing),
        // The digest showed the claims of the status's token under another signature.
        ObservedToken::Digest { token: TokenMatch::OtherSignature, .. } => {
            return TokenDecision::Issue(other_signature_reason(observed.status_token, workspace));
        }
        ObservedToken::Read(secret) | ObservedToken::Digest { secret, .. } => secret,
    };
    if !is_owned_by(secret, observed.owner_uid) {
        return TokenDecision::Conflict;
    }
    let Some(jwt) = secret
        .data
        .as_ref()
        .and_then(|d| d.get(secret_keys::TOKEN))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .filter(|t| !t.trim().is_empty())
    else {
        return TokenDecision::Issue(IssueReason::TokenMissing);
    };
    let Ok(parsed) = ParsedToken::parse(&jwt) else {
        return TokenDecision::Issue(IssueReason::TokenUnparseable);
    };
    if !parsed.signature_matches(&workspace.key) {
        return TokenDecision::Issue(other_signature_reason(observed.status_token, workspace));
    }
    let (Ok(claims), Some(issued_at), Some(expires_at)) =
        (parsed.claims(), parsed.issued_at(), parsed.expires_at())
    else {
        return TokenDecision::Issue(IssueReason::TokenUnparseable);
    };
    let claims_hash = claims.access.hash();
    if claims_hash != observed.desired_claims_hash {
        return TokenDecision::Issue(IssueReason::ClaimsChanged);
    }
    if claims.exp - claims.iat != access.lifetime.as_secs() {
        return TokenDecision::Issue(IssueReason::LifetimeChanged);
    }
    if let Some(requested) = renew_request(observed.annotations)
        && observed.status_token.and_then(|t| t.renew_request.as_deref()) != Some(requested.as_str())
    {
        return TokenDecision::Issue(IssueReason::RenewRequested);
    }
    let renewal_time = renewal_time(expires_at, access);
    if now >= renewal_time {
        return TokenDecision::Issue(IssueReason::RenewalDue);
    }
    TokenDecision::Keep(CurrentToken { jwt, issued_at, expires_at, renewal_time, claims_hash })
}

/// When a token expiring at `expires_at` is renewed: `expiresAt - renewBefore`, brought forward
/// by the TenantAccess's [`renewal_offset`].
///
/// Tokens signed together (every dependent of a workspace after its admin token rotated) thus
/// come due spread over a quarter of `renewBefore` instead of in the same second, and, since
/// each renewal starts the next cycle from where the last one happened, they stay spread in
/// every later cycle: writes, events and rollout restarts do not arrive in waves. Brought
/// forward, never delayed: a token is always renewed at least `renewBefore` before it expires,
/// the margin the spec asks for, and at least three quarters of `lifetime - renewBefore` after
/// it was issued (never a renewal loop).
#[must_use]
pub fn renewal_time(expires_at: Timestamp, access: &ValidatedAccess) -> Timestamp {
    let nominal = expires_at.checked_sub(access.renew_before).unwrap_or(expires_at);
    nominal.checked_sub(renewal_offset(access)).unwrap_or(nominal)
}

/// How much of its window a renewal is brought forward: a quarter.
const RENEWAL_SPREAD_DIVISOR: i32 = 4;

/// How long before `expiresAt - renewBefore` this TenantAccess's tokens are renewed: a fixed
/// share, drawn from its namespace and name, of a window of a quarter of `renewBefore` (and of
/// `lifetime - renewBefore`, so that a token still lives most of its planned time). The same at
/// every reconcile and in every replica, so the renewal time read back from a token is the one
/// it was issued with.
#[must_use]
pub fn renewal_offset(access: &ValidatedAccess) -> SignedDuration {
    let before_renewal = access.lifetime.checked_sub(access.renew_before).unwrap_or_default();
    let window = access.renew_before.min(before_renewal) / RENEWAL_SPREAD_DIVISOR;
    let offset = window.mul_f64(spread_fraction(&access.namespace, &access.name));
    // Whole seconds, as JWT times are: the renewal time in the status is exact.
    SignedDuration::from_secs(offset.as_secs().clamp(0, window.as_secs().max(0)))
}

/// A share in `[0, 1)` that depends only on `namespace/name`, uniform over TenantAccesses.
pub(crate) fn spread_fraction(namespace: &str, name: &str) -> f64 {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::new().chain_update(namespace).chain_update("/").chain_update(name).finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    #[allow(clippy::cast_precision_loss)]
    let fraction = (u64::from_be_bytes(first) >> 11) as f64 / (1_u64 << 53) as f64;
    fraction
}

/// Whether the observed Secret lacks something of the desired one: a label, an annotation, a
/// data key or value, the owner reference. Extra labels or keys others added are left alone.
#[must_use]
pub fn secret_needs_repair(desired: &Secret, observed: &Secret) -> bool {
    metadata_lacks(&desired.metadata, &observed.metadata)
        || missing(desired.data.as_ref(), observed.data.as_ref())
}

/// What to do with the ConfigMap that holds a TenantAccess's rendered Clerk template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigMapDecision {
    /// There is none: create it (a create, which fails rather than take over a ConfigMap someone
    /// else made meanwhile).
    Create,
    /// This TenantAccess's, lacking something of the desired one: write it.
    Update,
    /// This TenantAccess's, as desired.
    Keep,
    /// Someone else's (no controller reference to this TenantAccess): leave it alone.
    Conflict,
}

/// What is known of the Clerk template ConfigMap.
#[derive(Debug, Clone, Copy)]
pub enum ObservedConfigMap<'a> {
    /// Read whole.
    Read(&'a ConfigMap),
    /// Its metadata (the ConfigMap watch is metadata-only), and the hash of the key the operator
    /// writes ([`crate::core::desired::configmap_data_hash`]) when the operator saw it at this
    /// very resourceVersion (`None`: not known).
    Metadata {
        /// Its metadata.
        metadata: &'a ObjectMeta,
        /// The hash of its template key.
        data_hash: Option<&'a str>,
    },
}

/// Decides the Clerk template ConfigMap, as [`decide_token`] decides the Secret: only a
/// ConfigMap this TenantAccess created (its controller reference) is written.
#[must_use]
pub fn decide_configmap(
    desired: &ConfigMap,
    observed: Option<ObservedConfigMap<'_>>,
    owner_uid: &str,
) -> ConfigMapDecision {
    let Some(observed) = observed else { return ConfigMapDecision::Create };
    let metadata = match observed {
        ObservedConfigMap::Read(configmap) => &configmap.metadata,
        ObservedConfigMap::Metadata { metadata, .. } => metadata,
    };
    let owned =
        metadata.owner_references.iter().flatten().any(|o| o.uid == owner_uid && o.controller == Some(true));
    if !owned {
        return ConfigMapDecision::Conflict;
    }
    let data_lacks = match observed {
        ObservedConfigMap::Read(configmap) => missing(desired.data.as_ref(), configmap.data.as_ref()),
        ObservedConfigMap::Metadata { data_hash, .. } => {
            data_hash != Some(crate::core::desired::configmap_data_hash(desired).as_str())
        }
    };
    if metadata_lacks(&desired.metadata, metadata) || data_lacks {
        ConfigMapDecision::Update
    } else {
        ConfigMapDecision::Keep
    }
}

/// Whether some entry of `desired` is absent from `observed` or different there.
fn missing<V: PartialEq>(
    desired: Option<&BTreeMap<String, V>>,
    observed: Option<&BTreeMap<String, V>>,
) -> bool {
    desired.into_iter().flatten().any(|(k, v)| observed.and_then(|o| o.get(k)) != Some(v))
}

/// Whether the observed metadata lacks a desired label, annotation or owner reference.
fn metadata_lacks(desired: &ObjectMeta, observed: &ObjectMeta) -> bool {
    missing(desired.labels.as_ref(), observed.labels.as_ref())
        || missing(desired.annotations.as_ref(), observed.annotations.as_ref())
        || desired.owner_references.iter().flatten().any(|o| {
            !observed
                .owner_references
                .iter()
                .flatten()
                .any(|x| x.uid == o.uid && x.controller == o.controller)
        })
}

#[cfg(test)]
pub(crate) mod tests;
