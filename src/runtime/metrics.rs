//! Prometheus metrics at `/metrics`.
//!
//! Per-object gauges (token expiry and renewal, readiness, endpoint health and probe latency)
//! are computed at scrape time from the caches, like cert-manager does, so a deleted
//! TenantAccess leaves no stale series. Counters and histograms have bounded labels only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{ClusterTinybirdWorkspace, TinybirdWorkspace};
use crate::core::conditions::is_true;
use crate::core::well_known::condition;
use crate::runtime::exposition::Format;
use crate::runtime::health::HealthScheduler;

/// Labels of reconcile counters: kind and a bounded outcome or category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `TenantAccess`, `TinybirdWorkspace` or `ClusterTinybirdWorkspace`.
    pub kind: &'static str,
    /// `success`, or the category of the error the reconcile returned ([`Error::category`](crate::runtime::controller::error::Error::category)).
    pub outcome: &'static str,
}

/// Labels of per-kind histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The reconciled kind.
    pub kind: &'static str,
}

/// Labels of issuance counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssueLabels {
    /// `Issued`, `Renewed` or `Resigned`.
    pub reason: &'static str,
}

/// Labels of external-request counters (see [`crate::adapters::request_counts`]).
pub type CallLabels = crate::adapters::request_counts::RequestLabels;

/// Labels of `tenant_access_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The operator's version (its crate version).
    pub version: &'static str,
}

/// What the scrape-time collector reads.
#[derive(Clone)]
struct Sources {
    tenant_accesses:
        kube::runtime::reflector::Store<crate::runtime::controller::cached_access::CachedTenantAccess>,
    workspaces: kube::runtime::reflector::Store<TinybirdWorkspace>,
    cluster_workspaces: kube::runtime::reflector::Store<ClusterTinybirdWorkspace>,
    health: HealthScheduler,
}

/// The operator's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Reconciles by kind and outcome.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile durations by kind.
    pub reconcile_duration: Family<KindLabels, Histogram>,
    /// Tokens signed, by reason.
    pub tokens_signed: Family<IssueLabels, Counter>,
    /// Tinybird requests (admin-token checks, endpoint probes) by call and outcome; shared by
    /// the whole process, counted where the requests are made.
    pub tinybird_requests: Family<CallLabels, Counter>,
    /// Clerk requests by call and outcome; shared by the whole process, counted by the client.
    pub clerk_requests: Family<CallLabels, Counter>,
    /// Events dropped because the event queue was full.
    pub events_dropped: Counter,
    /// Events the API server refused, or that could not be sent.
    pub events_failed: Counter,
    /// Kubernetes requests cut by the request timeout, by verb.
    pub kube_request_timeouts: Family<crate::adapters::kube_client::VerbLabels, Counter>,
    /// Admin-token rotations that ended, by outcome (the record's phase).
    pub rotations: Family<OutcomeLabels, Counter>,
    /// Admission reviews the webhook answered, by kind and verdict; shared by the whole process.
    pub webhook_reviews: Family<crate::runtime::webhook::review::ReviewLabels, Counter>,
    sources: Arc<OnceLock<Sources>>,
}

/// Labels of the rotation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `Complete`, `NotRefreshed` or `KeyLost`.
    pub outcome: String,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.5, 12))
            }),
            tokens_signed: Family::default(),
            tinybird_requests: crate::adapters::request_counts::tinybird_family(),
            clerk_requests: crate::adapters::request_counts::clerk_family(),
            events_dropped: Counter::default(),
            events_failed: Counter::default(),
            kube_request_timeouts: Family::default(),
            rotations: Family::default(),
            webhook_reviews: crate::runtime::webhook::review::reviews_family(),
            sources: Arc::default(),
        }
    }
}

