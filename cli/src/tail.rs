//! `chat tail`: one conversation, live, after what was missed since the last
//! tail of it. One WebSocket (`GET /v1/ws`, `Authorization: Bearer`), handed
//! the cursor stored for this conversation (`?cursor=`) so the server replays
//! what came after it before going live. Each `message`, `message_edited` and
//! `message_deleted` frame of the conversation is printed, and its cursor
//! stored only after it was printed: a tail killed in between shows that
//! frame again next time rather than never. Frames of other conversations and
//! every other kind are passed over; nothing is sent but the close.
//!
//! It ends cleanly (exit 0) on Ctrl-C or SIGTERM, after `--count` frames, or
//! after `--timeout`. Once connected, a connection that is lost or closed by
//! a server going away (1001, 1006, 1011 to 1013) is opened again, after
//! 0.5 s doubling up to 10 s, from the stored cursor: nothing is missed and
//! nothing shown twice. Any other close is an error (4401, a revoked device,
//! reads as "not logged in"); so is a server not reached at the start.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::api::{Session, server_error};
use crate::error::{Error, root_cause};
use crate::output::{self, Output};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the upgrade may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The close code of a revoked device or a refused token.
const UNAUTHORIZED: u16 = 4401;
/// The wait before connecting again after a loss, doubled per failure up to the second.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// When to stop without being told to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub count: Option<u64>,
    pub timeout: Option<Duration>,
}

/// Follows `conversation` (called `name` in the header people see).
pub async fn run(
    session: &mut Session,
    conversation: Uuid,
    name: &str,
    limits: Limits,
    out: Output,
) -> Result<(), Error> {
    // Before connecting: a SIGTERM from now on ends the tail cleanly.
    let mut stop = Box::pin(stop_signal()?);
    let key = conversation.to_string();
    let stored = session.config().cursor(session.credentials(), &key)?;
    let mut socket = tokio::select! {
        () = &mut stop => return Ok(()),
        socket = connect(session, stored.as_deref()) => socket?,
    };
    let deadline = tokio::time::sleep(limits.timeout.unwrap_or(Duration::MAX));
    tokio::pin!(deadline);
    let mut printed = 0;
    // The cursor past frames of other conversations: stored with the next
    // printed frame, or at the end, not once per frame passed over.
    let mut passed: Option<String> = None;
    let mut reconnects = 0;
    let ended = 'tail: loop {
        let lost = 'connected: loop {
            if limits.count.is_some_and(|count| printed >= count) {
                break 'connected None;
            }
            let frame = tokio::select! {
                () = &mut stop => break 'connected None,
                () = &mut deadline, if limits.timeout.is_some() => break 'connected None,
                frame = socket.next() => frame,
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    break 'connected Some(closed(frame.map(|f| (u16::from(f.code), f.reason.to_string()))));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => break 'connected Some(lost(session, &e)),
                None => break 'connected Some(closed(None)),
            };
            let Ok(mut frame) = serde_json::from_str::<Value>(text.as_str()) else { continue };
            let cursor = frame["cursor"].as_str().map(str::to_owned);
            match frame["type"].as_str().unwrap_or_default() {
                "ready" => {
                    if let Some(cursor) = &cursor {
                        session.config().save_cursor(session.credentials(), &key, cursor)?;
                    }
                    if reconnects > 0 {
                        eprintln!("chat: note: connected again; catching up");
                        reconnects = 0;
                    } else if !out.is_json() {
                        output::line(&format!("tailing {}; Ctrl-C to stop", output::clean(name)))?;
                    }
                }
                "message" | "message_edited" | "message_deleted" => {
                    let ours = frame["message"]["conversation_id"].as_str().and_then(|id| Uuid::parse_str(id).ok());
                    if ours != Some(conversation) {
                        passed = cursor;
                        continue;
                    }
                    if let Some(sender) = frame["message"]["sender_id"].as_str().map(str::to_owned)
                        && let Some(username) = session.username(&sender).await?
                    {
                        frame["message"]["sender_username"] = username.into();
                    }
                    if out.is_json() {
                        output::line(&frame.to_string())?;
                    } else {
                        output::line(&output::message_line(&frame["message"]))?;
                    }
                    printed += 1;
                    if let Some(cursor) = cursor {
                        session.config().save_cursor(session.credentials(), &key, &cursor)?;
                        passed = None;
                    }
                }
                "synced" => {
                    if let Some(cursor) = cursor {
                        session.config().save_cursor(session.credentials(), &key, &cursor)?;
                        passed = None;
                    }
                }
                // A stored cursor the server does not know: it goes live from
                // now, and says so. Worth a note, not the end of the tail.
                "error" if frame.get("req").is_none() => {
                    let (code, message) = (frame["code"].as_str(), frame["message"].as_str());
                    let said = format!("{}: {}", code.unwrap_or("error"), message.unwrap_or_default());
                    eprintln!("chat: note: {}", output::clean(&said));
                }
                _ => {}
            }
        };
        let error = match lost {
            None => break Ok(()),
            Some(error) if !worth_reconnecting(&error) => break Err(error),
            Some(error) => error,
        };
        eprintln!("chat: note: {error}; connecting again");
        if let Some(cursor) = passed.take() {
            session.config().save_cursor(session.credentials(), &key, &cursor)?;
        }
        socket = loop {
            reconnects += 1;
            let wait = RECONNECT_FIRST.saturating_mul(1 << (reconnects - 1).min(5)).min(RECONNECT_MAX);
            // The wait and the attempt end alike on a stop or the deadline.
            let attempt = async {
                tokio::time::sleep(wait).await;
                let stored = session.config().cursor(session.credentials(), &key)?;
                connect(session, stored.as_deref()).await
            };
            let connected = tokio::select! {
                () = &mut stop => break 'tail Ok(()),
                () = &mut deadline, if limits.timeout.is_some() => break 'tail Ok(()),
                connected = attempt => connected,
            };
            match connected {
                Ok(socket) => break socket,
                Err(error) if worth_reconnecting(&error) => {}
                Err(error) => break 'tail Err(error),
            }
        };
    };
    if let Some(cursor) = passed {
        session.config().save_cursor(session.credentials(), &key, &cursor)?;
    }
    if ended.is_ok() {
        // A polite close; the tail is over either way.
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    }
    ended
}

