//! A workspace resolved for signing: its spec checked against its admin token.

use std::time::Duration;

use crate::api::WorkspaceSpec;
use crate::core::admin_token::{AdminToken, MalformedAdminToken, UnknownRegion, api_url_for_region};
use crate::core::well_known::reason;

/// Everything needed to sign and address tokens of one workspace.
#[derive(Debug, Clone)]
pub struct SigningWorkspace {
    /// Workspace UUID (`workspace_id` claim).
    pub workspace_id: String,
    /// API base URL, without a trailing slash.
    pub api_url: String,
    /// Region key from the admin token, if any.
    pub region: Option<String>,
    /// The signing key.
    pub key: AdminToken,
    /// Its fingerprint.
    pub signing_key_fingerprint: String,
    /// What its health checks may cost (`spec.healthChecks`).
    pub health: HealthBudget,
}

/// Default `spec.healthChecks.maxQueriesPerDay`: a fifth of a Free plan's 1,000.
pub const DEFAULT_MAX_QUERIES_PER_DAY: u32 = 200;
/// Default `spec.healthChecks.maxQueriesPerSecond`.
pub const DEFAULT_MAX_QUERIES_PER_SECOND: u32 = 1;
/// Default `spec.healthChecks.tokenCheckInterval`: a day.
pub const DEFAULT_TOKEN_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The health-check budget of a workspace, parsed from `spec.healthChecks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthBudget {
    /// Most probes a day.
    pub max_queries_per_day: u32,
    /// Most probes a second.
    pub max_queries_per_second: u32,
    /// How often a verified token is probed on its own again (zero: only when written).
    pub token_check_interval: Duration,
}

impl Default for HealthBudget {
    fn default() -> Self {
        Self {
            max_queries_per_day: DEFAULT_MAX_QUERIES_PER_DAY,
            max_queries_per_second: DEFAULT_MAX_QUERIES_PER_SECOND,
            token_check_interval: DEFAULT_TOKEN_CHECK_INTERVAL,
        }
    }
}

impl HealthBudget {
    /// The budget `spec.healthChecks` sets (defaults for what it leaves out).
    ///
    /// # Errors
    /// When `tokenCheckInterval` is not a duration, or a rate is zero.
    pub fn from_spec(spec: &WorkspaceSpec) -> Result<Self, WorkspaceError> {
        let defaults = Self::default();
        let Some(checks) = &spec.health_checks else { return Ok(defaults) };
        let token_check_interval = match checks.token_check_interval.as_deref() {
            None => defaults.token_check_interval,
            Some(text) => crate::core::duration::parse(text)
                .ok()
                .and_then(|d| Duration::try_from(d).ok())
                .ok_or_else(|| {
                    WorkspaceError::HealthChecks(format!(
                        "spec.healthChecks.tokenCheckInterval {text:?} is not a duration: use e.g. 24h, or 0 to verify tokens only when written"
                    ))
                })?,
        };
        let rate = |value: Option<u32>, default: u32, field: &str| match value {
            Some(0) => Err(WorkspaceError::HealthChecks(format!(
                "spec.healthChecks.{field} is 0: use 1 or more (disable probes with a TenantAccess's healthCheck.interval: 0)"
            ))),
            value => Ok(value.unwrap_or(default)),
        };
        Ok(Self {
            max_queries_per_day: rate(
                checks.max_queries_per_day,
                defaults.max_queries_per_day,
                "maxQueriesPerDay",
            )?,
            max_queries_per_second: rate(
                checks.max_queries_per_second,
                defaults.max_queries_per_second,
                "maxQueriesPerSecond",
            )?,
            token_check_interval,
        })
    }

    /// Time between two probe slots of the workspace, for a pacer that sends each probe at
    /// most `slack` after its slot: then no window of a second (or a day) holds more probes
    /// than the rate, across restarts too (a new process starts one spacing after its start).
    #[must_use]
    pub fn spacing(&self, slack: Duration) -> Duration {
        let per_day = (Duration::from_secs(86_400) + slack) / self.max_queries_per_day.max(1);
        let per_second = (Duration::from_secs(1) + slack) / self.max_queries_per_second.max(1);
        per_day.max(per_second) + Duration::from_millis(1)
    }
}

/// `spec.verifyInterval`: how often the admin token is checked with Tinybird (zero: only when
/// it is loaded or changes).
///
/// # Errors
/// The message naming the field, when it is not a duration.
pub fn verify_interval(spec: &WorkspaceSpec) -> Result<Duration, String> {
    match spec.verify_interval.as_deref() {
        None => Ok(Duration::ZERO),
        Some(text) => crate::core::duration::parse(text)
            .map(|d| Duration::try_from(d).unwrap_or_default())
            .map_err(|e| format!("spec.verifyInterval: {e}")),
    }
}

/// What is wrong with a workspace spec whatever its admin token: what the workspace reconciler
/// reports as `InvalidSpec` (`healthChecks`, `verifyInterval`), a `rotation.interval` its
/// rotation would refuse, and what every TenantAccess
/// using the workspace would be refused for (its policy). Empty when nothing is.
#[must_use]
pub fn spec_problems(spec: &WorkspaceSpec, workspace: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(error) = HealthBudget::from_spec(spec) {
        problems.push(error.to_string());
    }
    if let Err(problem) = verify_interval(spec) {
        problems.push(problem);
    }
    if let Err(problem) = crate::core::rotation::interval(spec.rotation.as_ref()) {
        problems.push(problem);
    }
    if let Some(policy) = &spec.policy {
        if let Err(violation) = crate::core::policy::check(policy, workspace) {
            problems.extend(violation.0);
        }
        if let Some(Err(error)) = policy.allowed_namespaces.as_ref().map(crate::core::selector::validate) {
            problems.push(format!("spec.policy.allowedNamespaces: {error}"));
        }
    }
    problems
}

/// Why a workspace cannot sign. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{0}; put the workspace's admin token (p.eyJ...) in the Secret")]
    MalformedToken(#[from] MalformedAdminToken),
    #[error(
        "spec.workspaceId is {expected:?} but the admin token belongs to workspace {actual:?}: fix spec.workspaceId or the Secret"
    )]
    WorkspaceMismatch { expected: String, actual: String },
    #[error(transparent)]
    UnknownRegion(#[from] UnknownRegion),
    #[error("{0}")]
    HealthChecks(String),
}

impl WorkspaceError {
    /// The condition reason for this error.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedToken(_) => reason::MALFORMED_TOKEN,
            Self::WorkspaceMismatch { .. } => reason::WORKSPACE_MISMATCH,
            Self::UnknownRegion(_) | Self::HealthChecks(_) => reason::INVALID_SPEC,
        }
    }
}

/// Checks a workspace spec against its admin token.
///
/// # Errors
/// Malformed token, workspace id mismatch, unknown region without `apiUrl`.
pub fn resolve(spec: &WorkspaceSpec, key: AdminToken) -> Result<SigningWorkspace, WorkspaceError> {
    let health = HealthBudget::from_spec(spec)?;
    let facts = key.decode()?;
    if let Some(expected) = spec.workspace_id.as_deref()
        && expected != facts.workspace_id
    {
        return Err(WorkspaceError::WorkspaceMismatch {
            expected: expected.to_owned(),
            actual: facts.workspace_id,
        });
    }
    let api_url = match spec.api_url.as_deref() {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => api_url_for_region(facts.region.as_deref())?,
    };
    Ok(SigningWorkspace {
        workspace_id: facts.workspace_id,
        api_url,
        region: facts.region,
        signing_key_fingerprint: key.fingerprint(),
        key,
        health,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretKeySelector;
    use crate::core::admin_token::tests::fake_admin_token;

    fn spec() -> WorkspaceSpec {
        WorkspaceSpec {
            admin_token_secret_ref: SecretKeySelector { name: "tinybird-admin".into(), key: None },
            ..WorkspaceSpec::default()
        }
    }

    #[test]
    fn derives_workspace_id_and_api_url_from_the_token() {
        let key = AdminToken::new(&fake_admin_token("ws-1", Some("aws-eu-central-1")));
        let ws = resolve(&spec(), key.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ws.workspace_id, "ws-1");
        assert_eq!(ws.api_url, "https://api.eu-central-1.aws.tinybird.co");
        assert_eq!(ws.signing_key_fingerprint, key.fingerprint());
    }

    #[test]
    fn explicit_api_url_wins_over_the_region() {
        let key = AdminToken::new(&fake_admin_token("ws-1", Some("mars-1")));
        let spec = WorkspaceSpec { api_url: Some("http://localhost:7181/".into()), ..spec() };
        assert_eq!(resolve(&spec, key).map(|ws| ws.api_url), Ok("http://localhost:7181".into()));
    }

    #[test]
    fn refuses_a_token_of_another_workspace() {
        let key = AdminToken::new(&fake_admin_token("ws-2", None));
        let spec = WorkspaceSpec { workspace_id: Some("ws-1".into()), ..spec() };
        let error = resolve(&spec, key).map(|_| ()).unwrap_err();
        assert_eq!(error.reason(), reason::WORKSPACE_MISMATCH);
    }

    #[test]
    fn refuses_an_unknown_region_without_api_url() {
        let key = AdminToken::new(&fake_admin_token("ws-1", Some("mars-1")));
        assert!(matches!(resolve(&spec(), key), Err(WorkspaceError::UnknownRegion(_))));
    }
}
