//! `/v1/conversations` and their messages.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chat_common::blocks::Blocks;
use chat_proto::auth::v1::GetUserRequest;
use chat_proto::events::v1::{ConversationKind, MemberRole};
use chat_proto::history::v1::{
    Actor, AddMembersRequest, Conversation, CreateConversationRequest, GetConversationRequest,
    ListConversationsRequest, ListMessagesRequest, RemoveMemberRequest, RenameConversationRequest,
    ReportMessageRequest, SearchMessagesRequest, SetMemberRoleRequest, SetMutedRequest,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{AuthUser, JsonBody, Path};
use crate::error::ApiError;
use crate::messaging;
use crate::protocol::rules::{self, SendInput};
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

/// A conversation as protocol v1 shows it; with `activity`, its last message
/// and unread count as the viewing user sees them.
fn conversation_json(c: &Conversation, activity: Option<(&Blocks, &str)>) -> Value {
    let mut v = json!({
        "conversation_id": c.conversation_id,
        "kind": c.kind().word(),
        "members": c.member_ids,
    });
    if c.kind() == ConversationKind::Group {
        v["title"] = c.title.clone().into();
        let roles: Vec<Value> =
            c.members.iter().map(|m| json!({ "user_id": m.user_id, "role": m.role().word() })).collect();
        v["member_roles"] = roles.into();
    }
    if let Some((blocks, viewer)) = activity {
        if let Some(m) = &c.last_message {
            v["last_message"] = json!(MessageJson::from(m).for_viewer(blocks, viewer));
        }
        v["unread_count"] = c.unread_count.into();
        v["muted"] = c.muted.into();
    }
    v
}

pub async fn create(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.brakes.new_conversation(&me.user_id)?;
    let Some(kind) = ConversationKind::from_word(&body.kind) else {
        return Err(ApiError::invalid_argument("kind must be \"direct\" or \"group\""));
    };
    if body.members.is_empty() || body.members.len() > MAX_MEMBERS {
        return Err(ApiError::invalid_argument(format!("members must name 1 to {MAX_MEMBERS} users")));
    }
    if kind == ConversationKind::Direct && (body.members.len() != 1 || *body.members[0] == *me.user_id) {
        return Err(ApiError::invalid_argument("a direct conversation names exactly one other user"));
    }
    existing_users(&state, &body.members).await?;
    not_blocked_by(&state, &me.user_id, &body.members).await?;
    let reply = state
        .history
        .clone()
        .create_conversation(CreateConversationRequest {
            creator_id: me.user_id.to_string(),
            kind: kind.into(),
            title: body.title.unwrap_or_default(),
            member_ids: body.members,
        })
        .await?
        .into_inner();
    let conversation = reply.conversation.ok_or_else(ApiError::internal)?;
    let status = if reply.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(conversation_json(&conversation, None))))
}

/// Checks every id names a registered user (auth is the authority on that).
pub(super) async fn existing_users(state: &AppState, user_ids: &[String]) -> Result<(), ApiError> {
    for user_id in user_ids {
        if uuid::Uuid::parse_str(user_id).is_err() {
            return Err(ApiError::invalid_argument("members must be user ids (UUIDs)"));
        }
    }
    for user_id in user_ids {
        match state.auth.clone().get_user(GetUserRequest { user_id: user_id.clone() }).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(unknown_user(user_id));
            }
            Err(status) => return Err(status.into()),
        }
    }
    Ok(())
}

/// Nobody brings a user who blocked them into a conversation. The answer is
/// the one for an unknown user, so a block is not given away. Read from the
/// bucket itself: a block made a moment ago through another gateway counts.
async fn not_blocked_by(state: &AppState, me: &str, user_ids: &[String]) -> Result<(), ApiError> {
    // Keys hold ids as auth writes them; a member may be named in capitals,
    // and is answered as named, as an unknown user would be.
    let named = user_ids.iter().filter_map(|u| Some((u, uuid::Uuid::parse_str(u).ok()?.to_string())));
    let checks = named.filter(|(_, id)| *id != *me).map(|(as_named, id)| async move {
        match chat_common::blocks::is_blocked(&state.blocks_bucket, &id, me).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(unknown_user(as_named)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the blocks bucket");
                Err(ApiError::unavailable("cannot check blocks; retry"))
            }
        }
    });
    futures::future::try_join_all(checks).await.map(|_| ())
}

/// The answer for a user who does not exist (or must look so).
fn unknown_user(user_id: &str) -> ApiError {
    ApiError::not_found(format!("no user with id {user_id}"))
}

fn actor(me: &crate::tokens::Identity) -> Option<Actor> {
    Some(Actor { user_id: me.user_id.to_string(), device_id: me.device_id.to_string() })
}

