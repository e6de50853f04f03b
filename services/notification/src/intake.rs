//! Reads the CHAT stream (a durable consumer shared by every notification
//! instance, so each event goes to one of them) and keeps the offline queue:
//! a message is queued for each member with no connected device; a read
//! marker drops that member's deliveries it passed. An event can come again
//! (its acknowledgement lost to a crash of nats-server or of notification):
//! handling it again queues nothing new, as `pending` queues each delivery once.
//!
//! Membership: each conversation's member list is cached, kept current by the
//! membership snapshots on the stream and, first, by the group's system
//! messages (`member_removed`, `member_left`, `members_added`): history writes
//! a removal's system message before anything else of the removal, so a
//! removed member is dropped here even if the snapshot after it never comes.
//!
//! No entry can stall the consumer: one that can never be handled (its
//! payload does not decode, or history refuses its ids) is set aside at once,
//! one that keeps failing after `NOTIFICATION_INTAKE_ATTEMPTS` attempts (with
//! backoff); either way as a dead event in the `notify_dead_events` bucket
//! (key: its stream sequence) with the reason, counted in
//! `notification_dead_events` and logged once, while later entries flow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use chat_common::blocks::Blocks;
use chat_common::events::{ChatEvent, EventError};
use chat_common::grpc::Channel;
use chat_common::paced_pull::PacedPull;
use chat_common::shutdown::CancellationToken;
use chat_common::sockets::SocketIndex;
use chat_proto::events::v1::{Message, SystemEvent, SystemEventKind};
use chat_proto::history::v1::GetConversationRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::notification::v1::PendingDelivery;
use tracing::Instrument;

use crate::pending::Pending;

/// Name of the durable consumer.
pub const CONSUMER: &str = "notification";
/// Characters of a message body kept for the notification text.
const PREVIEW_CHARS: usize = 120;
/// Member lists cached at most (then the cache starts over).
const MAX_CACHED: usize = 100_000;
/// At most this many events per pull, and the pause between pulls while
/// events flow (see `chat_common::paced_pull`): a push waits for its
/// coalescing window anyway.
const BURST: usize = 256;
const PACE: Duration = Duration::from_millis(5);
/// How long an event that could not be handled waits before it is retried
/// the first time; each next retry waits twice as long, up to `RETRY_MAX`.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Why an event was not handled.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// It can never be handled: set aside at once.
    #[error("{0}")]
    Poison(String),
    /// Worth retrying (a dependency is down).
    #[error("{0}")]
    Transient(String),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        let reason = format!("history answered {:?}: {}", status.code(), status.message());
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Failure::Poison(reason),
            _ => Failure::Transient(reason),
        }
    }
}

/// An event set aside: in `notify_dead_events` under its stream sequence.
#[derive(Debug, serde::Serialize)]
struct DeadEvent<'a> {
    stream_seq: u64,
    subject: &'a str,
    reason: String,
    attempts: u64,
    failed_at_ms: i64,
}

pub struct Intake {
    consumer: PullConsumer,
    /// Taken by [`Intake::run`].
    reader: Option<PacedPull>,
    attempts: u64,
    dead_events: async_nats::jetstream::kv::Store,
    pending: Arc<Pending>,
    sockets: Arc<Mutex<SocketIndex>>,
    history: HistoryServiceClient<Channel>,
    /// Conversation → members, fetched once and kept current by the stream's snapshots.
    members: Mutex<HashMap<String, Arc<Members>>>,
    /// Who blocked whom: nothing is queued for a member from a sender they blocked.
    blocks: Arc<Blocks>,
}

/// A conversation's members, and those of them who muted it.
#[derive(Clone, Default)]
struct Members {
    ids: Vec<String>,
    muted: Vec<String>,
}

