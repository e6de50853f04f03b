//! Gateway configuration from the environment: the variables in [`SETTINGS`].

use std::time::Duration;

use chat_common::config::{self, ConfigError, Env, Setting, shared};
use chat_common::nats::StreamSettings;
use chat_common::rate_limit::Rate;

/// The gateway's configuration; each field is read from the [`Setting`] named
/// beside it, which holds the variable's name and default.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`HTTP_ADDR`]: HTTP API and WebSocket.
    pub http_addr: String,
    /// [`METRICS_ADDR`]: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// [`shared::AUTH_GRPC_URL`].
    pub auth_url: String,
    /// [`shared::HISTORY_GRPC_URL`].
    pub history_url: String,
    /// [`shared::PRESENCE_GRPC_URL`].
    pub presence_url: String,
    /// [`shared::NOTIFICATION_GRPC_URL`].
    pub notification_url: String,
    /// [`shared::MEDIA_GRPC_URL`].
    pub media_url: String,
    /// [`shared::NATS_URL`].
    pub nats_url: String,
    /// [`StreamSettings::SETTINGS`].
    pub stream: StreamSettings,
    /// [`shared::JWT_ISSUER`] and [`shared::JWT_AUDIENCE`]: what access tokens must carry.
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// [`ALLOWED_ORIGINS`]: origins allowed to open a WebSocket when the
    /// browser sends `Origin`.
    pub allowed_origins: Vec<String>,
    /// [`MAX_FRAME_BYTES`]: larger client frames close the socket with 1009.
    pub max_frame_bytes: usize,
    /// [`SOCKET_QUEUE`]: frames queued for one socket before it is closed as too slow (4408).
    pub socket_queue: usize,
    /// [`AUTH_TIMEOUT_SECS`]: how long a socket may stay open without authenticating.
    pub auth_timeout: Duration,
    /// [`PING_INTERVAL_SECS`]: how often the server pings each socket.
    pub ping_interval: Duration,
    /// [`IDLE_TIMEOUT_SECS`]: a socket from which nothing, not even a pong,
    /// has arrived for this long is half-open and is closed.
    pub idle_timeout: Duration,
    /// [`WRITE_TIMEOUT_SECS`]: a write to a socket that has not completed
    /// after this long (the client stopped reading, and the kernel's buffers
    /// towards it are full) drops the socket.
    pub write_timeout: Duration,
    /// [`PRESENCE_TTL_SECS`]: this gateway's heartbeat key lives this long
    /// without a refresh (refreshed every third of it). If the gateway dies,
    /// its users go offline this long plus presence's grace period later.
    pub presence_ttl: Duration,
    /// [`shared::ACCESS_TOKEN_TTL_SECS`] (as auth): how long a revocation must be remembered.
    pub access_token_ttl: Duration,
    /// [`TRUST_FORWARDED_FOR`]: take the client address from the last
    /// `X-Forwarded-For` entry (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// [`SEND_RATE_PER_SOCKET`]: messages one socket sends.
    pub send_rate_per_socket: Rate,
    /// [`SEND_RATE_PER_USER`]: messages one user sends through this gateway (sockets and HTTP).
    pub send_rate_per_user: Rate,
    /// [`FRAME_RATE_PER_SOCKET`]: frames of any kind from one socket; beyond it, close 4429.
    pub frame_rate_per_socket: Rate,
    /// [`SYNC_RATE_PER_SOCKET`]: `sync` frames from one socket.
    pub sync_rate_per_socket: Rate,
    /// [`CONVERSATION_RATE_PER_USER`]: conversations one user starts.
    pub conversation_rate_per_user: Rate,
    /// [`SAFETY_RATE_PER_USER`]: blocks, unblocks, mutes, unmutes and reports of one user.
    pub safety_rate_per_user: Rate,
    /// [`MAX_BLOCKS_PER_USER`]: users one user may have blocked at once.
    pub max_blocks_per_user: usize,
    /// [`MAX_SOCKETS_PER_USER`]: open sockets of one user on this gateway.
    pub max_sockets_per_user: usize,
    /// [`MAX_SOCKETS`]: open sockets on this gateway; beyond, 503 at the upgrade.
    pub max_sockets: usize,
    /// [`HEADER_TIMEOUT_SECS`]: a request's headers must arrive within this.
    pub header_timeout: Duration,
    /// [`BODY_TIMEOUT_SECS`]: a request's body must arrive within this.
    pub body_timeout: Duration,
}

