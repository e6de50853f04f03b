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

/// A kept report, as moderators read it.
pub struct ReportRow {
    pub id: String,
    pub reporter_id: String,
    pub conversation_id: String,
    pub message_id: String,
    pub sender_id: String,
    pub reason: String,
    pub context: String,
    pub created_at_ms: i64,
    pub status: String,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
    pub resolved_at_ms: Option<i64>,
}

/// The columns of a report, for queries written out at compile time.
macro_rules! report_columns {
    () => {
        "id, reporter_id, conversation_id, message_id, sender_id, reason, context, created_at_ms, status, \
         resolved_by, resolution, resolved_at_ms"
    };
}

fn report_from_row(row: &sqlx::any::AnyRow) -> Result<ReportRow, sqlx::Error> {
    Ok(ReportRow {
        id: row.try_get("id")?,
        reporter_id: row.try_get("reporter_id")?,
        conversation_id: row.try_get("conversation_id")?,
        message_id: row.try_get("message_id")?,
        sender_id: row.try_get("sender_id")?,
        reason: row.try_get("reason")?,
        context: row.try_get("context")?,
        created_at_ms: row.try_get("created_at_ms")?,
        status: row.try_get("status")?,
        resolved_by: row.try_get("resolved_by")?,
        resolution: row.try_get("resolution")?,
        resolved_at_ms: row.try_get("resolved_at_ms")?,
    })
}

impl Store {
    /// Reports made before `before_ms`, newest first; `status` None for all.
    pub async fn reports(&self, status: Option<&str>, before_ms: i64, limit: u32) -> Result<Vec<ReportRow>, Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            report_columns!(),
            " FROM reports WHERE ($1 = '' OR status = $1) AND created_at_ms < $2
             ORDER BY created_at_ms DESC, id DESC LIMIT $3"
        ))
        .bind(status.unwrap_or_default())
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(report_from_row).collect::<Result<_, _>>()?)
    }

    /// Closes an open report; `None` for an unknown report. A report closed
    /// already keeps its first resolution.
    pub async fn resolve_report(
        &self,
        id: &str,
        resolved_by: &str,
        resolution: &str,
        now_ms: i64,
    ) -> Result<Option<ReportRow>, Error> {
        sqlx::query(
            "UPDATE reports SET status = 'resolved', resolved_by = $1, resolution = $2, resolved_at_ms = $3
             WHERE id = $4 AND status = 'open'",
        )
        .bind(resolved_by)
        .bind(resolution)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.report(id).await
    }

    /// One report; `None` for an unknown id.
    pub async fn report(&self, id: &str) -> Result<Option<ReportRow>, Error> {
        let row = sqlx::query(concat!("SELECT ", report_columns!(), " FROM reports WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(report_from_row).transpose()?)
    }
}
