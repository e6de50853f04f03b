//! Writes the message stream into the database. A durable pull consumer is
//! shared by every history instance, so each message is written once; batches
//! are inserted in one transaction and acknowledged only after commit, so a
//! crash redelivers them and the unique keys make the rewrite a no-op.
//! Conversations are shared among a few writers, each with its own
//! transactions, so PostgreSQL stores on several cores; a conversation's
//! entries always go to the same writer, in stream order. Catch-up trusts only
//! the consumer's ack floor, which never passes an entry not yet stored.
//! An entry that can never be stored is set aside (`dead_letters`), so no
//! single entry stops the ones after it.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use chat_common::events::{ChatEvent, EventError};
use chat_common::nats::{ChatSubject, parse_chat_subject};
use chat_common::paced_pull::PacedPull;
use chat_common::shutdown::CancellationToken;
use tokio::sync::mpsc;

use crate::dead_letters::DeadLetter;
use crate::error::Error;
use crate::store::{Entry, Store};

/// Name of the durable consumer; its ack floor is how far history has persisted.
pub const CONSUMER: &str = chat_common::nats::HISTORY_CONSUMER;

/// How long a batch collects after its first message. No reader misses what
/// is not stored yet: devices get messages live and catch up from the
/// stream's tail, and a page of history waits for what the stream holds.
/// Each batch is a commit (an fsync), so at a low rate this sets how many
/// commits a second history makes: 50 at most per writer.
const LINGER: Duration = Duration::from_millis(20);
/// How long a batch waits for a pending message that has not arrived yet
/// (it may have gone to another instance sharing the consumer).
const FILL_WAIT: Duration = Duration::from_millis(5);

/// Pause between pulls while messages flow (see `chat_common::paced_pull`):
/// well inside [`LINGER`], so it costs a batch no time.
const PACE: Duration = Duration::from_millis(5);

pub struct Ingest {
    reader: PacedPull,
    store: Store,
    batch: usize,
    writers: usize,
}

impl Ingest {
    pub async fn new(
        stream: Stream,
        store: Store,
        batch: usize,
        writers: usize,
        ack_wait: Duration,
    ) -> Result<Self, Error> {
        let batch = batch.max(1);
        // The whole stream, not a filter per subject kind: JetStream matches a
        // multi-subject filter against every conversation's subjects on each
        // delivery (most of the server's time with many conversations), and
        // the few entries history does not store are acknowledged unread.
        // Create-or-update, so a consumer made with the older filter follows.
        let config = pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            filter_subject: chat_common::nats::CHAT_SUBJECTS.to_owned(),
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            deliver_policy: DeliverPolicy::All,
            max_ack_pending: 20_000,
            ..Default::default()
        };
        let reader =
            PacedPull::new(stream, config, batch, PACE).await.map_err(|e| Error::Unexpected(anyhow::anyhow!(e)))?;
        Ok(Self { reader, store, batch, writers: writers.max(1) })
    }

    /// The durable consumer (for its lag).
    pub fn consumer(&self) -> PullConsumer {
        self.reader.consumer()
    }

    /// Hands each entry to its conversation's writer until `shutdown`; a
    /// failing pull is retried, never the end of the service.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self { mut reader, store, batch, writers } = self;
        let (lanes, writers): (Vec<_>, Vec<_>) = (0..writers)
            .map(|_| {
                let (lane, incoming) = mpsc::channel(batch);
                (lane, Writer { store: store.clone(), batch, incoming }.run(shutdown.clone()))
            })
            .unzip();
        // The writers run in this task, not spawned: stopping or aborting it
        // stops them too, as killing the process would.
        let dispatch = async move {
            while let Some(burst) = reader.next_burst(&shutdown).await {
                for message in burst {
                    let lane = &lanes[lane_of(&message.subject, lanes.len())];
                    if lane.send(message).await.is_err() {
                        return; // writers stop only at shutdown
                    }
                }
            }
        };
        tokio::join!(dispatch, futures::future::join_all(writers));
    }
}

