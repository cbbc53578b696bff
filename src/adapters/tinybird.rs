//! Tinybird API calls made with the workspace admin token (the tenant-token calls live in
//! `crate::adapters::health`).

use std::time::Duration;

use serde::Deserialize;

use crate::adapters::request_counts;
use crate::core::admin_token::AdminToken;
use crate::core::redact::redact;

/// What `GET /v1/workspace` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WorkspaceInfo {
    /// Workspace id.
    pub id: String,
    /// Workspace name.
    #[serde(default)]
    pub name: String,
}

/// Why the admin token could not be verified. Messages never carry the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Tinybird refused the token (403 or 401): revoked, refreshed elsewhere, or not an admin token.
    #[error(
        "Tinybird refused the admin token ({status}): it was refreshed or revoked; put the current admin token in the Secret"
    )]
    Unauthorized { status: u16 },
    /// Tinybird could not be asked (network, timeout, 5xx, unexpected answer).
    #[error("could not verify the admin token with Tinybird: {0}")]
    Unavailable(String),
}

/// Checks the admin token with `GET {api_url}/v1/workspace` (counted in
/// `tenant_access_tinybird_requests_total{call="verify"}`).
///
/// # Errors
/// [`VerifyError::Unauthorized`] when Tinybird refuses it, [`VerifyError::Unavailable`] otherwise.
pub async fn verify_admin_token(
    http: &reqwest::Client,
    api_url: &str,
    key: &AdminToken,
) -> Result<WorkspaceInfo, VerifyError> {
    let result = ask_workspace(http, api_url, key).await;
    let outcome = match &result {
        Ok(_) => request_counts::OK,
        Err(VerifyError::Unauthorized { .. }) => "Unauthorized",
        Err(VerifyError::Unavailable(_)) => "Unavailable",
    };
    request_counts::tinybird("verify", outcome);
    result
}

async fn ask_workspace(
    http: &reqwest::Client,
    api_url: &str,
    key: &AdminToken,
) -> Result<WorkspaceInfo, VerifyError> {
    let url = format!("{}/v1/workspace", api_url.trim_end_matches('/'));
    let unavailable =
        |e: &dyn std::fmt::Display| VerifyError::Unavailable(redact(&e.to_string(), &[key.expose()]));
    let response = http.get(&url).bearer_auth(key.expose()).send().await.map_err(|e| unavailable(&e))?;
    let status = response.status().as_u16();
    match status {
        200 => response.json::<WorkspaceInfo>().await.map_err(|e| unavailable(&e)),
        401 | 403 => Err(VerifyError::Unauthorized { status }),
        _ => Err(VerifyError::Unavailable(format!("{url} answered {status}"))),
    }
}

/// Default timeout of admin-token checks.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
