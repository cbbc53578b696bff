//! What a running Clerk emulator knows: its secret key, templates, identity and budget.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ClerkError;
use super::identity::Identity;
use super::ratelimit::RequestBudget;
use super::templates::TemplateStore;
use crate::Clock;
use crate::faults::FaultSet;
use crate::request_log::RequestLog;

pub(crate) struct ClerkState {
    pub(crate) secret_key: String,
    pub(crate) templates: Mutex<TemplateStore>,
    pub(crate) identity: Mutex<Identity>,
    pub(crate) budget: RequestBudget,
    pub(crate) issuer: String,
    pub(crate) authorized_party: String,
    pub(crate) faults: Arc<FaultSet>,
    pub(crate) request_log: Arc<RequestLog>,
    pub(crate) clock: Clock,
}

impl std::fmt::Debug for ClerkState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClerkState")
            .field("secret_key", &"<redacted>")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Middleware in front of the Backend API: `Authorization: Bearer <secret key>` (401 otherwise),
/// then the request budget (429 with `Retry-After` when spent). Only authenticated requests count.
pub(crate) async fn authenticate_and_count(
    State(state): State<Arc<ClerkState>>,
    request: Request,
    next: Next,
) -> Response {
    let authorized = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|key| key.trim() == state.secret_key);
    if !authorized {
        return ClerkError::authentication_invalid().into_response();
    }
    if let Err(retry_after_secs) = state.budget.acquire(state.clock.now_millis()) {
        return ClerkError::too_many_requests(retry_after_secs).into_response();
    }
    next.run(request).await
}
