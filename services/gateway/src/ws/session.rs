//! One authenticated socket: registration for live delivery, catch-up, the
//! frame loop, and a clean close (1001 on shutdown, 4408 when too slow).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use chat_common::rate_limit::{Bucket, Rate};
use chat_proto::history::v1::ListConversationsRequest;
use futures::SinkExt;
use tokio::sync::mpsc;

use super::catch_up;
use crate::delivery::{Frame, Lease, Outbound, SocketHandle};
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::messaging;
use crate::offline;
use crate::outbox::Outbox;
use crate::protocol::rules::SendInput;
use crate::protocol::{self, ClientFrame, FrameError, ServerFrame};
use crate::state::AppState;
use crate::tokens::Identity;
use crate::wire::{decode_cursor, encode_cursor};

use crate::brakes::{SocketBrakes, Verdict};
use crate::protocol::close::{
    GOING_AWAY, INTERNAL, INVALID_DATA, PROTOCOL_ERROR, RATE_LIMITED, TOO_LARGE, UNAUTHORIZED,
};

/// Typing frames a socket may send: a burst of 5, then one a second (clients
/// repeat `start` every few seconds while the user types).
const TYPING_RATE: Rate = Rate { burst: 5, refill: Duration::from_secs(1) };

/// Sends and read markers waiting to be stored, per socket; beyond this the
/// client is told to slow down.
const WORK_QUEUE: usize = 64;
/// How long a socket closing at shutdown waits for the work it already took.
const FINISH_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a closed socket waits for the client's answering close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Live frames written to a socket with one flush, at most.
const WRITE_BATCH: usize = 64;

/// Frames that need a backend round trip, done in order, one at a time.
enum Work {
    Send { req: i64, input: SendInput },
    Read { conversation_id: String, seq: u64 },
    Change { req: i64, conversation_id: String, message_id: String, body: Option<String> },
}

/// A socket and how far it has been delivered. One task reads and writes it
/// (no split halves: those would put it behind a shared lock of its own).
pub struct Socket {
    ws: WebSocket,
    /// How long one write may wait for the client to read.
    write_timeout: Duration,
    /// This socket has had every event in `(floor, delivered]`, and only
    /// those: an event in that range is never sent again, one outside it is
    /// (a `sync` naming a cursor before `floor` replays what the socket
    /// never had, as for a socket that connected without a cursor).
    pub floor: u64,
    /// Highest stream position delivered to this socket.
    pub delivered: u64,
}

impl Socket {
    /// The next frame from the client. Cancel-safe: a partly read frame
    /// stays buffered.
    async fn recv(&mut self) -> Option<Result<WsMessage, axum::Error>> {
        self.ws.recv().await
    }

    pub async fn text(&mut self, text: String) -> Result<(), axum::Error> {
        crate::metrics::get().frames_out.inc();
        bounded(self.write_timeout, self.ws.send(WsMessage::Text(text.into()))).await
    }

    /// Sends a stream event unless this socket already has it.
    pub async fn event(&mut self, stream_seq: u64, frame: impl Into<Frame>) -> Result<(), axum::Error> {
        self.live(Outbound::Live { stream_seq, frame: frame.into() }).await
    }

    pub async fn live(&mut self, outbound: Outbound) -> Result<(), axum::Error> {
        let limit = self.write_timeout;
        bounded(limit, async {
            self.feed(outbound).await?;
            self.ws.flush().await
        })
        .await
    }

    /// Writes what is queued for this socket (up to [`WRITE_BATCH`] frames)
    /// with one flush: under load, one system call carries many frames. The
    /// whole batch has one write bound, not each frame.
    async fn write_queued(&mut self, outbox: &Outbox) -> Result<(), axum::Error> {
        let limit = self.write_timeout;
        bounded(limit, async {
            for _ in 0..WRITE_BATCH {
                match outbox.pop() {
                    Some(next) => self.feed(next).await?,
                    None => break,
                }
            }
            self.ws.flush().await
        })
        .await
    }

    /// Queues a frame in the socket's write buffer without flushing it (a
    /// full buffer is written out); the caller bounds the whole write.
    async fn feed(&mut self, outbound: Outbound) -> Result<(), axum::Error> {
        let frame = match outbound {
            Outbound::Live { stream_seq, .. } if self.has(stream_seq) => return Ok(()),
            Outbound::Live { stream_seq, frame } => {
                self.delivered = self.delivered.max(stream_seq);
                frame
            }
            Outbound::Ephemeral { frame } => frame,
        };
        crate::metrics::get().frames_out.inc();
        self.ws.feed(WsMessage::Text(frame)).await
    }

