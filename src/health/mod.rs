//! Health checks of the Tinybird pipe endpoints a TenantAccess grants.
//!
//! Tinybird has no health endpoint: a pipe is probed by calling it (`GET
//! {api}/v0/pipes/{pipe}.json`, token in the `Authorization` header) and the answer is
//! classified into a bounded [`ProbeReason`] ([`classify`], pure). A [`ProbePlan`] says what to
//! probe for one TenantAccess and with which token: the issued token of a Secret output, or a
//! five-minute probe token signed in memory with `healthCheck.sampleParams` standing in for
//! Clerk shortcodes. The [`HealthScheduler`] runs the plans in its own task.
//!
//! How the controller uses it:
//! - at start: `let (health, changes) = HealthScheduler::start(HealthConfig::default(),
//!   Arc::new(HttpProber::new()?));` keep `health` in the context, and feed `changes` (a
//!   `Stream` of [`HealthChange`]) to `Controller::reconcile_on` as
//!   `ObjectRef::new(&c.key.name).within(&c.key.namespace)`; when `c.key_check` is set, also
//!   reconcile the TenantAccess's workspace (its admin token was probably refreshed);
//! - in each TenantAccess reconcile, after signing: `ProbePlan::for_access(&validated, &signer,
//!   issued_jwt)` then `health.register(key, plan)`, or `health.unregister(&key)` when it is
//!   `None` (disabled), the spec is invalid, or the TenantAccess is being deleted;
//! - for status: `health.endpoints(&key)` mapped with [`EndpointHealth::to_status`] into
//!   `status.endpoints`, and [`summarize`] for the `EndpointsHealthy` condition. These change
//!   only when health flips, so probes cause no status writes otherwise;
//! - metrics: [`HealthMetrics::snapshot`] at scrape time; at shutdown:
//!   `health.shutdown().await`.

pub mod classify;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod report;
pub mod schedule;
pub mod scheduler;

pub use classify::{AuthRejection, ProbeOutcome, ProbeReason, TransportError, classify};
pub use metrics::{HealthMetrics, LatencyHistogram};
pub use plan::{PROBE_TOKEN_LIFETIME, PlannedEndpoint, ProbeCredential, ProbePlan};
pub use probe::{EndpointProber, HttpProber, ProbeRequest};
pub use report::{EndpointHealth, HealthSummary, summarize};
pub use scheduler::{AccessKey, HealthChange, HealthConfig, HealthEvents, HealthScheduler};
