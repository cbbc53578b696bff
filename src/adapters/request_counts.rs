//! Process-wide counts of the requests the operator sends to Tinybird and Clerk, successes
//! included, by call and bounded outcome.
//!
//! They are counted where the requests are made (the admin-token check, the endpoint probes,
//! the Clerk client) rather than by their callers, so no request escapes the count; the metrics
//! registry exposes them as `tenant_access_tinybird_requests_total` and
//! `tenant_access_clerk_requests_total`.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::adapters::clerk::{ClerkCall, ClerkError};
use crate::adapters::health::{ProbePurpose, ProbeReason};

/// Labels of the external-request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// What the request was for: `verify` (admin token), `probe` (a pipe's shared health
    /// probe), `token_check` (a TenantAccess token's own check) or `pipe_exists` (a pipe's
    /// existence check with the admin token, not billed) for Tinybird; `list`, `get`, `create`,
    /// `update` or `delete` (JWT templates) for Clerk.
    pub call: &'static str,
    /// `ok`, or the bounded reason it failed (a condition or probe reason).
    pub outcome: &'static str,
}

/// The outcome label of a success.
pub const OK: &str = "ok";

static TINYBIRD: LazyLock<Family<RequestLabels, Counter>> = LazyLock::new(Family::default);
static CLERK: LazyLock<Family<RequestLabels, Counter>> = LazyLock::new(Family::default);

/// The Tinybird request counter (shared by every registry of the process).
#[must_use]
pub fn tinybird_family() -> Family<RequestLabels, Counter> {
    TINYBIRD.clone()
}

/// The Clerk request counter (shared by every registry of the process).
#[must_use]
pub fn clerk_family() -> Family<RequestLabels, Counter> {
    CLERK.clone()
}

/// Counts one Tinybird request.
pub fn tinybird(call: &'static str, outcome: &'static str) {
    TINYBIRD.get_or_create(&RequestLabels { call, outcome }).inc();
}

/// Counts one health request to Tinybird by its purpose (a pipe's probe, a token's own check,
/// a pipe's existence check) and reason (`Healthy`, for an existence check "the pipe exists",
/// counts as `ok`).
pub fn probe(reason: ProbeReason, purpose: ProbePurpose) {
    tinybird(purpose.call_label(), if reason == ProbeReason::Healthy { OK } else { reason.as_str() });
}

/// Counts one Clerk request: `error` is `None` when Clerk answered with success.
pub fn clerk(call: ClerkCall, error: Option<&ClerkError>) {
    let call = match call {
        ClerkCall::Setup => "setup",
        ClerkCall::List => "list",
        ClerkCall::Get => "get",
        ClerkCall::Create => "create",
        ClerkCall::Update => "update",
        ClerkCall::Delete => "delete",
    };
    CLERK.get_or_create(&RequestLabels { call, outcome: error.map_or(OK, ClerkError::reason) }).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successful_request_counts_as_ok() {
        let before = clerk_family().get_or_create(&RequestLabels { call: "get", outcome: OK }).get();
        clerk(ClerkCall::Get, None);
        assert!(clerk_family().get_or_create(&RequestLabels { call: "get", outcome: OK }).get() > before);
        let before = tinybird_family().get_or_create(&RequestLabels { call: "probe", outcome: OK }).get();
        probe(ProbeReason::Healthy, ProbePurpose::Pipe);
        assert!(
            tinybird_family().get_or_create(&RequestLabels { call: "probe", outcome: OK }).get() > before
        );
    }
}
