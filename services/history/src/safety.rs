//! What members do for their own safety and quiet, kept here: muting a
//! conversation (a flag on the membership, announced with the membership
//! snapshot so notification stops pushing), and reporting a message for
//! moderators. Blocking lives in a key-value bucket, not here (see
//! `chat_common::blocks`).

use chat_proto::events::v1::Message;
use chat_proto::history::v1::{ReportMessageRequest, ReportMessageResponse};
use serde_json::json;

use crate::error::Error;
use crate::store::{Access, NewReport, Store};
use crate::validate;

/// Messages kept on each side of a reported one.
pub const CONTEXT_MESSAGES: u32 = 5;
/// Characters a report's reason may have.
pub const REASON_MAX_CHARS: usize = 1000;

/// Keeps a report of a message the reporter can read.
pub async fn report(store: &Store, req: ReportMessageRequest) -> Result<ReportMessageResponse, Error> {
    let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
    let message_id = validate::uuid("message_id", &req.message_id)?;
    let reporter_id = validate::uuid("reporter_id", &req.reporter_id)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > REASON_MAX_CHARS {
        return Err(Error::InvalidArgument(format!("reason must be 1 to {REASON_MAX_CHARS} characters")));
    }
    if reason.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(Error::InvalidArgument("reason must not contain control characters".into()));
    }
    // Up to which seq the reporter may read the conversation.
    let readable_until = match store.access(&conversation_id, &reporter_id).await? {
        Access::Active { .. } => u64::MAX,
        Access::Former { until_seq } => until_seq,
        Access::None if store.conversation_exists(&conversation_id).await? => return Err(Error::NotMember),
        Access::None => return Err(Error::NotFound(crate::error::NO_CONVERSATION)),
    };
    let message = store
        .message(&conversation_id, &message_id)
        .await?
        .filter(|m| m.seq <= readable_until)
        .ok_or(Error::NotFound("message not found"))?;
    if message.system.is_some() {
        return Err(Error::FailedPrecondition("system messages cannot be reported".into()));
    }
    if message.sender_id == reporter_id {
        return Err(Error::InvalidArgument("you cannot report your own message".into()));
    }
    let (before, _) = store.messages_page(&conversation_id, Some(message.seq), None, CONTEXT_MESSAGES).await?;
    let (after, _) = store.messages_page(&conversation_id, None, Some(message.seq), CONTEXT_MESSAGES).await?;
    let after = after.into_iter().filter(|m| m.seq <= readable_until);
    let context: Vec<_> = before
        .iter()
        .chain(std::iter::once(&message))
        .chain(after.collect::<Vec<_>>().iter())
        .map(context_json)
        .collect();
    let id = uuid::Uuid::now_v7().to_string();
    let context = serde_json::Value::from(context).to_string();
    let report = NewReport {
        id: &id,
        reporter_id: &reporter_id,
        conversation_id: &conversation_id,
        message_id: &message_id,
        sender_id: &message.sender_id,
        reason,
        context: &context,
        created_at_ms: chat_common::time::now_ms(),
    };
    let (report_id, created_at_ms, created) = store.add_report(&report).await?;
    Ok(ReportMessageResponse { report_id, created_at_ms, created })
}

/// A message as a report keeps it.
fn context_json(m: &Message) -> serde_json::Value {
    json!({
        "message_id": m.message_id,
        "seq": m.seq,
        "sender_id": m.sender_id,
        "body": m.body,
        "sent_at_ms": m.sent_at_ms,
        "edited_at_ms": m.edited_at_ms,
        "deleted_at_ms": m.deleted_at_ms,
        "system": m.system.is_some(),
        "attachments": m.attachments.iter().map(|a| json!({ "id": a.id, "name": a.name, "content_type": a.content_type })).collect::<Vec<_>>(),
    })
}
