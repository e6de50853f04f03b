//! Read markers: how far each member has read in a conversation. A marker
//! only ever moves forward, and carries the stream position of its last move
//! so that a device's sync can fetch the markers that moved since.

use chat_proto::events::v1::ReadMarkerMoved;
use chat_proto::history::v1::ReadMarker;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, db_int};
use crate::error::Error;

/// Moves the user's marker to the one read at `stream_seq`, unless it stands
/// further already.
pub(super) async fn move_read_marker(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    stream_seq: u64,
    r: &ReadMarkerMoved,
) -> Result<(), Error> {
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
    .bind(db_int(stream_seq))
    .bind(chat_common::time::now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
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

    /// Markers in the user's conversations that moved with
    /// `after < stream_seq <= through`, in stream order.
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
