//! Every way an auth call can fail, and the gRPC code each one maps to.

use std::time::Duration;

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("username is already taken")]
    UsernameTaken,
    /// Unknown user and wrong password are deliberately the same error.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("refresh token is invalid, expired, revoked or already used")]
    InvalidRefreshToken,
    #[error("user not found")]
    UserNotFound,
    /// An operator deactivated the account (told only after the right password).
    #[error("this account is deactivated")]
    Deactivated,
    #[error("no such device for this user")]
    DeviceNotFound,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("too many attempts; retry later")]
    RateLimited(Duration),
    /// Every password-hashing thread and queue place is taken.
    #[error("too many logins and registrations at once; retry shortly")]
    Busy,
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if chat_common::db::is_unreachable(&err) {
            Self::Unavailable(format!("the database is unavailable: {err}"))
        } else {
            Self::Unexpected(err.into())
        }
    }
}

/// gRPC metadata carrying the seconds to wait after `RESOURCE_EXHAUSTED`; the
/// gateway turns it into HTTP `Retry-After`.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(msg) => Status::invalid_argument(msg),
            Error::UsernameTaken => Status::already_exists(err.to_string()),
            Error::InvalidCredentials | Error::InvalidRefreshToken => Status::unauthenticated(err.to_string()),
            Error::UserNotFound | Error::DeviceNotFound => Status::not_found(err.to_string()),
            Error::Deactivated => Status::permission_denied(err.to_string()),
            Error::NotFound(msg) => Status::not_found(msg),
            Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
            Error::RateLimited(wait) => retry_after(&err, wait),
            // A queued hash takes a fraction of a second, so the shortest wait.
            Error::Busy => retry_after(&err, Duration::from_secs(1)),
            Error::Unavailable(msg) => Status::unavailable(msg),
            Error::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "auth call failed");
                Status::internal("internal error")
            }
        }
    }
}

/// `RESOURCE_EXHAUSTED` with the whole seconds to wait (at least one).
fn retry_after(err: &Error, wait: Duration) -> Status {
    let mut status = Status::resource_exhausted(err.to_string());
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = secs.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
}
