//! Gateway configuration from the environment.

use std::time::Duration;

use chat_common::config::{self, ConfigError};
use chat_common::nats::StreamSettings;
use chat_common::rate_limit::Rate;

use crate::brakes::defaults;

#[derive(Debug, Clone)]
pub struct Config {
    /// `GATEWAY_HTTP_ADDR`, default `127.0.0.1:8080`: HTTP API and WebSocket.
    pub http_addr: String,
    /// `GATEWAY_METRICS_ADDR`, default `127.0.0.1:9100`: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// `AUTH_GRPC_URL`, default `127.0.0.1:50051`.
    pub auth_url: String,
    /// `HISTORY_GRPC_URL`, default `127.0.0.1:50052`.
    pub history_url: String,
    /// `PRESENCE_GRPC_URL`, default `127.0.0.1:50053`.
    pub presence_url: String,
    /// `NOTIFICATION_GRPC_URL`, default `127.0.0.1:50054`.
    pub notification_url: String,
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    pub stream: StreamSettings,
    /// `JWT_ISSUER` and `JWT_AUDIENCE`: what access tokens must carry.
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// `GATEWAY_ALLOWED_ORIGINS`: comma-separated origins allowed to open a
    /// WebSocket when the browser sends `Origin`.
    pub allowed_origins: Vec<String>,
    /// `GATEWAY_MAX_FRAME_BYTES`: larger client frames close the socket with 1009.
    pub max_frame_bytes: usize,
    /// `GATEWAY_SOCKET_QUEUE`: frames queued for one socket before it is closed as too slow (4408).
    pub socket_queue: usize,
    /// How long a socket may stay open without authenticating.
    pub auth_timeout: Duration,
    /// `GATEWAY_PING_INTERVAL_SECS` (default 10): how often the server pings each socket.
    pub ping_interval: Duration,
    /// `GATEWAY_IDLE_TIMEOUT_SECS` (default 30): a socket from which nothing,
    /// not even a pong, has arrived for this long is half-open and is closed.
    pub idle_timeout: Duration,
    /// `GATEWAY_WRITE_TIMEOUT_SECS` (default 30): a write to a socket that
    /// has not completed after this long (the client stopped reading, and the
    /// kernel's buffers towards it are full) drops the socket.
    pub write_timeout: Duration,
    /// `GATEWAY_PRESENCE_TTL_SECS` (default 15): this gateway's heartbeat key
    /// lives this long without a refresh (refreshed every third of it). If the
    /// gateway dies, its users go offline this long plus presence's grace period later.
    pub presence_ttl: Duration,
    /// `ACCESS_TOKEN_TTL_SECS` (as auth): how long a revocation must be remembered.
    pub access_token_ttl: Duration,
    /// `GATEWAY_TRUST_FORWARDED_FOR`: take the client address from the last
    /// `X-Forwarded-For` entry (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// `GATEWAY_SEND_RATE_PER_SOCKET`, `<burst>/<seconds per refill>`: messages one socket sends.
    pub send_rate_per_socket: Rate,
    /// `GATEWAY_SEND_RATE_PER_USER`: messages one user sends through this gateway (sockets and HTTP).
    pub send_rate_per_user: Rate,
    /// `GATEWAY_FRAME_RATE_PER_SOCKET`: frames of any kind from one socket; beyond it, close 4429.
    pub frame_rate_per_socket: Rate,
    /// `GATEWAY_SYNC_RATE_PER_SOCKET`: `sync` frames from one socket.
    pub sync_rate_per_socket: Rate,
    /// `GATEWAY_CONVERSATION_RATE_PER_USER`: conversations one user starts.
    pub conversation_rate_per_user: Rate,
    /// `GATEWAY_MAX_SOCKETS_PER_USER`: open sockets of one user on this gateway.
    pub max_sockets_per_user: usize,
    /// `GATEWAY_MAX_SOCKETS`: open sockets on this gateway; beyond, 503 at the upgrade.
    pub max_sockets: usize,
    /// `GATEWAY_HEADER_TIMEOUT_SECS` (default 10): a request's headers must arrive within this.
    pub header_timeout: Duration,
    /// `GATEWAY_BODY_TIMEOUT_SECS` (default 10): a request's body must arrive within this.
    pub body_timeout: Duration,
}

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let http_addr = config::string("GATEWAY_HTTP_ADDR", "127.0.0.1:8080");
        let port = http_addr.rsplit(':').next().unwrap_or("8080").to_owned();
        Ok(Self {
            auth_url: config::string("AUTH_GRPC_URL", "127.0.0.1:50051"),
            history_url: config::string("HISTORY_GRPC_URL", "127.0.0.1:50052"),
            presence_url: config::string("PRESENCE_GRPC_URL", "127.0.0.1:50053"),
            metrics_addr: config::string("GATEWAY_METRICS_ADDR", "127.0.0.1:9100"),
            notification_url: config::string("NOTIFICATION_GRPC_URL", "127.0.0.1:50054"),
            nats_url: config::string("NATS_URL", "nats://127.0.0.1:4222"),
            stream: StreamSettings::from_env()?,
            jwt_issuer: config::string("JWT_ISSUER", "chat-auth"),
            jwt_audience: config::string("JWT_AUDIENCE", "chat"),
            allowed_origins: config::list(
                "GATEWAY_ALLOWED_ORIGINS",
                &format!("http://localhost:{port},http://127.0.0.1:{port}"),
            ),
            max_frame_bytes: config::parse("GATEWAY_MAX_FRAME_BYTES", 128 * 1024)?,
            socket_queue: config::parse("GATEWAY_SOCKET_QUEUE", 1024)?,
            auth_timeout: Duration::from_secs(config::parse("GATEWAY_AUTH_TIMEOUT_SECS", 10)?),
            ping_interval: Duration::from_secs(config::parse("GATEWAY_PING_INTERVAL_SECS", 10)?),
            idle_timeout: Duration::from_secs(config::parse("GATEWAY_IDLE_TIMEOUT_SECS", 30)?),
            write_timeout: Duration::from_secs(config::parse("GATEWAY_WRITE_TIMEOUT_SECS", 30)?),
            presence_ttl: Duration::from_secs(config::parse("GATEWAY_PRESENCE_TTL_SECS", 15)?),
            access_token_ttl: Duration::from_secs(config::parse("ACCESS_TOKEN_TTL_SECS", 900)?),
            trust_forwarded_for: config::parse("GATEWAY_TRUST_FORWARDED_FOR", false)?,
            send_rate_per_socket: config::parse("GATEWAY_SEND_RATE_PER_SOCKET", defaults::SEND_PER_SOCKET)?,
            send_rate_per_user: config::parse("GATEWAY_SEND_RATE_PER_USER", defaults::SEND_PER_USER)?,
            frame_rate_per_socket: config::parse("GATEWAY_FRAME_RATE_PER_SOCKET", defaults::FRAME_PER_SOCKET)?,
            sync_rate_per_socket: config::parse("GATEWAY_SYNC_RATE_PER_SOCKET", defaults::SYNC_PER_SOCKET)?,
            conversation_rate_per_user: config::parse(
                "GATEWAY_CONVERSATION_RATE_PER_USER",
                defaults::CONVERSATION_PER_USER,
            )?,
            max_sockets_per_user: config::parse("GATEWAY_MAX_SOCKETS_PER_USER", defaults::MAX_SOCKETS_PER_USER)?,
            max_sockets: config::parse("GATEWAY_MAX_SOCKETS", defaults::MAX_SOCKETS)?,
            header_timeout: Duration::from_secs(config::parse("GATEWAY_HEADER_TIMEOUT_SECS", 10)?),
            body_timeout: Duration::from_secs(config::parse("GATEWAY_BODY_TIMEOUT_SECS", 10)?),
            http_addr,
        })
    }

    /// Defaults for one machine with explicit dependencies (tests use this).
    pub fn local(services: [&str; 4], nats_url: &str) -> Self {
        let [auth_url, history_url, presence_url, notification_url] = services;
        Self {
            presence_url: presence_url.to_owned(),
            notification_url: notification_url.to_owned(),
            http_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            auth_url: auth_url.to_owned(),
            history_url: history_url.to_owned(),
            nats_url: nats_url.to_owned(),
            stream: StreamSettings::default(),
            jwt_issuer: "chat-auth".to_owned(),
            jwt_audience: "chat".to_owned(),
            allowed_origins: vec!["http://localhost:8080".to_owned()],
            max_frame_bytes: 128 * 1024,
            socket_queue: 1024,
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            presence_ttl: Duration::from_secs(15),
            access_token_ttl: Duration::from_secs(900),
            trust_forwarded_for: false,
            send_rate_per_socket: defaults::SEND_PER_SOCKET,
            send_rate_per_user: defaults::SEND_PER_USER,
            frame_rate_per_socket: defaults::FRAME_PER_SOCKET,
            sync_rate_per_socket: defaults::SYNC_PER_SOCKET,
            conversation_rate_per_user: defaults::CONVERSATION_PER_USER,
            max_sockets_per_user: defaults::MAX_SOCKETS_PER_USER,
            max_sockets: defaults::MAX_SOCKETS,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}
