//! The one error type of the client API: it renders the protocol's error body
//! over HTTP and the same code and message in WebSocket `error` frames.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// The same wait to the millisecond, for WebSocket `error` frames.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None, retry_after_ms: None }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A path that exists, asked with a method it does not serve (the router
    /// adds the `Allow` header).
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not serve that method")
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            retry_after_ms: Some(retry_after_secs.max(1) * 1000),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; retry later")
        }
    }

    /// `rate_limited` after a brake: retry after `wait` (at least a second over HTTP).
    pub fn rate_limited_for(wait: std::time::Duration) -> Self {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        Self { retry_after_ms: Some(ms), ..Self::rate_limited(wait.as_secs_f64().ceil() as u64) }
    }

    /// The request's headers or body did not arrive in time.
    pub fn request_timeout() -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request did not arrive in time")
    }

    /// This gateway holds all the sockets it may: try another, or later.
    pub fn gateway_full() -> Self {
        Self {
            retry_after_secs: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "this gateway is full; retry later")
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
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
        crate::metrics::get().errors.get_or_create(&chat_common::metrics::label("code", self.code)).inc();
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
