//! The Clerk emulator: the JWT template Backend API (with Clerk's validation errors, write-only
//! signing keys and a request budget) and session token minting for a configurable test identity.

mod control;
mod errors;
mod identity;
mod mint;
mod ratelimit;
mod routes;
mod shortcodes;
mod state;
mod templates;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::middleware::from_fn_with_state;

pub use identity::{Identity, TestOrg, TestUser};
pub use ratelimit::{DEFAULT_BUDGET_WINDOW, DEFAULT_REQUEST_BUDGET};
pub use templates::JwtTemplate;

use crate::faults::{Fault, FaultInjector, FaultSet, inject_faults};
use crate::request_log::{RequestLog, record_requests};
use crate::server::{RunningServer, ShutdownSignal};
use crate::sync::lock;
use crate::{Clock, EmulatorError, random};
use ratelimit::RequestBudget;
use state::ClerkState;
use templates::TemplateStore;

/// How to start a Clerk emulator. `Default`: a random `sk_test_...` key on `127.0.0.1:0`, a budget
/// of 100 requests per 10 s, Alice active in acme, the system clock.
#[derive(Clone)]
pub struct ClerkConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The Backend API secret key; a random `sk_test_...` when absent.
    pub secret_key: Option<String>,
    /// Authenticated requests allowed per window; 0 disables the limit.
    pub request_budget: u32,
    /// The budget window.
    pub budget_window: Duration,
    /// The signed-in user and active organization.
    pub identity: Identity,
    /// `iss` of minted tokens; the emulator's base URL when absent.
    pub issuer: Option<String>,
    /// `azp` of minted tokens.
    pub authorized_party: String,
    /// Time source for `iat`/`exp`/`nbf`, timestamps and the budget window.
    pub clock: Clock,
}

impl Default for ClerkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            secret_key: None,
            request_budget: DEFAULT_REQUEST_BUDGET,
            budget_window: DEFAULT_BUDGET_WINDOW,
            identity: Identity::default(),
            issuer: None,
            authorized_party: "http://localhost:3000".to_owned(),
            clock: Clock::system(),
        }
    }
}

impl std::fmt::Debug for ClerkConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClerkConfig")
            .field("listen", &self.listen)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("request_budget", &self.request_budget)
            .field("budget_window", &self.budget_window)
            .field("identity", &self.identity)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A running Clerk emulator. Stops when dropped or on [`ClerkEmulator::shutdown`].
#[derive(Debug)]
pub struct ClerkEmulator {
    server: RunningServer,
    state: Arc<ClerkState>,
}

impl ClerkEmulator {
    /// Starts an emulator on the current tokio runtime.
    ///
    /// # Errors
    /// A listen address that cannot be bound.
    pub async fn start(config: ClerkConfig) -> Result<Self, EmulatorError> {
        let listener = RunningServer::bind(config.listen).await?;
        let state = Arc::new(ClerkState {
            secret_key: config.secret_key.unwrap_or_else(|| format!("sk_test_{}", random::base62(40))),
            templates: Mutex::new(TemplateStore::default()),
            identity: Mutex::new(config.identity),
            budget: RequestBudget::new(config.request_budget, config.budget_window),
            issuer: config.issuer.unwrap_or_else(|| listener.base_url()),
            authorized_party: config.authorized_party,
            faults: Arc::new(FaultSet::default()),
            request_log: Arc::new(RequestLog::default()),
            clock: config.clock,
        });
        let shutdown = ShutdownSignal::new();
        let injector = FaultInjector {
            faults: Arc::clone(&state.faults),
            shutdown: shutdown.clone(),
            pipe_of: |_| None,
            error_response: errors::injected_fault_response,
        };
        let shared_controls = crate::control::SharedControls {
            clock: state.clock.clone(),
            faults: Arc::clone(&state.faults),
            request_log: Arc::clone(&state.request_log),
        };
        let router = routes::router(Arc::clone(&state))
            .layer(from_fn_with_state(injector, inject_faults))
            .merge(crate::control::router(shared_controls))
            .merge(control::router(Arc::clone(&state)))
            .layer(from_fn_with_state(Arc::clone(&state.request_log), record_requests));
        let server = listener.serve(router, shutdown);
        tracing::info!(addr = %server.local_addr(), "clerk emulator listening");
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    #[must_use]
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The Backend API base, `{base_url}/v1`: what replaces `https://api.clerk.com/v1`.
    #[must_use]
    pub fn api_url(&self) -> String {
        format!("{}/v1", self.server.base_url())
    }

    /// The bound socket address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The Backend API secret key (`Authorization: Bearer <key>`).
    #[must_use]
    pub fn secret_key(&self) -> &str {
        &self.state.secret_key
    }

    /// `iss` of minted tokens.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// Every template, signing keys included (the test-only door).
    #[must_use]
    pub fn templates(&self) -> Vec<JwtTemplate> {
        lock(&self.state.templates).list().to_vec()
    }

    /// One template by id, signing key included.
    #[must_use]
    pub fn template(&self, id: &str) -> Option<JwtTemplate> {
        lock(&self.state.templates).get(id).cloned()
    }

    /// One template by name, signing key included.
    #[must_use]
    pub fn template_by_name(&self, name: &str) -> Option<JwtTemplate> {
        lock(&self.state.templates).find_by_name(name).cloned()
    }

    /// The custom signing key of a template (never returned by the API).
    #[must_use]
    pub fn signing_key(&self, template_id: &str) -> Option<String> {
        lock(&self.state.templates).get(template_id).and_then(|template| template.signing_key.clone())
    }

    /// The current identity.
    #[must_use]
    pub fn identity(&self) -> Identity {
        lock(&self.state.identity).clone()
    }

    /// Replaces the identity used for the next minted tokens.
    pub fn set_identity(&self, identity: Identity) {
        *lock(&self.state.identity) = identity;
    }

    /// Switches the active organization (`None`: no organization).
    pub fn set_org(&self, org: Option<TestOrg>) {
        lock(&self.state.identity).org = org;
    }

    /// Changes the request budget (0 = unlimited) and starts a fresh window.
    pub fn set_request_budget(&self, requests: u32, window: Duration) {
        self.state.budget.configure(requests, window);
    }

    /// Adds a fault rule (use `path_prefix` to target a route).
    ///
    /// # Errors
    /// [`EmulatorError::InvalidFault`] for a status other than 408, 429 or 5xx.
    pub fn add_fault(&self, fault: Fault) -> Result<(), EmulatorError> {
        self.state.faults.add(fault)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// The API requests answered so far.
    #[must_use]
    pub fn request_log(&self) -> &RequestLog {
        &self.state.request_log
    }

    /// The emulator's clock (shared with the config's clock).
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    /// Stops the server, letting in-flight requests finish (hung ones are released).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
