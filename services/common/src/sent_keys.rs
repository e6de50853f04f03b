//! Which (sender, `client_msg_id`) keys were ever sent, held in memory so a
//! send needs no lookup to know it is new. A send is the common case and a
//! re-send the rare one, so the question asked on every send is "certainly
//! new?", which a Bloom filter answers without false negatives: "new" is
//! always right, "maybe sent" (a real re-send, or about 1 in 100 new keys) is
//! settled by asking history.
//!
//! A gateway fills it from the CHAT stream, which keeps every message unless
//! an operator set limits on it: first every message entry's `Nats-Msg-Id`
//! (the key) up to where its live consumer starts ([`load`]), then each entry
//! its live consumer reads, and each of its own appends as JetStream confirms
//! them. Entries published but not read yet (a few milliseconds of live lag)
//! are covered by JetStream's duplicate window. Until the load has finished,
//! or for good when the stream does not hold every message, the set answers
//! [`Known::Unknown`] and every send asks history.
//!
//! Memory: about 1.2 bytes per message ever sent (9.6 bits per key for a 1 %
//! false positive rate); a full layer is followed by one twice its size.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;

/// Bits per key and hash functions per key: a 1 % false positive rate.
const BITS_PER_KEY: u64 = 10;
const HASHES: u64 = 7;
/// Keys the first layer holds by default.
const FIRST_LAYER_KEYS: u64 = 1 << 20;
/// Keys any first layer holds at least.
const MIN_LAYER_KEYS: u64 = 64;

/// What the set knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Never sent.
    New,
    /// Perhaps sent before: ask the archive.
    Maybe,
    /// The set is not complete (still loading, or the stream does not hold
    /// every message): ask the archive.
    Unknown,
}

struct Layer {
    bits: Vec<u64>,
    capacity: u64,
    keys: u64,
}

impl Layer {
    fn with_capacity(capacity: u64) -> Self {
        let words = capacity.saturating_mul(BITS_PER_KEY).div_ceil(64).max(1);
        Self { bits: vec![0; words as usize], capacity, keys: 0 }
    }

    /// The `i`th bit position of a key (double hashing over its two halves).
    fn position(&self, (h1, h2): (u64, u64), i: u64) -> usize {
        (h1.wrapping_add(i.wrapping_mul(h2)) % (self.bits.len() as u64 * 64)) as usize
    }

    fn insert(&mut self, hash: (u64, u64)) {
        for i in 0..HASHES {
            let bit = self.position(hash, i);
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.keys += 1;
    }

    fn contains(&self, hash: (u64, u64)) -> bool {
        (0..HASHES).all(|i| {
            let bit = self.position(hash, i);
            self.bits[bit / 64] & (1 << (bit % 64)) != 0
        })
    }
}

/// The keys sent so far (see the module's documentation).
pub struct SentKeys {
    layers: RwLock<Vec<Layer>>,
    complete: AtomicBool,
    inserted: AtomicU64,
}

impl Default for SentKeys {
    fn default() -> Self {
        Self::with_capacity(FIRST_LAYER_KEYS)
    }
}

impl SentKeys {
    /// An empty set sized for a stream holding `messages` entries, plus a
    /// quarter: beyond that it grows by layers, so its memory follows what
    /// was sent rather than a multiple of it.
    pub fn for_stream(messages: u64) -> Self {
        Self::with_capacity(messages.saturating_add(messages / 4).max(FIRST_LAYER_KEYS))
    }

    /// An empty set whose first layer holds `keys` keys.
    pub fn with_capacity(keys: u64) -> Self {
        Self {
            layers: RwLock::new(vec![Layer::with_capacity(keys.max(MIN_LAYER_KEYS))]),
            complete: AtomicBool::new(false),
            inserted: AtomicU64::new(0),
        }
    }

