//! The build stage: desired tokens, Secrets, Clerk templates and ConfigMaps as pure functions of
//! a validated TenantAccess, a signing workspace and `now`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

use crate::core::admin_token::{AdminToken, fingerprint};
use crate::core::filter::Filter;
use crate::core::jwt::{self, AccessClaims, ClaimLimits, ClaimScope, SignError, TinybirdClaims};
pub use crate::core::reconcile::decide::renewal_time;
use crate::core::shortcode::{self, Template};
use crate::core::signing_workspace::SigningWorkspace;
use crate::core::validate::{ValidClerkOutput, ValidatedAccess};
use crate::core::well_known::{
    ANNOTATION_REVISION, CLERK_TEMPLATE_CONFIGMAP_KEY, CLERK_TEMPLATE_CONFIGMAP_SUFFIX, LABEL_MANAGED_BY,
    LABEL_TENANT_ACCESS, OPERATOR_NAME, secret_keys,
};

/// The claims granting what the TenantAccess asks for (shortcodes kept as written).
#[must_use]
pub fn access_claims(access: &ValidatedAccess, workspace_id: &str) -> AccessClaims {
    AccessClaims {
        workspace_id: workspace_id.to_owned(),
        name: access.token_name.clone(),
        scopes: access
            .scopes
            .iter()
            .map(|scope| ClaimScope {
                scope_type: scope.scope_type.to_owned(),
                resource: scope.resource.clone(),
                fixed_params: (!scope.fixed_params.is_empty()).then(|| scope.fixed_params.clone()),
                filter: scope.filter.as_ref().map(Filter::to_sql),
            })
            .collect(),
        limits: access.rps.map(|rps| ClaimLimits { rps }),
    }
}

/// A freshly signed token and its schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub jwt: String,
    /// Hash of the access claims.
    pub claims_hash: String,
    /// `iat`.
    pub issued_at: Timestamp,
    /// `exp`.
    pub expires_at: Timestamp,
    /// When to renew: `exp - renewBefore`, spread ([`renewal_time`]).
    pub renewal_time: Timestamp,
}

impl IssuedToken {
    /// `status.token` for this token, written as `revision` of the TenantAccess's Secret.
    #[must_use]
    pub fn status(
        &self,
        validated: &ValidatedAccess,
        signer: &SigningWorkspace,
        revision: i64,
        renew_request: Option<&str>,
    ) -> crate::api::TokenStatus {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        crate::api::TokenStatus {
            name: validated.token_name.clone(),
            issued_at: Time(self.issued_at),
            expires_at: Time(self.expires_at),
            renewal_time: Time(self.renewal_time),
            revision,
            claims_hash: self.claims_hash.clone(),
            signing_key_fingerprint: signer.signing_key_fingerprint.clone(),
            secret_name: validated.secret.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            renew_request: renew_request.map(str::to_owned),
            secret_observed: None,
        }
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("jwt", &"<redacted>")
            .field("claims_hash", &self.claims_hash)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Signs a token for the TenantAccess at `now`.
///
/// # Errors
/// Only if signing itself fails.
pub fn issue_token(
    access: &ValidatedAccess,
    workspace: &SigningWorkspace,
    now: Timestamp,
) -> Result<IssuedToken, SignError> {
    let claims = TinybirdClaims::new(access_claims(access, &workspace.workspace_id), now, access.lifetime);
    sign_claims(access, workspace, &claims, now)
}

/// A token too large to be usable (see [`crate::api::limits::MAX_TOKEN_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the signed token would be {bytes} bytes, over the {max}-byte limit (tokens travel in an HTTP header): use fewer scopes, fixed params or shorter filters, or split the access into several TenantAccesses"
)]
pub struct TokenTooLarge {
    /// Size of the token the spec asks for.
    pub bytes: usize,
    /// The limit.
    pub max: usize,
}

/// Refuses a TenantAccess whose token (or Clerk template claims, which carry the same scopes)
/// would be too large to send. Signing is a cheap HMAC, so the size is measured, not guessed.
///
/// # Errors
/// [`TokenTooLarge`] past the limit; a signing failure counts as no verdict (signing is tried
/// again, and reported, when the token is issued).
pub fn check_token_size(
    access: &ValidatedAccess,
    workspace: &SigningWorkspace,
    now: Timestamp,
) -> Result<(), TokenTooLarge> {
    let max = crate::api::limits::MAX_TOKEN_BYTES;
    match issue_token(access, workspace, now) {
        Ok(token) if token.jwt.len() > max => Err(TokenTooLarge { bytes: token.jwt.len(), max }),
        _ => Ok(()),
    }
}

/// The token `status.token` describes (its `iat` and `exp`, the spec's claims), signed with the
/// workspace's current key: the very JWT that was issued when neither the claims nor the key
/// changed since, because HS256 over the same bytes is deterministic. It lets the reconciler
/// check a Secret against a digest instead of keeping the Secret in memory.
///
/// # Errors
/// Only if the JWT library fails.
pub fn token_described_by(
    access: &ValidatedAccess,
    workspace: &SigningWorkspace,
    status: &crate::api::TokenStatus,
) -> Result<IssuedToken, SignError> {
    let claims = TinybirdClaims {
        access: access_claims(access, &workspace.workspace_id),
        iat: status.issued_at.0.as_second(),
        exp: status.expires_at.0.as_second(),
    };
    sign_claims(access, workspace, &claims, status.issued_at.0)
}

