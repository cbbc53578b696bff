//! What the controller writes: each endpoint's health as last reported (changes only on flips)
//! and the `EndpointsHealthy` summary.

use super::classify::{ProbeOutcome, ProbeReason};
use crate::api::EndpointStatus;

/// The reported health of one endpoint: what goes into `status.endpoints[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The pipe.
    pub resource: String,
    /// Healthy (a 429 keeps the previous value; a skipped endpoint counts as healthy).
    pub healthy: bool,
    /// Why.
    pub reason: ProbeReason,
    /// HTTP status of the probe that set this health (absent when unreachable or skipped).
    pub status_code: Option<u16>,
    /// One line, redacted.
    pub message: String,
}

impl EndpointHealth {
    /// The health after `outcome`, given the previous verdict.
    #[must_use]
    pub fn from_outcome(resource: &str, outcome: &ProbeOutcome, previous: Option<bool>) -> Self {
        Self {
            resource: resource.to_owned(),
            healthy: outcome.healthy(previous),
            reason: outcome.reason,
            status_code: outcome.status_code,
            message: outcome.message.clone(),
        }
    }

    /// An endpoint that is not probed (`NoSampleParams`).
    #[must_use]
    pub fn skipped(resource: &str, message: &str) -> Self {
        Self {
            resource: resource.to_owned(),
            healthy: true,
            reason: ProbeReason::NoSampleParams,
            status_code: None,
            message: message.to_owned(),
        }
    }

    /// Whether `other` says something different about health (the verdict or the reason):
    /// only then is a change reported. Messages and status codes alone are not news.
    #[must_use]
    pub fn same_health(&self, other: &Self) -> bool {
        self.resource == other.resource && self.healthy == other.healthy && self.reason == other.reason
    }

    /// The health a `status.endpoints[]` entry reports (as written by this or an earlier run of
    /// the operator); `None` for a reason this version does not know.
    #[must_use]
    pub fn from_status(status: &EndpointStatus) -> Option<Self> {
        let reason = ProbeReason::ALL.into_iter().find(|reason| reason.as_str() == status.reason)?;
        Some(Self {
            resource: status.resource.clone(),
            healthy: status.healthy,
            reason,
            status_code: status.status_code,
            message: status.message.clone().unwrap_or_default(),
        })
    }

    /// The `status.endpoints[]` entry.
    #[must_use]
    pub fn to_status(&self) -> EndpointStatus {
        EndpointStatus {
            resource: self.resource.clone(),
            healthy: self.healthy,
            status_code: self.status_code,
            reason: self.reason.as_str().to_owned(),
            message: (!self.message.is_empty()).then(|| self.message.clone()),
            isolation: Vec::new(),
        }
    }
}

/// The `EndpointsHealthy` condition of a TenantAccess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSummary {
    /// Condition status: every endpoint healthy.
    pub healthy: bool,
    /// Condition reason: `Healthy`, or the reason of the first unhealthy endpoint.
    pub reason: &'static str,
    /// Condition message (redacted parts only).
    pub message: String,
}

/// Summarizes reported endpoints; `None` while none has been probed yet.
#[must_use]
pub fn summarize(endpoints: &[EndpointHealth]) -> Option<HealthSummary> {
    if endpoints.is_empty() {
        return None;
    }
    let unhealthy: Vec<&EndpointHealth> = endpoints.iter().filter(|e| !e.healthy).collect();
    let healthy_count = endpoints.len() - unhealthy.len();
    let Some(first) = unhealthy.first() else {
        return Some(HealthSummary {
            healthy: true,
            reason: ProbeReason::Healthy.as_str(),
            message: format!("{healthy_count} of {} endpoints healthy", endpoints.len()),
        });
    };
    let details: Vec<String> =
        unhealthy.iter().map(|e| format!("{}: {} ({})", e.resource, e.reason, e.message)).collect();
    Some(HealthSummary {
        healthy: false,
        reason: first.reason.as_str(),
        message: format!("{healthy_count} of {} endpoints healthy; {}", endpoints.len(), details.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(resource: &str, healthy: bool, reason: ProbeReason) -> EndpointHealth {
        EndpointHealth {
            resource: resource.into(),
            healthy,
            reason,
            status_code: Some(200),
            message: "m".into(),
        }
    }

    #[test]
    fn summary_names_the_first_unhealthy_reason() {
        assert_eq!(summarize(&[]), None);
        let all_good = [
            endpoint("a", true, ProbeReason::Healthy),
            endpoint("b", true, ProbeReason::RateLimited),
            EndpointHealth::skipped("c", "not probed"),
        ];
        let summary = summarize(&all_good).unwrap_or_else(|| panic!("a summary"));
        assert!(summary.healthy);
        assert_eq!((summary.reason, summary.message.as_str()), ("Healthy", "3 of 3 endpoints healthy"));

        let one_bad =
            [endpoint("a", true, ProbeReason::Healthy), endpoint("b", false, ProbeReason::PipeNotFound)];
        let summary = summarize(&one_bad).unwrap_or_else(|| panic!("a summary"));
        assert!(!summary.healthy);
        assert_eq!(summary.reason, "PipeNotFound");
        assert_eq!(summary.message, "1 of 2 endpoints healthy; b: PipeNotFound (m)");
    }

    #[test]
    fn a_status_entry_reads_back_as_the_health_it_reports() {
        for health in [
            endpoint("top_pages", false, ProbeReason::ServerError),
            endpoint("a", true, ProbeReason::Healthy),
            EndpointHealth::skipped("c", "not probed"),
        ] {
            assert_eq!(EndpointHealth::from_status(&health.to_status()), Some(health));
        }
        let mut unknown = endpoint("a", true, ProbeReason::Healthy).to_status();
        unknown.reason = "SomethingNewer".into();
        assert_eq!(EndpointHealth::from_status(&unknown), None);
    }

    #[test]
    fn status_entries_carry_reason_and_code() {
        let status = endpoint("top_pages", false, ProbeReason::ServerError).to_status();
        assert_eq!(status.reason, "ServerError");
        assert_eq!(status.status_code, Some(200));
        assert_eq!(status.message.as_deref(), Some("m"));
        let skipped = EndpointHealth::skipped("x", "not probed: ...").to_status();
        assert!(skipped.healthy);
        assert_eq!(skipped.reason, "NoSampleParams");
    }
}