pub const HTTP_ADDR: Setting = Setting::listen("GATEWAY_HTTP_ADDR", "127.0.0.1:8080");
pub const METRICS_ADDR: Setting = Setting::metrics("GATEWAY_METRICS_ADDR", "127.0.0.1:9100");
/// Comma-separated; `{port}` in the default is [`HTTP_ADDR`]'s port.
pub const ALLOWED_ORIGINS: Setting =
    Setting::value("GATEWAY_ALLOWED_ORIGINS", "http://localhost:{port},http://127.0.0.1:{port}");
pub const MAX_FRAME_BYTES: Setting = Setting::value("GATEWAY_MAX_FRAME_BYTES", "131072");
pub const SOCKET_QUEUE: Setting = Setting::value("GATEWAY_SOCKET_QUEUE", "1024");
pub const AUTH_TIMEOUT_SECS: Setting = Setting::value("GATEWAY_AUTH_TIMEOUT_SECS", "10");
pub const PING_INTERVAL_SECS: Setting = Setting::value("GATEWAY_PING_INTERVAL_SECS", "10");
pub const IDLE_TIMEOUT_SECS: Setting = Setting::value("GATEWAY_IDLE_TIMEOUT_SECS", "30");
pub const WRITE_TIMEOUT_SECS: Setting = Setting::value("GATEWAY_WRITE_TIMEOUT_SECS", "30");
pub const PRESENCE_TTL_SECS: Setting = Setting::value("GATEWAY_PRESENCE_TTL_SECS", "15");
pub const TRUST_FORWARDED_FOR: Setting = Setting::value("GATEWAY_TRUST_FORWARDED_FOR", "false");
// The brakes (docs/security.md): rates a person or a well-behaved bot never
// meets, `<burst>/<seconds per refill>`, and counts.
/// Bursts of 400, then 200 a second.
pub const SEND_RATE_PER_SOCKET: Setting = Setting::value("GATEWAY_SEND_RATE_PER_SOCKET", "400/0.005");
/// Bursts of 800, then 400 a second.
pub const SEND_RATE_PER_USER: Setting = Setting::value("GATEWAY_SEND_RATE_PER_USER", "800/0.0025");
/// Bursts of 2,000, then 1,000 a second.
pub const FRAME_RATE_PER_SOCKET: Setting = Setting::value("GATEWAY_FRAME_RATE_PER_SOCKET", "2000/0.001");
pub const SYNC_RATE_PER_SOCKET: Setting = Setting::value("GATEWAY_SYNC_RATE_PER_SOCKET", "10/1");
pub const CONVERSATION_RATE_PER_USER: Setting = Setting::value("GATEWAY_CONVERSATION_RATE_PER_USER", "30/2");
/// Bursts of 60, then one a second.
pub const SAFETY_RATE_PER_USER: Setting = Setting::value("GATEWAY_SAFETY_RATE_PER_USER", "60/1");
/// Every gateway, notification instance and history holds every block.
pub const MAX_BLOCKS_PER_USER: Setting = Setting::value("GATEWAY_MAX_BLOCKS_PER_USER", "1000");
pub const MAX_SOCKETS_PER_USER: Setting = Setting::value("GATEWAY_MAX_SOCKETS_PER_USER", "64");
pub const MAX_SOCKETS: Setting = Setting::value("GATEWAY_MAX_SOCKETS", "50000");
pub const HEADER_TIMEOUT_SECS: Setting = Setting::value("GATEWAY_HEADER_TIMEOUT_SECS", "10");
pub const BODY_TIMEOUT_SECS: Setting = Setting::value("GATEWAY_BODY_TIMEOUT_SECS", "10");

