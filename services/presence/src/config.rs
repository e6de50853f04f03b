//! Presence configuration from the environment.

use std::time::Duration;

use chat_common::config::{self, ConfigError};

#[derive(Debug, Clone)]
pub struct Config {
    /// `PRESENCE_GRPC_ADDR`, default `127.0.0.1:50053`.
    pub grpc_addr: String,
    /// `PRESENCE_METRICS_ADDR`, default `127.0.0.1:9103`: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// `HISTORY_GRPC_URL`, default `127.0.0.1:50052`: who shares a conversation with whom.
    pub history_url: String,
    /// `PRESENCE_GRACE_MS` (default 5000): how long a user without a connected
    /// device stays online, so a quick reconnect shows no offline/online pair.
    pub grace: Duration,
    /// `CHAT_STREAM_REPLICAS` (default 1): replicas of the presence buckets.
    pub replicas: usize,
}

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_addr: config::string("PRESENCE_GRPC_ADDR", "127.0.0.1:50053"),
            metrics_addr: config::string("PRESENCE_METRICS_ADDR", "127.0.0.1:9103"),
            nats_url: config::string("NATS_URL", "nats://127.0.0.1:4222"),
            history_url: config::string("HISTORY_GRPC_URL", "127.0.0.1:50052"),
            grace: Duration::from_millis(config::parse("PRESENCE_GRACE_MS", 5000)?),
            replicas: config::parse("CHAT_STREAM_REPLICAS", 1)?,
        })
    }

    /// Defaults for one machine with explicit dependencies (tests use this).
    pub fn local(nats_url: &str, history_url: &str) -> Self {
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            nats_url: nats_url.to_owned(),
            history_url: history_url.to_owned(),
            grace: Duration::from_secs(5),
            replicas: 1,
        }
    }
}
