//! Validation of a TenantAccess spec into a [`ValidatedAccess`]: every default applied, every
//! rule checked, each problem naming the field and the fix. Pure: no client, no clock.
//!
//! The CRD schema repeats some of these rules (types, enums, bounds; it has no CEL rules), but
//! this is the authority: the operator never signs anything this refuses.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use jiff::SignedDuration;

use crate::api::limits::{
    MAX_ANNOTATION_VALUE_BYTES, MAX_FIXED_PARAM_VALUE_BYTES, MAX_FIXED_PARAMS, MAX_PARAM_NAME_BYTES,
    MAX_RESOURCE_BYTES, MAX_ROLLOUT_TARGETS, MAX_SCOPES, MAX_SECRET_METADATA_ENTRIES,
};
use crate::api::{
    KIND_CLUSTER_WORKSPACE, KIND_WORKSPACE, SCOPE_DATASOURCES_READ, SCOPE_PIPES_READ, SCOPE_TYPES, Scope,
    TenantAccessSpec,
};
use crate::core::duration;
use crate::core::filter::Filter;
use crate::core::k8s_name_rules::{is_dns_subdomain, is_label_value, is_qualified_name};
use crate::core::shortcode;
use crate::core::well_known::{LABEL_MANAGED_BY, LABEL_TENANT_ACCESS};

/// Shortest token lifetime accepted.
pub const MIN_LIFETIME: SignedDuration = SignedDuration::from_mins(1);
/// Shortest `renewBefore` accepted: renewal needs time to happen before expiry.
pub const MIN_RENEW_BEFORE: SignedDuration = SignedDuration::from_secs(10);
/// Default token lifetime.
pub const DEFAULT_LIFETIME: SignedDuration = SignedDuration::from_hours(1);
/// Clerk's bounds on a template's `lifetime` (seconds).
pub const CLERK_LIFETIME_RANGE: (i64, i64) = (30, 315_360_000);
/// Clerk's bounds on `allowed_clock_skew` (seconds).
pub const CLERK_CLOCK_SKEW_RANGE: (i64, i64) = (0, 300);
/// Default health-check interval.
pub const DEFAULT_HEALTH_INTERVAL: SignedDuration = SignedDuration::from_mins(5);
/// Default health-check timeout.
pub const DEFAULT_HEALTH_TIMEOUT: SignedDuration = SignedDuration::from_secs(5);
/// Longest value (bytes) in `healthCheck.params` and `healthCheck.sampleParams`.
pub use crate::api::limits::MAX_HEALTH_PARAM_VALUE_BYTES as MAX_PROBE_PARAM_BYTES;
/// Most entries in `healthCheck.params`, and in `healthCheck.sampleParams`.
pub use crate::api::limits::MAX_HEALTH_PARAMS as MAX_PROBE_PARAMS;
/// Query parameters Tinybird's pipe endpoints read themselves (`q` runs SQL over the pipe's
/// result, `token` is a credential, the others change what or how it answers): a probe never
/// sends them. Compared without case; every name starting with `_` is reserved too.
pub const RESERVED_PROBE_PARAMS: [&str; 7] = ["q", "token", "format", "pipeline", "from", "debug", "explain"];

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.scopes[0].resource`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Every problem found in a spec (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec(pub Vec<FieldError>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Which workspace kind a TenantAccess uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkspaceKind {
    /// `TinybirdWorkspace` in the TenantAccess's namespace.
    Namespaced,
    /// `ClusterTinybirdWorkspace`.
    Cluster,
}

impl WorkspaceKind {
    /// The Kubernetes kind name.
    #[must_use]
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::Namespaced => KIND_WORKSPACE,
            Self::Cluster => KIND_CLUSTER_WORKSPACE,
        }
    }
}

/// A scope after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidScope {
    /// `PIPES:READ` or `DATASOURCES:READ`.
    pub scope_type: &'static str,
    /// Pipe or data source.
    pub resource: String,
    /// Fixed params (PIPES:READ), values are non-empty strings, numbers or booleans (strings
    /// may hold Clerk shortcodes when `has_shortcodes`).
    pub fixed_params: BTreeMap<String, serde_json::Value>,
    /// Row filter (DATASOURCES:READ), parsed: what is signed is its [`Filter::to_sql`].
    pub filter: Option<Filter>,
}

/// The Secret output after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSecretOutput {
    /// Secret name.
    pub name: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// User annotations.
    pub annotations: BTreeMap<String, String>,
    /// `(kind, name)` of workloads to restart.
    pub rollout_restart_targets: Vec<(String, String)>,
    /// When they restart.
    pub restart: crate::core::restarts::RestartPolicy,
}

/// What happens to a Clerk template when its TenantAccess is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the template from Clerk.
    Delete,
    /// Leave it.
    Retain,
}

/// Whose requests share one Tinybird rate limit in a Clerk template (`limits.rps` is counted
/// per JWT `name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitKey {
    /// One bucket per signed-in user: the name ends in `_{{user.id}}`.
    User,
    /// One bucket per organization: the name ends in `_{{org.id}}`.
    Organization,
    /// One bucket for every user of the template.
    Shared,
}

