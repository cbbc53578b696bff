//! A workspace resolved for signing: its spec checked against its admin token.

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
}

impl WorkspaceError {
    /// The condition reason for this error.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedToken(_) => reason::MALFORMED_TOKEN,
            Self::WorkspaceMismatch { .. } => reason::WORKSPACE_MISMATCH,
            Self::UnknownRegion(_) => reason::INVALID_SPEC,
        }
    }
}

/// Checks a workspace spec against its admin token.
///
/// # Errors
/// Malformed token, workspace id mismatch, unknown region without `apiUrl`.
pub fn resolve(spec: &WorkspaceSpec, key: AdminToken) -> Result<SigningWorkspace, WorkspaceError> {
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
