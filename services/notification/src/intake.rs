//! Reads the CHAT stream (a durable consumer shared by every notification
//! instance, so each event is handled once) and keeps the offline queue:
//! a message is queued for each member with no connected device; a read
//! marker drops that member's deliveries it passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use chat_common::grpc::Channel;
use chat_common::nats::{ChatSubject, parse_chat_subject};
use chat_common::shutdown::CancellationToken;
use chat_common::sockets::SocketIndex;
use chat_proto::events::v1::{MembershipChanged, Message, ReadMarkerMoved};
use chat_proto::history::v1::GetConversationRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::notification::v1::PendingDelivery;
use futures::StreamExt;
use prost::Message as _;
use tracing::Instrument;

use crate::pending::Pending;

/// Name of the durable consumer.
pub const CONSUMER: &str = "notification";
/// Characters of a message body kept for the notification text.
const PREVIEW_CHARS: usize = 120;
/// Member lists cached at most (then the cache starts over).
const MAX_CACHED: usize = 100_000;
/// How long an event that could not be handled waits before it is retried.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct Intake {
    consumer: PullConsumer,
    pending: Arc<Pending>,
    sockets: Arc<Mutex<SocketIndex>>,
    history: HistoryServiceClient<Channel>,
    /// Conversation → members, fetched once and kept current by the stream's snapshots.
    members: Mutex<HashMap<String, Arc<Vec<String>>>>,
}

impl Intake {
    /// # Errors
    /// When the consumer cannot be created.
    pub async fn new(
        stream: &Stream,
        pending: Arc<Pending>,
        sockets: Arc<Mutex<SocketIndex>>,
        history: HistoryServiceClient<Channel>,
    ) -> Result<Self, async_nats::Error> {
        // The whole stream rather than one filter per subject kind, which
        // JetStream would match against every conversation's subjects on each
        // delivery; edits are acknowledged unread. Create-or-update, so a
        // consumer made with the older filter follows.
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                filter_subject: chat_common::nats::CHAT_SUBJECTS.to_owned(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                // A first start does not notify about the past.
                deliver_policy: DeliverPolicy::New,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await?;
        Ok(Self { consumer, pending, sockets, history, members: Mutex::new(HashMap::new()) })
    }

    /// The durable consumer (for its lag).
    pub fn consumer(&self) -> PullConsumer {
        self.consumer.clone()
    }

    /// Handles events until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut messages = match self.consumer.messages().await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the chat stream; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RETRY_AFTER) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        let ack = match self.handle(&message).await {
                            Ok(()) => AckKind::Ack,
                            Err(e) => {
                                tracing::warn!(error = %e, "event not handled; retrying");
                                AckKind::Nak(Some(RETRY_AFTER))
                            }
                        };
                        if let Err(e) = message.ack_with(ack).await {
                            tracing::warn!(error = %e, "cannot acknowledge an event");
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "notification consumer hiccup"),
                    None => break,
                }
            }
        }
    }

    async fn handle(&self, message: &async_nats::jetstream::Message) -> Result<(), tonic::Status> {
        let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or_default();
        match parse_chat_subject(&message.subject) {
            Some(ChatSubject::Message { .. }) => {
                let Ok(chat) = Message::decode(message.payload.as_ref()) else { return Ok(()) };
                if chat.system.is_some() {
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
                    other => other,
                }
            }
            Some(ChatSubject::Membership { conversation_id }) => {
                if let Ok(event) = MembershipChanged::decode(message.payload.as_ref()) {
                    self.remember(conversation_id, event.member_ids);
                }
                Ok(())
            }
            Some(ChatSubject::Read { conversation_id }) => {
                if let Ok(read) = ReadMarkerMoved::decode(message.payload.as_ref()) {
                    let seq = read.seq;
                    self.pending.remove(&read.user_id, |d| d.conversation_id == conversation_id && d.seq <= seq).await;
                }
                Ok(())
            }
            Some(ChatSubject::Edit { .. }) | None => Ok(()),
        }
    }

    async fn queue_for_offline_members(&self, chat: &Message, stream_seq: u64) -> Result<(), tonic::Status> {
        let members = self.members_of(&chat.conversation_id, &chat.sender_id).await?;
        let offline: Vec<&String> = {
            let sockets = self.sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            members.iter().filter(|m| **m != chat.sender_id && !sockets.is_connected(m)).collect()
        };
        let preview: String = chat.body.chars().take(PREVIEW_CHARS).collect();
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
        let results = futures::future::join_all(queued).await;
        tracing::Span::current().record("queued", results.len());
        for result in results {
            result.map_err(|e| tonic::Status::unavailable(format!("cannot queue a delivery: {e}")))?;
            crate::metrics::get().queued.inc();
        }
        Ok(())
    }

    async fn members_of(&self, conversation_id: &str, member: &str) -> Result<Arc<Vec<String>>, tonic::Status> {
        if let Some(members) = self.lock().get(conversation_id) {
            return Ok(members.clone());
        }
        let conversation = self
            .history
            .clone()
            .get_conversation(GetConversationRequest {
                conversation_id: conversation_id.to_owned(),
                user_id: member.to_owned(),
            })
            .await?
            .into_inner();
        Ok(self.remember(conversation_id, conversation.member_ids))
    }

    fn remember(&self, conversation_id: &str, member_ids: Vec<String>) -> Arc<Vec<String>> {
        let members = Arc::new(member_ids);
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(conversation_id.to_owned(), members.clone());
        members
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<String>>>> {
        self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
