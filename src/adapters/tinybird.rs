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
    counted("verify", ask_workspace(http, api_url, key).await)
}

/// An error's outcome label in `tenant_access_tinybird_requests_total`.
trait Outcome {
    fn outcome(&self) -> &'static str;
}

impl Outcome for VerifyError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "Unauthorized",
            Self::Unavailable(_) => "Unavailable",
        }
    }
}

impl Outcome for RefreshError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "Refused",
            Self::NotSent(_) => "NotSent",
            Self::Unanswered(_) => "Unanswered",
        }
    }
}

/// Counts one call of `call` by its result, and hands the result on.
fn counted<T, E: Outcome>(call: &'static str, result: Result<T, E>) -> Result<T, E> {
    request_counts::tinybird(call, result.as_ref().map_or_else(Outcome::outcome, |_| request_counts::OK));
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

/// Why a refresh of the admin token did not give a new one. Messages never carry a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// Tinybird answered and did not refresh (an error status): nothing changed.
    #[error("Tinybird answered {status} to the refresh of the admin token: it was not refreshed")]
    Refused { status: u16 },
    /// The request never reached Tinybird (no connection, unusable URL): nothing changed.
    #[error("the refresh of the admin token was not sent: {0}")]
    NotSent(String),
    /// No usable answer: the request may or may not have refreshed the token at Tinybird.
    #[error("the refresh of the admin token got no usable answer (it may have been refreshed): {0}")]
    Unanswered(String),
}

#[derive(Deserialize)]
struct RefreshAnswer {
    token: String,
}

/// Refreshes the admin token with `POST {api_url}/v0/tokens/{token_ref}/refresh` (counted in
/// `tenant_access_tinybird_requests_total{call="refresh"}`), `token_ref` being the token's id
/// or name. From Tinybird's answer on, `key` and every JWT signed with it are refused: the
/// returned token is the only copy of the workspace's admin token.
///
/// # Errors
/// [`RefreshError::Refused`] when Tinybird answered with an error (nothing changed),
/// [`RefreshError::Unanswered`] when it may have refreshed without the answer arriving.
pub async fn refresh_admin_token(
    http: &reqwest::Client,
    api_url: &str,
    key: &AdminToken,
    token_ref: &str,
) -> Result<AdminToken, RefreshError> {
    counted("refresh", ask_refresh(http, api_url, key, token_ref).await)
}

async fn ask_refresh(
    http: &reqwest::Client,
    api_url: &str,
    key: &AdminToken,
    token_ref: &str,
) -> Result<AdminToken, RefreshError> {
    let not_sent = |e: &dyn std::fmt::Display| RefreshError::NotSent(redact(&e.to_string(), &[key.expose()]));
    let mut url = reqwest::Url::parse(api_url.trim_end_matches('/')).map_err(|e| not_sent(&e))?;
    url.path_segments_mut()
        .map_err(|()| not_sent(&"the API URL cannot have a path"))?
        .pop_if_empty()
        .extend(["v0", "tokens", token_ref, "refresh"]);
    let response = match http.post(url).bearer_auth(key.expose()).send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => return Err(not_sent(&error)),
        Err(error) => return Err(RefreshError::Unanswered(redact(&error.to_string(), &[key.expose()]))),
    };
    let status = response.status().as_u16();
    // A 4xx refused the request; a 5xx may have come after the refresh was done.
    if (400..500).contains(&status) {
        return Err(RefreshError::Refused { status });
    }
    if status != 200 {
        return Err(RefreshError::Unanswered(format!("Tinybird answered {status}")));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| RefreshError::Unanswered(redact(&e.to_string(), &[key.expose()])))?;
    let answer: RefreshAnswer = serde_json::from_slice(&body)
        .map_err(|_| RefreshError::Unanswered("the answer carries no \"token\"".to_owned()))?;
    let token = AdminToken::new(&answer.token);
    if token.expose().is_empty() {
        return Err(RefreshError::Unanswered("the answer's \"token\" is empty".to_owned()));
    }
    Ok(token)
}
