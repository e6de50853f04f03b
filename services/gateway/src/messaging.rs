//! Sending a message, the same way from a WebSocket `send` frame and from
//! `POST /v1/conversations/{id}/messages`: validate, check membership (cached),
//! then sequence and store through JetStream. And moving a read marker.

use std::time::Duration;

use chat_common::grpc::Channel;
use chat_proto::events::v1::{Attachment, ChangeKind, Message};
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::history::v1::{Actor, ChangeMessageRequest, FindSentMessageRequest, MarkReadRequest};
use chat_proto::media::v1::ClaimAttachmentsRequest;
use chat_proto::media::v1::media_service_client::MediaServiceClient;

use crate::error::ApiError;
use crate::membership::MembershipCache;
use crate::protocol::rules::{SendInput, conversation_id, validate};
use crate::tokens::Identity;
use chat_common::conversation_log::{AppendError, ConversationLog, Outgoing, Published};

/// A send is answered within this, stored or `unavailable` (a retry with the
/// same `client_msg_id` is safe), however many store requests it makes and
/// however long it waits its turn behind the conversation's other sends:
/// never a hang.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a send waits for history to say whether a `client_msg_id` the
/// set of sent keys cannot call new was sent before, before it is refused as
/// unavailable.
const ARCHIVE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// History, asked about keys the set of sent keys cannot call new.
pub struct HistoryArchive(pub HistoryServiceClient<Channel>);

impl chat_common::conversation_log::SentArchive for HistoryArchive {
    fn find_sent<'a>(
        &'a self,
        sender_id: &'a str,
        client_msg_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<Message>, String>> {
        let request =
            FindSentMessageRequest { sender_id: sender_id.to_owned(), client_msg_id: client_msg_id.to_owned() };
        let mut history = self.0.clone();
        Box::pin(async move {
            match tokio::time::timeout(ARCHIVE_LOOKUP_TIMEOUT, history.find_sent_message(request)).await {
                Ok(Ok(found)) => Ok(found.into_inner().message),
                Ok(Err(status)) => Err(status.to_string()),
                Err(_) => Err(format!("no answer within {ARCHIVE_LOOKUP_TIMEOUT:?}")),
            }
        })
    }
}

/// Validates, authorises and publishes one message.
///
/// # Errors
/// As `validate`, `forbidden`/`not_found` for the conversation, `unavailable`
/// when the message could not be made durable.
#[tracing::instrument(
    name = "gateway.receive",
    skip_all,
    fields(otel.kind = "server", conversation_id = %input.conversation_id, body_bytes = input.body.len())
)]
pub async fn send(
    membership: &MembershipCache,
    log: &ConversationLog,
    media: &MediaServiceClient<Channel>,
    sender: &Identity,
    input: &SendInput,
) -> Result<Published, ApiError> {
    validate(input)?;
    let conversation_id = conversation_id(&input.conversation_id)?;
    let members = membership.for_member(&conversation_id, &sender.user_id).await?;
    let attachments = claim(media, sender, &conversation_id, &input.attachments).await?;
    let outgoing = Outgoing {
        conversation_id: &conversation_id,
        sender_id: &sender.user_id,
        sender_device_id: &sender.device_id,
        client_msg_id: &input.client_msg_id,
        body: &input.body,
        system: None,
        attachments: &attachments,
    };
    let appended = tokio::time::timeout(SEND_TIMEOUT, log.append(&outgoing, members.persisted_last_seq()))
        .await
        .unwrap_or_else(|_| Err(AppendError::Unavailable(format!("no answer within {SEND_TIMEOUT:?}"))));
    let published = appended.map_err(|e| match e {
        AppendError::Unavailable(cause) => {
            tracing::warn!(%cause, "JetStream did not confirm a write");
            ApiError::unavailable("message store unavailable; retry")
        }
        AppendError::Busy => ApiError::unavailable("the conversation is too busy; retry"),
        AppendError::Corrupt(what) => {
            tracing::error!(%what, "unreadable entry in the chat stream");
            ApiError::internal()
        }
    })?;
    tracing::debug!(seq = published.message.seq, duplicate = published.duplicate, "message durable");
    Ok(published)
}

/// Attaches the sender's uploads to the message, as media stored them.
///
/// # Errors
/// `not_found` for an id that is not one of the sender's uploads, `conflict`
/// for one attached in another conversation, `unavailable` when media is down.
async fn claim(
    media: &MediaServiceClient<Channel>,
    sender: &Identity,
    conversation_id: &str,
    ids: &[String],
) -> Result<Vec<Attachment>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let request = ClaimAttachmentsRequest {
        user_id: sender.user_id.to_string(),
        conversation_id: conversation_id.to_owned(),
        attachment_ids: ids.to_vec(),
    };
    let claimed = tokio::time::timeout(SEND_TIMEOUT, media.clone().claim_attachments(request))
        .await
        .map_err(|_| ApiError::unavailable("the file store does not answer; retry"))??;
    Ok(claimed.into_inner().attachments.into_iter().map(attachment_of).collect())
}

/// What a message carries of an upload.
pub fn attachment_of(a: chat_proto::media::v1::Attachment) -> Attachment {
    Attachment {
        id: a.id,
        name: a.name,
        content_type: a.content_type,
        size: a.size,
        width: a.width,
        height: a.height,
        has_thumbnail: a.has_thumbnail,
        blurhash: a.blurhash,
    }
}

/// Moves the caller's read marker; history keeps it monotonic and announces
/// the move to the conversation's other devices.
///
/// # Errors
/// `forbidden`/`not_found` for the conversation, `unavailable` when history is down.
pub async fn mark_read(
    membership: &MembershipCache,
    history: &HistoryServiceClient<Channel>,
    reader: &Identity,
    conversation_id: &str,
    seq: u64,
) -> Result<(), ApiError> {
    membership.for_member(conversation_id, &reader.user_id).await?;
    history
        .clone()
        .mark_read(MarkReadRequest {
            conversation_id: conversation_id.to_owned(),
            user_id: reader.user_id.to_string(),
            device_id: reader.device_id.to_string(),
            seq,
        })
        .await?;
    Ok(())
}

/// Edits a message (`body` given) or deletes it; returns it as it is now.
///
/// # Errors
/// `forbidden` for someone who may not, `not_found`, `conflict` for system or
/// deleted messages, `unavailable` when history is down.
pub async fn change(
    history: &HistoryServiceClient<Channel>,
    editor: &Identity,
    conversation_id: &str,
    message_id: &str,
    body: Option<String>,
) -> Result<Message, ApiError> {
    let change = if body.is_some() { ChangeKind::Edited } else { ChangeKind::Deleted };
    Ok(history
        .clone()
        .change_message(ChangeMessageRequest {
            conversation_id: conversation_id.to_owned(),
            message_id: message_id.to_owned(),
            actor: Some(Actor { user_id: editor.user_id.to_string(), device_id: editor.device_id.to_string() }),
            change: change.into(),
            body: body.unwrap_or_default(),
            ..Default::default()
        })
        .await?
        .into_inner())
}
