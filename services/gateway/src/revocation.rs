//! Revoked devices. auth records each revocation in a JetStream key-value
//! bucket; every gateway loads the bucket at start and watches it, so a
//! revoked device's access tokens are refused here until they would have
//! expired anyway, and its live sockets are closed with 4401 within moments.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, Store};
use chat_common::shutdown::CancellationToken;
use futures::StreamExt;

use crate::delivery::Registry;

pub struct Revocations {
    /// Device id → when this gateway learned of the revocation.
    devices: RwLock<HashMap<String, Instant>>,
    /// After this long every access token of the device has expired.
    remember: Duration,
}

impl Revocations {
    pub fn new(access_token_ttl: Duration) -> Self {
        Self { devices: RwLock::new(HashMap::new()), remember: access_token_ttl + Duration::from_secs(60) }
    }

    pub fn is_revoked(&self, device_id: &str) -> bool {
        self.devices.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(device_id)
    }

    fn insert(&self, device_id: String) {
        let mut devices = self.devices.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let remember = self.remember;
        devices.retain(|_, since| since.elapsed() < remember);
        devices.insert(device_id, Instant::now());
    }

    /// Loads every current revocation; call before serving.
    ///
    /// # Errors
    /// When the bucket cannot be read.
    pub async fn load(&self, bucket: &Store) -> Result<(), async_nats::Error> {
        let mut keys = bucket.keys().await?;
        while let Some(key) = keys.next().await {
            self.insert(key?);
        }
        Ok(())
    }
}

/// Applies new revocations until `shutdown`: refuses the device from now on
/// and closes its sockets on this gateway.
pub async fn watch(bucket: Store, revocations: Arc<Revocations>, registry: Arc<Registry>, shutdown: CancellationToken) {
    chat_common::nats::follow_bucket(&bucket, &shutdown, |entry| {
        if entry.operation == Operation::Put {
            let user_id = String::from_utf8_lossy(&entry.value).into_owned();
            revocations.insert(entry.key.clone());
            registry.close_device(&user_id, &entry.key, crate::protocol::close::UNAUTHORIZED);
        }
        std::future::ready(true)
    })
    .await;
}
