//! Workspace policy: what a TenantAccess may ask of a workspace. Pure: the same function serves
//! the controller and `tenant-access render`, so both agree on every case.
//!
//! A required param is forced into every PIPES:READ scope's `fixed_params` and ANDed, as an
//! equality with a string literal, to every DATASOURCES:READ filter: to its parsed tree, outside
//! the tenant's own condition (see [`crate::core::filter`]). This is what makes a shared workspace
//! safe: a team that may create TenantAccess in namespace `acme` can never mint a token for
//! another tenant's rows.

use std::collections::BTreeMap;
use std::fmt;

use jiff::SignedDuration;

use crate::api::{SCOPE_PIPES_READ, WorkspacePolicy};
use crate::core::duration;
use crate::core::filter::Filter;
use crate::core::k8s_name_rules::is_label_value;
use crate::core::shortcode::{self, Shortcode};
use crate::core::validate::{DEFAULT_MISSING_IDENTITY_VALUE, ValidatedAccess};

/// Why a TenantAccess is refused by its workspace's policy: one line naming what and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyViolation(pub Vec<String>);

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// The namespace a TenantAccess lives in, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct NamespaceFacts<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its labels; `None` when they cannot be read (single-namespace install).
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// Checks a validated TenantAccess against a policy and returns it with the required params
/// injected and `maxRps` applied.
///
/// # Errors
/// [`PolicyViolation`] listing every rule broken.
pub fn apply(
    mut access: ValidatedAccess,
    policy: Option<&WorkspacePolicy>,
    workspace: &str,
    namespace: NamespaceFacts<'_>,
) -> Result<ValidatedAccess, PolicyViolation> {
    let default = WorkspacePolicy::default();
    let policy = policy.unwrap_or(&default);
    let mut problems = Vec::new();

    // Scope types: PIPES:READ unless the policy allows more.
    let allowed_types: Vec<&str> = if policy.allowed_scope_types.is_empty() {
        vec![SCOPE_PIPES_READ]
    } else {
        policy.allowed_scope_types.iter().map(String::as_str).collect()
    };
    for (i, scope) in access.scopes.iter().enumerate() {
        if !allowed_types.contains(&scope.scope_type) {
            problems.push(format!(
                "spec.scopes[{i}].type: {} is not allowed by workspace {workspace} (allowedScopeTypes: {})",
                scope.scope_type,
                allowed_types.join(", ")
            ));
        }
        if !policy.allowed_resources.is_empty()
            && !policy.allowed_resources.iter().any(|g| glob_matches(g, &scope.resource))
        {
            problems.push(format!(
                "spec.scopes[{i}].resource: {:?} is not allowed by workspace {workspace} (allowedResources: {})",
                scope.resource,
                policy.allowed_resources.join(", ")
            ));
        }
    }

    match max_lifetime(policy, workspace) {
        Err(problem) => problems.push(problem),
        Ok(None) => {}
        Ok(Some(max)) => {
            if access.lifetime > max {
                problems.push(format!(
                    "spec.lifetime: {} exceeds the workspace maximum {}",
                    duration::format(access.lifetime),
                    duration::format(max)
                ));
            }
            if let Some(clerk) = &access.clerk_template
                && SignedDuration::from_secs(clerk.lifetime_seconds) > max
            {
                problems.push(format!(
                    "spec.clerkTemplate.lifetime: {}s exceeds the workspace maximum {}",
                    clerk.lifetime_seconds,
                    duration::format(max)
                ));
            }
        }
    }

    // A shared workspace must not let one namespace take another's rate-limit bucket.
    if !policy.required_params.is_empty() || policy.allowed_namespaces.is_some() {
        let prefix = format!("{}_", namespace.name);
        if !access.token_name.starts_with(&prefix) {
            problems.push(format!(
                "spec.tokenName: {:?} must start with {prefix:?} on workspace {workspace} (a shared workspace keeps each namespace in its own rate-limit buckets)",
                access.token_name
            ));
        }
    }

    if let Some(max) = policy.max_scopes
        && access.scopes.len() > max
    {
        problems.push(format!(
            "spec.scopes: {} scopes exceed the workspace maximum {max} (spec.policy.maxScopes of workspace {workspace})",
            access.scopes.len()
        ));
    }

    if let Some(max) = policy.max_rps {
        match access.rps {
            None => access.rps = Some(max),
            Some(rps) if rps > max => {
                problems.push(format!("spec.limits.rps: {rps} exceeds the workspace maximum {max}"));
            }
            Some(_) => {}
        }
    }

    match missing_identity_value(policy, workspace) {
        Ok(value) => {
            if let Some(clerk) = &mut access.clerk_template {
                clerk.missing_identity_value = value.to_owned();
            }
        }
        Err(problem) => problems.push(problem),
    }

    match crate::core::isolation_report::IsolationPolicy::parse(policy.pipe_isolation.as_deref()) {
        Some(mode) => access.isolation_policy = mode,
        None => problems.push(format!(
            "workspace {workspace} spec.policy.pipeIsolation: {:?} is not a pipe isolation policy: use Enforce or Warn",
            crate::core::redact::prefix(policy.pipe_isolation.as_deref().unwrap_or_default(), 40)
        )),
    }

    for (param, source) in &policy.required_params {
        match required_value(param, source, namespace, workspace) {
            Err(problem) => problems.push(problem),
            Ok(value) => force_param(&mut access, param, &value, source, workspace, &mut problems),
        }
    }
    if let Some(clerk) = &access.clerk_template {
        if access.rps.is_none() {
            access.warnings.push(
                "spec.clerkTemplate: no limits.rps, so every signed-in user may query the granted pipes without limit (and run up the Tinybird bill): set limits.rps (per user with the default rateLimitKey: User)".to_owned(),
            );
        }
        // Not pinned by the workspace: the team's choice, but any signed-in user of the Clerk
        // instance may mint the template by name and get that value.
        let literals: Vec<String> = access
            .scopes
            .iter()
            .flat_map(|scope| scope.fixed_params.iter())
            .filter(|(param, value)| {
                !clerk.pinned.contains_key(*param)
                    && value.as_str().is_none_or(|t| !shortcode::contains_shortcode(t))
            })
            .map(|(param, _)| param.clone())
            .collect();
        if !literals.is_empty() {
            access.warnings.push(format!(
                "spec.clerkTemplate: fixedParams {} are fixed values in the template, the same for every signed-in user of the Clerk instance (any of them may ask for the template by name): use a shortcode such as {{{{org.id}}}} for a tenant's value, or a workspace policy that pins it",
                literals.join(", ")
            ));
        }
    }

    if problems.is_empty() { Ok(access) } else { Err(PolicyViolation(problems)) }
}