    /// Whether the event at `stream_seq` has been sent to this socket.
    fn has(&self, stream_seq: u64) -> bool {
        self.floor < stream_seq && stream_seq <= self.delivered
    }

    async fn ping(&mut self) -> Result<(), axum::Error> {
        bounded(self.write_timeout, self.ws.send(WsMessage::Ping(Default::default()))).await
    }

    /// Completes a closing handshake the client started. tungstenite has
    /// queued the echo of the client's close frame (its code, or 1002 for a
    /// code no endpoint may send); it only goes out when the socket is
    /// flushed, and a socket dropped unflushed leaves the client with 1006.
    async fn answer_close(&mut self) {
        let _ = bounded(self.write_timeout, self.ws.flush()).await;
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: reason.into() };
        let ws = &mut self.ws;
        let _ = bounded(self.write_timeout, async move {
            // Refused when the client's close frame came first; closing then
            // sends the echo tungstenite has queued instead.
            let _ = ws.send(WsMessage::Close(Some(frame))).await;
            ws.close().await
        })
        .await;
        // Read what the client still sends until it answers the close: bytes
        // left unread when the connection is dropped make the kernel reset it,
        // and the reset can destroy the close frame before the client reads it.
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(CLOSE_LINGER, async move { while let Some(Ok(_)) = ws.recv().await {} }).await;
    }
}

/// A write that waits longer than `limit` fails, and its socket is dropped:
/// a client that stops reading would otherwise hold its socket's task (its
/// pings, its close and its memory) for as long as it keeps the connection.
async fn bounded(limit: Duration, write: impl Future<Output = Result<(), axum::Error>>) -> Result<(), axum::Error> {
    tokio::time::timeout(limit, write)
        .await
        .unwrap_or_else(|_| Err(axum::Error::new("write timed out: the client is not reading")))
}

/// The close a failed read earns, per RFC 6455 section 7.4.1: a frame or
/// message over the size limit 1009, a text message that is not UTF-8 1007,
/// any other breach of the framing protocol 1002. `None` when the connection
/// itself is gone and no close can reach the client.
fn close_for_read_error(error: axum::Error) -> Option<(u16, &'static str)> {
    use tungstenite::Error;
    use tungstenite::error::ProtocolError;
    match error.into_inner().downcast_ref::<Error>()? {
        Error::Capacity(_) => Some((TOO_LARGE, "frame too large")),
        Error::Utf8(_) => Some((INVALID_DATA, "text frame is not valid UTF-8")),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(_) => Some((PROTOCOL_ERROR, "WebSocket protocol error")),
        _ => None,
    }
}

