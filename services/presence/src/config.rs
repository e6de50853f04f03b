//! Presence configuration from the environment: the variables in [`SETTINGS`].

use std::time::Duration;

use chat_common::config::{self, ConfigError, Env, Setting, shared};
use chat_common::nats::StreamSettings;

/// Presence's configuration; each field is read from the [`Setting`] named
/// beside it, which holds the variable's name and default.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`GRPC_ADDR`].
    pub grpc_addr: String,
    /// [`METRICS_ADDR`]: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// [`shared::NATS_URL`].
    pub nats_url: String,
    /// [`shared::HISTORY_GRPC_URL`]: who shares a conversation with whom.
    pub history_url: String,
    /// [`GRACE_MS`]: how long a user without a connected device stays
    /// online, so a quick reconnect shows no offline/online pair.
    pub grace: Duration,
    /// [`StreamSettings::REPLICAS`]: replicas of the presence buckets.
    pub replicas: usize,
}

pub const GRPC_ADDR: Setting = Setting::listen("PRESENCE_GRPC_ADDR", "127.0.0.1:50053");
pub const METRICS_ADDR: Setting = Setting::metrics("PRESENCE_METRICS_ADDR", "127.0.0.1:9103");
pub const GRACE_MS: Setting = Setting::value("PRESENCE_GRACE_MS", "5000");

/// Every variable presence reads: its own and telemetry's.
pub const SETTINGS: &[&[Setting]] = &[
    &[GRPC_ADDR, METRICS_ADDR, shared::NATS_URL, shared::HISTORY_GRPC_URL, GRACE_MS, StreamSettings::REPLICAS],
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
            nats_url: shared::NATS_URL.string(env),
            history_url: shared::HISTORY_GRPC_URL.string(env),
            grace: Duration::from_millis(GRACE_MS.parse(env)?),
            replicas: StreamSettings::REPLICAS.parse(env)?,
        })
    }

    /// The defaults, on ports the system picks, with explicit dependencies
    /// (tests use this).
    pub fn local(nats_url: &str, history_url: &str) -> Self {
        let defaults = Self::from_lookup(&|_| None).expect("presence's defaults are valid");
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            nats_url: nats_url.to_owned(),
            history_url: history_url.to_owned(),
            ..defaults
        }
    }
}
