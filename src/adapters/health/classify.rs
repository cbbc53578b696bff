//! Pure classification of one probe answer into a bounded reason, a health verdict and a
//! redacted one-line message. No I/O: every case is a unit test with a real-shaped body.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::core::pipe_isolation::PipeDescription;
use crate::core::redact::redact;

/// Longest message kept (after redaction), so that status stays small.
const MAX_MESSAGE_CHARS: usize = 200;
/// Longest `Retry-After` honoured: a broken header must not park a probe for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why an endpoint is (or is not) healthy. A fixed set: also a metric label and the
/// `status.endpoints[].reason` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeReason {
    /// 200 with Tinybird's JSON (`data` array and `statistics` object).
    Healthy,
    /// 403 `invalid authentication token`: bad signature (admin token refreshed), expired, or
    /// unknown token.
    SignatureRejected,
    /// 403: the token is valid but its scopes do not cover the pipe.
    ScopeRejected,
    /// 404: the pipe does not exist.
    PipeNotFound,
    /// 408: the pipe's query timed out at Tinybird.
    QueryTimeout,
    /// 429: the token's rate limit is spent. Says nothing about health.
    RateLimited,
    /// 5xx.
    ServerError,
    /// No answer: connection failure or the probe timeout.
    Unreachable,
    /// Any other answer, e.g. a 200 that is not Tinybird's JSON, or a 400.
    BadResponse,
    /// Not probed: a fixed param is a Clerk shortcode and `healthCheck.sampleParams` gives no
    /// stand-in for it. Not a failure.
    NoSampleParams,
}

impl ProbeReason {
    /// Every reason, for metric pre-registration and tests.
    pub const ALL: [Self; 10] = [
        Self::Healthy,
        Self::SignatureRejected,
        Self::ScopeRejected,
        Self::PipeNotFound,
        Self::QueryTimeout,
        Self::RateLimited,
        Self::ServerError,
        Self::Unreachable,
        Self::BadResponse,
        Self::NoSampleParams,
    ];

    /// The CamelCase name used in status, events and metric labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::SignatureRejected => "SignatureRejected",
            Self::ScopeRejected => "ScopeRejected",
            Self::PipeNotFound => "PipeNotFound",
            Self::QueryTimeout => "QueryTimeout",
            Self::RateLimited => "RateLimited",
            Self::ServerError => "ServerError",
            Self::Unreachable => "Unreachable",
            Self::BadResponse => "BadResponse",
            Self::NoSampleParams => "NoSampleParams",
        }
    }

    /// Whether this answer is about the token alone (its signature or its scopes), not about
    /// the pipe every token of it shares.
    #[must_use]
    pub const fn is_per_token(self) -> bool {
        matches!(self, Self::SignatureRejected | Self::ScopeRejected)
    }

    /// The health verdict of this reason: `None` when it says nothing about health
    /// (`RateLimited`: keep the previous verdict).
    #[must_use]
    pub const fn verdict(self) -> Option<bool> {
        match self {
            Self::Healthy | Self::NoSampleParams => Some(true),
            Self::RateLimited => None,
            Self::SignatureRejected
            | Self::ScopeRejected
            | Self::PipeNotFound
            | Self::QueryTimeout
            | Self::ServerError
            | Self::Unreachable
            | Self::BadResponse => Some(false),
        }
    }
}

impl fmt::Display for ProbeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `SignatureRejected` answer said about the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthRejection {
    /// `Signature verification failed`: signed with another key (the admin token was refreshed).
    SignatureFailed,
    /// `Signature has expired`.
    Expired,
    /// `nbf` in the future.
    NotYetValid,
    /// `invalid authentication token` without detail (unknown token, other workspace).
    Other,
}

impl AuthRejection {
    /// Whether the rejection points at the signing key rather than at the token's validity
    /// window: a reason to re-check the workspace's admin token.
    #[must_use]
    pub const fn suspects_the_key(self) -> bool {
        matches!(self, Self::SignatureFailed | Self::Other)
    }
}

