//! Editing and deleting messages. The sender edits; the sender, or a group's
//! owner or admin, deletes. history checks against its stored row, then
//! publishes the changed message to the conversation's edit subject: it lands
//! after the message itself in the stream, so every device sees the message
//! before any change to it, and the consumer applies changes in stream order.

use std::time::Duration;

use async_nats::jetstream;
use chat_proto::events::v1::{Message, MessageChanged};
use chat_proto::history::v1::ChangeMessageRequest;
use prost::Message as _;

use crate::error::Error;
use crate::groups;
use crate::store::{Access, Store};
use crate::validate;

const BODY_MAX_BYTES: usize = 16_384;
/// A change may name a message sent a moment ago that the consumer has not
/// stored yet; it is waited for this long.
const WAIT_FOR_MESSAGE: Duration = Duration::from_secs(3);

pub async fn change(store: &Store, js: &jetstream::Context, req: ChangeMessageRequest) -> Result<Message, Error> {
    let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
    let message_id = validate::uuid("message_id", &req.message_id)?;
    let who = groups::actor(req.actor)?;
    let deleting = match req.change.as_str() {
        "edit" => false,
        "delete" => true,
        _ => return Err(Error::InvalidArgument("change must be \"edit\" or \"delete\"".into())),
    };
    if !deleting && (req.body.is_empty() || req.body.len() > BODY_MAX_BYTES) {
        return Err(Error::InvalidArgument(format!("body must be 1 to {BODY_MAX_BYTES} bytes")));
    }
    let role = match store.access(&conversation_id, &who.user_id).await? {
        Access::Active { role } => role,
        _ if store.conversation_exists(&conversation_id).await? => return Err(Error::NotMember),
        _ => return Err(Error::NotFound),
    };
    let mut message = stored_message(store, &conversation_id, &message_id).await?;
    if message.system.is_some() {
        return Err(Error::FailedPrecondition("system messages cannot be changed".into()));
    }
    if message.deleted_at_ms != 0 {
        return if deleting {
            Ok(message)
        } else {
            Err(Error::FailedPrecondition("a deleted message cannot be edited".into()))
        };
    }
    let is_sender = message.sender_id == who.user_id;
    let now = chat_common::time::now_ms();
    if deleting {
        let moderator = role == "owner" || role == "admin";
        if !is_sender && !moderator {
            return Err(Error::Forbidden("only the sender, or a group's owner or admin, deletes a message".into()));
        }
        message.body.clear();
        message.deleted_at_ms = now;
    } else {
        if !is_sender {
            return Err(Error::Forbidden("only the sender edits a message".into()));
        }
        message.body = req.body;
        message.edited_at_ms = now;
    }
    let event = MessageChanged {
        message: Some(message.clone()),
        change: if deleting { "deleted" } else { "edited" }.to_owned(),
        editor_id: who.user_id,
        editor_device_id: who.device_id,
    };
    let mut headers = async_nats::HeaderMap::new();
    chat_common::nats::inject_trace_context(&mut headers);
    let unavailable = |e: String| Error::Unavailable(format!("cannot record the change: {e}"));
    js.publish_with_headers(chat_common::nats::edit_subject(&conversation_id), headers, event.encode_to_vec().into())
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(message)
}

async fn stored_message(store: &Store, conversation_id: &str, message_id: &str) -> Result<Message, Error> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_MESSAGE;
    loop {
        if let Some(message) = store.message(conversation_id, message_id).await? {
            return Ok(message);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NotFound);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