/// Serves one socket from its upgrade to its end. This future lives as long
/// as the socket, so what it holds is kept small: the shared state behind an
/// `Arc`, and everything awaited only now and then (the start, a frame's
/// handling, a catch-up) boxed. An idle socket keeps little more than its loop.
pub async fn run(state: AppState, ws: WebSocket, pre_authenticated: Option<Identity>, query_cursor: Option<String>) {
    let mut socket = Socket { ws, write_timeout: state.config.write_timeout, floor: 0, delivered: 0 };
    let (identity, auth_cursor) = match pre_authenticated {
        Some(identity) => (identity, None),
        None => match Box::pin(authenticate(&state, &mut socket)).await {
            Ok(found) => found,
            Err(reason) => {
                socket.close(UNAUTHORIZED, reason).await;
                return;
            }
        },
    };
    // The auth frame's cursor wins over the query's.
    let cursor = auth_cursor.or(query_cursor);
    let mut lease = state.registry.lease(&identity.user_id);
    let request = ListConversationsRequest { user_id: identity.user_id.clone(), ids_only: true };
    match Box::pin(state.history.clone().list_conversations(request)).await {
        Ok(reply) => {
            lease.add_conversations(
                reply.into_inner().conversations.into_iter().map(|c| (c.conversation_id, c.member_ids)),
            );
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), "cannot load conversations; closing socket");
            socket.close(INTERNAL, "conversations unavailable").await;
            return;
        }
    }
    if state.registry.sockets_of(&identity.user_id) >= state.config.max_sockets_per_user {
        crate::brakes::count("sockets_per_user");
        socket.close(RATE_LIMITED, "too many sockets for this user").await;
        return;
    }
    let outbox = Arc::new(Outbox::new(state.config.socket_queue));
    let socket_id = state.next_socket_id();
    let handle =
        SocketHandle { device_id: identity.device_id.clone(), kid: identity.kid.clone(), outbox: outbox.clone() };
    let attached_at = lease.attach(socket_id, handle);
    let _registration = Registration::new(&state, socket_id, lease);
    // A revocation that landed between token check and registration.
    if state.revocations.is_revoked(&identity.device_id) {
        outbox.close(UNAUTHORIZED);
    }

    let start = match cursor.as_deref().map(decode_cursor) {
        None => None,
        Some(Some(position)) => Some(Box::pin(known_position(&state, position, attached_at)).await),
        Some(None) => Some(Err(ApiError::invalid_argument(UNKNOWN_CURSOR))),
    };
    let ready_cursor = match start {
        Some(Ok(position)) => position,
        _ => attached_at,
    };
    let waiting = Box::pin(offline::waiting(&state, &identity.user_id)).await;
    let mut ok = socket.text(ready_frame(&identity, ready_cursor, waiting)).await.is_ok();
    // Recorded after `ready`, so the round trip does not delay it.
    Box::pin(state.presence.opened(socket_id, &identity)).await;
    (socket.floor, socket.delivered) = (attached_at, attached_at);
    match start {
        Some(Ok(position)) if ok => {
            (socket.floor, socket.delivered) = (position, position);
            ok = match Box::pin(catch_up::run(&state, &identity, &mut socket, &outbox, position)).await {
                Ok(()) => socket.text(synced_frame(None, socket.delivered)).await.is_ok(),
                Err(e) => {
                    tracing::warn!(error = %e.message, "catch-up failed");
                    close_as_asked(&mut socket, &outbox, INTERNAL, "catch-up failed").await;
                    false
                }
            };
        }
        Some(Err(e)) if ok && e.code == ErrorCode::InvalidArgument => {
            let message = format!("{UNKNOWN_CURSOR}; delivering from now");
            let err = FrameError::new(None, e.code, message);
            ok = socket.text(err.to_frame()).await.is_ok();
        }
        Some(Err(e)) if ok => {
            // The cursor could not be checked: the client reconnects with it
            // rather than lose what it missed.
            tracing::warn!(error = %e.message, "cannot check a cursor");
            socket.close(INTERNAL, "catch-up failed").await;
            ok = false;
        }
        _ => {}
    }
    if ok {
        // Everything up to here is delivered (live after `attached_at`, the
        // rest in catch-up or already on the device).
        offline::delivered(&state, &identity.user_id, socket.delivered.max(attached_at));
    }
    // The contacts online now; later changes arrive as live frames.
    for contact in state.registry.online_contacts(&identity.user_id) {
        if ok {
            ok = socket.text(ServerFrame::presence(&contact, true, 0).to_text()).await.is_ok();
        }
    }
    if ok {
        serve(&state, &identity, &mut socket, &outbox).await;
    }
}

const UNKNOWN_CURSOR: &str = "unknown or malformed cursor";

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

/// A cursor the stream has reached. One ahead of the stream's head names
/// nothing this server issued: taken as valid, it would make the socket skip
/// every live event up to it.
///
/// # Errors
/// `invalid_argument` for a position past the head, `unavailable` when the
/// stream cannot be asked.
async fn known_position(state: &AppState, position: u64, attached_at: u64) -> Result<u64, ApiError> {
    if position <= attached_at {
        return Ok(position);
    }
    let head = catch_up::stream_head(state).await?;
    if position <= head { Ok(position) } else { Err(ApiError::invalid_argument(UNKNOWN_CURSOR)) }
}

