//! Appending to a conversation: assigns each message its per-conversation
//! `seq` and makes it durable in the CHAT stream. This is the write protocol of
//! the shared log, used by the gateway for client messages and by history for
//! system messages, so both obey the same compare-and-set.
//!
//! Every conversation has its own subject in the CHAT stream. A publish carries
//! `Nats-Expected-Last-Subject-Sequence` = the stream position of the
//! conversation's newest message as this gateway last saw it, so JetStream
//! accepts it only if nobody else wrote in between (compare-and-set). The
//! writer caches that position and the newest `seq` per conversation, so the
//! hot path is one publish and no database round trip; on a conflict it
//! re-reads the conversation's newest message and tries again.
//!
//! Idempotency is permanent: a re-send of a known (sender, `client_msg_id`),
//! however late, is answered with the original and never burns a `seq`; and
//! a send asks nothing but the publish itself to know it is new:
//!
//! 1. [`SentKeys`] holds every key ever sent, in memory, as the gateway reads
//!    them from the stream. It calls most new keys certainly new; those are
//!    published at once. A key it calls "maybe sent" (a real re-send, or about
//!    1 new key in 100), and every key while it is not complete (loading at
//!    start, or a stream that does not keep every message), is looked up in
//!    history's `messages` table, unique on (sender, `client_msg_id`)
//!    ([`SentArchive`]). When history cannot be asked then, the send is
//!    refused as unavailable (retry) rather than risk a second copy.
//! 2. JetStream's duplicate window. `Nats-Msg-Id` is derived from (sender,
//!    `client_msg_id`), so inside the window JetStream itself refuses a
//!    re-send, two re-sends racing each other included, and answers with the
//!    original's position. It covers what the set and history have not seen
//!    yet: the gateway's live lag (milliseconds) and history's ingest lag,
//!    which must stay below the window (`CHAT_STREAM_DUPLICATE_WINDOW_SECS`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self};
use chat_proto::events::v1::{Attachment, Message, SystemEvent};
use futures::future::BoxFuture;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::sent_keys::{Known, SentKeys};

/// Why a message could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// JetStream did not confirm the write; nothing was stored. Retry.
    #[error("message store unavailable: {0}")]
    Unavailable(String),
    /// Other writers kept winning the compare-and-set. Retry.
    #[error("the conversation is too busy; retry")]
    Busy,
    /// The stream holds something this code cannot read.
    #[error("unreadable stream entry: {0}")]
    Corrupt(String),
}

const MAX_ATTEMPTS: u32 = 8;
/// After the n-th lost race a writer waits a random time below
/// `RACE_BACKOFF_BASE * 2^n` (at most [`RACE_BACKOFF_CAP`]): writers on
/// several gateways that lost to each other then come back at different
/// times instead of colliding again in lockstep.
const RACE_BACKOFF_BASE: Duration = Duration::from_micros(500);
const RACE_BACKOFF_CAP: Duration = Duration::from_millis(50);
/// How long a send waits for its stream to have a leader again, and how
/// often it tries meanwhile. A cluster elects a new leader within a few
/// seconds of losing one; the caller's own deadline may end the wait sooner.
const LEADERLESS_WAIT: Duration = Duration::from_secs(2);
const LEADERLESS_PAUSE: Duration = Duration::from_millis(100);
/// Beyond this many cached conversations the cache starts over; a miss costs
/// one direct get, never correctness.
const MAX_CACHED_HEADS: usize = 100_000;

/// The newest message of a conversation: its stream position and its `seq`.
#[derive(Debug, Clone, Copy)]
struct Head {
    stream_seq: u64,
    seq: u64,
}

/// What the caller wants to send, already validated.
pub struct Outgoing<'a> {
    pub conversation_id: &'a str,
    pub sender_id: &'a str,
    pub sender_device_id: &'a str,
    pub client_msg_id: &'a str,
    pub body: &'a str,
    /// Set for system messages (membership changes, renames).
    pub system: Option<SystemEvent>,
    /// Files sent with the message, as media stored them.
    pub attachments: &'a [Attachment],
}

pub struct Published {
    pub message: Message,
    /// True when this was a re-send of a known `client_msg_id`.
    pub duplicate: bool,
}

/// The permanent record of sent messages (history's store), asked for a
/// (sender, `client_msg_id`) the set of sent keys cannot call new.
pub trait SentArchive: Send + Sync {
    /// The stored message, `None` when there is none, an error (its cause)
    /// when the archive cannot be asked.
    fn find_sent<'a>(
        &'a self,
        sender_id: &'a str,
        client_msg_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Message>, String>>;
}