impl RateLimitKey {
    /// The shortcode appended to the token name, if any.
    #[must_use]
    pub fn shortcode_path(self) -> Option<&'static str> {
        match self {
            Self::User => Some("user.id"),
            Self::Organization => Some("org.id"),
            Self::Shared => None,
        }
    }
}

/// What a Clerk shortcode renders for a user who lacks the identity it names, unless the
/// workspace's policy sets `clerkMissingIdentityValue`: no namespace name or label value can
/// equal it (those begin and end with a letter or digit).
pub const DEFAULT_MISSING_IDENTITY_VALUE: &str = "_none_";

/// The Clerk template output after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidClerkOutput {
    /// Template name in Clerk.
    pub name: String,
    /// Token lifetime in seconds.
    pub lifetime_seconds: i64,
    /// Allowed clock skew in seconds.
    pub allowed_clock_skew_seconds: i64,
    /// Deletion policy.
    pub deletion_policy: DeletionPolicy,
    /// Whose requests share a rate limit.
    pub rate_limit_key: RateLimitKey,
    /// The JWT `name` of the template's tokens, parsed (shortcodes without the fallbacks the
    /// build stage adds).
    pub token_name: shortcode::Template,
    /// What a shortcode renders for a missing identity (the workspace's, set by
    /// [`crate::core::policy::apply`]; the default before).
    pub missing_identity_value: String,
    /// The shortcode the workspace policy maps to each param it pins (set by
    /// [`crate::core::policy::apply`]): the template carries it, never the namespace's value.
    pub pinned: BTreeMap<String, shortcode::Shortcode>,
}

/// Health-check settings after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Probe interval; zero disables.
    pub interval: SignedDuration,
    /// Probe timeout.
    pub timeout: SignedDuration,
    /// Extra query parameters.
    pub params: BTreeMap<String, String>,
    /// Stand-ins for shortcodes in probe tokens.
    pub sample_params: BTreeMap<String, String>,
}

/// A TenantAccess that may be acted on: defaults applied, every rule checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedAccess {
    /// Namespace of the TenantAccess (where its outputs go).
    pub namespace: String,
    /// Name of the TenantAccess.
    pub name: String,
    /// Workspace kind.
    pub workspace_kind: WorkspaceKind,
    /// Workspace name.
    pub workspace_name: String,
    /// JWT `name`.
    pub token_name: String,
    /// Scopes.
    pub scopes: Vec<ValidScope>,
    /// `limits.rps`.
    pub rps: Option<i64>,
    /// Token lifetime.
    pub lifetime: SignedDuration,
    /// Renewal lead time.
    pub renew_before: SignedDuration,
    /// Secret output.
    pub secret: Option<ValidSecretOutput>,
    /// Clerk template output.
    pub clerk_template: Option<ValidClerkOutput>,
    /// Health checks.
    pub health: HealthSettings,
    /// Whether any fixed param holds a Clerk shortcode.
    pub has_shortcodes: bool,
    /// Params the workspace policy pins in this namespace (its required params), with their
    /// values: set by [`crate::core::policy::apply`], empty before. Probe tokens always carry these
    /// values, whatever `healthCheck.sampleParams` says.
    pub pinned_params: BTreeMap<String, String>,
    /// What the workspace's policy does with a granted pipe that does not filter by a pinned
    /// param: set by [`crate::core::policy::apply`], `Warn` before.
    pub isolation_policy: crate::core::isolation_report::IsolationPolicy,
    /// Legal but risky choices worth telling the user about.
    pub warnings: Vec<String>,
}