impl Metrics {
    /// A registry with every metric of the operator (`tenant_access_*`) and the process
    /// metrics (`process_*`).
    #[must_use]
    pub fn registry(&self) -> Registry {
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::runtime::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("tenant_access");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register(
            "build_info",
            "Always 1; the operator's version is in the version label",
            build_info,
        );
        registry.register("reconciles", "Reconciles by kind and outcome", self.reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile durations by kind",
            self.reconcile_duration.clone(),
        );
        registry.register("tokens_signed", "Tenant tokens signed, by reason", self.tokens_signed.clone());
        registry.register(
            "tinybird_requests",
            "Tinybird requests by call (verify: admin-token check, probe: pipe endpoint probe) and outcome (ok or why it failed)",
            self.tinybird_requests.clone(),
        );
        registry.register(
            "events_dropped",
            "Kubernetes events dropped because the event queue was full (a mass issuance); the conditions carry the same facts",
            self.events_dropped.clone(),
        );
        registry.register(
            "events_failed",
            "Kubernetes events the API server refused or that could not be sent (see the operator's log for why)",
            self.events_failed.clone(),
        );
        registry.register(
            "kube_request_timeouts",
            "Kubernetes API requests that did not complete within --kube-request-timeout-seconds (retried), by verb",
            self.kube_request_timeouts.clone(),
        );
        registry.register(
            "clerk_requests",
            "Clerk JWT template requests by call (list, get, create, update, delete) and outcome (ok or why it failed)",
            self.clerk_requests.clone(),
        );
        registry.register(
            "rotations",
            "Admin-token rotations that ended, by outcome (Complete, NotRefreshed, KeyLost)",
            self.rotations.clone(),
        );
        registry.register(
            "webhook_reviews",
            "Admission reviews the validating webhook answered, by kind and verdict (allowed, warned, refused)",
            self.webhook_reviews.clone(),
        );
        registry.register_collector(Box::new(CacheCollector { sources: self.sources.clone() }));
        root
    }

    /// Connects the scrape-time gauges to the caches (once the controllers exist).
    pub fn attach(
        &self,
        tenant_accesses: kube::runtime::reflector::Store<
            crate::runtime::controller::cached_access::CachedTenantAccess,
        >,
        workspaces: kube::runtime::reflector::Store<TinybirdWorkspace>,
        cluster_workspaces: kube::runtime::reflector::Store<ClusterTinybirdWorkspace>,
        health: HealthScheduler,
    ) {
        let _ = self.sources.set(Sources { tenant_accesses, workspaces, cluster_workspaces, health });
    }

    /// Counts a rotation that ended with `outcome` (a phase of bounded values).
    pub fn rotated(&self, outcome: &str) {
        self.rotations.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    /// Records a finished reconcile.
    pub fn reconciled(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        self.reconciles.get_or_create(&ReconcileLabels { kind, outcome }).inc();
        self.reconcile_duration.get_or_create(&KindLabels { kind }).observe(took.as_secs_f64());
    }
}

/// Encodes the per-object gauges from the caches at scrape time.
#[derive(Debug)]
struct CacheCollector {
    sources: Arc<OnceLock<Sources>>,
}

type Labels = Vec<(&'static str, String)>;

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sources) = self.sources.get() else { return Ok(()) };
        let mut expiry = Vec::new();
        let mut renewal = Vec::new();
        let mut ready = Vec::new();
        let mut isolated = Vec::new();
        let mut next_rotation = Vec::new();
        for access in sources.tenant_accesses.state() {
            let labels = vec![
                ("namespace", access.namespace_name().to_owned()),
                ("name", access.object_name().to_owned()),
            ];
            if let Some((expires_at, renewal_time)) = access.token_times() {
                #[allow(clippy::cast_precision_loss)]
                {
                    expiry.push((labels.clone(), expires_at as f64));
                    renewal.push((labels.clone(), renewal_time as f64));
                }
            }
            if let Some(pipes_isolated) = access.pipes_isolated() {
                isolated.push((labels.clone(), if pipes_isolated { 1.0 } else { 0.0 }));
            }
            let mut with_kind = labels;
            with_kind.push(("kind", "TenantAccess".to_owned()));
            ready.push((with_kind, if access.is_ready() { 1.0 } else { 0.0 }));
        }
        for workspace in sources.workspaces.state() {
            let conditions = workspace.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            let labels = vec![
                ("namespace", workspace.metadata.namespace.clone().unwrap_or_default()),
                ("name", workspace.metadata.name.clone().unwrap_or_default()),
                ("kind", "TinybirdWorkspace".to_owned()),
            ];
            push_next_rotation(&mut next_rotation, &labels, workspace.status.as_ref());
            ready.push((labels, if is_true(&conditions, condition::READY) { 1.0 } else { 0.0 }));
        }
        for workspace in sources.cluster_workspaces.state() {
            let conditions = workspace.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            let labels = vec![
                ("namespace", String::new()),
                ("name", workspace.metadata.name.clone().unwrap_or_default()),
                ("kind", "ClusterTinybirdWorkspace".to_owned()),
            ];
            push_next_rotation(&mut next_rotation, &labels, workspace.status.as_ref());
            ready.push((labels, if is_true(&conditions, condition::READY) { 1.0 } else { 0.0 }));
        }
        gauge_family(
            &mut encoder,
            "token_expiry_timestamp_seconds",
            "Expiry (exp) of the token in each TenantAccess's Secret",
            &expiry,
        )?;
        gauge_family(
            &mut encoder,
            "token_renewal_timestamp_seconds",
            "When each TenantAccess's token is renewed",
            &renewal,
        )?;
        gauge_family(&mut encoder, "ready", "1 when the resource's Ready condition is True", &ready)?;
        gauge_family(
            &mut encoder,
            "pipes_isolated",
            "1 when every pipe a TenantAccess is granted filters by the params it pins (its PipesIsolated condition; absent until judged)",
            &isolated,
        )?;
        gauge_family(
            &mut encoder,
            "rotation_next_timestamp_seconds",
            "When each workspace's next scheduled admin-token rotation is due (spec.rotation.interval)",
            &next_rotation,
        )?;