impl Intake {
    /// # Errors
    /// When the consumer cannot be created.
    pub async fn new(
        stream: &Stream,
        attempts: u32,
        dead_events: async_nats::jetstream::kv::Store,
        pending: Arc<Pending>,
        sockets: Arc<Mutex<SocketIndex>>,
        history: HistoryServiceClient<Channel>,
        blocks: Arc<Blocks>,
    ) -> Result<Self, async_nats::Error> {
        // The whole stream rather than one filter per subject kind, which
        // JetStream would match against every conversation's subjects on each
        // delivery; edits are acknowledged unread. Create-or-update, so a
        // consumer made with the older filter follows.
        let config = pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            filter_subject: chat_common::nats::CHAT_SUBJECTS.to_owned(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            // A first start does not notify about the past.
            deliver_policy: DeliverPolicy::New,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        let reader = PacedPull::new(stream.clone(), config, BURST, PACE).await?;
        Ok(Self {
            consumer: reader.consumer(),
            reader: Some(reader),
            attempts: u64::from(attempts.max(1)),
            dead_events,
            pending,
            sockets,
            history,
            members: Mutex::new(HashMap::new()),
            blocks,
        })
    }

    /// The durable consumer (for its lag).
    pub fn consumer(&self) -> PullConsumer {
        self.consumer.clone()
    }

    /// Handles events until `shutdown`, a burst at a time.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let Some(mut reader) = self.reader.take() else { return };
        while let Some(burst) = reader.next_burst(&shutdown).await {
            for message in burst {
                let ack = match self.handle(&message).await {
                    Ok(()) => AckKind::Ack,
                    Err(failure) => self.after(&message, failure).await,
                };
                if let Err(e) = message.ack_with(ack).await {
                    tracing::warn!(error = %e, "cannot acknowledge an event");
                }
            }
        }
    }

    /// What to do with an event that failed: retry it later, or set it aside.
    async fn after(&self, message: &async_nats::jetstream::Message, failure: Failure) -> AckKind {
        let (stream_seq, delivered) = message.info().map(|i| (i.stream_sequence, i.delivered)).unwrap_or_default();
        let delivered = delivered.max(1) as u64;
        let reason = match failure {
            Failure::Transient(reason) if delivered < self.attempts => {
                let delay =
                    RETRY_AFTER.saturating_mul(2u32.saturating_pow(delivered.min(16) as u32 - 1)).min(RETRY_MAX);
                tracing::warn!(error = %reason, attempt = delivered, ?delay, "event not handled; retrying");
                return AckKind::Nak(Some(delay));
            }
            Failure::Transient(reason) => format!("failed {delivered} times; last: {reason}"),
            Failure::Poison(reason) => reason,
        };
        let dead = DeadEvent {
            stream_seq,
            subject: &message.subject,
            reason,
            attempts: delivered,
            failed_at_ms: chat_common::time::now_ms(),
        };
        let value = serde_json::to_vec(&dead).expect("a dead event serialises");
        if let Err(e) = self.dead_events.put(stream_seq.to_string(), value.into()).await {
            tracing::warn!(error = %e, "cannot record a dead event; retrying it");
            return AckKind::Nak(Some(RETRY_AFTER));
        }
        tracing::error!(stream_seq, subject = %dead.subject, reason = %dead.reason, "event set aside as a dead event");
        crate::metrics::get().dead_events.inc();
        // Never redelivered.
        AckKind::Term
    }

