//! The health scheduler: the task that runs every TenantAccess's endpoint probes
//! ([`crate::adapters::health`] builds, sends and classifies them), one probe per distinct
//! (workspace, pipe) and interval, each token checked when it is written, a free existence
//! check of each pipe per interval, all within each workspace's query budget; and the probe
//! metrics it keeps.
//!
//! How the controller uses it (`runtime/controller/mod.rs` and `runtime/controller/report.rs`):
//! - at start: `let (health, events) = HealthScheduler::start(HealthConfig { concurrency, clock },
//!   Arc::new(HttpProber::new()?));` keep `health` in the context, and feed `events` (a
//!   `Stream` of [`HealthChange`]) to `Controller::reconcile_on` as
//!   `ObjectRef::new(&change.key.name).within(&change.key.namespace)`;
//! - in each TenantAccess reconcile, after signing: `ProbePlan::for_access(&validated,
//!   &workspace, issued_jwt)` then [`HealthScheduler::register`] (or [`HealthScheduler::resume`]
//!   with the verdicts the status holds), or [`HealthScheduler::unregister`] when it is `None`
//!   (disabled), the spec is invalid, or the TenantAccess is being deleted; when
//!   [`HealthScheduler::take_key_check`] says so, re-check the workspace's admin token (it was
//!   probably refreshed);
//! - for status: [`HealthScheduler::endpoints`] mapped with `EndpointHealth::to_status` into
//!   `status.endpoints`, and `summarize` for the `EndpointsHealthy` condition. These change only
//!   when health flips, so probes cause no status writes otherwise; each workspace's budget use
//!   ([`HealthScheduler::budget`]) goes to its `status.healthChecks`;
//! - metrics: [`HealthScheduler::metrics`] ([`HealthMetrics::latency_by_reason`]) at scrape
//!   time; at shutdown: [`HealthScheduler::shutdown`].

pub mod metrics;
pub mod probe_timing;
pub mod scheduler;

pub use metrics::{HealthMetrics, LatencyHistogram};
pub use scheduler::{
    AccessKey, BudgetUse, DescribedPipes, HealthChange, HealthConfig, HealthEvents, HealthScheduler,
    PipeVerdicts, workspace_name,
};