    /// Adds a key ([`crate::conversation_log::idempotency_key`]).
    pub fn insert(&self, key: &str) {
        let hash = hash(key);
        let mut layers = self.layers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if layers.iter().any(|layer| layer.contains(hash)) {
            return;
        }
        let last = layers.last().expect("at least one layer");
        if last.keys >= last.capacity {
            let capacity = last.capacity.saturating_mul(2);
            layers.push(Layer::with_capacity(capacity));
        }
        layers.last_mut().expect("at least one layer").insert(hash);
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn check(&self, key: &str) -> Known {
        if !self.complete.load(Ordering::Acquire) {
            return Known::Unknown;
        }
        let hash = hash(key);
        let layers = self.layers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if layers.iter().any(|layer| layer.contains(hash)) { Known::Maybe } else { Known::New }
    }

    /// From now on every key sent is in the set (or in the duplicate window).
    pub fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Keys added that the set did not already call maybe sent.
    pub fn len(&self) -> u64 {
        self.inserted.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory the set holds.
    pub fn bytes(&self) -> usize {
        let layers = self.layers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        layers.iter().map(|layer| layer.bits.len() * 8).sum()
    }
}

/// A key's two 64-bit hashes. Keys are hex digests already; anything else
/// (a key from a newer writer) is hashed first.
fn hash(key: &str) -> (u64, u64) {
    let digest = match u128::from_str_radix(key, 16) {
        Ok(value) if key.len() == 32 => value,
        _ => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(key.as_bytes());
            u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
        }
    };
    (digest as u64, ((digest >> 64) as u64) | 1)
}

/// Why the set could not be made complete.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The stream has limits or deleted entries: keys older than its first
    /// entry are only in history. Not worth retrying.
    #[error("the CHAT stream does not hold every message ({0})")]
    Incomplete(String),
    /// NATS failed part-way. Retry.
    #[error("cannot read the CHAT stream: {0}")]
    Unavailable(String),
}

/// Adds the key of every message entry up to stream position `through`
/// (where the caller's live reading starts) and marks the set complete.
///
/// # Errors
/// `Incomplete` when the stream does not hold every message sent,
/// `Unavailable` when NATS fails.
pub async fn load(stream: &Stream, through: u64, keys: &SentKeys) -> Result<u64, LoadError> {
    let info = stream.get_info().await.map_err(|e| LoadError::Unavailable(e.to_string()))?;
    let (config, state) = (&info.config, &info.state);
    let limits = [
        (!config.max_age.is_zero(), "a max age"),
        (config.max_messages > 0, "a message limit"),
        (config.max_bytes > 0, "a size limit"),
        (config.max_messages_per_subject > 0, "a per-subject limit"),
        (state.first_sequence > 1, "entries removed from its start"),
        (state.deleted_count.unwrap_or(0) > 0, "entries deleted"),
    ];
    let found: Vec<&str> = limits.iter().filter(|(set, _)| *set).map(|(_, what)| *what).collect();
    if !found.is_empty() {
        return Err(LoadError::Incomplete(found.join(", ")));
    }
    let mut read = 0;
    if through > 0 {
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: crate::nats::message_subject("*"),
                deliver_policy: DeliverPolicy::All,
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(|e| LoadError::Unavailable(e.to_string()))?;
        let pending = consumer.cached_info().num_pending;
        let mut entries = consumer.messages().await.map_err(|e| LoadError::Unavailable(e.to_string()))?;
        if pending > 0 {
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(|e| LoadError::Unavailable(e.to_string()))?;
                let info = entry.info().map_err(|e| LoadError::Unavailable(e.to_string()))?;
                let (stream_seq, pending) = (info.stream_sequence, info.pending);
                if stream_seq > through {
                    break;
                }
                if let Some(key) = entry.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
                    keys.insert(key.as_str());
                    read += 1;
                }
                if stream_seq == through || pending == 0 {
                    break;
                }
            }
        }
    }
    keys.mark_complete();
    Ok(read)
}

/// [`load`], tried again every second while NATS fails, until it is done,
/// the stream turns out not to hold every message, or `shutdown`.
pub async fn load_until_done(
    stream: Stream,
    through: u64,
    keys: std::sync::Arc<SentKeys>,
    shutdown: crate::shutdown::CancellationToken,
) {
    let started = std::time::Instant::now();
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return,
            attempt = load(&stream, through, &keys) => attempt,
        };
        match attempt {
            Ok(read) => {
                tracing::info!(
                    read,
                    keys = keys.len(),
                    bytes = keys.bytes(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "the keys of every message sent are loaded; new sends ask nothing before publishing"
                );
                return;
            }
            Err(e @ LoadError::Incomplete(_)) => {
                tracing::warn!(error = %e, "every send asks history whether it is a re-send");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot load the keys of messages sent; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation_log::idempotency_key;

    fn complete(capacity: u64) -> SentKeys {
        let keys = SentKeys::with_capacity(capacity);
        keys.mark_complete();
        keys
    }

    #[test]
    fn unknown_until_complete() {
        let keys = SentKeys::with_capacity(100);
        keys.insert(&idempotency_key("u", "a"));
        assert_eq!(keys.check(&idempotency_key("u", "a")), Known::Unknown);
        assert_eq!(keys.check(&idempotency_key("u", "b")), Known::Unknown);
        keys.mark_complete();
        assert_eq!(keys.check(&idempotency_key("u", "a")), Known::Maybe);
        assert_eq!(keys.check(&idempotency_key("u", "b")), Known::New);
    }

    #[test]
    fn no_key_added_is_ever_called_new_and_few_others_are_called_maybe() {
        // Five times the first layer's capacity: the set grows new layers.
        let keys = complete(2_000);
        for i in 0..10_000 {
            keys.insert(&idempotency_key("sender", &i.to_string()));
        }
        for i in 0..10_000 {
            assert_eq!(keys.check(&idempotency_key("sender", &i.to_string())), Known::Maybe, "key {i}");
        }
        let false_positives =
            (10_000..30_000).filter(|i| keys.check(&idempotency_key("sender", &i.to_string())) == Known::Maybe).count();
        // Four layers at 1 % each: at most about 4 %.
        assert!(false_positives < 20_000 * 5 / 100, "{false_positives} of 20,000 new keys called maybe");
        // A key the set already calls maybe sent adds nothing.
        assert!((9_500..=10_000).contains(&keys.len()), "{} keys counted", keys.len());
        assert!(keys.bytes() < 10_000 * 4, "{} bytes for 10,000 keys", keys.bytes());
    }

    #[test]
    fn a_set_for_a_stream_holds_its_messages_and_a_quarter_never_less_than_the_default() {
        let bytes = |keys: u64| (keys * BITS_PER_KEY).div_ceil(64) as usize * 8;
        assert_eq!(SentKeys::for_stream(0).bytes(), bytes(FIRST_LAYER_KEYS));
        assert_eq!(SentKeys::for_stream(4_000_000).bytes(), bytes(5_000_000));
    }

    #[test]
    fn keys_of_another_shape_are_hashed_first() {
        let keys = complete(100);
        keys.insert("not-a-digest");
        assert_eq!(keys.check("not-a-digest"), Known::Maybe);
        keys.insert("");
        assert_eq!(keys.check(""), Known::Maybe);
        assert_eq!(keys.check(&idempotency_key("u", "x")), Known::New);
    }
}
