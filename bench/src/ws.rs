//! The load generator's WebSocket client, speaking protocol v1 only: the
//! token in `Authorization: Bearer`, then `ready`; `send` frames out; frames
//! in read as text and parsed only as far as a measurement needs.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens an authenticated socket and waits for its `ready` frame.
pub async fn open(url: &str, token: &str) -> anyhow::Result<Socket> {
    Ok(open_ready(url, token).await?.0)
}

/// As [`open`], with the `ready` frame's `cursor`.
pub async fn open_ready(url: &str, token: &str) -> anyhow::Result<(Socket, String)> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Authorization", format!("Bearer {token}").parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config()), true)
        .await
        .context("WebSocket upgrade")?;
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            if text.contains(r#""type":"ready""#) {
                let ready: serde_json::Value = serde_json::from_str(&text)?;
                let cursor = ready["cursor"].as_str().context("a ready frame without a cursor")?.to_owned();
                return Ok((socket, cursor));
            }
            if text.contains(r#""type":"error""#) {
                bail!("refused: {text}");
            }
        }
    }
    bail!("the socket closed before ready")
}

/// Buffers as the gateway uses them (tungstenite zero-fills its whole read
/// buffer on every read; its default 128 KiB would make the load generator,
/// and the echo floor, pay for that instead of for the traffic).
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(16 * 1024)
}

/// A `send` frame whose body is the send time (see [`now_micros`]), with a
/// `client_msg_id` never used before in this process.
pub fn send_frame(req: u64, conversation_id: &str) -> Message {
    static SENT: AtomicU64 = AtomicU64::new(0);
    let frame = serde_json::json!({
        "type": "send",
        "req": req,
        "conversation_id": conversation_id,
        "client_msg_id": format!("b{}", SENT.fetch_add(1, Ordering::Relaxed)),
        "body": now_micros().to_string(),
    });
    Message::Text(frame.to_string().into())
}

/// Microseconds since the first call in this process: the clock every
/// sender writes into bodies and every receiver reads them against.
pub fn now_micros() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The body of a `message` frame sent by [`send_frame`], if `text` is one.
pub fn sent_at(text: &str) -> Option<u64> {
    if !text.contains(r#""type":"message""#) {
        return None;
    }
    let frame: serde_json::Value = serde_json::from_str(text).ok()?;
    frame["message"]["body"].as_str()?.parse().ok()
}
