//! Input rules of the client protocol, checked before anything touches storage.

use crate::error::Error;

pub fn username(value: &str) -> Result<(), Error> {
    let len = value.chars().count();
    if !(3..=32).contains(&len) {
        return Err(Error::InvalidArgument("username must be 3 to 32 characters".into()));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(Error::InvalidArgument("username may contain only letters, digits, '_', '.' and '-'".into()));
    }
    Ok(())
}

pub fn password(value: &str) -> Result<(), Error> {
    let len = value.chars().count();
    if !(8..=256).contains(&len) {
        return Err(Error::InvalidArgument("password must be 8 to 256 characters".into()));
    }
    Ok(())
}

/// A display or device name: trimmed, at most `max` characters, no control characters.
/// Empty input gives `None`.
pub fn optional_name(field: &str, value: &str, max: usize) -> Result<Option<String>, Error> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > max {
        return Err(Error::InvalidArgument(format!("{field} must be at most {max} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!("{field} must not contain control characters")));
    }
    Ok(Some(trimmed.to_owned()))
}

pub fn uuid(field: &str, value: &str) -> Result<uuid::Uuid, Error> {
    uuid::Uuid::parse_str(value).map_err(|_| Error::InvalidArgument(format!("{field} must be a UUID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_protocol() {
        assert!(username("alice").is_ok());
        assert!(username("A.b-c_9").is_ok());
        assert!(username("ab").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("al ice").is_err());
        assert!(username("älice").is_err());
    }

    #[test]
    fn passwords_are_bounded() {
        assert!(password("12345678").is_ok());
        assert!(password("1234567").is_err());
        assert!(password(&"x".repeat(257)).is_err());
    }
}