pub struct ConversationLog {
    js: jetstream::Context,
    stream: Stream,
    /// Every key sent, as far as this process has read the stream.
    sent: Arc<SentKeys>,
    archive: Arc<dyn SentArchive>,
    archive_warnings: crate::log_throttle::LogThrottle,
    heads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Head>>>>>,
}

impl ConversationLog {
    pub fn new(js: jetstream::Context, stream: Stream, sent: Arc<SentKeys>, archive: Arc<dyn SentArchive>) -> Self {
        Self {
            js,
            stream,
            sent,
            archive,
            archive_warnings: crate::log_throttle::LogThrottle::new(Duration::from_secs(10)),
            heads: Mutex::new(HashMap::new()),
        }
    }

    /// The original of a known (sender, `client_msg_id`), if any. Only a key
    /// the set cannot call new costs a question to the archive.
    async fn original(&self, msg_id: &str, out: &Outgoing<'_>) -> Result<Option<Message>, AppendError> {
        let known = self.sent.check(msg_id);
        if known == Known::New {
            return Ok(None);
        }
        self.archive.find_sent(out.sender_id, out.client_msg_id).await.map_err(|cause| {
            // Once per interval, not once per message, through an outage.
            if let Some(since) = self.archive_warnings.due() {
                tracing::warn!(
                    %cause,
                    ?known,
                    unlogged_since_last = since,
                    "history cannot be asked whether a client_msg_id was sent before; refusing the send"
                );
            }
            AppendError::Unavailable(format!("cannot tell whether this client_msg_id was sent before: {cause}"))
        })
    }

    fn head_slot(&self, conversation_id: &str) -> Arc<tokio::sync::Mutex<Option<Head>>> {
        let mut heads = self.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if heads.len() >= MAX_CACHED_HEADS && !heads.contains_key(conversation_id) {
            heads.clear();
        }
        heads.entry(conversation_id.to_owned()).or_default().clone()
    }

