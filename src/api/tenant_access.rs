use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, conditions_schema, duration_schema};
use super::limits;

/// One tenant's (or one tenant class's) access to Tinybird pipes: a signed JWT kept in a
/// Secret, a Clerk JWT template, or both.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tenantaccess.dev",
    version = "v1alpha1",
    kind = "TenantAccess",
    plural = "tenantaccesses",
    namespaced,
    shortname = "ta",
    category = "tenant-access",
    status = "TenantAccessStatus",
    doc = "Access of one tenant to Tinybird pipes: a signed Tinybird JWT kept in a Secret and renewed before expiry, and/or a Clerk JWT template.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Workspace","type":"string","jsonPath":".spec.workspaceRef.name"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.token.secretName"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.token.expiresAt"}"#,
    printcolumn = r#"{"name":"Healthy","type":"string","jsonPath":".status.conditions[?(@.type==\"EndpointsHealthy\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantAccessSpec {
    /// The workspace whose admin token signs this tenant's tokens.
    pub workspace_ref: WorkspaceRef,

    /// The JWT `name` claim: Tinybird's rate-limit bucket and the name in `pipe_stats_rt`.
    /// Letters, digits, `_`, `-` and `.`. Default `<namespace>_<name>`, so two tenants never share
    /// a bucket by accident. A Clerk-only TenantAccess may put Clerk shortcodes in it
    /// (`acme_{{org.id}}`), which each session's token fills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(r"^[A-Za-z0-9_.{}|' -]+$"))]
    pub token_name: Option<String>,

    /// What the token grants. At least one scope, at most 64.
    #[schemars(length(min = 1, max = limits::MAX_SCOPES))]
    pub scopes: Vec<Scope>,

    /// Rate limits of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,

    /// Token lifetime (JWT `exp - iat`), e.g. `15m`, `1h`, `3h`. At least `1m`. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub lifetime: Option<String>,

    /// How long before expiry the token is renewed, at least: each TenantAccess renews up to a
    /// quarter of it earlier, so that tokens signed together do not renew together. Shorter than
    /// `lifetime`. Default a third of `lifetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub renew_before: Option<String>,

    /// Output 1: a Secret holding the signed token (`token`, `api-url`, `workspace-id`,
    /// `expires-at`), renewed before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretOutput>,

    /// Output 2: a Clerk JWT template (Clerk signs tokens per user session with the workspace
    /// admin token). Always rendered to the ConfigMap `<name>-clerk-template`; pushed to Clerk
    /// when the workspace has a Clerk connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk_template: Option<ClerkTemplateOutput>,

    /// Health checks of the pipe endpoints the token grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// A reference to a TinybirdWorkspace (same namespace) or a ClusterTinybirdWorkspace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRef {
    /// `TinybirdWorkspace` (default; must be in the TenantAccess's namespace) or
    /// `ClusterTinybirdWorkspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["TinybirdWorkspace", "ClusterTinybirdWorkspace"]))]
    pub kind: Option<String>,
    /// Name of the workspace.
    #[schemars(length(min = 1, max = 253), pattern(crate::core::k8s_name_rules::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// One grant of the token.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// `PIPES:READ` (default) or `DATASOURCES:READ`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["PIPES:READ", "DATASOURCES:READ"]))]
    pub scope_type: Option<String>,
    /// The pipe (PIPES:READ) or data source (DATASOURCES:READ) name (at most 128 bytes).
    #[schemars(length(min = 1, max = limits::MAX_RESOURCE_BYTES))]
    pub resource: String,
    /// PIPES:READ only: params pinned in the token, which always win over query parameters of
    /// the same name. This is how a tenant is pinned to its rows, e.g. `{org: acme}`. Values are
    /// strings, numbers or booleans, never empty or null. In a Clerk template a value may be a
    /// Clerk shortcode such as `{{org.slug}}`. At most 32 params; string values at most 1024
    /// bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "fixed_params_schema")]
    pub fixed_params: BTreeMap<String, serde_json::Value>,
    /// DATASOURCES:READ only: a condition limiting the rows the token can read, e.g.
    /// `kind IN ('click', 'view') AND amount > 3`: comparisons, IN lists, IS NULL, LIKE and
    /// BETWEEN between a column and literals, combined with AND, OR, NOT and parentheses (no
    /// functions, subqueries or comments). At most 4096 bytes. The operator signs its own
    /// re-serialisation, with the workspace's required params ANDed outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_FILTER_BYTES))]
    pub filter: Option<String>,
}

