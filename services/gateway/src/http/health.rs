//! Liveness and readiness (no `/v1` prefix).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when NATS is connected: without it nothing can be sent or delivered.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let nats_up = state.nats.connection_state() == async_nats::connection::State::Connected;
    if nats_up {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "nats": "disconnected" })))
    }
}
