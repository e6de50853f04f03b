//! What is known about each attachment, and how many bytes each user
//! stores, in media's own database (SQLite or PostgreSQL through sqlx's
//! `Any` driver). Every query binds its values.
//!
//! An upload reserves its declared size against the owner's quota and
//! inserts its row (`uploading`) in one transaction before the first byte
//! is stored; it becomes `stored` once every byte is, or is released (row
//! gone, bytes given back) when it fails. So two uploads at once cannot
//! together pass the quota, and a failed one leaves nothing counted.
//!
//! A file nothing refers to is first marked `deleting` (from then on nobody
//! can attach or download it), then its bytes go, then its row: a deletion
//! cut short is finished by the next clean-up.

use chat_common::db::WriteConnection;
use chat_proto::media::v1::Attachment;
use sqlx::{AnyPool, Row};

#[derive(Clone)]
pub struct Records {
    pool: AnyPool,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the upload would pass the quota of {quota} bytes")]
    OverQuota { quota: u64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How an attachment nothing refers to came to be so, as of a moment.
#[derive(Debug, Clone, Copy)]
pub enum Unused {
    /// Uploaded before it, and never attached.
    Unattached,
    /// Last attached before it (a send attaching it again since keeps it).
    Attached,
}

/// Why uploads cannot be attached to a message.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("no such attachment: {0}")]
    Unknown(String),
    #[error("attachment {0} is attached in another conversation")]
    ElsewhereAttached(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Attachment states, as stored.
pub const UPLOADING: &str = "uploading";
pub const STORED: &str = "stored";
/// Its bytes are being removed; the row goes once they are.
pub const DELETING: &str = "deleting";

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn to_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or_default()
}

fn attachment_from_row(row: &sqlx::any::AnyRow) -> Result<(Attachment, String), sqlx::Error> {
    let attachment = Attachment {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        name: row.try_get("name")?,
        content_type: row.try_get("content_type")?,
        size: to_u64(row.try_get("size")?),
        width: to_u32(row.try_get("width")?),
        height: to_u32(row.try_get("height")?),
        has_thumbnail: row.try_get::<i64, _>("has_thumbnail")? != 0,
        thumbnail_type: row.try_get("thumbnail_type")?,
        blurhash: row.try_get("blurhash")?,
        created_at_ms: row.try_get("created_at_ms")?,
    };
    Ok((attachment, row.try_get("state")?))
}

impl Records {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Reserves `attachment.size` bytes of the owner's `quota` and records
    /// the attachment as `uploading`.
    ///
    /// # Errors
    /// [`RecordError::OverQuota`], or when the database fails.
    pub async fn reserve(&self, attachment: &Attachment, quota: u64) -> Result<(), RecordError> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        sqlx::query("INSERT INTO usage (user_id, used_bytes) VALUES ($1, 0) ON CONFLICT (user_id) DO NOTHING")
            .bind(&attachment.owner_id)
            .execute(&mut *tx)
            .await?;
        let reserved =
            sqlx::query("UPDATE usage SET used_bytes = used_bytes + $2 WHERE user_id = $1 AND used_bytes + $2 <= $3")
                .bind(&attachment.owner_id)
                .bind(to_i64(attachment.size))
                .bind(to_i64(quota))
                .execute(&mut *tx)
                .await?;
        if reserved.rows_affected() == 0 {
            tx.rollback().await?;
            connection.succeeded();
            return Err(RecordError::OverQuota { quota });
        }
        sqlx::query(
            "INSERT INTO attachments (id, owner_id, name, content_type, size, width, height, has_thumbnail,
                                      thumbnail_type, blurhash, state, created_at_ms, claimed_at_ms)
             VALUES ($1, $2, $3, '', $4, 0, 0, 0, '', '', $5, $6, 0)",
        )
        .bind(&attachment.id)
        .bind(&attachment.owner_id)
        .bind(&attachment.name)
        .bind(to_i64(attachment.size))
        .bind(UPLOADING)
        .bind(attachment.created_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        connection.succeeded();
        Ok(())
    }

    /// Every byte of the attachment is stored: it may be downloaded. Its
    /// size may have shrunk since it was reserved (an image's metadata went):
    /// the owner gets the difference back.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn mark_stored(&self, attachment: &Attachment) -> Result<(), sqlx::Error> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        // Writes first: on SQLite a transaction that reads before it writes
        // fails at once ("database is locked") when another writes meanwhile.
        sqlx::query(
            "UPDATE usage SET used_bytes = used_bytes - ((SELECT size FROM attachments WHERE id = $2) - $3)
             WHERE user_id = $1",
        )
        .bind(&attachment.owner_id)
        .bind(&attachment.id)
        .bind(to_i64(attachment.size))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE attachments SET state = $2, content_type = $3, width = $4, height = $5, has_thumbnail = $6,
                                    thumbnail_type = $7, blurhash = $8, size = $9
             WHERE id = $1",
        )
        .bind(&attachment.id)
        .bind(STORED)
        .bind(&attachment.content_type)
        .bind(i64::from(attachment.width))
        .bind(i64::from(attachment.height))
        .bind(i64::from(attachment.has_thumbnail))
        .bind(&attachment.thumbnail_type)
        .bind(&attachment.blurhash)
        .bind(to_i64(attachment.size))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        connection.succeeded();
        Ok(())
    }

    /// Forgets an attachment and gives its bytes back to its owner's quota.
    /// Nothing happens when it is not (or no longer) recorded.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn release(&self, id: &str) -> Result<(), sqlx::Error> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let row = sqlx::query("DELETE FROM attachments WHERE id = $1 RETURNING owner_id, size")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            let owner: String = row.try_get("owner_id")?;
            let size: i64 = row.try_get("size")?;
            sqlx::query("UPDATE usage SET used_bytes = used_bytes - $2 WHERE user_id = $1")
                .bind(owner)
                .bind(size)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        connection.succeeded();
        Ok(())
    }

    /// An attachment and its state.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn get(&self, id: &str) -> Result<Option<(Attachment, String)>, sqlx::Error> {
        let row = sqlx::query("SELECT * FROM attachments WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(attachment_from_row).transpose()
    }

    /// Attachments still `uploading` that were started before `before_ms`:
    /// left by an instance that stopped mid-upload.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn abandoned(&self, before_ms: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT id FROM attachments WHERE state = $1 AND created_at_ms < $2 LIMIT $3")
            .bind(UPLOADING)
            .bind(before_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| row.try_get("id")).collect()
    }

    /// Attaches `ids` (each `owner_id`'s, stored) in `conversation_id`, all
    /// or none; returns them in the order given.
    ///
    /// # Errors
    /// [`ClaimError::Unknown`] for an id that is not the owner's stored
    /// upload, [`ClaimError::ElsewhereAttached`], or when the database fails.
    pub async fn claim(
        &self,
        owner_id: &str,
        conversation_id: &str,
        ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<Attachment>, ClaimError> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            // The write first (see `mark_stored`), then what it found.
            let attached = sqlx::query(
                "UPDATE attachments SET conversation_id = $2, claimed_at_ms = $3
                 WHERE id = $1 AND owner_id = $4 AND state = $5 AND (conversation_id IS NULL OR conversation_id = $2)",
            )
            .bind(id)
            .bind(conversation_id)
            .bind(now_ms)
            .bind(owner_id)
            .bind(STORED)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query("SELECT * FROM attachments WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
            let found = row.as_ref().map(attachment_from_row).transpose()?;
            match found {
                Some((attachment, _)) if attached.rows_affected() == 1 => claimed.push(attachment),
                Some((attachment, state)) if attachment.owner_id == owner_id && state == STORED => {
                    return Err(ClaimError::ElsewhereAttached(id.clone()));
                }
                _ => return Err(ClaimError::Unknown(id.clone())),
            }
        }
        tx.commit().await?;
        connection.succeeded();
        Ok(claimed)
    }

    /// Stored uploads no message attached, made before `before_ms`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn unattached(&self, before_ms: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id FROM attachments
             WHERE state = $1 AND conversation_id IS NULL AND created_at_ms < $2 LIMIT $3",
        )
        .bind(STORED)
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| row.try_get("id")).collect()
    }

    /// Attachments last attached before `before_ms`, after `after_id` in id
    /// order (a page of them).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn attached_before(
        &self,
        before_ms: i64,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id FROM attachments
             WHERE conversation_id IS NOT NULL AND claimed_at_ms < $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(before_ms)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| row.try_get("id")).collect()
    }

    /// Marks `id` as being deleted if it is still stored and still `unused`
    /// as of `before_ms`; `true` when marked. A marked attachment can no
    /// longer be attached or downloaded.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn start_deleting(&self, id: &str, unused: Unused, before_ms: i64) -> Result<bool, sqlx::Error> {
        let sql = match unused {
            Unused::Unattached => {
                "UPDATE attachments SET state = $3
                 WHERE id = $1 AND state = $4 AND conversation_id IS NULL AND created_at_ms < $2"
            }
            Unused::Attached => {
                "UPDATE attachments SET state = $3
                 WHERE id = $1 AND state = $4 AND conversation_id IS NOT NULL AND claimed_at_ms < $2"
            }
        };
        let marked = sqlx::query(sql).bind(id).bind(before_ms).bind(DELETING).bind(STORED).execute(&self.pool).await?;
        Ok(marked.rows_affected() == 1)
    }

    /// Marks every stored attachment of `owner_id` as being deleted; returns
    /// their ids (and those of earlier marks a removal did not finish).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn start_deleting_all_of(&self, owner_id: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query("UPDATE attachments SET state = $1 WHERE owner_id = $2 AND state = $3")
            .bind(DELETING)
            .bind(owner_id)
            .bind(STORED)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT id FROM attachments WHERE owner_id = $1 AND state = $2")
            .bind(owner_id)
            .bind(DELETING)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| row.try_get("id")).collect()
    }

    /// Attachments marked as being deleted (whose deletion may have been cut short).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn being_deleted(&self, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT id FROM attachments WHERE state = $1 LIMIT $2")
            .bind(DELETING)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| row.try_get("id")).collect()
    }

    /// The bytes a user's attachments take, uploads under way included.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn used_bytes(&self, user_id: &str) -> Result<u64, sqlx::Error> {
        let row = sqlx::query("SELECT used_bytes FROM usage WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get::<i64, _>("used_bytes")).transpose()?.map_or(0, to_u64))
    }
}