/// Every variable the gateway reads: its own, the CHAT stream's and telemetry's.
pub const SETTINGS: &[&[Setting]] = &[
    &[
        HTTP_ADDR,
        METRICS_ADDR,
        shared::AUTH_GRPC_URL,
        shared::HISTORY_GRPC_URL,
        shared::PRESENCE_GRPC_URL,
        shared::NOTIFICATION_GRPC_URL,
        shared::MEDIA_GRPC_URL,
        shared::NATS_URL,
        shared::JWT_ISSUER,
        shared::JWT_AUDIENCE,
        shared::ACCESS_TOKEN_TTL_SECS,
        ALLOWED_ORIGINS,
        MAX_FRAME_BYTES,
        SOCKET_QUEUE,
        AUTH_TIMEOUT_SECS,
        PING_INTERVAL_SECS,
        IDLE_TIMEOUT_SECS,
        WRITE_TIMEOUT_SECS,
        PRESENCE_TTL_SECS,
        TRUST_FORWARDED_FOR,
        SEND_RATE_PER_SOCKET,
        SEND_RATE_PER_USER,
        FRAME_RATE_PER_SOCKET,
        SYNC_RATE_PER_SOCKET,
        CONVERSATION_RATE_PER_USER,
        SAFETY_RATE_PER_USER,
        MAX_BLOCKS_PER_USER,
        MAX_SOCKETS_PER_USER,
        MAX_SOCKETS,
        HEADER_TIMEOUT_SECS,
        BODY_TIMEOUT_SECS,
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
        let http_addr = HTTP_ADDR.string(env);
        let port = http_addr.rsplit(':').next().unwrap_or_default();
        let allowed_origins =
            ALLOWED_ORIGINS.get(env).unwrap_or_else(|| ALLOWED_ORIGINS.default.replace("{port}", port));
        let secs = |setting: Setting| setting.parse(env).map(Duration::from_secs);
        Ok(Self {
            metrics_addr: METRICS_ADDR.string(env),
            auth_url: shared::AUTH_GRPC_URL.string(env),
            history_url: shared::HISTORY_GRPC_URL.string(env),
            presence_url: shared::PRESENCE_GRPC_URL.string(env),
            notification_url: shared::NOTIFICATION_GRPC_URL.string(env),
            media_url: shared::MEDIA_GRPC_URL.string(env),
            nats_url: shared::NATS_URL.string(env),
            stream: StreamSettings::from_lookup(env)?,
            jwt_issuer: shared::JWT_ISSUER.string(env),
            jwt_audience: shared::JWT_AUDIENCE.string(env),
            allowed_origins: config::split_list(&allowed_origins),
            max_frame_bytes: MAX_FRAME_BYTES.parse(env)?,
            socket_queue: SOCKET_QUEUE.parse(env)?,
            auth_timeout: secs(AUTH_TIMEOUT_SECS)?,
            ping_interval: secs(PING_INTERVAL_SECS)?,
            idle_timeout: secs(IDLE_TIMEOUT_SECS)?,
            write_timeout: secs(WRITE_TIMEOUT_SECS)?,
            presence_ttl: secs(PRESENCE_TTL_SECS)?,
            access_token_ttl: secs(shared::ACCESS_TOKEN_TTL_SECS)?,
            trust_forwarded_for: TRUST_FORWARDED_FOR.parse(env)?,
            send_rate_per_socket: SEND_RATE_PER_SOCKET.parse(env)?,
            send_rate_per_user: SEND_RATE_PER_USER.parse(env)?,
            frame_rate_per_socket: FRAME_RATE_PER_SOCKET.parse(env)?,
            sync_rate_per_socket: SYNC_RATE_PER_SOCKET.parse(env)?,
            conversation_rate_per_user: CONVERSATION_RATE_PER_USER.parse(env)?,
            safety_rate_per_user: SAFETY_RATE_PER_USER.parse(env)?,
            max_blocks_per_user: MAX_BLOCKS_PER_USER.parse(env)?,
            max_sockets_per_user: MAX_SOCKETS_PER_USER.parse(env)?,
            max_sockets: MAX_SOCKETS.parse(env)?,
            header_timeout: secs(HEADER_TIMEOUT_SECS)?,
            body_timeout: secs(BODY_TIMEOUT_SECS)?,
            http_addr,
        })
    }

    /// The defaults, on ports the system picks, with explicit dependencies
    /// (tests use this).
    pub fn local(services: [&str; 5], nats_url: &str) -> Self {
        let [auth_url, history_url, presence_url, notification_url, media_url] = services;
        let defaults = Self::from_lookup(&|_| None).expect("the gateway's defaults are valid");
        Self {
            http_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            auth_url: auth_url.to_owned(),
            history_url: history_url.to_owned(),
            presence_url: presence_url.to_owned(),
            notification_url: notification_url.to_owned(),
            media_url: media_url.to_owned(),
            nats_url: nats_url.to_owned(),
            allowed_origins: vec!["http://localhost:8080".to_owned()],
            ..defaults
        }
    }
}
