//! One socket's life after the upgrade, in steps: identify the client,
//! register the socket for live delivery, start it (`ready`, catch-up, the
//! contacts online), then the frame loop until a clean close (1001 on
//! shutdown, 4408 when too slow, 4401 when revoked).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use chat_common::rate_limit::{Bucket, Rate};
use chat_proto::history::v1::ListConversationsRequest;

use super::catch_up;
use super::socket::{Socket, close_as_asked, close_for_read_error, close_reason};
use super::worker::{Work, Worker};
use crate::brakes::{SocketBrakes, Verdict};
use crate::config::Config;
use crate::delivery::{Lease, SocketHandle};
use crate::error::{ApiError, ErrorCode};
use crate::offline;
use crate::outbox::Outbox;
use crate::protocol::close::{GOING_AWAY, INTERNAL, RATE_LIMITED, TOO_LARGE, UNAUTHORIZED};
use crate::protocol::{self, ClientFrame, FrameError, ServerFrame, TypingState};
use crate::state::AppState;
use crate::tokens::Identity;
use crate::wire::{decode_cursor, encode_cursor};

/// Typing frames a socket may send: a burst of 5, then one a second (clients
/// repeat `start` every few seconds while the user types).
const TYPING_RATE: Rate = Rate { burst: 5, refill: Duration::from_secs(1) };

const UNKNOWN_CURSOR: &str = "unknown or malformed cursor";

/// Serves one socket from its upgrade to its end. The task lives as long as
/// the socket, so what it holds while idle is kept small: the opening steps
/// (which hold the upgrade's arguments) run in a box of their own that is
/// freed once the socket is serving, the shared state is behind an `Arc`,
/// and everything awaited only now and then (a frame's handling, a write, a
/// ping, a catch-up) is boxed while it runs: one allocation per frame
/// handled, which measured no slower per message (BENCHMARKS.md), for a
/// task of 1.5 KB instead of 2.5. An idle socket keeps little more than its
/// loop's `select!`.
pub fn run(
    state: AppState,
    ws: WebSocket,
    pre_authenticated: Option<Identity>,
    query_cursor: Option<String>,
) -> impl Future<Output = ()> {
    let opening = Box::pin(open(state, ws, pre_authenticated, query_cursor));
    async move {
        let Some(mut open) = opening.await else { return };
        serve(&open.state, &open.identity, &mut open.socket, &open.registered.outbox).await;
    }
}

/// A socket past its opening steps, ready for the frame loop.
struct Open {
    state: AppState,
    identity: Identity,
    socket: Socket,
    registered: Registered,
}

/// Identifies the client, registers the socket for live delivery and starts
/// it; `None` when the socket was closed on the way.
async fn open(
    state: AppState,
    ws: WebSocket,
    pre_authenticated: Option<Identity>,
    query_cursor: Option<String>,
) -> Option<Open> {
    let mut socket = Socket::new(ws, state.config.write_timeout);
    let (identity, auth_cursor) = identify(&state, &mut socket, pre_authenticated).await?;
    // The auth frame's cursor wins over the query's.
    let cursor = auth_cursor.or(query_cursor);
    let registered = register(&state, &identity, &mut socket).await?;
    let started = Box::pin(start(&state, &identity, &mut socket, &registered, cursor)).await;
    started.then_some(Open { state, identity, socket, registered })
}

/// The socket's user: from the upgrade's header, or from the first frame,
/// which must then be `auth` (with the cursor it may carry). A socket that
/// does not authenticate is closed with 4401.
async fn identify(
    state: &AppState,
    socket: &mut Socket,
    pre_authenticated: Option<Identity>,
) -> Option<(Identity, Option<String>)> {
    if let Some(identity) = pre_authenticated {
        return Some((identity, None));
    }
    match authenticate(state, socket).await {
        Ok(found) => Some(found),
        Err(reason) => {
            socket.close(UNAUTHORIZED, reason).await;
            None
        }
    }
}

