//! Every way a history call can fail, and the gRPC code each one maps to.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    /// What was not found, said to the caller: "conversation not found".
    #[error("{0}")]
    NotFound(&'static str),
    #[error("not a member of this conversation")]
    NotMember,
    /// A member without the role the change needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub const NO_CONVERSATION: &str = "conversation not found";
/// A membership change naming someone who is not (or no longer) a member.
pub const NOT_A_MEMBER: &str = "that user is not a member of this conversation";

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if chat_common::db::is_unreachable(&err) {
            Self::Unavailable(format!("the database is unavailable: {err}"))
        } else {
            Self::Unexpected(err.into())
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(msg) => Status::invalid_argument(msg),
            Error::NotFound(what) => Status::not_found(what),
            Error::NotMember => Status::permission_denied(err.to_string()),
            Error::Forbidden(msg) => Status::permission_denied(msg),
            Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
            Error::Unavailable(msg) => Status::unavailable(msg),
            Error::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "history call failed");
                Status::internal("internal error")
            }
        }
    }
}