/// Closes the socket with the code asked of its outbox (too slow, revoked),
/// or with `code` when nothing was asked.
async fn close_as_asked(socket: &mut Socket, outbox: &Outbox, code: u16, reason: &'static str) {
    match outbox.close_requested() {
        Some(asked) => socket.close(asked, close_reason(asked)).await,
        None => socket.close(code, reason).await,
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        UNAUTHORIZED => "credentials revoked",
        _ => "too slow: the send queue filled",
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

/// The frame loop of an authenticated, registered socket.
async fn serve(state: &AppState, identity: &Identity, socket: &mut Socket, outbox: &Outbox) {
    let mut worker = Worker::default();
    let mut typing_limit = Bucket::new(TYPING_RATE);
    let mut brakes = SocketBrakes::new(&state.config);
    // Pings find half-open sockets: a peer that vanished without closing
    // answers nothing, and is closed after the idle timeout.
    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let written = tokio::select! {
            () = state.shutdown.cancelled() => {
                // No new frames are read; what was already taken is done and answered.
                worker.finish(socket).await;
                socket.close(GOING_AWAY, "server going away; reconnect").await;
                return;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= state.config.idle_timeout {
                    socket.close(GOING_AWAY, "no answer to pings").await;
                    return;
                }
                socket.ping().await
            }
            () = outbox.ready() => match outbox.close_requested() {
                Some(code) => {
                    socket.close(code, close_reason(code)).await;
                    return;
                }
                None => socket.write_queued(outbox).await,
            },
            Some(reply) = worker.reply() => socket.text(reply).await,
            frame = socket.recv() => {
                last_heard = tokio::time::Instant::now();
                if matches!(frame, Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_))))
                    && matches!(brakes.frame(), Verdict::Close)
                {
                    socket.close(RATE_LIMITED, "too many frames").await;
                    return;
                }
                match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    if text.len() > state.config.max_frame_bytes {
                        socket.close(TOO_LARGE, "frame too large").await;
                        return;
                    }
                    Box::pin(handle_text(state, identity, socket, outbox, &mut worker, (&mut typing_limit, &mut brakes), &text)).await
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    let err = FrameError::new(None, ErrorCode::InvalidFrame, "binary frames are not supported");
                    socket.text(err.to_frame()).await
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => Ok(()),
                Some(Ok(WsMessage::Close(_))) => {
                    socket.answer_close().await;
                    return;
                }
                None => return,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "socket read failed");
                    if let Some((code, reason)) = close_for_read_error(e) {
                        socket.close(code, reason).await;
                    }
                    return;
                }
            }},
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "socket write failed; dropping it");
            return;
        }
    }
}

async fn handle_text(
    state: &AppState,
    identity: &Identity,
    socket: &mut Socket,
    outbox: &Outbox,
    worker: &mut Worker,
    (typing_limit, brakes): (&mut Bucket, &mut SocketBrakes),
    text: &str,
) -> Result<(), axum::Error> {
    let frame = match protocol::parse(text) {
        Ok(frame) => frame,
        Err(err) => return socket.text(err.to_frame()).await,
    };
    crate::metrics::get().frames_in.get_or_create(&chat_common::metrics::label("type", frame.kind())).inc();
    match frame {
        ClientFrame::Ping { req } => socket.text(ServerFrame::Pong { req }.to_text()).await,
        ClientFrame::Send { req, input } => {
            if let Verdict::Refuse(e) = brakes.send(&state.brakes, &identity.user_id) {
                return socket.text(FrameError::refusal(Some(req), &e)).await;
            }
            enqueue(socket, worker.queue(state, identity), Some(req), Work::Send { req, input }).await
        }
        ClientFrame::Edit { req, conversation_id, message_id, body } => {
            let work = Work::Change { req, conversation_id, message_id, body: Some(body) };
            enqueue(socket, worker.queue(state, identity), Some(req), work).await
        }
        ClientFrame::Delete { req, conversation_id, message_id } => {
            let work = Work::Change { req, conversation_id, message_id, body: None };
            enqueue(socket, worker.queue(state, identity), Some(req), work).await
        }
        ClientFrame::Read { conversation_id, seq } => {
            enqueue(socket, worker.queue(state, identity), None, Work::Read { conversation_id, seq }).await
        }
        ClientFrame::Sync { req, cursor } => {
            if let Verdict::Refuse(e) = brakes.sync() {
                return socket.text(FrameError::refusal(Some(req), &e)).await;
            }
            let position = match decode_cursor(&cursor) {
                Some(position) => Box::pin(known_position(state, position, socket.delivered)).await,
                None => Err(ApiError::invalid_argument(UNKNOWN_CURSOR)),
            };
            let position = match position {
                Ok(position) => position,
                Err(e) => return socket.text(FrameError::from_api(Some(req), &e).to_frame()).await,
            };
            // What the socket has is never sent again: from its newest event
            // on, or, for a cursor before anything it had, everything from the
            // cursor except what it had.
            let from = if position >= socket.floor { position.max(socket.delivered) } else { position };
            match Box::pin(catch_up::run(state, identity, socket, outbox, from)).await {
                Ok(()) => {
                    socket.floor = socket.floor.min(from);
                    socket.text(synced_frame(Some(req), socket.delivered)).await
                }
                // The frame loop closes it as asked.
                Err(_) if outbox.close_requested().is_some() => Ok(()),
                Err(e) => socket.text(FrameError::from_api(Some(req), &e).to_frame()).await,
            }
        }
        ClientFrame::Auth { .. } => {
            let err = FrameError::new(None, ErrorCode::InvalidArgument, "already authenticated");
            socket.text(err.to_frame()).await
        }
        ClientFrame::Typing { conversation_id, state: typing } => {
            let refused = |code, message| FrameError::new(None, code, message);
            if typing_limit.take().is_err() {
                socket.text(refused(ErrorCode::RateLimited, "too many typing frames").to_frame()).await
            } else if !state.registry.is_member(&identity.user_id, &conversation_id) {
                socket.text(refused(ErrorCode::Forbidden, "not a member of this conversation").to_frame()).await
            } else {
                state.typing.publish(identity, &conversation_id, typing.is_start()).await;
                Ok(())
            }
        }
    }
}

