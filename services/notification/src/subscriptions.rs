//! Push subscriptions of users' devices, in the `notify_subscriptions` bucket
//! under `<user>.<subscription>`. Everything a client sends is checked here:
//! URLs (and where they point, see `endpoint`), key lengths, how many
//! subscriptions a user may hold. A subscription lives as long as the device
//! that registered it: `revocations` drops those of a revoked device.

use std::sync::Arc;

use async_nats::jetstream::kv;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chat_proto::notification::v1::push_subscription::Target;
use chat_proto::notification::v1::register_push_subscription_request::Target as RequestedTarget;
use chat_proto::notification::v1::{PushSubscription, RegisterPushSubscriptionRequest};
use prost::Message as _;
use tonic::Status;

use crate::buckets::MARKER_TTL;
use crate::endpoint::EndpointPolicy;
use crate::index::UserIndex;

/// Subscriptions one user may hold (a few per device is plenty).
pub const MAX_PER_USER: usize = 20;
const MAX_URL_BYTES: usize = 2048;

pub struct Subscriptions {
    bucket: kv::Store,
    pub index: Arc<UserIndex<PushSubscription>>,
    policy: EndpointPolicy,
}

fn uuid(field: &str, value: &str) -> Result<(), Status> {
    uuid::Uuid::parse_str(value).map(|_| ()).map_err(|_| Status::invalid_argument(format!("{field} must be a UUID")))
}

impl Subscriptions {
    pub fn new(bucket: kv::Store, policy: EndpointPolicy) -> Self {
        Self { bucket, index: Arc::new(UserIndex::new()), policy }
    }

    async fn check_url(&self, field: &str, url: &str) -> Result<String, Status> {
        let invalid = |why: &str| Status::invalid_argument(format!("{field} {why}"));
        if url.len() > MAX_URL_BYTES {
            return Err(invalid("is too long"));
        }
        let parsed = reqwest::Url::parse(url).map_err(|_| invalid("is not a URL"))?;
        if parsed.host_str().is_none() || !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("must name a host and carry no credentials"));
        }
        self.policy.check_with_names(&parsed).await.map_err(|refused| invalid(&refused.0))?;
        Ok(parsed.to_string())
    }

    /// Checks and stores a subscription. Registering the same endpoint again
    /// replaces the earlier one (a browser renews its keys that way).
    ///
    /// # Errors
    /// `invalid_argument` for bad input, `failed_precondition` beyond the limit.
    pub async fn register(&self, req: RegisterPushSubscriptionRequest) -> Result<PushSubscription, Status> {
        uuid("user_id", &req.user_id)?;
        uuid("device_id", &req.device_id)?;
        let target = match req.target {
            Some(RequestedTarget::WebPush(mut web_push)) => {
                web_push.endpoint = self.check_url("endpoint", &web_push.endpoint).await?;
                let key = B64.decode(web_push.p256dh.trim_end_matches('=')).unwrap_or_default();
                if key.len() != 65 || p256::PublicKey::from_sec1_bytes(&key).is_err() {
                    return Err(Status::invalid_argument("p256dh must be an uncompressed P-256 public key, base64url"));
                }
                if B64.decode(web_push.auth.trim_end_matches('=')).map(|a| a.len()) != Ok(16) {
                    return Err(Status::invalid_argument("auth must be 16 bytes, base64url"));
                }
                web_push.p256dh = B64.encode(&key);
                web_push.auth = web_push.auth.trim_end_matches('=').to_owned();
                Target::WebPush(web_push)
            }
            Some(RequestedTarget::Webhook(mut webhook)) => {
                webhook.url = self.check_url("url", &webhook.url).await?;
                Target::Webhook(webhook)
            }
            None => return Err(Status::invalid_argument("a web_push or webhook target is required")),
        };
        let existing = self.index.of(&req.user_id);
        let same_target = |s: &PushSubscription| match (&s.target, &target) {
            (Some(Target::WebPush(a)), Target::WebPush(b)) => a.endpoint == b.endpoint,
            (Some(Target::Webhook(a)), Target::Webhook(b)) => a.url == b.url,
            _ => false,
        };
        let replaced = existing.iter().find(|(_, _, s)| same_target(s)).map(|(_, _, s)| s.subscription_id.clone());
        if replaced.is_none() && existing.len() >= MAX_PER_USER {
            return Err(Status::failed_precondition(format!("at most {MAX_PER_USER} push subscriptions per user")));
        }
        let webhook_secret = match target {
            Target::Webhook(_) => hex::encode(crate::random::<32>()),
            Target::WebPush(_) => String::new(),
        };
        let subscription = PushSubscription {
            subscription_id: replaced.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            user_id: req.user_id,
            device_id: req.device_id,
            target: Some(target),
            webhook_secret,
            created_at_ms: chat_common::time::now_ms(),
        };
        let key = format!("{}.{}", subscription.user_id, subscription.subscription_id);
        let revision = self
            .bucket
            .put(&key, subscription.encode_to_vec().into())
            .await
            .map_err(|_| Status::unavailable("cannot store the subscription"))?;
        self.index.insert(&key, revision, subscription.clone());
        Ok(subscription)
    }

    /// The user's subscriptions, without their webhook secrets.
    pub fn list(&self, user_id: &str) -> Vec<PushSubscription> {
        self.index
            .of(user_id)
            .into_iter()
            .map(|(_, _, s)| PushSubscription { webhook_secret: String::new(), ..s })
            .collect()
    }

    /// The user's subscriptions as stored (for sending).
    pub fn of(&self, user_id: &str) -> Vec<PushSubscription> {
        self.index.of(user_id).into_iter().map(|(_, _, s)| s).collect()
    }

    /// Removes every subscription `device_id` registered; returns how many.
    pub async fn remove_device(&self, user_id: &str, device_id: &str) -> usize {
        let mut removed = 0;
        for (_, _, subscription) in self.index.of(user_id) {
            if subscription.device_id == device_id && self.remove(user_id, &subscription.subscription_id).await.is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Removes a subscription.
    ///
    /// # Errors
    /// `not_found` when the user has no such subscription.
    pub async fn remove(&self, user_id: &str, subscription_id: &str) -> Result<(), Status> {
        uuid("user_id", user_id)?;
        uuid("subscription_id", subscription_id)?;
        let key = format!("{user_id}.{subscription_id}");
        if !self.index.of(user_id).iter().any(|(k, _, _)| *k == key) {
            return Err(Status::not_found("no such push subscription"));
        }
        self.bucket.purge_with_ttl(&key, MARKER_TTL).await.map_err(|_| Status::unavailable("cannot remove it"))?;
        self.index.forget(&key);
        Ok(())
    }
}