/// `spec.policy.clerkMissingIdentityValue`, or the default, when no tenant value can equal it.
fn missing_identity_value<'a>(policy: &'a WorkspacePolicy, workspace: &str) -> Result<&'a str, String> {
    let Some(value) = policy.clerk_missing_identity_value.as_deref() else {
        return Ok(DEFAULT_MISSING_IDENTITY_VALUE);
    };
    let usable = (2..=63).contains(&value.len())
        // It lands in token names too: their alphabet.
        && value.bytes().all(crate::core::validate::is_token_name_byte)
        && !could_be_a_tenant_value(value);
    if usable {
        Ok(value)
    } else {
        Err(format!(
            "workspace {workspace} spec.policy.clerkMissingIdentityValue: {:?} must be 2 to 63 letters, digits, '_', '-' or '.', starting or ending with '_', '-' or '.' (so no namespace name or label value can equal it), e.g. {DEFAULT_MISSING_IDENTITY_VALUE:?}",
            crate::core::redact::prefix(value, 80)
        ))
    }
}

/// Whether a value could be a tenant's pinned value: a namespace name or a namespace label value
/// (the two sources of required params), now or once some namespace is labelled so.
fn could_be_a_tenant_value(value: &str) -> bool {
    !value.is_empty() && is_label_value(value)
}

/// Why a shortcode's own fallback is refused for pinned param `param`, if it is.
fn tenant_like_fallback(code: &Shortcode, param: &str) -> Option<String> {
    let fallback = code.fallback.as_deref().filter(|f| could_be_a_tenant_value(f))?;
    Some(format!(
        "the fallback {fallback:?} could be a tenant's {param} (a namespace name or label value): users without the identity would read that tenant's rows"
    ))
}

/// A required param's `clerkShortcode`, when it is one shortcode that neither the end user
/// writes nor falls back to a possible tenant value.
fn pinned_shortcode(
    param: &str,
    source: &crate::api::RequiredParamSource,
    workspace: &str,
) -> Result<Option<Shortcode>, String> {
    let Some(text) = source.clerk_shortcode.as_deref() else { return Ok(None) };
    let at = format!("workspace {workspace} spec.policy.requiredParams.{param}.clerkShortcode");
    let code = shortcode::parse_single(text).map_err(|error| format!("{at}: {error}"))?;
    if code.is_user_writable() {
        return Err(format!(
            "{at}: {{{{{}}}}} is written by the signed-in user, who would choose their tenant: use {{{{org.id}}}}, {{{{org.slug}}}} or backend-written public_metadata",
            code.path
        ));
    }
    if let Some(problem) = tenant_like_fallback(&code, param) {
        return Err(format!(
            "{at}: {problem}; drop the fallback (the operator adds clerkMissingIdentityValue)"
        ));
    }
    Ok(Some(code))
}

