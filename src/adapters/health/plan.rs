//! What to probe for one TenantAccess, and with which token: pure, built from the validated spec
//! and the signing workspace.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::SCOPE_PIPES_READ;
use crate::core::admin_token::AdminToken;
use crate::core::desired::access_claims;
use crate::core::jwt::{AccessClaims, ParsedToken, SignError, TinybirdClaims, sign};
use crate::core::shortcode;
use crate::core::signing_workspace::{HealthBudget, SigningWorkspace};
use crate::core::validate::ValidatedAccess;

use super::issued_token::{IssuedToken, TokenBasis};
use super::probe::ProbeRequest;

/// Lifetime of an in-memory probe token: long enough for one probe, short enough to be useless
/// if it ever leaked.
pub const PROBE_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_mins(5);

/// How the probes of one TenantAccess authenticate. `Debug` never shows a token or key.
#[derive(Clone)]
pub enum ProbeCredential {
    /// The token the operator issued into the Secret, sent as is until it is replaced.
    Issued {
        /// The JWT (kept compacted once the scheduler registers it: see [`Self::compact`]).
        token: IssuedToken,
        /// Its `exp`, when readable: after it, a rejection is expected, not a key problem.
        expires_at: Option<Timestamp>,
    },
    /// A short-lived token signed in memory for each probe (Clerk-only access): never stored.
    Signed {
        /// The workspace admin token.
        key: AdminToken,
        /// The claims, shortcodes replaced by the policy's pinned values or else by
        /// `healthCheck.sampleParams` (boxed: the far more
        /// common `Issued` plans stay small).
        claims: Box<AccessClaims>,
    },
}

impl ProbeCredential {
    /// The issued token.
    #[must_use]
    pub fn issued(token: &str) -> Self {
        let expires_at = ParsedToken::parse(token.trim()).ok().and_then(|parsed| parsed.expires_at());
        Self::Issued { token: IssuedToken::new(token), expires_at }
    }

    /// Keeps an issued token compressed against `basis`, its workspace's (made of this token
    /// when the workspace has none yet).
    pub fn compact(&mut self, basis: &mut Option<TokenBasis>) {
        let Self::Issued { token, .. } = self else { return };
        if basis.is_none() {
            *basis = TokenBasis::of(token);
        }
        if let Some(compact) = basis.as_ref().and_then(|basis| token.compacted(basis)) {
            *token = compact;
        }
    }

    /// The bearer token for a probe at `now`.
    ///
    /// # Errors
    /// Only if signing a probe token fails (or, an operator bug, a kept token no longer decodes).
    pub fn token_at(&self, now: Timestamp) -> Result<String, CredentialError> {
        match self {
            Self::Issued { token, .. } => token.to_jwt().ok_or(CredentialError::Unreadable),
            Self::Signed { key, claims } => {
                Ok(sign(&TinybirdClaims::new((**claims).clone(), now, PROBE_TOKEN_LIFETIME), key)?)
            }
        }
    }

    /// Whether the operator believes the token valid at `now` (a fresh probe token always is).
    #[must_use]
    pub fn believed_valid_at(&self, now: Timestamp) -> bool {
        match self {
            Self::Issued { expires_at, .. } => expires_at.is_none_or(|exp| now < exp),
            Self::Signed { .. } => true,
        }
    }
}

/// The same credential: the same issued token (its expiry is read from it), or the same key and
/// claims.
impl PartialEq for ProbeCredential {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Issued { token: a, .. }, Self::Issued { token: b, .. }) => a == b,
            (Self::Signed { key: a, claims: x }, Self::Signed { key: b, claims: y }) => {
                a.fingerprint() == b.fingerprint() && x.hash() == y.hash()
            }
            _ => false,
        }
    }
}

impl fmt::Debug for ProbeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Issued { expires_at, .. } => f
                .debug_struct("Issued")
                .field("token", &"<redacted>")
                .field("expires_at", expires_at)
                .finish(),
            Self::Signed { key, claims } => {
                f.debug_struct("Signed").field("key", key).field("claims_hash", &claims.hash()).finish()
            }
        }
    }
}

/// Why a probe has no token.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Signing the in-memory probe token failed.
    #[error("cannot sign the probe token: {0}")]
    Sign(#[from] SignError),
    /// The issued token kept for the checks does not decode.
    #[error("the issued token kept for the checks does not decode (an operator bug: please report it)")]
    Unreadable,
}

/// One pipe endpoint of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEndpoint {
    /// The pipe (a `PIPES:READ` resource).
    pub resource: String,
    /// Why it is not probed (`NoSampleParams`), if it is not.
    pub skipped: Option<String>,
}

