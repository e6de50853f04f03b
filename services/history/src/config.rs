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
    /// [`MAX_GROUP_MEMBERS`]: the most members a group may have (2 to
    /// [`GROUP_MEMBERS_CEILING`]).
    pub max_group_members: usize,
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
pub const MAX_GROUP_MEMBERS: Setting = Setting::value("HISTORY_MAX_GROUP_MEMBERS", "256");
/// The highest [`MAX_GROUP_MEMBERS`] may go: every membership change is
/// announced as the whole member list in one NATS message, about 38 bytes a
/// member, and this keeps it well inside NATS's default 1 MiB payload.
pub const GROUP_MEMBERS_CEILING: usize = 10_000;

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
        MAX_GROUP_MEMBERS,
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
        let max_group_members = MAX_GROUP_MEMBERS.parse(env)?;
        if !(2..=GROUP_MEMBERS_CEILING).contains(&max_group_members) {
            let reason = format!("must be between 2 and {GROUP_MEMBERS_CEILING}");
            return Err(ConfigError::invalid(MAX_GROUP_MEMBERS.name, reason));
        }
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
            max_group_members,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_group_limit(value: &str) -> Result<Config, ConfigError> {
        let value = value.to_owned();
        Config::from_lookup(&move |name: &str| (name == MAX_GROUP_MEMBERS.name).then(|| value.clone()))
    }

    #[test]
    fn the_group_limit_is_256_unless_raised_and_stays_between_2_and_10_000() {
        assert_eq!(Config::from_lookup(&|_| None).unwrap().max_group_members, 256);
        assert_eq!(with_group_limit("10000").unwrap().max_group_members, 10_000);
        for refused in ["0", "1", "10001", "-5", "many"] {
            let error = with_group_limit(refused).expect_err(refused).to_string();
            assert!(error.contains("HISTORY_MAX_GROUP_MEMBERS"), "{refused}: {error}");
        }
    }
}