        let mut up = Vec::new();
        sources.health.endpoint_up(|key, resource, healthy| {
            let labels: Labels = vec![
                ("namespace", key.namespace.to_string()),
                ("name", key.name.to_string()),
                ("resource", resource.to_owned()),
            ];
            up.push((labels, if healthy { 1.0 } else { 0.0 }));
        });
        gauge_family(
            &mut encoder,
            "endpoint_up",
            "1 when the pipe endpoint is healthy (the verdict of its probes, as in status.endpoints)",
            &up,
        )?;

        let mut budget_use = Vec::new();
        let mut planned = Vec::new();
        let mut existence = Vec::new();
        sources.health.budgets(|workspace, budget| {
            let (api_url, workspace_id) = workspace.rsplit_once('#').unwrap_or((workspace, ""));
            let labels: Labels =
                vec![("api_url", api_url.to_owned()), ("workspace_id", workspace_id.to_owned())];
            budget_use.push((labels.clone(), budget.ratio()));
            #[allow(clippy::cast_precision_loss)]
            planned.push((labels.clone(), budget.planned_queries_per_day as f64));
            #[allow(clippy::cast_precision_loss)]
            existence.push((labels, budget.existence_checks_per_day as f64));
        });
        gauge_family(
            &mut encoder,
            "health_budget_use_ratio",
            "Share of the workspace's spec.healthChecks.maxQueriesPerDay its health checks use (1: the budget is full and the probe intervals are stretched)",
            &budget_use,
        )?;
        gauge_family(
            &mut encoder,
            "health_planned_queries_per_day",
            "Tinybird queries a day the workspace's health checks want at their intervals (pipes and token checks)",
            &planned,
        )?;
        gauge_family(
            &mut encoder,
            "health_existence_checks_per_day",
            "Pipe existence checks a day the workspace's health checks make (one per pipe and interval, never stretched): metadata calls with the admin token, not billed and not in the budget",
            &existence,
        )?;

        let by_reason = sources.health.metrics().latency_by_reason();
        let mut latency = encoder.encode_descriptor(
            "probe_duration_seconds",
            "Pipe endpoint probe latency by outcome, over every endpoint",
            None,
            MetricType::Histogram,
        )?;
        for (reason, histogram) in &by_reason {
            let label_set: Vec<(&'static str, &'static str)> = vec![("reason", reason.as_str())];
            let mut buckets = Vec::with_capacity(crate::runtime::health::metrics::LATENCY_BUCKETS.len() + 1);
            let mut previous = 0;
            for (bound, cumulative) in
                crate::runtime::health::metrics::LATENCY_BUCKETS.iter().zip(histogram.buckets)
            {
                buckets.push((*bound, cumulative.saturating_sub(previous)));
                previous = cumulative;
            }
            buckets.push((f64::MAX, histogram.count.saturating_sub(previous)));
            latency.encode_family(&label_set)?.encode_histogram::<Labels>(
                histogram.sum_seconds,
                histogram.count,
                &buckets,
                None,
            )?;
        }

        let mut outcomes = encoder.encode_descriptor(
            "probes",
            "Pipe endpoint probes by outcome",
            None,
            MetricType::Counter,
        )?;
        for (reason, histogram) in &by_reason {
            let labels: Vec<(&'static str, &'static str)> = vec![("reason", reason.as_str())];
            prometheus_client::metrics::counter::ConstCounter::new(histogram.count)
                .encode(outcomes.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Adds a workspace's next scheduled rotation, if it has one.
fn push_next_rotation(
    series: &mut Vec<(Labels, f64)>,
    labels: &Labels,
    status: Option<&crate::api::WorkspaceStatus>,
) {
    if let Some(due) = status.and_then(|s| s.rotation.as_ref()).and_then(|r| r.next_rotation_time.as_ref()) {
        #[allow(clippy::cast_precision_loss)]
        series.push((labels.clone(), due.0.as_second() as f64));
    }
}

/// Encodes a registry in `format`: OpenMetrics, or the Prometheus text format.
///
/// # Errors
/// Only if formatting fails.
pub fn encode(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(match format {
        Format::OpenMetrics => out,
        Format::Prometheus => crate::runtime::exposition::openmetrics_to_prometheus(&out),
    })
}