    async fn handle(&self, message: &async_nats::jetstream::Message) -> Result<(), Failure> {
        let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or_default();
        let event = match ChatEvent::decode(&message.subject, message.payload.as_ref()) {
            Ok(event) => event,
            // A newer writer's kind: nothing to notify about here.
            Err(EventError::UnknownKind(_)) => return Ok(()),
            Err(EventError::Undecodable { kind, reason }) => {
                return Err(Failure::Poison(format!("undecodable payload ({kind}): {reason}")));
            }
        };
        match event {
            ChatEvent::Message(chat) => {
                if let Some(system) = &chat.system {
                    self.apply_system_event(&chat.conversation_id, system);
                    return Ok(()); // membership changes notify nobody
                }
                let span = tracing::info_span!(
                    "notification.decide",
                    otel.kind = "consumer",
                    stream_seq,
                    queued = tracing::field::Empty
                );
                chat_common::nats::follow_trace_context(&span, message.headers.as_ref());
                match self.queue_for_offline_members(&chat, stream_seq).instrument(span).await {
                    // The sender left, or the conversation is gone: nobody to tell.
                    Err(status) if matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::NotFound) => {
                        Ok(())
                    }
                    other => other.map_err(Failure::from),
                }
            }
            ChatEvent::Membership(event) => {
                self.remember(&event.conversation_id, event.member_ids, event.muted_member_ids);
                Ok(())
            }
            ChatEvent::Read(read) => {
                let seq = read.seq;
                let conversation_id = &read.conversation_id;
                self.pending.remove(&read.user_id, |d| d.conversation_id == *conversation_id && d.seq <= seq).await;
                Ok(())
            }
            ChatEvent::Changed(_) => Ok(()),
        }
    }

    async fn queue_for_offline_members(&self, chat: &Message, stream_seq: u64) -> Result<(), tonic::Status> {
        let members = self.members_of(&chat.conversation_id, &chat.sender_id).await?;
        let offline: Vec<&String> = {
            let sockets = self.sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Nobody hears of a conversation they muted, nor from someone they blocked.
            let quiet = |m: &String| members.muted.contains(m) || self.blocks.hides(m, &chat.sender_id);
            members.ids.iter().filter(|m| **m != chat.sender_id && !sockets.is_connected(m) && !quiet(m)).collect()
        };
        let preview = preview(chat);
        let queued = offline.into_iter().map(|user_id| {
            let delivery = PendingDelivery {
                user_id: user_id.clone(),
                conversation_id: chat.conversation_id.clone(),
                message_id: chat.message_id.clone(),
                seq: chat.seq,
                stream_seq,
                sender_id: chat.sender_id.clone(),
                preview: preview.clone(),
                sent_at_ms: chat.sent_at_ms,
            };
            async move { self.pending.queue(&delivery).await }
        });
        let (mut newly_queued, mut failed) = (0, None);
        for result in futures::future::join_all(queued).await {
            match result {
                Ok(true) => {
                    newly_queued += 1;
                    crate::metrics::get().queued.inc();
                }
                Ok(false) => {} // queued when this event was handled before
                Err(e) => failed = Some(e),
            }
        }
        tracing::Span::current().record("queued", newly_queued);
        match failed {
            // The retry queues only the deliveries missing.
            Some(e) => Err(tonic::Status::unavailable(format!("cannot queue a delivery: {e}"))),
            None => Ok(()),
        }
    }

    async fn members_of(&self, conversation_id: &str, member: &str) -> Result<Arc<Members>, tonic::Status> {
        if let Some(members) = self.lock().get(conversation_id) {
            return Ok(members.clone());
        }
        let conversation = self
            .history
            .clone()
            .get_conversation(GetConversationRequest {
                conversation_id: conversation_id.to_owned(),
                user_id: member.to_owned(),
                members_only: true,
            })
            .await?
            .into_inner();
        Ok(self.remember(conversation_id, conversation.member_ids, conversation.muted_member_ids))
    }

    /// Applies a group's system message to the cached member list: a removal
    /// takes effect here at its place in the stream, snapshot or not.
    fn apply_system_event(&self, conversation_id: &str, event: &SystemEvent) {
        let mut cache = self.lock();
        let Some(members) = cache.get_mut(conversation_id) else { return };
        let mut updated = members.as_ref().clone();
        match event.kind() {
            SystemEventKind::MemberRemoved | SystemEventKind::MemberLeft => {
                updated.ids.retain(|m| !event.user_ids.contains(m));
                updated.muted.retain(|m| !event.user_ids.contains(m));
            }
            SystemEventKind::MembersAdded | SystemEventKind::Created => {
                for user_id in &event.user_ids {
                    if !updated.ids.contains(user_id) {
                        updated.ids.push(user_id.clone());
                    }
                }
            }
            SystemEventKind::Renamed | SystemEventKind::RoleChanged | SystemEventKind::Unspecified => return,
        }
        *members = Arc::new(updated);
    }

    fn remember(&self, conversation_id: &str, ids: Vec<String>, muted: Vec<String>) -> Arc<Members> {
        let members = Arc::new(Members { ids, muted });
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(conversation_id.to_owned(), members.clone());
        members
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Members>>> {
        self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a notification says of a message: the start of its text, and what
/// files it carries ("sent a photo", "sent 3 files: the caption").
pub fn preview(chat: &Message) -> String {
    let text: String = chat.body.chars().take(PREVIEW_CHARS).collect();
    let count = chat.attachments.len();
    if count == 0 {
        return text;
    }
    let photos = chat.attachments.iter().all(|a| a.content_type.starts_with("image/"));
    let sent = match (count, photos) {
        (1, true) => "sent a photo".to_owned(),
        (1, false) => "sent a file".to_owned(),
        (n, true) => format!("sent {n} photos"),
        (n, false) => format!("sent {n} files"),
    };
    if text.is_empty() { sent } else { format!("{sent}: {text}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::events::v1::Attachment;

    #[test]
    fn a_preview_says_what_files_a_message_carries() {
        let image = Attachment { content_type: "image/png".into(), ..Default::default() };
        let pdf = Attachment { content_type: "application/pdf".into(), ..Default::default() };
        let message =
            |body: &str, attachments: Vec<_>| Message { body: body.into(), attachments, ..Default::default() };
        assert_eq!(preview(&message("hello", vec![])), "hello");
        assert_eq!(preview(&message("", vec![image.clone()])), "sent a photo");
        assert_eq!(preview(&message("look", vec![image.clone(), image.clone()])), "sent 2 photos: look");
        assert_eq!(preview(&message("", vec![pdf.clone()])), "sent a file");
        assert_eq!(preview(&message("", vec![image, pdf])), "sent 2 files");
    }
}
