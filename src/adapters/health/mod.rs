//! Health checks of the Tinybird pipe endpoints a TenantAccess grants: what to probe, how to
//! send it and what the answer means. The task that runs the probes on their schedule is
//! [`crate::runtime::health::HealthScheduler`].
//!
//! Tinybird has no health endpoint: a pipe is probed by calling it (`GET
//! {api}/v0/pipes/{pipe}.json`, token in the `Authorization` header) and the answer is
//! classified into a bounded [`ProbeReason`] ([`classify()`], pure); whether a pipe exists is
//! asked for free with the admin token (`GET {api}/v0/pipes/{pipe}`). A [`ProbePlan`] says what
//! to probe for one TenantAccess and with which token: the issued token of a Secret output, or a
//! five-minute probe token signed in memory with `healthCheck.sampleParams` standing in for
//! Clerk shortcodes. [`EndpointHealth`] is a verdict as `status.endpoints` reports it, and
//! [`summarize`] makes the `EndpointsHealthy` condition of them.

pub mod classify;
pub mod issued_token;
pub mod plan;
pub mod probe;
pub mod report;

pub use classify::{AuthRejection, PipeDescribed, ProbeOutcome, ProbeReason, TransportError, classify};
pub use issued_token::{IssuedToken, TokenBasis};
pub use plan::{CredentialError, PROBE_TOKEN_LIFETIME, PlannedEndpoint, ProbeCredential, ProbePlan};
pub use probe::{EndpointProber, HttpProber, ProbePurpose, ProbeRequest};
pub use report::{EndpointHealth, HealthSummary, summarize};