/// Checks what of a policy the workspace itself gets wrong, whatever the TenantAccess: a
/// `maxLifetime` that is not a duration, a required param without exactly one source. (A
/// TenantAccess on such a workspace is refused with the same messages.)
///
/// # Errors
/// [`PolicyViolation`] listing every problem.
pub fn check(policy: &WorkspacePolicy, workspace: &str) -> Result<(), PolicyViolation> {
    let mut problems: Vec<String> = max_lifetime(policy, workspace).err().into_iter().collect();
    problems.extend(missing_identity_value(policy, workspace).err());
    for (param, source) in &policy.required_params {
        problems.extend(param_source(param, source, workspace).err());
        problems.extend(pinned_shortcode(param, source, workspace).err());
    }
    if problems.is_empty() { Ok(()) } else { Err(PolicyViolation(problems)) }
}

/// `spec.policy.maxLifetime`, parsed.
fn max_lifetime(policy: &WorkspacePolicy, workspace: &str) -> Result<Option<SignedDuration>, String> {
    policy
        .max_lifetime
        .as_deref()
        .map(duration::parse)
        .transpose()
        .map_err(|e| format!("workspace {workspace} spec.policy.maxLifetime: {e}"))
}

/// Where a required param's value comes from.
enum ParamSource<'a> {
    /// A label of the namespace.
    Label(&'a str),
    /// The namespace's name.
    Name,
}

/// A required param's source, when the policy sets exactly one.
fn param_source<'a>(
    param: &str,
    source: &'a crate::api::RequiredParamSource,
    workspace: &str,
) -> Result<ParamSource<'a>, String> {
    match (source.namespace_label.as_deref(), source.namespace_name) {
        (Some(label), None | Some(false)) => Ok(ParamSource::Label(label)),
        (None, Some(true)) => Ok(ParamSource::Name),
        _ => Err(format!(
            "workspace {workspace} spec.policy.requiredParams.{param}: set exactly one of namespaceLabel and namespaceName: true"
        )),
    }
}

/// The value a required param must have in this namespace.
fn required_value(
    param: &str,
    source: &crate::api::RequiredParamSource,
    namespace: NamespaceFacts<'_>,
    workspace: &str,
) -> Result<String, String> {
    match param_source(param, source, workspace)? {
        ParamSource::Label(label) => {
            let Some(labels) = namespace.labels else {
                return Err(format!(
                    "param {param:?} must come from namespace label {label:?}, which this operator cannot read (single-namespace install): refused"
                ));
            };
            match labels.get(label).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                Some(value) => Ok(value.to_owned()),
                None => Err(format!(
                    "param {param:?} must come from label {label:?} of namespace {}, which it lacks: ask the platform team to label the namespace",
                    namespace.name
                )),
            }
        }
        ParamSource::Name => Ok(namespace.name.to_owned()),
    }
}