fn sign_claims(
    access: &ValidatedAccess,
    workspace: &SigningWorkspace,
    claims: &TinybirdClaims,
    now: Timestamp,
) -> Result<IssuedToken, SignError> {
    let jwt = jwt::sign(claims, &workspace.key)?;
    let issued_at = Timestamp::from_second(claims.iat).unwrap_or(now);
    let expires_at = Timestamp::from_second(claims.exp).unwrap_or(now);
    Ok(IssuedToken {
        claims_hash: claims.access.hash(),
        jwt,
        issued_at,
        expires_at,
        renewal_time: renewal_time(expires_at, access),
    })
}

/// Labels on everything the operator creates for a TenantAccess.
#[must_use]
pub fn managed_labels(access_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), OPERATOR_NAME.to_owned()),
        (LABEL_TENANT_ACCESS.to_owned(), access_name.to_owned()),
    ])
}

/// The Secret as the operator writes it (server-side apply: only the fields it owns).
#[must_use]
pub fn desired_secret(
    access: &ValidatedAccess,
    workspace: &SigningWorkspace,
    token: &IssuedToken,
    revision: i64,
    owner: Option<OwnerReference>,
) -> Option<Secret> {
    let output = access.secret.as_ref()?;
    let mut labels = output.labels.clone();
    labels.extend(managed_labels(&access.name));
    let mut annotations = output.annotations.clone();
    annotations.insert(ANNOTATION_REVISION.to_owned(), revision.to_string());
    let data = BTreeMap::from([
        (secret_keys::TOKEN.to_owned(), ByteString(token.jwt.clone().into_bytes())),
        (secret_keys::API_URL.to_owned(), ByteString(workspace.api_url.clone().into_bytes())),
        (secret_keys::WORKSPACE_ID.to_owned(), ByteString(workspace.workspace_id.clone().into_bytes())),
        (secret_keys::EXPIRES_AT.to_owned(), ByteString(token.expires_at.to_string().into_bytes())),
    ]);
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(output.name.clone()),
            namespace: Some(access.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// A one-way hash of the values of a Secret's or ConfigMap's `keys` (an absent key counts as
/// absent, and differs from an empty value): SHA-256 over each key and value, length-prefixed,
/// as [`crate::core::admin_token::fingerprint`] shortens it. Stable across versions of the
/// operator, since status keeps it (`status.token.secretObserved.dataHash`); it tells whether
/// those keys still hold what was seen, never what they hold.
#[must_use]
pub fn data_hash<'a>(keys: &[&str], value: impl Fn(&str) -> Option<&'a [u8]>) -> String {
    let mut input = Vec::new();
    for key in keys {
        input.extend_from_slice(&(key.len() as u64).to_be_bytes());
        input.extend_from_slice(key.as_bytes());
        match value(key) {
            Some(bytes) => {
                input.push(1);
                input.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
                input.extend_from_slice(bytes);
            }
            None => input.push(0),
        }
    }
    fingerprint(&input)
}

/// [`data_hash`] of the keys the operator writes in a token Secret.
#[must_use]
pub fn secret_data_hash(secret: &Secret) -> String {
    let data = secret.data.as_ref();
    data_hash(&secret_keys::ALL, |key| data.and_then(|d| d.get(key)).map(|v| v.0.as_slice()))
}

/// [`data_hash`] of the key the operator writes in a Clerk template ConfigMap.
#[must_use]
pub fn configmap_data_hash(configmap: &ConfigMap) -> String {
    let data = configmap.data.as_ref();
    data_hash(&[CLERK_TEMPLATE_CONFIGMAP_KEY], |key| data.and_then(|d| d.get(key)).map(String::as_bytes))
}

/// Claim marking a Clerk template as managed by the operator: `<namespace>/<name>` of the
/// TenantAccess. The operator adopts an existing template of the same name only when it carries
/// this claim with the same value; Tinybird ignores the claim.
pub const CLERK_OWNER_CLAIM: &str = "tenant_access";

/// Claim naming the workspace resource whose Clerk connection pushed a template
/// (`ClusterTinybirdWorkspace/<name>` or `TinybirdWorkspace/<namespace>/<name>`): the workspace
/// that may remove it once it outlives its right (Tinybird ignores the claim).
pub const CLERK_WORKSPACE_CLAIM: &str = "tenant_access_workspace";

/// Claim (`true`) on a template whose TenantAccess keeps it in Clerk after its own deletion
/// (`deletionPolicy: Retain`); absent otherwise.
pub const CLERK_RETAIN_CLAIM: &str = "tenant_access_retain";

/// The claims of a Clerk template: the access claims plus the operator's markers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClerkClaims {
    /// `workspace_id`, `name`, `scopes`, `limits` (shortcodes kept).
    #[serde(flatten)]
    pub access: AccessClaims,
    /// The ownership marker, `<namespace>/<name>` (serialized as `tenant_access`).
    #[serde(rename = "tenant_access")]
    pub owner: String,
    /// The pushing workspace ([`CLERK_WORKSPACE_CLAIM`]).
    #[serde(rename = "tenant_access_workspace")]
    pub workspace: String,
    /// [`CLERK_RETAIN_CLAIM`].
    #[serde(rename = "tenant_access_retain", skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
}

