//! The audit log: every operator action, recorded as `pending` before it is
//! carried out and given its outcome after, so no action goes unrecorded
//! even when the service stops in between.

use chat_proto::admin::v1::AuditEntry;
use sqlx::{AnyPool, Row as _};

pub struct AuditLog {
    pool: AnyPool,
}

/// An action about to be carried out.
pub struct Pending<'a> {
    pub operator: &'a str,
    pub action: &'static str,
    pub target: &'a str,
    pub details: serde_json::Value,
}

impl AuditLog {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Records the action as pending; returns its entry id.
    ///
    /// # Errors
    /// When the database does not take it (the action is then not done).
    pub async fn begin(&self, action: &Pending<'_>) -> Result<String, sqlx::Error> {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO audit_log (id, at_ms, operator, action, target, details, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
        )
        .bind(&id)
        .bind(chat_common::time::now_ms())
        .bind(action.operator)
        .bind(action.action)
        .bind(action.target)
        .bind(action.details.to_string())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Gives the entry its outcome.
    ///
    /// # Errors
    /// When the database does not take it.
    pub async fn finish(&self, id: &str, outcome: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE audit_log SET outcome = $1 WHERE id = $2")
            .bind(outcome)
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Entries before `before_ms`, newest first.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn list(&self, before_ms: i64, limit: u32) -> Result<Vec<AuditEntry>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, at_ms, operator, action, target, details, outcome FROM audit_log
             WHERE at_ms < $1 ORDER BY at_ms DESC, id DESC LIMIT $2",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    entry_id: row.try_get("id")?,
                    at_ms: row.try_get("at_ms")?,
                    operator: row.try_get("operator")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    details_json: row.try_get("details")?,
                    outcome: row.try_get("outcome")?,
                })
            })
            .collect()
    }
}
