//! Live delivery. Each gateway reads the CHAT stream with an ordered consumer
//! (gap-free, in stream order) and hands every event to the local sockets of
//! the conversation's members. No publisher-side fan-out and no database on
//! this path; per-conversation order and "no gap" come from the stream itself.
//!
//! The registry knows, for each local user, which conversations they are in
//! (loaded from history when their first socket connects, then kept current by
//! the membership snapshots in the same stream), and each socket's queue. The
//! member lists themselves are the gateway's one `MembershipCache`: the
//! registry tells it which conversations have a local user, and applies the
//! stream's snapshots and removals to it. The dispatcher also adds each
//! message's key to the gateway's set of sent keys, which sends consult.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use chat_common::blocks::Blocks;
use chat_common::conversation_log::idempotency_key;
use chat_common::events::{ChatEvent, EventError};
use chat_common::sent_keys::SentKeys;
use chat_common::shutdown::CancellationToken;
use chat_proto::events::v1::{MembershipChanged, MessageChanged, SystemEventKind};
use chat_proto::presence::v1::PresenceState;
use futures::StreamExt;

use crate::membership::MembershipCache;
use crate::outbox::{Frame, Outbound, Outbox};
use crate::protocol::ServerFrame;

/// The sending half of a socket, as the dispatcher sees it.
pub struct SocketHandle {
    pub device_id: Arc<str>,
    /// The key that signed the token the socket was opened with.
    pub kid: Arc<str>,
    pub outbox: Arc<Outbox>,
}

#[derive(Default)]
struct LocalUser {
    conversations: HashSet<String>,
    sockets: UserSockets,
    /// Sockets being set up or open; the entry lives while this is non-zero.
    leases: usize,
}

/// A user's open sockets on this gateway: a few at most (bounded per user),
/// so a list, and room for exactly one at first, as most users hold one (a
/// map took about 270 bytes for a single socket).
#[derive(Default)]
struct UserSockets(Vec<(u64, SocketHandle)>);

impl UserSockets {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn values(&self) -> impl Iterator<Item = &SocketHandle> {
        self.0.iter().map(|(_, socket)| socket)
    }

    fn insert(&mut self, socket_id: u64, handle: SocketHandle) {
        if self.0.is_empty() {
            self.0.reserve_exact(1);
        }
        self.0.push((socket_id, handle));
    }

    fn remove(&mut self, socket_id: u64) {
        self.0.retain(|(id, _)| *id != socket_id);
    }
}

#[derive(Default)]
struct Inner {
    /// Stream position of the last event handed out.
    last_dispatched: u64,
    /// Each local user's id is held once, shared by these maps and the
    /// user's sockets (`Arc<str>`).
    users: HashMap<Arc<str>, LocalUser>,
    /// Local users of each conversation.
    by_conversation: HashMap<String, HashSet<Arc<str>>>,
    /// Users presence announced online.
    online: HashSet<String>,
}

/// The local users and sockets. Its lock is taken before the membership
/// cache's, never after.
pub struct Registry {
    inner: Mutex<Inner>,
    membership: Arc<MembershipCache>,
    /// Who blocked whom: blocked senders' messages are hidden, and presence
    /// and typing do not cross a block either way.
    blocks: Arc<Blocks>,
}

/// The frame for the members who blocked a message's sender.
pub struct Hidden {
    pub from: Vec<String>,
    pub frame: Frame,
}

/// Keeps a user registered while one of their sockets is being set up or open.
pub struct Lease {
    registry: Arc<Registry>,
    user_id: Arc<str>,
    socket_id: Option<u64>,
}

