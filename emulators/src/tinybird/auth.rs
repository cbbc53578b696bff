//! Token verification exactly as Tinybird does it: the admin token itself, or a JWT whose
//! `workspace_id` is read before verification, verified HS256 (whatever the header says) with the
//! current admin token, `exp` required and `nbf` checked without leeway.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::errors::TinybirdError;

/// Scope type granting read access to a pipe endpoint.
pub(crate) const PIPES_READ: &str = "PIPES:READ";
/// Scope type granting read access to a data source, through its optional SQL `filter`.
pub(crate) const DATASOURCES_READ: &str = "DATASOURCES:READ";

/// Who is calling.
#[derive(Debug)]
pub(crate) enum Access {
    /// The workspace admin token: everything is allowed.
    Admin,
    /// A verified JWT.
    Jwt(JwtClaims),
}

/// The claims Tinybird uses (others are tolerated and ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct JwtClaims {
    pub(crate) name: String,
    pub(crate) scopes: Vec<Scope>,
    #[serde(default)]
    pub(crate) limits: Option<Limits>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Scope {
    #[serde(rename = "type")]
    pub(crate) scope_type: String,
    pub(crate) resource: String,
    #[serde(default)]
    pub(crate) fixed_params: Option<Map<String, Value>>,
    /// A `DATASOURCES:READ` scope's SQL `WHERE` fragment, pasted verbatim into the query.
    #[serde(default)]
    pub(crate) filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Limits {
    #[serde(default)]
    pub(crate) rps: Option<f64>,
}

impl JwtClaims {
    /// The scope of `scope_type` (`PIPES:READ`, `DATASOURCES:READ`) covering a resource known by
    /// any of `names` (as written in the request, its name, its id).
    pub(crate) fn scope(&self, scope_type: &str, names: &[&str]) -> Option<&Scope> {
        self.scopes
            .iter()
            .find(|scope| scope.scope_type == scope_type && names.contains(&scope.resource.as_str()))
    }

    /// Requests per second for this token name; `None` means unlimited (`rps` absent or <= 0).
    pub(crate) fn rps_limit(&self) -> Option<u32> {
        let rps = self.limits.as_ref()?.rps?;
        if rps.is_nan() || rps <= 0.0 {
            return None;
        }
        // A fractional rate still lets one request through per window.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(rps.floor().clamp(1.0, f64::from(u32::MAX)) as u32)
    }
}

/// The token of a request: `Authorization: Bearer <token>` (case-sensitive), else `?token=`.
pub(crate) fn request_token<'a>(headers: &'a HeaderMap, query: &'a [(String, String)]) -> Option<&'a str> {
    let from_header = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    from_header.or_else(|| {
        query
            .iter()
            .find(|(name, _)| name == "token")
            .map(|(_, token)| token.as_str())
            .filter(|token| !token.is_empty())
    })
}

/// Verifies a token against the workspace's current admin token at `now_ms`.
pub(crate) fn authenticate(
    token: Option<&str>,
    admin_token: &str,
    workspace_id: &str,
    now_ms: i64,
) -> Result<Access, TinybirdError> {
    let Some(token) = token else {
        return Err(TinybirdError::invalid_token("Token not found"));
    };
    if token == admin_token {
        return Ok(Access::Admin);
    }
    // Static tokens (`p.`...) other than the current admin token: unknown or refreshed.
    if token.starts_with("p.") {
        return Err(TinybirdError::invalid_token(""));
    }
    let Some((header, payload, signature)) = split_jwt(token) else {
        return Err(TinybirdError::invalid_token(""));
    };
    let (Some(_), Some(claims)) = (decode_object(header), decode_object(payload)) else {
        return Err(TinybirdError::invalid_token(""));
    };
    // `workspace_id` picks the key, before any verification.
    if claims.get("workspace_id").and_then(Value::as_str) != Some(workspace_id) {
        return Err(TinybirdError::invalid_token(""));
    }
    verify_hs256(token, header, payload, signature, admin_token)?;
    check_times(token, &claims, now_ms)?;
    serde_json::from_value::<JwtClaims>(Value::Object(claims))
        .map(Access::Jwt)
        .map_err(|_| TinybirdError::invalid_token("The JWT must have a `name` and a list of `scopes`"))
}

fn split_jwt(token: &str) -> Option<(&str, &str, &str)> {
    let mut segments = token.split('.');
    match (segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some(header), Some(payload), Some(signature), None) => Some((header, payload, signature)),
        _ => None,
    }
}

fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// Always HS256: the header's `alg` is ignored.
fn verify_hs256(
    token: &str,
    header: &str,
    payload: &str,
    signature: &str,
    admin_token: &str,
) -> Result<(), TinybirdError> {
    let message = format!("{header}.{payload}");
    let key = DecodingKey::from_secret(admin_token.as_bytes());
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::HS256) {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(TinybirdError::rejected_jwt(token, "Signature verification failed")),
    }
}

