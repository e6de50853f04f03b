//! Who blocked whom. A block is a key `<blocker>.<blocked>` in the
//! `user_blocks` key-value bucket (value: when, in Unix ms); unblocking
//! deletes the key. The gateway writes it and, with notification, follows the
//! whole bucket into a [`Blocks`] view held in memory: the checks sit on the
//! hot path of every delivery (is this sender hidden from this member?), so
//! they are a hash lookup, and an empty view costs one.
//!
//! Blocks are few next to users, so every follower holds all of them (about
//! 150 bytes each). A deleted key stays as a delete marker (the bucket keeps
//! one entry per key), so a follower that resumes its watch later still sees
//! the unblock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tokio::sync::watch;

use crate::shutdown::CancellationToken;

/// The bucket of blocks.
pub const BUCKET: &str = "user_blocks";

/// The key of one block.
pub fn key(blocker: &str, blocked: &str) -> String {
    format!("{blocker}.{blocked}")
}

/// The bucket, created when missing (entries never expire).
///
/// # Errors
/// When JetStream is unavailable.
pub async fn bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    crate::nats::key_value(js, BUCKET, Duration::ZERO, replicas).await
}

/// The bucket's newest revision now: a view that has caught up to it holds
/// every block made before (0 when the bucket cannot be asked).
pub async fn newest_revision(bucket: &kv::Store) -> u64 {
    bucket.stream.clone().info().await.map_or(0, |info| info.state.last_sequence)
}

