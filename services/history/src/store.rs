//! Persistence of conversations, members, messages and read markers. Every
//! query binds its values; the one query text made at run time (the
//! multi-row insert of messages) consists of placeholders only.

use chat_common::db::{Backend, WriteConnection};
use chat_proto::events::v1::{Message, MessageChanged, ReadMarkerMoved, SystemEvent};
use chat_proto::history::v1::{ChangedMessage, Conversation, Member, ReadMarker, StreamMessage};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::error::Error;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// What a user may see of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A member, with their role.
    Active {
        role: String,
    },
    /// Removed, or left: sees messages up to the removal, nothing after.
    Former {
        until_seq: u64,
    },
    None,
}

/// One entry of the CHAT stream that history stores.
pub enum Entry {
    Message(Message),
    Read(ReadMarkerMoved),
    Change(MessageChanged),
}

/// A new conversation as the caller asked for it, already validated.
pub struct NewConversation {
    pub id: String,
    pub kind: &'static str,
    pub title: Option<String>,
    pub direct_key: Option<String>,
    pub creator_id: String,
    /// Every member, the creator included, without duplicates.
    pub member_ids: Vec<String>,
}

/// Search in the user's conversations (active, or up to a former member's
/// removal), newest first, before a stream position; `$4` is an optional
/// conversation filter ('' for all). Deleted and system messages never match.
const SEARCH_POSTGRES: &str =
    "SELECT m.conversation_id, m.message_id, m.seq, m.sender_id, m.sender_device_id, m.client_msg_id,
            m.body, m.sent_at_ms, m.system_event, m.edited_at_ms, m.deleted_at_ms, m.stream_seq
     FROM messages m
     JOIN conversation_members c ON c.conversation_id = m.conversation_id AND c.user_id = $1
     WHERE to_tsvector('simple', m.body) @@ plainto_tsquery('simple', $2)
       AND m.stream_seq < $3 AND ($4 = '' OR m.conversation_id = $4)
       AND m.system_event IS NULL AND m.deleted_at_ms = 0
       AND (c.removed_at_seq IS NULL OR m.seq <= c.removed_at_seq)
     ORDER BY m.stream_seq DESC LIMIT $5";
const SEARCH_SQLITE: &str =
    "SELECT m.conversation_id, m.message_id, m.seq, m.sender_id, m.sender_device_id, m.client_msg_id,
            m.body, m.sent_at_ms, m.system_event, m.edited_at_ms, m.deleted_at_ms, m.stream_seq
     FROM messages_fts f
     JOIN messages m ON m.rowid = f.rowid
     JOIN conversation_members c ON c.conversation_id = m.conversation_id AND c.user_id = $1
     WHERE messages_fts MATCH $2
       AND m.stream_seq < $3 AND ($4 = '' OR m.conversation_id = $4)
       AND m.system_event IS NULL AND m.deleted_at_ms = 0
       AND (c.removed_at_seq IS NULL OR m.seq <= c.removed_at_seq)
     ORDER BY m.stream_seq DESC LIMIT $5";

const MESSAGE_BY_ID: &str =
    "SELECT conversation_id, message_id, seq, sender_id, sender_device_id, client_msg_id, body, sent_at_ms,
            system_event, edited_at_ms, deleted_at_ms
     FROM messages WHERE conversation_id = $1 AND message_id = $2";
const MESSAGE_BY_CLIENT_MSG_ID: &str =
    "SELECT conversation_id, message_id, seq, sender_id, sender_device_id, client_msg_id, body, sent_at_ms,
            system_event, edited_at_ms, deleted_at_ms
     FROM messages WHERE sender_id = $1 AND client_msg_id = $2";
const LAST_MESSAGE: &str = "SELECT conversation_id, message_id, seq, sender_id, sender_device_id, client_msg_id, body, sent_at_ms, system_event,
            edited_at_ms, deleted_at_ms
     FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT 1";
const PAGE_NEWEST_FIRST: &str = "SELECT conversation_id, message_id, seq, sender_id, sender_device_id, client_msg_id, body, sent_at_ms, system_event,
            edited_at_ms, deleted_at_ms
     FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4";
