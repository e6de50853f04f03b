//! Persistence of conversations, members, messages, read markers and reports, one
//! module a concern; here the store itself (a pool and the database it
//! speaks to: SQLite or PostgreSQL) and the one write that crosses concerns,
//! a batch from the CHAT stream. Every query binds its values; the one query
//! text made at run time (the multi-row insert of messages) consists of
//! placeholders only.

mod attachments;
mod conversations;
mod markers;
mod messages;
mod reports;
mod search;

use std::sync::Arc;

use chat_common::blocks::Blocks;
use chat_common::db::{Backend, WriteConnection};
use chat_proto::events::v1::{Message, MessageChanged, ReadMarkerMoved};
use sqlx::AnyPool;

pub use conversations::{Access, NewConversation};
pub use reports::{NewReport, ReportRow};

use crate::error::Error;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Who blocked whom: a user's unread counts leave out the messages of
    /// those they blocked (which reach them hidden).
    blocks: Arc<Blocks>,
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
        Self { pool, backend, blocks: Arc::default() }
    }

    /// The store, leaving out of unread counts what `blocks` hides.
    pub fn following_blocks(self, blocks: Arc<Blocks>) -> Self {
        Self { blocks, ..self }
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

    /// A store on a new SQLite file, migrated; the directory to remove after.
    async fn scratch() -> (std::path::PathBuf, sqlx::AnyPool, Store) {
        let dir = std::env::temp_dir().join(format!("history-store-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("history.db").display());
        let pool = chat_common::db::connect(&url, 1).await.unwrap();
        crate::migrate(&pool, chat_common::db::Backend::Sqlite).await.unwrap();
        let store = Store::new(pool.clone(), chat_common::db::Backend::Sqlite);
        (dir, pool, store)
    }

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
        let (dir, pool, store) = scratch().await;

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

    /// Pages of a catch-up over three conversations of very different sizes,
    /// one of which the user left part-way: every visible message once, in
    /// stream order, each page within its limit.
    #[tokio::test]
    async fn catch_up_pages_cover_every_visible_message_once_in_stream_order() {
        let (dir, pool, store) = scratch().await;

        let user = uuid::Uuid::now_v7().to_string();
        // (conversation, messages, the seq the user left at)
        let conversations = [
            (uuid::Uuid::now_v7().to_string(), 1_000_u64, None),
            (uuid::Uuid::now_v7().to_string(), 30, None),
            (uuid::Uuid::now_v7().to_string(), 600, Some(250_i64)),
        ];
        for (id, _, left_at) in &conversations {
            sqlx::query("INSERT INTO conversations (id, kind, created_by, created_at_ms) VALUES ($1, 'group', $2, 0)")
                .bind(id)
                .bind(&user)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at_ms, removed_at_seq)
                 VALUES ($1, $2, 'member', 0, $3)",
            )
            .bind(id)
            .bind(&user)
            .bind(*left_at)
            .execute(&pool)
            .await
            .unwrap();
        }
        // Interleaved in the stream: the big one steadily, the others in bursts.
        let mut batch: Vec<(u64, Entry)> = Vec::new();
        let mut next_seq = [1_u64; 3];
        let mut expected = Vec::new();
        while next_seq.iter().zip(&conversations).any(|(seq, (_, total, _))| seq <= total) {
            let stream_seq = batch.len() as u64 + 1;
            let which = match stream_seq % 7 {
                0..=3 if next_seq[0] <= conversations[0].1 => 0,
                4 if next_seq[1] <= conversations[1].1 => 1,
                _ if next_seq[2] <= conversations[2].1 => 2,
                _ => (0..3).find(|&i| next_seq[i] <= conversations[i].1).unwrap(),
            };
            let (id, _, left_at) = &conversations[which];
            let seq = next_seq[which];
            next_seq[which] += 1;
            if left_at.is_none_or(|left| seq <= left as u64) {
                expected.push((id.clone(), seq, stream_seq));
            }
            let mut m = message(id, seq);
            m.client_msg_id = format!("c-{which}-{seq}");
            batch.push((stream_seq, Entry::Message(m)));
        }
        assert!(store.apply_batch(&batch).await.unwrap().is_empty());

        let through = batch.len() as u64;
        let (mut after, mut seen, mut pages) = (0, Vec::new(), 0);
        loop {
            let (page, more) = store.catch_up(&user, after, through, 100).await.unwrap();
            assert!(page.len() <= 100);
            pages += 1;
            for entry in &page {
                let m = entry.message.as_ref().unwrap();
                seen.push((m.conversation_id.clone(), m.seq, entry.stream_seq));
                after = entry.stream_seq;
            }
            if !more {
                break;
            }
            assert!(!page.is_empty(), "a page with more after it is never empty");
        }
        assert_eq!(seen, expected, "every visible message once, in stream order");
        assert_eq!(pages, expected.len().div_ceil(100), "full pages until the last");
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A gateway's connect asks for member lists only up to a size: a larger
    /// conversation comes with none, a member who left is not in a list,
    /// and a conversation the user left is not there at all.
    #[tokio::test]
    async fn member_lists_come_only_for_conversations_within_the_bound() {
        let (dir, pool, store) = scratch().await;
        let member = |conversation: &'static str, user: &'static str, removed: Option<i64>| {
            let pool = pool.clone();
            async move {
                sqlx::query(
                    "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at_ms, removed_at_seq)
                     VALUES ($1, $2, 'member', 0, $3)",
                )
                .bind(conversation)
                .bind(user)
                .bind(removed)
                .execute(&pool)
                .await
                .unwrap();
            }
        };
        for id in ["small", "large", "left"] {
            sqlx::query(
                "INSERT INTO conversations (id, kind, created_by, created_at_ms) VALUES ($1, 'group', 'me', 0)",
            )
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        }
        for user in ["me", "a", "b"] {
            member("small", user, None).await;
        }
        member("small", "gone", Some(3)).await;
        for user in ["me", "a", "b", "c", "d"] {
            member("large", user, None).await;
        }
        member("left", "me", Some(2)).await;
        member("left", "a", None).await;

        let store = &store;
        let lists = |up_to| async move {
            let conversations = store.conversation_members_of("me", up_to).await.unwrap();
            conversations.into_iter().map(|c| (c.conversation_id, c.member_ids)).collect::<Vec<_>>()
        };
        let names = |ids: &[&str]| ids.iter().map(|&id| id.to_owned()).collect::<Vec<_>>();
        assert_eq!(lists(4).await, vec![("large".to_owned(), vec![]), ("small".to_owned(), names(&["a", "b", "me"]))]);
        assert_eq!(
            lists(5).await,
            vec![
                ("large".to_owned(), names(&["a", "b", "c", "d", "me"])),
                ("small".to_owned(), names(&["a", "b", "me"]))
            ]
        );
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
