//! The queue of deliveries waiting for offline users: the `notify_pending`
//! bucket, one key per user, conversation and message. Every instance follows
//! it (`UserIndex`), so counting a user's deliveries, dropping those a read
//! marker passed and draining them when a device catches up need no scan.

use std::sync::Arc;

use async_nats::jetstream::kv;
use chat_proto::notification::v1::PendingDelivery;
use prost::Message as _;

use crate::buckets::MARKER_TTL;
use crate::index::UserIndex;

pub struct Pending {
    js: async_nats::jetstream::Context,
    pub bucket: kv::Store,
    pub index: Arc<UserIndex<PendingDelivery>>,
}

impl Pending {
    pub fn new(js: async_nats::jetstream::Context, bucket: kv::Store) -> Self {
        Self { js, bucket, index: Arc::new(UserIndex::new()) }
    }

    /// Queues a delivery (writing the same one twice is harmless), carrying
    /// the message's trace to the pusher.
    ///
    /// # Errors
    /// When JetStream does not store it.
    pub async fn queue(&self, delivery: &PendingDelivery) -> Result<u64, async_nats::Error> {
        let key = format!("{}.{}.{}", delivery.user_id, delivery.conversation_id, delivery.seq);
        let value = delivery.encode_to_vec().into();
        let revision = chat_common::nats::put_with_trace_context(&self.js, &self.bucket, &key, value).await?;
        self.index.insert(&key, revision, delivery.clone());
        Ok(revision)
    }

    /// The user's waiting deliveries, oldest first, with their bucket revisions.
    pub fn of(&self, user_id: &str) -> Vec<(u64, PendingDelivery)> {
        let mut deliveries: Vec<(u64, PendingDelivery)> =
            self.index.of(user_id).into_iter().map(|(_, revision, d)| (revision, d)).collect();
        deliveries.sort_by_key(|(_, d)| d.stream_seq);
        deliveries
    }

    /// How many deliveries wait for the user.
    pub fn count(&self, user_id: &str) -> u32 {
        self.index.count(user_id) as u32
    }

    /// Removes the user's deliveries that `drop` selects; returns how many.
    pub async fn remove(&self, user_id: &str, drop: impl Fn(&PendingDelivery) -> bool) -> usize {
        let keys: Vec<String> =
            self.index.of(user_id).into_iter().filter(|(_, _, d)| drop(d)).map(|(key, _, _)| key).collect();
        for key in &keys {
            match self.bucket.purge_with_ttl(key, MARKER_TTL).await {
                Ok(()) => self.index.forget(key),
                Err(e) => tracing::warn!(error = %e, "cannot remove a delivery from the queue"),
            }
        }
        keys.len()
    }
}