/// Entries of one conversation always go to the same writer, so each
/// conversation is stored in stream order; different conversations are
/// stored side by side. What was handed out but not stored by shutdown is
/// redelivered.
fn lane_of(subject: &str, lanes: usize) -> usize {
    if lanes == 1 {
        return 0;
    }
    let conversation = parse_chat_subject(subject).map_or("", ChatSubject::conversation_id);
    let mut hasher = std::hash::DefaultHasher::new();
    conversation.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// Stores the entries of its lane in batches, each in one transaction,
/// acknowledged after the commit.
struct Writer {
    store: Store,
    batch: usize,
    incoming: mpsc::Receiver<async_nats::jetstream::Message>,
}

impl Writer {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                next = self.incoming.recv() => next,
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            // Fill the batch for a moment: one transaction per message would
            // cost several times the CPU of the insert itself. Past the linger,
            // go on only while the stream says more is pending (a backlog
            // arrives in pieces).
            let linger_until = tokio::time::Instant::now() + LINGER;
            while batch.len() < self.batch {
                let now = tokio::time::Instant::now();
                let wait = if now < linger_until {
                    linger_until - now
                } else if batch.last().is_some_and(more_pending) {
                    FILL_WAIT
                } else {
                    break;
                };
                match tokio::time::timeout(wait, self.incoming.recv()).await {
                    Ok(Some(message)) => batch.push(message),
                    Ok(None) | Err(_) => break,
                }
            }
            if !self.store_and_ack(&batch, &shutdown).await {
                return;
            }
        }
    }

    /// Stores a batch, retrying until it is stored; false when shut down first.
    /// An entry that cannot be stored at all is set aside as a dead letter, so
    /// it never holds back the entries after it.
    async fn store_and_ack(&self, batch: &[async_nats::jetstream::Message], shutdown: &CancellationToken) -> bool {
        // One span per entry, from its producer's trace, open until the batch is stored.
        let spans: Vec<tracing::Span> = batch.iter().map(persist_span).collect();
        let (rows, undecodable) = decode(batch);
        let mut backoff = Duration::from_millis(50);
        let started = std::time::Instant::now();
        let not_yet = loop {
            match self.store_rows(batch, &rows, &undecodable).await {
                Ok(not_yet) => {
                    let metrics = crate::metrics::get();
                    metrics.batch_size.observe(rows.len() as f64);
                    metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
                    break not_yet;
                }
                Err(e) => {
                    tracing::error!(error = %e, batch = rows.len(), "storing messages failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(backoff) => {},
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        drop(spans);
        for message in batch {
            let later = message.info().is_ok_and(|i| not_yet.contains(&i.stream_sequence));
            let acked = if later {
                // Its message is being stored by another instance: try again shortly.
                message.ack_with(AckKind::Nak(Some(Duration::from_millis(200)))).await
            } else {
                message.ack().await
            };
            if let Err(e) = acked {
                tracing::warn!(error = %e, "ack failed; the entry will be redelivered and skipped");
            }
        }
        true
    }

    /// Stores the rows in one transaction. When the database refuses the
    /// data, stores them one by one instead and sets aside each one it
    /// refuses. An error left is trouble with the database itself: retry.
    async fn store_rows(
        &self,
        batch: &[async_nats::jetstream::Message],
        rows: &[(u64, Entry)],
        undecodable: &[DeadLetter],
    ) -> Result<Vec<u64>, Error> {
        for letter in undecodable {
            self.store.set_aside(letter).await?;
        }
        match self.store.apply_batch(rows).await {
            Err(e) if self.store.refuses_data(&e) => {}
            stored => return stored,
        }
        let mut not_yet = Vec::new();
        for row in rows {
            match self.store.apply_batch(std::slice::from_ref(row)).await {
                Ok(later) => not_yet.extend(later),
                Err(e) if self.store.refuses_data(&e) => {
                    let raw = batch.iter().find(|m| m.info().is_ok_and(|i| i.stream_sequence == row.0));
                    if let Some(raw) = raw {
                        self.store
                            .set_aside(&DeadLetter::of(raw, row.0, format!("refused by the database: {e}")))
                            .await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(not_yet)
    }
}

/// Whether the consumer holds more messages after this one.
fn more_pending(message: &async_nats::jetstream::Message) -> bool {
    message.info().is_ok_and(|info| info.pending > 0)
}

fn persist_span(m: &async_nats::jetstream::Message) -> tracing::Span {
    let span = tracing::info_span!("history.persist", otel.kind = "consumer", subject = %m.subject);
    chat_common::nats::follow_trace_context(&span, m.headers.as_ref());
    span
}

/// Stream position and content of each entry, and the entries that do not
/// decode (set aside, never retried).
fn decode(batch: &[async_nats::jetstream::Message]) -> (Vec<(u64, Entry)>, Vec<DeadLetter>) {
    let mut rows = Vec::with_capacity(batch.len());
    let mut undecodable = Vec::new();
    for m in batch {
        let stream_seq = match m.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => {
                tracing::error!(error = %e, "stream message without metadata; skipped");
                continue;
            }
        };
        match ChatEvent::decode(&m.subject, m.payload.as_ref()) {
            Ok(ChatEvent::Message(message)) => rows.push((stream_seq, Entry::Message(message))),
            Ok(ChatEvent::Read(read)) => rows.push((stream_seq, Entry::Read(read))),
            Ok(ChatEvent::Changed(change)) => rows.push((stream_seq, Entry::Change(change))),
            // Membership lives in history's own tables; a newer writer's kind is not history's.
            Ok(ChatEvent::Membership(_)) | Err(EventError::UnknownKind(_)) => {}
            Err(e) => undecodable.push(DeadLetter::of(m, stream_seq, e.to_string())),
        }
    }
    (rows, undecodable)
}

#[cfg(test)]
mod tests {
    use super::lane_of;

    #[test]
    fn every_entry_of_a_conversation_goes_to_the_same_writer() {
        for lanes in 1..=4 {
            for n in 0..50 {
                let id = format!("conversation-{n}");
                let lane = lane_of(&format!("chat.conv.{id}.msg"), lanes);
                assert!(lane < lanes);
                for kind in ["read", "edit", "members"] {
                    assert_eq!(lane_of(&format!("chat.conv.{id}.{kind}"), lanes), lane, "{id} {kind}");
                }
            }
        }
    }

    #[test]
    fn conversations_are_spread_over_the_writers() {
        let mut used = [0; 2];
        for n in 0..100 {
            used[lane_of(&format!("chat.conv.conversation-{n}.msg"), 2)] += 1;
        }
        assert!(used.iter().all(|&count| count > 20), "{used:?}");
    }
}
