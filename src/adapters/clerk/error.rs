//! Clerk's answers turned into typed errors with a bounded reason, one-line redacted messages, and
//! `Retry-After` parsing.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::core::redact::redact;

/// Condition reasons of Clerk failures (CamelCase, bounded: also metric and event labels).
pub mod reason {
    /// The secret key was refused (401/403).
    pub const UNAUTHORIZED: &str = crate::core::well_known::reason::UNAUTHORIZED;
    /// Clerk refused the template body (400/422, e.g. a reserved claim or a taken name).
    pub const INVALID_TEMPLATE: &str = "InvalidTemplate";
    /// Clerk's request budget is spent (429), or the client-side limiter could not grant a slot
    /// in time.
    pub const RATE_LIMITED: &str = "RateLimited";
    /// The template does not exist (404).
    pub const NOT_FOUND: &str = "NotFound";
    /// Clerk answered 5xx, timed out, could not be reached or answered something unparseable.
    pub const CLERK_UNAVAILABLE: &str = "ClerkUnavailable";
    /// The configured Clerk API URL is not usable.
    pub const INVALID_SPEC: &str = crate::core::well_known::reason::INVALID_SPEC;
}

/// Longest message kept from an answer, after redaction.
const MAX_MESSAGE_CHARS: usize = 300;
/// Longest `Retry-After` honoured: a larger value is clamped so that a bogus header cannot stop
/// an instance's callers for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The call that failed, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClerkCall {
    /// Building the client (URL, key).
    Setup,
    /// `GET /jwt_templates`.
    List,
    /// `GET /jwt_templates/{id}`.
    Get,
    /// `POST /jwt_templates`.
    Create,
    /// `PATCH /jwt_templates/{id}`.
    Update,
    /// `DELETE /jwt_templates/{id}`.
    Delete,
}

impl fmt::Display for ClerkCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Setup => "setting up the Clerk client",
            Self::List => "listing Clerk JWT templates",
            Self::Get => "reading a Clerk JWT template",
            Self::Create => "creating a Clerk JWT template",
            Self::Update => "updating a Clerk JWT template",
            Self::Delete => "deleting a Clerk JWT template",
        })
    }
}

/// Why a Clerk call failed. Messages are one line, redacted, and never hold the secret key or
/// the signing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClerkError {
    /// 401 / 403: the secret key is invalid or lacks rights.
    #[error("{call}: Clerk refused the secret key ({code}): {message}")]
    Unauthorized {
        /// The failed call.
        call: ClerkCall,
        /// HTTP status, when there was an answer.
        status: Option<u16>,
        /// Clerk's error code: `authentication_invalid`, `clerk_key_invalid`, `authorization_invalid`.
        code: String,
        /// Clerk's explanation.
        message: String,
    },
    /// 400 / 422 (and other 4xx): Clerk refused the template.
    #[error("{call}: Clerk refused the template ({code}): {message}")]
    InvalidTemplate {
        /// The failed call.
        call: ClerkCall,
        /// HTTP status.
        status: u16,
        /// Clerk's error code, e.g. `jwt_template_reserved_claim`, `form_identifier_exists`,
        /// `form_param_value_invalid`.
        code: String,
        /// Clerk's explanation.
        message: String,
    },
    /// 429, or no request slot within the client's wait limit.
    #[error("{call}: Clerk rate limit reached, retry in {}s", retry_after.as_secs_f64().ceil())]
    RateLimited {
        /// The failed call.
        call: ClerkCall,
        /// How long to wait before calling this instance again.
        retry_after: Duration,
    },
    /// 404 `resource_not_found`.
    #[error("{call}: not found in Clerk: {message}")]
    NotFound {
        /// The failed call.
        call: ClerkCall,
        /// Clerk's explanation.
        message: String,
    },
    /// 5xx, 408, timeouts, connection errors, unparseable answers.
    #[error("{call}: Clerk unavailable: {message}")]
    ClerkUnavailable {
        /// The failed call.
        call: ClerkCall,
        /// HTTP status, when there was an answer.
        status: Option<u16>,
        /// What went wrong.
        message: String,
    },
    /// The configured API URL cannot be used.
    #[error("{call}: invalid Clerk API URL: {message}")]
    InvalidApiUrl {
        /// Always [`ClerkCall::Setup`].
        call: ClerkCall,
        /// What is wrong with it.
        message: String,
    },
}

