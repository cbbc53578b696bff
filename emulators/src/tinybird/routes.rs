//! The emulated Tinybird API: pipe endpoints, the workspace, admin token refresh.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::auth::{Access, PIPES_READ};
use super::errors::TinybirdError;
use super::query::{self, Format};
use super::state::{ADMIN_TOKEN_NAME, TinybirdState};
use super::{describe, nodes, sql};

type QueryPairs = Query<Vec<(String, String)>>;

pub(crate) fn router(state: Arc<TinybirdState>) -> Router {
    Router::new()
        .route("/v0/pipes/{pipe}", get(pipe_endpoint))
        .route("/v0/sql", get(query_api))
        .route("/v1/workspace", get(workspace))
        .route("/v0/tokens/{token}/refresh", post(refresh_token))
        .fallback(unknown_route)
        .with_state(state)
}

/// `GET /v0/pipes/{pipe}.{json|ndjson|csv}` runs the endpoint; `GET /v0/pipes/{pipe}` describes it.
async fn pipe_endpoint(
    State(state): State<Arc<TinybirdState>>,
    Path(segment): Path<String>,
    Query(query): QueryPairs,
    headers: HeaderMap,
) -> Result<Response, TinybirdError> {
    let started = Instant::now();
    let (url_name, format) = query::split_format(&segment);
    let access = state.authenticate(&headers, &query)?;
    match format {
        None => describe_pipe(&state, &access, url_name),
        Some(format) => run_pipe(&state, &access, url_name, format?, &query, started).await,
    }
}

async fn run_pipe(
    state: &TinybirdState,
    access: &Access,
    url_name: &str,
    format: Format,
    query: &[(String, String)],
    started: Instant,
) -> Result<Response, TinybirdError> {
    let pipe = state.find_pipe(url_name);
    let known = pipe.as_ref().map(|pipe| (pipe.name.as_str(), pipe.id.as_deref()));
    let (scope, rate_headers) = state.authorize(access, PIPES_READ, url_name, known)?;
    let fixed_params = scope.and_then(|scope| scope.fixed_params.as_ref());
    let pipe = pipe.ok_or_else(|| TinybirdError::pipe_not_found(url_name))?;
    let answer = async {
        let params = query::effective_params(query, fixed_params)?;
        match pipe.endpoint_index() {
            Some(endpoint) => {
                let sql = nodes::pipe_query(&pipe.nodes, endpoint, &params)
                    .map_err(TinybirdError::from_template)?;
                Ok(query::PipeAnswer::from(state.query(&sql).await?))
            }
            None => query::run_rows(&pipe, &params),
        }
    };
    match answer.await {
        Ok(answer) => {
            Ok(with_headers(answer.into_response(format, started.elapsed().as_secs_f64()), rate_headers))
        }
        Err(error) => Err(error.with_headers(rate_headers)),
    }
}

/// `GET /v0/sql?q=...`: the Query API over the data sources.
async fn query_api(
    State(state): State<Arc<TinybirdState>>,
    Query(query): QueryPairs,
    headers: HeaderMap,
) -> Result<Response, TinybirdError> {
    let started = Instant::now();
    let access = state.authenticate(&headers, &query)?;
    sql::run_query(&state, &access, &query, started).await
}

/// A response with extra headers (the rate-limit ones).
pub(crate) fn with_headers(mut response: Response, headers: Vec<(HeaderName, String)>) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn describe_pipe(state: &TinybirdState, access: &Access, url_name: &str) -> Result<Response, TinybirdError> {
    if !matches!(access, Access::Admin) {
        return Err(TinybirdError::no_access());
    }
    let pipe = state.find_pipe(url_name).ok_or_else(|| TinybirdError::pipe_not_found(url_name))?;
    Ok(Json(describe::describe(&pipe)).into_response())
}

/// `GET /v1/workspace`: admin token only.
async fn workspace(
    State(state): State<Arc<TinybirdState>>,
    Query(query): QueryPairs,
    headers: HeaderMap,
) -> Result<Json<Value>, TinybirdError> {
    require_admin(&state, &headers, &query)?;
    let workspace = &state.workspace;
    Ok(Json(json!({
        "id": workspace.id,
        "name": workspace.name,
        "is_branch": false,
        "main": null,
        "plan": "dev",
        "region": workspace.region,
        "created_at": workspace.created_at_secs,
    })))
}

/// `POST /v0/tokens/{id or name}/refresh`: rotates the admin token.
async fn refresh_token(
    State(state): State<Arc<TinybirdState>>,
    Path(token_ref): Path<String>,
    Query(query): QueryPairs,
    headers: HeaderMap,
) -> Result<Json<Value>, TinybirdError> {
    require_admin(&state, &headers, &query)?;
    if token_ref != state.admin_token_id && token_ref != ADMIN_TOKEN_NAME {
        return Err(TinybirdError::not_found(format!("Token '{token_ref}' not found")));
    }
    let token = state.refresh_admin_token();
    tracing::info!("admin token refreshed");
    Ok(Json(json!({
        "id": state.admin_token_id,
        "name": ADMIN_TOKEN_NAME,
        "token": token,
        "scopes": [{"type": "ADMIN"}],
        "origin": {"type": "W"},
    })))
}

fn require_admin(
    state: &TinybirdState,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<(), TinybirdError> {
    match state.authenticate(headers, query)? {
        Access::Admin => Ok(()),
        Access::Jwt(_) => Err(TinybirdError::no_access()),
    }
}

async fn unknown_route() -> TinybirdError {
    TinybirdError::not_found("Not found")
}
