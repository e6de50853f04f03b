//! Clients that speak protocol v1 exactly as a third-party client would: HTTP
//! with reqwest and WebSockets with tokio-tungstenite.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const PASSWORD: &str = "correct horse battery";
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// One logged-in device of a user.
#[derive(Debug, Clone)]
pub struct Device {
    pub username: String,
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self { base: base.to_owned(), http: reqwest::Client::new() }
    }

    /// `http://host:port` of the gateway.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, body) = self.request_with_headers(method, path, token, body).await;
        (status, body)
    }

    /// Like `request`, with the response headers.
    pub async fn request_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("gateway answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, token, Some(body)).await
    }

    /// Registers `username` and logs in its first device.
    pub async fn new_user(&self, username: &str) -> Device {
        let (status, body) =
            self.post("/v1/auth/register", None, json!({ "username": username, "password": PASSWORD })).await;
        assert_eq!(status, 201, "register {username}: {body}");
        self.login(username).await
    }

    /// Logs in another device of an existing user.
    pub async fn login(&self, username: &str) -> Device {
        let (status, body) =
            self.post("/v1/auth/login", None, json!({ "username": username, "password": PASSWORD })).await;
        assert_eq!(status, 200, "login {username}: {body}");
        Device {
            username: username.to_owned(),
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            access_token: body["access_token"].as_str().expect("access_token").to_owned(),
            refresh_token: body["refresh_token"].as_str().expect("refresh_token").to_owned(),
        }
    }

    /// Creates (or finds) the direct conversation of two users; returns its id.
    pub async fn direct(&self, me: &Device, other: &Device) -> String {
        let (status, body) = self
            .post("/v1/conversations", Some(&me.access_token), json!({ "kind": "direct", "members": [other.user_id] }))
            .await;
        assert!(status == 201 || status == 200, "create direct: {status} {body}");
        body["conversation_id"].as_str().expect("conversation_id").to_owned()
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn group(&self, owner: &Device, title: &str, members: &[&Device]) -> String {
        let members: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
        let body = json!({ "kind": "group", "title": title, "members": members });
        let (status, created) = self.post("/v1/conversations", Some(&owner.access_token), body).await;
        assert_eq!(status, 201, "create group: {created}");
        created["conversation_id"].as_str().expect("conversation_id").to_owned()
    }

    /// Sends a message over HTTP (a fresh `client_msg_id`); returns the stored message.
    pub async fn send(&self, from: &Device, conversation_id: &str, body: &str) -> Value {
        let message = json!({ "client_msg_id": uuid::Uuid::new_v4().to_string(), "body": body });
        let path = format!("/v1/conversations/{conversation_id}/messages");
        let (status, sent) = self.post(&path, Some(&from.access_token), message).await;
        assert_eq!(status, 201, "send: {sent}");
        sent
    }

    /// Pages a conversation's messages as `device`.
    pub async fn messages(&self, device: &Device, conversation_id: &str, query: &str) -> (u16, Value) {
        self.get(&format!("/v1/conversations/{conversation_id}/messages{query}"), Some(&device.access_token)).await
    }

    /// Waits until history returns at least `count` messages for the conversation.
    pub async fn wait_for_history(&self, device: &Device, conversation_id: &str, count: usize) -> Vec<Value> {
        for _ in 0..200 {
            let (status, body) = self.messages(device, conversation_id, "?limit=200").await;
            assert_eq!(status, 200, "{body}");
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            if messages.len() >= count {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("history did not reach {count} messages");
    }
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Ws {
    stream: Stream,
    /// Frames read ahead while waiting for an `ack`, returned first by `next_json`.
    pending: std::collections::VecDeque<Value>,
    /// Whether `presence` frames are wanted. Most tests are about something
    /// else and skip them, as a client skips frames it has no use for.
    presence: bool,
}

impl Ws {
    /// Connects with `Authorization: Bearer`; the caller reads `ready` itself.
    pub async fn connect_with_header(url: &str, token: &str) -> Self {
        let mut request = url.into_client_request().expect("ws url");
        request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().expect("header"));
        let (stream, _) = tokio_tungstenite::connect_async(request).await.expect("ws connects");
        Self { stream, pending: Default::default(), presence: false }
    }

    /// Connects without credentials (for first-frame auth).
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("ws connects");
        Self { stream, pending: Default::default(), presence: false }
    }

    /// Header auth, then waits for `ready`; returns the socket and the frame.
    pub async fn open(url: &str, device: &Device) -> (Self, Value) {
        let mut ws = Self::connect_with_header(url, &device.access_token).await;
        let ready = ws.next_json().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        (ws, ready)
    }

    /// The HTTP status of an upgrade that was refused.
    pub async fn refused_status(url: &str, token: Option<&str>, origin: Option<&str>) -> u16 {
        let mut request = url.into_client_request().expect("ws url");
        if let Some(token) = token {
            request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().expect("header"));
        }
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse().expect("header"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("upgrade was accepted"),
        }
    }

    /// Like `open`, keeping `presence` frames.
    pub async fn open_with_presence(url: &str, device: &Device) -> (Self, Value) {
        let (mut ws, ready) = Self::open(url, device).await;
        ws.presence = true;
        (ws, ready)
    }

    /// Closes the socket normally (1000).
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    fn skipped(&self, text: &str) -> bool {
        !self.presence && text.contains(r#""type":"presence""#)
    }

    /// Sends a message as it is: a raw frame (reserved bits, bytes that are
    /// not UTF-8) or a close, for tests of the framing layer.
    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("ws send");
    }

    /// Starts the closing handshake with `code` and waits for the server's
    /// answer: `Some(code)` of the close frame it echoes (frames before it
    /// are skipped), `None` when the connection ended without one, which a
    /// browser reports as 1006.
    pub async fn close_with(&mut self, code: u16) -> Option<u16> {
        let frame = CloseFrame { code: code.into(), reason: "done".into() };
        self.stream.send(Message::Close(Some(frame))).await.expect("ws close");
        self.expect_ended().await
    }

    /// True when the server ends the TCP connection after the closing
    /// handshake (within the frame timeout) without sending anything more.
    pub async fn ends_cleanly(&mut self) -> bool {
        matches!(tokio::time::timeout(FRAME_TIMEOUT, self.stream.next()).await, Ok(None))
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.into())).await.expect("ws send");
    }

    /// The next text frame as JSON; panics on close or timeout.
    pub async fn next_json(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        self.read_json().await
    }

    async fn read_json(&mut self) -> Value {
        loop {
            let next =
                tokio::time::timeout(FRAME_TIMEOUT, self.stream.next()).await.expect("a frame within the timeout");
            match next {
                Some(Ok(Message::Text(text))) if self.skipped(&text) => continue,
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).expect("server frames are JSON");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame of `kind`, failing on any other frame in between.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["type"], kind, "expected a {kind} frame, got {frame}");
        frame
    }

    /// Asserts no text frame arrives for `duration` (reading, and so answering
    /// pings, all the while).
    pub async fn expect_silence(&mut self, duration: Duration) {
        if let Some(frame) = self.pending.pop_front() {
            panic!("expected silence, got {frame}");
        }
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(next) = tokio::time::timeout_at(deadline, self.stream.next()).await {
            match next {
                Some(Ok(Message::Text(text))) if self.skipped(&text) => continue,
                Some(Ok(Message::Text(text))) => panic!("expected silence, got {text}"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads every text frame up to the server's close frame (frames read
    /// ahead first); returns them and the close code.
    pub async fn frames_until_close(&mut self) -> (Vec<Value>, u16) {
        let mut frames: Vec<Value> = self.pending.drain(..).collect();
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await.expect("a close within the timeout");
            match next {
                Some(Ok(Message::Text(text))) => {
                    frames.push(serde_json::from_str(&text).expect("server frames are JSON"))
                }
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return (frames, code.into()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected frames and then a close frame, got {other:?}"),
            }
        }
    }

    /// Waits for the server's close frame (skipping the frames before it) and returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        self.frames_until_close().await.1
    }

    /// Waits until the server ends the socket: `Some(code)` for a close frame,
    /// `None` when the connection was gone before one could be read (a client
    /// answering queued pings writes into a socket the server already closed).
    pub async fn expect_ended(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await.expect("the socket ends in time") {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Sends a message and returns the `ack` (or `error`) frame.
    pub async fn send_message(&mut self, req: i64, conversation_id: &str, client_msg_id: &str, body: &str) -> Value {
        self.send_json(json!({
            "type": "send", "req": req, "conversation_id": conversation_id,
            "client_msg_id": client_msg_id, "body": body,
        }))
        .await;
        self.reply(req).await
    }

    /// The `ack` or `error` answering `req`. Frames that arrive first (the
    /// sender's own copy of an event may precede its ack) are kept for
    /// `next_json`, in order.
    pub async fn reply(&mut self, req: i64) -> Value {
        let mut passed = std::collections::VecDeque::new();
        let found = loop {
            let frame = match self.pending.pop_front() {
                Some(frame) => frame,
                None => self.read_json().await,
            };
            let answers = matches!(frame["type"].as_str(), Some("ack" | "error")) && frame["req"] == req;
            if answers {
                break frame;
            }
            passed.push_back(frame);
        };
        passed.extend(self.pending.drain(..));
        self.pending = passed;
        found
    }
}