/// `exp` required, expired when `exp <= now`; `nbf`, if present, refused when `nbf > now`.
/// No leeway either way. `iat` is tolerated and not checked.
fn check_times(token: &str, claims: &Map<String, Value>, now_ms: i64) -> Result<(), TinybirdError> {
    let now = now_seconds(now_ms);
    let Some(exp) = claims.get("exp") else {
        return Err(TinybirdError::rejected_jwt(token, "Token is missing the \"exp\" claim"));
    };
    let Some(exp) = exp.as_f64() else {
        return Err(TinybirdError::rejected_jwt(token, "Expiration Time claim (exp) must be an integer."));
    };
    if let Some(nbf) = claims.get("nbf") {
        let Some(nbf) = nbf.as_f64() else {
            return Err(TinybirdError::rejected_jwt(token, "Not Before claim (nbf) must be an integer."));
        };
        if nbf > now {
            return Err(TinybirdError::rejected_jwt(token, "The token is not yet valid (nbf)"));
        }
    }
    if exp <= now {
        return Err(TinybirdError::rejected_jwt(token, "Signature has expired"));
    }
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn now_seconds(now_ms: i64) -> f64 {
    now_ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const WORKSPACE: &str = "ws-1";
    const ADMIN: &str = "p.eyJ1IjogIndzLTEifQ.secret";
    const NOW_MS: i64 = 1_800_000_000_000;
    const NOW: i64 = NOW_MS / 1000;

    fn sign(claims: &Value, key: &str, alg: Algorithm) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
    }

    fn claims(exp: i64) -> Value {
        json!({"workspace_id": WORKSPACE, "name": "t", "exp": exp,
               "scopes": [{"type": "PIPES:READ", "resource": "top_pages"}]})
    }

    fn check(token: &str) -> Result<Access, TinybirdError> {
        authenticate(Some(token), ADMIN, WORKSPACE, NOW_MS)
    }

    #[test]
    fn accepts_valid_jwt_and_admin_token() {
        assert!(matches!(check(&sign(&claims(NOW + 60), ADMIN, Algorithm::HS256)), Ok(Access::Jwt(_))));
        assert!(matches!(check(ADMIN), Ok(Access::Admin)));
    }

    #[test]
    fn exp_equal_to_now_is_expired() {
        let token = sign(&claims(NOW), ADMIN, Algorithm::HS256);
        let error = check(&token).unwrap_err();
        assert_eq!(error.status(), 403);
        assert_eq!(
            error.message(),
            format!("invalid authentication token. Invalid token b'{token}': Signature has expired")
        );
    }

    #[test]
    fn exp_one_second_ahead_is_valid() {
        assert!(check(&sign(&claims(NOW + 1), ADMIN, Algorithm::HS256)).is_ok());
    }

    #[test]
    fn missing_exp_is_refused() {
        let mut body = claims(0);
        body.as_object_mut().unwrap().remove("exp");
        let error = check(&sign(&body, ADMIN, Algorithm::HS256)).unwrap_err();
        assert!(error.message().ends_with("Token is missing the \"exp\" claim"));
    }

    #[test]
    fn nbf_in_the_future_is_refused_without_leeway() {
        let mut body = claims(NOW + 60);
        body["nbf"] = json!(NOW + 1);
        let error = check(&sign(&body, ADMIN, Algorithm::HS256)).unwrap_err();
        assert!(error.message().ends_with("The token is not yet valid (nbf)"));
        body["nbf"] = json!(NOW);
        assert!(check(&sign(&body, ADMIN, Algorithm::HS256)).is_ok());
    }

    #[test]
    fn header_alg_is_ignored() {
        // Labelled HS512 (or none) but signed HS256: Tinybird verifies HS256, so it passes.
        let payload = URL_SAFE_NO_PAD.encode(claims(NOW + 60).to_string());
        for alg in ["HS512", "none", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let message = format!("{header}.{payload}");
            let key = EncodingKey::from_secret(ADMIN.as_bytes());
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
            assert!(check(&format!("{message}.{signature}")).is_ok(), "{alg}");
        }
        // Really signed HS512: the HS256 verification fails.
        let hs512 = sign(&claims(NOW + 60), ADMIN, Algorithm::HS512);
        assert!(check(&hs512).unwrap_err().message().ends_with("Signature verification failed"));
    }

    #[test]
    fn wrong_key_fails_signature_verification_and_echoes_the_token() {
        let token = sign(&claims(NOW + 60), "p.other.key", Algorithm::HS256);
        let error = check(&token).unwrap_err();
        assert_eq!(
            error.message(),
            format!("invalid authentication token. Invalid token b'{token}': Signature verification failed")
        );
    }

    #[test]
    fn foreign_workspace_and_garbage_are_invalid_tokens() {
        let mut body = claims(NOW + 60);
        body["workspace_id"] = json!("other");
        for token in [sign(&body, ADMIN, Algorithm::HS256), "garbage".into(), "p.x.y".into()] {
            let error = check(&token).unwrap_err();
            assert_eq!(error.status(), 403);
            assert_eq!(error.message(), "invalid authentication token");
        }
        let missing = authenticate(None, ADMIN, WORKSPACE, NOW_MS).unwrap_err();
        assert!(missing.message().starts_with("invalid authentication token"));
    }

    #[test]
    fn rps_zero_or_negative_means_unlimited() {
        let parse = |limits: Value| {
            let mut body = claims(NOW + 60);
            body["limits"] = limits;
            serde_json::from_value::<JwtClaims>(body).unwrap().rps_limit()
        };
        assert_eq!(parse(json!({"rps": 0})), None);
        assert_eq!(parse(json!({"rps": -3})), None);
        assert_eq!(parse(json!({})), None);
        assert_eq!(parse(json!({"rps": 10})), Some(10));
        assert_eq!(parse(json!({"rps": 0.5})), Some(1));
    }

    #[test]
    fn header_token_beats_query_token() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer from-header".parse().unwrap());
        let query = vec![("token".to_owned(), "from-query".to_owned())];
        assert_eq!(request_token(&headers, &query), Some("from-header"));
        assert_eq!(request_token(&HeaderMap::new(), &query), Some("from-query"));
        headers.insert(AUTHORIZATION, "bearer lower-case".parse().unwrap());
        assert_eq!(request_token(&headers, &[]), None);
    }
}
