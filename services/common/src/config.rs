//! Configuration from environment variables, each declared once.
//!
//! A service lists what it reads as a table of [`Setting`]s (name, default,
//! kind) in its `config` module, and its parsing reads through those entries,
//! so a variable's name and default are written in one place. The deploy check
//! (`tests/tests/deploy.rs`) reads the same tables to know which variables a
//! container must set: a listen address ([`Kind::Listen`], [`Kind::Metrics`])
//! must bind `0.0.0.0` there, and a [`Kind::Peer`] address whose default is
//! loopback must be set.
//!
//! Values come from an [`Env`]: the process environment in production
//! ([`process_env`]), a map in tests.

use std::str::FromStr;

/// A configuration value that is present but unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
    /// Why the value did not parse, when a parser said.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ConfigError {
    /// A value that parses but breaks a rule of its own (`reason`).
    pub fn invalid(name: &str, reason: impl Into<String>) -> Self {
        Self { name: name.to_owned(), reason: reason.into(), source: None }
    }
}

/// Where values are looked up: a variable's value, or `None` when unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as an [`Env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What a setting's value is, for the deploy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The address this service serves its API on (`host:port`): what
    /// other services and clients call.
    Listen,
    /// The address this service serves its metrics on (`host:port`).
    Metrics,
    /// The address of another part of the system that this service calls.
    Peer(Peer),
    /// Anything else: a number, a flag, a name, a rate.
    Value,
}

/// The part of the system a [`Kind::Peer`] setting names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Auth,
    History,
    Presence,
    Notification,
    Media,
    Nats,
    Database,
    TraceCollector,
}

/// One environment variable a service reads, with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    /// The value used when the variable is unset or blank; it must parse as
    /// the setting's type (each service's tests parse an empty environment).
    pub default: &'static str,
    pub kind: Kind,
}

impl Setting {
    pub const fn value(name: &'static str, default: &'static str) -> Self {
        Self { name, default, kind: Kind::Value }
    }

    pub const fn listen(name: &'static str, default: &'static str) -> Self {
        Self { name, default, kind: Kind::Listen }
    }

    pub const fn metrics(name: &'static str, default: &'static str) -> Self {
        Self { name, default, kind: Kind::Metrics }
    }

    pub const fn peer(name: &'static str, default: &'static str, peer: Peer) -> Self {
        Self { name, default, kind: Kind::Peer(peer) }
    }

    /// The variable's value when it is set and not blank.
    pub fn get(&self, env: Env<'_>) -> Option<String> {
        env(self.name).filter(|value| !value.trim().is_empty())
    }

    /// The value, or the default.
    pub fn string(&self, env: Env<'_>) -> String {
        self.get(env).unwrap_or_else(|| self.default.to_owned())
    }

    /// The value (or the default) parsed as `T`.
    ///
    /// # Errors
    /// When the value does not parse.
    pub fn parse<T>(&self, env: Env<'_>) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let value = self.string(env);
        value.trim().parse().map_err(|e: T::Err| ConfigError {
            name: self.name.to_owned(),
            reason: format!("cannot parse {value:?}"),
            source: Some(e.into()),
        })
    }

    /// The value (or the default) as a comma-separated list; empty entries are dropped.
    pub fn list(&self, env: Env<'_>) -> Vec<String> {
        split_list(&self.string(env))
    }
}

/// The entries of a comma-separated list, trimmed; empty ones dropped.
pub fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Settings that more than one service reads, declared once for all of them.
pub mod shared {
    use super::{Peer, Setting};

    pub const NATS_URL: Setting = Setting::peer("NATS_URL", "nats://127.0.0.1:4222", Peer::Nats);
    pub const AUTH_GRPC_URL: Setting = Setting::peer("AUTH_GRPC_URL", "127.0.0.1:50051", Peer::Auth);
    pub const HISTORY_GRPC_URL: Setting = Setting::peer("HISTORY_GRPC_URL", "127.0.0.1:50052", Peer::History);
    pub const PRESENCE_GRPC_URL: Setting = Setting::peer("PRESENCE_GRPC_URL", "127.0.0.1:50053", Peer::Presence);
    pub const NOTIFICATION_GRPC_URL: Setting =
        Setting::peer("NOTIFICATION_GRPC_URL", "127.0.0.1:50054", Peer::Notification);
    pub const MEDIA_GRPC_URL: Setting = Setting::peer("MEDIA_GRPC_URL", "127.0.0.1:50055", Peer::Media);
    /// The `iss` claim auth signs and the gateway requires.
    pub const JWT_ISSUER: Setting = Setting::value("JWT_ISSUER", "chat-auth");
    /// The `aud` claim auth signs and the gateway requires.
    pub const JWT_AUDIENCE: Setting = Setting::value("JWT_AUDIENCE", "chat");
    /// How long an access token lives (auth), and so how long the gateway
    /// must remember a revocation.
    pub const ACCESS_TOKEN_TTL_SECS: Setting = Setting::value("ACCESS_TOKEN_TTL_SECS", "900");
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNT: Setting = Setting::value("COUNT", "8");

    #[test]
    fn an_unset_or_blank_variable_takes_the_default() {
        assert_eq!(COUNT.parse::<u32>(&|_| None).unwrap(), 8);
        assert_eq!(COUNT.parse::<u32>(&|_| Some("  ".into())).unwrap(), 8);
        assert_eq!(COUNT.parse::<u32>(&|_| Some(" 3 ".into())).unwrap(), 3);
    }

    #[test]
    fn a_value_that_does_not_parse_names_the_variable_and_keeps_the_parsers_reason() {
        let error = COUNT.parse::<u32>(&|_| Some("many".into())).unwrap_err();
        assert_eq!(error.to_string(), "invalid value for COUNT: cannot parse \"many\"");
        let cause = std::error::Error::source(&error).expect("the parser's error is the source");
        assert_eq!(cause.to_string(), "invalid digit found in string");
    }
}