impl ClerkError {
    /// The bounded condition reason (see [`reason`]).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => reason::UNAUTHORIZED,
            Self::InvalidTemplate { .. } => reason::INVALID_TEMPLATE,
            Self::RateLimited { .. } => reason::RATE_LIMITED,
            Self::NotFound { .. } => reason::NOT_FOUND,
            Self::ClerkUnavailable { .. } => reason::CLERK_UNAVAILABLE,
            Self::InvalidApiUrl { .. } => reason::INVALID_SPEC,
        }
    }

    /// Clerk's error code, when the answer carried one.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Unauthorized { code, .. } | Self::InvalidTemplate { code, .. } => Some(code),
            Self::NotFound { .. } => Some("resource_not_found"),
            Self::RateLimited { .. } => Some("too_many_requests"),
            Self::ClerkUnavailable { .. } | Self::InvalidApiUrl { .. } => None,
        }
    }

    /// When to try again: Clerk's `Retry-After` for a rate limit.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the same call may succeed later without a change of spec or key (rate limit,
    /// outage).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::ClerkUnavailable { .. })
    }
}

/// Clerk's error body: `{"errors":[{code,message,long_message,meta}],"clerk_trace_id"}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    long_message: Option<String>,
}

/// The first error's code and its most helpful message, from an error body (if it is one).
fn first_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    parsed.errors.into_iter().next().map_or((None, None), |entry| {
        let message = entry.long_message.filter(|m| !m.trim().is_empty()).or(entry.message);
        (entry.code.filter(|code| is_code_shaped(code)), message)
    })
}

/// Clerk codes are short snake_case words; anything else is not trusted as a code (it ends up in
/// conditions and events).
fn is_code_shaped(code: &str) -> bool {
    !code.is_empty() && code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One line, redacted, bounded: safe for conditions, events and logs.
pub(crate) fn clean_message(text: &str, secrets: &[&str]) -> String {
    // Redact first, so that truncation can never cut a secret into an unrecognisable piece.
    let redacted = redact(text, secrets);
    let one_line = redacted.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_MESSAGE_CHARS {
        return one_line;
    }
    let mut truncated: String = one_line.chars().take(MAX_MESSAGE_CHARS).collect();
    truncated.push_str("...");
    truncated
}

/// Classifies a non-success answer. `secrets` are redacted from every message taken from `body`.
pub(crate) fn error_from_answer(
    call: ClerkCall,
    status: StatusCode,
    retry_after_header: Option<&str>,
    body: &[u8],
    secrets: &[&str],
    now: Timestamp,
) -> ClerkError {
    let (code, message) = first_error(body);
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() { format!("HTTP {}", status.as_u16()) } else { text.to_owned() }
    });
    let message = clean_message(&message, secrets);
    let status_code = status.as_u16();
    match status_code {
        401 | 403 => ClerkError::Unauthorized {
            call,
            status: Some(status_code),
            code: code.unwrap_or_else(|| {
                if status_code == 401 { "authentication_invalid" } else { "authorization_invalid" }.to_owned()
            }),
            message,
        },
        404 => ClerkError::NotFound { call, message },
        429 => ClerkError::RateLimited {
            call,
            retry_after: retry_after_header.and_then(|value| parse_retry_after(value, now)).unwrap_or(
                // Without a usable header, a short pause: the limiter spreads what follows.
                Duration::from_secs(1),
            ),
        },
        408 | 500..=599 => ClerkError::ClerkUnavailable { call, status: Some(status_code), message },
        400..=499 => ClerkError::InvalidTemplate {
            call,
            status: status_code,
            code: code.unwrap_or_else(|| format!("http_{status_code}")),
            message,
        },
        _ => ClerkError::ClerkUnavailable {
            call,
            status: Some(status_code),
            message: format!("unexpected answer HTTP {status_code}: {message}"),
        },
    }
}

