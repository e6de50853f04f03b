//! The gateway's part of presence. It records every open socket in the
//! connections bucket and keeps its own heartbeat key alive with a per-message
//! TTL, so when it dies without a word the server expires the key and presence
//! stops counting its sockets. It also follows the users bucket (where presence
//! announces changes) and tells local users about their contacts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use chat_common::nats::presence::{Buckets, GATEWAYS_BUCKET, MARKER_TTL, key_subject};
use chat_common::shutdown::CancellationToken;
use chat_proto::presence::v1::{Connection, PresenceState, PresenceStatus};
use prost::Message as _;

use crate::delivery::Registry;
use crate::tokens::Identity;

/// Attempts to remove a closed socket's key before giving up (the sweep in
/// presence removes it once this gateway is gone).
const REMOVE_ATTEMPTS: u32 = 8;
/// How long shutdown waits to remove this gateway's heartbeat key.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct PresenceReporter {
    js: jetstream::Context,
    connections: kv::Store,
    /// Names this process in the buckets; new on every start, so a restarted
    /// gateway never inherits keys from its previous life.
    gateway_id: String,
    ttl: Duration,
    /// This gateway's open sockets, recorded again if its heartbeat lapsed.
    open: Mutex<HashMap<u64, OpenSocket>>,
}

/// An open socket as the connections bucket records it; its ids are the
/// socket's own (shared, not copied).
struct OpenSocket {
    user_id: Arc<str>,
    device_id: Arc<str>,
    connected_at_ms: i64,
}

impl OpenSocket {
    fn record(&self) -> Vec<u8> {
        let connection = Connection {
            user_id: self.user_id.to_string(),
            device_id: self.device_id.to_string(),
            connected_at_ms: self.connected_at_ms,
        };
        connection.encode_to_vec()
    }
}

impl PresenceReporter {
    pub fn new(js: jetstream::Context, buckets: &Buckets, ttl: Duration) -> Self {
        Self {
            js,
            connections: buckets.connections.clone(),
            gateway_id: uuid::Uuid::new_v4().simple().to_string(),
            ttl: ttl.max(Duration::from_secs(1)),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, socket_id: u64) -> String {
        format!("{}.{socket_id}", self.gateway_id)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenSocket>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an open socket.
    pub async fn opened(&self, socket_id: u64, identity: &Identity) {
        let socket = OpenSocket {
            user_id: identity.user_id.clone(),
            device_id: identity.device_id.clone(),
            connected_at_ms: chat_common::time::now_ms(),
        };
        let record = socket.record();
        self.open().insert(socket_id, socket);
        if let Err(e) = self.connections.put(self.key(socket_id), record.into()).await {
            tracing::warn!(error = %e, "cannot record a socket for presence; the next heartbeat retries");
        }
    }

    /// Removes a closed socket's key, retrying in the background.
    pub fn closed(self: &Arc<Self>, socket_id: u64) {
        self.open().remove(&socket_id);
        let this = self.clone();
        tokio::spawn(async move {
            let key = this.key(socket_id);
            for attempt in 0..REMOVE_ATTEMPTS {
                match this.connections.purge_with_ttl(&key, MARKER_TTL).await {
                    Ok(()) => return,
                    Err(e) if attempt + 1 == REMOVE_ATTEMPTS => {
                        tracing::warn!(error = %e, "cannot remove a closed socket from presence");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250 << attempt)).await,
                }
            }
        });
    }

    /// Refreshes this gateway's heartbeat key every third of its TTL until
    /// `shutdown`, then removes it. The refresh expects the key's previous
    /// revision: if the key lapsed meanwhile (NATS was unreachable for longer
    /// than the TTL), presence may have dropped this gateway's sockets, so
    /// they are recorded again first.
    pub async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let subject = key_subject(GATEWAYS_BUCKET, &self.gateway_id);
        let mut every = tokio::time::interval(self.ttl / 3);
        let mut last: Option<u64> = None;
        let mut lapsed = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            if lapsed {
                self.record_all().await;
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-TTL", self.ttl.as_secs().to_string().as_str());
            if let Some(revision) = last {
                headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, revision.to_string().as_str());
            }
            let sent = match self.js.publish_with_headers(subject.clone(), headers, Default::default()).await {
                Ok(ack) => ack.await.map(|ack| ack.sequence).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(revision) => {
                    last = Some(revision);
                    lapsed = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "presence heartbeat failed");
                    last = None;
                    lapsed = true;
                }
            }
        }
        // Saying goodbye is a courtesy (the key expires anyway): never hold up
        // shutdown for it, e.g. when nats-server is stopping at the same time.
        let goodbye = async {
            let gateways = self.js.get_key_value(GATEWAYS_BUCKET).await.map_err(|e| e.to_string())?;
            gateways.purge_with_ttl(&self.gateway_id, MARKER_TTL).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove this gateway from presence"),
            Err(_) => tracing::warn!("removing this gateway from presence timed out; its key will expire"),
        }
    }

    async fn record_all(&self) {
        let open: Vec<(u64, Vec<u8>)> = self.open().iter().map(|(id, socket)| (*id, socket.record())).collect();
        for (socket_id, record) in open {
            if let Err(e) = self.connections.put(self.key(socket_id), record.into()).await {
                tracing::warn!(error = %e, "cannot record a socket for presence");
            }
        }
    }
}

/// A user's presence as protocol v1 shows it: `status`, and `last_seen_at`
/// (now for an online user; when the last device went away for an offline
/// one; null when never seen).
pub fn json(user_id: &str, online: bool, last_seen_at_ms: i64) -> serde_json::Value {
    let last_seen_at = crate::protocol::last_seen_at(online, last_seen_at_ms);
    serde_json::json!({
        "user_id": user_id,
        "status": PresenceStatus::of(online).word(),
        "last_seen_at": last_seen_at,
    })
}

/// Follows the users bucket and hands every change to the registry, which
/// tells the local users who share a conversation with that user.
pub async fn follow_announcements(users: kv::Store, registry: Arc<Registry>, shutdown: CancellationToken) {
    chat_common::nats::follow_bucket(&users, &shutdown, |entry| {
        match PresenceState::decode(entry.value.as_ref()) {
            Ok(state) => registry.presence_changed(&entry.key, &state),
            Err(e) => tracing::debug!(error = %e, "undecodable presence entry ignored"),
        }
        std::future::ready(true)
    })
    .await;
}
