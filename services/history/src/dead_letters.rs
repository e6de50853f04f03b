//! Stream entries history cannot store are set aside, never retried forever.
//!
//! One entry the database refuses (or that does not decode) would otherwise
//! hold its whole batch back for good: its writer retries, the ack floor
//! stops, pages wait for it and catch-up reads an ever-longer tail, and a
//! restart brings the same batch back. So ingest tells a refusal of the data
//! (the database will refuse it every time) from trouble with the database
//! (unreachable, busy, full: wait and retry), stores the rest of the batch
//! entry by entry, and records each refused entry here with its reason and its
//! raw bytes, with a log line and the `history_dead_letters_total` metric.

use chat_common::db::Backend;

use crate::error::Error;
use crate::store::Store;

/// A stream entry history did not store, and why.
#[derive(Debug)]
pub struct DeadLetter {
    pub stream_seq: u64,
    pub subject: String,
    pub reason: String,
    pub payload: Vec<u8>,
}

impl DeadLetter {
    pub fn of(message: &async_nats::jetstream::Message, stream_seq: u64, reason: impl Into<String>) -> Self {
        Self {
            stream_seq,
            subject: message.subject.to_string(),
            reason: reason.into(),
            payload: message.payload.to_vec(),
        }
    }
}

const SQLITE_TOOBIG: u32 = 18;
const SQLITE_CONSTRAINT: u32 = 19;
const SQLITE_MISMATCH: u32 = 20;

impl Store {
    /// Whether the database refused the data itself, so that storing the same
    /// entry again can never succeed: PostgreSQL's data exceptions and
    /// integrity violations (SQLSTATE classes 22 and 23, e.g. U+0000 in text),
    /// SQLite's constraint, too-big and type-mismatch errors. Anything else (a
    /// lost connection, a busy or full database, a bug in a statement) is retried.
    pub fn refuses_data(&self, err: &Error) -> bool {
        let Error::Unexpected(cause) = err else { return false };
        let Some(sqlx::Error::Database(db)) = cause.downcast_ref::<sqlx::Error>() else { return false };
        let Some(code) = db.code() else { return false };
        match self.backend() {
            Backend::Postgres => code.starts_with("22") || code.starts_with("23"),
            // Extended result codes: the primary code is the low byte.
            Backend::Sqlite => code
                .parse::<u32>()
                .is_ok_and(|code| matches!(code & 0xff, SQLITE_TOOBIG | SQLITE_CONSTRAINT | SQLITE_MISMATCH)),
        }
    }

    /// Records a dead letter, once: recording a redelivered entry again changes nothing.
    pub async fn set_aside(&self, letter: &DeadLetter) -> Result<(), Error> {
        let recorded = sqlx::query(
            "INSERT INTO dead_letters (stream_seq, subject, reason, payload, recorded_at_ms)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream_seq) DO NOTHING",
        )
        .bind(i64::try_from(letter.stream_seq).unwrap_or(i64::MAX))
        .bind(&letter.subject)
        // The reason may quote the refused text; what was refused once must not be written again.
        .bind(letter.reason.replace('\0', "\u{fffd}"))
        .bind(&letter.payload)
        .bind(chat_common::time::now_ms())
        .execute(self.pool())
        .await?;
        if recorded.rows_affected() > 0 {
            tracing::error!(
                stream_seq = letter.stream_seq,
                subject = %letter.subject,
                reason = %letter.reason,
                "stream entry set aside as a dead letter; ingest goes on"
            );
            crate::metrics::get().dead_letters.inc();
        }
        Ok(())
    }
}
