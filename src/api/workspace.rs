use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, SecretKeySelector, conditions_schema, duration_schema};
use super::limits;

/// A Tinybird workspace whose admin token signs tenant tokens: the issuer of TenantAccess
/// tokens for TenantAccess resources in the same namespace (like cert-manager's Issuer).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tenantaccess.dev",
    version = "v1alpha1",
    kind = "TinybirdWorkspace",
    namespaced,
    shortname = "tbws",
    category = "tenant-access",
    status = "WorkspaceStatus",
    doc = "A Tinybird workspace (its admin token, optional Clerk connection and policy) that signs tokens for TenantAccess resources of its own namespace.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Workspace ID","type":"string","jsonPath":".status.workspaceId"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".status.region"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".status.signingKeyFingerprint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
pub struct TinybirdWorkspaceSpec {
    #[serde(flatten)]
    pub workspace: WorkspaceSpec,
}

/// A Tinybird workspace shared by many namespaces (like cert-manager's ClusterIssuer). Its admin
/// token is read from the operator's cluster-resource namespace; `policy.allowedNamespaces`
/// decides which namespaces may use it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tenantaccess.dev",
    version = "v1alpha1",
    kind = "ClusterTinybirdWorkspace",
    shortname = "ctbws",
    category = "tenant-access",
    status = "WorkspaceStatus",
    doc = "A cluster-wide Tinybird workspace; its admin token lives in the operator's cluster-resource namespace and its policy says which namespaces may use it.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Workspace ID","type":"string","jsonPath":".status.workspaceId"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".status.region"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".status.signingKeyFingerprint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
pub struct ClusterTinybirdWorkspaceSpec {
    #[serde(flatten)]
    pub workspace: WorkspaceSpec,
}

/// The fields both workspace kinds share.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// The Secret key holding the workspace **admin token** (`p.eyJ...`), the HS256 signing key
    /// of every token this workspace issues. Rotating it (changing the Secret) re-signs every
    /// dependent token and Clerk template. The Secret is in the workspace's namespace (for a
    /// ClusterTinybirdWorkspace: the operator's cluster-resource namespace) and must allow this
    /// workspace in its annotation `tenantaccess.dev/allowed-workspaces` (comma-separated:
    /// `<name>` for a TinybirdWorkspace of that namespace, `ClusterTinybirdWorkspace/<name>`, or
    /// `*`); otherwise it is not read and the workspace is not Ready (`SecretNotAllowed`). The
    /// operator sends this token to `apiUrl`: creating a workspace is a privileged right.
    pub admin_token_secret_ref: SecretKeySelector,

    /// Tinybird API base URL, e.g. `https://api.us-east.aws.tinybird.co` or Tinybird Local's
    /// `http://localhost:7181`. Default: derived from the admin token's region (`host` field),
    /// else `https://api.tinybird.co`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^\s/?#]+[^\s?#]*$"))]
    pub api_url: Option<String>,

    /// Expected workspace id (UUID). Default: the admin token's `u` field. When set and the
    /// admin token belongs to another workspace, the workspace is not Ready
    /// (`WorkspaceMismatch`) and nothing is signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,

    /// Optional Clerk instance: when set, TenantAccess Clerk templates are pushed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk: Option<ClerkConnection>,

    /// What a TenantAccess may ask of this workspace. Without a policy a TenantAccess may ask
    /// for PIPES:READ on any resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<WorkspacePolicy>,

    /// How often to check the admin token against Tinybird (`GET /v1/workspace`), e.g. `10m`.
    /// Whatever this says, the token is checked once when it is first loaded and whenever it
    /// changes, so a key Tinybird refuses never reports Ready; `0` (the default) adds no periodic
    /// check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub verify_interval: Option<String>,

    /// What the endpoint health checks of this workspace's TenantAccesses may cost: every
    /// probe is a query Tinybird bills and counts against the plan. Defaults a Free plan
    /// (1,000 queries a day) survives with most of it left to the tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<WorkspaceHealthChecks>,

    /// Scheduled rotation of the admin token: the operator refreshes it at Tinybird, writes the
    /// new one into the admin-token Secret and re-signs every dependent token and Clerk
    /// template. Off by default. An emergency rotation (a revoke) is asked for with the
    /// annotation `tenantaccess.dev/rotate: <any new value>` or `tenant-access revoke`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSpec>,
}