    /// Publishes `out` and waits until JetStream has stored it.
    /// `persisted_last_seq` is the conversation's newest `seq` known to history,
    /// used only when the stream holds no message of the conversation any more.
    ///
    /// # Errors
    /// `Unavailable` or `Busy` when the message was not stored (retry);
    /// `Corrupt` when the stream holds unreadable entries.
    #[tracing::instrument(name = "jetstream.publish", skip_all, fields(otel.kind = "producer"))]
    pub async fn append(&self, out: &Outgoing<'_>, persisted_last_seq: u64) -> Result<Published, AppendError> {
        // Without a server, a publish would wait in the client's buffer until
        // its timeout: refuse at once, so the sender retries (elsewhere).
        if self.js.client().connection_state() != async_nats::connection::State::Connected {
            return Err(AppendError::Unavailable("not connected to NATS".into()));
        }
        let msg_id = idempotency_key(out.sender_id, out.client_msg_id);
        if let Some(message) = self.original(&msg_id, out).await? {
            return Ok(Published { message, duplicate: true });
        }
        let slot = self.head_slot(out.conversation_id);
        // One publish per conversation at a time from this gateway: they would
        // only conflict with each other.
        let mut head = slot.lock().await;
        let subject = crate::nats::message_subject(out.conversation_id);
        let mut lost_races = 0;
        let started = tokio::time::Instant::now();
        loop {
            let current = match *head {
                Some(h) => h,
                None => self.read_head(&subject, persisted_last_seq, lost_races > 0).await?,
            };
            let message = Message {
                conversation_id: out.conversation_id.to_owned(),
                message_id: uuid::Uuid::now_v7().to_string(),
                seq: current.seq + 1,
                sender_id: out.sender_id.to_owned(),
                sender_device_id: out.sender_device_id.to_owned(),
                client_msg_id: out.client_msg_id.to_owned(),
                body: out.body.to_owned(),
                sent_at_ms: crate::time::now_ms(),
                system: out.system.clone(),
                edited_at_ms: 0,
                deleted_at_ms: 0,
                attachments: out.attachments.to_vec(),
            };
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id.as_str());
            headers.insert("Nats-Expected-Last-Subject-Sequence", current.stream_seq.to_string().as_str());
            headers.insert(crate::nats::SEQ_HEADER, message.seq.to_string().as_str());
            crate::nats::inject_trace_context(&mut headers);
            let ack = match self.js.publish_with_headers(subject.clone(), headers, message.encode_to_vec().into()).await
            {
                Ok(future) => future.await,
                Err(e) => {
                    *head = None;
                    return Err(unavailable(&e));
                }
            };
            match ack {
                Ok(ack) if ack.duplicate => {
                    *head = Some(current);
                    self.sent.insert(&msg_id);
                    let message = self.message_at(ack.sequence).await?;
                    return Ok(Published { message, duplicate: true });
                }
                Ok(ack) => {
                    *head = Some(Head { stream_seq: ack.sequence, seq: message.seq });
                    self.sent.insert(&msg_id);
                    return Ok(Published { message, duplicate: false });
                }
                Err(e) if crate::nats::lost_a_race(&e) => {
                    // Another gateway wrote first: learn the new head and retry.
                    *head = None;
                    lost_races += 1;
                    if lost_races == MAX_ATTEMPTS {
                        return Err(AppendError::Busy);
                    }
                    tokio::time::sleep(race_backoff(lost_races)).await;
                }
                // Nobody took the write: the stream has no leader right now (a
                // cluster electing one after losing a node). Try again shortly
                // rather than have every client retry at once.
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound && started.elapsed() < LEADERLESS_WAIT => {
                    tokio::time::sleep(LEADERLESS_PAUSE).await;
                }
                Err(e) => {
                    *head = None;
                    return Err(unavailable(&e));
                }
            }
        }
    }

    /// The conversation's newest entry. Any replica answers a direct get; after
    /// a lost race the replica asked may not have the winner's write yet, so
    /// then the stream's leader is asked.
    async fn read_head(
        &self,
        subject: &str,
        persisted_last_seq: u64,
        after_a_lost_race: bool,
    ) -> Result<Head, AppendError> {
        let last = if after_a_lost_race {
            match self.stream.get_last_raw_message_by_subject(subject).await {
                Ok(last) => Some(last),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
                Err(e) => return Err(unavailable(&e)),
            }
        } else {
            match self.stream.direct_get_last_for_subject(subject).await {
                Ok(last) => Some(last),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => None,
                Err(e) => return Err(unavailable(&e)),
            }
        };
        let Some(last) = last else { return Ok(Head { stream_seq: 0, seq: persisted_last_seq }) };
        let seq = match last.headers.get(crate::nats::SEQ_HEADER) {
            Some(value) => value.as_str().parse().ok(),
            None => Message::decode(last.payload.as_ref()).ok().map(|m| m.seq),
        };
        let seq = seq.ok_or_else(|| AppendError::Corrupt(format!("stream entry {} has no seq", last.sequence)))?;
        Ok(Head { stream_seq: last.sequence, seq })
    }

    /// The message stored at `stream_seq` (the original of a duplicate).
    async fn message_at(&self, stream_seq: u64) -> Result<Message, AppendError> {
        let stored = self.stream.direct_get(stream_seq).await.map_err(|e| unavailable(&e))?;
        Message::decode(stored.payload.as_ref())
            .map_err(|e| AppendError::Corrupt(format!("stream entry {stream_seq}: {e}")))
    }
}

/// A random wait below the n-th lost race's bound ("full jitter").
fn race_backoff(lost_races: u32) -> Duration {
    let bound = RACE_BACKOFF_BASE.saturating_mul(1 << lost_races.min(16)).min(RACE_BACKOFF_CAP);
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("the operating system has randomness");
    bound.mul_f64(f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX))
}

fn unavailable(e: &dyn std::fmt::Display) -> AppendError {
    AppendError::Unavailable(e.to_string())
}

/// Stable per (sender, `client_msg_id`); hashed so any client string is a valid header.
pub fn idempotency_key(sender_id: &str, client_msg_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(sender_id.as_bytes());
    hasher.update([0]);
    hasher.update(client_msg_id.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_after_a_lost_race_grows_and_stays_bounded() {
        for lost_races in 1..=MAX_ATTEMPTS {
            let bound = (RACE_BACKOFF_BASE * 2u32.pow(lost_races)).min(RACE_BACKOFF_CAP);
            let waits: Vec<Duration> = (0..200).map(|_| race_backoff(lost_races)).collect();
            assert!(waits.iter().all(|wait| *wait <= bound), "below {bound:?} after {lost_races} lost races");
            // Random, so two writers that collided part ways.
            assert!(waits.iter().any(|wait| *wait != waits[0]), "jittered after {lost_races} lost races");
        }
    }
}
