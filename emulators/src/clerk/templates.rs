//! JWT templates: request validation (Clerk's errors and limits) and the instance's store.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::errors::ClerkError;
use crate::random;

/// Claims Clerk sets itself; a template may not contain them.
pub(crate) const RESERVED_CLAIMS: [&str; 7] = ["azp", "exp", "iat", "iss", "jti", "nbf", "sub"];
const LIFETIME_RANGE: std::ops::RangeInclusive<u64> = 30..=315_360_000;
const CLOCK_SKEW_RANGE: std::ops::RangeInclusive<u64> = 0..=300;
const DEFAULT_LIFETIME: u64 = 60;
const DEFAULT_CLOCK_SKEW: u64 = 5;
/// The algorithm Clerk uses with its own instance key.
const INSTANCE_ALGORITHM: &str = "RS256";
const SIGNING_ALGORITHMS: [&str; 10] =
    ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"];

/// A stored JWT template, signing key included (the API never returns it).
#[derive(Clone, PartialEq, Serialize)]
pub struct JwtTemplate {
    /// `jtmpl_...`.
    pub id: String,
    /// Unique per instance.
    pub name: String,
    /// Claims, possibly with shortcodes.
    pub claims: Value,
    /// Token lifetime in seconds (`exp - iat`).
    pub lifetime: u64,
    /// Seconds `nbf` is set before `iat`.
    pub allowed_clock_skew: u64,
    /// Whether `signing_key` is used instead of the instance key.
    pub custom_signing_key: bool,
    /// `HS256`, ... (`RS256` with the instance key).
    pub signing_algorithm: String,
    /// The custom signing key (write-only through the API).
    #[serde(skip)]
    pub signing_key: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last update time, Unix milliseconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for JwtTemplate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JwtTemplate")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("claims", &self.claims)
            .field("lifetime", &self.lifetime)
            .field("allowed_clock_skew", &self.allowed_clock_skew)
            .field("custom_signing_key", &self.custom_signing_key)
            .field("signing_algorithm", &self.signing_algorithm)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl JwtTemplate {
    /// The API answer object: never the signing key.
    pub(crate) fn api_object(&self) -> Value {
        json!({
            "object": "jwt_template",
            "id": self.id,
            "name": self.name,
            "claims": self.claims,
            "lifetime": self.lifetime,
            "allowed_clock_skew": self.allowed_clock_skew,
            "custom_signing_key": self.custom_signing_key,
            "signing_algorithm": self.signing_algorithm,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// A validated create or update body. `None` fields keep the stored value on update.
#[derive(Debug)]
pub(crate) struct TemplateParams {
    name: String,
    claims: Map<String, Value>,
    lifetime: Option<u64>,
    allowed_clock_skew: Option<u64>,
    custom_signing_key: Option<bool>,
    signing_algorithm: Option<String>,
    signing_key: Option<String>,
}

impl TemplateParams {
    /// Validates a body in Clerk's order: required params, formats and ranges, then reserved
    /// claims. (`name` and `claims` are required on PATCH too.)
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ClerkError> {
        let body: Value = serde_json::from_slice(body).map_err(|_| ClerkError::malformed_body())?;
        let Value::Object(body) = body else {
            return Err(ClerkError::malformed_body());
        };
        let name = match body.get("name") {
            None | Some(Value::Null) => return Err(ClerkError::param_missing("name")),
            Some(Value::String(name)) if name.trim().is_empty() => {
                return Err(ClerkError::param_missing("name"));
            }
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err(ClerkError::param_format_invalid("name", "a string")),
        };
        let claims = match body.get("claims") {
            None | Some(Value::Null) => return Err(ClerkError::param_missing("claims")),
            Some(Value::Object(claims)) => claims.clone(),
            Some(_) => return Err(ClerkError::param_format_invalid("claims", "an object")),
        };
        let lifetime = ranged_integer(&body, "lifetime", &LIFETIME_RANGE)?;
        let allowed_clock_skew = ranged_integer(&body, "allowed_clock_skew", &CLOCK_SKEW_RANGE)?;
        let custom_signing_key = match body.get("custom_signing_key") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(flag)) => Some(*flag),
            Some(_) => {
                return Err(ClerkError::param_format_invalid("custom_signing_key", "a boolean"));
            }
        };
        let signing_algorithm = optional_string(&body, "signing_algorithm")?;
        if let Some(algorithm) = &signing_algorithm
            && !SIGNING_ALGORITHMS.contains(&algorithm.as_str())
        {
            return Err(ClerkError::param_value_invalid("signing_algorithm", "unsupported algorithm"));
        }
        let signing_key = optional_string(&body, "signing_key")?;
        if let Some(reserved) = RESERVED_CLAIMS.iter().find(|claim| claims.contains_key(**claim)) {
            return Err(ClerkError::reserved_claim(reserved));
        }
        Ok(Self {
            name,
            claims,
            lifetime,
            allowed_clock_skew,
            custom_signing_key,
            signing_algorithm,
            signing_key,
        })
    }
}

fn ranged_integer(
    body: &Map<String, Value>,
    param: &'static str,
    range: &std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ClerkError> {
    let Some(value) = body.get(param).filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let Some(number) = value.as_f64() else {
        return Err(ClerkError::param_format_invalid(param, "a number"));
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let integer = number as u64;
    #[allow(clippy::cast_precision_loss)]
    let exact = number >= 0.0 && (integer as f64 - number).abs() < f64::EPSILON;
    if !exact || !range.contains(&integer) {
        return Err(ClerkError::param_value_invalid(
            param,
            &format!("must be an integer between {} and {}", range.start(), range.end()),
        ));
    }
    Ok(Some(integer))
}

fn optional_string(body: &Map<String, Value>, param: &'static str) -> Result<Option<String>, ClerkError> {
    match body.get(param) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ClerkError::param_format_invalid(param, "a string")),
    }
}

/// The instance's templates, in creation order.
#[derive(Debug, Default)]
pub(crate) struct TemplateStore {
    templates: Vec<JwtTemplate>,
}

impl TemplateStore {
    pub(crate) fn list(&self) -> &[JwtTemplate] {
        &self.templates
    }

    pub(crate) fn get(&self, id: &str) -> Option<&JwtTemplate> {
        self.templates.iter().find(|template| template.id == id)
    }

    pub(crate) fn find_by_name(&self, name: &str) -> Option<&JwtTemplate> {
        self.templates.iter().find(|template| template.name == name)
    }

    pub(crate) fn create(&mut self, params: TemplateParams, now_ms: i64) -> Result<JwtTemplate, ClerkError> {
        if self.find_by_name(&params.name).is_some() {
            return Err(ClerkError::name_taken());
        }
        let (custom_signing_key, signing_algorithm, signing_key) = signing(&params, false, None, None)?;
        let template = JwtTemplate {
            id: format!("jtmpl_{}", random::base62(27)),
            name: params.name,
            claims: Value::Object(params.claims),
            lifetime: params.lifetime.unwrap_or(DEFAULT_LIFETIME),
            allowed_clock_skew: params.allowed_clock_skew.unwrap_or(DEFAULT_CLOCK_SKEW),
            custom_signing_key,
            signing_algorithm,
            signing_key,
            created_at: now_ms,
            updated_at: now_ms,
        };
        self.templates.push(template.clone());
        Ok(template)
    }

    /// Replaces name and claims; optional fields left out keep their stored values.
    pub(crate) fn update(
        &mut self,
        id: &str,
        params: TemplateParams,
        now_ms: i64,
    ) -> Result<JwtTemplate, ClerkError> {
        let index =
            self.templates.iter().position(|template| template.id == id).ok_or_else(ClerkError::not_found)?;
        if self.templates.iter().any(|template| template.id != id && template.name == params.name) {
            return Err(ClerkError::name_taken());
        }
        let current = &self.templates[index];
        let (custom_signing_key, signing_algorithm, signing_key) = signing(
            &params,
            current.custom_signing_key,
            Some(&current.signing_algorithm),
            current.signing_key.as_deref(),
        )?;
        let template = JwtTemplate {
            id: current.id.clone(),
            name: params.name,
            claims: Value::Object(params.claims),
            lifetime: params.lifetime.unwrap_or(current.lifetime),
            allowed_clock_skew: params.allowed_clock_skew.unwrap_or(current.allowed_clock_skew),
            custom_signing_key,
            signing_algorithm,
            signing_key,
            created_at: current.created_at,
            updated_at: now_ms.max(current.updated_at),
        };
        self.templates[index] = template.clone();
        Ok(template)
    }

    pub(crate) fn delete(&mut self, id: &str) -> Result<(), ClerkError> {
        let before = self.templates.len();
        self.templates.retain(|template| template.id != id);
        if self.templates.len() == before { Err(ClerkError::not_found()) } else { Ok(()) }
    }
}

/// Resolves `(custom_signing_key, signing_algorithm, signing_key)` from the body and what is
/// stored. A custom key needs an algorithm and a key; without one, Clerk's instance key (RS256).
fn signing(
    params: &TemplateParams,
    stored_custom: bool,
    stored_algorithm: Option<&str>,
    stored_key: Option<&str>,
) -> Result<(bool, String, Option<String>), ClerkError> {
    let custom = params.custom_signing_key.unwrap_or(stored_custom);
    if !custom {
        return Ok((false, INSTANCE_ALGORITHM.to_owned(), None));
    }
    let algorithm = params
        .signing_algorithm
        .clone()
        .or_else(|| stored_custom.then(|| stored_algorithm.map(str::to_owned)).flatten())
        .ok_or_else(|| ClerkError::param_missing("signing_algorithm"))?;
    let key = params
        .signing_key
        .clone()
        .or_else(|| stored_custom.then(|| stored_key.map(str::to_owned)).flatten())
        .filter(|key| !key.is_empty())
        .ok_or_else(|| ClerkError::param_missing("signing_key"))?;
    Ok((true, algorithm, Some(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(body: &Value) -> Result<TemplateParams, ClerkError> {
        TemplateParams::parse(body.to_string().as_bytes())
    }

    fn code_of(body: &Value) -> &'static str {
        params(body).unwrap_err().code()
    }

    #[test]
    fn validates_required_params_ranges_and_reserved_claims() {
        assert_eq!(code_of(&json!({"claims": {}})), "form_param_missing");
        assert_eq!(code_of(&json!({"name": "t"})), "form_param_missing");
        assert_eq!(code_of(&json!({"name": "t", "claims": []})), "form_param_format_invalid");
        for lifetime in [29, 315_360_001, -5] {
            let body = json!({"name": "t", "claims": {}, "lifetime": lifetime});
            assert_eq!(code_of(&body), "form_param_value_invalid", "{lifetime}");
        }
        assert_eq!(
            code_of(&json!({"name": "t", "claims": {}, "lifetime": 60.5})),
            "form_param_value_invalid"
        );
        assert_eq!(
            code_of(&json!({"name": "t", "claims": {}, "allowed_clock_skew": 301})),
            "form_param_value_invalid"
        );
        for claim in RESERVED_CLAIMS {
            let error = params(&json!({"name": "t", "claims": {claim: 1}})).unwrap_err();
            assert_eq!(error.code(), "jwt_template_reserved_claim");
            assert_eq!(error.status(), 400);
        }
        assert!(params(&json!({"name": "t", "claims": {}, "lifetime": 30, "allowed_clock_skew": 0})).is_ok());
        assert!(
            params(&json!({"name": "t", "claims": {}, "lifetime": 315_360_000, "allowed_clock_skew": 300}))
                .is_ok()
        );
    }

    #[test]
    fn create_applies_defaults_and_refuses_duplicates() {
        let mut store = TemplateStore::default();
        let created = store.create(params(&json!({"name": "t", "claims": {"a": 1}})).unwrap(), 5).unwrap();
        assert!(created.id.starts_with("jtmpl_"));
        assert_eq!((created.lifetime, created.allowed_clock_skew), (60, 5));
        assert_eq!(created.signing_algorithm, "RS256");
        assert!(!created.custom_signing_key);
        let duplicate = store.create(params(&json!({"name": "t", "claims": {}})).unwrap(), 6);
        assert_eq!(duplicate.unwrap_err().code(), "form_identifier_exists");
    }

    #[test]
    fn custom_key_needs_algorithm_and_key_and_is_kept_on_update() {
        let mut store = TemplateStore::default();
        let missing_key = params(
            &json!({"name": "t", "claims": {}, "custom_signing_key": true, "signing_algorithm": "HS256"}),
        );
        assert_eq!(store.create(missing_key.unwrap(), 1).unwrap_err().code(), "form_param_missing");
        let body = json!({"name": "t", "claims": {}, "custom_signing_key": true,
                          "signing_algorithm": "HS256", "signing_key": "the-signing-key"});
        let created = store.create(params(&body).unwrap(), 1).unwrap();
        // (A key unlike any random id or timestamp the answer holds.)
        assert!(!created.api_object().to_string().contains("the-signing-key"));
        let updated = store
            .update(&created.id, params(&json!({"name": "t2", "claims": {"b": 2}})).unwrap(), 2)
            .unwrap();
        assert_eq!(updated.signing_key.as_deref(), Some("the-signing-key"));
        assert_eq!(updated.created_at, 1);
        assert_eq!(updated.updated_at, 2);
    }

    #[test]
    fn update_refuses_another_templates_name_and_unknown_ids() {
        let mut store = TemplateStore::default();
        store.create(params(&json!({"name": "a", "claims": {}})).unwrap(), 1).unwrap();
        let b = store.create(params(&json!({"name": "b", "claims": {}})).unwrap(), 1).unwrap();
        let clash = store.update(&b.id, params(&json!({"name": "a", "claims": {}})).unwrap(), 2);
        assert_eq!(clash.unwrap_err().code(), "form_identifier_exists");
        assert!(store.update(&b.id, params(&json!({"name": "b", "claims": {}})).unwrap(), 2).is_ok());
        let missing = store.update("jtmpl_x", params(&json!({"name": "c", "claims": {}})).unwrap(), 2);
        assert_eq!(missing.unwrap_err().code(), "resource_not_found");
        assert_eq!(store.delete("jtmpl_x").unwrap_err().code(), "resource_not_found");
        assert!(store.delete(&b.id).is_ok());
        assert_eq!(store.list().len(), 1);
    }
}