impl Registry {
    pub fn new(membership: Arc<MembershipCache>, blocks: Arc<Blocks>) -> Self {
        Self { inner: Mutex::default(), membership, blocks }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops tracking a conversation on this gateway once no local user is in it.
    fn drop_if_unused(&self, inner: &mut Inner, conversation_id: &str) {
        if inner.by_conversation.get(conversation_id).is_none_or(HashSet::is_empty) {
            inner.by_conversation.remove(conversation_id);
            self.membership.untrack(conversation_id);
        }
    }

    /// Registers `user_id` so membership snapshots for them are applied from now
    /// on. Load their conversations after this, then `Lease::attach`.
    pub fn lease(self: &Arc<Self>, user_id: &Arc<str>) -> Lease {
        self.lock().users.entry(user_id.clone()).or_default().leases += 1;
        Lease { registry: self.clone(), user_id: user_id.clone(), socket_id: None }
    }

    /// Open sockets of `user_id` on this gateway.
    pub fn sockets_of(&self, user_id: &str) -> usize {
        self.lock().users.get(user_id).map_or(0, |u| u.sockets.len())
    }

    pub fn last_dispatched(&self) -> u64 {
        self.lock().last_dispatched
    }

    pub fn conversations_of(&self, user_id: &str) -> HashSet<String> {
        self.lock().users.get(user_id).map(|u| u.conversations.clone()).unwrap_or_default()
    }

    /// Hands an event to the local sockets of the conversation's members,
    /// except those of `except_device` (the device that caused it); members
    /// named in `hidden` get its frame instead.
    fn dispatch(
        &self,
        stream_seq: u64,
        conversation_id: &str,
        frame: Frame,
        except_device: Option<&str>,
        hidden: Option<Hidden>,
    ) {
        let mut inner = self.lock();
        inner.last_dispatched = stream_seq;
        let Inner { users, by_conversation, .. } = &mut *inner;
        let Some(local) = by_conversation.get(conversation_id) else { return };
        for user_id in local {
            let Some(user) = users.get(user_id) else { continue };
            let frame = match &hidden {
                Some(hidden) if hidden.from.iter().any(|u| **u == **user_id) => &hidden.frame,
                _ => &frame,
            };
            for socket in user.sockets.values().filter(|s| Some(&*s.device_id) != except_device) {
                socket.outbox.deliver(Outbound::Live { stream_seq, frame: frame.clone() });
            }
        }
    }

    /// The frame `hidden_text` writes, for the members who blocked `sender`,
    /// if any did (most often nobody: one lookup).
    fn hidden(&self, sender: &str, hidden_text: impl FnOnce() -> String) -> Option<Hidden> {
        let from = self.blocks.blockers_of(sender);
        (!from.is_empty()).then(|| Hidden { from, frame: hidden_text().into() })
    }

    fn apply_membership(&self, stream_seq: u64, event: &MembershipChanged) {
        let mut inner = self.lock();
        inner.last_dispatched = stream_seq;
        let Inner { users, by_conversation, .. } = &mut *inner;
        let now: HashSet<&str> = event.member_ids.iter().map(String::as_str).collect();
        let local = by_conversation.entry(event.conversation_id.clone()).or_default();
        local.retain(|user_id| {
            let stays = now.contains(&**user_id);
            if !stays && let Some(user) = users.get_mut(user_id) {
                user.conversations.remove(&event.conversation_id);
            }
            stays
        });
        for member in &event.member_ids {
            let Some((user_id, _)) = users.get_key_value(member.as_str()) else { continue };
            let user_id = user_id.clone();
            if let Some(user) = users.get_mut(&user_id) {
                user.conversations.insert(event.conversation_id.clone());
            }
            local.insert(user_id);
        }
        let tracked = !local.is_empty();
        self.membership.apply_snapshot(&event.conversation_id, event.member_ids.clone(), tracked);
        if !tracked {
            inner.by_conversation.remove(&event.conversation_id);
        }
    }

    /// Stops delivering a conversation to some of its (former) members.
    fn remove_members(&self, conversation_id: &str, user_ids: &[String]) {
        let mut inner = self.lock();
        let Inner { users, by_conversation, .. } = &mut *inner;
        for user_id in user_ids {
            if let Some(user) = users.get_mut(user_id.as_str()) {
                user.conversations.remove(conversation_id);
            }
            if let Some(local) = by_conversation.get_mut(conversation_id) {
                local.remove(user_id.as_str());
            }
        }
        self.membership.remove_members(conversation_id, user_ids);
        self.drop_if_unused(&mut inner, conversation_id);
    }

    /// Presence announced a change: remember it, and tell every local user who
    /// shares a conversation with that user.
    pub fn presence_changed(&self, user_id: &str, state: &PresenceState) {
        let mut inner = self.lock();
        if state.online {
            inner.online.insert(user_id.to_owned());
        } else {
            inner.online.remove(user_id);
        }
        let conversations = self.membership.conversations_with(user_id);
        let audience: HashSet<&Arc<str>> = conversations
            .iter()
            .filter(|c| self.membership.members(c).is_some_and(|m| m.shares_presence()))
            .filter_map(|c| inner.by_conversation.get(c))
            .flatten()
            .filter(|u| ***u != *user_id && !self.blocks.between(u, user_id))
            .collect();
        if audience.is_empty() {
            return;
        }
        let frame: Frame = ServerFrame::presence(user_id, state.online, state.last_seen_at_ms).to_text().into();
        for user in audience.into_iter().filter_map(|u| inner.users.get(u)) {
            for socket in user.sockets.values() {
                // Unlike typing, a lost change would leave a wrong dot: a socket
                // too slow to take it reconnects and gets the current state.
                socket.outbox.deliver(Outbound::Ephemeral { frame: frame.clone() });
            }
        }
    }

    /// Users online now who share a conversation with `user_id`.
    pub fn online_contacts(&self, user_id: &str) -> Vec<String> {
        let inner = self.lock();
        let Some(user) = inner.users.get(user_id) else { return Vec::new() };
        let lists: Vec<_> = user
            .conversations
            .iter()
            .filter_map(|c| self.membership.members(c))
            .filter(|members| members.shares_presence())
            .collect();
        let contacts: HashSet<&String> = lists
            .iter()
            .flat_map(|members| &members.member_ids)
            .filter(|m| *m != user_id && inner.online.contains(*m) && !self.blocks.between(user_id, m))
            .collect();
        contacts.into_iter().cloned().collect()
    }

    /// Whether a local user is in a conversation (as far as this gateway knows).
    pub fn is_member(&self, user_id: &str, conversation_id: &str) -> bool {
        self.lock().users.get(user_id).is_some_and(|u| u.conversations.contains(conversation_id))
    }

    /// Hands an ephemeral frame from `from_user` to the local sockets of a
    /// conversation's other members, but not across a block.
    pub fn broadcast(&self, conversation_id: &str, frame: Frame, from_user: &str) {
        let inner = self.lock();
        let Some(local) = inner.by_conversation.get(conversation_id) else { return };
        let audience = local.iter().filter(|u| ***u != *from_user && !self.blocks.between(u, from_user));
        for user in audience.filter_map(|u| inner.users.get(u)) {
            for socket in user.sockets.values() {
                // A full queue drops the indicator: it is not worth closing a socket over.
                socket.outbox.offer(Outbound::Ephemeral { frame: frame.clone() });
            }
        }
    }

    /// Closes every local socket of one device.
    pub fn close_device(&self, user_id: &str, device_id: &str, code: u16) {
        let inner = self.lock();
        if let Some(user) = inner.users.get(user_id) {
            for socket in user.sockets.values().filter(|s| &*s.device_id == device_id) {
                socket.outbox.close(code);
            }
        }
    }

    /// Closes every local socket opened with a token of a key not in `kids`.
    pub fn close_unless_signed_by(&self, kids: &HashSet<String>, code: u16) {
        let inner = self.lock();
        for socket in inner.users.values().flat_map(|u| u.sockets.values()) {
            if !kids.contains(&*socket.kid) {
                socket.outbox.close(code);
            }
        }
    }

    fn advance(&self, stream_seq: u64) {
        self.lock().last_dispatched = stream_seq;
    }
}

impl Lease {
    /// Adds conversations the user belongs to, with their members (from
    /// history); a conversation that came without its members (a large
    /// group) is delivered to all the same, and its list loaded on a send.
    pub fn add_conversations(&self, conversations: impl IntoIterator<Item = (String, Vec<String>)>) {
        let mut inner = self.registry.lock();
        for (id, member_ids) in conversations {
            let Some(user) = inner.users.get_mut(&self.user_id) else { return };
            user.conversations.insert(id.clone());
            inner.by_conversation.entry(id.clone()).or_default().insert(self.user_id.clone());
            if !member_ids.is_empty() {
                self.registry.membership.track(&id, member_ids);
            }
        }
    }

