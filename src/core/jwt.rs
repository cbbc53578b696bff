//! Tinybird JWTs: the claims, HS256 signing with the admin token, parsing and verification
//! exactly as Tinybird verifies (HS256 whatever the header says, `exp` required with no leeway,
//! `nbf` checked with no leeway when present).

use std::collections::BTreeMap;

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::core::admin_token::{AdminToken, fingerprint};

/// The claims that define what a token grants: everything but its validity window. Also the
/// `claims` of a Clerk template (there with shortcodes kept, Clerk adds `exp`/`iat` itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Workspace UUID; Tinybird reads it before verification to find the key.
    pub workspace_id: String,
    /// Token name: the rate-limit bucket and the name in `pipe_stats_rt`.
    pub name: String,
    /// What the token grants.
    pub scopes: Vec<ClaimScope>,
    /// Requests per second for this token name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ClaimLimits>,
}

impl AccessClaims {
    /// A short hash of the claims, to tell when the desired access changed.
    #[must_use]
    pub fn hash(&self) -> String {
        // serde_json writes struct fields in declaration order and BTreeMaps sorted: stable.
        fingerprint(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
}

/// One scope claim: `{type, resource, fixed_params?, filter?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimScope {
    /// `PIPES:READ` or `DATASOURCES:READ`.
    #[serde(rename = "type")]
    pub scope_type: String,
    /// Pipe or data source name.
    pub resource: String,
    /// Params that override query parameters (PIPES:READ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_params: Option<BTreeMap<String, serde_json::Value>>,
    /// SQL `WHERE` fragment (DATASOURCES:READ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// `limits` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimLimits {
    /// Requests per second; `<= 0` means no limit at Tinybird.
    pub rps: i64,
}

/// A complete Tinybird JWT payload. No `nbf`: a clock slightly behind Tinybird's would make a
/// fresh token unusable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TinybirdClaims {
    #[serde(flatten)]
    pub access: AccessClaims,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
}

impl TinybirdClaims {
    /// Claims valid from `now` for `lifetime`.
    #[must_use]
    pub fn new(access: AccessClaims, now: Timestamp, lifetime: jiff::SignedDuration) -> Self {
        let iat = now.as_second();
        Self { access, iat, exp: iat.saturating_add(lifetime.as_secs()) }
    }
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("signing the token failed: {0}")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

/// Signs claims with HS256 and the admin token's bytes, as Tinybird expects.
///
/// # Errors
/// Only if the JWT library fails to serialize or sign.
pub fn sign(claims: &TinybirdClaims, key: &AdminToken) -> Result<String, SignError> {
    sign_value(claims, key)
}

/// Signs any payload (e.g. a Clerk-style probe token) the same way.
///
/// # Errors
/// Only if the JWT library fails to serialize or sign.
pub fn sign_value<T: Serialize>(claims: &T, key: &AdminToken) -> Result<String, SignError> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(key.signing_key()))
        .map_err(SignError)
}

/// A JWT split and decoded, not verified.
#[derive(Debug, Clone)]
pub struct ParsedToken {
    /// The header as JSON.
    pub header: serde_json::Value,
    /// The payload as JSON.
    pub payload: serde_json::Value,
    signing_input_len: usize,
    raw: String,
}

/// What is wrong with a token. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error(
        "signature verification failed (signed with another key: the admin token rotated, or another workspace)"
    )]
    BadSignature,
    #[error("expired at {expired_at} (Tinybird allows no leeway)")]
    Expired { expired_at: Timestamp },
    #[error("not valid before {not_before}")]
    NotYetValid { not_before: Timestamp },
    #[error("claim {0:?} is missing or has the wrong type")]
    MissingClaim(&'static str),
}

