//! The admin HTTP server: `/metrics` (Prometheus), `/livez`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

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

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match crate::runtime::metrics::encode(&state.registry) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
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
