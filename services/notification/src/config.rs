//! Notification configuration from the environment: the variables in [`SETTINGS`].

use std::time::Duration;

use chat_common::config::{self, ConfigError, Env, Setting, shared};
use chat_common::nats::StreamSettings;

/// Notification's configuration; each field is read from the [`Setting`]
/// named beside it, which holds the variable's name and default.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`GRPC_ADDR`].
    pub grpc_addr: String,
    /// [`METRICS_ADDR`]: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// [`shared::NATS_URL`].
    pub nats_url: String,
    /// [`shared::AUTH_GRPC_URL`]: senders' names for the notification text.
    pub auth_url: String,
    /// [`shared::HISTORY_GRPC_URL`]: members and unread counts.
    pub history_url: String,
    /// [`StreamSettings::SETTINGS`].
    pub stream: StreamSettings,
    /// [`COALESCE_MS`]: messages for one user within this window become one
    /// notification ("3 new messages from Alice").
    pub coalesce: Duration,
    /// [`PUSH_ATTEMPTS`]: attempts per push before it becomes a dead letter.
    pub push_attempts: u32,
    /// [`RETRY_BASE_MS`]: the first retry waits this long, each next one
    /// twice as long.
    pub retry_base: Duration,
    /// [`ACK_WAIT_SECS`]: a delivery taken by an instance that crashed is
    /// taken up again after this long.
    pub ack_wait: Duration,
    /// [`PUSH_TIMEOUT_MS`]: one push request's limit.
    pub push_timeout: Duration,
    /// [`ALLOW_HTTP_ENDPOINTS`]: accept `http://` push endpoints and webhooks
    /// (development and tests only).
    pub allow_http_endpoints: bool,
    /// [`ALLOW_PRIVATE_ENDPOINTS`]: accept push endpoints and webhooks on
    /// loopback, private, link-local and other non-public addresses
    /// (development and tests only: otherwise anyone could make this service
    /// send requests into its own network).
    pub allow_private_endpoints: bool,
    /// [`INTAKE_ATTEMPTS`]: attempts at an event of the CHAT stream that
    /// keeps failing before it is set aside as a dead event (one that can
    /// never succeed, such as an undecodable payload, is set aside at once).
    pub intake_attempts: u32,
    /// [`VAPID_SUBJECT`]: the contact push services see in the VAPID token.
    pub vapid_subject: String,
}

pub const GRPC_ADDR: Setting = Setting::listen("NOTIFICATION_GRPC_ADDR", "127.0.0.1:50054");
pub const METRICS_ADDR: Setting = Setting::metrics("NOTIFICATION_METRICS_ADDR", "127.0.0.1:9104");
pub const COALESCE_MS: Setting = Setting::value("NOTIFICATION_COALESCE_MS", "2000");
pub const PUSH_ATTEMPTS: Setting = Setting::value("NOTIFICATION_PUSH_ATTEMPTS", "6");
pub const RETRY_BASE_MS: Setting = Setting::value("NOTIFICATION_RETRY_BASE_MS", "1000");
pub const ACK_WAIT_SECS: Setting = Setting::value("NOTIFICATION_ACK_WAIT_SECS", "30");
pub const PUSH_TIMEOUT_MS: Setting = Setting::value("NOTIFICATION_PUSH_TIMEOUT_MS", "10000");
pub const ALLOW_HTTP_ENDPOINTS: Setting = Setting::value("NOTIFICATION_ALLOW_HTTP_ENDPOINTS", "false");
pub const ALLOW_PRIVATE_ENDPOINTS: Setting = Setting::value("NOTIFICATION_ALLOW_PRIVATE_ENDPOINTS", "false");
pub const INTAKE_ATTEMPTS: Setting = Setting::value("NOTIFICATION_INTAKE_ATTEMPTS", "10");
pub const VAPID_SUBJECT: Setting = Setting::value("NOTIFICATION_VAPID_SUBJECT", "mailto:admin@localhost");

/// Every variable notification reads: its own, the CHAT stream's and telemetry's.
pub const SETTINGS: &[&[Setting]] = &[
    &[
        GRPC_ADDR,
        METRICS_ADDR,
        shared::NATS_URL,
        shared::AUTH_GRPC_URL,
        shared::HISTORY_GRPC_URL,
        COALESCE_MS,
        PUSH_ATTEMPTS,
        RETRY_BASE_MS,
        ACK_WAIT_SECS,
        PUSH_TIMEOUT_MS,
        ALLOW_HTTP_ENDPOINTS,
        ALLOW_PRIVATE_ENDPOINTS,
        INTAKE_ATTEMPTS,
        VAPID_SUBJECT,
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
            nats_url: shared::NATS_URL.string(env),
            auth_url: shared::AUTH_GRPC_URL.string(env),
            history_url: shared::HISTORY_GRPC_URL.string(env),
            stream: StreamSettings::from_lookup(env)?,
            coalesce: Duration::from_millis(COALESCE_MS.parse(env)?),
            push_attempts: PUSH_ATTEMPTS.parse(env)?,
            retry_base: Duration::from_millis(RETRY_BASE_MS.parse(env)?),
            ack_wait: Duration::from_secs(ACK_WAIT_SECS.parse(env)?),
            push_timeout: Duration::from_millis(PUSH_TIMEOUT_MS.parse(env)?),
            allow_http_endpoints: ALLOW_HTTP_ENDPOINTS.parse(env)?,
            allow_private_endpoints: ALLOW_PRIVATE_ENDPOINTS.parse(env)?,
            intake_attempts: INTAKE_ATTEMPTS.parse(env)?,
            vapid_subject: VAPID_SUBJECT.string(env),
        })
    }

    /// The defaults, on ports the system picks, with explicit dependencies
    /// (tests use this).
    pub fn local(nats_url: &str, auth_url: &str, history_url: &str) -> Self {
        let defaults = Self::from_lookup(&|_| None).expect("notification's defaults are valid");
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            nats_url: nats_url.to_owned(),
            auth_url: auth_url.to_owned(),
            history_url: history_url.to_owned(),
            ..defaults
        }
    }
}
