//! The queue of deliveries waiting for offline users: the `notify_pending`
//! bucket, one key per user, conversation and message. Every instance follows
//! it (`UserIndex`), so counting a user's deliveries, dropping those a read
//! marker passed and draining them when a device catches up need no scan.
//!
//! A delivery is queued once: its key is written only if it has never been
//! written (JetStream checks the key's last sequence is 0). The intake sees an
//! event again whenever an acknowledgement is lost (nats-server killed before
//! it kept the consumer's acks, notification killed mid-event, a failed put
//! retried for all members), and the pusher covers deliveries by bucket
//! revision; a second write would give the same delivery a newer revision,
//! which a second notification would cover again.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
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

    /// Queues a delivery unless it was queued before (it may since have been
    /// read or drained: its removal marker counts as written), carrying the
    /// message's trace to the pusher. Returns whether it was queued now.
    ///
    /// # Errors
    /// When JetStream does not answer (it may have stored it: queueing again
    /// is safe).
    pub async fn queue(&self, delivery: &PendingDelivery) -> Result<bool, async_nats::Error> {
        let key = key_of(delivery);
        let mut headers = HeaderMap::new();
        chat_common::nats::inject_trace_context(&mut headers);
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        let subject = format!("{}{key}", self.bucket.put_prefix.as_ref().unwrap_or(&self.bucket.prefix));
        let value = delivery.encode_to_vec().into();
        match self.js.publish_with_headers(subject, headers, value).await?.await {
            Ok(ack) => {
                self.index.insert(&key, ack.sequence, delivery.clone());
                Ok(true)
            }
            Err(e) if chat_common::nats::lost_a_race(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
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

/// A delivery's key: `<user>.<conversation>.<seq>`, one per user and message.
pub fn key_of(delivery: &PendingDelivery) -> String {
    format!("{}.{}.{}", delivery.user_id, delivery.conversation_id, delivery.seq)
}