/// Waits for the first frame, which must be `auth` with a valid token.
async fn authenticate(state: &AppState, socket: &mut Socket) -> Result<(Identity, Option<String>), &'static str> {
    let deadline = tokio::time::Instant::now() + state.config.auth_timeout;
    loop {
        let next = tokio::select! {
            () = state.shutdown.cancelled() => return Err("server going away"),
            next = tokio::time::timeout_at(deadline, socket.recv()) => next,
        };
        let text = match next {
            Err(_) => return Err("authentication timed out"),
            Ok(None | Some(Err(_))) => return Err("closed before authenticating"),
            Ok(Some(Ok(WsMessage::Text(text)))) => text,
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(Some(Ok(_))) => return Err("the first frame must be an auth frame"),
        };
        return match protocol::parse(&text) {
            Ok(ClientFrame::Auth { token, cursor }) => state
                .verifier
                .verify(&token)
                .await
                .map(|identity| (identity, cursor))
                .map_err(|_| "invalid or expired access token"),
            _ => Err("the first frame must be an auth frame"),
        };
    }
}

/// A socket registered for live delivery: its queue, and the stream position
/// after which it receives every event of its user's conversations.
struct Registered {
    outbox: Arc<Outbox>,
    socket_id: u64,
    attached_at: u64,
    _registration: Registration,
}

/// Registers the socket for live delivery of its user's conversations (loaded
/// from history), unless the user holds too many sockets already. The socket
/// is closed (1011, 4429) when it cannot be registered.
async fn register(state: &AppState, identity: &Identity, socket: &mut Socket) -> Option<Registered> {
    let mut lease = state.registry.lease(&identity.user_id);
    if let Err(status) = load_conversations(state, identity, &lease).await {
        tracing::warn!(code = ?status.code(), "cannot load conversations; closing socket");
        socket.close(INTERNAL, "conversations unavailable").await;
        return None;
    }
    if state.registry.sockets_of(&identity.user_id) >= state.config.max_sockets_per_user {
        crate::brakes::count("sockets_per_user");
        socket.close(RATE_LIMITED, "too many sockets for this user").await;
        return None;
    }
    let outbox = Arc::new(Outbox::new(state.config.socket_queue));
    let socket_id = state.next_socket_id();
    let handle =
        SocketHandle { device_id: identity.device_id.clone(), kid: identity.kid.clone(), outbox: outbox.clone() };
    let attached_at = lease.attach(socket_id, handle);
    let registration = Registration::new(state, socket_id, lease);
    // A revocation that landed between token check and registration.
    if state.revocations.is_revoked(&identity.device_id) {
        outbox.close(UNAUTHORIZED);
    }
    Some(Registered { outbox, socket_id, attached_at, _registration: registration })
}

/// The user's conversations, and the members of those that share presence,
/// from history, into the lease. A larger group's list is loaded when someone
/// here sends to it: read at every member's connect, a group of 10,000 made
/// its members' connects cost 10,000 × 10,000 rows.
async fn load_conversations(state: &AppState, identity: &Identity, lease: &Lease) -> Result<(), tonic::Status> {
    let request = ListConversationsRequest {
        user_id: identity.user_id.to_string(),
        ids_only: true,
        member_lists_up_to: chat_common::nats::presence::SHARED_UP_TO_MEMBERS as u32,
    };
    let reply = state.history.clone().list_conversations(request).await?;
    lease.add_conversations(reply.into_inner().conversations.into_iter().map(|c| (c.conversation_id, c.member_ids)));
    Ok(())
}

/// A socket's place in live delivery and presence, undone however its task
/// ends (a panic included): a socket that is gone must neither stay counted
/// nor keep its user online.
struct Registration {
    state: AppState,
    socket_id: u64,
    lease: Option<Lease>,
}

impl Registration {
    fn new(state: &AppState, socket_id: u64, lease: Lease) -> Self {
        crate::metrics::get().connections.inc();
        Self { state: state.clone(), socket_id, lease: Some(lease) }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        drop(self.lease.take());
        crate::metrics::get().connections.dec();
        self.state.presence.closed(self.socket_id);
    }
}

