//! Control endpoints both emulators share, under `/_emulator/`: faults, the request log and the
//! clock. They exist for tests and demos only and need no authentication.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Clock;
use crate::faults::{Fault, FaultSet};
use crate::request_log::RequestLog;

#[derive(Clone, Debug)]
pub(crate) struct SharedControls {
    pub(crate) clock: Clock,
    pub(crate) faults: Arc<FaultSet>,
    pub(crate) request_log: Arc<RequestLog>,
}

pub(crate) fn router(controls: SharedControls) -> Router {
    Router::new()
        .route("/_emulator/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/_emulator/requests", get(list_requests).delete(clear_requests))
        .route("/_emulator/clock", get(read_clock).post(move_clock))
        .with_state(controls)
}

/// A control error: `{"error": "..."}` with a status.
pub(crate) fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn list_faults(State(controls): State<SharedControls>) -> Json<Vec<Fault>> {
    Json(controls.faults.rules())
}

async fn add_fault(State(controls): State<SharedControls>, Json(fault): Json<Fault>) -> Response {
    match controls.faults.add(fault) {
        Ok(()) => (StatusCode::CREATED, Json(controls.faults.rules())).into_response(),
        Err(error) => control_error(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

async fn clear_faults(State(controls): State<SharedControls>) -> StatusCode {
    controls.faults.clear();
    StatusCode::NO_CONTENT
}

async fn list_requests(State(controls): State<SharedControls>) -> Json<Value> {
    let log = &controls.request_log;
    Json(json!({
        "total": log.total(),
        "counts_by_status": log.counts_by_status(),
        "counts_by_call": log.counts_by_call(),
        "requests": log.records(),
    }))
}

async fn clear_requests(State(controls): State<SharedControls>) -> StatusCode {
    controls.request_log.clear();
    StatusCode::NO_CONTENT
}

/// `POST /_emulator/clock` body: one of `advance_secs`, `set_unix`, `resume_system: true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    #[serde(default)]
    advance_secs: Option<u64>,
    #[serde(default)]
    set_unix: Option<i64>,
    #[serde(default)]
    resume_system: bool,
}

async fn read_clock(State(controls): State<SharedControls>) -> Json<Value> {
    Json(clock_view(&controls.clock))
}

async fn move_clock(State(controls): State<SharedControls>, Json(change): Json<ClockChange>) -> Json<Value> {
    let clock = &controls.clock;
    if change.resume_system {
        clock.resume_system();
    }
    if let Some(unix) = change.set_unix {
        clock.set(unix);
    }
    if let Some(seconds) = change.advance_secs {
        clock.advance(Duration::from_secs(seconds));
    }
    Json(clock_view(clock))
}

fn clock_view(clock: &Clock) -> Value {
    json!({"now": clock.now_secs(), "now_millis": clock.now_millis(), "frozen": clock.is_frozen()})
}