/// When the admin token is rotated on a schedule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// How long an admin token is kept before it is refreshed, e.g. `720h` (30 days); at
    /// least `1m`. Every refresh invalidates every token of the workspace until it is re-signed
    /// (seconds): choose a quiet time by when the schedule started. Unset or `0`: no schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub interval: Option<String>,
}

/// The health-check budget of a workspace. Each pipe is probed once per interval for every
/// TenantAccess granting it, each new token once soon after it is written, and each token again
/// every `tokenCheckInterval`; when that wants more than the budget, the probes are spread
/// (longer intervals) and `status.healthChecks` says so. Apart from the budget, each pipe's
/// existence is checked once per interval with the admin token (`GET /v0/pipes/{pipe}`, a
/// metadata call Tinybird does not bill), never stretched: a removed pipe is reported within
/// the interval whatever the budget.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceHealthChecks {
    /// Most health-check queries a day to this workspace (default 200). Never exceeded, a
    /// restart included: probes are paced at one per `86400s / maxQueriesPerDay` at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_queries_per_day: Option<u32>,
    /// Most health-check queries a second to this workspace (default 1). The existence checks
    /// are paced at this rate too, on a pacer of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_queries_per_second: Option<u32>,
    /// How often a token already verified is probed on its own again, e.g. `24h` (the
    /// default); `0`: only when it is written (issued, renewed, re-signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub token_check_interval: Option<String>,
}

/// A connection to a Clerk instance's Backend API.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClerkConnection {
    /// The Secret key holding the Clerk secret key (`sk_live_...` or `sk_test_...`), in the same
    /// namespace as the admin token Secret. Like that Secret it must allow the workspace in its
    /// annotation `tenantaccess.dev/allowed-workspaces`; the key is sent to `apiUrl`.
    pub secret_key_secret_ref: SecretKeySelector,
    /// Clerk Backend API base URL. Default `https://api.clerk.com/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^\s/?#]+[^\s?#]*$"))]
    pub api_url: Option<String>,
}

/// Limits on what a TenantAccess may ask of a workspace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspacePolicy {
    /// Namespaces whose TenantAccess resources may use this workspace (a label selector on the
    /// Namespace). Only for ClusterTinybirdWorkspace. Unset admits **no** namespace (fail
    /// closed); the empty selector `{}` admits every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,
    /// Globs (`*` and `?`) over pipe and data-source names a scope may name, e.g.
    /// `["tenant_*", "top_pages"]`. Empty allows every resource. At most 256 globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_POLICY_ENTRIES))]
    pub allowed_resources: Vec<String>,
    /// Scope types a TenantAccess may use. Default `["PIPES:READ"]`: `DATASOURCES:READ` must be
    /// allowed explicitly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "enum": ["PIPES:READ", "DATASOURCES:READ"]}), length(max = 2))]
    pub allowed_scope_types: Vec<String>,
    /// Longest token lifetime a TenantAccess may ask for, e.g. `6h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub max_lifetime: Option<String>,
    /// Highest `limits.rps` a TenantAccess may ask for; a TenantAccess without `limits.rps` gets
    /// this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_rps: Option<i64>,
    /// Most scopes a TenantAccess may ask for, 1 to 64 (the operator's own limit, also the
    /// default). Each scope is a probed endpoint and a part of every token's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = limits::MAX_SCOPES))]
    pub max_scopes: Option<usize>,
    /// Fixed params forced into every scope, and where each value must come from. A
    /// TenantAccess that sets another value for one of them is refused. At most 256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = limits::MAX_POLICY_ENTRIES))]
    pub required_params: BTreeMap<String, RequiredParamSource>,
    /// What a Clerk template's shortcode renders for a user who lacks the identity it names
    /// (no active organization, no such metadata): the operator adds it as the fallback of every
    /// shortcode in fixed params and token names that has none, so a missing identity matches no
    /// tenant instead of becoming `null` (which `{% if defined(org) %}` pipes read as "every
    /// organization"). Letters, digits, `_`, `-`, `.`, starting or ending with `_`, `-` or `.`
    /// so that no namespace name or label value can equal it. Default `_none_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 63), pattern(r"^([_.-][A-Za-z0-9_.-]*|[A-Za-z0-9_.-]*[_.-])$"))]
    pub clerk_missing_identity_value: Option<String>,
    /// What a granted pipe whose SQL never filters by a param the TenantAccess pins (verdict
    /// `Unused` in `status.endpoints[].isolation`: every tenant would read every row) does to the
    /// TenantAccess. `Warn` (default): it is reported (condition `PipesIsolated`, an event, a
    /// metric) and the token is issued. `Enforce`: nothing is issued for it, and a token or Clerk
    /// template already issued is withdrawn, until the pipe filters again. A pipe the operator
    /// cannot analyse (`Unknown`) is reported under both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Enforce", "Warn"]))]
    pub pipe_isolation: Option<String>,
}