fn fixed_params_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": limits::MAX_FIXED_PARAMS,
        // Strings, numbers or booleans; a string is never empty.
        "additionalProperties": {"x-kubernetes-preserve-unknown-fields": true, "minLength": 1}
    })
}

/// Token limits.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Requests per second allowed for this token's name, per pipe. Omit for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rps: Option<i64>,
}

/// The Secret output.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretOutput {
    /// Secret name (a DNS subdomain: lowercase letters, digits, `-` and `.`). Default: the
    /// TenantAccess's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(crate::core::k8s_name_rules::DNS_SUBDOMAIN_PATTERN))]
    pub name: Option<String>,
    /// Extra labels for the Secret (at most 32).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = limits::MAX_SECRET_METADATA_ENTRIES))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the Secret (e.g. for a secret-reloader); at most 32, values at
    /// most 4096 bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = limits::MAX_SECRET_METADATA_ENTRIES))]
    pub annotations: BTreeMap<String, String>,
    /// Workloads restarted (pod-template annotation `tenantaccess.dev/revision`) once per new
    /// token, so apps that read the token at start pick up the new one. A workload is restarted
    /// only when it opts in with the label `tenantaccess.dev/restart-on-token-change: "true"`
    /// (on the workload itself); one without it is left alone (a `RolloutRestartRefused`
    /// warning event names the label to add).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_ROLLOUT_TARGETS))]
    pub rollout_restart_targets: Vec<RolloutTarget>,
    /// Which new tokens restart `rolloutRestartTargets`: `EveryToken` (the default: apps that
    /// read the token once, at start, e.g. from an environment variable, need every new one) or
    /// `KeyOrClaimsChange` (apps that re-read the mounted file pick up renewals by themselves;
    /// only a new signing key or new claims restart them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["EveryToken", "KeyOrClaimsChange"]))]
    pub restart_on: Option<String>,
    /// The least time between two restarts of one workload, e.g. `15m` (default `0s`: none). A
    /// restart due sooner is made once the interval has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub restart_min_interval: Option<String>,
}

/// A workload in the TenantAccess's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    #[schemars(extend("enum" = ["Deployment", "StatefulSet", "DaemonSet"]))]
    pub kind: String,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253), pattern(crate::core::k8s_name_rules::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// The Clerk JWT template output.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClerkTemplateOutput {
    /// Template name in Clerk (unique per instance). Default `<namespace>_<name>` (`_` is in
    /// no namespace or TenantAccess name, so two defaults never collide). Changing it renames
    /// the template in Clerk (same id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
    /// Lifetime of tokens Clerk mints from the template, 30s..10 years. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub lifetime: Option<String>,
    /// Clock skew Clerk allows, 0s..300s. Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub allowed_clock_skew: Option<String>,
    /// `Delete` (default): the template is removed from Clerk when the TenantAccess is deleted.
    /// `Retain`: it stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Delete", "Retain"]))]
    pub deletion_policy: Option<String>,
    /// Whose requests share one Tinybird rate limit (`limits.rps` is counted per JWT `name`):
    /// `User` (default) appends `_{{user.id}}` to the token name, so every signed-in user has a
    /// bucket of their own; `Organization` appends `_{{org.id}}` (one bucket per organization);
    /// `Shared` keeps one name, and one bucket, for every user of the template. Not allowed with
    /// a `tokenName` that holds shortcodes itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["User", "Organization", "Shared"]))]
    pub rate_limit_key: Option<String>,
}

/// Health checks of the granted pipe endpoints.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// Probe interval, e.g. `5m` (default). `0` disables health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub interval: Option<String>,
    /// Probe timeout. Default `5s` (at most half the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub timeout: Option<String>,
    /// Extra query parameters sent with every probe (at most 16, values at most 256 bytes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = limits::MAX_HEALTH_PARAMS))]
    pub params: BTreeMap<String, String>,
    /// Values standing in for Clerk shortcodes when probing a Clerk-only TenantAccess, e.g.
    /// `{org: acme}`: the probe token is signed in memory with them and never stored. At most
    /// 16, values at most 256 bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = limits::MAX_HEALTH_PARAMS))]
    pub sample_params: BTreeMap<String, String>,
}

