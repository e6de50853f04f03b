//! Typing indicators: published on core NATS per conversation, never stored.
//! Every gateway delivers them to its local sockets of the conversation's other
//! members and expires a `start` that is not renewed within 6 s with a `stop`,
//! so a client that vanishes mid-sentence does not leave "typing…" behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_common::shutdown::CancellationToken;
use chat_proto::events::v1::Typing as TypingEvent;
use futures::StreamExt;
use prost::Message as _;

use crate::delivery::Registry;
use crate::outbox::Frame;
use crate::protocol::{ServerFrame, TypingState};
use crate::tokens::Identity;

/// A `start` lasts this long unless renewed.
pub const EXPIRY: Duration = Duration::from_secs(6);
const SWEEP_EVERY: Duration = Duration::from_millis(250);

pub struct Typing {
    nats: async_nats::Client,
    registry: Arc<Registry>,
    /// (conversation, user) → when their `start` runs out, on this gateway.
    active: Mutex<HashMap<(String, String), Instant>>,
}

fn frame(conversation_id: &str, user_id: &str, start: bool) -> Frame {
    let state = TypingState::from_start(start);
    ServerFrame::Typing { conversation_id, user_id, state }.to_text().into()
}

impl Typing {
    pub fn new(nats: async_nats::Client, registry: Arc<Registry>) -> Self {
        Self { nats, registry, active: Mutex::new(HashMap::new()) }
    }

    /// Announces that `who` started or stopped typing (fire and forget).
    pub async fn publish(&self, who: &Identity, conversation_id: &str, start: bool) {
        let event = TypingEvent {
            conversation_id: conversation_id.to_owned(),
            user_id: who.user_id.to_string(),
            device_id: who.device_id.to_string(),
            start,
        };
        let subject = chat_common::nats::typing_subject(conversation_id);
        if let Err(e) = self.nats.publish(subject, event.encode_to_vec().into()).await {
            tracing::debug!(error = %e, "typing indicator not published");
        }
    }

    fn apply(&self, event: TypingEvent) {
        let key = (event.conversation_id, event.user_id);
        {
            let mut active = self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if event.start {
                active.insert(key.clone(), Instant::now() + EXPIRY);
            } else if active.remove(&key).is_none() {
                return; // nobody here saw it start
            }
        }
        self.registry.broadcast(&key.0, frame(&key.0, &key.1, event.start), &key.1);
    }

    fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<(String, String)> = {
            let mut active = self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let expired = active.iter().filter(|(_, until)| **until <= now).map(|(k, _)| k.clone()).collect::<Vec<_>>();
            for key in &expired {
                active.remove(key);
            }
            expired
        };
        for (conversation_id, user_id) in expired {
            self.registry.broadcast(&conversation_id, frame(&conversation_id, &user_id, false), &user_id);
        }
    }

    /// Delivers typing events and expires stale ones until `shutdown`.
    pub async fn run(self: Arc<Self>, mut events: async_nats::Subscriber, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = sweep.tick() => self.expire(),
                next = events.next() => match next {
                    Some(message) => match TypingEvent::decode(message.payload.as_ref()) {
                        Ok(event) => self.apply(event),
                        Err(e) => tracing::debug!(error = %e, "undecodable typing event ignored"),
                    },
                    None => return,
                },
            }
        }
    }
}
