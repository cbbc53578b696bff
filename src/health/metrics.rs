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

/// What is known about one endpoint's probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointMetrics {
    /// Up (healthy) or down after the last probe.
    pub up: bool,
    /// Latency of the last probe.
    pub last_latency: Duration,
    /// Latency of every probe.
    pub latency: LatencyHistogram,
    /// Probes by outcome reason.
    pub outcomes: BTreeMap<ProbeReason, u64>,
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

/// Probe metrics of every registered TenantAccess, shared with the exporter.
#[derive(Debug, Clone, Default)]
pub struct HealthMetrics {
    endpoints: Arc<Mutex<BTreeMap<EndpointLabels, EndpointMetrics>>>,
}

impl HealthMetrics {
    /// Records one probe.
    pub fn record(&self, key: &AccessKey, resource: &str, reason: ProbeReason, up: bool, latency: Duration) {
        let labels = EndpointLabels {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            resource: resource.to_owned(),
        };
        if let Ok(mut endpoints) = self.endpoints.lock() {
            let metrics = endpoints.entry(labels).or_default();
            metrics.up = up;
            metrics.last_latency = latency;
            metrics.latency.observe(latency);
            *metrics.outcomes.entry(reason).or_default() += 1;
        }
    }

    /// Drops the series of endpoints of `key` not in `resources` (all of them for an empty list).
    pub fn retain(&self, key: &AccessKey, resources: &[&str]) {
        if let Ok(mut endpoints) = self.endpoints.lock() {
            endpoints.retain(|labels, _| {
                labels.namespace != key.namespace
                    || labels.name != key.name
                    || resources.contains(&labels.resource.as_str())
            });
        }
    }

    /// Every endpoint's metrics, for an exporter at scrape time.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(EndpointLabels, EndpointMetrics)> {
        self.endpoints
            .lock()
            .map(|endpoints| endpoints.iter().map(|(l, m)| (l.clone(), m.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_latency_up_and_outcomes_per_endpoint_and_forgets_removed_ones() {
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
        assert_eq!(top_pages.last_latency, Duration::from_millis(700));
        assert_eq!(top_pages.latency.count, 2);
        assert_eq!(top_pages.latency.buckets[2], 1, "30ms is within 50ms");
        assert_eq!(top_pages.latency.buckets[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(top_pages.outcomes[&ProbeReason::Healthy], 1);
        assert_eq!(top_pages.outcomes[&ProbeReason::ServerError], 1);

        metrics.retain(&key, &["tenant_events"]);
        assert_eq!(metrics.snapshot().len(), 1);
        metrics.retain(&key, &[]);
        assert!(metrics.snapshot().is_empty());
    }
}