const PAGE_OLDEST_FIRST: &str = "SELECT conversation_id, message_id, seq, sender_id, sender_device_id, client_msg_id, body, sent_at_ms, system_event,
            edited_at_ms, deleted_at_ms
     FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4";

fn message_from_row(row: &AnyRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        conversation_id: row.try_get("conversation_id")?,
        message_id: row.try_get("message_id")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
        sender_id: row.try_get("sender_id")?,
        sender_device_id: row.try_get("sender_device_id")?,
        client_msg_id: row.try_get("client_msg_id")?,
        body: row.try_get("body")?,
        sent_at_ms: row.try_get("sent_at_ms")?,
        system: row.try_get::<Option<String>, _>("system_event")?.as_deref().and_then(system_from_json),
        edited_at_ms: row.try_get("edited_at_ms")?,
        deleted_at_ms: row.try_get("deleted_at_ms")?,
    })
}

fn system_to_json(event: &SystemEvent) -> String {
    serde_json::json!({ "event": event.event, "user_ids": event.user_ids, "title": event.title, "role": event.role })
        .to_string()
}

fn system_from_json(json: &str) -> Option<SystemEvent> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Some(SystemEvent {
        event: text("event"),
        user_ids: v["user_ids"].as_array()?.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect(),
        title: text("title"),
        role: text("role"),
    })
}

/// Values never exceed i64 in practice (stream and conversation sequences);
/// saturating keeps a hostile u64 from wrapping into a negative bound.
fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Rows per multi-row `INSERT` of messages: one statement instead of one per
/// row is most of the ingest rate (SQLite runs each statement through its
/// worker thread), and 128 rows of 10 values stay far below both databases'
/// limits on bound parameters.
const MESSAGE_ROWS_PER_INSERT: usize = 128;
const MESSAGE_COLUMNS: usize = 10;

