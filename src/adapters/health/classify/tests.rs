use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};

use super::*;

/// A real-shaped Tinybird JWT (header `{"alg":"HS256","typ":"JWT"}`).
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ3b3Jrc3BhY2VfaWQiOiIzZjZjMWIxZSIsIm5hbWUiOiJ0ZW5hbnRfYWNtZSJ9.Q2xhc3NpZnlUZXN0U2lnbmF0dXJlMDEyMzQ1Njc4OQ";
const AUTH_DOCS: &str = "https://www.tinybird.co/docs/api-reference/overview#authentication";

fn tinybird_error(error: &str) -> Vec<u8> {
    serde_json::json!({"error": error, "documentation": AUTH_DOCS}).to_string().into_bytes()
}

fn answer(status: u16, body: &[u8]) -> ProbeOutcome {
    classify(Some(status), body, &HeaderMap::new(), None)
}

fn assert_no_token(outcome: &ProbeOutcome) {
    assert!(!outcome.message.contains("eyJ"), "token in message: {}", outcome.message);
    assert!(!outcome.message.contains("Q2xhc3NpZnlUZXN0"), "signature in message: {}", outcome.message);
    assert!(!outcome.message.contains('\n'), "message is not one line: {}", outcome.message);
}

#[test]
fn healthy_needs_tinybirds_json_shape() {
    let body = br#"{"meta":[{"name":"org","type":"String"}],"data":[{"org":"acme"}],"rows":1,
        "rows_before_limit_at_least":1,"statistics":{"elapsed":0.001,"rows_read":6,"bytes_read":120}}"#;
    let outcome = answer(200, body);
    assert_eq!(outcome.reason, ProbeReason::Healthy);
    assert_eq!(outcome.status_code, Some(200));
    assert!(outcome.healthy(Some(false)));

    let empty = br#"{"meta":[],"data":[],"rows":0,"statistics":{"elapsed":0,"rows_read":0,"bytes_read":0}}"#;
    assert_eq!(answer(200, empty).reason, ProbeReason::Healthy);
}

#[test]
fn a_200_that_is_not_tinybirds_json_is_a_bad_response() {
    for body in [
        &b"<html><body>Welcome to nginx!</body></html>"[..],
        br#"{"data":[]}"#,
        br#"{"data":{},"statistics":{}}"#,
        br#"[{"data":[],"statistics":{}}]"#,
        b"",
    ] {
        let outcome = answer(200, body);
        assert_eq!(outcome.reason, ProbeReason::BadResponse, "{}", String::from_utf8_lossy(body));
        assert!(!outcome.healthy(Some(true)));
    }
}

#[test]
fn refreshed_admin_token_is_signature_rejected_without_echoing_the_token() {
    let body = tinybird_error(&format!(
        "invalid authentication token. Invalid token b'{JWT}': Signature verification failed"
    ));
    let outcome = answer(403, &body);
    assert_eq!(outcome.reason, ProbeReason::SignatureRejected);
    assert_eq!(outcome.auth_rejection, Some(AuthRejection::SignatureFailed));
    assert!(outcome.auth_rejection.is_some_and(AuthRejection::suspects_the_key));
    assert!(!outcome.healthy(Some(true)));
    assert_no_token(&outcome);
    assert_eq!(
        outcome.message,
        "answered 403: invalid authentication token. Invalid token b'<redacted>': Signature verification failed"
    );
}

#[test]
fn expired_and_unknown_tokens_are_signature_rejected() {
    let expired = answer(
        403,
        &tinybird_error(&format!(
            "invalid authentication token. Invalid token b'{JWT}': Signature has expired"
        )),
    );
    assert_eq!(expired.reason, ProbeReason::SignatureRejected);
    assert_eq!(expired.auth_rejection, Some(AuthRejection::Expired));
    assert!(!AuthRejection::Expired.suspects_the_key());
    assert_no_token(&expired);

    let not_yet = answer(
        403,
        &tinybird_error(&format!(
            "invalid authentication token. Invalid token b'{JWT}': The token is not yet valid (nbf)"
        )),
    );
    assert_eq!(not_yet.auth_rejection, Some(AuthRejection::NotYetValid));
    assert_no_token(&not_yet);

    let unknown = answer(403, &tinybird_error("invalid authentication token"));
    assert_eq!(unknown.reason, ProbeReason::SignatureRejected);
    assert_eq!(unknown.auth_rejection, Some(AuthRejection::Other));
}