    /// Starts live delivery to a socket. Returns the stream position after
    /// which this socket receives every event of the user's conversations.
    pub fn attach(&mut self, socket_id: u64, handle: SocketHandle) -> u64 {
        let mut inner = self.registry.lock();
        if let Some(user) = inner.users.get_mut(&self.user_id) {
            user.sockets.insert(socket_id, handle);
            self.socket_id = Some(socket_id);
        }
        inner.last_dispatched
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        let Some(user) = inner.users.get_mut(&self.user_id) else { return };
        if let Some(socket_id) = self.socket_id {
            user.sockets.remove(socket_id);
        }
        user.leases = user.leases.saturating_sub(1);
        if user.leases == 0 {
            let user = inner.users.remove(&self.user_id).unwrap_or_default();
            for conversation_id in user.conversations {
                if let Some(local) = inner.by_conversation.get_mut(&conversation_id) {
                    local.remove(&self.user_id);
                }
                self.registry.drop_if_unused(&mut inner, &conversation_id);
            }
        }
    }
}

/// How long one pull of the live consumer waits. The idle heartbeat is half
/// of it, and two missed heartbeats recreate the consumer: a consumer lost
/// with the cluster node that held it is noticed within about 4 s (with
/// async-nats's default pull of 30 s, after about a minute).
const LIVE_PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Reads the CHAT stream from `start_after + 1` and dispatches every event
/// until `shutdown`. The ordered consumer recreates itself on gaps; if its
/// stream ends, or the connection to NATS comes back (a restarted server has
/// forgotten the consumer), it is started again from the last dispatched
/// position at once.
pub async fn run_dispatcher(
    stream: Stream,
    start_after: u64,
    mut reconnections: chat_common::nats::Reconnections,
    registry: Arc<Registry>,
    sent: Arc<SentKeys>,
    shutdown: CancellationToken,
) {
    registry.advance(start_after);
    reconnections.mark_unchanged();
    while !shutdown.is_cancelled() {
        let from = registry.last_dispatched() + 1;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: chat_common::nats::CHAT_SUBJECTS.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
                max_expires: LIVE_PULL_EXPIRES,
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the chat stream; retrying");
                    backoff(&shutdown).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the live consumer; retrying");
                backoff(&shutdown).await;
                continue;
            }
        };
        let mut last = from - 1;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                Ok(()) = reconnections.changed() => {
                    tracing::info!("NATS is back; the live consumer starts over");
                    break;
                }
                next = messages.next() => next,
            };
            match next {
                Some(Ok(m)) => {
                    let Ok(stream_seq) = m.info().map(|info| info.stream_sequence) else { continue };
                    // async-nats recreates an ordered consumer that has delivered
                    // nothing yet from the stream's first entry, not from where
                    // it was asked to start; such a replay would reach sockets again.
                    if stream_seq <= last {
                        tracing::warn!("the live consumer went back in the stream; starting over where it was");
                        break;
                    }
                    dispatch(&registry, &sent, &m, stream_seq);
                    last = stream_seq;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "live consumer hiccup"),
                None => break,
            }
        }
    }
}