/// Everything before the frame loop: `ready`, the socket recorded for
/// presence, what the client missed after its cursor, and the contacts online
/// now. `false` when the socket is gone or closed meanwhile.
async fn start(
    state: &AppState,
    identity: &Identity,
    socket: &mut Socket,
    registered: &Registered,
    cursor: Option<String>,
) -> bool {
    let attached_at = registered.attached_at;
    let start = match cursor {
        None => None,
        Some(cursor) => Some(cursor_position(state, &cursor, attached_at).await),
    };
    let ready_cursor = match start {
        Some(Ok(position)) => position,
        _ => attached_at,
    };
    let ok = send_ready(state, identity, socket, ready_cursor).await;
    // Recorded after `ready`, so the round trip does not delay it.
    state.presence.opened(registered.socket_id, identity).await;
    (socket.floor, socket.delivered) = (attached_at, attached_at);
    let ok = ok && replay_missed(state, identity, socket, &registered.outbox, start).await;
    if ok {
        // Everything up to here is delivered (live after `attached_at`, the
        // rest in catch-up or already on the device).
        offline::delivered(&state.notification, &identity.user_id, socket.delivered.max(attached_at));
    }
    ok && send_online_contacts(state, identity, socket).await
}

/// The position a client's cursor names.
///
/// # Errors
/// `invalid_argument` for a cursor this server did not issue, `unavailable`
/// when the stream cannot be asked.
async fn cursor_position(state: &AppState, cursor: &str, reached: u64) -> Result<u64, ApiError> {
    match decode_cursor(cursor) {
        Some(position) => known_position(state, position, reached).await,
        None => Err(ApiError::invalid_argument(UNKNOWN_CURSOR)),
    }
}

/// A cursor the stream has reached. One ahead of the stream's head names
/// nothing this server issued: taken as valid, it would make the socket skip
/// every live event up to it.
///
/// # Errors
/// `invalid_argument` for a position past the head, `unavailable` when the
/// stream cannot be asked.
async fn known_position(state: &AppState, position: u64, reached: u64) -> Result<u64, ApiError> {
    if position <= reached {
        return Ok(position);
    }
    let head = catch_up::stream_head(state).await?;
    if position <= head { Ok(position) } else { Err(ApiError::invalid_argument(UNKNOWN_CURSOR)) }
}

/// `ready`, with how many deliveries wait for the user.
async fn send_ready(state: &AppState, identity: &Identity, socket: &mut Socket, cursor: u64) -> bool {
    let pending_deliveries = offline::waiting(&state.notification, &identity.user_id).await;
    let (user_id, device_id) = (&identity.user_id, &identity.device_id);
    let ready = ServerFrame::Ready { user_id, device_id, cursor: encode_cursor(cursor), pending_deliveries };
    socket.text(ready.to_text()).await.is_ok()
}

/// Replays what the client missed after its cursor, then `synced`; or tells
/// it its cursor is unknown (it then goes live from now, like a new device).
/// A cursor that cannot be checked, or a failed replay, closes the socket
/// (1011): the client reconnects with its cursor rather than lose what it missed.
async fn replay_missed(
    state: &AppState,
    identity: &Identity,
    socket: &mut Socket,
    outbox: &Outbox,
    start: Option<Result<u64, ApiError>>,
) -> bool {
    match start {
        None => true,
        Some(Ok(position)) => {
            // The client has everything up to its cursor. A cursor from a
            // gateway ahead of this one lies past where this socket was
            // attached: live events in between are still to come here, and
            // are the client's already, so they count as had.
            (socket.floor, socket.delivered) = (position.min(socket.floor), position);
            match catch_up::run(state, identity, socket, outbox, position).await {
                Ok(()) => socket.text(synced_frame(None, socket.delivered)).await.is_ok(),
                Err(e) => {
                    tracing::warn!(error = %e.message, "catch-up failed");
                    close_as_asked(socket, outbox, INTERNAL, "catch-up failed").await;
                    false
                }
            }
        }
        Some(Err(e)) if e.code == ErrorCode::InvalidArgument => {
            let err = FrameError::new(None, e.code, format!("{UNKNOWN_CURSOR}; delivering from now"));
            socket.text(err.to_frame()).await.is_ok()
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e.message, "cannot check a cursor");
            socket.close(INTERNAL, "catch-up failed").await;
            false
        }
    }
}

/// One `presence` frame for each contact online now; later changes arrive live.
async fn send_online_contacts(state: &AppState, identity: &Identity, socket: &mut Socket) -> bool {
    for contact in state.registry.online_contacts(&identity.user_id) {
        if socket.text(ServerFrame::presence(&contact, true, 0).to_text()).await.is_err() {
            return false;
        }
    }
    true
}

fn synced_frame(req: Option<i64>, position: u64) -> String {
    ServerFrame::Synced { req, cursor: encode_cursor(position) }.to_text()
}

/// What the frame loop does after a step.
enum Next {
    Go,
    Stop,
}

