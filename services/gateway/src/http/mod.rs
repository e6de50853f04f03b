//! The HTTP API of protocol v1 (prefix `/v1`), health endpoints and the JWKS.

mod auth;
mod conversations;
mod devices;
mod extract;
mod health;
mod presence;
mod push;
mod users;
mod web;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

pub use extract::{Credentials, credentials, verify as verify_token};

/// Request bodies larger than this are refused with 413 before parsing.
const BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .route("/v1/auth/register", post(auth::register))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/devices", get(devices::list))
        .route("/v1/devices/{device_id}", axum::routing::delete(devices::revoke))
        .route("/v1/users/me", get(users::me))
        .route("/v1/users/by-username/{username}", get(users::by_username))
        .route("/v1/users/{user_id}", get(users::by_id))
        .route("/v1/conversations", post(conversations::create).get(conversations::list))
        .route("/v1/conversations/{conversation_id}", get(conversations::get).patch(conversations::rename))
        .route("/v1/conversations/{conversation_id}/members", post(conversations::add_members))
        .route(
            "/v1/conversations/{conversation_id}/members/{user_id}",
            axum::routing::delete(conversations::remove_member).patch(conversations::set_role),
        )
        .route("/v1/conversations/{conversation_id}/messages", get(conversations::messages).post(conversations::send))
        .route(
            "/v1/conversations/{conversation_id}/messages/{message_id}",
            axum::routing::patch(conversations::edit_message).delete(conversations::delete_message),
        )
        .route("/v1/search", get(conversations::search))
        .route("/v1/presence", get(presence::get))
        .route("/v1/push/vapid-public-key", get(push::vapid_public_key))
        .route("/v1/push/subscriptions", post(push::register).get(push::list))
        .route("/v1/push/subscriptions/{subscription_id}", axum::routing::delete(push::remove))
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/", get(web::index))
        .route("/{file}", get(web::file))
        .route("/js/{file}", get(web::script))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
