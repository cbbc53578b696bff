//! Clerk-only control endpoints: the write-only signing key (tests only), identity, budget.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::identity::{Identity, TestOrg};
use super::state::ClerkState;
use crate::control::control_error;
use crate::sync::lock;

pub(crate) fn router(state: Arc<ClerkState>) -> Router {
    Router::new()
        .route("/_emulator/jwt_templates/{id}/signing-key", get(read_signing_key))
        .route("/_emulator/identity", get(read_identity).put(write_identity))
        .route("/_emulator/identity/org", put(write_org))
        .route("/_emulator/request-budget", get(read_budget).put(write_budget))
        .with_state(state)
}

async fn read_signing_key(State(state): State<Arc<ClerkState>>, Path(id): Path<String>) -> Response {
    match lock(&state.templates).get(&id) {
        Some(template) => Json(json!({
            "id": template.id,
            "signing_algorithm": template.signing_algorithm,
            "signing_key": template.signing_key,
        }))
        .into_response(),
        None => control_error(StatusCode::NOT_FOUND, format!("no template {id}")),
    }
}

async fn read_identity(State(state): State<Arc<ClerkState>>) -> Json<Identity> {
    Json(lock(&state.identity).clone())
}

async fn write_identity(
    State(state): State<Arc<ClerkState>>,
    Json(identity): Json<Identity>,
) -> Json<Identity> {
    lock(&state.identity).clone_from(&identity);
    Json(identity)
}

/// Switches the active organization (`null` for none).
async fn write_org(State(state): State<Arc<ClerkState>>, Json(org): Json<Option<TestOrg>>) -> Json<Identity> {
    let mut identity = lock(&state.identity);
    identity.org = org;
    Json(identity.clone())
}

#[derive(Debug, Serialize, Deserialize)]
struct BudgetSettings {
    /// Requests per window; 0 disables the limit.
    requests: u32,
    window_secs: u64,
}

async fn read_budget(State(state): State<Arc<ClerkState>>) -> Json<BudgetSettings> {
    let (requests, window) = state.budget.settings();
    Json(BudgetSettings { requests, window_secs: window.as_secs() })
}

async fn write_budget(
    State(state): State<Arc<ClerkState>>,
    Json(settings): Json<BudgetSettings>,
) -> Response {
    if settings.window_secs == 0 {
        return control_error(StatusCode::BAD_REQUEST, "window_secs must be at least 1");
    }
    state.budget.configure(settings.requests, Duration::from_secs(settings.window_secs));
    Json(settings).into_response()
}
