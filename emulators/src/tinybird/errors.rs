//! Tinybird's error answers: `{"error": "...", "documentation": "https://..."}`.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

const AUTH_DOCS: &str = "https://www.tinybird.co/docs/api-reference/overview#authentication";
const PIPE_DOCS: &str = "https://www.tinybird.co/docs/api-reference/pipe-api";
const LIMITS_DOCS: &str = "https://www.tinybird.co/docs/api-reference/overview#limits";
const API_DOCS: &str = "https://www.tinybird.co/docs/api-reference/overview";
const QUERY_DOCS: &str = "https://www.tinybird.co/docs/api-reference/query-api";

/// Prefix of every authentication failure.
pub(crate) const INVALID_TOKEN: &str = "invalid authentication token";
/// A valid token whose scopes do not cover the resource.
pub(crate) const NO_ACCESS: &str = "The token you have provided doesn't have access to this resource";

/// An error answer in Tinybird's shape, with optional extra headers.
#[derive(Debug)]
pub(crate) struct TinybirdError {
    status: StatusCode,
    message: String,
    documentation: &'static str,
    headers: Vec<(HeaderName, String)>,
}

impl TinybirdError {
    fn new(status: StatusCode, message: impl Into<String>, documentation: &'static str) -> Self {
        Self { status, message: message.into(), documentation, headers: Vec::new() }
    }

    /// 403 `invalid authentication token` with a detail.
    pub(crate) fn invalid_token(detail: &str) -> Self {
        let message =
            if detail.is_empty() { INVALID_TOKEN.to_owned() } else { format!("{INVALID_TOKEN}. {detail}") };
        Self::new(StatusCode::FORBIDDEN, message, AUTH_DOCS)
    }

    /// 403 that echoes the token, as Tinybird does for JWT decoding failures.
    pub(crate) fn rejected_jwt(token: &str, reason: &str) -> Self {
        Self::invalid_token(&format!("Invalid token b'{token}': {reason}"))
    }

    /// 403: the token is valid but its scopes do not cover the resource.
    pub(crate) fn no_access() -> Self {
        Self::new(StatusCode::FORBIDDEN, NO_ACCESS, AUTH_DOCS)
    }

    pub(crate) fn pipe_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("The pipe '{name}' does not exist"), PIPE_DOCS)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message, API_DOCS)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, PIPE_DOCS)
    }

    /// 400 from the Query API: a query the emulator does not run, or one ClickHouse refused.
    pub(crate) fn query_refused(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, QUERY_DOCS)
    }

    /// 408: the query ran past the emulator's ClickHouse timeout.
    pub(crate) fn query_timeout(limit: std::time::Duration) -> Self {
        let seconds = limit.as_secs_f64();
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("[Error] Timeout exceeded: elapsed {seconds:.1} seconds, maximum: {seconds:.1} seconds"),
            QUERY_DOCS,
        )
    }

    /// 500: the emulator's own ClickHouse is missing or broken (not a Tinybird answer).
    pub(crate) fn clickhouse_unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message, QUERY_DOCS)
    }

    pub(crate) fn rate_limited(retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many requests: retry after {retry_after_secs} seconds"),
            LIMITS_DOCS,
        )
    }

    /// An injected fault: 408 reads like a query timeout, 5xx like an outage.
    pub(crate) fn injected(status: StatusCode) -> Self {
        let message = if status == StatusCode::REQUEST_TIMEOUT {
            "[Error] Timeout exceeded: elapsed 10.0 seconds, maximum: 10 seconds"
        } else {
            "Internal server error (injected by the emulator)"
        };
        Self::new(status, message, API_DOCS)
    }

    /// A template that could not be rendered: 400 (or the code given to `error()`) with
    /// Tinybird's message.
    pub(crate) fn from_template(error: super::template::TemplateError) -> Self {
        let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(status, error.message, super::template::TEMPLATE_DOCS)
    }

    pub(crate) fn with_headers(mut self, headers: Vec<(HeaderName, String)>) -> Self {
        self.headers.extend(headers);
        self
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for TinybirdError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "documentation": self.documentation});
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// Renders an injected fault status (used by the fault middleware).
pub(crate) fn injected_fault_response(status: StatusCode) -> Response {
    TinybirdError::injected(status).into_response()
}
