//! `GET /v1/presence?user_ids=<id>,<id>,…`: the presence of up to 200 users,
//! as the caller may see it (presence leaves out users they share no
//! conversation with, and users on either side of a block).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use chat_proto::presence::v1::{GetPresenceRequest, PresenceStatus};
use serde_json::{Value, json};

use super::extract::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;

const MAX_USERS: usize = 200;

pub async fn get(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let ids = query.get("user_ids").map(String::as_str).unwrap_or_default();
    let user_ids: Vec<String> = ids.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned).collect();
    if user_ids.is_empty() || user_ids.len() > MAX_USERS {
        return Err(ApiError::invalid_argument(format!(
            "user_ids must list 1 to {MAX_USERS} user ids, comma-separated"
        )));
    }
    if user_ids.iter().any(|id| uuid::Uuid::parse_str(id).is_err()) {
        return Err(ApiError::invalid_argument("user_ids must be UUIDs"));
    }
    let reply = state
        .presence_api
        .clone()
        .get_presence(GetPresenceRequest { user_ids, caller_id: me.user_id.to_string() })
        .await?
        .into_inner();
    let presence: Vec<Value> = reply
        .presences
        .iter()
        // Presence does not cross a block, either way.
        .filter(|p| !state.blocks.between(&me.user_id, &p.user_id))
        .map(|p| crate::presence::json(&p.user_id, p.status() == PresenceStatus::Online, p.last_seen_at_ms))
        .collect();
    Ok(Json(json!({ "presence": presence })))
}