/// Everything needed to probe one TenantAccess's endpoints. The fields are public so that tests
/// can shorten the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbePlan {
    /// Tinybird API base URL, without a trailing slash (one string shared by the workspace's
    /// plans once registered).
    pub api_url: Arc<str>,
    /// The workspace id: with `api_url`, what the TenantAccesses probing a pipe share.
    pub workspace_id: Arc<str>,
    /// Probe interval (never zero in a plan).
    pub interval: Duration,
    /// Timeout of one probe.
    pub timeout: Duration,
    /// The workspace's health-check budget (`spec.healthChecks`), its token-check interval
    /// included: how often the token is verified on its own after its first verification
    /// (which follows each new token).
    pub budget: HealthBudget,
    /// The token's own `limits.rps`: a 429 of that bucket is the token's, any other the plan's.
    /// (A `u32`, clamped: a plan stays small, and no rate is anywhere near it.)
    pub token_rps: Option<u32>,
    /// `healthCheck.params`, sent as query parameters.
    pub params: BTreeMap<String, String>,
    /// The `PIPES:READ` endpoints, in spec order.
    pub endpoints: Vec<PlannedEndpoint>,
    /// How probes authenticate.
    pub credential: ProbeCredential,
    /// The workspace admin token, for the free existence checks of the plan's pipes (`GET
    /// {api}/v0/pipes/{pipe}`). A shared handle: the scheduler keeps one copy per workspace for
    /// all its plans; `Debug` shows only its fingerprint.
    pub admin_token: Arc<AdminToken>,
}

impl ProbePlan {
    /// The plan for a TenantAccess: probe each `PIPES:READ` scope with `issued_token` (the token
    /// of the Secret output) or, without one, with a probe token signed in memory whose
    /// shortcodes are replaced by `healthCheck.sampleParams`. `None` when health checks are
    /// disabled (`interval: 0`) or there is no pipe to probe.
    #[must_use]
    pub fn for_access(
        access: &ValidatedAccess,
        workspace: &SigningWorkspace,
        issued_token: Option<&str>,
    ) -> Option<Self> {
        let interval = Duration::try_from(access.health.interval).ok().filter(|i| !i.is_zero())?;
        let timeout = Duration::try_from(access.health.timeout).unwrap_or(Duration::from_secs(5));
        let mut claims = access_claims(access, &workspace.workspace_id);
        let mut endpoints = Vec::new();
        let mut unprobeable = std::collections::HashSet::new();
        for scope in claims.scopes.iter_mut().filter(|scope| scope.scope_type == SCOPE_PIPES_READ) {
            let skipped = match (&mut scope.fixed_params, issued_token) {
                (Some(fixed_params), None) => {
                    fill_samples(fixed_params, &access.health.sample_params, &access.pinned_params)
                }
                _ => None,
            };
            if skipped.is_some() {
                unprobeable.insert(scope.resource.clone());
            }
            endpoints.push(PlannedEndpoint { resource: scope.resource.clone(), skipped });
        }
        if endpoints.is_empty() {
            return None;
        }
        // A scope with an unfilled shortcode stays out of the probe token altogether.
        claims.scopes.retain(|scope| !unprobeable.contains(&scope.resource));
        let credential = match issued_token {
            Some(token) => ProbeCredential::issued(token),
            None => ProbeCredential::Signed { key: workspace.key.clone(), claims: Box::new(claims) },
        };
        Some(Self {
            api_url: workspace.api_url.trim_end_matches('/').into(),
            workspace_id: workspace.workspace_id.as_str().into(),
            interval,
            timeout,
            budget: workspace.health,
            token_rps: access.rps.map(|rps| u32::try_from(rps.max(0)).unwrap_or(u32::MAX)),
            params: access.health.params.clone(),
            endpoints,
            credential,
            admin_token: Arc::new(workspace.key.clone()),
        })
    }

    /// The existence check of `resource`, with the workspace admin token.
    #[must_use]
    pub fn existence_request(&self, resource: &str) -> ProbeRequest {
        ProbeRequest::existence(&self.api_url, resource, &self.admin_token, self.timeout)
    }

    /// The request probing `resource` at `now` (signing a probe token if needed).
    ///
    /// # Errors
    /// Only if there is no token for it (see [`ProbeCredential::token_at`]).
    pub fn request_for(&self, resource: &str, now: Timestamp) -> Result<ProbeRequest, CredentialError> {
        Ok(ProbeRequest::new(
            &self.api_url,
            resource,
            &self.params,
            self.credential.token_at(now)?,
            self.timeout,
        ))
    }

    /// The endpoints that are probed (not skipped).
    pub fn probed_resources(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().filter(|e| e.skipped.is_none()).map(|e| e.resource.as_str())
    }
}

/// Replaces every shortcode-valued fixed param by its stand-in: the value the workspace policy
/// pins (`pinned`), whatever `samples` says, else its sample value. The reason to skip the scope
/// when a shortcode has neither.
fn fill_samples(
    fixed_params: &mut BTreeMap<String, serde_json::Value>,
    samples: &BTreeMap<String, String>,
    pinned: &BTreeMap<String, String>,
) -> Option<String> {
    let mut missing = Vec::new();
    for (param, value) in fixed_params.iter_mut() {
        if let Some(pinned) = pinned.get(param) {
            // A shortcode, or (had the policy not refused it) another tenant's value; a number
            // or boolean is there only if the policy found it equal to the pinned value.
            if value.as_str().is_some_and(|text| text != pinned) {
                *value = serde_json::Value::String(pinned.clone());
            }
            continue;
        }
        let Some(text) = value.as_str() else { continue };
        if !shortcode::contains_shortcode(text) {
            continue;
        }
        match samples.get(param) {
            Some(sample) => *value = serde_json::Value::String(sample.clone()),
            None => missing.push(format!(
                "fixedParams.{param} is the Clerk shortcode {text:?}: set spec.healthCheck.sampleParams.{param} to a sample tenant's value to probe it"
            )),
        }
    }
    (!missing.is_empty()).then(|| format!("not probed: {}", missing.join("; ")))
}

#[cfg(test)]
mod tests;