/// The default token name: `<namespace>_<name>`. Unique per TenantAccess, since neither a
/// namespace nor a name can contain `_`.
#[must_use]
pub fn default_token_name(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

/// Validates a TenantAccess spec.
///
/// # Errors
/// [`InvalidSpec`] listing every problem found.
pub fn validate_tenant_access(
    namespace: &str,
    name: &str,
    spec: &TenantAccessSpec,
) -> Result<ValidatedAccess, InvalidSpec> {
    let mut v = Validator::default();

    let workspace_kind = match spec.workspace_ref.kind.as_deref() {
        None | Some(KIND_WORKSPACE) => WorkspaceKind::Namespaced,
        Some(KIND_CLUSTER_WORKSPACE) => WorkspaceKind::Cluster,
        Some(other) => {
            v.error(
                "spec.workspaceRef.kind",
                format!(
                    "{other:?} is not a workspace kind: use TinybirdWorkspace or ClusterTinybirdWorkspace"
                ),
            );
            WorkspaceKind::Namespaced
        }
    };
    if !is_dns_subdomain(&spec.workspace_ref.name) {
        v.error(
            "spec.workspaceRef.name",
            format!("{:?} is not a valid resource name: name an existing workspace", spec.workspace_ref.name),
        );
    }

    let has_secret_output = spec.secret.is_some();
    // A name holding shortcodes (Clerk-only) is parsed once: its template is the Clerk output's.
    let (token_name, templated_name) = match &spec.token_name {
        Some(token_name) if shortcode::contains_shortcode(token_name) => {
            v.templated_token_name(token_name, has_secret_output)
        }
        Some(token_name) => {
            if !is_token_name(token_name) {
                v.error(
                    "spec.tokenName",
                    format!("{token_name:?} may use only letters, digits, '_', '-' and '.' (1 to 256 characters); or omit it for the default {:?}", default_token_name(namespace, name)),
                );
            }
            (token_name.clone(), None)
        }
        None => (default_token_name(namespace, name), None),
    };

    if spec.scopes.is_empty() {
        v.error(
            "spec.scopes",
            "at least one scope is required, e.g. [{resource: top_pages, fixedParams: {org: acme}}]",
        );
    }
    // Past the limit nothing of the scopes is looked at: the cost of a hostile object stays
    // bounded (the CRD schema refuses it too; this is for objects it let through).
    let counted_scopes = if spec.scopes.len() > MAX_SCOPES {
        v.error(
            "spec.scopes",
            format!(
                "{} scopes: at most {MAX_SCOPES} are allowed; split the access into several TenantAccesses",
                spec.scopes.len()
            ),
        );
        0
    } else {
        spec.scopes.len()
    };
    let scopes: Vec<ValidScope> = spec
        .scopes
        .iter()
        .take(counted_scopes)
        .enumerate()
        .filter_map(|(i, scope)| v.scope(i, scope, has_secret_output))
        .collect();
    let mut listed = HashSet::with_capacity(scopes.len());
    for (i, scope) in scopes.iter().enumerate() {
        if !listed.insert((scope.scope_type, scope.resource.as_str())) {
            v.error(
                format!("spec.scopes[{i}]"),
                format!(
                    "{} {:?} is listed twice: merge the two scopes into one",
                    scope.scope_type, scope.resource
                ),
            );
        }
    }
    let has_shortcodes = v.shortcodes_seen;

    let rps = spec.limits.as_ref().and_then(|l| l.rps);
    if let Some(rps) = rps
        && rps < 1
    {
        v.error(
            "spec.limits.rps",
            format!("{rps} is not a rate: use 1 or more, or omit limits.rps for no limit"),
        );
    }

    let lifetime = v.duration("spec.lifetime", spec.lifetime.as_deref(), DEFAULT_LIFETIME);
    if lifetime < MIN_LIFETIME {
        v.error("spec.lifetime", format!("{} is too short: use at least 1m", duration::format(lifetime)));
    }
    let renew_before = v.duration(
        "spec.renewBefore",
        spec.renew_before.as_deref(),
        SignedDuration::from_millis(lifetime.as_millis().try_into().unwrap_or(0) / 3),
    );
    if spec.renew_before.is_some() {
        if renew_before >= lifetime {
            v.error(
                "spec.renewBefore",
                format!(
                    "{} is not shorter than lifetime {}: the token would be renewed as soon as it is issued; use e.g. {}",
                    duration::format(renew_before),
                    duration::format(lifetime),
                    duration::format(SignedDuration::from_secs(lifetime.as_secs() / 3))
                ),
            );
        } else if renew_before < MIN_RENEW_BEFORE {
            v.error(
                "spec.renewBefore",
                format!(
                    "{} leaves no time to renew before expiry: use at least 10s",
                    duration::format(renew_before)
                ),
            );
        }
    }

    let secret = spec.secret.as_ref().map(|output| v.secret_output(name, output));
    let clerk_template = spec
        .clerk_template
        .as_ref()
        .map(|output| v.clerk_output(namespace, name, output, &token_name, templated_name.as_ref()));
    if secret.is_none() && clerk_template.is_none() {
        v.error("spec", "no output: set spec.secret (a signed token in a Secret), spec.clerkTemplate (a Clerk JWT template), or both");
    }
    let health = v.health(spec);

    let Validator { errors, warnings, .. } = v;
    if !errors.is_empty() {
        return Err(InvalidSpec(errors));
    }
    Ok(ValidatedAccess {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        workspace_kind,
        workspace_name: spec.workspace_ref.name.clone(),
        token_name,
        scopes,
        rps,
        lifetime,
        renew_before,
        secret,
        clerk_template,
        health,
        has_shortcodes,
        pinned_params: BTreeMap::new(),
        isolation_policy: crate::core::isolation_report::IsolationPolicy::Warn,
        warnings,
    })
}

/// Longest JWT `name` the operator signs or templates (rendered, for a Clerk template).
pub const MAX_TOKEN_NAME_BYTES: usize = 256;

fn is_token_name(name: &str) -> bool {
    (1..=MAX_TOKEN_NAME_BYTES).contains(&name.len()) && name.bytes().all(is_token_name_byte)
}

/// The alphabet of token names (and of what may be rendered into one).
pub(crate) fn is_token_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Why a shortcode the end user writes cannot name a tenant or a rate-limit bucket.
fn user_writable_problem(code: &shortcode::Shortcode) -> String {
    format!(
        "{{{{{}}}}} is written by the signed-in user (Clerk lets users edit unsafe_metadata from the browser, and their own names): each user would choose this value; use {{{{user.public_metadata...}}}} or {{{{org.public_metadata...}}}}, which only your backend writes, or an id ({{{{user.id}}}}, {{{{org.id}}}})",
        code.path
    )
}

fn is_reserved_probe_param(name: &str) -> bool {
    name.starts_with('_') || RESERVED_PROBE_PARAMS.iter().any(|reserved| reserved.eq_ignore_ascii_case(name))
}

fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
    shortcodes_seen: bool,
}

