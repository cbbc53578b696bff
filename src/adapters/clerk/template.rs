//! JWT templates as sent to and read from Clerk.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::core::admin_token::AdminToken;
use crate::core::desired::ClerkTemplate;

/// A template body the client can send: everything but the signing key, which the client adds
/// just before the request. [`ClerkTemplate`] is the one the operator uses.
pub trait ClerkTemplateBody {
    /// The template name (unique per Clerk instance).
    fn template_name(&self) -> &str;

    /// The body without `signing_key`: `name`, `claims` and the other settings. Clerk requires
    /// `name` and `claims` on every PATCH, so this is always the whole template.
    fn body_without_key(&self) -> Value;

    /// The body to send, with `signing_key`. Never log or store it.
    fn request_body(&self, signing_key: &AdminToken) -> Value {
        let mut body = self.body_without_key();
        if let Some(object) = body.as_object_mut() {
            object.insert("signing_key".into(), signing_key.expose().into());
        }
        body
    }
}

impl ClerkTemplateBody for ClerkTemplate {
    fn template_name(&self) -> &str {
        &self.name
    }

    fn body_without_key(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn request_body(&self, signing_key: &AdminToken) -> Value {
        ClerkTemplate::request_body(self, signing_key)
    }
}

/// A template as Clerk answers it. Clerk never returns the signing key: remember which key was
/// pushed (its fingerprint) to know when to push again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RemoteTemplate {
    /// `jtmpl_...`.
    pub id: String,
    /// Unique per instance.
    pub name: String,
    /// Claims as stored (shortcodes kept).
    #[serde(default, deserialize_with = "claims_object")]
    pub claims: Value,
    /// Token lifetime, seconds.
    #[serde(default)]
    pub lifetime: i64,
    /// Allowed clock skew, seconds.
    #[serde(default)]
    pub allowed_clock_skew: i64,
    /// Whether Clerk signs with the pushed key rather than its instance key.
    #[serde(default)]
    pub custom_signing_key: bool,
    /// `HS256`, ...
    #[serde(default)]
    pub signing_algorithm: String,
}

/// Claims as an object; also accepts a JSON string holding the object.
fn claims_object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    let value = Value::deserialize(deserializer)?;
    match value {
        Value::String(text) => serde_json::from_str(&text).map_err(serde::de::Error::custom),
        other => Ok(other),
    }
}

impl RemoteTemplate {
    /// Whether the remote template already says what `desired` says (name, claims, lifetime,
    /// clock skew, signing settings). The signing key cannot be compared: Clerk never returns it.
    #[must_use]
    pub fn matches(&self, desired: &impl ClerkTemplateBody) -> bool {
        let desired = desired.body_without_key();
        let Some(desired) = desired.as_object() else {
            return false;
        };
        desired.iter().all(|(field, wanted)| match field.as_str() {
            "name" => wanted.as_str() == Some(self.name.as_str()),
            "claims" => *wanted == self.claims,
            "lifetime" => wanted.as_i64() == Some(self.lifetime),
            "allowed_clock_skew" => wanted.as_i64() == Some(self.allowed_clock_skew),
            "custom_signing_key" => wanted.as_bool() == Some(self.custom_signing_key),
            "signing_algorithm" => wanted.as_str() == Some(self.signing_algorithm.as_str()),
            // Fields Clerk does not echo cannot differ visibly.
            _ => true,
        })
    }
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The template existed and is gone.
    Deleted,
    /// There was no such template (404): nothing to do.
    AlreadyAbsent,
}

