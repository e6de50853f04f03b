//! `/v1/devices` (addition to protocol v1): a user's logged-in devices, and
//! revoking one of them (as logout does for the current one).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_proto::auth::v1::{ListDevicesRequest, RevokeDeviceRequest};
use serde_json::{Value, json};

use super::extract::{AuthUser, Path};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::rfc3339_ms;

pub async fn list(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<Json<Value>, ApiError> {
    let reply =
        state.auth.clone().list_devices(ListDevicesRequest { user_id: me.user_id.to_string() }).await?.into_inner();
    let devices: Vec<Value> = reply
        .devices
        .iter()
        .map(|d| {
            json!({
                "device_id": d.device_id,
                "name": d.name,
                "created_at": rfc3339_ms(d.created_at_ms),
                "last_seen_at": rfc3339_ms(d.last_seen_at_ms),
                "current": *d.device_id == *me.device_id,
            })
        })
        .collect();
    Ok(Json(json!({ "devices": devices })))
}

pub async fn revoke(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let device_id = uuid::Uuid::parse_str(&device_id)
        .map_err(|_| ApiError::invalid_argument("device_id must be a UUID"))?
        .to_string();
    state.auth.clone().revoke_device(RevokeDeviceRequest { user_id: me.user_id.to_string(), device_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}
