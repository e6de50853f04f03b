//! The one error type of the client API and the protocol's closed set of
//! error codes: it renders the protocol's error body over HTTP, and the same
//! code and message go into WebSocket `error` frames. It sits low in the
//! gateway (it needs only `metrics`) so that the frame types can use it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;

/// The `code` of an HTTP error body or a WebSocket `error` frame (protocol v1,
/// plus `method_not_allowed`, `request_timeout` and `internal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// WebSocket only: not JSON, not an object, or a required field missing or mistyped.
    InvalidFrame,
    /// WebSocket only: a frame `type` the server does not know.
    UnknownType,
    InvalidArgument,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooLarge,
    RateLimited,
    RequestTimeout,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The code as it is written on the wire (and in the errors metric's label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidFrame => "invalid_frame",
            Self::UnknownType => "unknown_type",
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::RequestTimeout => "request_timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::InvalidFrame | Self::UnknownType | Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Counts an error answered with this code (HTTP and WebSocket alike).
    pub fn count(self) {
        crate::metrics::get().errors.get_or_create(&chat_common::metrics::label("code", self.as_str())).inc();
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// The same wait to the millisecond, for WebSocket `error` frames.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_secs: None, retry_after_ms: None }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A path that exists, asked with a method it does not serve (the router
    /// adds the `Allow` header).
    pub fn method_not_allowed() -> Self {
        Self::new(ErrorCode::MethodNotAllowed, "this endpoint does not serve that method")
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            retry_after_ms: Some(retry_after_secs.max(1) * 1000),
            ..Self::new(ErrorCode::RateLimited, "too many requests; retry later")
        }
    }

    /// `rate_limited` after a brake: retry after `wait` (at least a second over HTTP).
    pub fn rate_limited_for(wait: std::time::Duration) -> Self {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        Self { retry_after_ms: Some(ms), ..Self::rate_limited(wait.as_secs_f64().ceil() as u64) }
    }

    /// The request's headers or body did not arrive in time.
    pub fn request_timeout() -> Self {
        Self::new(ErrorCode::RequestTimeout, "the request did not arrive in time")
    }

    /// This gateway holds all the sockets it may: try another, or later.
    pub fn gateway_full() -> Self {
        Self { retry_after_secs: Some(5), ..Self::new(ErrorCode::Unavailable, "this gateway is full; retry later") }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::invalid_argument(message),
            Code::Unauthenticated => Self::unauthorized(message),
            Code::PermissionDenied => Self::forbidden(message),
            Code::NotFound => Self::not_found(message),
            Code::AlreadyExists | Code::FailedPrecondition => Self::conflict(message),
            Code::ResourceExhausted => {
                let wait = status
                    .metadata()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Self::rate_limited(wait)
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(code = ?status.code(), %message, "a backend service is unavailable");
                Self::unavailable("a backend service is unavailable; retry shortly")
            }
            _ => {
                tracing::error!(code = ?status.code(), %message, "backend call failed");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.code.count();
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn each_code_is_written_as_its_name() {
        let all = [
            ErrorCode::InvalidFrame,
            ErrorCode::UnknownType,
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::TooLarge,
            ErrorCode::RateLimited,
            ErrorCode::RequestTimeout,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        for code in all {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
