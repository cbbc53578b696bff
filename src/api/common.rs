use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The standard `metav1.Condition`.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// A key of a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret. For a TinybirdWorkspace it is read from the workspace's namespace; for
    /// a ClusterTinybirdWorkspace from the operator's cluster-resource namespace
    /// (`--cluster-resource-namespace`), never from a tenant namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data. Defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretKeySelector {
    /// Key used when `key` is not set.
    pub const DEFAULT_KEY: &'static str = "token";

    /// The key to read, with the default applied.
    #[must_use]
    pub fn key_or_default(&self) -> &str {
        self.key.as_deref().unwrap_or(Self::DEFAULT_KEY)
    }
}

/// Schema of a string that must be a duration such as `90s`, `15m`, `1h` or `1h30m`.
pub(crate) fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": crate::core::duration::DURATION_PATTERN,
    })
}

/// Schema of a list of standard conditions, merged by `type`.
pub(crate) fn conditions_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = g.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}