async fn backoff(shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {},
        () = tokio::time::sleep(Duration::from_millis(500)) => {},
    }
}

fn dispatch(registry: &Registry, sent: &SentKeys, m: &async_nats::jetstream::Message, stream_seq: u64) {
    let span = tracing::info_span!("gateway.deliver", otel.kind = "consumer", stream_seq);
    chat_common::nats::follow_trace_context(&span, m.headers.as_ref());
    let _entered = span.enter();
    let event = match ChatEvent::decode(&m.subject, m.payload.as_ref()) {
        Ok(event) => event,
        Err(EventError::UnknownKind(_)) => return registry.advance(stream_seq),
        Err(e) => return skip(registry, stream_seq, &e),
    };
    match event {
        ChatEvent::Message(message) => {
            match m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
                Some(key) => sent.insert(key.as_str()),
                None => sent.insert(&idempotency_key(&message.sender_id, &message.client_msg_id)),
            }
            let age_ms = chat_common::time::now_ms().saturating_sub(message.sent_at_ms).max(0);
            crate::metrics::get().fan_out.observe(age_ms as f64 / 1000.0);
            let frame: Frame = ServerFrame::message(&message, stream_seq).to_text().into();
            let hidden =
                registry.hidden(&message.sender_id, || ServerFrame::message(&message, stream_seq).hidden().to_text());
            registry.dispatch(stream_seq, &message.conversation_id, frame, None, hidden);
            // A removal takes effect right after its own system message, so
            // the member hears of it and of nothing later.
            if let Some(system) = message
                .system
                .as_ref()
                .filter(|s| matches!(s.kind(), SystemEventKind::MemberRemoved | SystemEventKind::MemberLeft))
            {
                registry.remove_members(&message.conversation_id, &system.user_ids);
            }
        }
        ChatEvent::Membership(event) => registry.apply_membership(stream_seq, &event),
        ChatEvent::Changed(MessageChanged { message: Some(message), .. }) => {
            let frame: Frame = ServerFrame::change(&message, stream_seq).to_text().into();
            let hidden =
                registry.hidden(&message.sender_id, || ServerFrame::change(&message, stream_seq).hidden().to_text());
            registry.dispatch(stream_seq, &message.conversation_id, frame, None, hidden);
        }
        // Never decoded without its message.
        ChatEvent::Changed(_) => registry.advance(stream_seq),
        ChatEvent::Read(event) => {
            let frame: Frame = ServerFrame::read(&event).to_text().into();
            registry.dispatch(stream_seq, &event.conversation_id, frame, Some(&event.device_id), None);
        }
    }
}

/// An entry no socket can be given is passed over, logged and counted; the
/// stream goes on (history and notification keep the dead-letter records).
fn skip(registry: &Registry, stream_seq: u64, error: &EventError) {
    tracing::error!(%error, stream_seq, "undecodable stream entry skipped");
    crate::metrics::get().skipped_entries.inc();
    registry.advance(stream_seq);
}
