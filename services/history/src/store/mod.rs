//! Persistence of conversations, members, messages and read markers, one
//! module a concern; here the store itself (a pool and the database it
//! speaks to: SQLite or PostgreSQL) and the one write that crosses concerns,
//! a batch from the CHAT stream. Every query binds its values; the one query
//! text made at run time (the multi-row insert of messages) consists of
//! placeholders only.

mod conversations;
mod markers;
mod messages;
mod search;

use chat_common::db::{Backend, WriteConnection};
use chat_proto::events::v1::{Message, MessageChanged, ReadMarkerMoved};
use sqlx::AnyPool;

pub use conversations::{Access, NewConversation};

use crate::error::Error;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// One entry of the CHAT stream that history stores.
pub enum Entry {
    Message(Message),
    Read(ReadMarkerMoved),
    Change(MessageChanged),
}

/// Values never exceed i64 in practice (stream and conversation sequences);
/// saturating keeps a hostile u64 from wrapping into a negative bound.
fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A word the database holds (a kind, a role) as the value it names; a word
/// no build writes means the row was changed by hand, and fails the call.
fn stored<T>(what: &str, word: &str, from_word: fn(&str) -> Option<T>) -> Result<T, Error> {
    from_word(word).ok_or_else(|| Error::Unexpected(anyhow::anyhow!("unknown {what} {word:?} in the database")))
}

impl Store {
    pub fn new(pool: AnyPool, backend: Backend) -> Self {
        Self { pool, backend }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Stores a batch from the stream in one transaction, in stream order.
    /// Messages that exist already (a redelivery) are skipped by their unique
    /// keys; a read marker only ever moves forward.
    ///
    /// Returns the stream positions of changes whose message is not stored
    /// yet (possible when several instances share the consumer): the caller
    /// has them redelivered rather than lose them.
    pub async fn apply_batch(&self, batch: &[(u64, Entry)]) -> Result<Vec<u64>, Error> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let mut not_yet = Vec::new();
        // Consecutive messages are inserted together; anything else first
        // flushes them, so the batch still applies in stream order.
        let mut pending: Vec<(u64, &Message)> = Vec::new();
        for (stream_seq, entry) in batch {
            if let Entry::Message(m) = entry {
                pending.push((*stream_seq, m));
                continue;
            }
            messages::insert_messages(&mut tx, self.backend, &pending).await?;
            pending.clear();
            match entry {
                Entry::Change(change) => {
                    let Some(m) = &change.message else { continue };
                    if !messages::apply_change(&mut tx, *stream_seq, m).await? {
                        not_yet.push(*stream_seq);
                    }
                }
                Entry::Read(r) => markers::move_read_marker(&mut tx, *stream_seq, r).await?,
                Entry::Message(_) => unreachable!("messages are collected above"),
            }
        }
        messages::insert_messages(&mut tx, self.backend, &pending).await?;
        tx.commit().await?;
        connection.succeeded();
        Ok(not_yet)
    }
}

#[cfg(test)]
mod tests {
    use chat_proto::events::v1::{Message, MessageChanged, ReadMarkerMoved};

    use super::{Entry, Store};

    fn message(conversation_id: &str, seq: u64) -> Message {
        Message {
            conversation_id: conversation_id.to_owned(),
            message_id: uuid::Uuid::now_v7().to_string(),
            seq,
            sender_id: "alice".to_owned(),
            sender_device_id: "phone".to_owned(),
            client_msg_id: format!("c-{seq}"),
            body: format!("message {seq}"),
            sent_at_ms: 1,
            ..Default::default()
        }
    }

    /// More messages than one insert statement holds, a change and a read
    /// marker between them, and the whole batch delivered twice.
    #[tokio::test]
    async fn a_batch_applies_in_stream_order_and_a_redelivery_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("history-store-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("history.db").display());
        let pool = chat_common::db::connect(&url, 1).await.unwrap();
        crate::migrate(&pool, chat_common::db::Backend::Sqlite).await.unwrap();
        let store = Store::new(pool.clone(), chat_common::db::Backend::Sqlite);

        let conversation = uuid::Uuid::now_v7().to_string();
        let messages: Vec<Message> = (1..=300).map(|seq| message(&conversation, seq)).collect();
        let mut edited = messages[9].clone();
        edited.body = "edited".to_owned();
        edited.edited_at_ms = 2;
        let mut batch: Vec<(u64, Entry)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let stream_seq = batch.len() as u64 + 1;
            batch.push((stream_seq, Entry::Message(m.clone())));
            if i == 9 {
                let change = MessageChanged { message: Some(edited.clone()), ..Default::default() };
                batch.push((stream_seq + 1, Entry::Change(change)));
            }
            if i == 200 {
                let read = ReadMarkerMoved {
                    conversation_id: conversation.clone(),
                    user_id: "alice".to_owned(),
                    device_id: "phone".to_owned(),
                    seq: 201,
                };
                batch.push((stream_seq + 1, Entry::Read(read)));
            }
        }
        for _ in 0..2 {
            assert!(store.apply_batch(&batch).await.unwrap().is_empty());
        }

        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&pool).await.unwrap();
        assert_eq!(stored, 300);
        let tenth = store.message(&conversation, &messages[9].message_id).await.unwrap().unwrap();
        assert_eq!(tenth.body, "edited");
        let last = store.message(&conversation, &messages[299].message_id).await.unwrap().unwrap();
        assert_eq!(last, messages[299]);
        let read: i64 = sqlx::query_scalar("SELECT seq FROM read_markers").fetch_one(&pool).await.unwrap();
        assert_eq!(read, 201);
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
