//! Probe metrics, kept per endpoint so that an exporter can render them at scrape time and no
//! series outlives its TenantAccess. Labels are bounded: namespace, name, resource and a
//! [`ProbeReason`]; never a message.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::classify::ProbeReason;
use super::scheduler::AccessKey;

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

/// What is known about one endpoint's probes (per endpoint, so kept small).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointMetrics {
    /// Up (healthy) or down after the last probe.
    pub up: bool,
}

/// Labels of one endpoint's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointLabels {
    /// TenantAccess namespace.
    pub namespace: String,
    /// TenantAccess name.
    pub name: String,
    /// The pipe.
    pub resource: String,
}

#[derive(Debug, Default)]
struct Recorded {
    endpoints: BTreeMap<EndpointLabels, EndpointMetrics>,
    /// Latency of every probe by outcome (bounded: one histogram per reason), and so the count
    /// of probes by outcome. Never reset when a TenantAccess goes: they are counters.
    by_reason: BTreeMap<ProbeReason, LatencyHistogram>,
}

/// Probe metrics: endpoint up/down per registered TenantAccess, shared with the exporter, and
/// latency by outcome over all endpoints (a histogram per endpoint would be 13 series per
/// tenant: 17 MB of text per scrape at 10,000 tenants).
#[derive(Debug, Clone, Default)]
pub struct HealthMetrics {
    recorded: Arc<Mutex<Recorded>>,
}

impl HealthMetrics {
    /// Records one probe.
    pub fn record(&self, key: &AccessKey, resource: &str, reason: ProbeReason, up: bool, latency: Duration) {
        let Ok(mut recorded) = self.recorded.lock() else { return };
        recorded.by_reason.entry(reason).or_default().observe(latency);
        let labels = EndpointLabels {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            resource: resource.to_owned(),
        };
        recorded.endpoints.insert(labels, EndpointMetrics { up });
    }

    /// Drops the series of endpoints of `key` not in `resources` (all of them for an empty list).
    pub fn retain(&self, key: &AccessKey, resources: &[&str]) {
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.endpoints.retain(|labels, _| {
                labels.namespace != key.namespace
                    || labels.name != key.name
                    || resources.contains(&labels.resource.as_str())
            });
        }
    }

    /// Every endpoint's metrics, for an exporter at scrape time.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(EndpointLabels, EndpointMetrics)> {
        self.recorded
            .lock()
            .map(|recorded| recorded.endpoints.iter().map(|(l, m)| (l.clone(), *m)).collect())
            .unwrap_or_default()
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
    fn records_up_per_endpoint_and_latency_by_outcome_and_forgets_removed_endpoints() {
        let metrics = HealthMetrics::default();
        let key = AccessKey::new("tenants", "acme");
        metrics.record(&key, "top_pages", ProbeReason::Healthy, true, Duration::from_millis(30));
        metrics.record(&key, "top_pages", ProbeReason::ServerError, false, Duration::from_millis(700));
        metrics.record(&key, "tenant_events", ProbeReason::Healthy, true, Duration::from_millis(5));

        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.len(), 2);
        let (labels, top_pages) = &snapshot[1];
        assert_eq!(labels.resource, "top_pages");
        assert!(!top_pages.up);
        assert!(snapshot[0].1.up);

        let latency = metrics.latency_by_reason();
        let healthy = &latency.iter().find(|(r, _)| *r == ProbeReason::Healthy).unwrap().1;
        assert_eq!(healthy.count, 2);
        assert_eq!(healthy.buckets[0], 1, "5ms is within 10ms");
        assert_eq!(healthy.buckets[2], 2, "30ms is within 50ms");
        assert_eq!(metrics.probes(ProbeReason::ServerError), 1);
        assert_eq!(metrics.probes(ProbeReason::Unreachable), 0);

        metrics.retain(&key, &["tenant_events"]);
        assert_eq!(metrics.snapshot().len(), 1);
        metrics.retain(&key, &[]);
        assert!(metrics.snapshot().is_empty());
        assert_eq!(metrics.probes(ProbeReason::Healthy), 2, "counters outlive their endpoints");
    }
}
