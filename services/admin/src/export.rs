//! Exporting a user's data: each service that holds some of it is asked in
//! turn, and every item goes out as one JSON record as soon as it is read, so
//! a user with a million messages costs a page of them in memory, not all.

use chat_common::grpc::Channel;
use chat_proto::admin::v1::ExportRecord;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::auth::v1::{FindUsersRequest, ListDevicesRequest};
use chat_proto::events::v1::Message;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::history::v1::{ListConversationsRequest, MessagesSentByRequest};
use chat_proto::notification::v1::notification_service_client::NotificationServiceClient;
use chat_proto::notification::v1::{ListPushSubscriptionsRequest, push_subscription::Target};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::Status;

/// The services a user's data is read from.
#[derive(Clone)]
pub struct Exporter {
    pub auth: AuthServiceClient<Channel>,
    pub history: HistoryServiceClient<Channel>,
    pub notification: NotificationServiceClient<Channel>,
    pub js: async_nats::jetstream::Context,
}

/// Where records go. A closed receiver (the operator went away) ends the
/// export, and so does a reader that takes no record for `stall_limit`: the
/// stream's buffers are full and the export would wait for ever.
pub struct Out {
    pub records: mpsc::Sender<Result<ExportRecord, Status>>,
    pub stall_limit: std::time::Duration,
}

impl Out {
    pub async fn emit(&self, kind: &str, value: Value) -> Result<(), Status> {
        let record = ExportRecord { kind: kind.to_owned(), json: value.to_string() };
        match tokio::time::timeout(self.stall_limit, self.records.send(Ok(record))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Status::cancelled("the export was abandoned")),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the export's reader took no record for {} s",
                self.stall_limit.as_secs()
            ))),
        }
    }

    /// Ends the stream with `status` (dropped if the reader is gone or stalled).
    pub async fn fail(&self, status: Status) {
        let _ = tokio::time::timeout(self.stall_limit, self.records.send(Err(status))).await;
    }
}

impl Exporter {
    /// The user's profile record, or `NOT_FOUND` (checked before anything streams).
    pub async fn profile(&self, user_id: &str) -> Result<Value, Status> {
        let found = self.auth.clone().find_users(FindUsersRequest { query: user_id.to_owned(), limit: 1 }).await?;
        let record = found
            .into_inner()
            .users
            .into_iter()
            .find(|u| u.user.as_ref().is_some_and(|user| user.user_id == user_id))
            .ok_or_else(|| Status::not_found("user not found"))?;
        let user = record.user.unwrap_or_default();
        Ok(json!({
            "user_id": user.user_id,
            "username": user.username,
            "display_name": user.display_name,
            "created_at_ms": record.created_at_ms,
            "deactivated_at_ms": record.deactivated_at_ms,
        }))
    }

    /// Every record after the profile.
    pub async fn run(&self, user_id: &str, out: &Out) -> Result<(), Status> {
        let devices = self.auth.clone().list_devices(ListDevicesRequest { user_id: user_id.to_owned() }).await?;
        for d in devices.into_inner().devices {
            let device = json!({
                "device_id": d.device_id, "name": d.name,
                "created_at_ms": d.created_at_ms, "last_seen_at_ms": d.last_seen_at_ms,
            });
            out.emit("device", device).await?;
        }
        let request = ListConversationsRequest { user_id: user_id.to_owned(), ..Default::default() };
        for c in self.history.clone().list_conversations(request).await?.into_inner().conversations {
            let conversation = json!({
                "conversation_id": c.conversation_id, "kind": c.kind().word(), "title": c.title,
                "member_ids": c.member_ids, "muted": c.muted, "created_at_ms": c.created_at_ms,
            });
            out.emit("conversation", conversation).await?;
        }
        let mut after = 0;
        loop {
            let page = MessagesSentByRequest { user_id: user_id.to_owned(), after_stream_seq: after, limit: 0 };
            let page = self.history.clone().messages_sent_by(page).await?.into_inner();
            for sent in &page.messages {
                after = after.max(sent.stream_seq);
                if let Some(message) = &sent.message {
                    out.emit("message", message_json(message)).await?;
                }
            }
            if !page.has_more || page.messages.is_empty() {
                break;
            }
        }
        for (blocked, at) in self.blocks_of(user_id).await? {
            out.emit("block", json!({ "blocked_user_id": blocked, "blocked_at_ms": at })).await?;
        }
        let request = ListPushSubscriptionsRequest { user_id: user_id.to_owned() };
        for s in self.notification.clone().list_push_subscriptions(request).await?.into_inner().subscriptions {
            let (kind, endpoint) = match &s.target {
                Some(Target::WebPush(push)) => ("web_push", push.endpoint.clone()),
                Some(Target::Webhook(hook)) => ("webhook", hook.url.clone()),
                None => ("unknown", String::new()),
            };
            let subscription = json!({
                "subscription_id": s.subscription_id, "device_id": s.device_id, "type": kind,
                "endpoint": endpoint, "created_at_ms": s.created_at_ms,
            });
            out.emit("push_subscription", subscription).await?;
        }
        Ok(())
    }

    /// The users `user_id` blocked, with when (read from the bucket itself).
    async fn blocks_of(&self, user_id: &str) -> Result<Vec<(String, i64)>, Status> {
        use futures::TryStreamExt as _;
        let unavailable = |e: String| Status::unavailable(format!("cannot read the blocks: {e}"));
        let bucket = chat_common::blocks::existing_bucket(&self.js).await.map_err(|e| unavailable(e.to_string()))?;
        let Some(bucket) = bucket else { return Ok(Vec::new()) };
        let keys: Vec<String> = bucket
            .keys()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut blocks = Vec::new();
        for key in keys {
            let Some((blocker, blocked)) = key.split_once('.') else { continue };
            if blocker != user_id {
                continue;
            }
            if let Some(value) = bucket.get(&key).await.map_err(|e| unavailable(e.to_string()))? {
                let at = std::str::from_utf8(&value).ok().and_then(|v| v.parse().ok()).unwrap_or_default();
                blocks.push((blocked.to_owned(), at));
            }
        }
        Ok(blocks)
    }
}

/// A message the user sent, as the archive keeps it.
fn message_json(m: &Message) -> Value {
    let attachments: Vec<Value> = m
        .attachments
        .iter()
        .map(|a| json!({ "id": a.id, "name": a.name, "content_type": a.content_type, "size": a.size }))
        .collect();
    json!({
        "conversation_id": m.conversation_id, "message_id": m.message_id, "seq": m.seq,
        "client_msg_id": m.client_msg_id, "body": m.body, "sent_at_ms": m.sent_at_ms,
        "edited_at_ms": m.edited_at_ms, "deleted_at_ms": m.deleted_at_ms, "attachments": attachments,
    })
}