impl Validator {
    fn error(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.errors.push(FieldError { field: field.into(), problem: problem.into() });
    }

    fn duration(&mut self, field: &str, text: Option<&str>, default: SignedDuration) -> SignedDuration {
        match text.map(duration::parse) {
            None => default,
            Some(Ok(parsed)) => parsed,
            Some(Err(error)) => {
                self.error(field, error.to_string());
                default
            }
        }
    }

    fn scope(&mut self, i: usize, scope: &Scope, has_secret_output: bool) -> Option<ValidScope> {
        let field = format!("spec.scopes[{i}]");
        let scope_type = match scope.scope_type.as_deref() {
            None => SCOPE_PIPES_READ,
            Some(t) => {
                if let Some(known) = SCOPE_TYPES.iter().find(|known| **known == t) {
                    known
                } else {
                    let hint = if t == "DATASOURCES:APPEND" {
                        "tokens issued by this operator only read"
                    } else {
                        "use PIPES:READ or DATASOURCES:READ"
                    };
                    self.error(
                        format!("{field}.type"),
                        format!("{t:?} is not a supported scope type: {hint}"),
                    );
                    return None;
                }
            }
        };
        let resource = scope.resource.trim();
        if resource.is_empty() {
            self.error(
                format!("{field}.resource"),
                "must name a pipe (PIPES:READ) or data source (DATASOURCES:READ)",
            );
        } else if resource.len() > MAX_RESOURCE_BYTES {
            self.error(
                format!("{field}.resource"),
                format!("is {} bytes long: a resource name has at most {MAX_RESOURCE_BYTES}", resource.len()),
            );
        } else if resource != scope.resource || !crate::api::limits::is_tinybird_name(resource) {
            // Only Tinybird's own alphabet: a `.json` suffix would make the admin-token
            // existence check a billed query with admin rights, a `/` another path.
            self.error(
                format!("{field}.resource"),
                format!(
                    "{:?} is not a Tinybird resource name (letters, digits, '_'; no '.', '-', '/' or spaces, no format suffix such as .json)",
                    scope.resource
                ),
            );
        }

        let mut fixed_params = BTreeMap::new();
        if scope_type == SCOPE_DATASOURCES_READ && !scope.fixed_params.is_empty() {
            self.error(
                format!("{field}.fixedParams"),
                "DATASOURCES:READ ignores fixedParams, so the token would read every row: pin the tenant with filter instead",
            );
        } else if scope.fixed_params.len() > MAX_FIXED_PARAMS {
            self.error(
                format!("{field}.fixedParams"),
                format!("{} params: at most {MAX_FIXED_PARAMS} are allowed", scope.fixed_params.len()),
            );
        } else {
            for (param, value) in &scope.fixed_params {
                if let Some(value) =
                    self.fixed_param(&format!("{field}.fixedParams.{param}"), param, value, has_secret_output)
                {
                    fixed_params.insert(param.clone(), value);
                }
            }
        }

        let filter = match (&scope.filter, scope_type) {
            (None, _) => None,
            (Some(_), SCOPE_PIPES_READ) => {
                self.error(
                    format!("{field}.filter"),
                    "a filter applies only to DATASOURCES:READ; pin a pipe's rows with fixedParams instead",
                );
                None
            }
            (Some(filter), _) if filter.trim().is_empty() => {
                self.error(
                    format!("{field}.filter"),
                    "is empty: write a SQL condition such as org = 'acme', or remove it",
                );
                None
            }
            (Some(filter), _) if shortcode::contains_shortcode(filter) => {
                self.error(
                    format!("{field}.filter"),
                    "Clerk shortcodes are not allowed in a SQL filter: Clerk inserts values unescaped (SQL injection)",
                );
                None
            }
            (Some(filter), _) => match Filter::parse(filter) {
                Ok(parsed) => Some(parsed),
                Err(error) => {
                    self.error(format!("{field}.filter"), error.to_string());
                    None
                }
            },
        };
        Some(ValidScope { scope_type, resource: scope.resource.clone(), fixed_params, filter })
    }

