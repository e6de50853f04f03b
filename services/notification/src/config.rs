//! Notification configuration from the environment.

use chat_common::config::{self, ConfigError};

#[derive(Debug, Clone)]
pub struct Config {
    /// `NOTIFICATION_GRPC_ADDR`, default `127.0.0.1:50054`.
    pub grpc_addr: String,
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
}

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_addr: config::string("NOTIFICATION_GRPC_ADDR", "127.0.0.1:50054"),
            nats_url: config::string("NATS_URL", "nats://127.0.0.1:4222"),
        })
    }

    pub fn local(nats_url: &str) -> Self {
        Self { grpc_addr: "127.0.0.1:0".to_owned(), nats_url: nats_url.to_owned() }
    }
}