/// The value of [`CLERK_WORKSPACE_CLAIM`] for a workspace resource.
#[must_use]
pub fn clerk_workspace_marker(
    kind: crate::core::validate::WorkspaceKind,
    namespace: &str,
    name: &str,
) -> String {
    match kind {
        crate::core::validate::WorkspaceKind::Cluster => format!("{}/{name}", kind.kind_name()),
        crate::core::validate::WorkspaceKind::Namespaced => {
            format!("{}/{namespace}/{name}", kind.kind_name())
        }
    }
}

/// A Clerk JWT template, without its signing key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClerkTemplate {
    /// Template name.
    pub name: String,
    /// Claims (Clerk adds `exp`, `iat`, `nbf`, ... itself).
    pub claims: ClerkClaims,
    /// Token lifetime, seconds.
    pub lifetime: i64,
    /// Allowed clock skew, seconds.
    pub allowed_clock_skew: i64,
    /// Always true: Clerk signs with the workspace admin token.
    pub custom_signing_key: bool,
    /// Always HS256.
    pub signing_algorithm: &'static str,
}

impl ClerkTemplate {
    /// A short hash of the whole body without the key.
    #[must_use]
    pub fn hash(&self) -> String {
        fingerprint(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    /// The body to send to Clerk: the template plus `signing_key`. Build it just before the
    /// request; never log or store it.
    #[must_use]
    pub fn request_body(&self, signing_key: &AdminToken) -> serde_json::Value {
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = body.as_object_mut() {
            object.insert("signing_key".into(), signing_key.expose().into());
        }
        body
    }

    /// Pretty JSON of the template for people and the ConfigMap (no key).
    #[must_use]
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The claims of a Clerk template: the access claims with the token name of the rate-limit key,
/// each param the workspace pins as the policy's shortcode, and a fallback (the workspace's
/// missing-identity value) on every shortcode that has none. Each value holding shortcodes is
/// parsed and written back in the operator's own form.
#[must_use]
pub fn clerk_access_claims(
    access: &ValidatedAccess,
    output: &ValidClerkOutput,
    workspace_id: &str,
) -> AccessClaims {
    let fallback = output.missing_identity_value.as_str();
    let mut claims = access_claims(access, workspace_id);
    claims.name = output.token_name.render(fallback);
    for fixed_params in claims.scopes.iter_mut().filter_map(|scope| scope.fixed_params.as_mut()) {
        for (param, value) in fixed_params.iter_mut() {
            if let Some(code) = output.pinned.get(param) {
                *value = serde_json::Value::String(code.render(fallback));
            } else if let serde_json::Value::String(text) = value
                && shortcode::contains_shortcode(text)
            {
                // Validated; a value that would not parse is replaced, never passed through.
                *text = Template::parse(text).map_or_else(|_| fallback.to_owned(), |t| t.render(fallback));
            }
        }
    }
    claims
}

/// The Clerk template a TenantAccess asks for.
#[must_use]
pub fn clerk_template(
    access: &ValidatedAccess,
    output: &ValidClerkOutput,
    workspace_id: &str,
) -> ClerkTemplate {
    ClerkTemplate {
        name: output.name.clone(),
        claims: ClerkClaims {
            access: clerk_access_claims(access, output, workspace_id),
            owner: format!("{}/{}", access.namespace, access.name),
            workspace: clerk_workspace_marker(
                access.workspace_kind,
                &access.namespace,
                &access.workspace_name,
            ),
            retain: output.deletion_policy == crate::core::validate::DeletionPolicy::Retain,
        },
        lifetime: output.lifetime_seconds,
        allowed_clock_skew: output.allowed_clock_skew_seconds,
        custom_signing_key: true,
        signing_algorithm: "HS256",
    }
}

/// Name of the ConfigMap holding a TenantAccess's rendered Clerk template.
#[must_use]
pub fn clerk_configmap_name(access_name: &str) -> String {
    format!("{access_name}{CLERK_TEMPLATE_CONFIGMAP_SUFFIX}")
}

/// The ConfigMap holding the rendered Clerk template (never the key).
#[must_use]
pub fn desired_clerk_configmap(
    access: &ValidatedAccess,
    template: &ClerkTemplate,
    owner: Option<OwnerReference>,
) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(clerk_configmap_name(&access.name)),
            namespace: Some(access.namespace.clone()),
            labels: Some(managed_labels(&access.name)),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CLERK_TEMPLATE_CONFIGMAP_KEY.to_owned(), template.to_pretty_json())])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests;