    fn fixed_param(
        &mut self,
        field: &str,
        param: &str,
        value: &serde_json::Value,
        has_secret_output: bool,
    ) -> Option<serde_json::Value> {
        use serde_json::Value;
        if param.len() > MAX_PARAM_NAME_BYTES || !is_param_name(param) {
            self.error(field, format!("{:?} is not a pipe parameter name (letters, digits and '_', not starting with a digit, at most {MAX_PARAM_NAME_BYTES} bytes)", crate::core::redact::prefix(param, 80)));
            return None;
        }
        match value {
            Value::Null => {
                self.error(
                    field,
                    "is null: a missing tenant value makes `defined(...)` filters fail open; give a value",
                );
                None
            }
            Value::String(text) if text.len() > MAX_FIXED_PARAM_VALUE_BYTES => {
                self.error(
                    field,
                    format!(
                        "is {} bytes long: a fixed param value has at most {MAX_FIXED_PARAM_VALUE_BYTES}",
                        text.len()
                    ),
                );
                None
            }
            Value::String(text) if text.trim().is_empty() => {
                self.error(
                    field,
                    "is empty: an empty tenant value can match other tenants' rows; give a value",
                );
                None
            }
            Value::String(text) if shortcode::contains_shortcode(text) => {
                let codes = match shortcode::parse_all(text) {
                    Ok(codes) => codes,
                    Err(error) => {
                        self.error(field, error.to_string());
                        return None;
                    }
                };
                if let Some(code) = codes.iter().find(|code| code.is_user_writable()) {
                    self.error(field, user_writable_problem(code));
                    return None;
                }
                self.shortcodes_seen = true;
                if has_secret_output {
                    self.error(
                        field,
                        format!("{text:?} is a Clerk shortcode, which only Clerk can fill per session: a Secret token needs a literal value (or remove spec.secret and keep spec.clerkTemplate)"),
                    );
                    return None;
                }
                Some(value.clone())
            }
            Value::String(_) | Value::Bool(_) => Some(value.clone()),
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Some(value.clone()),
            Value::Number(_) | Value::Array(_) | Value::Object(_) => {
                self.error(field, "must be a string, number or boolean");
                None
            }
        }
    }