/// A failed write drops the socket.
fn written(result: Result<(), axum::Error>) -> Next {
    match result {
        Ok(()) => Next::Go,
        Err(e) => {
            tracing::debug!(error = %e, "socket write failed; dropping it");
            Next::Stop
        }
    }
}

/// What the frame loop keeps for one socket: its limits and its worker.
struct Served {
    worker: Worker,
    typing_limit: Bucket,
    brakes: SocketBrakes,
}

impl Served {
    fn new(config: &Config) -> Self {
        let (frames, sends, syncs) =
            (config.frame_rate_per_socket, config.send_rate_per_socket, config.sync_rate_per_socket);
        Self {
            worker: Worker::default(),
            typing_limit: Bucket::new(TYPING_RATE),
            brakes: SocketBrakes::new(frames, sends, syncs),
        }
    }
}

/// The frame loop of an authenticated, registered socket: shutdown, pings,
/// queued frames, the worker's answers and the client's frames, whichever
/// comes first.
async fn serve(state: &AppState, identity: &Identity, socket: &mut Socket, outbox: &Outbox) {
    let mut served = Served::new(&state.config);
    // Pings find half-open sockets: a peer that vanished without closing
    // answers nothing, and is closed after the idle timeout.
    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            () = state.shutdown.cancelled() => Box::pin(go_away(socket, &mut served.worker)).await,
            _ = ping.tick() => Box::pin(keep_alive(state, socket, last_heard)).await,
            () = outbox.ready() => Box::pin(write_queued(socket, outbox)).await,
            Some(reply) = served.worker.reply() => written(Box::pin(socket.text(reply)).await),
            frame = socket.recv() => {
                last_heard = tokio::time::Instant::now();
                Box::pin(take_frame(state, identity, socket, outbox, &mut served, frame)).await
            }
        };
        if let Next::Stop = next {
            return;
        }
    }
}

/// At shutdown no new frames are read; what was already taken is done and
/// answered, then the socket is closed with 1001.
async fn go_away(socket: &mut Socket, worker: &mut Worker) -> Next {
    worker.finish(socket).await;
    socket.close(GOING_AWAY, "server going away; reconnect").await;
    Next::Stop
}

/// Pings the client, or closes a socket that has not been heard from since
/// the idle timeout.
async fn keep_alive(state: &AppState, socket: &mut Socket, last_heard: tokio::time::Instant) -> Next {
    if last_heard.elapsed() >= state.config.idle_timeout {
        socket.close(GOING_AWAY, "no answer to pings").await;
        return Next::Stop;
    }
    written(socket.ping().await)
}

/// Writes the frames queued for the socket, or closes it as its outbox asks.
async fn write_queued(socket: &mut Socket, outbox: &Outbox) -> Next {
    match outbox.close_requested() {
        Some(code) => {
            socket.close(code, close_reason(code)).await;
            Next::Stop
        }
        None => written(socket.write_queued(outbox).await),
    }
}

/// Takes what the client sent: a text frame is answered; a flood (4429), an
/// oversized frame (1009), a close or a broken connection ends the socket.
async fn take_frame(
    state: &AppState,
    identity: &Identity,
    socket: &mut Socket,
    outbox: &Outbox,
    served: &mut Served,
    frame: Option<Result<WsMessage, axum::Error>>,
) -> Next {
    if matches!(frame, Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_))))
        && matches!(served.brakes.frame(), Verdict::Close)
    {
        socket.close(RATE_LIMITED, "too many frames").await;
        return Next::Stop;
    }
    match frame {
        Some(Ok(WsMessage::Text(text))) => {
            if text.len() > state.config.max_frame_bytes {
                socket.close(TOO_LARGE, "frame too large").await;
                return Next::Stop;
            }
            written(answer(state, identity, socket, outbox, served, &text).await)
        }
        Some(Ok(WsMessage::Binary(_))) => {
            let err = FrameError::new(None, ErrorCode::InvalidFrame, "binary frames are not supported");
            written(socket.text(err.to_frame()).await)
        }
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => Next::Go,
        Some(Ok(WsMessage::Close(_))) => {
            socket.answer_close().await;
            Next::Stop
        }
        None => Next::Stop,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "socket read failed");
            if let Some((code, reason)) = close_for_read_error(e) {
                socket.close(code, reason).await;
            }
            Next::Stop
        }
    }
}