impl ParsedToken {
    /// Splits and decodes a JWT without verifying it.
    ///
    /// # Errors
    /// When the text is not three base64url segments with JSON header and payload.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(_), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("a JWT has three dot-separated parts".into()));
        };
        let data = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
            .map_err(|e| TokenError::Malformed(describe_decode_error(&e)))?;
        let header = serde_json::to_value(&data.header).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !data.claims.is_object() {
            return Err(TokenError::Malformed("the payload is not a JSON object".into()));
        }
        Ok(Self {
            header,
            payload: data.claims,
            signing_input_len: token.rfind('.').unwrap_or(0),
            raw: token.to_owned(),
        })
    }

    /// Whether the signature is HS256 over the token with `key`, whatever `alg` the header names
    /// (Tinybird ignores it).
    #[must_use]
    pub fn signature_matches(&self, key: &AdminToken) -> bool {
        let (message, signature) = self.raw.split_at(self.signing_input_len);
        jsonwebtoken::crypto::verify(
            signature.trim_start_matches('.'),
            message.as_bytes(),
            &DecodingKey::from_secret(key.signing_key()),
            Algorithm::HS256,
        )
        .unwrap_or(false)
    }

    /// `exp` as a timestamp.
    #[must_use]
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.timestamp_claim("exp")
    }

    /// `iat` as a timestamp.
    #[must_use]
    pub fn issued_at(&self) -> Option<Timestamp> {
        self.timestamp_claim("iat")
    }

    /// `nbf` as a timestamp.
    #[must_use]
    pub fn not_before(&self) -> Option<Timestamp> {
        self.timestamp_claim("nbf")
    }

    fn timestamp_claim(&self, name: &str) -> Option<Timestamp> {
        let seconds = self.payload.get(name)?.as_i64()?;
        Timestamp::from_second(seconds).ok()
    }

    /// Verifies as Tinybird does at `now`, and returns the typed claims.
    ///
    /// # Errors
    /// Bad signature, expiry (`now >= exp`), `nbf` in the future, missing claims.
    pub fn verify(&self, key: &AdminToken, now: Timestamp) -> Result<TinybirdClaims, TokenError> {
        if !self.signature_matches(key) {
            return Err(TokenError::BadSignature);
        }
        self.check_validity_window(now)?;
        self.claims()
    }

    /// Checks `exp` and `nbf` at `now` without a signature check.
    ///
    /// # Errors
    /// Missing `exp`, expiry, `nbf` in the future.
    pub fn check_validity_window(&self, now: Timestamp) -> Result<(), TokenError> {
        let expired_at = self.expires_at().ok_or(TokenError::MissingClaim("exp"))?;
        if now >= expired_at {
            return Err(TokenError::Expired { expired_at });
        }
        if let Some(not_before) = self.not_before()
            && not_before > now
        {
            return Err(TokenError::NotYetValid { not_before });
        }
        Ok(())
    }

    /// The payload as Tinybird claims.
    ///
    /// # Errors
    /// When a required claim is missing or mistyped.
    pub fn claims(&self) -> Result<TinybirdClaims, TokenError> {
        for (name, ok) in [
            ("workspace_id", self.payload.get("workspace_id").is_some_and(serde_json::Value::is_string)),
            ("name", self.payload.get("name").is_some_and(serde_json::Value::is_string)),
            ("scopes", self.payload.get("scopes").is_some_and(serde_json::Value::is_array)),
            ("exp", self.payload.get("exp").is_some_and(serde_json::Value::is_i64)),
        ] {
            if !ok {
                return Err(TokenError::MissingClaim(name));
            }
        }
        let mut payload = self.payload.clone();
        if let Some(object) = payload.as_object_mut() {
            object.entry("iat").or_insert(serde_json::Value::from(0));
        }
        serde_json::from_value(payload).map_err(|_| TokenError::MissingClaim("scopes"))
    }
}

