//! The workspace admin token: its public facts (workspace id, token id, region) and fingerprint.
//!
//! A Tinybird admin token looks like `p.<base64url JSON>.<signature>`, the middle segment being
//! `{"u": <workspace id>, "id": <token id>, "host": <region key>}`. It can be decoded without
//! verification. Its raw UTF-8 bytes are the HS256 key of every JWT of the workspace.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Default Tinybird API URL (GCP europe-west3), used when the token names no region.
pub const DEFAULT_API_URL: &str = "https://api.tinybird.co";

/// Known region keys (the admin token's `host`) and their API URLs.
const REGIONS: &[(&str, &str)] = &[
    ("eu_shared", "https://api.tinybird.co"),
    ("us_east", "https://api.us-east.tinybird.co"),
    ("gcp-europe-west2", "https://api.europe-west2.gcp.tinybird.co"),
    ("gcp-northamerica-northeast2", "https://api.northamerica-northeast2.gcp.tinybird.co"),
    ("us-east-aws", "https://api.us-east.aws.tinybird.co"),
    ("aws-us-west-2", "https://api.us-west-2.aws.tinybird.co"),
    ("aws-eu-central-1", "https://api.eu-central-1.aws.tinybird.co"),
    ("aws-eu-west-1", "https://api.eu-west-1.aws.tinybird.co"),
];

/// The admin token, held so that it is never printed by accident (`Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token as read from a Secret. Surrounding whitespace (a trailing newline from
    /// `echo`) is not part of Tinybird's token and is removed.
    #[must_use]
    pub fn new(raw: &str) -> Self {
        Self(raw.trim().to_owned())
    }

    /// The HS256 key: the token's raw bytes.
    #[must_use]
    pub fn signing_key(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The token text, for the few places that must send it (Tinybird API calls, Clerk's
    /// `signing_key`). Never log or store it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short one-way fingerprint, safe to show in status and events.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        fingerprint(self.0.as_bytes())
    }

    /// Decodes the public facts of the token.
    ///
    /// # Errors
    /// When the token is not `p.<base64url JSON with "u">.<signature>`.
    pub fn decode(&self) -> Result<AdminTokenFacts, MalformedAdminToken> {
        decode(&self.0)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminToken({})", self.fingerprint())
    }
}

/// What the admin token says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenFacts {
    /// Workspace id (`u`).
    pub workspace_id: String,
    /// Token id (`id`), used by the refresh API.
    pub token_id: Option<String>,
    /// Region key (`host`), e.g. `eu_shared`.
    pub region: Option<String>,
}

/// Why an admin token could not be decoded. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedAdminToken {
    #[error("the admin token is empty")]
    Empty,
    #[error("the admin token is not of the form p.<payload>.<signature> (is it a JWT or another token?)")]
    Shape,
    #[error("the admin token's payload is not base64url JSON")]
    Payload,
    #[error("the admin token's payload has no workspace id (\"u\")")]
    NoWorkspaceId,
}

#[derive(Deserialize)]
struct Payload {
    u: Option<String>,
    id: Option<String>,
    host: Option<String>,
}

fn decode(token: &str) -> Result<AdminTokenFacts, MalformedAdminToken> {
    if token.is_empty() {
        return Err(MalformedAdminToken::Empty);
    }
    let mut parts = token.split('.');
    let (Some("p"), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MalformedAdminToken::Shape);
    };
    if payload.is_empty() || signature.is_empty() {
        return Err(MalformedAdminToken::Shape);
    }
    let bytes =
        URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).map_err(|_| MalformedAdminToken::Payload)?;
    let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| MalformedAdminToken::Payload)?;
    let workspace_id =
        payload.u.filter(|u| !u.trim().is_empty()).ok_or(MalformedAdminToken::NoWorkspaceId)?;
    Ok(AdminTokenFacts { workspace_id, token_id: payload.id, region: payload.host.filter(|h| !h.is_empty()) })
}