/// Forces `param = value` into every scope, or records why the TenantAccess contradicts it. A
/// Clerk template gets the policy's shortcode for the param instead (set in
/// [`crate::core::validate::ValidClerkOutput::pinned`]): any signed-in user of the Clerk
/// instance may mint any template by name, so a template holding this namespace's value would
/// read its rows for everyone.
fn force_param(
    access: &mut ValidatedAccess,
    param: &str,
    value: &str,
    source: &crate::api::RequiredParamSource,
    workspace: &str,
    problems: &mut Vec<String>,
) {
    // Probes too: a probe token carries the pinned value, and nothing a probe sends may stand
    // in for it.
    access.pinned_params.insert(param.to_owned(), value.to_owned());
    if let Some(sample) = access.health.sample_params.get(param)
        && sample != value
    {
        problems.push(format!(
            "spec.healthCheck.sampleParams.{param}: {sample:?} is not allowed: workspace {workspace} pins {param} to {value:?} in this namespace, and probe tokens carry that value (omit it, or set {value:?})"
        ));
    }
    if access.health.params.contains_key(param) {
        problems.push(format!(
            "spec.healthCheck.params.{param}: workspace {workspace} pins {param} in this namespace, so probes never send it: remove it"
        ));
    }
    let clerk_code = if access.clerk_template.is_some() {
        pin_clerk_template(access, param, source, workspace, problems)
    } else {
        None
    };
    let tenant_condition = match Filter::equals(param, value) {
        Ok(condition) => Some(condition),
        Err(error) => {
            if access.scopes.iter().any(|scope| scope.scope_type != SCOPE_PIPES_READ) {
                problems.push(format!(
                    "workspace {workspace} spec.policy.requiredParams.{param}: cannot filter data sources by it: {error}"
                ));
            }
            None
        }
    };
    let literal = serde_json::Value::String(value.to_owned());
    for (i, scope) in access.scopes.iter_mut().enumerate() {
        if scope.scope_type != SCOPE_PIPES_READ {
            if let Some(condition) = &tenant_condition {
                // ANDed to the parsed tree: no text of the tenant's can reach around it.
                scope.filter = Some(match scope.filter.take() {
                    None => condition.clone(),
                    Some(filter) => filter.and(condition.clone()),
                });
            }
            continue;
        }
        let field = format!("spec.scopes[{i}].fixedParams.{param}");
        let Some(existing) = scope.fixed_params.get(param) else {
            scope.fixed_params.insert(param.to_owned(), literal.clone());
            continue;
        };
        let text = match existing {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if shortcode::contains_shortcode(&text) {
            // Validation let it through only without a Secret output: a Clerk-only access.
            if let Some(problem) = foreign_shortcode(&text, clerk_code.as_ref(), param, workspace) {
                problems.push(format!("{field}: {problem}"));
            }
            // Probe tokens sign the pinned value; the template gets the policy's shortcode.
            scope.fixed_params.insert(param.to_owned(), literal.clone());
        } else if clerk_code.is_some() {
            problems.push(format!(
                "{field}: {text:?} is not allowed in a Clerk template: any signed-in user may mint it by name, so workspace {workspace} has its templates carry {}; omit fixedParams.{param} (the Secret's token gets {value:?}, the template the shortcode)",
                source.clerk_shortcode.as_deref().unwrap_or_default().trim()
            ));
        } else if text != value {
            problems.push(format!(
                "{field}: {text:?} is not allowed: workspace {workspace} pins {param} to {value:?} in this namespace (omit it to have it set)"
            ));
        }
    }
}

/// Checks a Clerk output against a pinned param and records the shortcode its template carries.
fn pin_clerk_template(
    access: &mut ValidatedAccess,
    param: &str,
    source: &crate::api::RequiredParamSource,
    workspace: &str,
    problems: &mut Vec<String>,
) -> Option<Shortcode> {
    if access.scopes.iter().any(|scope| scope.scope_type != SCOPE_PIPES_READ) {
        problems.push(format!(
            "spec.clerkTemplate: workspace {workspace} pins {param}, and a DATASOURCES:READ filter cannot hold a Clerk shortcode (Clerk inserts values unescaped), so the template would give every user this namespace's rows: grant PIPES:READ scopes in a Clerk template (a DATASOURCES:READ scope may stay in a Secret-only TenantAccess)"
        ));
    }
    match pinned_shortcode(param, source, workspace) {
        Ok(Some(code)) => {
            if let Some(clerk) = &mut access.clerk_template {
                clerk.pinned.insert(param.to_owned(), code.clone());
            }
            Some(code)
        }
        Ok(None) => {
            problems.push(format!(
                "spec.clerkTemplate: workspace {workspace} pins {param} but maps no Clerk shortcode to it, so a Clerk template could only carry this namespace's value, which any signed-in user could mint: remove spec.clerkTemplate (keep spec.secret), or ask the platform team to set spec.policy.requiredParams.{param}.clerkShortcode"
            ));
            None
        }
        Err(problem) => {
            problems.push(problem);
            None
        }
    }
}

/// Why a shortcode written for a pinned param is refused: another shortcode than the policy's,
/// or a fallback that could be a tenant's value.
fn foreign_shortcode(
    text: &str,
    policy_code: Option<&Shortcode>,
    param: &str,
    workspace: &str,
) -> Option<String> {
    let Some(policy_code) = policy_code else {
        // The Clerk output itself is refused (no shortcode mapped): said once, there.
        return None;
    };
    let expected = format!("{{{{{}}}}}", policy_code.path);
    match shortcode::parse_single(text) {
        Ok(code) if code.path == policy_code.path => tenant_like_fallback(&code, param).map(|problem| {
            format!("{problem}; write {expected} or omit the param (the operator adds a fallback that matches no tenant)")
        }),
        _ => Some(format!(
            "{:?} is not the shortcode workspace {workspace} maps to {param}: write {expected} or omit the param",
            crate::core::redact::prefix(text, 80)
        )),
    }
}

/// `*` matches any run of characters, `?` one character.
#[must_use]
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some(gi);
            mark = ti;
            gi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests;