    fn secret_output(&mut self, name: &str, output: &crate::api::SecretOutput) -> ValidSecretOutput {
        let secret_name = output.name.clone().unwrap_or_else(|| name.to_owned());
        if !is_dns_subdomain(&secret_name) {
            self.error(
                "spec.secret.name",
                format!("{secret_name:?} is not a valid Secret name: lowercase letters, digits, '-' and '.', at most 253 characters"),
            );
        }
        for (what, count) in [("labels", output.labels.len()), ("annotations", output.annotations.len())] {
            if count > MAX_SECRET_METADATA_ENTRIES {
                self.error(
                    format!("spec.secret.{what}"),
                    format!("{count} entries: at most {MAX_SECRET_METADATA_ENTRIES} are allowed"),
                );
                return ValidSecretOutput {
                    name: secret_name,
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                    rollout_restart_targets: Vec::new(),
                    restart: crate::core::restarts::RestartPolicy::default(),
                };
            }
        }
        if output.rollout_restart_targets.len() > MAX_ROLLOUT_TARGETS {
            self.error(
                "spec.secret.rolloutRestartTargets",
                format!(
                    "{} targets: at most {MAX_ROLLOUT_TARGETS} are allowed",
                    output.rollout_restart_targets.len()
                ),
            );
        }
        for (key, value) in &output.labels {
            let field = format!("spec.secret.labels[{key}]");
            if !is_qualified_name(key) {
                self.error(&field, "is not a valid label key");
            } else if is_reserved_key(key) {
                self.error(&field, "is set by the operator and cannot be overridden");
            } else if !is_label_value(value) {
                self.error(
                    &field,
                    format!(
                        "{value:?} is not a valid label value (at most 63 letters, digits, '-', '_', '.')"
                    ),
                );
            }
        }
        for (key, value) in &output.annotations {
            let field = format!("spec.secret.annotations[{key}]");
            if !is_qualified_name(key) {
                self.error(&field, "is not a valid annotation key");
            } else if is_reserved_key(key) {
                self.error(&field, "is set by the operator and cannot be overridden");
            } else if value.len() > MAX_ANNOTATION_VALUE_BYTES {
                self.error(
                    &field,
                    format!(
                        "is {} bytes long: at most {MAX_ANNOTATION_VALUE_BYTES} are allowed",
                        value.len()
                    ),
                );
            }
        }
        let mut rollout_restart_targets = Vec::new();
        for (i, target) in output.rollout_restart_targets.iter().take(MAX_ROLLOUT_TARGETS).enumerate() {
            let field = format!("spec.secret.rolloutRestartTargets[{i}]");
            if !matches!(target.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") {
                self.error(
                    format!("{field}.kind"),
                    format!(
                        "{:?} cannot be restarted: use Deployment, StatefulSet or DaemonSet",
                        target.kind
                    ),
                );
            } else if !is_dns_subdomain(&target.name) {
                self.error(
                    format!("{field}.name"),
                    format!("{:?} is not a valid workload name", target.name),
                );
            } else {
                rollout_restart_targets.push((target.kind.clone(), target.name.clone()));
            }
        }
        let on = match output.restart_on.as_deref() {
            None => crate::core::restarts::RestartOn::default(),
            Some(text) => crate::core::restarts::RestartOn::parse(text).unwrap_or_else(|| {
                self.error(
                    "spec.secret.restartOn",
                    format!(
                        "{:?} is not one of EveryToken, KeyOrClaimsChange",
                        crate::core::redact::prefix(text, 40)
                    ),
                );
                crate::core::restarts::RestartOn::default()
            }),
        };
        let min_interval = self.duration(
            "spec.secret.restartMinInterval",
            output.restart_min_interval.as_deref(),
            SignedDuration::ZERO,
        );
        ValidSecretOutput {
            name: secret_name,
            labels: output.labels.clone(),
            annotations: output.annotations.clone(),
            rollout_restart_targets,
            restart: crate::core::restarts::RestartPolicy {
                on,
                min_interval: std::time::Duration::try_from(min_interval).unwrap_or_default(),
            },
        }
    }

    /// A `tokenName` with shortcodes: allowed for a Clerk template only. Returns the name probe
    /// tokens carry (each shortcode filled with the missing-identity value) and the parsed name
    /// (`None` when it does not parse: refused).
    fn templated_token_name(
        &mut self,
        token_name: &str,
        has_secret_output: bool,
    ) -> (String, Option<shortcode::Template>) {
        let Some(template) = self.clerk_token_name(token_name) else {
            return (token_name.to_owned(), None);
        };
        if has_secret_output {
            self.error(
                "spec.tokenName",
                "holds a Clerk shortcode, which only Clerk can fill per session: a Secret token needs a literal name (keep the shortcode in a Clerk-only TenantAccess, or set spec.clerkTemplate.rateLimitKey: User to give each user a bucket)",
            );
        }
        (template.fill(DEFAULT_MISSING_IDENTITY_VALUE), Some(template))
    }

