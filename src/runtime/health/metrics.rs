//! Probe metrics for an exporter to render at scrape time: latency and counts by
//! [`ProbeReason`] (a bounded label; never a message).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::adapters::health::ProbeReason;

/// Upper bounds (seconds) of the probe latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A cumulative latency histogram (Prometheus shape: counts per upper bound, plus `+Inf` as
/// `count`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Observations at or below each of [`LATENCY_BUCKETS`] (cumulative).
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    /// Every observation.
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    fn observe(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        for (bucket, bound) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

#[derive(Debug, Default)]
struct Recorded {
    /// Latency of every probe by outcome (bounded: one histogram per reason), and so the count
    /// of probes by outcome. Never reset when a TenantAccess goes: they are counters.
    by_reason: BTreeMap<ProbeReason, LatencyHistogram>,
}

/// Probe metrics: latency by outcome over all endpoints (a histogram per endpoint would be 13
/// series per tenant: 17 MB of text per scrape at 10,000 tenants). Endpoint up/down is the
/// scheduler's reported health ([`super::HealthScheduler::endpoint_up`]), not kept twice.
#[derive(Debug, Clone, Default)]
pub struct HealthMetrics {
    recorded: Arc<Mutex<Recorded>>,
}

impl HealthMetrics {
    /// Records one probe.
    pub fn record(&self, reason: ProbeReason, latency: Duration) {
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.by_reason.entry(reason).or_default().observe(latency);
        }
    }

    /// Probe latency by outcome, over every endpoint since the start.
    #[must_use]
    pub fn latency_by_reason(&self) -> Vec<(ProbeReason, LatencyHistogram)> {
        self.recorded
            .lock()
            .map(|recorded| recorded.by_reason.iter().map(|(r, h)| (*r, h.clone())).collect())
            .unwrap_or_default()
    }

    /// Probes with this outcome since the start.
    #[must_use]
    pub fn probes(&self, reason: ProbeReason) -> u64 {
        self.recorded
            .lock()
            .ok()
            .and_then(|recorded| recorded.by_reason.get(&reason).map(|h| h.count))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_latency_and_counts_by_outcome() {
        let metrics = HealthMetrics::default();
        metrics.record(ProbeReason::Healthy, Duration::from_millis(30));
        metrics.record(ProbeReason::ServerError, Duration::from_millis(700));
        metrics.record(ProbeReason::Healthy, Duration::from_millis(5));

        let latency = metrics.latency_by_reason();
        let healthy = &latency.iter().find(|(r, _)| *r == ProbeReason::Healthy).unwrap().1;
        assert_eq!(healthy.count, 2);
        assert_eq!(healthy.buckets[0], 1, "5ms is within 10ms");
        assert_eq!(healthy.buckets[2], 2, "30ms is within 50ms");
        assert_eq!(metrics.probes(ProbeReason::ServerError), 1);
        assert_eq!(metrics.probes(ProbeReason::Unreachable), 0);
    }
}