/// Where the value of a required fixed param comes from. Exactly one of `namespaceLabel` and
/// `namespaceName` is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequiredParamSource {
    /// The value is the TenantAccess namespace's label with this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_label: Option<String>,
    /// The value is the TenantAccess's namespace name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_name: Option<bool>,
    /// For Clerk templates: the shortcode every Clerk template of this workspace carries for
    /// this param (e.g. `{{org.id}}` or `{{org.slug}}`), never the namespace's literal value (any
    /// signed-in user may mint any template by name). Without it this workspace refuses Clerk
    /// outputs. A fallback in it must not be a possible tenant value (it must start or end with
    /// `_`, `-` or `.`); without one the workspace's `clerkMissingIdentityValue` is added.
    /// Shortcodes the end user writes (`user.unsafe_metadata.*`, names) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk_shortcode: Option<String>,
}

/// Observed state of a workspace, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// `Ready` with a reason: `Ready`, `SecretNotFound`, `SecretNotAllowed`, `KeyMissing`,
    /// `MalformedToken`, `WorkspaceMismatch`, `Unauthorized`, `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The workspace id decoded from the admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// The API URL tokens of this workspace are used against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The region key decoded from the admin token (`host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A short one-way hash of the current admin token (never the token). Changes when the
    /// admin token rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_fingerprint: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Set while the health checks of this workspace's TenantAccesses want more than
    /// `spec.healthChecks` allows: planned against the budget, and what was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<HealthCheckBudgetStatus>,
    /// Rotations of the admin token (scheduled, or asked for by annotation or `tenant-access
    /// revoke`): the request last acted upon, the next scheduled one, and the last few.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// Clerk templates this workspace removed from its Clerk instance because they outlived
    /// their right: their namespace is no longer admitted, or their TenantAccess is gone and
    /// they were not retained. Written (a merge patch of its own) only when one is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clerk_templates: Option<ClerkTemplatesStatus>,
    /// Whether this workspace's granted pipes filter by the params its TenantAccesses pin, as
    /// their last descriptions read: the pipes that do not first (`Unused`, then `Unknown`,
    /// `Optional`, `Enforced`), at most 64. Kept as it was until the pipes are described again
    /// (after a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_LISTED_PIPES))]
    pub pipes: Vec<WorkspacePipeStatus>,
    /// How many more pipes were judged than `pipes` lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipes_not_listed: Option<u32>,
}

/// One granted pipe of the workspace and its verdicts (`status.pipes[]`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspacePipeStatus {
    /// The pipe.
    pub name: String,
    /// The verdict on each param some TenantAccess pins on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_FIXED_PARAMS))]
    pub isolation: Vec<super::ParamIsolation>,
}

/// What the workspace removed from its Clerk instance.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClerkTemplatesStatus {
    /// The last removals, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub removed: Vec<RemovedClerkTemplate>,
}

