//! Every instance's view of a key-value bucket whose keys start with a user
//! id (`<user>.…`): followed from the bucket, so all instances see the same
//! entries and a restart rebuilds it, and grouped by user, so a user's entries
//! are found without scanning the stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::jetstream::kv::{Entry, Operation, Store};
use chat_common::shutdown::CancellationToken;

/// An entry: its key, bucket revision and decoded value.
pub type Item<T> = (String, u64, T);

/// A user's entries: key → (revision, value), in key order.
type OfUser<T> = BTreeMap<String, (u64, T)>;

pub struct UserIndex<T> {
    entries: Mutex<HashMap<String, OfUser<T>>>,
    /// The newest revision the bucket's watch has brought. The watch brings
    /// entries in revision order, so every entry up to it is here; an entry
    /// this instance wrote itself may be here before the ones under it that
    /// other instances wrote.
    seen: tokio::sync::watch::Sender<u64>,
    /// Whether every entry the bucket held when the index started following
    /// it is here.
    loaded: tokio::sync::watch::Sender<bool>,
}

fn user_of(key: &str) -> &str {
    key.split('.').next().unwrap_or_default()
}

impl<T: prost::Message + Default + Clone> UserIndex<T> {
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            seen: tokio::sync::watch::channel(0).0,
            loaded: tokio::sync::watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, OfUser<T>>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the index current from `bucket` until `shutdown`.
    pub async fn follow(self: Arc<Self>, bucket: Store, shutdown: CancellationToken) {
        // An empty bucket brings no entry to say the watch is current. (A
        // bucket that cannot be asked is taken as not empty: its first entry
        // with `seen_current` then says so.)
        let mut stream = bucket.stream.clone();
        if stream.info().await.is_ok_and(|info| info.state.messages == 0) {
            self.loaded.send_replace(true);
        }
        chat_common::nats::follow_bucket(&bucket, &shutdown, |entry| {
            self.apply(&entry);
            if entry.seen_current {
                self.loaded.send_if_modified(|loaded| !std::mem::replace(loaded, true));
            }
            self.seen.send_if_modified(|seen| {
                let newer = entry.revision > *seen;
                if newer {
                    *seen = entry.revision;
                }
                newer
            });
            std::future::ready(true)
        })
        .await;
    }

    fn apply(&self, entry: &Entry) {
        if matches!(entry.operation, Operation::Delete | Operation::Purge) {
            self.forget(&entry.key);
        } else {
            match T::decode(entry.value.as_ref()) {
                Ok(value) => self.insert(&entry.key, entry.revision, value),
                Err(e) => tracing::warn!(error = %e, bucket = entry.bucket, "undecodable entry ignored"),
            }
        }
    }

    /// The newest revision the watch has brought: every entry up to it is here.
    pub fn seen(&self) -> u64 {
        *self.seen.borrow()
    }

    /// Waits until the watch has brought `revision`, so that every entry up
    /// to it is here; `false` if it has not within `limit`.
    pub async fn seen_up_to(&self, revision: u64, limit: std::time::Duration) -> bool {
        let mut seen = self.seen.subscribe();
        tokio::time::timeout(limit, seen.wait_for(|seen| *seen >= revision)).await.is_ok_and(|found| found.is_ok())
    }

    /// Waits until every entry the bucket held when the index started
    /// following it is here; `false` if that took longer than `limit`.
    pub async fn loaded(&self, limit: std::time::Duration) -> bool {
        let mut loaded = self.loaded.subscribe();
        tokio::time::timeout(limit, loaded.wait_for(|loaded| *loaded)).await.is_ok_and(|found| found.is_ok())
    }

    /// Records an entry this instance just wrote (the watch brings it too).
    pub fn insert(&self, key: &str, revision: u64, value: T) {
        let mut entries = self.lock();
        let of_user = entries.entry(user_of(key).to_owned()).or_default();
        if of_user.get(key).is_none_or(|(known, _)| *known <= revision) {
            of_user.insert(key.to_owned(), (revision, value));
        }
    }

    pub fn forget(&self, key: &str) {
        let mut entries = self.lock();
        let user = user_of(key);
        if let Some(of_user) = entries.get_mut(user) {
            of_user.remove(key);
            if of_user.is_empty() {
                entries.remove(user);
            }
        }
    }

    /// The user's entries, in key order.
    pub fn of(&self, user_id: &str) -> Vec<Item<T>> {
        let entries = self.lock();
        let of_user = entries.get(user_id).into_iter().flatten();
        of_user.map(|(key, (revision, value))| (key.clone(), *revision, value.clone())).collect()
    }

    /// How many entries the user has.
    pub fn count(&self, user_id: &str) -> usize {
        self.lock().get(user_id).map_or(0, BTreeMap::len)
    }

    /// Every entry of every user.
    pub fn all(&self) -> Vec<Item<T>> {
        let entries = self.lock();
        let all = entries.values().flatten();
        all.map(|(key, (revision, value))| (key.clone(), *revision, value.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::notification::v1::PendingDelivery;

    #[test]
    fn entries_are_grouped_by_user_and_never_go_back_in_revision() {
        let index = UserIndex::<PendingDelivery>::new();
        let delivery = |seq| PendingDelivery { seq, ..Default::default() };
        index.insert("alice.c1.2", 5, delivery(2));
        index.insert("alice.c1.1", 4, delivery(1));
        index.insert("bob.c1.1", 6, delivery(1));
        index.insert("alice.c1.2", 3, delivery(99));
        let alice: Vec<u64> = index.of("alice").into_iter().map(|(_, _, d)| d.seq).collect();
        assert_eq!(alice, vec![1, 2]);
        index.forget("alice.c1.1");
        index.forget("alice.c1.2");
        assert!(index.of("alice").is_empty());
        assert_eq!(index.all().len(), 1);
    }
}
