//! Every way an auth call can fail, and the gRPC code each one maps to.

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
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::Unexpected(err.into())
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(msg) => Status::invalid_argument(msg),
            Error::UsernameTaken => Status::already_exists(err.to_string()),
            Error::InvalidCredentials | Error::InvalidRefreshToken => {
                Status::unauthenticated(err.to_string())
            }
            Error::UserNotFound => Status::not_found(err.to_string()),
            Error::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "auth call failed");
                Status::internal("internal error")
            }
        }
    }
}
