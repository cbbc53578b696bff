//! What each emulator was asked: method, path, query parameters (never a `token` one), the
//! claims of a bearer JWT (never the token) and answer status, so tests can count calls and see
//! what a caller sent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::sync::lock;

/// Requests kept in the log; older ones drop out (the per-status counters keep counting).
const MAX_RECORDS: usize = 10_000;

/// Paths under this prefix are the emulators' own controls and are not recorded.
pub const CONTROL_PREFIX: &str = "/_emulator";

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// Query parameters in order, without `token` (a credential is never recorded).
    pub query: Vec<(String, String)>,
    /// The payload of a JWT sent as `Authorization: Bearer`, decoded without verification (what
    /// the caller sent, valid or not). The token itself is never recorded.
    pub bearer_claims: Option<serde_json::Value>,
    /// Answer status code.
    pub status: u16,
    /// What the call was, for an emulator that tells (the Tinybird emulator: see
    /// [`crate::tinybird::call_of`], e.g. a billed `pipe_query` or an unbilled `pipe_metadata`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<&'static str>,
    /// When the request arrived (wall clock, milliseconds since the Unix epoch), to measure how
    /// requests are spread over time.
    pub received_at_ms: u64,
}

/// What a request was, from its method and path (`None`: nothing to say).
pub type CallOf = fn(&str, &str) -> Option<&'static str>;

/// Log of the API requests an emulator answered (control requests excluded).
#[derive(Debug, Default)]
pub struct RequestLog {
    inner: Mutex<LogState>,
    /// Names each request's call, when the emulator tells.
    call_of: Option<CallOf>,
}

#[derive(Debug, Default)]
struct LogState {
    records: VecDeque<RequestRecord>,
    counts_by_status: BTreeMap<u16, u64>,
    counts_by_call: BTreeMap<&'static str, u64>,
}

impl RequestLog {
    /// A log that names each request's call with `call_of` (and counts them by call, beyond the
    /// records kept).
    #[must_use]
    pub fn naming_calls(call_of: CallOf) -> Self {
        Self { inner: Mutex::default(), call_of: Some(call_of) }
    }

    /// What the request is, as this log names it.
    #[must_use]
    pub fn call_of(&self, method: &str, path: &str) -> Option<&'static str> {
        self.call_of.and_then(|call_of| call_of(method, path))
    }

    /// Appends one record.
    pub fn record(&self, record: RequestRecord) {
        let mut state = lock(&self.inner);
        *state.counts_by_status.entry(record.status).or_default() += 1;
        if let Some(call) = record.call {
            *state.counts_by_call.entry(call).or_default() += 1;
        }
        if state.records.len() == MAX_RECORDS {
            state.records.pop_front();
        }
        state.records.push_back(record);
    }

    /// The recorded requests, oldest first.
    #[must_use]
    pub fn records(&self) -> Vec<RequestRecord> {
        lock(&self.inner).records.iter().cloned().collect()
    }

    /// How many answers had each status.
    #[must_use]
    pub fn counts_by_status(&self) -> BTreeMap<u16, u64> {
        lock(&self.inner).counts_by_status.clone()
    }

    /// How many requests were each call (all of them, not only the records kept).
    #[must_use]
    pub fn counts_by_call(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.inner).counts_by_call.clone()
    }

    /// How many requests were `call` (all of them, not only the records kept).
    #[must_use]
    pub fn count_call(&self, call: &str) -> u64 {
        lock(&self.inner).counts_by_call.get(call).copied().unwrap_or(0)
    }

    /// How many answers had `status`.
    #[must_use]
    pub fn count_status(&self, status: u16) -> u64 {
        lock(&self.inner).counts_by_status.get(&status).copied().unwrap_or(0)
    }

    /// How many requests used `method` on a path starting with `path_prefix`.
    #[must_use]
    pub fn count_matching(&self, method: &str, path_prefix: &str) -> usize {
        lock(&self.inner)
            .records
            .iter()
            .filter(|record| record.method == method && record.path.starts_with(path_prefix))
            .count()
    }

    /// Total number of requests answered.
    #[must_use]
    pub fn total(&self) -> u64 {
        lock(&self.inner).counts_by_status.values().sum()
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut state = lock(&self.inner);
        state.records.clear();
        state.counts_by_status.clear();
        state.counts_by_call.clear();
    }
}

/// Middleware recording every non-control request.
pub(crate) async fn record_requests(
    State(log): State<Arc<RequestLog>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
        .map(|Query(pairs)| pairs.into_iter().filter(|(name, _)| name != "token").collect())
        .unwrap_or_default();
    let bearer_claims = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(jwt_payload);
    let received_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let response = next.run(request).await;
    if !path.starts_with(CONTROL_PREFIX) {
        let status = response.status().as_u16();
        tracing::debug!(%method, %path, status, "answered");
        let call = log.call_of(&method, &path);
        log.record(RequestRecord { method, path, query, bearer_claims, status, received_at_ms, call });
    }
    response
}

/// The payload of a JWT (`header.payload.signature`), unverified; `None` for anything else.
fn jwt_payload(token: &str) -> Option<serde_json::Value> {
    let mut segments = token.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok().filter(serde_json::Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(method: &str, path: &str, status: u16) -> RequestRecord {
        RequestRecord {
            method: method.to_owned(),
            path: path.to_owned(),
            query: Vec::new(),
            bearer_claims: None,
            status,
            received_at_ms: 0,
            call: None,
        }
    }

    #[test]
    fn counts_by_status_and_path() {
        let log = RequestLog::default();
        log.record(record("GET", "/v1/jwt_templates", 200));
        log.record(record("POST", "/v1/jwt_templates", 422));
        log.record(record("GET", "/v1/jwt_templates/jtmpl_1", 200));
        assert_eq!(log.count_status(200), 2);
        assert_eq!(log.count_matching("GET", "/v1/jwt_templates"), 2);
        assert_eq!(log.total(), 3);
        log.clear();
        assert_eq!(log.total(), 0);
        assert!(log.records().is_empty());
    }

    #[test]
    fn a_bearer_jwt_is_recorded_as_its_claims_only() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"name":"t","scopes":[{"fixed_params":{"org":"acme"}}]}"#);
        let claims = jwt_payload(&format!("eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln")).unwrap();
        assert_eq!(claims["scopes"][0]["fixed_params"]["org"], "acme");
        for not_a_jwt in ["sk_test_123", "p.eyJ1IjoiYSJ9.c2ln.extra", "a.!!!.c"] {
            assert_eq!(jwt_payload(not_a_jwt), None, "{not_a_jwt}");
        }
    }
}