/// A request that got no (complete) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The probe timeout elapsed.
    Timeout,
    /// The connection could not be made; the detail is the innermost error text.
    Connect(String),
    /// Anything else (connection reset, broken body); the detail is the innermost error text.
    Other(String),
}

impl TransportError {
    /// Classifies a reqwest error, keeping only its innermost cause (not the URL).
    #[must_use]
    pub fn from_reqwest(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            return Self::Timeout;
        }
        let mut innermost: &dyn std::error::Error = error;
        while let Some(source) = innermost.source() {
            innermost = source;
        }
        let detail = innermost.to_string();
        if error.is_connect() { Self::Connect(detail) } else { Self::Other(detail) }
    }
}

/// The classified answer of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// Why.
    pub reason: ProbeReason,
    /// HTTP status, when there was an answer.
    pub status_code: Option<u16>,
    /// One line, redacted: never a token, whatever Tinybird echoed.
    pub message: String,
    /// `Retry-After` (or `X-RateLimit-Reset`) of a 429.
    pub retry_after: Option<Duration>,
    /// What a `SignatureRejected` answer said.
    pub auth_rejection: Option<AuthRejection>,
    /// `X-RateLimit-Limit` of a 429: the rate of the bucket that refused (the token's own
    /// `limits.rps` when it is that one).
    pub rate_limit: Option<u64>,
    /// What a 200 to an existence check described: the pipe's nodes and their SQL, or why the
    /// description could not be read.
    pub description: Option<PipeDescribed>,
}

/// The pipe description an existence check read (`GET /v0/pipes/{pipe}`, free), or why it could
/// not be read.
pub type PipeDescribed = Result<Arc<PipeDescription>, String>;

impl ProbeOutcome {
    fn new(reason: ProbeReason, status_code: Option<u16>, message: &str) -> Self {
        Self {
            reason,
            status_code,
            message: one_line(message),
            retry_after: None,
            auth_rejection: None,
            rate_limit: None,
            description: None,
        }
    }

    /// A 200 to an existence check: the pipe exists (which says nothing about its health).
    #[must_use]
    pub fn pipe_exists() -> Self {
        Self::new(ProbeReason::Healthy, Some(200), "the pipe exists")
    }

    /// A 200 to an existence check, with the pipe's description as it was read (or why not).
    #[must_use]
    pub fn pipe_described(description: PipeDescribed) -> Self {
        Self { description: Some(description), ..Self::pipe_exists() }
    }

    /// An outcome for a probe that could not be sent (e.g. the probe token could not be signed).
    #[must_use]
    pub fn not_sent(message: &str) -> Self {
        Self::new(ProbeReason::BadResponse, None, message)
    }

    /// The health after this outcome: its verdict, or `previous` for a 429 (healthy when
    /// nothing is known yet: rate limiting is not a failure of the endpoint).
    #[must_use]
    pub fn healthy(&self, previous: Option<bool>) -> bool {
        self.reason.verdict().or(previous).unwrap_or(true)
    }

    /// Removes `secrets` (e.g. the token sent) from the message, on top of the token-shape
    /// redaction `classify` already applied.
    #[must_use]
    pub fn redacted_with(mut self, secrets: &[&str]) -> Self {
        self.message = redact(&self.message, secrets);
        self
    }
}

