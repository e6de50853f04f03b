//! Reports of messages, kept for moderators with the messages around the
//! reported one as they read when it was reported.

use sqlx::Row as _;

use super::Store;
use crate::error::Error;

/// A report to keep.
pub struct NewReport<'a> {
    pub id: &'a str,
    pub reporter_id: &'a str,
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub sender_id: &'a str,
    pub reason: &'a str,
    /// JSON of the reported message and its neighbours.
    pub context: &'a str,
    pub created_at_ms: i64,
}

impl Store {
    /// Keeps a report, once per reporter and message. Returns the report's id
    /// and time, and whether it is new (else the first report is returned).
    pub async fn add_report(&self, report: &NewReport<'_>) -> Result<(String, i64, bool), Error> {
        let inserted = sqlx::query(
            "INSERT INTO reports (id, reporter_id, conversation_id, message_id, sender_id, reason, context,
                                  created_at_ms, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open')
             ON CONFLICT (reporter_id, message_id) DO NOTHING",
        )
        .bind(report.id)
        .bind(report.reporter_id)
        .bind(report.conversation_id)
        .bind(report.message_id)
        .bind(report.sender_id)
        .bind(report.reason)
        .bind(report.context)
        .bind(report.created_at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0;
        let row = sqlx::query("SELECT id, created_at_ms FROM reports WHERE reporter_id = $1 AND message_id = $2")
            .bind(report.reporter_id)
            .bind(report.message_id)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("id")?, row.try_get("created_at_ms")?, inserted))
    }
}
