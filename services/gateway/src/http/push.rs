//! `/v1/push/*` (addition to protocol v1): a device registers where its push
//! notifications go: a browser's Web Push subscription, or a webhook.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_proto::notification::v1::push_subscription::Target;
use chat_proto::notification::v1::register_push_subscription_request::Target as RequestedTarget;
use chat_proto::notification::v1::{
    GetVapidPublicKeyRequest, ListPushSubscriptionsRequest, PushSubscription, RegisterPushSubscriptionRequest,
    RemovePushSubscriptionRequest, WebPushTarget, WebhookTarget,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{AuthUser, JsonBody, Path};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::rfc3339_ms;

/// A browser's `PushSubscription.toJSON()` with `"type": "web_push"`, or a webhook.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NewSubscription {
    WebPush { endpoint: String, keys: WebPushKeys },
    Webhook { url: String },
}

#[derive(Deserialize)]
pub struct WebPushKeys {
    p256dh: String,
    auth: String,
}

fn subscription_json(s: &PushSubscription) -> Value {
    let mut body = json!({
        "subscription_id": s.subscription_id,
        "device_id": s.device_id,
        "created_at": rfc3339_ms(s.created_at_ms),
    });
    match &s.target {
        Some(Target::WebPush(t)) => {
            body["type"] = "web_push".into();
            body["endpoint"] = t.endpoint.clone().into();
        }
        Some(Target::Webhook(t)) => {
            body["type"] = "webhook".into();
            body["url"] = t.url.clone().into();
        }
        None => {}
    }
    if !s.webhook_secret.is_empty() {
        body["webhook_secret"] = s.webhook_secret.clone().into();
    }
    body
}

pub async fn vapid_public_key(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let key = state.notification.clone().get_vapid_public_key(GetVapidPublicKeyRequest {}).await?.into_inner();
    Ok(Json(json!({ "public_key": key.public_key })))
}

pub async fn register(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    JsonBody(body): JsonBody<NewSubscription>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let target = match body {
        NewSubscription::WebPush { endpoint, keys } => {
            RequestedTarget::WebPush(WebPushTarget { endpoint, p256dh: keys.p256dh, auth: keys.auth })
        }
        NewSubscription::Webhook { url } => RequestedTarget::Webhook(WebhookTarget { url }),
    };
    let request = RegisterPushSubscriptionRequest {
        user_id: me.user_id.to_string(),
        device_id: me.device_id.to_string(),
        target: Some(target),
    };
    let subscription = state.notification.clone().register_push_subscription(request).await?.into_inner();
    Ok((StatusCode::CREATED, Json(subscription_json(&subscription))))
}

pub async fn list(State(state): State<AppState>, AuthUser(me): AuthUser) -> Result<Json<Value>, ApiError> {
    let request = ListPushSubscriptionsRequest { user_id: me.user_id.to_string() };
    let reply = state.notification.clone().list_push_subscriptions(request).await?.into_inner();
    let subscriptions: Vec<Value> = reply.subscriptions.iter().map(subscription_json).collect();
    Ok(Json(json!({ "subscriptions": subscriptions })))
}

pub async fn remove(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(subscription_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let request = RemovePushSubscriptionRequest { user_id: me.user_id.to_string(), subscription_id };
    state.notification.clone().remove_push_subscription(request).await?;
    Ok(StatusCode::NO_CONTENT)
}
