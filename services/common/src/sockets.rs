//! The read side of the presence buckets (`nats::presence`): which users have
//! an open socket on a live gateway. Presence decides online/offline from it;
//! notification asks it whether a recipient has any device connected. A socket
//! counts only while its gateway's heartbeat key lives, so a gateway that died
//! without a word stops counting once the server expires its key.
//!
//! Every open socket of the deployment has an entry here, in every presence
//! and notification instance, so an entry is kept small: the socket's key and
//! its user are shared between the two maps (`Arc<str>`), and a gateway is a
//! number.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Entry, Operation};
use chat_proto::presence::v1::Connection;
use prost::Message as _;

#[derive(Debug)]
struct Socket {
    gateway: GatewayNo,
    user_id: Arc<str>,
    device_id: Box<str>,
    revision: u64,
    /// Wall-clock ms when the gateway wrote the key.
    created_ms: i64,
}

/// A gateway's place in `SocketIndex::gateways`.
type GatewayNo = u32;

#[derive(Debug)]
struct Gateway {
    alive: bool,
    /// When it was seen going away.
    gone_at: Option<Instant>,
}

/// A socket key to remove: its gateway is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSocket {
    pub key: String,
    pub revision: u64,
}

#[derive(Default)]
pub struct SocketIndex {
    /// Every gateway ever named by a key or a heartbeat: one per gateway
    /// start, about a hundred bytes each, kept for the process's life.
    gateways: Vec<Gateway>,
    gateway_numbers: HashMap<Box<str>, GatewayNo>,
    /// By key, `<gateway_id>.<connection_id>`.
    sockets: HashMap<Arc<str>, Socket>,
    /// The keys of each user's sockets.
    by_user: HashMap<Arc<str>, Vec<Arc<str>>>,
}

fn is_removal(entry: &Entry) -> bool {
    matches!(entry.operation, Operation::Delete | Operation::Purge)
}

impl SocketIndex {
    /// Applies an entry of the gateways bucket; returns the users whose
    /// sockets start or stop counting.
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

    fn gateway_no(&mut self, gateway_id: &str) -> GatewayNo {
        if let Some(&no) = self.gateway_numbers.get(gateway_id) {
            return no;
        }
        let no = GatewayNo::try_from(self.gateways.len()).expect("fewer than 2^32 gateways");
        self.gateways.push(Gateway { alive: false, gone_at: None });
        self.gateway_numbers.insert(gateway_id.into(), no);
        no
    }

