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
    /// `UNAVAILABLE` when the database does not take it: the action must
    /// then not be carried out.
    pub async fn begin(&self, action: &Pending<'_>) -> Result<String, tonic::Status> {
        self.insert(action).await.map_err(|e| {
            tracing::error!(error = %e, "cannot write the audit log");
            tonic::Status::unavailable("the audit log cannot be written; nothing was done")
        })
    }

    async fn insert(&self, action: &Pending<'_>) -> Result<String, sqlx::Error> {
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

    /// Gives the entry of `action` its outcome: `ok`, or the code and
    /// message it failed with; counts and logs it.
    pub async fn finish<T>(&self, entry: &str, action: &Pending<'_>, result: &Result<T, tonic::Status>) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        crate::metrics::count(match result {
            Ok(_) => "ok",
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown) => {
                "failed"
            }
            Err(_) => "refused",
        });
        tracing::info!(operator = action.operator, action = action.action, target = action.target, %outcome, "admin action");
        let written = sqlx::query("UPDATE audit_log SET outcome = $1 WHERE id = $2")
            .bind(&outcome)
            .bind(entry)
            .execute(&self.pool)
            .await;
        if let Err(e) = written {
            // The action is done and recorded as pending: say so, loudly.
            tracing::error!(error = %e, entry, "cannot record an admin action's outcome");
        }
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
