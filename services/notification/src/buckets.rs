//! Where notification keeps its state: JetStream key-value buckets on file
//! storage, so every instance shares it and restarts (of the service or of
//! nats-server) lose nothing.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use chat_common::nats::key_value;

pub use chat_common::nats::MARKER_TTL;

/// Deliveries waiting for a user: `<user>.<conversation>.<seq>` → `PendingDelivery`.
pub const PENDING: &str = "notify_pending";
/// How far a user's deliveries are covered, and the notifications claimed
/// but not finished: `<user>` → `Claims` (JSON).
pub const CLAIMS: &str = "notify_claims";
/// Pushes that reached a subscription: `<notification>.<subscription>` → empty.
pub const SENT: &str = "notify_sent";
/// Pushes that failed every attempt: `<user>.<notification>.<subscription>` → `DeadLetter`.
pub const DEAD: &str = "notify_dead";
/// Events of the CHAT stream the intake set aside: `<stream sequence>` →
/// JSON `{stream_seq, subject, reason, attempts, failed_at_ms}`.
pub const DEAD_EVENTS: &str = "notify_dead_events";
/// Push subscriptions: `<user>.<subscription>` → `PushSubscription`.
pub const SUBSCRIPTIONS: &str = "notify_subscriptions";
/// The VAPID key pair: `vapid` → PKCS#8 DER of the P-256 private key.
pub const KEYS: &str = "notify_keys";

/// A waiting delivery is dropped after this long even if nobody came for it.
const PENDING_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
const SENT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const DEAD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct Buckets {
    pub pending: kv::Store,
    pub claims: kv::Store,
    pub sent: kv::Store,
    pub dead: kv::Store,
    pub dead_events: kv::Store,
    pub subscriptions: kv::Store,
    pub keys: kv::Store,
}

impl Buckets {
    /// Opens the buckets, creating those that are missing.
    ///
    /// # Errors
    /// When JetStream is unavailable.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<Self, jetstream::context::CreateKeyValueError> {
        let bucket = |name, max_age| key_value(js, name, max_age, replicas);
        Ok(Self {
            pending: bucket(PENDING, PENDING_MAX_AGE).await?,
            claims: bucket(CLAIMS, PENDING_MAX_AGE).await?,
            sent: bucket(SENT, SENT_MAX_AGE).await?,
            dead: bucket(DEAD, DEAD_MAX_AGE).await?,
            dead_events: bucket(DEAD_EVENTS, DEAD_MAX_AGE).await?,
            subscriptions: bucket(SUBSCRIPTIONS, Duration::ZERO).await?,
            keys: bucket(KEYS, Duration::ZERO).await?,
        })
    }
}
