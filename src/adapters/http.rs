//! The one HTTP client setup for Tinybird and Clerk: rustls, connection pooling, timeouts, a
//! user agent. Every external call goes through a client built here.

use std::time::Duration;

/// User agent of every request the operator makes.
pub const USER_AGENT: &str = concat!("tenant-access-operator/", env!("CARGO_PKG_VERSION"));

/// A pooled HTTP client whose every request times out after `timeout` (connecting after at most
/// 5 s).
///
/// # Errors
/// When the TLS backend cannot be initialised.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(32)
        .build()
}
