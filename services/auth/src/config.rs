//! Auth configuration from the environment: the variables in [`SETTINGS`].

use chat_common::config::{self, ConfigError, Env, Peer, Setting, shared};
use chat_common::nats::StreamSettings;
use chat_common::rate_limit::Rate;

/// Auth's configuration; each field is read from the [`Setting`] named beside
/// it, which holds the variable's name and default.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`GRPC_ADDR`].
    pub grpc_addr: String,
    /// [`METRICS_ADDR`]: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// [`DATABASE_URL`]: a `sqlite:` file or a `postgres://` URL.
    pub database_url: String,
    /// [`DATABASE_MAX_CONNECTIONS`].
    pub database_max_connections: u32,
    /// [`shared::NATS_URL`]: revocations and key changes.
    pub nats_url: String,
    /// [`StreamSettings::REPLICAS`]: replicas of the revocation bucket.
    pub replicas: usize,
    /// [`shared::JWT_ISSUER`], the `iss` claim.
    pub issuer: String,
    /// [`shared::JWT_AUDIENCE`], the `aud` claim.
    pub audience: String,
    /// [`shared::ACCESS_TOKEN_TTL_SECS`] (minutes, not hours); at least 30.
    pub access_token_ttl_secs: i64,
    /// [`REFRESH_TOKEN_TTL_SECS`] (30 days).
    pub refresh_token_ttl_secs: i64,
    /// [`LOGIN_RATE_PER_ADDRESS`]: login attempts per client address.
    pub login_per_address: Rate,
    /// [`LOGIN_FAILURE_RATE_PER_USERNAME`]: failed logins per username.
    pub login_failures_per_username: Rate,
    /// [`REGISTER_RATE_PER_ADDRESS`]: registrations per client address.
    pub register_per_address: Rate,
    /// [`HASH_CONCURRENCY`]: password hashes computed at once, 19 MiB of
    /// memory each. Never 0 here: 0 in the variable means one per CPU.
    pub hash_concurrency: usize,
    /// [`HASH_QUEUE`]: registrations and logins that may wait for a hashing
    /// thread; more are refused at once with 429.
    pub hash_queue: usize,
}

pub const GRPC_ADDR: Setting = Setting::listen("AUTH_GRPC_ADDR", "127.0.0.1:50051");
pub const METRICS_ADDR: Setting = Setting::metrics("AUTH_METRICS_ADDR", "127.0.0.1:9101");
pub const DATABASE_URL: Setting = Setting::peer("AUTH_DATABASE_URL", "sqlite://data/auth.db", Peer::Database);
pub const DATABASE_MAX_CONNECTIONS: Setting = Setting::value("AUTH_DATABASE_MAX_CONNECTIONS", "8");
pub const REFRESH_TOKEN_TTL_SECS: Setting = Setting::value("REFRESH_TOKEN_TTL_SECS", "2592000");
/// `<burst>/<seconds per refill>`, as every rate.
pub const LOGIN_RATE_PER_ADDRESS: Setting = Setting::value("AUTH_LOGIN_RATE_PER_ADDRESS", "30/2");
pub const LOGIN_FAILURE_RATE_PER_USERNAME: Setting = Setting::value("AUTH_LOGIN_FAILURE_RATE_PER_USERNAME", "5/30");
pub const REGISTER_RATE_PER_ADDRESS: Setting = Setting::value("AUTH_REGISTER_RATE_PER_ADDRESS", "10/60");
/// 0: one per CPU.
pub const HASH_CONCURRENCY: Setting = Setting::value("AUTH_HASH_CONCURRENCY", "0");
pub const HASH_QUEUE: Setting = Setting::value("AUTH_HASH_QUEUE", "64");

/// Every variable auth reads: its own and telemetry's.
pub const SETTINGS: &[&[Setting]] = &[
    &[
        GRPC_ADDR,
        METRICS_ADDR,
        DATABASE_URL,
        DATABASE_MAX_CONNECTIONS,
        shared::NATS_URL,
        StreamSettings::REPLICAS,
        shared::JWT_ISSUER,
        shared::JWT_AUDIENCE,
        shared::ACCESS_TOKEN_TTL_SECS,
        REFRESH_TOKEN_TTL_SECS,
        LOGIN_RATE_PER_ADDRESS,
        LOGIN_FAILURE_RATE_PER_USERNAME,
        REGISTER_RATE_PER_ADDRESS,
        HASH_CONCURRENCY,
        HASH_QUEUE,
    ],
    chat_common::telemetry::SETTINGS,
];

/// One hashing thread per CPU: argon2 is CPU-bound, so more only queue inside the kernel.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

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
        let config = Self {
            grpc_addr: GRPC_ADDR.string(env),
            metrics_addr: METRICS_ADDR.string(env),
            database_url: DATABASE_URL.string(env),
            database_max_connections: DATABASE_MAX_CONNECTIONS.parse(env)?,
            nats_url: shared::NATS_URL.string(env),
            replicas: StreamSettings::REPLICAS.parse(env)?,
            issuer: shared::JWT_ISSUER.string(env),
            audience: shared::JWT_AUDIENCE.string(env),
            access_token_ttl_secs: shared::ACCESS_TOKEN_TTL_SECS.parse(env)?,
            refresh_token_ttl_secs: REFRESH_TOKEN_TTL_SECS.parse(env)?,
            login_per_address: LOGIN_RATE_PER_ADDRESS.parse(env)?,
            login_failures_per_username: LOGIN_FAILURE_RATE_PER_USERNAME.parse(env)?,
            register_per_address: REGISTER_RATE_PER_ADDRESS.parse(env)?,
            hash_concurrency: match HASH_CONCURRENCY.parse(env)? {
                0 => cpus(),
                threads => threads,
            },
            hash_queue: HASH_QUEUE.parse(env)?,
        };
        if config.access_token_ttl_secs < 30 {
            return Err(ConfigError::invalid(shared::ACCESS_TOKEN_TTL_SECS.name, "must be at least 30 seconds"));
        }
        Ok(config)
    }

    /// The defaults, on ports the system picks, with explicit dependencies
    /// and a small pool (tests use this).
    pub fn local(database_url: &str, nats_url: &str) -> Self {
        let defaults = Self::from_lookup(&|_| None).expect("auth's defaults are valid");
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

    #[test]
    fn a_hash_concurrency_of_zero_means_one_thread_per_cpu() {
        let env = |name: &str| (name == HASH_CONCURRENCY.name).then(|| "0".to_owned());
        assert_eq!(Config::from_lookup(&env).unwrap().hash_concurrency, cpus());
    }

    #[test]
    fn an_access_token_lifetime_under_30_seconds_is_refused() {
        let env = |name: &str| (name == shared::ACCESS_TOKEN_TTL_SECS.name).then(|| "5".to_owned());
        let error = Config::from_lookup(&env).unwrap_err();
        assert_eq!(error.name, "ACCESS_TOKEN_TTL_SECS");
    }
}
