//! Request extractors that fail with the protocol's error body rather than
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens::{Identity, TokenError, Verifier};

/// A JSON body, parsed into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("request body is too large")
            } else {
                ApiError::invalid_argument("cannot read the request body")
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid_argument(format!("invalid JSON body: {e}")))
    }
}

/// Path parameters, as axum's `Path` parses them, but a path that does not
/// parse (bytes that are not UTF-8, say) is refused with the protocol's error
/// body instead of axum's plain text.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| ApiError::invalid_argument(rejection.body_text()))
    }
}

/// The caller, from `Authorization: Bearer <access token>`.
pub struct AuthUser(pub Identity);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match credentials(&parts.headers) {
            Credentials::Bearer(token) => verify(&state.verifier, token).await.map(AuthUser),
            Credentials::None | Credentials::Malformed => Err(ApiError::unauthorized("missing bearer token")),
        }
    }
}

/// What a request's `Authorization` header says.
pub enum Credentials<'a> {
    None,
    Bearer(&'a str),
    /// There is a header, but not a usable bearer token.
    Malformed,
}

pub fn credentials(headers: &axum::http::HeaderMap) -> Credentials<'_> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else { return Credentials::None };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    token.map_or(Credentials::Malformed, Credentials::Bearer)
}

/// # Errors
/// `unauthorized` for a token that does not verify, `unavailable` when the
/// signing keys cannot be fetched.
pub async fn verify(verifier: &Verifier, token: &str) -> Result<Identity, ApiError> {
    verifier.verify(token).await.map_err(|e| match e {
        TokenError::Invalid => ApiError::unauthorized("invalid or expired access token"),
        TokenError::KeysUnavailable(reason) => {
            tracing::warn!(%reason, "cannot fetch token signing keys");
            ApiError::unavailable("cannot verify tokens right now; retry")
        }
    })
}