#[test]
fn valid_token_without_the_pipe_is_scope_rejected() {
    let outcome =
        answer(403, &tinybird_error("The token you have provided doesn't have access to this resource"));
    assert_eq!(outcome.reason, ProbeReason::ScopeRejected);
    assert_eq!(outcome.auth_rejection, None);
    assert_eq!(
        outcome.message,
        "answered 403: The token you have provided doesn't have access to this resource"
    );
}

#[test]
fn other_403s_are_bad_responses() {
    assert_eq!(answer(403, b"Forbidden by the corporate proxy").reason, ProbeReason::BadResponse);
}

#[test]
fn missing_pipe_timeout_and_server_errors() {
    let missing = answer(404, &tinybird_error("The pipe 'top_pages' does not exist"));
    assert_eq!(missing.reason, ProbeReason::PipeNotFound);
    assert_eq!(missing.message, "answered 404: The pipe 'top_pages' does not exist");

    let timeout =
        answer(408, &tinybird_error("[Error] Timeout exceeded: elapsed 10.0 seconds, maximum: 10 seconds"));
    assert_eq!(timeout.reason, ProbeReason::QueryTimeout);

    for status in [500, 502, 503, 504] {
        let outcome = answer(status, b"<html>\n<h1>502 Bad Gateway</h1>\n</html>");
        assert_eq!(outcome.reason, ProbeReason::ServerError);
        assert_eq!(outcome.status_code, Some(status));
        assert_eq!(outcome.message, format!("answered {status} with a non-JSON body"));
    }
    assert_eq!(
        answer(400, &tinybird_error("Missing required parameter 'org'")).reason,
        ProbeReason::BadResponse
    );
    assert_eq!(answer(301, b"").reason, ProbeReason::BadResponse);
}

#[test]
fn rate_limit_is_not_unhealthy_and_carries_retry_after() {
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("3"));
    headers.insert("x-ratelimit-reset", HeaderValue::from_static("1"));
    let body = tinybird_error("Too many requests: retry after 3 seconds");
    let outcome = classify(Some(429), &body, &headers, None);
    assert_eq!(outcome.reason, ProbeReason::RateLimited);
    assert_eq!(outcome.retry_after, Some(Duration::from_secs(3)));
    assert!(outcome.healthy(Some(true)));
    assert!(!outcome.healthy(Some(false)), "keeps the previous verdict");
    assert!(outcome.healthy(None), "not a failure when nothing is known yet");

    let mut reset_only = HeaderMap::new();
    reset_only.insert("x-ratelimit-reset", HeaderValue::from_static("2"));
    assert_eq!(classify(Some(429), &body, &reset_only, None).retry_after, Some(Duration::from_secs(2)));
    assert_eq!(answer(429, &body).retry_after, None);
}

#[test]
fn no_answer_is_unreachable() {
    let timeout = classify(None, b"", &HeaderMap::new(), Some(&TransportError::Timeout));
    assert_eq!(timeout.reason, ProbeReason::Unreachable);
    assert_eq!(timeout.status_code, None);
    let refused = classify(
        None,
        b"",
        &HeaderMap::new(),
        Some(&TransportError::Connect("Connection refused (os error 111)".into())),
    );
    assert_eq!(refused.reason, ProbeReason::Unreachable);
    assert_eq!(refused.message, "cannot connect: Connection refused (os error 111)");
}

#[test]
fn echoed_admin_tokens_and_known_secrets_are_redacted() {
    let admin = "p.eyJ1IjogIjNmNmMxYjFlIiwgImlkIjogImFiYyIsICJob3N0IjogImV1X3NoYXJlZCJ9.c2lnbmF0dXJlMDEyMzQ1";
    let outcome = answer(500, &tinybird_error(&format!("upstream said: invalid token {admin}")));
    assert_eq!(outcome.message, "answered 500: upstream said: invalid token <redacted>");

    // `key=value` hides the token's shape from the shape-based redaction; the token the probe
    // sent is removed anyway, as a known secret.
    let outcome = answer(502, &tinybird_error(&format!("GET /v0/pipes/x.json?token={JWT} failed")))
        .redacted_with(&[JWT]);
    assert_eq!(outcome.message, "answered 502: GET /v0/pipes/x.json?token=<redacted> failed");

    let opaque = "not-a-jwt-but-secret-12345";
    let outcome = answer(503, format!("{{\"error\": \"bad {opaque}\"}}").as_bytes()).redacted_with(&[opaque]);
    assert_eq!(outcome.message, "answered 503: bad <redacted>");
}