    /// Parses a token name holding shortcodes and checks its parts.
    fn clerk_token_name(&mut self, text: &str) -> Option<shortcode::Template> {
        let field = "spec.tokenName";
        let template = match shortcode::Template::parse(text) {
            Ok(template) => template,
            Err(error) => {
                self.error(field, error.to_string());
                return None;
            }
        };
        if !template.literals().all(|literal| literal.bytes().all(is_token_name_byte)) {
            self.error(
                field,
                "outside its shortcodes a token name may use only letters, digits, '_', '-' and '.'",
            );
        }
        for code in template.shortcodes() {
            if code.is_user_writable() {
                self.error(field, user_writable_problem(code));
            }
        }
        Some(template)
    }

    fn clerk_output(
        &mut self,
        namespace: &str,
        name: &str,
        output: &crate::api::ClerkTemplateOutput,
        token_name: &str,
        templated_name: Option<&shortcode::Template>,
    ) -> ValidClerkOutput {
        // The default joins namespace and name with `_`, which neither can contain (a namespace
        // is a DNS label, a name a DNS subdomain): two TenantAccesses never get the same default
        // (`acme` + `corp-dash` and `acme-corp` + `dash` would both be `acme-corp-dash` with a
        // `-`). Not `/`: Clerk puts the template name in a URL path when minting a token.
        let template_name = output.name.clone().unwrap_or_else(|| format!("{namespace}_{name}"));
        if template_name.trim().is_empty() || template_name.trim() != template_name {
            self.error(
                "spec.clerkTemplate.name",
                format!("{template_name:?} is not a usable template name (no surrounding spaces, not empty)"),
            );
        }
        let lifetime = self.whole_seconds(
            "spec.clerkTemplate.lifetime",
            output.lifetime.as_deref(),
            60,
            CLERK_LIFETIME_RANGE,
        );
        let allowed_clock_skew = self.whole_seconds(
            "spec.clerkTemplate.allowedClockSkew",
            output.allowed_clock_skew.as_deref(),
            5,
            CLERK_CLOCK_SKEW_RANGE,
        );
        let deletion_policy = match output.deletion_policy.as_deref() {
            None | Some("Delete") => DeletionPolicy::Delete,
            Some("Retain") => DeletionPolicy::Retain,
            Some(other) => {
                self.error(
                    "spec.clerkTemplate.deletionPolicy",
                    format!("{other:?} is not a deletion policy: use Delete or Retain"),
                );
                DeletionPolicy::Delete
            }
        };
        let rate_limit_key = match output.rate_limit_key.as_deref() {
            None | Some("User") => RateLimitKey::User,
            Some("Organization") => RateLimitKey::Organization,
            Some("Shared") => RateLimitKey::Shared,
            Some(other) => {
                self.error(
                    "spec.clerkTemplate.rateLimitKey",
                    format!(
                        "{:?} is not a rate-limit key: use User, Organization or Shared",
                        crate::core::redact::prefix(other, 40)
                    ),
                );
                RateLimitKey::User
            }
        };
        let token_name = self.clerk_template_token_name(token_name, templated_name, output, rate_limit_key);
        ValidClerkOutput {
            name: template_name,
            lifetime_seconds: lifetime,
            allowed_clock_skew_seconds: allowed_clock_skew,
            deletion_policy,
            rate_limit_key,
            token_name,
            missing_identity_value: DEFAULT_MISSING_IDENTITY_VALUE.to_owned(),
            pinned: BTreeMap::new(),
        }
    }

    /// The JWT `name` of a Clerk template's tokens: `tokenName` as written when it holds
    /// shortcodes, else `tokenName` with the rate-limit key's shortcode appended.
    fn clerk_template_token_name(
        &mut self,
        token_name: &str,
        templated_name: Option<&shortcode::Template>,
        output: &crate::api::ClerkTemplateOutput,
        rate_limit_key: RateLimitKey,
    ) -> shortcode::Template {
        use shortcode::{Segment, Shortcode, Template};
        let template = match templated_name {
            Some(template) => {
                if output.rate_limit_key.is_some() {
                    self.error(
                        "spec.clerkTemplate.rateLimitKey",
                        "spec.tokenName holds shortcodes, which decide whose requests share a rate limit: remove rateLimitKey or the shortcodes",
                    );
                }
                template.clone()
            }
            None => match rate_limit_key.shortcode_path() {
                Some(path) => Template(vec![
                    Segment::Literal(format!("{token_name}_")),
                    Segment::Code(Shortcode { path: path.to_owned(), fallback: None }),
                ]),
                None => Template(vec![Segment::Literal(token_name.to_owned())]),
            },
        };
        let longest = template.max_rendered_len(DEFAULT_MISSING_IDENTITY_VALUE);
        if longest > MAX_TOKEN_NAME_BYTES {
            self.error(
                "spec.tokenName",
                format!(
                    "the Clerk template's token name may render {longest} bytes (each shortcode counted at {} bytes), over Tinybird's {MAX_TOKEN_NAME_BYTES}: shorten it",
                    shortcode::MAX_RENDERED_SHORTCODE_BYTES
                ),
            );
        }
        template
    }

