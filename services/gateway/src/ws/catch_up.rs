//! Catch-up: everything a socket missed after a cursor, across all of the
//! user's conversations, in stream order, with no gap and no duplicate.
//!
//! The socket is already registered for live delivery, so nothing newer than
//! `snapshot` (the stream's last position, read now) can be missed. The range
//! up to `snapshot` is read from history up to its persisted floor, and from
//! the stream itself for the tail history has not stored yet. Live frames that
//! arrive meanwhile are held back and sent afterwards; the writer drops any
//! event at or below what it already delivered.
//!
//! Read markers follow the same split (history up to its floor, the stream for
//! the tail) and are sent after the messages: for each conversation, the
//! latest marker of each member that moved after the cursor, except moves
//! made by this very device.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use chat_common::blocks::Blocks;
use chat_common::events::ChatEvent;
use chat_common::nats::{CHAT_SUBJECTS, parse_chat_subject};
use chat_proto::events::v1::{MessageChanged, ReadMarkerMoved};
use chat_proto::history::v1::{CatchUpRequest, ReadMarkersSinceRequest};
use futures::StreamExt;

use super::socket::Socket;
use crate::error::ApiError;
use crate::outbox::{Outbound, Outbox};
use crate::protocol::ServerFrame;
use crate::protocol::close::TOO_SLOW;
use crate::state::AppState;
use crate::tokens::Identity;

const PAGE: u32 = 500;
/// Longest wait for the next stream entry of the tail before giving up.
const TAIL_STALL: Duration = Duration::from_secs(5);

/// Replays `(from, now]` to `out`, then flushes the live frames held back meanwhile.
///
/// # Errors
/// `unavailable` when history or the stream cannot be read, or when the
/// socket is to be closed (too slow to take the replay, or revoked).
pub async fn run(
    state: &AppState,
    identity: &Identity,
    out: &mut Socket,
    outbox: &Outbox,
    from: u64,
) -> Result<(), ApiError> {
    let mut held = Vec::new();
    let result = {
        let replay = replay(state, identity, out, from);
        tokio::pin!(replay);
        // Live frames are taken out of the queue meanwhile, so that a long
        // replay does not fill it, and held back; no more of them than the
        // queue itself would hold, or a client that reads slowly during a
        // long replay would never meet the slow-reader close.
        loop {
            tokio::select! {
                result = &mut replay => break result,
                () = outbox.ready() => hold_back(outbox, &mut held, state.config.socket_queue)?,
            }
        }
    };
    // A replay that failed part-way is not followed by the live frames held
    // back: they are newer than what the client got, so its cursor would move
    // past what it missed. It reconnects with its cursor and gets it all.
    result?;
    for event in held {
        out.live(event).await.map_err(closed)?;
    }
    Ok(())
}

/// Takes the live frames queued meanwhile into `held`; more than `limit`
/// closes the socket as too slow.
///
/// # Errors
/// `unavailable` when the socket is to be closed (too slow, or revoked): the
/// caller closes it as asked.
fn hold_back(outbox: &Outbox, held: &mut Vec<Outbound>, limit: usize) -> Result<(), ApiError> {
    held.extend(std::iter::from_fn(|| outbox.pop()));
    if held.len() > limit {
        outbox.close(TOO_SLOW);
    }
    match outbox.close_requested() {
        Some(_) => Err(ApiError::unavailable("the socket is closing")),
        None => Ok(()),
    }
}

/// The CHAT stream's last position now.
///
/// # Errors
/// `unavailable` when the stream cannot be asked.
pub async fn stream_head(state: &AppState) -> Result<u64, ApiError> {
    let mut stream = state.stream.clone();
    let info = stream.info().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the chat stream state");
        ApiError::unavailable("message stream unavailable")
    })?;
    Ok(info.state.last_sequence)
}

/// Replays `(from, snapshot]`, where `snapshot` is the stream's head now:
/// the messages history has stored, the tail it has not, then the markers.
async fn replay(state: &AppState, identity: &Identity, out: &mut Socket, from: u64) -> Result<(), ApiError> {
    let snapshot = stream_head(state).await?;
    let persisted_through = replay_stored(state, identity, out, from).await?;
    let mut markers = stored_markers(state, identity, from).await?;
    let tail_from = from.max(persisted_through).saturating_add(1);
    if tail_from <= snapshot {
        replay_tail(state, identity, out, (tail_from, snapshot), &mut markers).await?;
    }
    send_markers(identity, out, markers).await?;
    // Everything up to the snapshot has been considered; live delivery covers the rest.
    out.delivered = out.delivered.max(snapshot);
    Ok(())
}

fn closed(_: axum::Error) -> ApiError {
    ApiError::unavailable("socket closed")
}

/// Sends what history has stored after `from`, page by page, then the edits
/// and deletions since `from` of messages this device has. Returns how far
/// history has stored the stream.
async fn replay_stored(state: &AppState, identity: &Identity, out: &mut Socket, from: u64) -> Result<u64, ApiError> {
    let mut after = from;
    loop {
        let page = state
            .history
            .clone()
            .catch_up(CatchUpRequest {
                user_id: identity.user_id.to_string(),
                after_stream_seq: after,
                limit: PAGE,
                since_stream_seq: from,
            })
            .await?
            .into_inner();
        for entry in &page.messages {
            if let Some(message) = &entry.message {
                let frame =
                    ServerFrame::message(message, entry.stream_seq).for_viewer(&state.blocks, &identity.user_id);
                out.event(entry.stream_seq, frame.to_text()).await.map_err(closed)?;
            }
            after = after.max(entry.stream_seq);
        }
        if !page.has_more {
            for changed in &page.changed {
                if let Some(message) = &changed.message {
                    let frame = ServerFrame::change(message, changed.change_stream_seq);
                    out.text(frame.for_viewer(&state.blocks, &identity.user_id).to_text()).await.map_err(closed)?;
                }
            }
            return Ok(page.persisted_through);
        }
    }
}

