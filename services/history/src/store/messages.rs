//! Messages: how a stored row becomes a `Message`, storing them from the
//! stream (many rows a statement) and applying their edits and deletions, and
//! reading them back by id, by page of a conversation, and in stream order
//! for a device's catch-up.

use chat_common::db::Backend;
use chat_proto::events::v1::{Attachment, MemberRole, Message, SystemEvent, SystemEventKind};
use chat_proto::history::v1::{ChangedMessage, StreamMessage};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, db_int};
use crate::error::Error;

/// The columns of a message row, read by [`message_from_row`], from
/// `messages m`. Every query of message rows selects these (some with a
/// stream position after them). A macro rather than a `const` so that each
/// query stays one literal, made by `concat!` at compile time.
macro_rules! message_columns {
    () => {
        "m.conversation_id, m.message_id, m.seq, m.sender_id, m.sender_device_id, m.client_msg_id, m.body, \
         m.sent_at_ms, m.system_event, m.edited_at_ms, m.deleted_at_ms, m.attachments"
    };
}
pub(super) use message_columns;

/// The join that keeps to the messages `m` the user bound as `$1` may see:
/// those of conversations they are in, and of those they were removed from
/// or left, up to the removal.
macro_rules! seen_by_user {
    () => {
        "JOIN conversation_members c ON c.conversation_id = m.conversation_id AND c.user_id = $1
              AND (c.removed_at_seq IS NULL OR m.seq <= c.removed_at_seq)"
    };
}
pub(super) use seen_by_user;

const MESSAGE_BY_ID: &str =
    concat!("SELECT ", message_columns!(), " FROM messages m WHERE conversation_id = $1 AND message_id = $2");
const MESSAGE_BY_CLIENT_MSG_ID: &str =
    concat!("SELECT ", message_columns!(), " FROM messages m WHERE sender_id = $1 AND client_msg_id = $2");
const LAST_MESSAGE: &str =
    concat!("SELECT ", message_columns!(), " FROM messages m WHERE conversation_id = $1 ORDER BY seq DESC LIMIT 1");
const PAGE_NEWEST_FIRST: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4"
);
const PAGE_OLDEST_FIRST: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4"
);

pub(super) fn message_from_row(row: &AnyRow) -> Result<Message, sqlx::Error> {
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
        attachments: row
            .try_get::<Option<String>, _>("attachments")?
            .as_deref()
            .map(attachments_from_json)
            .unwrap_or_default(),
    })
}

/// A message's attachments as their column keeps them: a JSON array, or
/// NULL when there are none.
fn attachments_to_json(attachments: &[Attachment]) -> Option<String> {
    if attachments.is_empty() {
        return None;
    }
    let all: Vec<serde_json::Value> = attachments
        .iter()
        .map(|a| {
            serde_json::json!({
                "id": a.id,
                "name": a.name,
                "content_type": a.content_type,
                "size": a.size,
                "width": a.width,
                "height": a.height,
                "has_thumbnail": a.has_thumbnail,
                "blurhash": a.blurhash,
            })
        })
        .collect();
    Some(serde_json::Value::Array(all).to_string())
}

fn attachments_from_json(json: &str) -> Vec<Attachment> {
    let Ok(serde_json::Value::Array(all)) = serde_json::from_str(json) else { return Vec::new() };
    all.iter()
        .map(|a| {
            let text = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            let number = |k: &str| a[k].as_u64().unwrap_or_default();
            Attachment {
                id: text("id"),
                name: text("name"),
                content_type: text("content_type"),
                size: number("size"),
                width: u32::try_from(number("width")).unwrap_or_default(),
                height: u32::try_from(number("height")).unwrap_or_default(),
                has_thumbnail: a["has_thumbnail"].as_bool().unwrap_or_default(),
                blurhash: text("blurhash"),
            }
        })
        .collect()
}