/// A region key the operator does not know; set `spec.apiUrl`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Tinybird region {0:?} in the admin token: set spec.apiUrl to the workspace's API URL")]
pub struct UnknownRegion(pub String);

/// The API URL of a region key. A `host` that is already a URL is used as it is.
///
/// # Errors
/// When the region key is not known.
pub fn api_url_for_region(region: Option<&str>) -> Result<String, UnknownRegion> {
    let Some(region) = region else {
        return Ok(DEFAULT_API_URL.to_owned());
    };
    if region.starts_with("https://") || region.starts_with("http://") {
        return Ok(region.trim_end_matches('/').to_owned());
    }
    REGIONS
        .iter()
        .find(|(key, _)| *key == region)
        .map(|(_, url)| (*url).to_owned())
        .ok_or_else(|| UnknownRegion(region.to_owned()))
}

/// `sha256:` and the first 16 hex digits of SHA-256: short, one-way, stable.
#[must_use]
pub fn fingerprint(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(23);
    out.push_str("sha256:");
    for byte in &digest[..8] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An admin token shaped like Tinybird's, for tests.
    pub(crate) fn fake_admin_token(workspace_id: &str, host: Option<&str>) -> String {
        let payload = match host {
            Some(host) => serde_json::json!({"u": workspace_id, "id": "tok-1", "host": host}),
            None => serde_json::json!({"u": workspace_id, "id": "tok-1"}),
        };
        format!("p.{}.c2lnbmF0dXJlLXRlc3Q", URL_SAFE_NO_PAD.encode(payload.to_string()))
    }

    #[test]
    fn decodes_workspace_token_id_and_region() {
        let token = AdminToken::new(&fake_admin_token("ws-1", Some("us_east")));
        let facts = token.decode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(facts.workspace_id, "ws-1");
        assert_eq!(facts.token_id.as_deref(), Some("tok-1"));
        assert_eq!(facts.region.as_deref(), Some("us_east"));
    }

    #[test]
    fn trims_a_trailing_newline_from_the_secret() {
        let raw = fake_admin_token("ws-1", None);
        assert_eq!(AdminToken::new(&format!("{raw}\n")).expose(), raw);
    }

    #[test]
    fn refuses_malformed_tokens() {
        let cases = [
            ("", MalformedAdminToken::Empty),
            ("eyJhbGciOiJIUzI1NiJ9.e30.sig", MalformedAdminToken::Shape),
            ("p.abc", MalformedAdminToken::Shape),
            ("p.!!!.sig", MalformedAdminToken::Payload),
            ("p.bm90IGpzb24.sig", MalformedAdminToken::Payload),
            ("p.e30.sig", MalformedAdminToken::NoWorkspaceId),
        ];
        for (token, expected) in cases {
            assert_eq!(AdminToken::new(token).decode(), Err(expected), "{token}");
        }
    }

    #[test]
    fn maps_regions_to_api_urls() {
        assert_eq!(api_url_for_region(None).as_deref(), Ok("https://api.tinybird.co"));
        assert_eq!(
            api_url_for_region(Some("aws-eu-west-1")).as_deref(),
            Ok("https://api.eu-west-1.aws.tinybird.co")
        );
        assert_eq!(
            api_url_for_region(Some("http://localhost:7181/")).as_deref(),
            Ok("http://localhost:7181")
        );
        assert!(api_url_for_region(Some("mars-1")).is_err());
    }

    #[test]
    fn fingerprint_is_short_stable_and_not_the_key() {
        let token = AdminToken::new(&fake_admin_token("ws-1", None));
        let fp = token.fingerprint();
        assert_eq!(fp.len(), 23);
        assert_eq!(fp, token.fingerprint());
        assert!(!token.expose().contains(&fp[7..]));
        assert_ne!(fp, AdminToken::new(&fake_admin_token("ws-2", None)).fingerprint());
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