/// The bucket if it exists, `None` if no gateway ever made it (nobody
/// blocked anybody), for a reader that must not make it.
///
/// # Errors
/// When JetStream does not answer: that is not "no blocks".
pub async fn existing_bucket(js: &jetstream::Context) -> Result<Option<kv::Store>, async_nats::Error> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    match js.get_stream(format!("KV_{BUCKET}")).await {
        Ok(_) => Ok(Some(js.get_key_value(BUCKET).await?)),
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Every block of the deployment, as followed from the bucket.
pub struct Blocks {
    pairs: RwLock<Pairs>,
    /// The bucket revision applied last.
    applied: watch::Sender<u64>,
}

#[derive(Default)]
struct Pairs {
    /// Blocker → the users they blocked, with when.
    by_blocker: HashMap<String, HashMap<String, i64>>,
    /// Blocked user → who blocked them.
    by_blocked: HashMap<String, HashSet<String>>,
}

impl Default for Blocks {
    fn default() -> Self {
        Self { pairs: RwLock::default(), applied: watch::Sender::new(0) }
    }
}

impl Blocks {
    fn read(&self) -> RwLockReadGuard<'_, Pairs> {
        self.pairs.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `viewer` blocked `sender`: the sender's messages are hidden from the viewer.
    pub fn hides(&self, viewer: &str, sender: &str) -> bool {
        self.read().by_blocker.get(viewer).is_some_and(|b| b.contains_key(sender))
    }

    /// Whether either of two users blocked the other: neither sees the
    /// other's presence or typing.
    pub fn between(&self, a: &str, b: &str) -> bool {
        let pairs = self.read();
        let blocked = |x: &str, y: &str| pairs.by_blocker.get(x).is_some_and(|set| set.contains_key(y));
        blocked(a, b) || blocked(b, a)
    }

    /// Who blocked `sender` (most often nobody: then no allocation).
    pub fn blockers_of(&self, sender: &str) -> Vec<String> {
        self.read().by_blocked.get(sender).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// The users `blocker` blocked, with when (Unix ms), oldest first.
    pub fn blocked_by(&self, blocker: &str) -> Vec<(String, i64)> {
        let mut blocked: Vec<_> = self
            .read()
            .by_blocker
            .get(blocker)
            .map(|b| b.iter().map(|(id, at)| (id.clone(), *at)).collect())
            .unwrap_or_default();
        blocked.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        blocked
    }

    /// Applies one entry of the bucket.
    pub fn apply(&self, entry: &kv::Entry) {
        if let Some((blocker, blocked)) = entry.key.split_once('.') {
            let at = (entry.operation == kv::Operation::Put)
                .then(|| std::str::from_utf8(&entry.value).ok().and_then(|v| v.parse().ok()).unwrap_or_default());
            self.set(blocker, blocked, at);
        }
        self.applied.send_if_modified(|applied| {
            let newer = entry.revision > *applied;
            *applied = (*applied).max(entry.revision);
            newer
        });
    }

    /// Lifts a block in this view at once, for the process that just lifted
    /// it in the bucket (a deletion tells no revision to wait for).
    pub fn forget(&self, blocker: &str, blocked: &str) {
        self.set(blocker, blocked, None);
    }

    /// Records a block made at `at`, or lifts it (`None`).
    fn set(&self, blocker: &str, blocked: &str, at: Option<i64>) {
        let mut pairs = self.pairs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = at {
            pairs.by_blocker.entry(blocker.to_owned()).or_default().insert(blocked.to_owned(), at);
            pairs.by_blocked.entry(blocked.to_owned()).or_default().insert(blocker.to_owned());
            return;
        }
        if let Some(set) = pairs.by_blocker.get_mut(blocker) {
            set.remove(blocked);
            if set.is_empty() {
                pairs.by_blocker.remove(blocker);
            }
        }
        if let Some(set) = pairs.by_blocked.get_mut(blocked) {
            set.remove(blocker);
            if set.is_empty() {
                pairs.by_blocked.remove(blocked);
            }
        }
    }

    /// Waits until the view holds the bucket up to `revision` (a change this
    /// process just wrote), at most `limit`. Returns whether it does.
    pub async fn caught_up_to(&self, revision: u64, limit: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(limit, applied.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// Follows the bucket into this view until `shutdown`.
    pub async fn follow(self: Arc<Self>, bucket: kv::Store, shutdown: CancellationToken) {
        crate::nats::follow_bucket(&bucket, &shutdown, |entry| {
            self.apply(&entry);
            std::future::ready(true)
        })
        .await;
    }
}

/// Records that `blocker` blocked `blocked`; returns the bucket revision.
///
/// # Errors
/// When JetStream does not take the write.
pub async fn block(bucket: &kv::Store, blocker: &str, blocked: &str) -> Result<u64, kv::PutError> {
    let now = crate::time::now_ms().to_string();
    bucket.put(key(blocker, blocked), now.into_bytes().into()).await
}

/// Lifts a block (harmless when there is none).
///
/// # Errors
/// When JetStream does not take the write.
pub async fn unblock(bucket: &kv::Store, blocker: &str, blocked: &str) -> Result<(), kv::DeleteError> {
    bucket.delete(key(blocker, blocked)).await
}

/// Lifts every block `user_id` made or is the subject of (an erased user);
/// returns how many. Reads every key: an operator's action, not a hot path.
///
/// # Errors
/// When JetStream does not answer or take a deletion.
pub async fn forget_user(bucket: &kv::Store, user_id: &str) -> Result<usize, async_nats::Error> {
    use futures::TryStreamExt as _;
    let keys: Vec<String> = bucket.keys().await?.try_collect().await?;
    let mine = |key: &&String| key.split_once('.').is_some_and(|(a, b)| a == user_id || b == user_id);
    let theirs: Vec<&String> = keys.iter().filter(mine).collect();
    for key in &theirs {
        bucket.delete(key).await?;
    }
    Ok(theirs.len())
}

/// Whether `blocker` blocked `blocked`, read from the bucket itself (for a
/// decision that must see a block made a moment ago on another gateway).
///
/// # Errors
/// When JetStream does not answer.
pub async fn is_blocked(bucket: &kv::Store, blocker: &str, blocked: &str) -> Result<bool, kv::EntryError> {
    Ok(bucket.get(key(blocker, blocked)).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, operation: kv::Operation, revision: u64) -> kv::Entry {
        kv::Entry {
            bucket: BUCKET.to_owned(),
            key: key.to_owned(),
            value: b"1700000000000".to_vec().into(),
            revision,
            delta: 0,
            created: time::OffsetDateTime::UNIX_EPOCH,
            operation,
            seen_current: false,
        }
    }

    #[tokio::test]
    async fn a_block_hides_one_way_and_separates_both_ways_until_lifted() {
        let blocks = Blocks::default();
        blocks.apply(&entry("a.b", kv::Operation::Put, 1));
        assert!(blocks.hides("a", "b"));
        assert!(!blocks.hides("b", "a"));
        assert!(blocks.between("a", "b") && blocks.between("b", "a"));
        assert_eq!(blocks.blockers_of("b"), vec!["a".to_owned()]);
        assert_eq!(blocks.blocked_by("a"), vec![("b".to_owned(), 1_700_000_000_000)]);
        assert!(blocks.caught_up_to(1, Duration::from_millis(1)).await);
        assert!(!blocks.caught_up_to(2, Duration::from_millis(1)).await);

        blocks.apply(&entry("a.b", kv::Operation::Delete, 2));
        blocks.forget("a", "b"); // twice is harmless
        assert!(!blocks.hides("a", "b") && !blocks.between("a", "b"));
        assert!(blocks.blockers_of("b").is_empty() && blocks.blocked_by("a").is_empty());
        let pairs = blocks.read();
        assert!(pairs.by_blocker.is_empty() && pairs.by_blocked.is_empty(), "nothing is kept for a lifted block");
    }
}
