//! One limiter per Clerk instance, shared by every client of that instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::client::{ClerkClient, ClerkClientOptions, parse_api_url};
use super::error::{ClerkCall, ClerkError};
use super::limiter::RequestLimiter;
use crate::core::admin_token::fingerprint;

/// An instance: its API URL and a fingerprint of its secret key (never the key itself).
type InstanceKey = (String, String);

/// Hands out [`ClerkClient`]s: one pooled HTTP client for all of them and one limiter per Clerk
/// instance, so that every TenantAccess pushing to the same instance shares its budget. Cheap to
/// clone; create one per operator.
#[derive(Clone)]
pub struct ClerkClients {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    http: reqwest::Client,
    options: Arc<ClerkClientOptions>,
    limiters: Mutex<HashMap<InstanceKey, Arc<RequestLimiter>>>,
}

impl std::fmt::Debug for ClerkClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkClients")
            .field("options", &self.inner.options)
            .field("instances", &self.instance_count())
            .finish_non_exhaustive()
    }
}

impl ClerkClients {
    /// A registry whose clients use `options`.
    ///
    /// # Errors
    /// [`ClerkError::ClerkUnavailable`] when the HTTP client cannot be built (TLS backend).
    pub fn new(options: ClerkClientOptions) -> Result<Self, ClerkError> {
        let http = crate::adapters::http::client(options.request_timeout).map_err(|error| {
            ClerkError::ClerkUnavailable {
                call: ClerkCall::Setup,
                status: None,
                message: format!("building the HTTP client: {error}"),
            }
        })?;
        Ok(Self {
            inner: Arc::new(RegistryInner {
                http,
                options: Arc::new(options),
                limiters: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options every client of this registry uses.
    #[must_use]
    pub fn options(&self) -> &ClerkClientOptions {
        &self.inner.options
    }

    /// A client for the instance at `api_url` (e.g. [`DEFAULT_API_URL`](super::DEFAULT_API_URL))
    /// with `secret_key` (surrounding whitespace ignored). Clients of the same URL and key share
    /// one limiter.
    ///
    /// # Errors
    /// [`ClerkError::InvalidApiUrl`] for an unusable URL; [`ClerkError::Unauthorized`] for a key
    /// that cannot be sent in a header.
    pub fn get_or_create(&self, api_url: &str, secret_key: &str) -> Result<ClerkClient, ClerkError> {
        let url = parse_api_url(api_url)?;
        let key = (url.as_str().to_owned(), fingerprint(secret_key.trim().as_bytes()));
        let limiter = {
            let mut limiters = self.inner.limiters.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget instances nobody holds a client of and whose window is empty: a fresh
            // limiter is then the same, and hundreds of rotated keys do not pile up.
            limiters.retain(|_, limiter| Arc::strong_count(limiter) > 1 || !limiter.is_idle());
            Arc::clone(
                limiters
                    .entry(key)
                    .or_insert_with(|| Arc::new(RequestLimiter::new(self.inner.options.budget))),
            )
        };
        ClerkClient::from_parts(
            self.inner.http.clone(),
            url,
            secret_key,
            limiter,
            Arc::clone(&self.inner.options),
        )
    }

    /// Instances with a limiter (for metrics and tests).
    #[must_use]
    pub fn instance_count(&self) -> usize {
        self.inner.limiters.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
