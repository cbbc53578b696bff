//! The signed-in test user and active organization whose data fills template shortcodes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The user a minted token is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestUser {
    /// `user_...` id; the token's `sub`.
    pub id: String,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Primary email address.
    #[serde(default)]
    pub primary_email_address: Option<String>,
    /// Username.
    #[serde(default)]
    pub username: Option<String>,
    /// `{{user.public_metadata...}}`.
    #[serde(default = "empty_object")]
    pub public_metadata: Value,
    /// `{{user.unsafe_metadata...}}`.
    #[serde(default = "empty_object")]
    pub unsafe_metadata: Value,
}

/// The active organization, with the user's role in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestOrg {
    /// `org_...` id.
    pub id: String,
    /// Slug, e.g. `acme`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// The user's role, e.g. `org:admin`.
    pub role: String,
    /// `{{org.public_metadata...}}`.
    #[serde(default = "empty_object")]
    pub public_metadata: Value,
}

/// Who is signed in: a user and, optionally, an active organization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The user.
    pub user: TestUser,
    /// The active organization; `None` makes every `{{org.*}}` shortcode null.
    #[serde(default)]
    pub org: Option<TestOrg>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl TestUser {
    /// A user with just an id.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            first_name: None,
            last_name: None,
            primary_email_address: None,
            username: None,
            public_metadata: empty_object(),
            unsafe_metadata: empty_object(),
        }
    }

    /// `user_alice`, Alice Example, `alice@example.com`, public metadata `{"plan": "pro"}`.
    #[must_use]
    pub fn alice() -> Self {
        Self {
            first_name: Some("Alice".into()),
            last_name: Some("Example".into()),
            primary_email_address: Some("alice@example.com".into()),
            username: Some("alice".into()),
            public_metadata: json!({"plan": "pro"}),
            ..Self::new("user_alice")
        }
    }
}

impl TestOrg {
    /// An organization with empty public metadata.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        slug: impl Into<String>,
        name: impl Into<String>,
        role: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            slug: slug.into(),
            name: name.into(),
            role: role.into(),
            public_metadata: empty_object(),
        }
    }

    /// `org_acme` / `acme`, role `org:admin`.
    #[must_use]
    pub fn acme() -> Self {
        Self::new("org_acme", "acme", "Acme Corp", "org:admin")
    }

    /// `org_globex` / `globex`, role `org:member`.
    #[must_use]
    pub fn globex() -> Self {
        Self::new("org_globex", "globex", "Globex Corporation", "org:member")
    }

    /// `org_initech` / `initech`, role `org:member`.
    #[must_use]
    pub fn initech() -> Self {
        Self::new("org_initech", "initech", "Initech", "org:member")
    }
}

impl Default for Identity {
    /// Alice, active in acme.
    fn default() -> Self {
        Self { user: TestUser::alice(), org: Some(TestOrg::acme()) }
    }
}

impl Identity {
    /// The same user with another active organization.
    #[must_use]
    pub fn in_org(mut self, org: Option<TestOrg>) -> Self {
        self.org = org;
        self
    }

    /// The object shortcodes are looked up in: `{"user": {...}, "org": {...} | null}`.
    pub(crate) fn shortcode_context(&self) -> Value {
        json!({"user": self.user, "org": self.org})
    }
}
