//! Keeps the view current by following the three presence buckets, and acts
//! on its decisions: announces changes in the users bucket by compare-and-set
//! (several instances may decide the same thing; exactly one write lands), and
//! removes socket keys that dead gateways left behind.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Entry, Operation};
use chat_common::nats::presence::Buckets;
use chat_common::shutdown::CancellationToken;
use chat_common::time::now_ms;
use chat_proto::presence::v1::{PresenceState, PresenceStatus};
use prost::Message as _;
use tokio::sync::{broadcast, mpsc};

use crate::view::{Announcement, View};

/// How often users in their grace period are looked at again.
const TICK: Duration = Duration::from_millis(200);
/// How often every user is reconsidered (repairs a write that failed) and
/// stale socket keys are removed.
const SWEEP: Duration = Duration::from_secs(5);
/// A dead gateway's socket keys are removed this long after it went.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// The shared state of one presence instance.
pub struct Tracker {
    view: Mutex<View>,
    /// Users whose announced state changed (for `WatchPresence`).
    changes: broadcast::Sender<String>,
}

#[derive(Clone, Copy, Debug)]
enum Bucket {
    Gateways,
    Connections,
    Users,
}

impl Tracker {
    pub fn new(grace: Duration) -> Self {
        Self { view: Mutex::new(View::new(grace)), changes: broadcast::channel(1024).0 }
    }

    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Follows the buckets and acts on the view until `shutdown`.
    pub async fn run(self: Arc<Self>, buckets: Buckets, shutdown: CancellationToken) {
        let (tx, rx) = mpsc::channel(1024);
        tokio::join!(
            follow(buckets.gateways.clone(), Bucket::Gateways, tx.clone(), shutdown.clone()),
            follow(buckets.connections.clone(), Bucket::Connections, tx.clone(), shutdown.clone()),
            follow(buckets.users.clone(), Bucket::Users, tx, shutdown.clone()),
            self.act(rx, &buckets, shutdown.clone()),
        );
    }

    async fn act(&self, mut entries: mpsc::Receiver<(Bucket, Entry)>, buckets: &Buckets, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            let users = tokio::select! {
                () = shutdown.cancelled() => return,
                Some((bucket, entry)) = entries.recv() => self.apply(bucket, &entry),
                _ = tick.tick() => self.view().leaving(),
                _ = sweep.tick() => {
                    self.remove_stale(&buckets.connections).await;
                    self.view().users()
                }
            };
            for user_id in users {
                let decision = self.view().decide(&user_id, Instant::now(), now_ms());
                if let Some(announcement) = decision {
                    self.announce(&buckets.users, announcement).await;
                }
            }
        }
    }

    /// Applies one bucket entry; returns the users to reconsider.
    fn apply(&self, bucket: Bucket, entry: &Entry) -> Vec<String> {
        tracing::trace!(?bucket, key = %entry.key, revision = entry.revision, ?entry.operation, "entry");
        let mut view = self.view();
        match bucket {
            Bucket::Gateways => view.sockets.apply_gateway(entry, Instant::now()),
            Bucket::Connections => view.sockets.apply_connection(entry).into_iter().collect(),
            Bucket::Users if matches!(entry.operation, Operation::Delete | Operation::Purge) => Vec::new(),
            Bucket::Users => match PresenceState::decode(entry.value.as_ref()) {
                Ok(state) => {
                    if view.announced(&entry.key, state, entry.revision) {
                        let _ = self.changes.send(entry.key.clone());
                    }
                    // Another instance may have decided on an older view.
                    vec![entry.key.clone()]
                }
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable presence entry ignored");
                    Vec::new()
                }
            },
        }
    }

    /// Writes an announcement if nobody changed the user's state meanwhile.
    async fn announce(&self, users: &kv::Store, announcement: Announcement) {
        let Announcement { user_id, state, revision } = announcement;
        match users.update(&user_id, state.encode_to_vec().into(), revision).await {
            Ok(new_revision) => {
                tracing::debug!(online = state.online, "presence changed");
                crate::metrics::get()
                    .announced
                    .get_or_create(&chat_common::metrics::label("status", PresenceStatus::of(state.online).word()))
                    .inc();
                if self.view().announced(&user_id, state, new_revision) {
                    let _ = self.changes.send(user_id);
                }
            }
            // Another instance got there first; its write arrives through the watch.
            Err(e) if chat_common::nats::lost_a_race(&e) => {}
            Err(e) => tracing::warn!(error = %e, "cannot announce a presence change; retrying on the next sweep"),
        }
    }

    /// Removes socket keys of gateways that went away, unless the gateway
    /// wrote them again meanwhile (compare-and-set on the revision).
    async fn remove_stale(&self, connections: &kv::Store) {
        let stale = self.view().sockets.stale_sockets(Instant::now(), now_ms(), STALE_AFTER);
        for socket in stale {
            let purged = connections
                .purge_expect_revision_with_ttl(&socket.key, socket.revision, chat_common::nats::presence::MARKER_TTL)
                .await;
            if let Err(e) = purged {
                tracing::debug!(error = %e, "stale socket key not removed");
            }
        }
    }
}

/// Sends every entry of a bucket (the current value of each key, then each change) to `tx`.
async fn follow(store: kv::Store, bucket: Bucket, tx: mpsc::Sender<(Bucket, Entry)>, shutdown: CancellationToken) {
    chat_common::nats::follow_bucket(&store, &shutdown, |entry| {
        let tx = tx.clone();
        async move { tx.send((bucket, entry)).await.is_ok() }
    })
    .await;
}
