//! Editing and deleting messages. The sender edits; the sender, or a group's
//! owner or admin, deletes. history checks against its stored row, then
//! publishes the changed message to the conversation's edit subject: it lands
//! after the message itself in the stream, so every device sees the message
//! before any change to it, and the consumer applies changes in stream order.
//!
//! Changes to a conversation are linearized by the stream itself: history
//! first waits until its rows show the conversation's latest change, decides
//! on those rows, and publishes expecting that change to still be the latest
//! (`Nats-Expected-Last-Subject-Sequence`). If another change got in between,
//! the publish is refused and the decision is made again, so an edit can
//! never follow a deletion, whichever instance handled either.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use chat_proto::events::v1::{ChangeKind, ConversationKind, Message, MessageChanged};
use chat_proto::history::v1::ChangeMessageRequest;
use prost::Message as _;

use crate::error::Error;
use crate::groups;
use crate::store::{Access, Store};
use crate::validate;

const BODY_MAX_BYTES: usize = 16_384;
/// A change may name a message sent a moment ago, or follow a change, that
/// the consumer has not stored yet; either is waited for this long.
const WAIT_FOR_CONSUMER: Duration = Duration::from_secs(3);

pub async fn change(
    store: &Store,
    js: &jetstream::Context,
    stream: &Stream,
    req: ChangeMessageRequest,
) -> Result<Message, Error> {
    Ok(apply(store, js, stream, req).await?.0)
}

/// As [`change`], also saying whether this call changed the message (a
/// deletion of a deleted message changes nothing).
pub async fn apply(
    store: &Store,
    js: &jetstream::Context,
    stream: &Stream,
    req: ChangeMessageRequest,
) -> Result<(Message, bool), Error> {
    let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
    let message_id = validate::uuid("message_id", &req.message_id)?;
    let change = req.change();
    let who = if req.by_operator { groups::operator() } else { groups::actor(req.actor)? };
    let deleting = match change {
        ChangeKind::Edited => false,
        ChangeKind::Deleted => true,
        ChangeKind::Unspecified => {
            return Err(Error::InvalidArgument("change must be \"edit\" or \"delete\"".into()));
        }
    };
    if !deleting && (req.body.is_empty() || req.body.len() > BODY_MAX_BYTES || req.body.contains('\0')) {
        return Err(Error::InvalidArgument(format!("body must be 1 to {BODY_MAX_BYTES} bytes, without U+0000")));
    }
    let moderator = if req.by_operator {
        if !deleting {
            return Err(Error::InvalidArgument("an operator deletes messages, and edits none".into()));
        }
        if !store.conversation_exists(&conversation_id).await? {
            return Err(Error::NotFound(crate::error::NO_CONVERSATION));
        }
        true
    } else {
        let role = match store.access(&conversation_id, &who.user_id).await? {
            Access::Active { role } => role,
            _ if store.conversation_exists(&conversation_id).await? => return Err(Error::NotMember),
            _ => return Err(Error::NotFound(crate::error::NO_CONVERSATION)),
        };
        // Only a group has moderators: the creator of a direct conversation is
        // stored as its owner, but holds no power over the other person's messages.
        role.runs_the_group() && store.conversation_kind(&conversation_id).await? == Some(ConversationKind::Group)
    };
    let subject = chat_common::nats::edit_subject(&conversation_id);
    loop {
        let latest = latest_change_applied(store, stream, &subject).await?;
        let message = stored_message(store, &conversation_id, &message_id).await?;
        let (message, event) = decide(message, &who, moderator, deleting, &req.body)?;
        let Some(event) = event else { return Ok((message, false)) };
        let mut headers = async_nats::HeaderMap::new();
        chat_common::nats::inject_trace_context(&mut headers);
        let publish = PublishMessage::build()
            .payload(event.encode_to_vec().into())
            .headers(headers)
            .expected_last_subject_sequence(latest);
        let unavailable = |e: String| Error::Unavailable(format!("cannot record the change: {e}"));
        let acked = match js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(_) => return Ok((message, true)),
            // Another change to this conversation got in first: decide again on rows that show it.
            Err(e) if chat_common::nats::lost_a_race(&e) => continue,
            Err(e) => return Err(unavailable(e.to_string())),
        }
    }
}

/// Applies the change to the stored message, or says why it may not be made.
/// No event when there is nothing to change (deleting a deleted message).
fn decide(
    mut message: Message,
    who: &groups::Who,
    moderator: bool,
    deleting: bool,
    body: &str,
) -> Result<(Message, Option<MessageChanged>), Error> {
    if message.system.is_some() {
        return Err(Error::FailedPrecondition("system messages cannot be changed".into()));
    }
    if message.deleted_at_ms != 0 {
        return if deleting {
            Ok((message, None))
        } else {
            Err(Error::FailedPrecondition("a deleted message cannot be edited".into()))
        };
    }
    let is_sender = message.sender_id == who.user_id;
    let now = chat_common::time::now_ms();
    if deleting {
        if !is_sender && !moderator {
            return Err(Error::Forbidden("only the sender, or a group's owner or admin, deletes a message".into()));
        }
        message.body.clear();
        message.attachments.clear();
        message.deleted_at_ms = now;
    } else {
        if !is_sender {
            return Err(Error::Forbidden("only the sender edits a message".into()));
        }
        message.body = body.to_owned();
        message.edited_at_ms = now;
    }
    let event = MessageChanged {
        message: Some(message.clone()),
        change: if deleting { ChangeKind::Deleted } else { ChangeKind::Edited }.into(),
        editor_id: who.user_id.clone(),
        editor_device_id: who.device_id.clone(),
        ..Default::default()
    };
    Ok((message, Some(event)))
}

/// The stream sequence of the conversation's latest change (0 when none),
/// once history's rows show it.
async fn latest_change_applied(store: &Store, stream: &Stream, subject: &str) -> Result<u64, Error> {
    let latest = match stream.direct_get_last_for_subject(subject).await {
        Ok(latest) => latest,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::Unavailable(format!("cannot read the latest change: {e}"))),
    };
    let changed = MessageChanged::decode(latest.payload.as_ref())
        .ok()
        .and_then(|c| c.message)
        .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("an undecodable change is in the stream")))?;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_CONSUMER;
    while !store.change_applied(&changed.conversation_id, &changed.message_id, latest.sequence).await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Unavailable("history is catching up with the latest change; try again".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(latest.sequence)
}

async fn stored_message(store: &Store, conversation_id: &str, message_id: &str) -> Result<Message, Error> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_CONSUMER;
    loop {
        if let Some(message) = store.message(conversation_id, message_id).await? {
            return Ok(message);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NotFound("message not found"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