/// One Clerk template removed by its workspace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemovedClerkTemplate {
    /// Template name.
    #[schemars(length(max = 256))]
    pub name: String,
    /// Clerk's template id.
    #[schemars(length(max = 128))]
    pub id: String,
    /// The TenantAccess it was pushed for, `<namespace>/<name>`.
    #[schemars(length(max = 320))]
    pub tenant_access: String,
    /// `NamespaceWithdrawn` or `TenantAccessDeleted`.
    #[schemars(extend("enum" = ["NamespaceWithdrawn", "TenantAccessDeleted"]))]
    pub reason: String,
    /// When it was removed.
    pub removed_at: Time,
}

/// The rotations of a workspace's admin token. Written by the operator (a merge patch of its
/// own, conditional on the object's resourceVersion, so that one request is acted upon once).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// The `tenantaccess.dev/rotate` annotation value last acted upon (values longer than 63
    /// characters are kept as a hash). A different value asks for a new rotation. Set to the
    /// annotation's value when the operator first sees the workspace, so that a manifest
    /// carrying the annotation does not refresh the token when it is applied again elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub handled_request: Option<String>,
    /// `spec.rotation.interval` the next rotation time was computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub interval: Option<String>,
    /// When the next scheduled rotation is due (absent without `spec.rotation.interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    /// The last rotations, newest first (at most 5). The first may be in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub history: Vec<RotationRecord>,
}

/// One rotation of the admin token.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationRecord {
    /// What asked for it: the annotation value (`cli-...` when `tenant-access revoke` set it),
    /// or `schedule-<time>` for a scheduled rotation.
    #[schemars(length(max = 80))]
    pub request: String,
    /// Why: `Annotation`, `CLI` or `Schedule`.
    #[schemars(extend("enum" = ["Annotation", "CLI", "Schedule"]))]
    pub trigger: String,
    /// `Refreshing` (recorded before the refresh is sent: a refresh is never sent twice for one
    /// request), `Resigning` (the new token is in the Secret; dependents are being re-signed),
    /// `Complete`, `Superseded` (a newer rotation began before every dependent was re-signed),
    /// `NotRefreshed` (Tinybird did not refresh: nothing changed), `KeyLost` (Tinybird
    /// refreshed and the new token never reached the Secret: see the `KeyRotation` condition
    /// for the recovery).
    #[schemars(extend("enum" = ["Refreshing", "Resigning", "Complete", "Superseded", "NotRefreshed", "KeyLost"]))]
    pub phase: String,
    /// What happened, for people (never a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// When the operator took up the request.
    pub requested_at: Time,
    /// When Tinybird answered the refresh (the moment every old token died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<Time>,
    /// Fingerprint of the admin token before (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_key_fingerprint: Option<String>,
    /// Fingerprint of the admin token after (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_key_fingerprint: Option<String>,
    /// Token Secrets of dependent TenantAccesses on the new key, of those holding a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<RotationProgress>,
    /// Clerk templates of dependent TenantAccesses carrying the new key, of those pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<RotationProgress>,
    /// From the refresh until every token Secret was on the new key (the tenants' outage),
    /// e.g. `4.2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub secrets_on_new_key_after: Option<String>,
    /// From the refresh until every Clerk template carried the new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub templates_on_new_key_after: Option<String>,
}

/// How many of a rotation's dependents are on the new key.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationProgress {
    /// On the new key.
    pub on_new_key: u32,
    /// In all.
    pub total: u32,
}

/// The health checks of a workspace: planned against the budget, and what was cut.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckBudgetStatus {
    /// `spec.healthChecks.maxQueriesPerDay` in effect.
    pub max_queries_per_day: u32,
    /// Billed queries a day the probes want at their intervals (distinct pipes and token
    /// checks); the free existence checks are not in it.
    pub planned_queries_per_day: u64,
    /// Distinct pipes probed.
    pub pipes: u32,
    /// When the probes do not fit: how they were spread, the billed probes to fit
    /// `maxQueriesPerDay`, the free existence checks to fit `maxQueriesPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<String>,
}