/// `Retry-After` as delay-seconds (`"3"`, also `"1.5"`) or an HTTP-date, relative to `now`;
/// clamped to [`MAX_RETRY_AFTER`]. `None` when unparseable.
#[must_use]
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        Duration::try_from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())).ok()?
    } else {
        let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
        let until = at.duration_since(now);
        Duration::try_from(until).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_KEY: &str = "sk_test_abcdefghijklmnopqrstuvwxyz0123456789";
    const SIGNING_KEY: &str = "p.eyJ1IjoiYWJjIiwiaWQiOiJ0b2sifQ.c2lnbmF0dXJlLXRlc3Q";

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn clerk_body(code: &str, long_message: &str) -> Vec<u8> {
        serde_json::json!({
            "errors": [{"code": code, "message": "short", "long_message": long_message, "meta": {}}],
            "clerk_trace_id": "abc",
        })
        .to_string()
        .into_bytes()
    }

    fn classify(status: u16, body: &[u8]) -> ClerkError {
        error_from_answer(
            ClerkCall::Create,
            StatusCode::from_u16(status).unwrap(),
            None,
            body,
            &[SECRET_KEY, SIGNING_KEY],
            now(),
        )
    }

    #[test]
    fn refused_keys_are_unauthorized() {
        for (status, code) in
            [(401, "authentication_invalid"), (401, "clerk_key_invalid"), (403, "authorization_invalid")]
        {
            let error = classify(status, &clerk_body(code, "no"));
            assert_eq!(error.reason(), "Unauthorized");
            assert_eq!(error.code(), Some(code));
        }
        let bare = classify(403, b"");
        assert_eq!(bare.code(), Some("authorization_invalid"));
    }

    #[test]
    fn refused_templates_carry_clerks_code() {
        let cases = [
            (400, "jwt_template_reserved_claim"),
            (422, "form_identifier_exists"),
            (422, "form_param_missing"),
            (422, "form_param_value_invalid"),
        ];
        for (status, code) in cases {
            let error = classify(status, &clerk_body(code, "You can't use the reserved claim: 'exp'"));
            assert_eq!(error.reason(), "InvalidTemplate");
            assert_eq!(error.code(), Some(code));
            assert!(!error.is_transient());
        }
        assert_eq!(classify(409, b"conflict").code(), Some("http_409"));
    }

    #[test]
    fn missing_templates_and_outages_have_their_reasons() {
        assert_eq!(
            classify(404, &clerk_body("resource_not_found", "Resource not found")).reason(),
            "NotFound"
        );
        for status in [408, 500, 502, 503, 504] {
            let error = classify(status, b"<html>bad gateway</html>");
            assert_eq!(error.reason(), "ClerkUnavailable");
            assert!(error.is_transient());
        }
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let error = error_from_answer(
            ClerkCall::List,
            StatusCode::TOO_MANY_REQUESTS,
            Some("7"),
            &clerk_body("too_many_requests", "Too many requests"),
            &[],
            now(),
        );
        assert_eq!(error.reason(), "RateLimited");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        let without_header = classify(429, b"");
        assert_eq!(without_header.retry_after(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn messages_are_one_redacted_line_without_keys() {
        let echoed = format!(
            "bad key {SECRET_KEY}\nsigning key was {SIGNING_KEY}\r\n and bearer {SECRET_KEY} again\t."
        );
        for status in [400, 401, 404, 422, 500] {
            let error = classify(status, &clerk_body("form_param_value_invalid", &echoed));
            let text = error.to_string();
            assert!(!text.contains(SECRET_KEY), "{text}");
            assert!(!text.contains(SIGNING_KEY), "{text}");
            assert!(!text.contains("c2lnbmF0dXJlLXRlc3Q"), "{text}");
            assert!(!text.contains('\n') && !text.contains('\r') && !text.contains('\t'), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        let raw = classify(502, format!("upstream said {SECRET_KEY}").as_bytes()).to_string();
        assert!(!raw.contains(SECRET_KEY), "{raw}");
    }

    #[test]
    fn long_messages_are_truncated_after_redaction() {
        let long = format!("{} {SECRET_KEY}", "x".repeat(295));
        let message = clean_message(&long, &[SECRET_KEY]);
        assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 3);
        assert!(!message.contains("sk_test_"));
    }

    #[test]
    fn untrusted_codes_are_dropped() {
        let error = classify(422, &clerk_body("not a code\nwith lines", "m"));
        assert_eq!(error.code(), Some("http_422"));
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("3", now()), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5", now()), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 31 Dec 2025 23:59:00 GMT", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999", now()), Some(MAX_RETRY_AFTER));
        for garbage in ["", "soon", "-1", "NaN", "inf", "-0.5"] {
            assert_eq!(parse_retry_after(garbage, now()), None, "{garbage}");
        }
    }

    #[test]
    fn reasons_are_bounded() {
        let errors = [
            classify(401, b""),
            classify(422, b""),
            classify(429, b""),
            classify(404, b""),
            classify(503, b""),
            ClerkError::InvalidApiUrl { call: ClerkCall::Setup, message: "x".into() },
        ];
        let reasons: Vec<&str> = errors.iter().map(ClerkError::reason).collect();
        assert_eq!(
            reasons,
            ["Unauthorized", "InvalidTemplate", "RateLimited", "NotFound", "ClerkUnavailable", "InvalidSpec"]
        );
    }
}