#[test]
fn long_errors_become_one_short_line() {
    let error = format!("{}\n{JWT}\n{}", "x".repeat(150), "y".repeat(500));
    let outcome = answer(502, &tinybird_error(&error));
    assert!(outcome.message.chars().count() <= 200, "{}", outcome.message);
    assert!(outcome.message.ends_with("..."));
    assert_no_token(&outcome);
}

/// Another tenant's rows, as a pipe (or a `q` query over it) would return them.
const FOREIGN_ROWS: &str = r#"[{"org":"globex","email":"ceo@globex.example","revenue":912345}]"#;

fn assert_no_rows(outcome: &ProbeOutcome) {
    for leaked in ["globex", "ceo@", "912345"] {
        assert!(!outcome.message.contains(leaked), "a row reached the message: {}", outcome.message);
    }
}

#[test]
fn only_the_error_text_of_an_answer_reaches_the_message_never_its_rows() {
    // An error body that also carries data: only `error` is kept.
    let body = format!(r#"{{"error":"Too many rows","data":{FOREIGN_ROWS},"rows":1}}"#);
    let outcome = answer(400, body.as_bytes());
    assert_eq!(outcome.message, "answered 400: Too many rows");

    // Rows without an error (a 4xx/5xx with a pipe-shaped body): nothing of them.
    let body = format!(r#"{{"meta":[],"data":{FOREIGN_ROWS},"statistics":{{}}}}"#);
    for status in [400, 404, 500] {
        let outcome = answer(status, body.as_bytes());
        assert_eq!(outcome.message, format!("answered {status}"));
        assert_no_rows(&outcome);
    }

    // An `error` that is not text (an object holding rows): named, not repeated.
    let body = format!(r#"{{"error":{{"rows":{FOREIGN_ROWS}}}}}"#);
    let outcome = answer(500, body.as_bytes());
    assert_eq!(outcome.message, "answered 500 with an error field that is not text");

    // A non-JSON body (a proxy page, a CSV dump): never repeated.
    let outcome = answer(502, b"org,email,revenue\nglobex,ceo@globex.example,912345\n");
    assert_eq!(outcome.message, "answered 502 with a non-JSON body");
    let outcome = answer(403, format!("Forbidden {JWT}").as_bytes());
    assert_eq!(outcome.message, "answered 403 with a non-JSON body");
}

#[test]
fn a_hostile_error_with_tokens_and_100_kib_becomes_a_bounded_redacted_line() {
    let admin = "p.eyJ1IjogIjNmNmMxYjFlIiwgImlkIjogImFiYyJ9.c2lnbmF0dXJlMDEyMzQ1Njc4OQ";
    let hostile = format!("boom {JWT} {admin}\n{}\n{FOREIGN_ROWS}", "row ".repeat(25 * 1024));
    assert!(hostile.len() >= 100 * 1024);
    let body = serde_json::json!({"error": hostile, "data": FOREIGN_ROWS}).to_string();
    let outcome = answer(500, body.as_bytes());
    assert!(outcome.message.chars().count() <= 200, "{} chars", outcome.message.chars().count());
    assert!(
        outcome.message.starts_with("answered 500: boom <redacted> <redacted> row row"),
        "{}",
        outcome.message
    );
    assert!(!outcome.message.contains("p.eyJ"), "{}", outcome.message);
    assert_no_token(&outcome);
    assert_no_rows(&outcome);
}

#[test]
fn every_reason_has_a_distinct_label() {
    let labels: std::collections::BTreeSet<&str> = ProbeReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), ProbeReason::ALL.len());
    assert_eq!(ProbeReason::RateLimited.verdict(), None);
    assert_eq!(ProbeReason::NoSampleParams.verdict(), Some(true));
}
