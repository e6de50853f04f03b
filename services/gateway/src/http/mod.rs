//! The HTTP API of protocol v1 (prefix `/v1`), health endpoints and the JWKS.

mod attachments;
mod auth;
mod blocks;
mod conversations;
mod devices;
mod extract;
mod health;
mod presence;
mod push;
mod server;
mod users;
mod web;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

pub use server::serve;

/// Request bodies larger than this are refused with 413 before parsing.
const BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    // Uploads stream their body to media (up to its file limit), each chunk
    // within the body timeout: none of the layers below that read bodies whole.
    let uploads = Router::new().route("/v1/attachments", post(attachments::upload));
    let api = Router::new()
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
        .route("/v1/blocks", get(blocks::list))
        .route("/v1/blocks/{user_id}", axum::routing::put(blocks::block).delete(blocks::unblock))
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
        .route(
            "/v1/conversations/{conversation_id}/mute",
            axum::routing::put(conversations::mute).delete(conversations::unmute),
        )
        .route("/v1/conversations/{conversation_id}/messages/{message_id}/reports", post(conversations::report))
        .route("/v1/attachments/{attachment_id}", get(attachments::get))
        .route("/v1/attachments/{attachment_id}/content", get(attachments::content))
        .route("/v1/attachments/{attachment_id}/thumbnail", get(attachments::thumbnail))
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
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_in_time));
    uploads.merge(api).with_state(state)
}

/// A request's body must arrive within `GATEWAY_BODY_TIMEOUT_SECS`: a client
/// trickling its body would otherwise hold a connection and a task for as
/// long as it likes. Bodies are small (at most [`BODY_LIMIT`]), so reading
/// each whole before its handler costs nothing worth keeping.
async fn body_in_time(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, BODY_LIMIT + 1);
    let bytes = match tokio::time::timeout(state.config.body_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return ApiError::too_large("request body is too large").into_response(),
        Err(_) => {
            crate::brakes::count("body_timeout");
            return ApiError::request_timeout().into_response();
        }
    };
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The router's routes as written above, and the OpenAPI description's
    /// paths, both as `METHOD path`.
    const ROUTER_SOURCE: &str = include_str!("mod.rs");
    const OPENAPI: &str = include_str!("../../../../docs/openapi.yaml");
    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn router_routes() -> BTreeSet<String> {
        let mut routes = BTreeSet::new();
        let source = ROUTER_SOURCE.split("#[cfg(test)]").next().unwrap_or_default();
        for call in source.split(".route(").skip(1) {
            let path = call.split('"').nth(1).expect("a route's path is a string literal");
            // The handlers of this route: up to the parenthesis closing `.route(`.
            let mut depth = 1;
            let end = call
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(call.len(), |(i, _)| i);
            let handlers = &call[..end];
            for method in METHODS {
                let called = handlers
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'));
                if called {
                    routes.insert(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        routes
    }

    fn openapi_operations() -> BTreeSet<String> {
        let mut operations = BTreeSet::new();
        let paths = OPENAPI.split("\npaths:\n").nth(1).expect("a paths section");
        let paths = paths.split("\ncomponents:").next().unwrap_or_default();
        let mut current = None;
        for line in paths.lines() {
            if let Some(path) = line.strip_prefix("  /").and_then(|rest| rest.strip_suffix(':')) {
                current = Some(format!("/{path}"));
            } else if let (Some(path), Some(key)) = (&current, line.strip_prefix("    "))
                && let Some(method) = key.strip_suffix(':').filter(|m| METHODS.contains(m))
            {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        operations
    }

    #[test]
    fn openapi_paths_match_the_router() {
        let routes = router_routes();
        assert!(routes.len() > 20, "the router's routes were not found: {routes:?}");
        let described = openapi_operations();
        let missing: Vec<_> = routes.difference(&described).collect();
        let extra: Vec<_> = described.difference(&routes).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/openapi.yaml is out of step with the router: not described {missing:?}; described but not routed {extra:?}"
        );
    }
}
