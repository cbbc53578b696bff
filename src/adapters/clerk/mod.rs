//! Clerk Backend API client for JWT templates.
//!
//! [`ClerkClients`] hands out a [`ClerkClient`] per Clerk instance (API URL and secret key); all
//! clients of one instance share a [`RequestLimiter`] so that the operator stays inside the
//! instance's request budget (100 per 10 s on a development instance) however many
//! TenantAccess call at once: callers wait for a slot instead of failing, and a 429 pauses the
//! whole instance until its `Retry-After`. Outages are retried a few times where that is safe;
//! a create whose outcome is unknown is looked up by name before it is sent again.
//!
//! Every failure is a [`ClerkError`] with a bounded [`ClerkError::reason`] and a one-line,
//! redacted message that never holds the secret key or the signing key.

mod client;
mod error;
mod limiter;
mod registry;
mod template;

pub use client::{ClerkClient, ClerkClientOptions, DEFAULT_API_URL, DEFAULT_API_VERSION};
pub use error::{ClerkCall, ClerkError, MAX_RETRY_AFTER, parse_retry_after, reason};
pub use limiter::{Permit, RequestBudget, RequestLimiter, Requester};
pub use registry::ClerkClients;
pub use template::{ClerkTemplateBody, DeleteOutcome, RemoteTemplate};

#[cfg(test)]
mod tests;
