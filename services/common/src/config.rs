//! Typed reads of environment variables with defaults that work on one machine.

use std::str::FromStr;

/// A configuration value that is present but unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

/// The variable's value, or `default` when it is unset or empty.
pub fn string(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => default.to_owned(),
    }
}

/// The variable parsed as `T`, or `default` when unset or empty.
///
/// # Errors
/// When the variable is set but does not parse.
pub fn parse<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError { name: name.to_owned(), reason: e.to_string() })
        }
        _ => Ok(default),
    }
}

/// A comma-separated list; empty entries are dropped.
pub fn list(name: &str, default: &str) -> Vec<String> {
    string(name, default).split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}
