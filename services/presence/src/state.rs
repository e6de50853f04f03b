//! The live view: connected sockets per user, and when each user was last seen.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_nats::Subscriber;
use chat_common::shutdown::CancellationToken;
use chat_proto::presence::v1::{DeviceEvent, UserPresence, device_event::Kind};
use futures::StreamExt;
use prost::Message as _;

#[derive(Default)]
struct UserState {
    /// (device id, connection id) of every open socket.
    connections: HashSet<(String, String)>,
    last_seen_at_ms: i64,
}

#[derive(Default)]
pub struct Presence {
    users: Mutex<HashMap<String, UserState>>,
}

impl Presence {
    pub fn apply(&self, event: DeviceEvent) {
        let kind = event.kind();
        let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let user = users.entry(event.user_id).or_default();
        let key = (event.device_id, event.connection_id);
        match kind {
            Kind::Connected => {
                user.connections.insert(key);
            }
            Kind::Disconnected => {
                user.connections.remove(&key);
                user.last_seen_at_ms = user.last_seen_at_ms.max(event.at_ms);
            }
            Kind::Unspecified => {}
        }
    }

    pub fn get(&self, user_id: &str) -> UserPresence {
        let users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (devices, last_seen) = users.get(user_id).map_or((0, 0), |u| {
            let devices: HashSet<&String> = u.connections.iter().map(|(d, _)| d).collect();
            (devices.len() as u32, u.last_seen_at_ms)
        });
        UserPresence {
            user_id: user_id.to_owned(),
            status: if devices > 0 { "online" } else { "offline" }.to_owned(),
            last_seen_at_ms: if devices > 0 { 0 } else { last_seen },
            connected_devices: devices,
        }
    }
}

pub async fn apply_events(mut events: Subscriber, state: Arc<Presence>, shutdown: CancellationToken) {
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            next = events.next() => match next { Some(m) => m, None => return },
        };
        match DeviceEvent::decode(message.payload.as_ref()) {
            Ok(event) => state.apply(event),
            Err(e) => tracing::warn!(error = %e, "undecodable device event ignored"),
        }
    }
}
