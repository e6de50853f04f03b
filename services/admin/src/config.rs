//! Admin configuration from the environment: the variables in [`SETTINGS`].

use chat_common::config::{self, ConfigError, Env, Peer, Setting, shared};

use crate::operators::Operators;

/// Admin's configuration; each field is read from the [`Setting`] named
/// beside it, which holds the variable's name and default.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`GRPC_ADDR`]: the operators' API. Expose it to operators only.
    pub grpc_addr: String,
    /// [`METRICS_ADDR`]: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// [`DATABASE_URL`]: where the audit log is kept.
    pub database_url: String,
    /// [`DATABASE_MAX_CONNECTIONS`].
    pub database_max_connections: u32,
    /// [`shared::NATS_URL`].
    pub nats_url: String,
    /// [`shared::AUTH_GRPC_URL`]: users and devices.
    pub auth_url: String,
    /// [`shared::HISTORY_GRPC_URL`]: reports, messages and members.
    pub history_url: String,
    /// [`shared::MEDIA_GRPC_URL`]: an erased user's files.
    pub media_url: String,
    /// [`shared::NOTIFICATION_GRPC_URL`]: an exported user's push subscriptions.
    pub notification_url: String,
    /// [`OPERATORS`]: who may call, by the SHA-256 of their token.
    pub operators: Operators,
    /// [`EXPORT_STALL_SECS`]: an export whose reader takes no record for this long is ended.
    pub export_stall: std::time::Duration,
}

pub const GRPC_ADDR: Setting = Setting::listen("ADMIN_GRPC_ADDR", "127.0.0.1:50056");
pub const METRICS_ADDR: Setting = Setting::metrics("ADMIN_METRICS_ADDR", "127.0.0.1:9106");
pub const DATABASE_URL: Setting = Setting::peer("ADMIN_DATABASE_URL", "sqlite://data/admin.db", Peer::Database);
pub const DATABASE_MAX_CONNECTIONS: Setting = Setting::value("ADMIN_DATABASE_MAX_CONNECTIONS", "4");
/// Comma-separated `name:sha256hex` pairs: each operator's name (kept in the
/// audit log) and the SHA-256 of their token, in hex. The tokens themselves
/// are never configured. Empty: every call is refused.
pub const OPERATORS: Setting = Setting::value("ADMIN_OPERATORS", "");
/// An export holds a page of messages and a database cursor's worth of work
/// while it waits for its reader; a reader that stops reading ends it.
pub const EXPORT_STALL_SECS: Setting = Setting::value("ADMIN_EXPORT_STALL_SECS", "60");

/// Every variable admin reads: its own and telemetry's.
pub const SETTINGS: &[&[Setting]] = &[
    &[
        GRPC_ADDR,
        METRICS_ADDR,
        DATABASE_URL,
        DATABASE_MAX_CONNECTIONS,
        shared::NATS_URL,
        shared::AUTH_GRPC_URL,
        shared::HISTORY_GRPC_URL,
        shared::MEDIA_GRPC_URL,
        shared::NOTIFICATION_GRPC_URL,
        OPERATORS,
        EXPORT_STALL_SECS,
    ],
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
        let operators =
            Operators::parse(&OPERATORS.string(env)).map_err(|reason| ConfigError::invalid(OPERATORS.name, reason))?;
        Ok(Self {
            grpc_addr: GRPC_ADDR.string(env),
            metrics_addr: METRICS_ADDR.string(env),
            database_url: DATABASE_URL.string(env),
            database_max_connections: DATABASE_MAX_CONNECTIONS.parse(env)?,
            nats_url: shared::NATS_URL.string(env),
            auth_url: shared::AUTH_GRPC_URL.string(env),
            history_url: shared::HISTORY_GRPC_URL.string(env),
            media_url: shared::MEDIA_GRPC_URL.string(env),
            notification_url: shared::NOTIFICATION_GRPC_URL.string(env),
            operators,
            export_stall: std::time::Duration::from_secs(EXPORT_STALL_SECS.parse(env)?),
        })
    }

    /// The defaults, on ports the system picks, calling auth, history, media
    /// and notification at `peers`, with `operators` (tests use this).
    pub fn local(database_url: &str, nats_url: &str, peers: [&str; 4], operators: Operators) -> Self {
        let defaults = Self::from_lookup(&|_| None).expect("admin's defaults are valid");
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            database_url: database_url.to_owned(),
            nats_url: nats_url.to_owned(),
            auth_url: peers[0].to_owned(),
            history_url: peers[1].to_owned(),
            media_url: peers[2].to_owned(),
            notification_url: peers[3].to_owned(),
            operators,
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_are_read_and_a_bad_list_is_refused() {
        let hash = "a".repeat(64);
        let list = format!("ops:{hash}, oncall:{}", "b".repeat(64));
        let config = Config::from_lookup(&|name| (name == OPERATORS.name).then(|| list.clone())).unwrap();
        assert_eq!(config.operators.names(), ["ops", "oncall"]);
        for bad in ["ops", "ops:xyz", &format!(":{hash}"), &format!("ops:{hash},ops:{hash}")] {
            let bad = bad.to_owned();
            assert!(Config::from_lookup(&|name| (name == OPERATORS.name).then(|| bad.clone())).is_err(), "{bad}");
        }
    }
}