/// Answers one text frame: at once (`ping`, `typing`, refusals), through the
/// worker (`send`, `edit`, `delete`, `read`), or with a replay (`sync`).
async fn answer(
    state: &AppState,
    identity: &Identity,
    socket: &mut Socket,
    outbox: &Outbox,
    served: &mut Served,
    text: &str,
) -> Result<(), axum::Error> {
    let frame = match protocol::parse(text) {
        Ok(frame) => frame,
        Err(err) => return socket.text(err.to_frame()).await,
    };
    crate::metrics::get().frames_in.get_or_create(&chat_common::metrics::label("type", frame.kind())).inc();
    let worker = &mut served.worker;
    match frame {
        ClientFrame::Ping { req } => socket.text(ServerFrame::Pong { req }.to_text()).await,
        ClientFrame::Send { req, input } => {
            if let Verdict::Refuse(e) = served.brakes.send(&state.brakes, &identity.user_id) {
                return socket.text(FrameError::refusal(Some(req), &e)).await;
            }
            worker.take(state, identity, socket, Some(req), Work::Send { req, input }).await
        }
        ClientFrame::Edit { req, conversation_id, message_id, body } => {
            let work = Work::Change { req, conversation_id, message_id, body: Some(body) };
            worker.take(state, identity, socket, Some(req), work).await
        }
        ClientFrame::Delete { req, conversation_id, message_id } => {
            let work = Work::Change { req, conversation_id, message_id, body: None };
            worker.take(state, identity, socket, Some(req), work).await
        }
        ClientFrame::Read { conversation_id, seq } => {
            worker.take(state, identity, socket, None, Work::Read { conversation_id, seq }).await
        }
        ClientFrame::Sync { req, cursor } => {
            if let Verdict::Refuse(e) = served.brakes.sync() {
                return socket.text(FrameError::refusal(Some(req), &e)).await;
            }
            Box::pin(sync(state, identity, socket, outbox, req, &cursor)).await
        }
        ClientFrame::Auth { .. } => {
            let err = FrameError::new(None, ErrorCode::InvalidArgument, "already authenticated");
            socket.text(err.to_frame()).await
        }
        ClientFrame::Typing { conversation_id, state: typing } => {
            pass_on_typing(state, identity, socket, &mut served.typing_limit, &conversation_id, typing).await
        }
    }
}

/// Answers a `sync`: replays what the socket does not have after the cursor,
/// then `synced` with the request's `req`.
async fn sync(
    state: &AppState,
    identity: &Identity,
    socket: &mut Socket,
    outbox: &Outbox,
    req: i64,
    cursor: &str,
) -> Result<(), axum::Error> {
    let position = match cursor_position(state, cursor, socket.delivered).await {
        Ok(position) => position,
        Err(e) => return socket.text(FrameError::from_api(Some(req), &e).to_frame()).await,
    };
    // What the socket has is never sent again: from its newest event on, or,
    // for a cursor before anything it had, everything from the cursor except
    // what it had.
    let from = if position >= socket.floor { position.max(socket.delivered) } else { position };
    match catch_up::run(state, identity, socket, outbox, from).await {
        Ok(()) => {
            socket.floor = socket.floor.min(from);
            socket.text(synced_frame(Some(req), socket.delivered)).await
        }
        // The frame loop closes it as asked.
        Err(_) if outbox.close_requested().is_some() => Ok(()),
        Err(e) => socket.text(FrameError::from_api(Some(req), &e).to_frame()).await,
    }
}

/// Publishes a typing indicator of a member, within the socket's typing rate.
async fn pass_on_typing(
    state: &AppState,
    identity: &Identity,
    socket: &mut Socket,
    limit: &mut Bucket,
    conversation_id: &str,
    typing: TypingState,
) -> Result<(), axum::Error> {
    if limit.take().is_err() {
        let err = FrameError::new(None, ErrorCode::RateLimited, "too many typing frames");
        socket.text(err.to_frame()).await
    } else if !state.registry.is_member(&identity.user_id, conversation_id) {
        let err = FrameError::new(None, ErrorCode::Forbidden, "not a member of this conversation");
        socket.text(err.to_frame()).await
    } else {
        state.typing.publish(identity, conversation_id, typing.is_start()).await;
        Ok(())
    }
}
