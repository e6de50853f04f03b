//! `/v1/conversations` and their messages.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chat_proto::auth::v1::GetUserRequest;
use chat_proto::history::v1::{
    Conversation, CreateConversationRequest, ListConversationsRequest, ListMessagesRequest,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{AuthUser, JsonBody};
use crate::error::ApiError;
use crate::messaging::{self, SendInput};
use crate::state::AppState;
use crate::wire::MessageJson;

/// Most members one request may name (the group limit of history).
const MAX_MEMBERS: usize = 256;

#[derive(Deserialize)]
pub struct CreateBody {
    kind: String,
    #[serde(default)]
    title: Option<String>,
    members: Vec<String>,
}

fn conversation_json(c: &Conversation, with_activity: bool) -> Value {
    let mut v = json!({
        "conversation_id": c.conversation_id,
        "kind": c.kind,
        "members": c.member_ids,
    });
    if c.kind == "group" {
        v["title"] = c.title.clone().into();
    }
    if with_activity {
        if let Some(m) = &c.last_message {
            v["last_message"] = json!(MessageJson::from(m));
        }
        v["unread_count"] = c.unread_count.into();
    }
    v
}

pub async fn create(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.kind != "direct" && body.kind != "group" {
        return Err(ApiError::invalid_argument("kind must be \"direct\" or \"group\""));
    }
    if body.members.is_empty() || body.members.len() > MAX_MEMBERS {
        return Err(ApiError::invalid_argument(format!("members must name 1 to {MAX_MEMBERS} users")));
    }
    if body.kind == "direct" && (body.members.len() != 1 || body.members[0] == me.user_id) {
        return Err(ApiError::invalid_argument("a direct conversation names exactly one other user"));
    }
    for member in &body.members {
        if uuid::Uuid::parse_str(member).is_err() {
            return Err(ApiError::invalid_argument("members must be user ids (UUIDs)"));
        }
    }
    // Every member must be a real user; auth is the authority on that.
    for member in &body.members {
        let found = state.auth.clone().get_user(GetUserRequest { user_id: member.clone() }).await;
        match found {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(ApiError::not_found(format!("no user with id {member}")));
            }
            Err(status) => return Err(status.into()),
        }
    }
    let reply = state
        .history
        .clone()
        .create_conversation(CreateConversationRequest {
            creator_id: me.user_id,
            kind: body.kind,
            title: body.title.unwrap_or_default(),
            member_ids: body.members,
        })
        .await?
        .into_inner();
    let conversation = reply.conversation.ok_or_else(ApiError::internal)?;
    let status = if reply.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(conversation_json(&conversation, false))))
}

pub async fn list(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<Json<Value>, ApiError> {
    let reply = state
        .history
        .clone()
        .list_conversations(ListConversationsRequest { user_id: me.user_id })
        .await?
        .into_inner();
    let conversations: Vec<Value> = reply.conversations.iter().map(|c| conversation_json(c, true)).collect();
    Ok(Json(json!({ "conversations": conversations })))
}

fn parse_number<T: std::str::FromStr>(query: &HashMap<String, String>, name: &str) -> Result<Option<T>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid_argument(format!("{name} must be a non-negative integer"))),
    }
}

pub async fn messages(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(conversation_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let conversation_id = messaging::conversation_id(&conversation_id)?;
    let limit: u32 = parse_number(&query, "limit")?.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_argument("limit must be between 1 and 200"));
    }
    let reply = state
        .history
        .clone()
        .list_messages(ListMessagesRequest {
            conversation_id,
            user_id: me.user_id,
            before_seq: parse_number(&query, "before_seq")?,
            after_seq: parse_number(&query, "after_seq")?,
            limit,
        })
        .await?
        .into_inner();
    let messages: Vec<MessageJson<'_>> = reply.messages.iter().map(MessageJson::from).collect();
    Ok(Json(json!({ "messages": messages, "has_more": reply.has_more })))
}

#[derive(Deserialize)]
pub struct SendBody {
    client_msg_id: String,
    body: String,
}

pub async fn send(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(conversation_id): Path<String>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = SendInput { conversation_id, client_msg_id: body.client_msg_id, body: body.body };
    let published = messaging::send(&state.membership, &state.log, &me, &input).await?;
    let status = if published.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!(MessageJson::from(&published.message)))))
}
