//! `/v1/blocks` (addition to protocol v1): the users the caller blocked. A
//! blocked user cannot bring the caller into a conversation (they are told,
//! as for an unknown user, that no such user exists), their messages reach
//! the caller hidden, and neither sees the other's presence or typing. The
//! block is written to the blocks bucket (`chat_common::blocks`), which every
//! gateway and notification follow. Changes count against the caller's
//! safety brake, and a user may block at most `GATEWAY_MAX_BLOCKS_PER_USER`
//! users at once (every process that follows the bucket holds every block).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::extract::{AuthUser, Path};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::rfc3339_ms;

/// How long an answer waits for this gateway's view to hold the new block,
/// so the caller's next request sees it.
const APPLIED_WITHIN: Duration = Duration::from_secs(2);

pub async fn list(State(state): State<AppState>, AuthUser(me): AuthUser) -> Json<Value> {
    let blocks: Vec<Value> = state
        .blocks
        .blocked_by(&me.user_id)
        .into_iter()
        .map(|(user_id, at)| json!({ "user_id": user_id, "blocked_at": rfc3339_ms(at) }))
        .collect();
    Json(json!({ "blocks": blocks }))
}

/// `PUT /v1/blocks/{user_id}`: 204, also when already blocked.
pub async fn block(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user_id = target(&user_id)?;
    if *user_id == *me.user_id {
        return Err(ApiError::invalid_argument("you cannot block yourself"));
    }
    state.brakes.safety_change(&me.user_id)?;
    let mine = state.blocks.blocked_by(&me.user_id);
    let cap = state.config.max_blocks_per_user;
    if mine.len() >= cap && !mine.iter().any(|(blocked, _)| *blocked == user_id) {
        return Err(ApiError::conflict(format!(
            "you have blocked {cap} users, the most allowed; unblock someone first"
        )));
    }
    super::conversations::existing_users(&state, std::slice::from_ref(&user_id)).await?;
    let revision =
        chat_common::blocks::block(&state.blocks_bucket, &me.user_id, &user_id).await.map_err(unavailable)?;
    if !state.blocks.caught_up_to(revision, APPLIED_WITHIN).await {
        tracing::warn!("a block was stored but not yet seen by this gateway");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/blocks/{user_id}`: 204, also when there was no block.
pub async fn unblock(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user_id = target(&user_id)?;
    state.brakes.safety_change(&me.user_id)?;
    chat_common::blocks::unblock(&state.blocks_bucket, &me.user_id, &user_id).await.map_err(unavailable)?;
    state.blocks.forget(&me.user_id, &user_id);
    Ok(StatusCode::NO_CONTENT)
}

/// The user id of the path, as auth writes ids.
fn target(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw).map(|u| u.to_string()).map_err(|_| ApiError::invalid_argument("user_id must be a UUID"))
}

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "cannot write the blocks bucket");
    ApiError::unavailable("cannot change the block now; retry")
}
