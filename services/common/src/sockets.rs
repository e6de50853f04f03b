//! The read side of the presence buckets (`nats::presence`): which users have
//! an open socket on a live gateway. Presence decides online/offline from it;
//! notification asks it whether a recipient has any device connected. A socket
//! counts only while its gateway's heartbeat key lives, so a gateway that died
//! without a word stops counting once the server expires its key.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Entry, Operation};
use chat_proto::presence::v1::Connection;
use prost::Message as _;

#[derive(Debug, Clone)]
struct Socket {
    gateway_id: String,
    user_id: String,
    device_id: String,
    revision: u64,
    /// Wall-clock ms when the gateway wrote the key.
    created_ms: i64,
}

/// A socket key to remove: its gateway is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSocket {
    pub key: String,
    pub revision: u64,
}

#[derive(Default)]
pub struct SocketIndex {
    live_gateways: HashSet<String>,
    /// Gateways seen going away, and when.
    gone_gateways: HashMap<String, Instant>,
    sockets: HashMap<String, Socket>,
    by_user: HashMap<String, HashSet<String>>,
    by_gateway: HashMap<String, HashSet<String>>,
}

fn is_removal(entry: &Entry) -> bool {
    matches!(entry.operation, Operation::Delete | Operation::Purge)
}

impl SocketIndex {
    /// Applies an entry of the gateways bucket; returns the users whose
    /// sockets that gateway holds.
    pub fn apply_gateway(&mut self, entry: &Entry, now: Instant) -> Vec<String> {
        self.gateway(&entry.key, !is_removal(entry), now)
    }

    /// Applies an entry of the connections bucket; returns the user it concerns.
    pub fn apply_connection(&mut self, entry: &Entry) -> Option<String> {
        if is_removal(entry) {
            return self.socket_closed(&entry.key);
        }
        match Connection::decode(entry.value.as_ref()) {
            Ok(c) => {
                let created_ms = (entry.created.unix_timestamp_nanos() / 1_000_000) as i64;
                self.socket_opened(&entry.key, &c.user_id, &c.device_id, entry.revision, created_ms);
                Some(c.user_id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "undecodable connection entry ignored");
                None
            }
        }
    }

    /// A gateway's heartbeat key was written (`alive`) or expired/purged.
    /// Returns the users whose sockets it holds.
    pub fn gateway(&mut self, gateway_id: &str, alive: bool, now: Instant) -> Vec<String> {
        if alive {
            self.live_gateways.insert(gateway_id.to_owned());
            self.gone_gateways.remove(gateway_id);
        } else {
            self.live_gateways.remove(gateway_id);
            self.gone_gateways.insert(gateway_id.to_owned(), now);
        }
        let keys = self.by_gateway.get(gateway_id).into_iter().flatten();
        let users: HashSet<&String> = keys.filter_map(|k| self.sockets.get(k)).map(|s| &s.user_id).collect();
        users.into_iter().cloned().collect()
    }

    /// A socket key was written. Keys are `<gateway_id>.<connection_id>`.
    pub fn socket_opened(&mut self, key: &str, user_id: &str, device_id: &str, revision: u64, created_ms: i64) {
        let Some((gateway_id, _)) = key.split_once('.') else { return };
        self.socket_closed(key);
        let socket = Socket {
            gateway_id: gateway_id.to_owned(),
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            revision,
            created_ms,
        };
        self.sockets.insert(key.to_owned(), socket);
        self.by_user.entry(user_id.to_owned()).or_default().insert(key.to_owned());
        self.by_gateway.entry(gateway_id.to_owned()).or_default().insert(key.to_owned());
    }

    /// A socket key was purged. Returns its user, if it was known.
    pub fn socket_closed(&mut self, key: &str) -> Option<String> {
        let socket = self.sockets.remove(key)?;
        remove_from(&mut self.by_user, &socket.user_id, key);
        remove_from(&mut self.by_gateway, &socket.gateway_id, key);
        Some(socket.user_id)
    }

    /// Devices of the user with a socket on a live gateway.
    pub fn devices(&self, user_id: &str) -> HashSet<&str> {
        let keys = self.by_user.get(user_id).into_iter().flatten();
        keys.filter_map(|k| self.sockets.get(k))
            .filter(|s| self.live_gateways.contains(&s.gateway_id))
            .map(|s| s.device_id.as_str())
            .collect()
    }

    pub fn is_connected(&self, user_id: &str) -> bool {
        !self.devices(user_id).is_empty()
    }

    /// Users with a socket key (counting or not).
    pub fn users(&self) -> impl Iterator<Item = &String> {
        self.by_user.keys()
    }

    /// Socket keys left behind by gateways that went away more than `after`
    /// ago, or that this instance never saw alive, written more than `after` ago.
    pub fn stale_sockets(&self, now: Instant, now_ms: i64, after: Duration) -> Vec<StaleSocket> {
        let written_before = now_ms - after.as_millis() as i64;
        self.sockets
            .iter()
            .filter(|(_, s)| !self.live_gateways.contains(&s.gateway_id))
            .filter(|(_, s)| match self.gone_gateways.get(&s.gateway_id) {
                Some(gone_at) => now.duration_since(*gone_at) >= after,
                None => s.created_ms <= written_before,
            })
            .map(|(key, s)| StaleSocket { key: key.clone(), revision: s.revision })
            .collect()
    }
}

/// Keeps `index` current from the presence buckets until `shutdown` (for
/// services that only need to know who is connected).
pub async fn follow(
    buckets: &crate::nats::presence::Buckets,
    index: &std::sync::Mutex<SocketIndex>,
    shutdown: &crate::shutdown::CancellationToken,
) {
    let lock = || index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::join!(
        crate::nats::follow_bucket(&buckets.gateways, shutdown, |entry| {
            lock().apply_gateway(&entry, Instant::now());
            std::future::ready(true)
        }),
        crate::nats::follow_bucket(&buckets.connections, shutdown, |entry| {
            lock().apply_connection(&entry);
            std::future::ready(true)
        }),
    );
}

fn remove_from(index: &mut HashMap<String, HashSet<String>>, owner: &str, key: &str) {
    if let Some(keys) = index.get_mut(owner) {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_count_only_on_live_gateways() {
        let now = Instant::now();
        let mut index = SocketIndex::default();
        index.socket_opened("g1.c1", "alice", "d1", 1, 0);
        assert!(!index.is_connected("alice"), "gateway not seen alive yet");
        assert_eq!(index.gateway("g1", true, now), vec!["alice".to_owned()]);
        assert!(index.is_connected("alice"));
        index.gateway("g1", false, now);
        assert!(!index.is_connected("alice"));
    }

    #[test]
    fn sockets_of_gone_gateways_become_stale_after_a_while() {
        let now = Instant::now();
        let mut index = SocketIndex::default();
        index.gateway("g1", true, now);
        index.socket_opened("g1.c1", "alice", "d1", 9, 50_000);
        index.socket_opened("g0.c1", "bob", "d1", 2, 50_000);
        let wait = Duration::from_secs(10);
        assert_eq!(index.stale_sockets(now, 59_999, wait), vec![], "g0 unknown, but its key is recent");
        assert_eq!(index.stale_sockets(now, 60_000, wait), vec![StaleSocket { key: "g0.c1".into(), revision: 2 }]);
        index.gateway("g1", false, now);
        assert_eq!(index.stale_sockets(now, 0, wait), vec![], "g1 went away just now");
        assert_eq!(index.stale_sockets(now + wait, 0, wait), vec![StaleSocket { key: "g1.c1".into(), revision: 9 }]);
    }
}
