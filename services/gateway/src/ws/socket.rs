//! The socket type: one client's WebSocket with how far it has been
//! delivered, and every write to it bounded in time. Below the session and
//! catch-up, which both write to it.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures::SinkExt;

use crate::outbox::{Frame, Outbound, Outbox};
use crate::protocol::close::{INVALID_DATA, PROTOCOL_ERROR, TOO_LARGE, UNAUTHORIZED};

/// How long a closed socket waits for the client's answering close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Live frames written to a socket with one flush, at most.
const WRITE_BATCH: usize = 64;

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
    /// A socket nothing has been delivered to yet.
    pub fn new(ws: WebSocket, write_timeout: Duration) -> Self {
        Self { ws, write_timeout, floor: 0, delivered: 0 }
    }

    /// The next frame from the client. Cancel-safe: a partly read frame
    /// stays buffered.
    pub async fn recv(&mut self) -> Option<Result<WsMessage, axum::Error>> {
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
    pub async fn write_queued(&mut self, outbox: &Outbox) -> Result<(), axum::Error> {
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

    pub async fn ping(&mut self) -> Result<(), axum::Error> {
        bounded(self.write_timeout, self.ws.send(WsMessage::Ping(Default::default()))).await
    }

    /// Completes a closing handshake the client started. tungstenite has
    /// queued the echo of the client's close frame (its code, or 1002 for a
    /// code no endpoint may send); it only goes out when the socket is
    /// flushed, and a socket dropped unflushed leaves the client with 1006.
    pub async fn answer_close(&mut self) {
        let _ = bounded(self.write_timeout, self.ws.flush()).await;
    }

    pub async fn close(&mut self, code: u16, reason: &str) {
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
pub fn close_for_read_error(error: axum::Error) -> Option<(u16, &'static str)> {
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

/// Closes the socket with the code asked of its outbox (too slow, revoked),
/// or with `code` when nothing was asked.
pub async fn close_as_asked(socket: &mut Socket, outbox: &Outbox, code: u16, reason: &'static str) {
    match outbox.close_requested() {
        Some(asked) => socket.close(asked, close_reason(asked)).await,
        None => socket.close(code, reason).await,
    }
}

pub fn close_reason(code: u16) -> &'static str {
    match code {
        UNAUTHORIZED => "credentials revoked",
        _ => "too slow: the send queue filled",
    }
}
