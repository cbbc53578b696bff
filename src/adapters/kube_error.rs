//! Kubernetes errors as people read them: the API server's own message (`deployments.apps "web"
//! not found`), not the Rust structure around it.

/// One line describing `error`: the API server's message and status code for an API error,
/// the client's description otherwise.
#[must_use]
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} (HTTP {})", status.message, status.code)
        }
        kube::Error::Api(status) => format!("the API server answered {} {}", status.code, status.reason),
        other => other.to_string(),
    }
}

/// Whether `error` is the API server's 404.
#[must_use]
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }))
        .unwrap_or_default();
        kube::Error::Api(status.into())
    }

    #[test]
    fn an_api_error_is_the_servers_message_without_rust_structure() {
        let text = describe(&api_error(404, "NotFound", "deployments.apps \"web\" not found"));
        assert_eq!(text, "deployments.apps \"web\" not found (HTTP 404)");
        let bare = describe(&api_error(503, "ServiceUnavailable", ""));
        assert_eq!(bare, "the API server answered 503 ServiceUnavailable");
        for text in [text, bare] {
            assert!(!text.contains("ErrorResponse") && !text.contains("Status {"), "{text}");
        }
        assert!(is_not_found(&api_error(404, "NotFound", "x")));
        assert!(!is_not_found(&api_error(409, "Conflict", "x")));
    }
}
