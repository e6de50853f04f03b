//! `GET /v1/ws`: origin check and header authentication before the upgrade;
//! everything after it lives in `session`. Inside, lowest first: `socket`
//! (the socket type and its bounded writes), `worker` (the frames that need a
//! backend round trip), `catch_up` (replay after a cursor), `session`.

mod catch_up;
mod session;
mod socket;
mod worker;

use std::collections::HashMap;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens::{Credentials, credentials};

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let allowed = same_origin(origin, &headers) || state.config.allowed_origins.iter().any(|a| a == origin);
        if !allowed {
            return ApiError::forbidden("origin not allowed").into_response();
        }
    }
    if state.sockets.len() >= state.config.max_sockets {
        crate::brakes::count("sockets_per_gateway");
        return ApiError::gateway_full().into_response();
    }
    let pre_authenticated = match credentials(&headers) {
        Credentials::Bearer(token) => match crate::tokens::verify(&state.verifier, token).await {
            Ok(identity) => Some(identity),
            Err(e) => return e.into_response(),
        },
        Credentials::Malformed => return ApiError::unauthorized("malformed Authorization header").into_response(),
        Credentials::None => None,
    };
    if let Some(identity) = &pre_authenticated
        && state.registry.sockets_of(&identity.user_id) >= state.config.max_sockets_per_user
    {
        crate::brakes::count("sockets_per_user");
        return ApiError::rate_limited(5).into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) => return ApiError::invalid_argument("expected a WebSocket upgrade request").into_response(),
    };
    let cursor = query.get("cursor").cloned();
    // The hard limit is a backstop; the session answers frames above the
    // configured size with close 1009 itself.
    let hard_limit = state.config.max_frame_bytes * 4;
    let tracker = state.sockets.clone();
    // axum keeps the callback's captures for the socket's life: one pointer
    // instead of the state, the identity and the cursor.
    let arguments = Box::new((state, pre_authenticated, cursor));
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        // The read buffer is allocated at the upgrade and held for the
        // socket's life, and tungstenite zero-fills all of it on every read:
        // the default 128 KiB would be resident per idle socket. 256 bytes
        // hold a typical chat frame; a larger one is read whole once its
        // header says how long it is (one more read).
        .read_buffer_size(READ_BUFFER_BYTES)
        // Frames fed together are written together, up to this much at a time.
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            let (state, pre_authenticated, cursor) = *arguments;
            tracker.track_future(session::run(state, socket, pre_authenticated, cursor))
        })
}

const READ_BUFFER_BYTES: usize = 256;
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// A page served by this very host (the web client at `/`) may always connect.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    !host.is_empty() && authority == Some(host)
}
