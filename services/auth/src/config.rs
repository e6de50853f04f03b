//! Auth configuration from the environment.

use chat_common::config::{self, ConfigError};

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_GRPC_ADDR`, default `127.0.0.1:50051`.
    pub grpc_addr: String,
    /// `AUTH_DATABASE_URL`, default `sqlite://data/auth.db`.
    pub database_url: String,
    pub database_max_connections: u32,
    /// `JWT_ISSUER`, the `iss` claim.
    pub issuer: String,
    /// `JWT_AUDIENCE`, the `aud` claim.
    pub audience: String,
    /// `ACCESS_TOKEN_TTL_SECS`, default 900 (minutes, not hours).
    pub access_token_ttl_secs: i64,
    /// `REFRESH_TOKEN_TTL_SECS`, default 30 days.
    pub refresh_token_ttl_secs: i64,
}

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_addr: config::string("AUTH_GRPC_ADDR", "127.0.0.1:50051"),
            database_url: config::string("AUTH_DATABASE_URL", "sqlite://data/auth.db"),
            database_max_connections: config::parse("AUTH_DATABASE_MAX_CONNECTIONS", 8)?,
            issuer: config::string("JWT_ISSUER", "chat-auth"),
            audience: config::string("JWT_AUDIENCE", "chat"),
            access_token_ttl_secs: config::parse("ACCESS_TOKEN_TTL_SECS", 900)?,
            refresh_token_ttl_secs: config::parse("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
        })
    }

    /// Defaults for one machine, with an explicit database (tests use this).
    pub fn local(database_url: &str) -> Self {
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            database_url: database_url.to_owned(),
            database_max_connections: 4,
            issuer: "chat-auth".to_owned(),
            audience: "chat".to_owned(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
        }
    }
}
