//! Which stored messages carry which attachments (`message_attachments`):
//! who may read a file, and which files no message carries any more.

use super::Store;
use super::messages::seen_by_user;
use crate::error::Error;

/// Whether the user bound as `$1` may see a stored message that carries the
/// attachment `$2`.
const READABLE: &str = concat!(
    "SELECT 1 FROM message_attachments a
     JOIN messages m ON m.conversation_id = a.conversation_id AND m.seq = a.seq ",
    seen_by_user!(),
    " WHERE a.attachment_id = $2 LIMIT 1"
);

impl Store {
    /// Whether `user_id` may see a stored message that carries the attachment.
    pub async fn attachment_readable(&self, user_id: &str, attachment_id: &str) -> Result<bool, Error> {
        let found: Option<i32> =
            sqlx::query_scalar(READABLE).bind(user_id).bind(attachment_id).fetch_optional(&self.pool).await?;
        Ok(found.is_some())
    }

    /// Those of `attachment_ids` that a stored message carries.
    pub async fn referenced_attachments(&self, attachment_ids: &[String]) -> Result<Vec<String>, Error> {
        let mut referenced = Vec::new();
        for id in attachment_ids {
            let found: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM message_attachments WHERE attachment_id = $1 LIMIT 1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            if found.is_some() {
                referenced.push(id.clone());
            }
        }
        Ok(referenced)
    }
}
