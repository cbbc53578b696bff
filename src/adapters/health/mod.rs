//! Health checks of the Tinybird pipe endpoints a TenantAccess grants.
//!
//! Tinybird has no health endpoint: a pipe is probed by calling it (`GET
//! {api}/v0/pipes/{pipe}.json`, token in the `Authorization` header) and the answer is
//! classified into a bounded [`ProbeReason`] ([`classify()`], pure). A [`ProbePlan`] says what to
//! probe for one TenantAccess and with which token: the issued token of a Secret output, or a
//! five-minute probe token signed in memory with `healthCheck.sampleParams` standing in for
//! Clerk shortcodes. The [`HealthScheduler`] runs the plans in its own task: one probe per
//! distinct (workspace, pipe) and interval for every access granting it, each token checked when
//! it is written, all within the workspace's query budget.
//!
//! How the controller uses it (`runtime/controller/mod.rs` and `runtime/controller/tenants.rs`):
//! - at start: `let (health, events) = HealthScheduler::start(HealthConfig { concurrency, clock },
//!   Arc::new(HttpProber::new()?));` keep `health` in the context, and feed `events` (a
//!   `Stream` of [`HealthChange`]) to `Controller::reconcile_on` as
//!   `ObjectRef::new(&change.key.name).within(&change.key.namespace)`;
//! - in each TenantAccess reconcile, after signing: [`ProbePlan::for_access`]`(&validated,
//!   &workspace, issued_jwt)` then [`HealthScheduler::register`], or
//!   [`HealthScheduler::unregister`] when it is `None` (disabled), the spec is invalid, or the
//!   TenantAccess is being deleted; when [`HealthScheduler::take_key_check`] says so, re-check
//!   the workspace's admin token (it was probably refreshed);
//! - for status: [`HealthScheduler::endpoints`] mapped with [`EndpointHealth::to_status`] into
//!   `status.endpoints`, and [`summarize`] for the `EndpointsHealthy` condition. These change
//!   only when health flips, so probes cause no status writes otherwise;
//! - metrics: [`HealthScheduler::metrics`] ([`HealthMetrics::latency_by_reason`]) at scrape
//!   time; at shutdown: [`HealthScheduler::shutdown`].

pub mod classify;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod probe_timing;
pub mod report;
pub mod scheduler;

pub use classify::{AuthRejection, ProbeOutcome, ProbeReason, TransportError, classify};
pub use metrics::{HealthMetrics, LatencyHistogram};
pub use plan::{PROBE_TOKEN_LIFETIME, PlannedEndpoint, ProbeCredential, ProbePlan};
pub use probe::{EndpointProber, HttpProber, ProbePurpose, ProbeRequest};
pub use report::{EndpointHealth, HealthSummary, summarize};
pub use scheduler::{AccessKey, BudgetUse, HealthChange, HealthConfig, HealthEvents, HealthScheduler};