/// Inserts messages from the stream, skipping those stored already.
async fn insert_messages(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    messages: &[(u64, &Message)],
) -> Result<(), Error> {
    for chunk in messages.chunks(MESSAGE_ROWS_PER_INSERT) {
        let sql = insert_messages_sql(backend, chunk.len());
        let mut query = sqlx::query(&sql);
        for (stream_seq, m) in chunk {
            query = query
                .bind(&m.conversation_id)
                .bind(db_int(m.seq))
                .bind(&m.message_id)
                .bind(db_int(*stream_seq))
                .bind(&m.sender_id)
                .bind(&m.sender_device_id)
                .bind(&m.client_msg_id)
                .bind(&m.body)
                .bind(m.sent_at_ms)
                .bind(m.system.as_ref().map(system_to_json));
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The `INSERT` for `rows` messages. Its text holds only placeholders; every
/// value is bound. SQLite gets anonymous `?`s: it looks a numbered parameter
/// up by walking the list of all of them, which is quadratic in a statement
/// this long.
fn insert_messages_sql(backend: Backend, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::from(
        "INSERT INTO messages (conversation_id, seq, message_id, stream_seq, sender_id, sender_device_id,
                               client_msg_id, body, sent_at_ms, system_event) VALUES ",
    );
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..MESSAGE_COLUMNS {
            sql.push_str(if column == 0 { "" } else { ", " });
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    let _ = write!(sql, "${}", row * MESSAGE_COLUMNS + column + 1);
                }
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
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

    /// Creates the conversation, or for a direct pair that exists already,
    /// returns the existing id with `false`.
    pub async fn create_conversation(&self, new: &NewConversation, now_ms: i64) -> Result<(String, bool), Error> {
        if let Some(key) = &new.direct_key
            && let Some(existing) = self.direct_conversation(key).await?
        {
            return Ok((existing, false));
        }
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO conversations (id, kind, title, direct_key, created_by, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&new.id)
        .bind(new.kind)
        .bind(new.title.as_deref())
        .bind(new.direct_key.as_deref())
        .bind(&new.creator_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Two requests raced to create the same direct pair: the other won.
            Err(e) if chat_common::db::is_unique_violation(&e) && new.direct_key.is_some() => {
                drop(tx);
                drop(connection);
                let key = new.direct_key.as_deref().unwrap_or_default();
                let existing = self.direct_conversation(key).await?.ok_or(Error::NotFound)?;
                return Ok((existing, false));
            }
            Err(e) => return Err(e.into()),
        }
        for member in &new.member_ids {
            let role = if *member == new.creator_id { "owner" } else { "member" };
            sqlx::query(
                "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&new.id)
            .bind(member)
            .bind(role)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        connection.succeeded();
        Ok((new.id.clone(), true))
    }

    async fn direct_conversation(&self, direct_key: &str) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar("SELECT id FROM conversations WHERE direct_key = $1")
            .bind(direct_key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Active members with their roles, in the order they joined.
    pub async fn members(&self, conversation_id: &str) -> Result<Vec<Member>, Error> {
        let rows = sqlx::query(
            "SELECT user_id, role FROM conversation_members
             WHERE conversation_id = $1 AND removed_at_seq IS NULL ORDER BY joined_at_ms, user_id",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(Member { user_id: row.try_get("user_id")?, role: row.try_get("role")? }))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// What `user_id` may see of a conversation.
    pub async fn access(&self, conversation_id: &str, user_id: &str) -> Result<Access, Error> {
        let row = sqlx::query(
            "SELECT role, removed_at_seq FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        )
        .bind(conversation_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => Access::None,
            Some(row) => match row.try_get::<Option<i64>, _>("removed_at_seq")? {
                None => Access::Active { role: row.try_get("role")? },
                Some(seq) => Access::Former { until_seq: seq.max(0) as u64 },
            },
        })
    }

    /// Adds users (new, or former members coming back); returns those added.
    pub async fn add_members(
        &self,
        conversation_id: &str,
        user_ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<String>, Error> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let mut added = Vec::new();
        for user_id in user_ids {
            let done = sqlx::query(
                "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at_ms)
                 VALUES ($1, $2, 'member', $3)
                 ON CONFLICT (conversation_id, user_id) DO UPDATE
                 SET role = 'member', joined_at_ms = excluded.joined_at_ms, removed_at_seq = NULL
                 WHERE conversation_members.removed_at_seq IS NOT NULL",
            )
            .bind(conversation_id)
            .bind(user_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 1 {
                added.push(user_id.clone());
            }
        }
        tx.commit().await?;
        connection.succeeded();
        Ok(added)
    }

    /// Marks a member removed as of the system message at `seq`.
    pub async fn remove_member(&self, conversation_id: &str, user_id: &str, seq: u64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE conversation_members SET removed_at_seq = $1
             WHERE conversation_id = $2 AND user_id = $3 AND removed_at_seq IS NULL",
        )
        .bind(db_int(seq))
        .bind(conversation_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_role(&self, conversation_id: &str, user_id: &str, role: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE conversation_members SET role = $1
             WHERE conversation_id = $2 AND user_id = $3 AND removed_at_seq IS NULL",
        )
        .bind(role)
        .bind(conversation_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn rename(&self, conversation_id: &str, title: &str) -> Result<(), Error> {
        sqlx::query("UPDATE conversations SET title = $1 WHERE id = $2")
            .bind(title)
            .bind(conversation_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest persisted `seq` of a conversation (0 when none).
    pub async fn last_seq(&self, conversation_id: &str) -> Result<u64, Error> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM messages WHERE conversation_id = $1")
            .bind(conversation_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// The conversation as `user_id` sees it.
    /// `NotFound` when it does not exist, `NotMember` when the user is not in it.
    pub async fn conversation_for(&self, conversation_id: &str, user_id: &str) -> Result<Conversation, Error> {
        let row = sqlx::query("SELECT id, kind, title, created_at_ms FROM conversations WHERE id = $1")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound)?;
        let members = self.members(conversation_id).await?;
        if !members.iter().any(|m| m.user_id == user_id) {
            return Err(Error::NotMember);
        }
        let member_ids = members.iter().map(|m| m.user_id.clone()).collect();
        let last_message = self.last_message(conversation_id).await?;
        let last_seq = last_message.as_ref().map_or(0, |m| m.seq);
        Ok(Conversation {
            conversation_id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            title: row.try_get::<Option<String>, _>("title")?.unwrap_or_default(),
            member_ids,
            last_seq,
            unread_count: self.unread_count(conversation_id, user_id, last_seq).await?,
            last_message,
            members,
            created_at_ms: row.try_get("created_at_ms")?,
            read_markers: Vec::new(),
        })
    }

    /// Ids of the conversations the user is an active member of.
    pub async fn conversation_ids_of(&self, user_id: &str) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT conversation_id FROM conversation_members WHERE user_id = $1 AND removed_at_seq IS NULL",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The user's conversations with only their ids and active members.
    pub async fn conversation_members_of(&self, user_id: &str) -> Result<Vec<Conversation>, Error> {
        let rows = sqlx::query(
            "SELECT mine.conversation_id, other.user_id FROM conversation_members mine
             JOIN conversation_members other
               ON other.conversation_id = mine.conversation_id AND other.removed_at_seq IS NULL
             WHERE mine.user_id = $1 AND mine.removed_at_seq IS NULL
             ORDER BY mine.conversation_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let mut conversations: Vec<Conversation> = Vec::new();
        for row in &rows {
            let conversation_id: String = row.try_get("conversation_id")?;
            let member: String = row.try_get("user_id")?;
            match conversations.last_mut() {
                Some(last) if last.conversation_id == conversation_id => last.member_ids.push(member),
                _ => {
                    conversations.push(Conversation { conversation_id, member_ids: vec![member], ..Default::default() })
                }
            }
        }
        Ok(conversations)
    }

    /// Everyone who shares an active conversation with the user.
    pub async fn contacts_of(&self, user_id: &str) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT other.user_id FROM conversation_members mine
             JOIN conversation_members other
               ON other.conversation_id = mine.conversation_id AND other.removed_at_seq IS NULL
             WHERE mine.user_id = $1 AND mine.removed_at_seq IS NULL",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every conversation of the user, the most recently active first.
    pub async fn conversations_of(&self, user_id: &str) -> Result<Vec<Conversation>, Error> {
        let ids = self.conversation_ids_of(user_id).await?;
        let mut conversations = Vec::with_capacity(ids.len());
        for id in ids {
            conversations.push(self.conversation_for(&id, user_id).await?);
        }
        conversations
            .sort_by_key(|c| std::cmp::Reverse(c.last_message.as_ref().map_or(c.created_at_ms, |m| m.sent_at_ms)));
        Ok(conversations)
    }

    pub async fn is_member(&self, conversation_id: &str, user_id: &str) -> Result<bool, Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM conversation_members WHERE conversation_id = $1 AND user_id = $2 AND removed_at_seq IS NULL",
        )
        .bind(conversation_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub async fn conversation_exists(&self, conversation_id: &str) -> Result<bool, Error> {
        Ok(self.conversation_kind(conversation_id).await?.is_some())
    }

    /// "direct" or "group"; `None` for an unknown conversation.
    pub async fn conversation_kind(&self, conversation_id: &str) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar("SELECT kind FROM conversations WHERE id = $1")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The conversation and its active members, as anyone sees it (no unread count).
    pub async fn conversation_state(&self, conversation_id: &str) -> Result<Conversation, Error> {
        let row = sqlx::query("SELECT id, kind, title, created_at_ms FROM conversations WHERE id = $1")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound)?;
        let members = self.members(conversation_id).await?;
        Ok(Conversation {
            conversation_id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            title: row.try_get::<Option<String>, _>("title")?.unwrap_or_default(),
            member_ids: members.iter().map(|m| m.user_id.clone()).collect(),
            members,
            last_seq: self.last_seq(conversation_id).await?,
            last_message: None,
            unread_count: 0,
            created_at_ms: row.try_get("created_at_ms")?,
            read_markers: Vec::new(),
        })
    }

    async fn last_message(&self, conversation_id: &str) -> Result<Option<Message>, Error> {
        let row = sqlx::query(LAST_MESSAGE).bind(conversation_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(message_from_row).transpose()?)
    }

    /// Messages from others after the user's read marker, up to `last_seq`.
    /// The bound keeps the count in step with the `last_message` read just
    /// before it: ingest may commit in between, and a client that sees the
    /// newer count beside the older last message counts a live frame twice.
    async fn unread_count(&self, conversation_id: &str, user_id: &str, last_seq: u64) -> Result<u64, Error> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages m
             WHERE m.conversation_id = $1 AND m.sender_id <> $2 AND m.system_event IS NULL AND m.seq <= $3
               AND m.seq > COALESCE((SELECT r.seq FROM read_markers r
                                     WHERE r.conversation_id = $1 AND r.user_id = $2), 0)",
        )
        .bind(conversation_id)
        .bind(user_id)
        .bind(db_int(last_seq))
        .fetch_one(&self.pool)
        .await?;
        Ok(count.max(0) as u64)
    }

    /// One page of a conversation, ascending by seq, with whether more exist in
    /// the direction of travel (see the paging rules in docs/protocol.md).
    pub async fn messages_page(
        &self,
        conversation_id: &str,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), Error> {
        let fetch = i64::from(limit) + 1;
        // Newest-first when only an upper bound (or none) is given; oldest-first otherwise.
        let descending = after_seq.is_none();
        let sql = if descending { PAGE_NEWEST_FIRST } else { PAGE_OLDEST_FIRST };
        let rows = sqlx::query(sql)
            .bind(conversation_id)
            .bind(db_int(after_seq.unwrap_or(0)))
            .bind(before_seq.map_or(i64::MAX, db_int))
            .bind(fetch)
            .fetch_all(&self.pool)
            .await?;
        let mut messages = rows.iter().map(message_from_row).collect::<Result<Vec<_>, _>>()?;
        let has_more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        if descending {
            messages.reverse();
        }
        Ok((messages, has_more))
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
        let mut messages: Vec<(u64, &Message)> = Vec::new();
        for (stream_seq, entry) in batch {
            if let Entry::Message(m) = entry {
                messages.push((*stream_seq, m));
                continue;
            }
            insert_messages(&mut tx, self.backend, &messages).await?;
            messages.clear();
            match entry {
                Entry::Change(change) => {
                    let Some(m) = &change.message else { continue };
                    let exists: Option<i64> =
                        sqlx::query_scalar("SELECT seq FROM messages WHERE conversation_id = $1 AND message_id = $2")
                            .bind(&m.conversation_id)
                            .bind(&m.message_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if exists.is_none() {
                        not_yet.push(*stream_seq);
                        continue;
                    }
                    // Changes apply in stream order; nothing changes a deleted message.
                    sqlx::query(
                        "UPDATE messages SET body = $1, edited_at_ms = $2, deleted_at_ms = $3, change_stream_seq = $4
                         WHERE conversation_id = $5 AND message_id = $6 AND deleted_at_ms = 0 AND change_stream_seq < $4",
                    )
                    .bind(&m.body)
                    .bind(m.edited_at_ms)
                    .bind(m.deleted_at_ms)
                    .bind(db_int(*stream_seq))
                    .bind(&m.conversation_id)
                    .bind(&m.message_id)
                    .execute(&mut *tx)
                    .await?;
                }
                Entry::Read(r) => {
                    sqlx::query(
                        "INSERT INTO read_markers (conversation_id, user_id, seq, device_id, stream_seq, updated_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (conversation_id, user_id) DO UPDATE
                         SET seq = excluded.seq, device_id = excluded.device_id,
                             stream_seq = excluded.stream_seq, updated_at_ms = excluded.updated_at_ms
                         WHERE read_markers.seq < excluded.seq",
                    )
                    .bind(&r.conversation_id)
                    .bind(&r.user_id)
                    .bind(db_int(r.seq))
                    .bind(&r.device_id)
                    .bind(db_int(*stream_seq))
                    .bind(chat_common::time::now_ms())
                    .execute(&mut *tx)
                    .await?;
                }
                Entry::Message(_) => unreachable!("messages are collected above"),
            }
        }
        insert_messages(&mut tx, self.backend, &messages).await?;
        tx.commit().await?;
        connection.succeeded();
        Ok(not_yet)
    }

    /// One message of a conversation by id.
    pub async fn message(&self, conversation_id: &str, message_id: &str) -> Result<Option<Message>, Error> {
        self.one_message(MESSAGE_BY_ID, conversation_id, message_id).await
    }

    /// The message `sender_id` sent under `client_msg_id`, if stored (the
    /// pair is unique).
    pub async fn sent_message(&self, sender_id: &str, client_msg_id: &str) -> Result<Option<Message>, Error> {
        self.one_message(MESSAGE_BY_CLIENT_MSG_ID, sender_id, client_msg_id).await
    }

    async fn one_message(&self, query: &'static str, first: &str, second: &str) -> Result<Option<Message>, Error> {
        let row = sqlx::query(query).bind(first).bind(second).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(message_from_row).transpose()?)
    }

    /// Whether the change at stream position `stream_seq` to this message is
    /// stored (or superseded: nothing changes a deleted message).
    pub async fn change_applied(
        &self,
        conversation_id: &str,
        message_id: &str,
        stream_seq: u64,
    ) -> Result<bool, Error> {
        let applied: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM messages WHERE conversation_id = $1 AND message_id = $2
               AND (change_stream_seq >= $3 OR deleted_at_ms <> 0)",
        )
        .bind(conversation_id)
        .bind(message_id)
        .bind(db_int(stream_seq))
        .fetch_optional(&self.pool)
        .await?;
        Ok(applied.is_some())
    }

    /// Messages in the user's conversations whose latest change lies in
    /// `(after, through]`, as they are now, in the order of those changes.
    pub async fn changed_since(&self, user_id: &str, after: u64, through: u64) -> Result<Vec<ChangedMessage>, Error> {
        let rows = sqlx::query(
            "SELECT m.conversation_id, m.message_id, m.seq, m.sender_id, m.sender_device_id, m.client_msg_id,
                    m.body, m.sent_at_ms, m.system_event, m.edited_at_ms, m.deleted_at_ms, m.change_stream_seq
             FROM messages m
             JOIN conversation_members c ON c.conversation_id = m.conversation_id AND c.user_id = $1
             WHERE m.change_stream_seq > $2 AND m.change_stream_seq <= $3
               AND (c.removed_at_seq IS NULL OR m.seq <= c.removed_at_seq)
             ORDER BY m.change_stream_seq",
        )
        .bind(user_id)
        .bind(db_int(after))
        .bind(db_int(through))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChangedMessage {
                    change_stream_seq: row.try_get::<i64, _>("change_stream_seq")? as u64,
                    message: Some(message_from_row(row)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Messages matching `query` (words, all of which must appear), newest
    /// first, with stream positions below `before`; and whether more exist.
    pub async fn search(
        &self,
        user_id: &str,
        query: &str,
        conversation_id: Option<&str>,
        before: u64,
        limit: u32,
    ) -> Result<(Vec<StreamMessage>, bool), Error> {
        let (sql, query) = match self.backend {
            Backend::Postgres => (SEARCH_POSTGRES, query.to_owned()),
            Backend::Sqlite => (SEARCH_SQLITE, fts5_all_words(query)),
        };
        let rows = sqlx::query(sql)
            .bind(user_id)
            .bind(query)
            .bind(db_int(before))
            .bind(conversation_id.unwrap_or_default())
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        Ok(stream_page(&rows, limit)?)
    }

    /// The user's marker in a conversation (0 when never set).
    pub async fn read_marker(&self, conversation_id: &str, user_id: &str) -> Result<u64, Error> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM read_markers WHERE conversation_id = $1 AND user_id = $2")
                .bind(conversation_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Markers in the user's conversations that moved with
    /// `after < stream_seq <= through`, in stream order.
    /// Every member's read marker in one conversation.
    pub async fn read_markers_of(&self, conversation_id: &str) -> Result<Vec<ReadMarker>, Error> {
        let rows = sqlx::query(
            "SELECT conversation_id, user_id, device_id, seq, stream_seq FROM read_markers
             WHERE conversation_id = $1 ORDER BY user_id",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read_marker).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
    }

    pub async fn read_markers_since(&self, user_id: &str, after: u64, through: u64) -> Result<Vec<ReadMarker>, Error> {
        let rows = sqlx::query(
            "SELECT r.conversation_id, r.user_id, r.device_id, r.seq, r.stream_seq
             FROM read_markers r
             JOIN conversation_members c ON c.conversation_id = r.conversation_id AND c.user_id = $1
                  AND c.removed_at_seq IS NULL
             WHERE r.stream_seq > $2 AND r.stream_seq <= $3
             ORDER BY r.stream_seq",
        )
        .bind(user_id)
        .bind(db_int(after))
        .bind(db_int(through))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read_marker).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
    }

    /// Messages of the user's conversations with `after < stream_seq <= through`,
    /// in stream order, and whether more exist in that range.
    pub async fn catch_up(
        &self,
        user_id: &str,
        after: u64,
        through: u64,
        limit: u32,
    ) -> Result<(Vec<StreamMessage>, bool), Error> {
        let rows = sqlx::query(
            "SELECT m.conversation_id, m.message_id, m.seq, m.sender_id, m.sender_device_id, m.client_msg_id,
                    m.body, m.sent_at_ms, m.system_event, m.edited_at_ms, m.deleted_at_ms, m.stream_seq
             FROM messages m
             JOIN conversation_members c ON c.conversation_id = m.conversation_id AND c.user_id = $1
             WHERE m.stream_seq > $2 AND m.stream_seq <= $3
               AND (c.removed_at_seq IS NULL OR m.seq <= c.removed_at_seq)
             ORDER BY m.stream_seq
             LIMIT $4",
        )
        .bind(user_id)
        .bind(db_int(after))
        .bind(db_int(through))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(stream_page(&rows, limit)?)
    }
}

/// Rows fetched with `LIMIT limit + 1` as a page of stream messages, and
/// whether more exist beyond it.
fn stream_page(rows: &[AnyRow], limit: u32) -> Result<(Vec<StreamMessage>, bool), sqlx::Error> {
    let page = rows
        .iter()
        .take(limit as usize)
        .map(|row| {
            Ok(StreamMessage {
                stream_seq: row.try_get::<i64, _>("stream_seq")? as u64,
                message: Some(message_from_row(row)?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((page, rows.len() > limit as usize))
}

/// An FTS5 query that matches every word of the user's text literally: each
/// word becomes a quoted string, so no input is read as FTS5 syntax.
fn fts5_all_words(text: &str) -> String {
    text.split_whitespace().map(|word| format!("\"{}\"", word.replace('"', "\"\""))).collect::<Vec<_>>().join(" ")
}

fn read_marker(row: &AnyRow) -> Result<ReadMarker, sqlx::Error> {
    Ok(ReadMarker {
        conversation_id: row.try_get("conversation_id")?,
        user_id: row.try_get("user_id")?,
        device_id: row.try_get("device_id")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
        stream_seq: row.try_get::<i64, _>("stream_seq")? as u64,
    })
}

/// History's store is the permanent record behind idempotency.
impl chat_common::conversation_log::SentArchive for Store {
    fn find_sent<'a>(
        &'a self,
        sender_id: &'a str,
        client_msg_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<Message>, String>> {
        Box::pin(async move { self.sent_message(sender_id, client_msg_id).await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use chat_proto::events::v1::{Message, MessageChanged, ReadMarkerMoved};

    use super::{Entry, Store, fts5_all_words};

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

    #[test]
    fn fts5_queries_quote_every_word() {
        assert_eq!(fts5_all_words("hello  world"), r#""hello" "world""#);
        assert_eq!(fts5_all_words(r#"say "hi" OR NOT x*"#), r#""say" """hi""" "OR" "NOT" "x*""#);
    }
}
