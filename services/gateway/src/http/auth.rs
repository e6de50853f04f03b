//! `/v1/auth/*` and the JWKS: thin translations to the auth service.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chat_proto::auth::v1::{GetJwksRequest, LoginRequest, RefreshRequest, RegisterRequest, RevokeDeviceRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{AuthUser, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct RegisterBody {
    username: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

/// The end client's address, for auth's rate limits. Behind a trusted proxy,
/// the last `X-Forwarded-For` entry: the one that proxy appended. Entries
/// before it are whatever the client wrote, so trusting the first would let
/// anyone pick a fresh address for every request.
fn client_address(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> String {
    if state.config.trust_forwarded_for {
        let appended_by_proxy = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok());
        if let Some(ip) = appended_by_proxy {
            return ip.to_string();
        }
    }
    peer.ip().to_string()
}

pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reply = state
        .auth
        .clone()
        .register(RegisterRequest {
            username: body.username,
            password: body.password,
            display_name: body.display_name.unwrap_or_default(),
            client_address: client_address(&state, peer, &headers),
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(json!({ "user_id": reply.user_id, "username": reply.username }))))
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: String,
    #[serde(default)]
    device_name: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    let pair = state
        .auth
        .clone()
        .login(LoginRequest {
            username: body.username,
            password: body.password,
            device_name: body.device_name.unwrap_or_default(),
            client_address: client_address(&state, peer, &headers),
        })
        .await?
        .into_inner();
    Ok(Json(json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expires_in": pair.expires_in,
        "user_id": pair.user_id,
        "device_id": pair.device_id,
    })))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<Json<Value>, ApiError> {
    let pair = state.auth.clone().refresh(RefreshRequest { refresh_token: body.refresh_token }).await?.into_inner();
    Ok(Json(json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expires_in": pair.expires_in,
    })))
}

pub async fn logout(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<StatusCode, ApiError> {
    state
        .auth
        .clone()
        .revoke_device(RevokeDeviceRequest { user_id: me.user_id.to_string(), device_id: me.device_id.to_string() })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let reply = state.auth.clone().get_jwks(GetJwksRequest {}).await?.into_inner();
    Ok(([(header::CONTENT_TYPE, "application/json")], reply.jwks_json))
}