/// The markers history has stored that moved after `from`.
async fn stored_markers(state: &AppState, identity: &Identity, from: u64) -> Result<Markers, ApiError> {
    let stored = state
        .history
        .clone()
        .read_markers_since(ReadMarkersSinceRequest { user_id: identity.user_id.to_string(), after_stream_seq: from })
        .await?
        .into_inner();
    let mut markers = Markers::default();
    for m in stored.markers {
        let event = ReadMarkerMoved {
            conversation_id: m.conversation_id,
            user_id: m.user_id,
            device_id: m.device_id,
            seq: m.seq,
        };
        markers.keep_latest(m.stream_seq, event);
    }
    Ok(markers)
}

fn stream_unavailable(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "cannot read the stream tail");
    ApiError::unavailable("message stream unavailable")
}

/// Sends the tail history has not stored yet, `first..=snapshot`, straight
/// from the stream: the messages and changes of the user's conversations;
/// the marker moves among them join `markers`.
async fn replay_tail(
    state: &AppState,
    identity: &Identity,
    out: &mut Socket,
    (first, snapshot): (u64, u64),
    markers: &mut Markers,
) -> Result<(), ApiError> {
    let conversations = state.registry.conversations_of(&identity.user_id);
    let consumer = state
        .stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: CHAT_SUBJECTS.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: first },
            ..Default::default()
        })
        .await
        .map_err(|e| stream_unavailable(&e))?;
    let mut entries = consumer.messages().await.map_err(|e| stream_unavailable(&e))?;
    loop {
        let entry = match tokio::time::timeout(TAIL_STALL, entries.next()).await {
            Ok(Some(Ok(entry))) => entry,
            Ok(Some(Err(e))) => return Err(stream_unavailable(&e)),
            Ok(None) | Err(_) => return Err(ApiError::unavailable("message stream stalled")),
        };
        let Ok(info) = entry.info() else { continue };
        let (stream_seq, pending) = (info.stream_sequence, info.pending);
        // An ordered consumer async-nats recreated before its first entry
        // starts at the stream's beginning: give up rather than replay that.
        if stream_seq < first {
            return Err(ApiError::unavailable("message stream went back"));
        }
        if stream_seq > snapshot {
            return Ok(());
        }
        let viewer = (&*state.blocks, &*identity.user_id);
        replay_entry(out, &conversations, viewer, &entry, stream_seq, markers).await?;
        if stream_seq >= snapshot || pending == 0 {
            return Ok(());
        }
    }
}

/// One stream entry of the tail, if it belongs to one of `conversations`.
async fn replay_entry(
    out: &mut Socket,
    conversations: &HashSet<String>,
    (blocks, viewer): (&Blocks, &str),
    entry: &async_nats::jetstream::Message,
    stream_seq: u64,
    markers: &mut Markers,
) -> Result<(), ApiError> {
    // Only the device's conversations are worth decoding.
    if !parse_chat_subject(&entry.subject).is_some_and(|s| conversations.contains(s.conversation_id())) {
        return Ok(());
    }
    // What live delivery passed over (and counted) is passed over here too.
    match ChatEvent::decode(&entry.subject, entry.payload.as_ref()) {
        Ok(ChatEvent::Message(message)) => {
            let frame = ServerFrame::message(&message, stream_seq).for_viewer(blocks, viewer);
            out.event(stream_seq, frame.to_text()).await.map_err(closed)?;
        }
        Ok(ChatEvent::Changed(MessageChanged { message: Some(message), .. })) => {
            let frame = ServerFrame::change(&message, stream_seq).for_viewer(blocks, viewer);
            out.event(stream_seq, frame.to_text()).await.map_err(closed)?;
        }
        Ok(ChatEvent::Read(event)) => markers.keep_latest(stream_seq, event),
        Ok(ChatEvent::Changed(_) | ChatEvent::Membership(_)) | Err(_) => {}
    }
    Ok(())
}

/// The markers, oldest move first, none of this device's own.
async fn send_markers(identity: &Identity, out: &mut Socket, markers: Markers) -> Result<(), ApiError> {
    let mut markers: Vec<(u64, ReadMarkerMoved)> =
        markers.0.into_values().filter(|(_, m)| *m.device_id != *identity.device_id).collect();
    markers.sort_by_key(|(stream_seq, _)| *stream_seq);
    for (_, marker) in &markers {
        out.text(ServerFrame::read(marker).to_text()).await.map_err(closed)?;
    }
    Ok(())
}

/// Markers that moved after the cursor: the latest per (conversation, member),
/// with the stream position of its move.
#[derive(Default)]
struct Markers(HashMap<(String, String), (u64, ReadMarkerMoved)>);

impl Markers {
    fn keep_latest(&mut self, stream_seq: u64, event: ReadMarkerMoved) {
        let key = (event.conversation_id.clone(), event.user_id.clone());
        let newer = self.0.get(&key).is_none_or(|(_, old)| event.seq > old.seq);
        if newer {
            self.0.insert(key, (stream_seq, event));
        }
    }
}