/// The attachments' names as search sees them: each whole and cut at its
/// punctuation, so that `report` and `report.pdf` both find `Q3 report.pdf`
/// (PostgreSQL's parser keeps `report.pdf` as one word).
fn attachment_names(attachments: &[Attachment]) -> String {
    let mut names = String::new();
    for attachment in attachments {
        let cut: String = attachment.name.chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
        for words in [attachment.name.as_str(), cut.as_str()] {
            names.push_str(words);
            names.push(' ');
        }
    }
    names
}

/// Records which stored message carries each of its attachments.
async fn record_attachments(tx: &mut sqlx::Transaction<'_, sqlx::Any>, m: &Message) -> Result<(), Error> {
    for attachment in &m.attachments {
        sqlx::query(
            "INSERT INTO message_attachments (attachment_id, conversation_id, seq) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(&attachment.id)
        .bind(&m.conversation_id)
        .bind(db_int(m.seq))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A system event as its column keeps it: JSON with protocol v1's words.
fn system_to_json(event: &SystemEvent) -> String {
    serde_json::json!({
        "event": event.kind().word(),
        "user_ids": event.user_ids,
        "title": event.title,
        "role": event.role().word(),
    })
    .to_string()
}

fn system_from_json(json: &str) -> Option<SystemEvent> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Some(SystemEvent {
        kind: SystemEventKind::from_word(&text("event")).unwrap_or_default().into(),
        user_ids: v["user_ids"].as_array()?.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect(),
        title: text("title"),
        role: MemberRole::from_word(&text("role")).unwrap_or_default().into(),
        ..Default::default()
    })
}

/// Rows per multi-row `INSERT` of messages: one statement instead of one per
/// row is most of the ingest rate (SQLite runs each statement through its
/// worker thread), and 128 rows of 10 values stay far below both databases'
/// limits on bound parameters.
const MESSAGE_ROWS_PER_INSERT: usize = 128;
const MESSAGE_COLUMNS: usize = 12;

/// Inserts messages from the stream, skipping those stored already.
pub(super) async fn insert_messages(
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
                .bind(m.system.as_ref().map(system_to_json))
                .bind(attachments_to_json(&m.attachments))
                .bind(attachment_names(&m.attachments));
        }
        query.execute(&mut **tx).await?;
    }
    for (_, m) in messages.iter().filter(|(_, m)| !m.attachments.is_empty()) {
        record_attachments(tx, m).await?;
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
                               client_msg_id, body, sent_at_ms, system_event, attachments,
                               attachment_names) VALUES ",
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

/// Applies a change from the stream at `stream_seq`; `false` when its message
/// is not stored yet.
pub(super) async fn apply_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    stream_seq: u64,
    m: &Message,
) -> Result<bool, Error> {
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM messages WHERE conversation_id = $1 AND message_id = $2")
            .bind(&m.conversation_id)
            .bind(&m.message_id)
            .fetch_optional(&mut **tx)
            .await?;
    if exists.is_none() {
        return Ok(false);
    }
    // Changes apply in stream order; nothing changes a deleted message.
    let changed = sqlx::query(
        "UPDATE messages SET body = $1, edited_at_ms = $2, deleted_at_ms = $3, change_stream_seq = $4,
                             attachments = $7, attachment_names = $8
         WHERE conversation_id = $5 AND message_id = $6 AND deleted_at_ms = 0 AND change_stream_seq < $4",
    )
    .bind(&m.body)
    .bind(m.edited_at_ms)
    .bind(m.deleted_at_ms)
    .bind(db_int(stream_seq))
    .bind(&m.conversation_id)
    .bind(&m.message_id)
    .bind(attachments_to_json(&m.attachments))
    .bind(attachment_names(&m.attachments))
    .execute(&mut **tx)
    .await?;
    // A tombstone carries no file: media may remove those nothing else carries.
    if changed.rows_affected() > 0 && m.deleted_at_ms != 0 {
        sqlx::query("DELETE FROM message_attachments WHERE conversation_id = $1 AND seq = $2")
            .bind(&m.conversation_id)
            .bind(exists.unwrap_or_default())
            .execute(&mut **tx)
            .await?;
    }
    Ok(true)
}

