//! Notification configuration from the environment.

use std::time::Duration;

use chat_common::config::{self, ConfigError};
use chat_common::nats::StreamSettings;

#[derive(Debug, Clone)]
pub struct Config {
    /// `NOTIFICATION_GRPC_ADDR`, default `127.0.0.1:50054`.
    pub grpc_addr: String,
    /// `NOTIFICATION_METRICS_ADDR`, default `127.0.0.1:9104`: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// `AUTH_GRPC_URL`, default `127.0.0.1:50051`: senders' names for the notification text.
    pub auth_url: String,
    /// `HISTORY_GRPC_URL`, default `127.0.0.1:50052`: members and unread counts.
    pub history_url: String,
    pub stream: StreamSettings,
    /// `NOTIFICATION_COALESCE_MS` (default 2000): messages for one user within
    /// this window become one notification ("3 new messages from Alice").
    pub coalesce: Duration,
    /// `NOTIFICATION_PUSH_ATTEMPTS` (default 6): attempts per push before it
    /// becomes a dead letter.
    pub push_attempts: u32,
    /// `NOTIFICATION_RETRY_BASE_MS` (default 1000): the first retry waits this
    /// long, each next one twice as long.
    pub retry_base: Duration,
    /// `NOTIFICATION_ACK_WAIT_SECS` (default 30): a delivery taken by an
    /// instance that crashed is taken up again after this long.
    pub ack_wait: Duration,
    /// `NOTIFICATION_PUSH_TIMEOUT_MS` (default 10000): one push request's limit.
    pub push_timeout: Duration,
    /// `NOTIFICATION_ALLOW_HTTP_ENDPOINTS` (default false): accept `http://`
    /// push endpoints and webhooks (development and tests only).
    pub allow_http_endpoints: bool,
    /// `NOTIFICATION_ALLOW_PRIVATE_ENDPOINTS` (default false): accept push
    /// endpoints and webhooks on loopback, private, link-local and other
    /// non-public addresses (development and tests only: otherwise anyone
    /// could make this service send requests into its own network).
    pub allow_private_endpoints: bool,
    /// `NOTIFICATION_INTAKE_ATTEMPTS` (default 10): attempts at an event of
    /// the CHAT stream that keeps failing before it is set aside as a dead
    /// event (one that can never succeed, such as an undecodable payload, is
    /// set aside at once).
    pub intake_attempts: u32,
    /// `NOTIFICATION_VAPID_SUBJECT` (default `mailto:admin@localhost`): the
    /// contact push services see in the VAPID token.
    pub vapid_subject: String,
}

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_addr: config::string("NOTIFICATION_GRPC_ADDR", "127.0.0.1:50054"),
            metrics_addr: config::string("NOTIFICATION_METRICS_ADDR", "127.0.0.1:9104"),
            nats_url: config::string("NATS_URL", "nats://127.0.0.1:4222"),
            auth_url: config::string("AUTH_GRPC_URL", "127.0.0.1:50051"),
            history_url: config::string("HISTORY_GRPC_URL", "127.0.0.1:50052"),
            stream: StreamSettings::from_env()?,
            coalesce: Duration::from_millis(config::parse("NOTIFICATION_COALESCE_MS", 2000)?),
            push_attempts: config::parse("NOTIFICATION_PUSH_ATTEMPTS", 6)?,
            retry_base: Duration::from_millis(config::parse("NOTIFICATION_RETRY_BASE_MS", 1000)?),
            ack_wait: Duration::from_secs(config::parse("NOTIFICATION_ACK_WAIT_SECS", 30)?),
            push_timeout: Duration::from_millis(config::parse("NOTIFICATION_PUSH_TIMEOUT_MS", 10_000)?),
            allow_http_endpoints: config::parse("NOTIFICATION_ALLOW_HTTP_ENDPOINTS", false)?,
            allow_private_endpoints: config::parse("NOTIFICATION_ALLOW_PRIVATE_ENDPOINTS", false)?,
            intake_attempts: config::parse("NOTIFICATION_INTAKE_ATTEMPTS", 10)?,
            vapid_subject: config::string("NOTIFICATION_VAPID_SUBJECT", "mailto:admin@localhost"),
        })
    }

    /// Defaults for one machine with explicit dependencies (tests use this).
    pub fn local(nats_url: &str, auth_url: &str, history_url: &str) -> Self {
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            nats_url: nats_url.to_owned(),
            auth_url: auth_url.to_owned(),
            history_url: history_url.to_owned(),
            stream: StreamSettings::default(),
            coalesce: Duration::from_secs(2),
            push_attempts: 6,
            retry_base: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
            push_timeout: Duration::from_secs(10),
            allow_http_endpoints: false,
            allow_private_endpoints: false,
            intake_attempts: 10,
            vapid_subject: "mailto:admin@localhost".to_owned(),
        }
    }
}