pub async fn get(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(conversation_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conversation_id = rules::conversation_id(&conversation_id)?;
    let conversation = state
        .history
        .clone()
        .get_conversation(GetConversationRequest {
            conversation_id,
            user_id: me.user_id.to_string(),
            members_only: false,
        })
        .await?
        .into_inner();
    let mut body = conversation_json(&conversation, Some((&state.blocks, &me.user_id)));
    let markers: Vec<Value> =
        conversation.read_markers.iter().map(|m| json!({ "user_id": m.user_id, "seq": m.seq })).collect();
    body["read_markers"] = markers.into();
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct RenameBody {
    title: String,
}

pub async fn rename(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(conversation_id): Path<String>,
    JsonBody(body): JsonBody<RenameBody>,
) -> Result<Json<Value>, ApiError> {
    let conversation_id = rules::conversation_id(&conversation_id)?;
    let conversation = state
        .history
        .clone()
        .rename_conversation(RenameConversationRequest { conversation_id, actor: actor(&me), title: body.title })
        .await?
        .into_inner();
    Ok(Json(conversation_json(&conversation, None)))
}

#[derive(Deserialize)]
pub struct AddMembersBody {
    members: Vec<String>,
}

pub async fn add_members(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(conversation_id): Path<String>,
    JsonBody(body): JsonBody<AddMembersBody>,
) -> Result<Json<Value>, ApiError> {
    let conversation_id = rules::conversation_id(&conversation_id)?;
    if body.members.is_empty() || body.members.len() > MAX_MEMBERS {
        return Err(ApiError::invalid_argument(format!("members must name 1 to {MAX_MEMBERS} users")));
    }
    existing_users(&state, &body.members).await?;
    not_blocked_by(&state, &me.user_id, &body.members).await?;
    let conversation = state
        .history
        .clone()
        .add_members(AddMembersRequest { conversation_id, actor: actor(&me), user_ids: body.members })
        .await?
        .into_inner();
    Ok(Json(conversation_json(&conversation, None)))
}

fn member_path(conversation_id: &str, user_id: &str) -> Result<(String, String), ApiError> {
    let user_id =
        uuid::Uuid::parse_str(user_id).map_err(|_| ApiError::invalid_argument("user_id must be a UUID"))?.to_string();
    Ok((rules::conversation_id(conversation_id)?, user_id))
}

pub async fn remove_member(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((conversation_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (conversation_id, user_id) = member_path(&conversation_id, &user_id)?;
    state
        .history
        .clone()
        .remove_member(RemoveMemberRequest { conversation_id, actor: actor(&me), user_id, ..Default::default() })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct RoleBody {
    role: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((conversation_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<RoleBody>,
) -> Result<Json<Value>, ApiError> {
    let (conversation_id, user_id) = member_path(&conversation_id, &user_id)?;
    let role = MemberRole::from_word(&body.role)
        .ok_or_else(|| ApiError::invalid_argument("role must be \"admin\" or \"member\""))?;
    let request = SetMemberRoleRequest { conversation_id, actor: actor(&me), user_id, role: role.into() };
    let conversation = state.history.clone().set_member_role(request).await?.into_inner();
    Ok(Json(conversation_json(&conversation, None)))
}

pub async fn list(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<Json<Value>, ApiError> {
    let reply = state
        .history
        .clone()
        .list_conversations(ListConversationsRequest { user_id: me.user_id.to_string(), ..Default::default() })
        .await?
        .into_inner();
    let conversations: Vec<Value> =
        reply.conversations.iter().map(|c| conversation_json(c, Some((&state.blocks, &me.user_id)))).collect();
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
    let conversation_id = rules::conversation_id(&conversation_id)?;
    let limit: u32 = parse_number(&query, "limit")?.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_argument("limit must be between 1 and 200"));
    }
    let reply = state
        .history
        .clone()
        .list_messages(ListMessagesRequest {
            conversation_id,
            user_id: me.user_id.to_string(),
            before_seq: parse_number(&query, "before_seq")?,
            after_seq: parse_number(&query, "after_seq")?,
            limit,
        })
        .await?
        .into_inner();
    let messages: Vec<MessageJson<'_>> =
        reply.messages.iter().map(|m| MessageJson::from(m).for_viewer(&state.blocks, &me.user_id)).collect();
    Ok(Json(json!({ "messages": messages, "has_more": reply.has_more })))
}

#[derive(Deserialize)]
pub struct SendBody {
    client_msg_id: String,
    /// Optional only on a message with attachments.
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    attachments: Vec<String>,
}

pub async fn send(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(conversation_id): Path<String>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.brakes.send(&me.user_id)?;
    let attachments = rules::attachment_ids(body.attachments);
    let body_text = match body.body {
        Some(text) => text,
        None if !attachments.is_empty() => String::new(),
        None => return Err(ApiError::invalid_argument("invalid JSON body: missing field `body`")),
    };
    let input = SendInput { conversation_id, client_msg_id: body.client_msg_id, body: body_text, attachments };
    let published = messaging::send(&state.membership, &state.log, &state.media, &me, &input).await?;
    let status = if published.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!(MessageJson::from(&published.message)))))
}

#[derive(Deserialize)]
pub struct EditBody {
    body: String,
}

fn message_path(conversation_id: &str, message_id: &str) -> Result<(String, String), ApiError> {
    let message_id = uuid::Uuid::parse_str(message_id)
        .map_err(|_| ApiError::invalid_argument("message_id must be a UUID"))?
        .to_string();
    Ok((rules::conversation_id(conversation_id)?, message_id))
}

pub async fn edit_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((conversation_id, message_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<EditBody>,
) -> Result<Json<Value>, ApiError> {
    let (conversation_id, message_id) = message_path(&conversation_id, &message_id)?;
    if body.body.is_empty() {
        return Err(ApiError::invalid_argument("body must not be empty"));
    }
    if body.body.len() > rules::BODY_MAX_BYTES {
        return Err(ApiError::too_large(format!("body must be at most {} bytes", rules::BODY_MAX_BYTES)));
    }
    let message = messaging::change(&state.history, &me, &conversation_id, &message_id, Some(body.body)).await?;
    Ok(Json(json!(MessageJson::from(&message))))
}

pub async fn delete_message(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((conversation_id, message_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (conversation_id, message_id) = message_path(&conversation_id, &message_id)?;
    let message = messaging::change(&state.history, &me, &conversation_id, &message_id, None).await?;
    Ok(Json(json!(MessageJson::from(&message))))
}

/// `GET /v1/search?q=&conversation_id=&limit=&page=` (addition): newest first.
pub async fn search(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = query.get("q").map(|q| q.trim()).unwrap_or_default();
    if q.is_empty() || q.chars().count() > 200 {
        return Err(ApiError::invalid_argument("q must be 1 to 200 characters"));
    }
    // Whitespace separates words; other control characters match nothing,
    // and a NUL is refused by both databases' query parsers.
    if q.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(ApiError::invalid_argument("q must not contain control characters"));
    }
    let limit: u32 = parse_number(&query, "limit")?.unwrap_or(20);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::invalid_argument("limit must be between 1 and 50"));
    }
    let conversation_id = match query.get("conversation_id") {
        Some(id) => rules::conversation_id(id)?,
        None => String::new(),
    };
    let before_stream_seq = match query.get("page") {
        Some(page) => {
            crate::wire::decode_cursor(page).ok_or_else(|| ApiError::invalid_argument("unknown page token"))?
        }
        None => 0,
    };
    let reply = state
        .history
        .clone()
        .search_messages(SearchMessagesRequest {
            user_id: me.user_id.to_string(),
            query: q.to_owned(),
            conversation_id,
            limit,
            before_stream_seq,
        })
        .await?
        .into_inner();
    // What someone the caller blocked wrote is not found at all.
    let messages: Vec<Value> = reply
        .messages
        .iter()
        .filter_map(|m| m.message.as_ref())
        .filter(|m| !state.blocks.hides(&me.user_id, &m.sender_id))
        .map(|m| json!(MessageJson::from(m)))
        .collect();
    let mut body = json!({ "messages": messages });
    if reply.has_more
        && let Some(last) = reply.messages.last()
    {
        body["next_page"] = crate::wire::encode_cursor(last.stream_seq).into();
    }
    Ok(Json(body))
}

/// `PUT` (mute) and `DELETE` (unmute) `/v1/conversations/{id}/mute`
/// (addition): no push for the caller's devices; unread counts go on.
pub async fn mute(state: State<AppState>, me: AuthUser, path: Path<String>) -> Result<StatusCode, ApiError> {
    set_muted(state, me, path, true).await
}

pub async fn unmute(state: State<AppState>, me: AuthUser, path: Path<String>) -> Result<StatusCode, ApiError> {
    set_muted(state, me, path, false).await
}

async fn set_muted(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(conversation_id): Path<String>,
    muted: bool,
) -> Result<StatusCode, ApiError> {
    let conversation_id = rules::conversation_id(&conversation_id)?;
    state.brakes.safety_change(&me.user_id)?;
    let request = SetMutedRequest { conversation_id, user_id: me.user_id.to_string(), muted };
    state.history.clone().set_muted(request).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct ReportBody {
    reason: String,
}

/// `POST /v1/conversations/{id}/messages/{message_id}/reports` (addition):
/// 201 with the new report, 200 with the caller's earlier report of it.
pub async fn report(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path((conversation_id, message_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let conversation_id = rules::conversation_id(&conversation_id)?;
    let message_id = uuid::Uuid::parse_str(&message_id)
        .map_err(|_| ApiError::invalid_argument("message_id must be a UUID"))?
        .to_string();
    state.brakes.safety_change(&me.user_id)?;
    let request =
        ReportMessageRequest { conversation_id, message_id, reporter_id: me.user_id.to_string(), reason: body.reason };
    let reply = state.history.clone().report_message(request).await?.into_inner();
    let status = if reply.created { StatusCode::CREATED } else { StatusCode::OK };
    let body = json!({ "report_id": reply.report_id, "created_at": crate::wire::rfc3339_ms(reply.created_at_ms) });
    Ok((status, Json(body)))
}
