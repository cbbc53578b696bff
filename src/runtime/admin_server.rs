//! The admin HTTP server: `/metrics` (Prometheus), `/livez`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::runtime::exposition::Format;

/// What the admin endpoints report.
#[derive(Clone)]
pub struct AdminState {
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// Set once the watches have synced.
    pub synced: Arc<AtomicBool>,
    /// Set while this replica waits for leadership (a healthy standby is ready).
    pub standby: Arc<AtomicBool>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("synced", &self.synced.load(Ordering::Relaxed))
            .field("standby", &self.standby.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `/metrics`: OpenMetrics when the scraper's `Accept` asks for it (Prometheus does), the
/// Prometheus text format 0.0.4 otherwise.
async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    match crate::runtime::metrics::encode(&state.registry, format) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.synced.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else if state.standby.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok: standby, waiting for leadership")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: caches not synced yet")
    }
}

/// Serves the admin routes until `shutdown` resolves.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    address: SocketAddr,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "admin server listening (/metrics, /livez, /readyz)");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