/// Observed state of a TenantAccess, written by the operator only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantAccessStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `TokenIssued`, `ClerkTemplateSynced`, `EndpointsHealthy`. `lastTransitionTime`
    /// moves only when a condition's status flips.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The token currently in the Secret. Set on every issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenStatus>,
    /// The Clerk template last pushed. Set after every successful create or update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk_template: Option<ClerkTemplateStatus>,
    /// Health of each probed endpoint. Changes only when health changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStatus>,
    /// Refusals in a row that changed the status (a refusal repeated unchanged writes nothing,
    /// so it is not counted). Informational: retries back off in the operator's memory, not
    /// from this field. Cleared when the TenantAccess becomes Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<u32>,
}

/// The issued token (never the token itself).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// The JWT `name` claim.
    pub name: String,
    /// JWT `iat`.
    pub issued_at: Time,
    /// JWT `exp`.
    pub expires_at: Time,
    /// When the operator renews the token (`expiresAt - renewBefore`, brought forward by up to a
    /// quarter of `renewBefore`, a share fixed per TenantAccess).
    pub renewal_time: Time,
    /// Incremented on every issuance; also written to the Secret and restarted pod templates.
    pub revision: i64,
    /// Hash of the claims that define access (everything but `iat`/`exp`).
    pub claims_hash: String,
    /// Fingerprint of the admin token that signed the token.
    pub signing_key_fingerprint: String,
    /// Name of the Secret holding the token.
    pub secret_name: String,
    /// The value of the `tenantaccess.dev/renew` annotation last honoured: as written when at
    /// most 63 printable characters, else a short hash of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_request: Option<String>,
    /// The token Secret as the operator last saw it hold this token (its own write, or a read of
    /// the whole Secret). The operator watches token Secrets' metadata only: while the Secret
    /// keeps this resourceVersion it still holds these values, and a restarted operator need not
    /// read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_observed: Option<SecretObserved>,
}

/// A token Secret as the operator last saw it (`status.token.secretObserved`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObserved {
    /// Its `metadata.resourceVersion` then.
    #[schemars(length(max = 64))]
    pub resource_version: String,
    /// A one-way hash of the keys the operator writes, as they were then (`sha256:` and 16 hex
    /// digits), never the values.
    #[schemars(length(max = 64))]
    pub data_hash: String,
}

/// The Clerk template last pushed (the key cannot be read back, so its fingerprint is the
/// record of what was pushed).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClerkTemplateStatus {
    /// Clerk's template id (`jtmpl_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Template name.
    pub name: String,
    /// Hash of the pushed body without the key.
    pub claims_hash: String,
    /// Fingerprint of the signing key pushed.
    pub signing_key_fingerprint: String,
    /// The JWT `name` claim of the pushed template, shortcodes as Clerk fills them (e.g.
    /// `acme_dash_{{user.id || '_none_'}}`): the rate-limit bucket of its tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
}

/// Health of one probed endpoint.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// The pipe name.
    pub resource: String,
    /// Whether the last probes found it healthy.
    pub healthy: bool,
    /// HTTP status of the last probe (absent when unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// `Healthy`, `SignatureRejected`, `ScopeRejected`, `PipeNotFound`, `QueryTimeout`,
    /// `RateLimited`, `ServerError`, `Unreachable` or `BadResponse`.
    pub reason: String,
    /// Human-readable detail, redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether the pipe's SQL filters by each param this TenantAccess pins on it, from the
    /// pipe's description (read by the free existence check; absent until it is read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolation: Vec<ParamIsolation>,
}

/// Whether a pipe's SQL filters by a pinned param (`status.endpoints[].isolation[]`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParamIsolation {
    /// The param (a key of the scope's fixedParams).
    pub param: String,
    /// `Enforced` (filtered on every path, or the request fails without it), `Optional`
    /// (filtered only when it has a value), `Unused` (never filtered: every tenant reads every
    /// row) or `Unknown` (the SQL could not be analysed).
    pub verdict: String,
    /// What the verdict means, or why it is `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
