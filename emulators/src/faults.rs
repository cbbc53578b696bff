//! Fault injection: latency, error statuses and hangs, switchable while the emulator runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::EmulatorError;
use crate::server::ShutdownSignal;
use crate::sync::lock;

/// Upper bound of a `timeout` hang, so a forgotten fault cannot hold a connection forever.
const MAX_HANG: Duration = Duration::from_secs(600);

/// One fault rule. The first rule matching a request applies to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Delay before answering (combined with `status`, or alone for a slow but correct answer).
    #[serde(default)]
    pub latency_ms: u64,
    /// Answer this status instead of the real answer: 408 or 500..=599.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Tinybird only: apply only to this pipe (as written in the URL, without extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe: Option<String>,
    /// Apply only to request paths starting with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Never answer: hang until the client gives up (or the emulator stops).
    #[serde(default)]
    pub timeout: bool,
    /// Apply to this many requests, then remove the rule; absent means until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl Fault {
    /// Answer `status` to every matching request.
    #[must_use]
    pub fn status(status: u16) -> Self {
        Self { status: Some(status), ..Self::default() }
    }

    /// Delay every matching request by `latency`.
    #[must_use]
    pub fn latency(latency: Duration) -> Self {
        Self { latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX), ..Self::default() }
    }

    /// Never answer matching requests.
    #[must_use]
    pub fn hang() -> Self {
        Self { timeout: true, ..Self::default() }
    }

    /// Restricts the rule to one Tinybird pipe.
    #[must_use]
    pub fn for_pipe(mut self, pipe: impl Into<String>) -> Self {
        self.pipe = Some(pipe.into());
        self
    }

    /// Restricts the rule to paths starting with `prefix`.
    #[must_use]
    pub fn for_path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// Applies the rule `times` times only.
    #[must_use]
    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    /// Checks the rule can be applied.
    ///
    /// # Errors
    /// [`EmulatorError::InvalidFault`] for a status other than 408, 429 or 5xx, or `times: 0`.
    /// A 429 stands for the plan's QPS ceiling (not a token's own `limits.rps`): it carries
    /// `Retry-After: 1` and no `X-RateLimit-*` of a token's bucket.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        if let Some(status) = self.status
            && status != 408
            && status != 429
            && !(500..=599).contains(&status)
        {
            return Err(EmulatorError::InvalidFault(format!("status {status} is not 408, 429 or 5xx")));
        }
        if self.times == Some(0) {
            return Err(EmulatorError::InvalidFault("times must be at least 1".into()));
        }
        Ok(())
    }

    fn matches(&self, path: &str, pipe: Option<&str>) -> bool {
        let pipe_matches = self.pipe.as_deref().is_none_or(|wanted| pipe == Some(wanted));
        let path_matches = self.path_prefix.as_deref().is_none_or(|prefix| path.starts_with(prefix));
        pipe_matches && path_matches
    }
}

/// The active fault rules of one emulator.
#[derive(Debug, Default)]
pub struct FaultSet {
    rules: Mutex<Vec<Fault>>,
}

impl FaultSet {
    /// Adds a rule after the existing ones.
    ///
    /// # Errors
    /// See [`Fault::validate`].
    pub fn add(&self, fault: Fault) -> Result<(), EmulatorError> {
        fault.validate()?;
        lock(&self.rules).push(fault);
        Ok(())
    }

    /// Removes every rule.
    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// The active rules.
    #[must_use]
    pub fn rules(&self) -> Vec<Fault> {
        lock(&self.rules).clone()
    }

    /// The rule applying to this request, counting one use of it.
    fn take(&self, path: &str, pipe: Option<&str>) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let index = rules.iter().position(|rule| rule.matches(path, pipe))?;
        let fault = rules[index].clone();
        if let Some(times) = rules[index].times.as_mut() {
            *times -= 1;
            if *times == 0 {
                rules.remove(index);
            }
        }
        Some(fault)
    }
}

/// What the fault middleware needs from its emulator.
#[derive(Clone, Debug)]
pub(crate) struct FaultInjector {
    pub(crate) faults: Arc<FaultSet>,
    pub(crate) shutdown: ShutdownSignal,
    /// Extracts the pipe a request targets (Tinybird), or `None`.
    pub(crate) pipe_of: fn(&str) -> Option<String>,
    /// Renders an injected error status in the emulated service's error shape.
    pub(crate) error_response: fn(StatusCode) -> Response,
}

/// Middleware applying the first matching fault rule.
pub(crate) async fn inject_faults(
    State(injector): State<FaultInjector>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let pipe = (injector.pipe_of)(&path);
    let Some(fault) = injector.faults.take(&path, pipe.as_deref()) else {
        return next.run(request).await;
    };
    if fault.latency_ms > 0 {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(fault.latency_ms)) => {}
            () = injector.shutdown.triggered() => {}
        }
    }
    if fault.timeout {
        tokio::select! {
            () = tokio::time::sleep(MAX_HANG) => {}
            () = injector.shutdown.triggered() => {}
        }
        return (injector.error_response)(StatusCode::GATEWAY_TIMEOUT);
    }
    match fault.status.and_then(|code| StatusCode::from_u16(code).ok()) {
        Some(status) if status == StatusCode::TOO_MANY_REQUESTS => {
            let mut response = (injector.error_response)(status);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            response
        }
        Some(status) => (injector.error_response)(status),
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_server_statuses() {
        assert!(Fault::status(404).validate().is_err());
        assert!(Fault::status(429).validate().is_ok());
        assert!(Fault::status(408).validate().is_ok());
        assert!(Fault::status(503).validate().is_ok());
        assert!(Fault::status(503).times(0).validate().is_err());
    }

    #[test]
    fn counted_rules_expire() {
        let set = FaultSet::default();
        set.add(Fault::status(503).times(2)).unwrap();
        assert!(set.take("/v0/pipes/a.json", Some("a")).is_some());
        assert!(set.take("/v0/pipes/a.json", Some("a")).is_some());
        assert!(set.take("/v0/pipes/a.json", Some("a")).is_none());
    }

    #[test]
    fn pipe_rules_match_only_their_pipe() {
        let set = FaultSet::default();
        set.add(Fault::status(500).for_pipe("top_pages")).unwrap();
        assert!(set.take("/v0/pipes/other.json", Some("other")).is_none());
        assert!(set.take("/v1/workspace", None).is_none());
        assert!(set.take("/v0/pipes/top_pages.json", Some("top_pages")).is_some());
    }
}
