//! What members do for their own safety and quiet, kept here: muting a
//! conversation (a flag on the membership, announced with the membership
//! snapshot so notification stops pushing), and reporting a message for
//! moderators. Blocking lives in a key-value bucket, not here (see
//! `chat_common::blocks`).

use async_nats::jetstream;
use async_nats::jetstream::stream::Stream;
use chat_proto::events::v1::{ChangeKind, Message};
use chat_proto::history::v1::{
    ChangeMessageRequest, EraseUserMessagesRequest, EraseUserMessagesResponse, ListReportsRequest, ListReportsResponse,
    Report, ReportMessageRequest, ReportMessageResponse, ResolveReportRequest,
};
use serde_json::json;

use crate::error::Error;
use crate::store::{Access, NewReport, ReportRow, Store};
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

/// Reports for moderators, newest first.
pub async fn list(store: &Store, req: ListReportsRequest) -> Result<ListReportsResponse, Error> {
    let status = match req.status.as_str() {
        "" | "open" => Some("open"),
        "resolved" => Some("resolved"),
        "all" => None,
        _ => return Err(Error::InvalidArgument("status must be \"open\", \"resolved\" or \"all\"".into())),
    };
    let limit = match req.limit {
        0 => 20,
        limit @ 1..=100 => limit,
        _ => return Err(Error::InvalidArgument("limit must be between 1 and 100".into())),
    };
    let before_ms = if req.before_ms > 0 { req.before_ms } else { i64::MAX };
    let reports = store.reports(status, before_ms, limit).await?.into_iter().map(report_of).collect();
    Ok(ListReportsResponse { reports })
}

/// Closes a report with what the moderator did; with `remove_message`, the
/// reported message is removed first (as an operator).
pub async fn resolve(
    store: &Store,
    (js, stream): (&jetstream::Context, &Stream),
    req: ResolveReportRequest,
) -> Result<Report, Error> {
    let report_id = validate::uuid("report_id", &req.report_id)?;
    let resolution = req.resolution.trim();
    if resolution.is_empty() || resolution.chars().count() > REASON_MAX_CHARS || resolution.contains('\0') {
        return Err(Error::InvalidArgument(format!("resolution must be 1 to {REASON_MAX_CHARS} characters")));
    }
    let resolved_by = req.resolved_by.trim();
    if resolved_by.is_empty() || resolved_by.chars().count() > 64 || resolved_by.chars().any(char::is_control) {
        return Err(Error::InvalidArgument("resolved_by must be 1 to 64 printable characters".into()));
    }
    if req.remove_message {
        let report = store.report(&report_id).await?.ok_or(Error::NotFound("report not found"))?;
        let removal = ChangeMessageRequest {
            conversation_id: report.conversation_id,
            message_id: report.message_id,
            change: ChangeKind::Deleted.into(),
            by_operator: true,
            ..Default::default()
        };
        crate::edits::change(store, js, stream, removal).await?;
    }
    let now = chat_common::time::now_ms();
    let row = store.resolve_report(&report_id, resolved_by, resolution, now).await?;
    row.map(report_of).ok_or(Error::NotFound("report not found"))
}

fn report_of(row: ReportRow) -> Report {
    Report {
        report_id: row.id,
        reporter_id: row.reporter_id,
        conversation_id: row.conversation_id,
        message_id: row.message_id,
        sender_id: row.sender_id,
        reason: row.reason,
        context_json: row.context,
        created_at_ms: row.created_at_ms,
        status: row.status,
        resolved_by: row.resolved_by.unwrap_or_default(),
        resolution: row.resolution.unwrap_or_default(),
        resolved_at_ms: row.resolved_at_ms.unwrap_or_default(),
    }
}

/// Deletes a batch of an erased user's messages, as an operator.
pub async fn erase_messages(
    store: &Store,
    (js, stream): (&jetstream::Context, &Stream),
    req: EraseUserMessagesRequest,
) -> Result<EraseUserMessagesResponse, Error> {
    let user_id = validate::uuid("user_id", &req.user_id)?;
    let limit = match req.limit {
        0 => 200,
        limit @ 1..=1000 => limit,
        _ => return Err(Error::InvalidArgument("limit must be between 1 and 1000".into())),
    };
    let (batch, total) = store.undeleted_messages_of(&user_id, limit).await?;
    // A row may still show a deletion an earlier call made and the stream
    // holds: deleting it again changes nothing, and is not counted.
    let mut erased = 0u32;
    for (conversation_id, message_id) in &batch {
        let removal = ChangeMessageRequest {
            conversation_id: conversation_id.clone(),
            message_id: message_id.clone(),
            change: ChangeKind::Deleted.into(),
            by_operator: true,
            ..Default::default()
        };
        if crate::edits::apply(store, js, stream, removal).await?.1 {
            erased += 1;
        }
    }
    let handled = u64::try_from(batch.len()).unwrap_or(u64::MAX);
    Ok(EraseUserMessagesResponse { erased, remaining: total.saturating_sub(handled) })
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
