//! `/v1/users/*`.

use axum::Json;
use axum::extract::State;
use chat_proto::auth::v1::{GetUserByUsernameRequest, GetUserRequest, User};
use serde_json::{Value, json};

use super::extract::{AuthUser, Path};
use crate::error::ApiError;
use crate::state::AppState;

fn user_json(user: User) -> Json<Value> {
    Json(json!({ "user_id": user.user_id, "username": user.username, "display_name": user.display_name }))
}

pub async fn me(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<Json<Value>, ApiError> {
    let user = state.auth.clone().get_user(GetUserRequest { user_id: me.user_id.to_string() }).await?.into_inner();
    Ok(user_json(user))
}

pub async fn by_username(
    State(state): State<AppState>,
    AuthUser(_): AuthUser,
    Path(username): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = state.auth.clone().get_user_by_username(GetUserByUsernameRequest { username }).await?.into_inner();
    Ok(user_json(user))
}

pub async fn by_id(
    State(state): State<AppState>,
    AuthUser(_): AuthUser,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id =
        uuid::Uuid::parse_str(&user_id).map_err(|_| ApiError::invalid_argument("user_id must be a UUID"))?.to_string();
    let user = state.auth.clone().get_user(GetUserRequest { user_id }).await?.into_inner();
    Ok(user_json(user))
}
