//! Tinybird-only control endpoints: the admin token (tests and demo only), pipes (and editing a
//! node's SQL), data sources, rate limits, the billed and free call counters.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, put};
use serde_json::{Value, json};

use serde::Deserialize;

use super::datasources::DataSourceDefinition;
use super::pipes::PipeDefinition;
use super::state::{ADMIN_TOKEN_NAME, TinybirdState};
use crate::EmulatorError;
use crate::control::control_error;

pub(crate) fn router(state: Arc<TinybirdState>) -> Router {
    Router::new()
        .route("/_emulator/admin-token", get(read_admin_token))
        .route("/_emulator/pipes", get(list_pipes).put(upsert_pipe))
        .route("/_emulator/pipes/{name}", get(read_pipe).delete(remove_pipe))
        .route("/_emulator/pipes/{name}/nodes/{node}", put(edit_node))
        .route("/_emulator/counters", get(read_counters))
        .route("/_emulator/datasources", get(list_datasources).put(upsert_datasource))
        .route("/_emulator/datasources/{name}", delete(remove_datasource))
        .route("/_emulator/rate-limits", delete(clear_rate_limits))
        .with_state(state)
}

async fn read_admin_token(State(state): State<Arc<TinybirdState>>) -> Json<Value> {
    Json(json!({
        "token": state.current_admin_token(),
        "id": state.admin_token_id,
        "name": ADMIN_TOKEN_NAME,
        "workspace_id": state.workspace.id,
    }))
}

async fn list_pipes(State(state): State<Arc<TinybirdState>>) -> Json<Vec<PipeDefinition>> {
    Json(state.pipes())
}

async fn upsert_pipe(State(state): State<Arc<TinybirdState>>, Json(pipe): Json<PipeDefinition>) -> Response {
    match state.upsert_pipe(pipe) {
        Ok(pipe) => Json(pipe).into_response(),
        Err(error) => control_error(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

async fn read_pipe(State(state): State<Arc<TinybirdState>>, Path(name): Path<String>) -> Response {
    match state.find_pipe(&name) {
        Some(pipe) => Json(pipe).into_response(),
        None => control_error(StatusCode::NOT_FOUND, format!("no pipe {name}")),
    }
}

/// `PUT /_emulator/pipes/{pipe}/nodes/{node}` body: the node's new SQL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEdit {
    sql: String,
}

async fn edit_node(
    State(state): State<Arc<TinybirdState>>,
    Path((pipe, node)): Path<(String, String)>,
    Json(edit): Json<NodeEdit>,
) -> Response {
    match state.set_node_sql(&pipe, &node, edit.sql) {
        Ok(pipe) => Json(pipe).into_response(),
        Err(error @ (EmulatorError::UnknownPipe(_) | EmulatorError::UnknownNode { .. })) => {
            control_error(StatusCode::NOT_FOUND, error.to_string())
        }
        Err(error) => control_error(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

/// Billed queries and free pipe descriptions answered since the start (or the log's last clear).
async fn read_counters(State(state): State<Arc<TinybirdState>>) -> Json<Value> {
    Json(json!({
        "billed_queries": state.billed_queries(),
        "pipe_metadata_calls": state.pipe_metadata_calls(),
    }))
}

async fn remove_pipe(State(state): State<Arc<TinybirdState>>, Path(name): Path<String>) -> Response {
    if state.remove_pipe(&name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        control_error(StatusCode::NOT_FOUND, format!("no pipe {name}"))
    }
}

async fn list_datasources(State(state): State<Arc<TinybirdState>>) -> Json<Vec<DataSourceDefinition>> {
    Json(state.datasources())
}

async fn upsert_datasource(
    State(state): State<Arc<TinybirdState>>,
    Json(source): Json<DataSourceDefinition>,
) -> Response {
    match state.upsert_datasource(source).await {
        Ok(source) => Json(source).into_response(),
        Err(error) => control_error(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

async fn remove_datasource(State(state): State<Arc<TinybirdState>>, Path(name): Path<String>) -> Response {
    if state.remove_datasource(&name).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        control_error(StatusCode::NOT_FOUND, format!("no data source {name}"))
    }
}

async fn clear_rate_limits(State(state): State<Arc<TinybirdState>>) -> StatusCode {
    state.rate_limiter.clear();
    StatusCode::NO_CONTENT
}