    fn whole_seconds(
        &mut self,
        field: &str,
        text: Option<&str>,
        default: i64,
        (min, max): (i64, i64),
    ) -> i64 {
        let parsed = self.duration(field, text, SignedDuration::from_secs(default));
        if parsed.subsec_nanos() != 0 {
            self.error(field, "Clerk counts in whole seconds: drop the milliseconds");
        }
        let seconds = parsed.as_secs();
        if !(min..=max).contains(&seconds) {
            self.error(
                field,
                format!("{} is outside Clerk's range {}s..{}s", duration::format(parsed), min, max),
            );
        }
        seconds
    }

    fn health(&mut self, spec: &TenantAccessSpec) -> HealthSettings {
        let health = spec.health_check.clone().unwrap_or_default();
        let interval =
            self.duration("spec.healthCheck.interval", health.interval.as_deref(), DEFAULT_HEALTH_INTERVAL);
        // The default timeout fits short intervals too: at most half the interval.
        let default_timeout = if interval.is_zero() {
            DEFAULT_HEALTH_TIMEOUT
        } else {
            DEFAULT_HEALTH_TIMEOUT.min(interval / 2)
        };
        let timeout = self.duration("spec.healthCheck.timeout", health.timeout.as_deref(), default_timeout);
        if !interval.is_zero() && interval < SignedDuration::from_secs(5) {
            self.error("spec.healthCheck.interval", "probing more often than every 5s spends the tenant's rate limit: use 5s or more, or 0 to disable");
        }
        if timeout.is_zero() || timeout > SignedDuration::from_mins(1) {
            self.error("spec.healthCheck.timeout", "must be between 1ms and 1m");
        } else if !interval.is_zero() && timeout >= interval {
            self.error("spec.healthCheck.timeout", "must be shorter than spec.healthCheck.interval");
        }
        // What a tenant may make the operator send: plain pipe parameters, a few and short. A
        // reserved name would turn the probe into a query of the tenant's choosing; a fixed
        // param is the token's to set.
        let fixed: Vec<&str> =
            spec.scopes.iter().flat_map(|scope| scope.fixed_params.keys()).map(String::as_str).collect();
        for (map, field) in [(&health.params, "params"), (&health.sample_params, "sampleParams")] {
            if map.len() > MAX_PROBE_PARAMS {
                self.error(
                    format!("spec.healthCheck.{field}"),
                    format!("has {} entries: at most {MAX_PROBE_PARAMS}", map.len()),
                );
                continue;
            }
            for (param, value) in map {
                // A name too long to be one is not repeated whole.
                let shown = crate::core::redact::prefix(param, 64);
                let at = format!("spec.healthCheck.{field}.{shown}");
                if !is_param_name(param) || param.len() > MAX_PROBE_PARAM_BYTES {
                    self.error(at, "is not a pipe parameter name (letters, digits and '_', at most 256)");
                } else if field == "params" && is_reserved_probe_param(param) {
                    self.error(at, format!("{param:?} is reserved by Tinybird (q, token, format, pipeline, from, debug, explain and names starting with '_' change what a pipe endpoint runs or answers): a probe sends pipe parameters only"));
                } else if field == "params" && fixed.contains(&param.as_str()) {
                    self.error(at, "is a fixed param of a scope: the token sets it, so a probe never sends it; remove it here");
                } else if value.trim().is_empty() {
                    self.error(at, "is empty: give a value");
                } else if value.len() > MAX_PROBE_PARAM_BYTES {
                    self.error(at, format!("is {} bytes long: at most {MAX_PROBE_PARAM_BYTES}", value.len()));
                } else if value.chars().any(char::is_control) {
                    self.error(at, "contains a control character (line break, tab...): give a plain value");
                }
            }
        }
        HealthSettings { interval, timeout, params: health.params, sample_params: health.sample_params }
    }
}

fn is_reserved_key(key: &str) -> bool {
    key == LABEL_MANAGED_BY || key == LABEL_TENANT_ACCESS || key.starts_with("tenantaccess.dev/")
}

#[cfg(test)]
mod tests;
