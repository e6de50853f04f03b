//! History configuration from the environment: the variables in [`SETTINGS`].

use std::time::Duration;

use chat_common::config::{self, ConfigError, Env, Peer, Setting, shared};
use chat_common::nats::StreamSettings;

/// History's configuration; each field is read from the [`Setting`] named
/// beside it, which holds the variable's name and default.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`GRPC_ADDR`].
    pub grpc_addr: String,
    /// [`METRICS_ADDR`]: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// [`DATABASE_URL`]: a `sqlite:` file, or a `postgres://` URL, which selects PostgreSQL.
    pub database_url: String,
    /// [`DATABASE_MAX_CONNECTIONS`].
    pub database_max_connections: u32,
    /// [`shared::NATS_URL`].
    pub nats_url: String,
    /// [`StreamSettings::SETTINGS`].
    pub stream: StreamSettings,
    /// [`INGEST_BATCH`]: at most this many messages per insert transaction.
    pub ingest_batch: usize,
    /// [`INGEST_WRITERS`]: transactions stored side by side, each for its
    /// own share of the conversations, each on a connection of its own. 0, the
    /// default, means 2 on PostgreSQL and 1 on SQLite (which writes one
    /// transaction at a time whatever the number).
    pub ingest_writers: usize,
    /// [`ACK_WAIT_SECS`]: after a crash, entries the dead instance had taken
    /// are redelivered this long after they were handed out.
    pub ack_wait: Duration,
    /// [`CONSUME`]: whether this instance writes the stream into the
    /// database. `false` serves reads only (a replica, or during maintenance);
    /// catch-up then reads what is not stored from the stream.
    pub consume: bool,
}

pub const GRPC_ADDR: Setting = Setting::listen("HISTORY_GRPC_ADDR", "127.0.0.1:50052");
pub const METRICS_ADDR: Setting = Setting::metrics("HISTORY_METRICS_ADDR", "127.0.0.1:9102");
pub const DATABASE_URL: Setting = Setting::peer("HISTORY_DATABASE_URL", "sqlite://data/history.db", Peer::Database);
pub const DATABASE_MAX_CONNECTIONS: Setting = Setting::value("HISTORY_DATABASE_MAX_CONNECTIONS", "8");
pub const INGEST_BATCH: Setting = Setting::value("HISTORY_INGEST_BATCH", "1024");
/// 0: 2 on PostgreSQL, 1 on SQLite.
pub const INGEST_WRITERS: Setting = Setting::value("HISTORY_INGEST_WRITERS", "0");
pub const ACK_WAIT_SECS: Setting = Setting::value("HISTORY_ACK_WAIT_SECS", "10");
pub const CONSUME: Setting = Setting::value("HISTORY_CONSUME", "true");

/// Every variable history reads: its own, the CHAT stream's and telemetry's.
pub const SETTINGS: &[&[Setting]] = &[
    &[
        GRPC_ADDR,
        METRICS_ADDR,
        DATABASE_URL,
        DATABASE_MAX_CONNECTIONS,
        shared::NATS_URL,
        INGEST_BATCH,
        INGEST_WRITERS,
        ACK_WAIT_SECS,
        CONSUME,
    ],
    StreamSettings::SETTINGS,
    chat_common::telemetry::SETTINGS,
];

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&config::process_env)
    }

    /// Reads [`SETTINGS`] from `env`.
    ///
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_lookup(env: Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_addr: GRPC_ADDR.string(env),
            metrics_addr: METRICS_ADDR.string(env),
            database_url: DATABASE_URL.string(env),
            database_max_connections: DATABASE_MAX_CONNECTIONS.parse(env)?,
            nats_url: shared::NATS_URL.string(env),
            stream: StreamSettings::from_lookup(env)?,
            ingest_batch: INGEST_BATCH.parse(env)?,
            ingest_writers: INGEST_WRITERS.parse(env)?,
            ack_wait: Duration::from_secs(ACK_WAIT_SECS.parse(env)?),
            consume: CONSUME.parse(env)?,
        })
    }

    /// The defaults, on ports the system picks, with explicit dependencies
    /// and a small pool (tests use this).
    pub fn local(database_url: &str, nats_url: &str) -> Self {
        let defaults = Self::from_lookup(&|_| None).expect("history's defaults are valid");
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            database_url: database_url.to_owned(),
            database_max_connections: 4,
            nats_url: nats_url.to_owned(),
            ..defaults
        }
    }
}
