//! The emulated Clerk Backend API: `/v1/jwt_templates` CRUD and session token minting.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::middleware::from_fn_with_state;
use axum::response::Json;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::errors::ClerkError;
use super::mint::{self, Issuer};
use super::state::{ClerkState, authenticate_and_count};
use super::templates::TemplateParams;
use crate::sync::lock;

const DEFAULT_PAGE_LIMIT: usize = 10;
const MAX_PAGE_LIMIT: usize = 500;

type ClerkResult = Result<Json<Value>, ClerkError>;

pub(crate) fn router(state: Arc<ClerkState>) -> Router {
    Router::new()
        .route("/v1/jwt_templates", get(list_templates).post(create_template))
        .route("/v1/jwt_templates/{id}", get(get_template).patch(update_template).delete(delete_template))
        .route("/v1/sessions/{session_id}/tokens/{template_name}", post(create_session_token))
        .fallback(unknown_route)
        .layer(from_fn_with_state(Arc::clone(&state), authenticate_and_count))
        .with_state(state)
}

/// Bare array, or `{"data", "total_count"}` with `?paginated=true&limit=&offset=`.
async fn list_templates(
    State(state): State<Arc<ClerkState>>,
    Query(query): Query<Vec<(String, String)>>,
) -> ClerkResult {
    let param = |name: &str| query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let paginated = param("paginated") == Some("true");
    let limit = page_param(param("limit"), "limit", DEFAULT_PAGE_LIMIT)?;
    let offset = page_param(param("offset"), "offset", 0)?;
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ClerkError::param_value_invalid("limit", "must be between 1 and 500"));
    }
    let store = lock(&state.templates);
    let templates = store.list();
    if !paginated {
        return Ok(Json(Value::Array(templates.iter().map(super::JwtTemplate::api_object).collect())));
    }
    let page: Vec<Value> =
        templates.iter().skip(offset).take(limit).map(super::JwtTemplate::api_object).collect();
    Ok(Json(json!({"data": page, "total_count": templates.len()})))
}

fn page_param(raw: Option<&str>, name: &'static str, default: usize) -> Result<usize, ClerkError> {
    raw.map_or(Ok(default), |text| {
        text.parse().map_err(|_| ClerkError::param_format_invalid(name, "a non-negative integer"))
    })
}

async fn create_template(State(state): State<Arc<ClerkState>>, body: Bytes) -> ClerkResult {
    let params = TemplateParams::parse(&body)?;
    let now = state.clock.now_millis();
    let template = lock(&state.templates).create(params, now)?;
    tracing::info!(id = %template.id, name = %template.name, "jwt template created");
    Ok(Json(template.api_object()))
}

async fn get_template(State(state): State<Arc<ClerkState>>, Path(id): Path<String>) -> ClerkResult {
    lock(&state.templates)
        .get(&id)
        .map(|template| Json(template.api_object()))
        .ok_or_else(ClerkError::not_found)
}

async fn update_template(
    State(state): State<Arc<ClerkState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ClerkResult {
    if lock(&state.templates).get(&id).is_none() {
        return Err(ClerkError::not_found());
    }
    let params = TemplateParams::parse(&body)?;
    let now = state.clock.now_millis();
    let template = lock(&state.templates).update(&id, params, now)?;
    tracing::info!(id = %template.id, name = %template.name, "jwt template updated");
    Ok(Json(template.api_object()))
}

async fn delete_template(State(state): State<Arc<ClerkState>>, Path(id): Path<String>) -> ClerkResult {
    lock(&state.templates).delete(&id)?;
    tracing::info!(%id, "jwt template deleted");
    Ok(Json(json!({"object": "jwt_template", "id": id, "deleted": true})))
}

/// `POST /v1/sessions/{session_id}/tokens/{template_name}`: a token for the current identity.
async fn create_session_token(
    State(state): State<Arc<ClerkState>>,
    Path((_session_id, template_name)): Path<(String, String)>,
) -> ClerkResult {
    let template =
        lock(&state.templates).find_by_name(&template_name).cloned().ok_or_else(ClerkError::not_found)?;
    let identity = lock(&state.identity).clone();
    let issuer = Issuer { issuer: &state.issuer, authorized_party: &state.authorized_party };
    let jwt = mint::mint(&template, &identity, &issuer, state.clock.now_secs())?;
    Ok(Json(json!({"object": "token", "jwt": jwt})))
}

async fn unknown_route() -> ClerkError {
    ClerkError::not_found()
}
