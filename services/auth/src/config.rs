//! Auth configuration from the environment.

use std::time::Duration;

use chat_common::config::{self, ConfigError};

use chat_common::rate_limit::Rate;

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_GRPC_ADDR`, default `127.0.0.1:50051`.
    pub grpc_addr: String,
    /// `AUTH_METRICS_ADDR`, default `127.0.0.1:9101`: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// `AUTH_DATABASE_URL`, default `sqlite://data/auth.db`.
    pub database_url: String,
    pub database_max_connections: u32,
    /// `NATS_URL`, default `nats://127.0.0.1:4222`: revocations and key changes.
    pub nats_url: String,
    /// `CHAT_STREAM_REPLICAS`: replicas of the revocation bucket.
    pub replicas: usize,
    /// `JWT_ISSUER`, the `iss` claim.
    pub issuer: String,
    /// `JWT_AUDIENCE`, the `aud` claim.
    pub audience: String,
    /// `ACCESS_TOKEN_TTL_SECS`, default 900 (minutes, not hours).
    pub access_token_ttl_secs: i64,
    /// `REFRESH_TOKEN_TTL_SECS`, default 30 days.
    pub refresh_token_ttl_secs: i64,
    /// `AUTH_LOGIN_RATE_PER_ADDRESS`, default `30/2`: login attempts per client address.
    pub login_per_address: Rate,
    /// `AUTH_LOGIN_FAILURE_RATE_PER_USERNAME`, default `5/30`: failed logins per username.
    pub login_failures_per_username: Rate,
    /// `AUTH_REGISTER_RATE_PER_ADDRESS`, default `10/60`: registrations per client address.
    pub register_per_address: Rate,
    /// `AUTH_HASH_CONCURRENCY`, default `0` (the number of CPUs): password
    /// hashes computed at once, 19 MiB of memory each.
    pub hash_concurrency: usize,
    /// `AUTH_HASH_QUEUE`, default 64: registrations and logins that may wait
    /// for a hashing thread; more are refused at once with 429.
    pub hash_queue: usize,
}

const LOGIN_PER_ADDRESS: Rate = Rate { burst: 30, refill: Duration::from_secs(2) };
const LOGIN_FAILURES_PER_USERNAME: Rate = Rate { burst: 5, refill: Duration::from_secs(30) };
const REGISTER_PER_ADDRESS: Rate = Rate { burst: 10, refill: Duration::from_secs(60) };
const HASH_QUEUE: usize = 64;

/// One hashing thread per CPU: argon2 is CPU-bound, so more only queue inside the kernel.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self {
            grpc_addr: config::string("AUTH_GRPC_ADDR", "127.0.0.1:50051"),
            metrics_addr: config::string("AUTH_METRICS_ADDR", "127.0.0.1:9101"),
            database_url: config::string("AUTH_DATABASE_URL", "sqlite://data/auth.db"),
            database_max_connections: config::parse("AUTH_DATABASE_MAX_CONNECTIONS", 8)?,
            nats_url: config::string("NATS_URL", "nats://127.0.0.1:4222"),
            replicas: config::parse("CHAT_STREAM_REPLICAS", 1)?,
            issuer: config::string("JWT_ISSUER", "chat-auth"),
            audience: config::string("JWT_AUDIENCE", "chat"),
            access_token_ttl_secs: config::parse("ACCESS_TOKEN_TTL_SECS", 900)?,
            refresh_token_ttl_secs: config::parse("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
            login_per_address: config::parse("AUTH_LOGIN_RATE_PER_ADDRESS", LOGIN_PER_ADDRESS)?,
            login_failures_per_username: config::parse(
                "AUTH_LOGIN_FAILURE_RATE_PER_USERNAME",
                LOGIN_FAILURES_PER_USERNAME,
            )?,
            register_per_address: config::parse("AUTH_REGISTER_RATE_PER_ADDRESS", REGISTER_PER_ADDRESS)?,
            hash_concurrency: config::parse("AUTH_HASH_CONCURRENCY", cpus())?,
            hash_queue: config::parse("AUTH_HASH_QUEUE", HASH_QUEUE)?,
        };
        if config.hash_concurrency == 0 {
            return Err(ConfigError { name: "AUTH_HASH_CONCURRENCY".into(), reason: "must be at least 1".into() });
        }
        if config.access_token_ttl_secs < 30 {
            return Err(ConfigError {
                name: "ACCESS_TOKEN_TTL_SECS".into(),
                reason: "must be at least 30 seconds".into(),
            });
        }
        Ok(config)
    }

    /// Defaults for one machine, with explicit dependencies (tests use this).
    pub fn local(database_url: &str, nats_url: &str) -> Self {
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            database_url: database_url.to_owned(),
            database_max_connections: 4,
            nats_url: nats_url.to_owned(),
            replicas: 1,
            issuer: "chat-auth".to_owned(),
            audience: "chat".to_owned(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            login_per_address: LOGIN_PER_ADDRESS,
            login_failures_per_username: LOGIN_FAILURES_PER_USERNAME,
            register_per_address: REGISTER_PER_ADDRESS,
            hash_concurrency: cpus(),
            hash_queue: HASH_QUEUE,
        }
    }
}