fn describe_decode_error(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::Base64(_) => "a part is not base64url".into(),
        ErrorKind::Json(_) => "the header or payload is not JSON".into(),
        ErrorKind::Utf8(_) => "the header or payload is not UTF-8".into(),
        _ => "cannot decode the token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::admin_token::tests::fake_admin_token;

    fn key() -> AdminToken {
        AdminToken::new(&fake_admin_token("3f6c1b1e-0000-0000-0000-000000000000", None))
    }

    fn access() -> AccessClaims {
        AccessClaims {
            workspace_id: "3f6c1b1e-0000-0000-0000-000000000000".into(),
            name: "tenant_acme".into(),
            scopes: vec![ClaimScope {
                scope_type: "PIPES:READ".into(),
                resource: "top_pages".into(),
                fixed_params: Some(BTreeMap::from([("org".into(), "acme".into())])),
                filter: None,
            }],
            limits: Some(ClaimLimits { rps: 10 }),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_767_222_000).unwrap_or_default()
    }

    #[test]
    fn claims_match_tinybirds_documented_payload() {
        let claims = TinybirdClaims::new(access(), now(), jiff::SignedDuration::from_hours(1));
        let json = serde_json::to_value(&claims).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"workspace_id":"3f6c1b1e-0000-0000-0000-000000000000","name":"tenant_acme",
                "exp":1_767_225_600,"iat":1_767_222_000,
                "scopes":[{"type":"PIPES:READ","resource":"top_pages","fixed_params":{"org":"acme"}}],
                "limits":{"rps":10}})
        );
    }

    #[test]
    fn signs_hs256_and_verifies_with_the_admin_token() {
        let claims = TinybirdClaims::new(access(), now(), jiff::SignedDuration::from_hours(1));
        let token = sign(&claims, &key()).unwrap_or_default();
        let parsed = ParsedToken::parse(&token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.header["alg"], "HS256");
        assert!(parsed.payload.get("nbf").is_none());
        assert_eq!(parsed.verify(&key(), now()), Ok(claims));
    }

    #[test]
    fn rejects_another_key_expiry_at_exp_and_future_nbf() {
        let claims = TinybirdClaims::new(access(), now(), jiff::SignedDuration::from_hours(1));
        let token = sign(&claims, &key()).unwrap_or_default();
        let parsed = ParsedToken::parse(&token).unwrap_or_else(|e| panic!("{e}"));
        let other = AdminToken::new(&fake_admin_token("other", None));
        assert_eq!(parsed.verify(&other, now()), Err(TokenError::BadSignature));
        let at_exp = Timestamp::from_second(claims.exp).unwrap_or_default();
        assert!(matches!(parsed.verify(&key(), at_exp), Err(TokenError::Expired { .. })));
        let one_second_before = Timestamp::from_second(claims.exp - 1).unwrap_or_default();
        assert!(parsed.verify(&key(), one_second_before).is_ok());

        let mut with_nbf = serde_json::to_value(&claims).unwrap_or_default();
        with_nbf["nbf"] = serde_json::json!(claims.iat + 10);
        let token = sign_value(&with_nbf, &key()).unwrap_or_default();
        let parsed = ParsedToken::parse(&token).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(parsed.verify(&key(), now()), Err(TokenError::NotYetValid { .. })));
    }

    #[test]
    fn ignores_the_header_alg_like_tinybird() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = TinybirdClaims::new(access(), now(), jiff::SignedDuration::from_hours(1));
        // A header claiming HS512 over an HS256 signature: Tinybird verifies HS256 regardless.
        let input = format!(
            "{}.{}",
            b64.encode(r#"{"alg":"HS512","typ":"JWT"}"#),
            b64.encode(serde_json::to_string(&claims).unwrap_or_default())
        );
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(key().signing_key()),
            Algorithm::HS256,
        )
        .unwrap_or_default();
        let parsed = ParsedToken::parse(&format!("{input}.{signature}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.verify(&key(), now()), Ok(claims));
    }

    #[test]
    fn refuses_garbage() {
        for garbage in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.bm90IGpzb24.sig"] {
            assert!(ParsedToken::parse(garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn claims_hash_ignores_validity_window_but_not_access() {
        let a = access();
        let mut b = access();
        assert_eq!(a.hash(), b.hash());
        b.scopes[0].fixed_params = Some(BTreeMap::from([("org".into(), "globex".into())]));
        assert_ne!(a.hash(), b.hash());
    }
}
