//! Full-text search over the messages a user may see, in their bodies and
//! the names of their files. The two databases search differently
//! (PostgreSQL a `tsvector` of each message, SQLite an FTS5 table beside
//! `messages`), so each has its own query; the user's words are
//! always bound, and for FTS5 quoted so that none is read as its syntax.

use chat_common::db::Backend;
use chat_proto::history::v1::StreamMessage;

use super::messages::{message_columns, seen_by_user, stream_page};
use super::{Store, db_int};
use crate::error::Error;

/// Search in what the user may see (`seen_by_user!`), newest first, before a
/// stream position; `$4` is an optional conversation filter ('' for all).
/// Deleted and system messages never match.
const SEARCH_POSTGRES: &str = concat!(
    "SELECT ",
    message_columns!(),
    ", m.stream_seq FROM messages m ",
    seen_by_user!(),
    "
     WHERE to_tsvector('simple', m.body || ' ' || m.attachment_names) @@ plainto_tsquery('simple', $2)
       AND m.stream_seq < $3 AND ($4 = '' OR m.conversation_id = $4)
       AND m.system_event IS NULL AND m.deleted_at_ms = 0
     ORDER BY m.stream_seq DESC LIMIT $5"
);
const SEARCH_SQLITE: &str = concat!(
    "SELECT ",
    message_columns!(),
    ", m.stream_seq
     FROM messages_fts f
     JOIN messages m ON m.rowid = f.rowid ",
    seen_by_user!(),
    "
     WHERE messages_fts MATCH $2
       AND m.stream_seq < $3 AND ($4 = '' OR m.conversation_id = $4)
       AND m.system_event IS NULL AND m.deleted_at_ms = 0
     ORDER BY m.stream_seq DESC LIMIT $5"
);

impl Store {
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
}

/// An FTS5 query that matches every word of the user's text literally: each
/// word becomes a quoted string, so no input is read as FTS5 syntax.
fn fts5_all_words(text: &str) -> String {
    text.split_whitespace().map(|word| format!("\"{}\"", word.replace('"', "\"\""))).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::fts5_all_words;

    #[test]
    fn fts5_queries_quote_every_word() {
        assert_eq!(fts5_all_words("hello  world"), r#""hello" "world""#);
        assert_eq!(fts5_all_words(r#"say "hi" OR NOT x*"#), r#""say" """hi""" "OR" "NOT" "x*""#);
    }
}