/// One page of `GET /jwt_templates`: `{"data": [...], "total_count": N}` with `paginated=true`,
/// or a bare array (everything at once).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TemplatePage {
    Paginated {
        data: Vec<RemoteTemplate>,
        #[serde(default)]
        total_count: Option<u64>,
    },
    All(Vec<RemoteTemplate>),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::core::jwt::{AccessClaims, ClaimScope};

    fn desired() -> ClerkTemplate {
        ClerkTemplate {
            name: "acme-reader".into(),
            claims: crate::core::desired::ClerkClaims {
                owner: "acme/acme-reader".into(),
                workspace: "TinybirdWorkspace/acme/analytics".into(),
                retain: false,
                access: AccessClaims {
                    workspace_id: "ws-1".into(),
                    name: "acme-reader".into(),
                    scopes: vec![ClaimScope {
                        scope_type: "PIPES:READ".into(),
                        resource: "top_pages".into(),
                        fixed_params: Some([("org".to_owned(), json!("{{org.slug}}"))].into()),
                        filter: None,
                    }],
                    limits: None,
                },
            },
            lifetime: 60,
            allowed_clock_skew: 5,
            custom_signing_key: true,
            signing_algorithm: "HS256",
        }
    }

    fn answer(template: &ClerkTemplate) -> Value {
        let mut object = template.body_without_key();
        object["object"] = json!("jwt_template");
        object["id"] = json!("jtmpl_1");
        object["created_at"] = json!(1);
        object["updated_at"] = json!(2);
        object
    }

    #[test]
    fn parses_clerks_answer_object() {
        let remote: RemoteTemplate = serde_json::from_value(answer(&desired())).unwrap();
        assert_eq!(remote.id, "jtmpl_1");
        assert_eq!(remote.name, "acme-reader");
        assert_eq!(remote.claims["scopes"][0]["fixed_params"]["org"], "{{org.slug}}");
        assert_eq!((remote.lifetime, remote.allowed_clock_skew), (60, 5));
        assert!(remote.custom_signing_key);
        assert_eq!(remote.signing_algorithm, "HS256");
        assert!(remote.matches(&desired()));
    }

    #[test]
    fn accepts_claims_sent_as_a_json_string() {
        let mut object = answer(&desired());
        object["claims"] = json!(object["claims"].to_string());
        let remote: RemoteTemplate = serde_json::from_value(object).unwrap();
        assert!(remote.matches(&desired()));
    }

    #[test]
    fn notices_every_visible_difference() {
        let remote: RemoteTemplate = serde_json::from_value(answer(&desired())).unwrap();
        let mut other = desired();
        other.lifetime = 120;
        assert!(!remote.matches(&other));
        let mut other = desired();
        other.claims.access.scopes[0].resource = "other".into();
        assert!(!remote.matches(&other));
        let mut other = desired();
        other.name = "renamed".into();
        assert!(!remote.matches(&other));
        let mut other = desired();
        other.allowed_clock_skew = 0;
        assert!(!remote.matches(&other));
    }

    #[test]
    fn claim_key_order_does_not_matter() {
        let mut object = answer(&desired());
        let claims = object["claims"].as_object().unwrap().clone();
        let reversed: serde_json::Map<String, Value> = claims.into_iter().rev().collect();
        object["claims"] = Value::Object(reversed);
        let remote: RemoteTemplate = serde_json::from_value(object).unwrap();
        assert!(remote.matches(&desired()));
    }

    #[test]
    fn request_body_adds_the_key_and_nothing_else() {
        let key = AdminToken::new("p.eyJ1IjoiYWJjIn0.c2lnbmF0dXJl");
        let body = ClerkTemplateBody::request_body(&desired(), &key);
        assert_eq!(body["signing_key"], key.expose());
        assert!(desired().body_without_key().get("signing_key").is_none());
        assert_eq!(body["name"], "acme-reader");
        assert!(body["claims"].is_object());
    }

    #[test]
    fn parses_both_list_shapes() {
        let one = answer(&desired());
        let paginated: TemplatePage =
            serde_json::from_value(json!({"data": [one.clone()], "total_count": 3})).unwrap();
        assert!(
            matches!(paginated, TemplatePage::Paginated { ref data, total_count: Some(3) } if data.len() == 1)
        );
        let bare: TemplatePage = serde_json::from_value(json!([one.clone(), one])).unwrap();
        assert!(matches!(bare, TemplatePage::All(ref all) if all.len() == 2));
        assert!(serde_json::from_value::<TemplatePage>(json!({"nope": 1})).is_err());
    }
}
