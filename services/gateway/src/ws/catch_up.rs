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

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use chat_common::nats::{CHAT_SUBJECTS, ChatSubject, parse_chat_subject};
use std::collections::HashMap;

use chat_proto::events::v1::{Message, MessageChanged, ReadMarkerMoved};
use chat_proto::history::v1::{CatchUpRequest, ReadMarkersSinceRequest};
use futures::StreamExt;
use prost::Message as _;

use super::session::Socket;
use crate::error::ApiError;
use crate::outbox::Outbox;
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
                () = outbox.ready() => {
                    held.extend(std::iter::from_fn(|| outbox.pop()));
                    if held.len() > state.config.socket_queue {
                        outbox.close(TOO_SLOW);
                    }
                    if outbox.close_requested().is_some() {
                        // Too slow, or revoked: the caller closes it as asked.
                        return Err(ApiError::unavailable("the socket is closing"));
                    }
                }
            }
        }
    };
    for event in held {
        out.live(event).await.map_err(|_| ApiError::unavailable("socket closed"))?;
    }
    result
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

async fn replay(state: &AppState, identity: &Identity, out: &mut Socket, from: u64) -> Result<(), ApiError> {
    let closed = |_| ApiError::unavailable("socket closed");
    let snapshot = stream_head(state).await?;

    // 1. What history has stored, up to its persisted floor.
    let mut after = from;
    let persisted_through = loop {
        let page = state
            .history
            .clone()
            .catch_up(CatchUpRequest {
                user_id: identity.user_id.clone(),
                after_stream_seq: after,
                limit: PAGE,
                since_stream_seq: from,
            })
            .await?
            .into_inner();
        for entry in &page.messages {
            if let Some(message) = &entry.message {
                out.event(entry.stream_seq, ServerFrame::message(message, entry.stream_seq).to_text())
                    .await
                    .map_err(closed)?;
            }
            after = after.max(entry.stream_seq);
        }
        if !page.has_more {
            // Edits and deletions since the cursor, to messages this device has.
            for changed in &page.changed {
                if let Some(message) = &changed.message {
                    out.text(ServerFrame::change(message, changed.change_stream_seq).to_text())
                        .await
                        .map_err(closed)?;
                }
            }
            break page.persisted_through;
        }
    };

    // Markers that moved after the cursor, latest per (conversation, member).
    let mut markers: HashMap<(String, String), (u64, ReadMarkerMoved)> = HashMap::new();
    let stored = state
        .history
        .clone()
        .read_markers_since(ReadMarkersSinceRequest { user_id: identity.user_id.clone(), after_stream_seq: from })
        .await?
        .into_inner();
    for m in stored.markers {
        let event = ReadMarkerMoved {
            conversation_id: m.conversation_id,
            user_id: m.user_id,
            device_id: m.device_id,
            seq: m.seq,
        };
        keep_latest(&mut markers, m.stream_seq, event);
    }

    // 2. The tail history has not stored yet, straight from the stream.
    let tail_from = from.max(persisted_through).saturating_add(1);
    if tail_from <= snapshot {
        let conversations = state.registry.conversations_of(&identity.user_id);
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "cannot read the stream tail");
            ApiError::unavailable("message stream unavailable")
        };
        let consumer = state
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: CHAT_SUBJECTS.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: tail_from },
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let mut entries = consumer.messages().await.map_err(|e| unavailable(&e))?;
        loop {
            let entry = match tokio::time::timeout(TAIL_STALL, entries.next()).await {
                Ok(Some(Ok(entry))) => entry,
                Ok(Some(Err(e))) => return Err(unavailable(&e)),
                Ok(None) | Err(_) => return Err(ApiError::unavailable("message stream stalled")),
            };
            let Ok(info) = entry.info() else { continue };
            let (stream_seq, pending) = (info.stream_sequence, info.pending);
            if stream_seq > snapshot {
                break;
            }
            match parse_chat_subject(&entry.subject) {
                Some(ChatSubject::Message { conversation_id }) if conversations.contains(conversation_id) => {
                    if let Ok(message) = Message::decode(entry.payload.as_ref()) {
                        out.event(stream_seq, ServerFrame::message(&message, stream_seq).to_text())
                            .await
                            .map_err(closed)?;
                    }
                }
                Some(ChatSubject::Edit { conversation_id }) if conversations.contains(conversation_id) => {
                    if let Ok(MessageChanged { message: Some(message), .. }) =
                        MessageChanged::decode(entry.payload.as_ref())
                    {
                        out.event(stream_seq, ServerFrame::change(&message, stream_seq).to_text())
                            .await
                            .map_err(closed)?;
                    }
                }
                Some(ChatSubject::Read { conversation_id }) if conversations.contains(conversation_id) => {
                    if let Ok(event) = ReadMarkerMoved::decode(entry.payload.as_ref()) {
                        keep_latest(&mut markers, stream_seq, event);
                    }
                }
                _ => {}
            }
            if stream_seq >= snapshot || pending == 0 {
                break;
            }
        }
    }
    // 3. The markers, oldest move first, none of this device's own.
    let mut markers: Vec<(u64, ReadMarkerMoved)> =
        markers.into_values().filter(|(_, m)| m.device_id != identity.device_id).collect();
    markers.sort_by_key(|(stream_seq, _)| *stream_seq);
    for (_, marker) in &markers {
        out.text(ServerFrame::read(marker).to_text()).await.map_err(closed)?;
    }

    // Everything up to the snapshot has been considered; live delivery covers the rest.
    out.delivered = out.delivered.max(snapshot);
    Ok(())
}

fn keep_latest(
    markers: &mut HashMap<(String, String), (u64, ReadMarkerMoved)>,
    stream_seq: u64,
    event: ReadMarkerMoved,
) {
    let key = (event.conversation_id.clone(), event.user_id.clone());
    let newer = markers.get(&key).is_none_or(|(_, old)| event.seq > old.seq);
    if newer {
        markers.insert(key, (stream_seq, event));
    }
}