/// Queues work for the socket's worker, or tells the client to wait for
/// answers first when too much is in flight.
async fn enqueue(
    socket: &mut Socket,
    work: &mpsc::Sender<Work>,
    req: Option<i64>,
    item: Work,
) -> Result<(), axum::Error> {
    if work.try_send(item).is_ok() {
        return Ok(());
    }
    let err = FrameError::new(req, ErrorCode::RateLimited, "too many frames in flight; wait for answers");
    socket.text(err.to_frame()).await
}

/// The socket's worker and its queues, started on the socket's first send,
/// change or read marker: an idle socket has no task and no queues.
#[derive(Default)]
struct Worker {
    running: Option<(mpsc::Sender<Work>, mpsc::Receiver<String>)>,
}

impl Worker {
    fn queue(&mut self, state: &AppState, identity: &Identity) -> &mpsc::Sender<Work> {
        &self.running.get_or_insert_with(|| spawn_worker(state.clone(), identity.clone())).0
    }

    /// Takes no more work, lets the worker finish what it has (each send is
    /// bounded by the store timeout; all of it by [`FINISH_TIMEOUT`]) and
    /// writes its answers, so a send in flight at shutdown is acked or
    /// refused, not left without an answer.
    async fn finish(&mut self, socket: &mut Socket) {
        let Some((queue, mut replies)) = self.running.take() else { return };
        drop(queue);
        let deadline = tokio::time::Instant::now() + FINISH_TIMEOUT;
        while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.recv()).await {
            if socket.text(reply).await.is_err() {
                return;
            }
        }
    }

    /// The next answer to send; never, while no worker runs.
    async fn reply(&mut self) -> Option<String> {
        match &mut self.running {
            Some((_, replies)) => replies.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// Does this socket's sends and read-marker moves one at a time, in the order
/// they arrived (so `seq`s follow the order of sends), answering each send
/// with an `ack` or an `error`, and a refused read with an `error`.
fn spawn_worker(state: AppState, identity: Identity) -> (mpsc::Sender<Work>, mpsc::Receiver<String>) {
    let (work_tx, mut work_rx) = mpsc::channel::<Work>(WORK_QUEUE);
    let (replies_tx, replies_rx) = mpsc::channel::<String>(WORK_QUEUE);
    tokio::spawn(async move {
        while let Some(work) = work_rx.recv().await {
            let reply = match work {
                Work::Send { req, input } => {
                    let started = std::time::Instant::now();
                    let sent = messaging::send(&state.membership, &state.log, &identity, &input).await;
                    crate::metrics::get().send_to_ack.observe(started.elapsed().as_secs_f64());
                    match sent {
                        Ok(published) => Some(ack_frame(req, &published.message)),
                        Err(e) => Some(FrameError::from_api(Some(req), &e).to_frame()),
                    }
                }
                Work::Change { req, conversation_id, message_id, body } => {
                    match messaging::change(&state, &identity, &conversation_id, &message_id, body).await {
                        Ok(message) => Some(ack_frame(req, &message)),
                        Err(e) => Some(FrameError::from_api(Some(req), &e).to_frame()),
                    }
                }
                Work::Read { conversation_id, seq } => messaging::mark_read(&state, &identity, &conversation_id, seq)
                    .await
                    .err()
                    .map(|e| FrameError::from_api(None, &e).to_frame()),
            };
            if let Some(reply) = reply
                && replies_tx.send(reply).await.is_err()
            {
                return;
            }
        }
    });
    (work_tx, replies_rx)
}

fn ack_frame(req: i64, message: &chat_proto::events::v1::Message) -> String {
    ServerFrame::Ack { req, message: message.into() }.to_text()
}

fn ready_frame(identity: &Identity, cursor: u64, pending_deliveries: Option<usize>) -> String {
    let (user_id, device_id) = (&identity.user_id, &identity.device_id);
    ServerFrame::Ready { user_id, device_id, cursor: encode_cursor(cursor), pending_deliveries }.to_text()
}

fn synced_frame(req: Option<i64>, position: u64) -> String {
    ServerFrame::Synced { req, cursor: encode_cursor(position) }.to_text()
}
