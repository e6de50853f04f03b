//! History configuration from the environment.

use chat_common::config::{self, ConfigError};
use chat_common::nats::StreamSettings;

#[derive(Debug, Clone)]
pub struct Config {
    /// `HISTORY_GRPC_ADDR`, default `127.0.0.1:50052`.
    pub grpc_addr: String,
    /// `HISTORY_METRICS_ADDR`, default `127.0.0.1:9102`: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// `HISTORY_DATABASE_URL`, default `sqlite://data/history.db`; a
    /// `postgres://` URL selects PostgreSQL.
    pub database_url: String,
    pub database_max_connections: u32,
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    pub stream: StreamSettings,
    /// `HISTORY_INGEST_BATCH`: at most this many messages per insert transaction.
    pub ingest_batch: usize,
    /// `HISTORY_INGEST_WRITERS`: transactions stored side by side, each for its
    /// own share of the conversations, each on a connection of its own. 0, the
    /// default, means 2 on PostgreSQL and 1 on SQLite (which writes one
    /// transaction at a time whatever the number).
    pub ingest_writers: usize,
    /// `HISTORY_ACK_WAIT_SECS` (default 10): after a crash, entries the dead
    /// instance had taken are redelivered this long after they were handed out.
    pub ack_wait: std::time::Duration,
    /// `HISTORY_CONSUME` (default true): whether this instance writes the
    /// stream into the database. `false` serves reads only (a replica, or
    /// during maintenance); catch-up then reads what is not stored from the stream.
    pub consume: bool,
}

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_addr: config::string("HISTORY_GRPC_ADDR", "127.0.0.1:50052"),
            metrics_addr: config::string("HISTORY_METRICS_ADDR", "127.0.0.1:9102"),
            database_url: config::string("HISTORY_DATABASE_URL", "sqlite://data/history.db"),
            database_max_connections: config::parse("HISTORY_DATABASE_MAX_CONNECTIONS", 8)?,
            nats_url: config::string("NATS_URL", "nats://127.0.0.1:4222"),
            stream: StreamSettings::from_env()?,
            ingest_batch: config::parse("HISTORY_INGEST_BATCH", 1024)?,
            ingest_writers: config::parse("HISTORY_INGEST_WRITERS", 0)?,
            ack_wait: std::time::Duration::from_secs(config::parse("HISTORY_ACK_WAIT_SECS", 10)?),
            consume: config::parse("HISTORY_CONSUME", true)?,
        })
    }

    /// Defaults for one machine with explicit dependencies (tests use this).
    pub fn local(database_url: &str, nats_url: &str) -> Self {
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            database_url: database_url.to_owned(),
            database_max_connections: 4,
            nats_url: nats_url.to_owned(),
            stream: StreamSettings::default(),
            ingest_batch: 1024,
            ingest_writers: 0,
            ack_wait: std::time::Duration::from_secs(10),
            consume: true,
        }
    }
}