impl Store {
    /// The newest persisted `seq` of a conversation (0 when none).
    pub async fn last_seq(&self, conversation_id: &str) -> Result<u64, Error> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM messages WHERE conversation_id = $1")
            .bind(conversation_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    pub(super) async fn last_message(&self, conversation_id: &str) -> Result<Option<Message>, Error> {
        let row = sqlx::query(LAST_MESSAGE).bind(conversation_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(message_from_row).transpose()?)
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

    /// Up to `limit` of a sender's messages not yet deleted (system messages
    /// aside), as (conversation, message) ids, and how many there are in all.
    pub async fn undeleted_messages_of(
        &self,
        sender_id: &str,
        limit: u32,
    ) -> Result<(Vec<(String, String)>, u64), Error> {
        let rows = sqlx::query(
            "SELECT conversation_id, message_id FROM messages
             WHERE sender_id = $1 AND deleted_at_ms = 0 AND system_event IS NULL
             ORDER BY stream_seq LIMIT $2",
        )
        .bind(sender_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE sender_id = $1 AND deleted_at_ms = 0 AND system_event IS NULL",
        )
        .bind(sender_id)
        .fetch_one(&self.pool)
        .await?;
        let ids = rows
            .iter()
            .map(|row| Ok((row.try_get("conversation_id")?, row.try_get("message_id")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((ids, total.max(0) as u64))
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            ", m.change_stream_seq FROM messages m ",
            seen_by_user!(),
            "
             WHERE m.change_stream_seq > $2 AND m.change_stream_seq <= $3
             ORDER BY m.change_stream_seq"
        ))
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

    /// Messages of the user's conversations with `after < stream_seq <= through`,
    /// in stream order, and whether more exist in that range.
    ///
    /// A page reads at most `limit + 1` rows of each conversation: the range
    /// first ends where some conversation has `limit + 1` visible rows (a
    /// page can hold no row past that one), so a long catch-up costs each
    /// page its own rows, not every row still ahead of it.
    pub async fn catch_up(
        &self,
        user_id: &str,
        after: u64,
        through: u64,
        limit: u32,
    ) -> Result<(Vec<StreamMessage>, bool), Error> {
        let page_end: Option<i64> = sqlx::query_scalar(
            "SELECT MIN((SELECT m.stream_seq FROM messages m
                         WHERE m.conversation_id = c.conversation_id AND m.stream_seq > $2 AND m.stream_seq <= $3
                           AND (c.removed_at_seq IS NULL OR m.seq <= c.removed_at_seq)
                         ORDER BY m.stream_seq LIMIT 1 OFFSET $4))
             FROM conversation_members c WHERE c.user_id = $1",
        )
        .bind(user_id)
        .bind(db_int(after))
        .bind(db_int(through))
        .bind(i64::from(limit))
        .fetch_one(&self.pool)
        .await?;
        let through = page_end.map_or(db_int(through), |end| end.min(db_int(through)));
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            ", m.stream_seq FROM messages m ",
            seen_by_user!(),
            "
             WHERE m.stream_seq > $2 AND m.stream_seq <= $3
             ORDER BY m.stream_seq
             LIMIT $4"
        ))
        .bind(user_id)
        .bind(db_int(after))
        .bind(through)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(stream_page(&rows, limit)?)
    }
}

impl Store {
    /// The messages `sender_id` sent after stream position `after` (system
    /// messages aside), in stream order, and whether more follow.
    pub async fn messages_sent_by(
        &self,
        sender_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<(Vec<StreamMessage>, bool), Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            ", m.stream_seq FROM messages m
             WHERE m.sender_id = $1 AND m.stream_seq > $2 AND m.system_event IS NULL
             ORDER BY m.stream_seq LIMIT $3"
        ))
        .bind(sender_id)
        .bind(db_int(after))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(stream_page(&rows, limit)?)
    }
}

/// Rows fetched with `LIMIT limit + 1` as a page of stream messages, and
/// whether more exist beyond it.
pub(super) fn stream_page(rows: &[AnyRow], limit: u32) -> Result<(Vec<StreamMessage>, bool), sqlx::Error> {
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
