//! Clerk's error answers: `{"errors":[{code,message,long_message,meta}],"clerk_trace_id":"..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::random;

#[derive(Debug)]
pub(crate) struct ClerkError {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    long_message: String,
    /// `meta.param_name`, for form errors.
    param_name: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl ClerkError {
    fn new(
        status: StatusCode,
        code: &'static str,
        message: &'static str,
        long_message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            message,
            long_message: long_message.into(),
            param_name: None,
            retry_after_secs: None,
        }
    }

    fn with_param(mut self, param: &'static str) -> Self {
        self.param_name = Some(param);
        self
    }

    pub(crate) fn authentication_invalid() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_invalid",
            "Invalid authentication",
            "Unable to authenticate the request, you need to supply an active API key",
        )
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "resource_not_found", "not found", "Resource not found")
    }

    pub(crate) fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Too many requests",
            "Too many requests, retry later",
        );
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    pub(crate) fn reserved_claim(claim: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "jwt_template_reserved_claim",
            "Reserved claim used",
            format!("You can't use the reserved claim: '{claim}'"),
        )
        .with_param("claims")
    }

    pub(crate) fn param_missing(param: &'static str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_missing",
            "missing required parameter",
            format!("{param} must be included."),
        )
        .with_param(param)
    }

    pub(crate) fn param_value_invalid(param: &'static str, detail: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_value_invalid",
            "is invalid",
            format!("{param} is invalid: {detail}"),
        )
        .with_param(param)
    }

    pub(crate) fn param_format_invalid(param: &'static str, expected: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_format_invalid",
            "is invalid",
            format!("{param} must be {expected}."),
        )
        .with_param(param)
    }

    pub(crate) fn name_taken() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_identifier_exists",
            "That name is already taken",
            "A JWT template with this name already exists. Please choose another.",
        )
        .with_param("name")
    }

    pub(crate) fn malformed_body() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "Malformed request",
            "The request body is not a JSON object",
        )
    }

    /// Something real Clerk does that the emulator cannot (e.g. minting with the instance key).
    pub(crate) fn unsupported(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "emulator_unsupported", "Not supported by the emulator", detail)
    }

    pub(crate) fn injected(status: StatusCode) -> Self {
        Self::new(
            status,
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers. We've been notified and are working on fixing it.",
        )
    }

    #[cfg(test)]
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ClerkError {
    fn into_response(self) -> Response {
        let body = json!({
            "errors": [{
                "code": self.code,
                "message": self.message,
                "long_message": self.long_message,
                "meta": self.param_name.map_or_else(|| json!({}), |param| json!({"param_name": param})),
            }],
            "clerk_trace_id": random::hex(16),
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response.headers_mut().insert(RETRY_AFTER, seconds.into());
        }
        response
    }
}

pub(crate) fn injected_fault_response(status: StatusCode) -> Response {
    ClerkError::injected(status).into_response()
}
