//! Push subscriptions end with the device that registered them. auth records
//! every revoked device (logout, `DELETE /v1/devices/{id}`, a re-used refresh
//! token) in the `auth_revoked_devices` bucket; notification follows it from
//! its first entry, so a revocation made while no instance ran is applied at
//! start, and drops every subscription of the device. It starts once the
//! subscriptions index holds what the bucket held, so that a revocation
//! applied at start finds the subscriptions it drops.
//!
//! The bucket forgets a revocation once the device's access tokens expired,
//! and a subscription may be registered (or loaded at start) after its
//! device's revocation went by. So the pusher also asks auth, before each
//! push, which of the user's devices are still logged in, and sends only to
//! their subscriptions ([`active_devices`]): fail closed, a push waits while
//! auth cannot answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use chat_common::grpc::Channel;
use chat_common::shutdown::CancellationToken;
use chat_proto::auth::v1::ListDevicesRequest;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;

use crate::subscriptions::Subscriptions;

/// How long to wait before looking for the bucket again (auth creates it).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long to wait for the subscriptions index to load before following
/// revocations anyway (the pusher's check of [`active_devices`] still holds).
const LOAD_LIMIT: Duration = Duration::from_secs(30);

/// Drops the subscriptions of every device auth revokes, until `shutdown`.
pub async fn follow(
    js: async_nats::jetstream::Context,
    subscriptions: Arc<Subscriptions>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        () = shutdown.cancelled() => return,
        loaded = subscriptions.index.loaded(LOAD_LIMIT) => if !loaded {
            tracing::warn!("the push subscriptions did not load in time; following revocations anyway");
        }
    }
    let bucket = loop {
        match js.get_key_value(chat_common::nats::REVOKED_DEVICES_BUCKET).await {
            Ok(bucket) => break bucket,
            Err(e) => tracing::debug!(error = %e, "no revoked-devices bucket yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY_AFTER) => {}
        }
    };
    chat_common::nats::follow_bucket(&bucket, &shutdown, |entry| {
        let subscriptions = subscriptions.clone();
        async move {
            if entry.operation == Operation::Put {
                // Key: the device; value: its user.
                let user_id = String::from_utf8_lossy(&entry.value).into_owned();
                let removed = subscriptions.remove_device(&user_id, &entry.key).await;
                if removed > 0 {
                    tracing::info!(device_id = %entry.key, removed, "device revoked; its push subscriptions removed");
                }
            }
            true
        }
    })
    .await;
}

/// The user's devices that are logged in now, from auth (the record of truth).
///
/// # Errors
/// When auth does not answer.
pub async fn active_devices(
    auth: &AuthServiceClient<Channel>,
    user_id: &str,
) -> Result<HashSet<String>, tonic::Status> {
    let reply = auth.clone().list_devices(ListDevicesRequest { user_id: user_id.to_owned() }).await?;
    Ok(reply.into_inner().devices.into_iter().map(|d| d.device_id).collect())
}