/// Opens the socket, renewing the access token once if the upgrade is refused with 401.
async fn connect(session: &mut Session, cursor: Option<&str>) -> Result<Socket, Error> {
    let mut url = url::Url::parse(&format!("{}/v1/ws", session.api().base()))
        .map_err(|e| session.api().unexpected(format!("a server URL that cannot be used: {e}")))?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme).map_err(|()| session.api().unexpected("a URL with no WebSocket form".into()))?;
    if let Some(cursor) = cursor {
        url.query_pairs_mut().append_pair("cursor", cursor);
    }
    let base = session.api().base().to_owned();
    let cannot_reach = |cause: String| Error::Unreachable { server: base.clone(), cause };
    for attempt in 0..2 {
        let mut request = url.as_str().into_client_request().map_err(|e| session.api().unexpected(e.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", session.credentials().access_token))
            .map_err(|_| Error::local("the stored access token is damaged; run `chat login`"))?;
        request.headers_mut().insert("Authorization", bearer);
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await;
        match connecting {
            Err(_) => return Err(cannot_reach("timed out".into())),
            Ok(Ok((socket, _))) => return Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) => {
                if response.status() == 401 && attempt == 0 {
                    session.refresh().await?;
                    continue;
                }
                if response.status() == 401 {
                    return Err(Error::NotLoggedIn);
                }
                let body = response.body().as_deref().and_then(|b| serde_json::from_slice(b).ok());
                return Err(server_error(response.status(), body.as_ref()));
            }
            Ok(Err(e)) => return Err(cannot_reach(root_cause(&e))),
        }
    }
    unreachable!("the second attempt returns")
}

/// A server going away or a network failure, which a new connection may
/// cure; not a refusal (a revoked device, a protocol error).
fn worth_reconnecting(error: &Error) -> bool {
    match error {
        Error::Unreachable { .. } => true,
        Error::Closed { code, .. } => matches!(code, 1001 | 1006 | 1011..=1013),
        _ => false,
    }
}

fn closed(frame: Option<(u16, String)>) -> Error {
    match frame {
        Some((UNAUTHORIZED, _)) => Error::NotLoggedIn,
        Some((code, reason)) => {
            let reason = if reason.is_empty() { String::new() } else { format!(": {}", output::clean(&reason)) };
            Error::Closed { code, reason }
        }
        None => Error::Closed { code: 1006, reason: ": the connection ended without a close frame".into() },
    }
}

fn lost(session: &Session, error: &tungstenite::Error) -> Error {
    Error::Unreachable { server: session.api().base().to_owned(), cause: root_cause(error) }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM; the handlers are in place once
/// this returns.
fn stop_signal() -> Result<impl Future<Output = ()>, Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let failed = |e: std::io::Error| Error::local(format!("cannot watch for signals: {e}"));
        let mut interrupt = signal(SignalKind::interrupt()).map_err(failed)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(failed)?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
