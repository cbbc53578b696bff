//! Minting a session token from a template: rendered claims plus Clerk's own
//! `azp exp iat iss jti nbf sub`, signed with the template's custom key.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Map, Value};

use super::errors::ClerkError;
use super::identity::Identity;
use super::shortcodes;
use super::templates::JwtTemplate;
use crate::random;

/// What Clerk adds to every token besides the template's claims.
#[derive(Debug)]
pub(crate) struct Issuer<'a> {
    /// `iss`: the instance's Frontend API URL.
    pub(crate) issuer: &'a str,
    /// `azp`: the origin the session was created from.
    pub(crate) authorized_party: &'a str,
}

pub(crate) fn mint(
    template: &JwtTemplate,
    identity: &Identity,
    issuer: &Issuer<'_>,
    now_secs: i64,
) -> Result<String, ClerkError> {
    let (true, Some(key)) = (template.custom_signing_key, template.signing_key.as_deref()) else {
        return Err(ClerkError::unsupported(
            "the emulator only mints templates with a custom HS256/HS384/HS512 signing key",
        ));
    };
    let algorithm = match template.signing_algorithm.as_str() {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        other => {
            return Err(ClerkError::unsupported(format!("the emulator cannot sign with {other}")));
        }
    };
    let mut claims = match shortcodes::render(&template.claims, &identity.shortcode_context()) {
        Value::Object(claims) => claims,
        _ => Map::new(),
    };
    let lifetime = i64::try_from(template.lifetime).unwrap_or(i64::MAX);
    let skew = i64::try_from(template.allowed_clock_skew).unwrap_or(0);
    claims.insert("azp".into(), issuer.authorized_party.into());
    claims.insert("exp".into(), now_secs.saturating_add(lifetime).into());
    claims.insert("iat".into(), now_secs.into());
    claims.insert("iss".into(), issuer.issuer.into());
    claims.insert("jti".into(), random::hex(10).into());
    // Backdated by the allowed skew, never in the future.
    claims.insert("nbf".into(), now_secs.saturating_sub(skew).into());
    claims.insert("sub".into(), identity.user.id.clone().into());
    encode(&Header::new(algorithm), &Value::Object(claims), &EncodingKey::from_secret(key.as_bytes()))
        .map_err(|error| ClerkError::unsupported(format!("signing failed: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::dangerous::insecure_decode;
    use serde_json::json;

    fn template(custom: bool, algorithm: &str) -> JwtTemplate {
        JwtTemplate {
            id: "jtmpl_1".into(),
            name: "tinybird".into(),
            claims: json!({"fixed": "{{org.slug}}", "u": "{{user.id}}"}),
            lifetime: 60,
            allowed_clock_skew: 5,
            custom_signing_key: custom,
            signing_algorithm: algorithm.into(),
            signing_key: custom.then(|| "key".to_owned()),
            created_at: 0,
            updated_at: 0,
        }
    }

    const ISSUER: Issuer<'static> =
        Issuer { issuer: "https://clerk.example", authorized_party: "http://localhost:3000" };

    #[test]
    fn adds_clerk_claims_from_lifetime_and_skew() {
        let token = mint(&template(true, "HS256"), &Identity::default(), &ISSUER, 1_000).unwrap();
        let claims: Value = insecure_decode::<Value>(&token).unwrap().claims;
        assert_eq!(claims["exp"], json!(1_060));
        assert_eq!(claims["iat"], json!(1_000));
        assert_eq!(claims["nbf"], json!(995));
        assert_eq!(claims["sub"], json!("user_alice"));
        assert_eq!(claims["iss"], json!("https://clerk.example"));
        assert_eq!(claims["azp"], json!("http://localhost:3000"));
        assert_eq!(claims["fixed"], json!("acme"));
        assert_eq!(claims["jti"].as_str().unwrap().len(), 20);
    }

    #[test]
    fn refuses_what_it_cannot_sign() {
        assert!(mint(&template(false, "RS256"), &Identity::default(), &ISSUER, 0).is_err());
        assert!(mint(&template(true, "RS256"), &Identity::default(), &ISSUER, 0).is_err());
    }
}