/// Classifies a probe answer: `status` and `body` as received (or `transport_error` when there
/// was no complete answer).
#[must_use]
pub fn classify(
    status: Option<u16>,
    body: &[u8],
    headers: &HeaderMap,
    transport_error: Option<&TransportError>,
) -> ProbeOutcome {
    use ProbeReason as R;
    if let Some(error) = transport_error {
        let message = match error {
            TransportError::Timeout => "no answer within the probe timeout (healthCheck.timeout)".to_owned(),
            TransportError::Connect(detail) => format!("cannot connect: {detail}"),
            TransportError::Other(detail) => format!("request failed: {detail}"),
        };
        return ProbeOutcome::new(R::Unreachable, status, &message);
    }
    let Some(code) = status else {
        return ProbeOutcome::new(R::Unreachable, None, "no answer");
    };
    let detail = error_detail(body);
    let answered = |what: &str| match &detail {
        Detail::Nothing => format!("answered {code}{what}"),
        Detail::Error(error) => format!("answered {code}{what}: {error}"),
        Detail::ErrorNotText => format!("answered {code}{what} with an error field that is not text"),
        Detail::NotJson => format!("answered {code}{what} with a non-JSON body"),
    };
    match code {
        200 if is_tinybird_json(body) => {
            ProbeOutcome::new(R::Healthy, status, "answered 200 with data and statistics")
        }
        200 => ProbeOutcome::new(
            R::BadResponse,
            status,
            "answered 200 but not with Tinybird's JSON (an object with a data array and a statistics object)",
        ),
        403 => {
            let lower = match &detail {
                Detail::Error(error) => error.to_ascii_lowercase(),
                _ => String::new(),
            };
            if lower.contains("have access to this resource") {
                ProbeOutcome::new(R::ScopeRejected, status, &answered(""))
            } else if lower.contains("invalid authentication token")
                || lower.contains("signature")
                || lower.contains("expired")
            {
                let rejection = if lower.contains("signature verification failed") {
                    AuthRejection::SignatureFailed
                } else if lower.contains("expired") {
                    AuthRejection::Expired
                } else if lower.contains("not yet valid") {
                    AuthRejection::NotYetValid
                } else {
                    AuthRejection::Other
                };
                ProbeOutcome {
                    auth_rejection: Some(rejection),
                    ..ProbeOutcome::new(R::SignatureRejected, status, &answered(""))
                }
            } else {
                ProbeOutcome::new(R::BadResponse, status, &answered(""))
            }
        }
        404 => ProbeOutcome::new(R::PipeNotFound, status, &answered("")),
        408 => ProbeOutcome::new(R::QueryTimeout, status, &answered("")),
        429 => {
            let retry_after = retry_after(headers);
            let what = retry_after.map_or(String::new(), |d| format!(" (retry after {}s)", d.as_secs()));
            let rate_limit = headers
                .get("x-ratelimit-limit")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok());
            ProbeOutcome {
                retry_after,
                rate_limit,
                ..ProbeOutcome::new(R::RateLimited, status, &answered(&what))
            }
        }
        500..=599 => ProbeOutcome::new(R::ServerError, status, &answered("")),
        _ => ProbeOutcome::new(R::BadResponse, status, &answered("")),
    }
}

/// Tinybird's pipe answer: an object with a `data` array and a `statistics` object.
fn is_tinybird_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|value| {
        value.get("data").is_some_and(serde_json::Value::is_array)
            && value.get("statistics").is_some_and(serde_json::Value::is_object)
    })
}

/// What of an answer body may be repeated in status and events: Tinybird's `error` text, and
/// nothing else (never `data`, never a raw body, which may hold rows of any tenant).
enum Detail {
    /// An empty body, or JSON without `error`.
    Nothing,
    /// The `error` text: redacted, one line, bounded.
    Error(String),
    /// `error` is there but is not a string.
    ErrorNotText,
    /// The body is not JSON (a proxy's HTML page, a truncated answer).
    NotJson,
}

fn error_detail(body: &[u8]) -> Detail {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Detail::Nothing;
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Err(_) => Detail::NotJson,
        Ok(value) => match value.get("error") {
            None => Detail::Nothing,
            Some(serde_json::Value::String(error)) => Detail::Error(one_line(error)),
            Some(_) => Detail::ErrorNotText,
        },
    }
}

/// Redacts, collapses whitespace and truncates (after redaction, so no token is cut in a way
/// that hides its shape).
fn one_line(text: &str) -> String {
    let redacted = redact(text, &[]);
    let collapsed = redacted.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= MAX_MESSAGE_CHARS {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(MAX_MESSAGE_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

/// `Retry-After` in seconds, else `X-RateLimit-Reset` (seconds until the window resets).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds =
        |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs);
    seconds(RETRY_AFTER.as_str()).or_else(|| seconds("x-ratelimit-reset")).map(|d| d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests;