    /// A gateway's heartbeat key was written (`alive`) or expired/purged.
    /// Returns the users whose sockets it holds if that changed whether they
    /// count (a heartbeat of a gateway already alive changes nothing).
    pub fn gateway(&mut self, gateway_id: &str, alive: bool, now: Instant) -> Vec<String> {
        let no = self.gateway_no(gateway_id);
        let gateway = &mut self.gateways[no as usize];
        let changed = gateway.alive != alive;
        gateway.alive = alive;
        gateway.gone_at = if alive { None } else { gateway.gone_at.or(Some(now)) };
        if !changed {
            return Vec::new();
        }
        let mut users: Vec<String> =
            self.sockets.values().filter(|s| s.gateway == no).map(|s| s.user_id.to_string()).collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// A socket key was written. Keys are `<gateway_id>.<connection_id>`.
    pub fn socket_opened(&mut self, key: &str, user_id: &str, device_id: &str, revision: u64, created_ms: i64) {
        let Some((gateway_id, _)) = key.split_once('.') else { return };
        self.socket_closed(key);
        let gateway = self.gateway_no(gateway_id);
        let key: Arc<str> = key.into();
        let user_id = match self.by_user.get_key_value(user_id) {
            Some((user_id, _)) => user_id.clone(),
            None => Arc::from(user_id),
        };
        // Most users hold one socket: room for exactly one (a first push
        // would make room for four). An emptied list is removed.
        self.by_user.entry(user_id.clone()).or_insert_with(|| Vec::with_capacity(1)).push(key.clone());
        let socket = Socket { gateway, user_id, device_id: device_id.into(), revision, created_ms };
        self.sockets.insert(key, socket);
    }

    /// A socket key was purged. Returns its user, if it was known.
    pub fn socket_closed(&mut self, key: &str) -> Option<String> {
        let socket = self.sockets.remove(key)?;
        if let Some(keys) = self.by_user.get_mut(&*socket.user_id) {
            keys.retain(|k| &**k != key);
            if keys.is_empty() {
                self.by_user.remove(&*socket.user_id);
            }
        }
        Some(socket.user_id.to_string())
    }

    /// The user's sockets on a live gateway.
    fn counting(&self, user_id: &str) -> impl Iterator<Item = &Socket> {
        let keys = self.by_user.get(user_id).into_iter().flatten();
        keys.filter_map(|k| self.sockets.get(k)).filter(|s| self.gateways[s.gateway as usize].alive)
    }

    /// Devices of the user with a socket on a live gateway.
    pub fn devices(&self, user_id: &str) -> HashSet<&str> {
        self.counting(user_id).map(|s| &*s.device_id).collect()
    }

    pub fn is_connected(&self, user_id: &str) -> bool {
        self.counting(user_id).next().is_some()
    }

    /// Users with a socket key (counting or not).
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.by_user.keys().map(|u| &**u)
    }

    /// Socket keys left behind by gateways that went away more than `after`
    /// ago, or that this instance never saw alive, written more than `after` ago.
    pub fn stale_sockets(&self, now: Instant, now_ms: i64, after: Duration) -> Vec<StaleSocket> {
        let written_before = now_ms - after.as_millis() as i64;
        self.sockets
            .iter()
            .filter(|(_, s)| {
                let gateway = &self.gateways[s.gateway as usize];
                !gateway.alive
                    && match gateway.gone_at {
                        Some(gone_at) => now.duration_since(gone_at) >= after,
                        None => s.created_ms <= written_before,
                    }
            })
            .map(|(key, s)| StaleSocket { key: key.to_string(), revision: s.revision })
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

    #[test]
    fn a_heartbeat_of_a_gateway_already_alive_concerns_nobody() {
        let now = Instant::now();
        let mut index = SocketIndex::default();
        index.socket_opened("g1.c1", "alice", "d1", 1, 0);
        index.socket_opened("g1.c2", "alice", "d2", 2, 0);
        index.socket_opened("g1.c3", "bob", "d1", 3, 0);
        assert_eq!(index.gateway("g1", true, now), vec!["alice".to_owned(), "bob".to_owned()], "each user once");
        assert_eq!(index.gateway("g1", true, now), Vec::<String>::new());
        assert_eq!(index.gateway("g2", false, now), Vec::<String>::new(), "never alive, holds nothing");
    }

    #[test]
    fn a_user_is_connected_until_the_last_socket_closes() {
        let now = Instant::now();
        let mut index = SocketIndex::default();
        index.gateway("g1", true, now);
        index.socket_opened("g1.c1", "alice", "phone", 1, 0);
        index.socket_opened("g1.c2", "alice", "laptop", 2, 0);
        index.socket_opened("g1.c3", "alice", "laptop", 3, 0);
        assert_eq!(index.devices("alice").len(), 2, "devices, not sockets");
        assert_eq!(index.socket_closed("g1.c2").as_deref(), Some("alice"));
        assert_eq!(index.socket_closed("g1.c2"), None, "closed twice");
        assert_eq!(index.socket_closed("g1.c1").as_deref(), Some("alice"));
        assert!(index.is_connected("alice"));
        index.socket_closed("g1.c3");
        assert!(!index.is_connected("alice"));
        assert_eq!(index.users().count(), 0, "nothing kept for a user without sockets");
    }
}
