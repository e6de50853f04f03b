//! The protocol's bounds on what a client sends, checked the same way for a
//! WebSocket frame and an HTTP request: ids, `client_msg_id`, message bodies.

use serde::Serialize;

use crate::error::ApiError;

pub const BODY_MAX_BYTES: usize = 16_384;
/// Files one message may carry.
pub const ATTACHMENTS_MAX: usize = 10;
pub const CLIENT_MSG_ID_MAX_CHARS: usize = 64;

/// A message to send, as a client gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendInput {
    pub conversation_id: String,
    pub client_msg_id: String,
    /// May be empty when the message carries files.
    pub body: String,
    /// Ids of uploads (addition to v1), in canonical form once validated.
    pub attachments: Vec<String>,
}

/// A conversation id in canonical form.
///
/// # Errors
/// `invalid_argument` when it is not a UUID.
pub fn conversation_id(value: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::invalid_argument("conversation_id must be a UUID"))
}

/// Attachment ids as sent, each UUID in canonical form (anything else is
/// left for [`validate`] to refuse).
pub fn attachment_ids(ids: Vec<String>) -> Vec<String> {
    ids.into_iter().map(|id| uuid::Uuid::parse_str(&id).map_or(id, |u| u.to_string())).collect()
}

/// Checks the protocol's bounds on a message.
///
/// # Errors
/// `invalid_argument` or `too_large`, with a message saying which rule failed.
pub fn validate(input: &SendInput) -> Result<(), ApiError> {
    conversation_id(&input.conversation_id)?;
    let id_len = input.client_msg_id.chars().count();
    if !(1..=CLIENT_MSG_ID_MAX_CHARS).contains(&id_len) {
        return Err(ApiError::invalid_argument(format!(
            "client_msg_id must be 1 to {CLIENT_MSG_ID_MAX_CHARS} characters"
        )));
    }
    if input.client_msg_id.chars().any(char::is_control) {
        return Err(ApiError::invalid_argument("client_msg_id must not contain control characters"));
    }
    if input.attachments.len() > ATTACHMENTS_MAX {
        return Err(ApiError::invalid_argument(format!("a message carries at most {ATTACHMENTS_MAX} attachments")));
    }
    for (i, id) in input.attachments.iter().enumerate() {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::invalid_argument("attachments must be upload ids (UUIDs)"));
        }
        if input.attachments[..i].contains(id) {
            return Err(ApiError::invalid_argument("an attachment is given twice"));
        }
    }
    if input.body.is_empty() && !input.attachments.is_empty() {
        // A caption is optional on a message with files.
        return Ok(());
    }
    body(&input.body)
}

/// Checks a message body, sent or edited: 1 to [`BODY_MAX_BYTES`] bytes,
/// without U+0000, which PostgreSQL's text refuses (and no client means).
/// What the gateway accepts every store can keep: one refused entry in the
/// stream would otherwise be set aside by history, after it was acked.
///
/// # Errors
/// `invalid_argument` or `too_large`, saying which rule failed.
pub fn body(body: &str) -> Result<(), ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_argument("body must not be empty"));
    }
    if body.len() > BODY_MAX_BYTES {
        return Err(ApiError::too_large(format!("body must be at most {BODY_MAX_BYTES} bytes")));
    }
    if body.contains('\0') {
        return Err(ApiError::invalid_argument("body must not contain U+0000 (NUL)"));
    }
    Ok(())
}
