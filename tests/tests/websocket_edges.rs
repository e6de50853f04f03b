//! The edges of the WebSocket protocol (RFC 6455) and of conversation
//! changes that a hostile or careless client reaches: the closing handshake,
//! frames that break the framing rules, and member changes by a stranger.
//!
//! The framing tests do not depend on the database and run on SQLite; the
//! member changes run on both databases.

use chat_system_tests::{Db, System, Ws, on_both_databases, within_limit};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

on_both_databases!(a_stranger_is_forbidden_to_change_any_conversation_and_a_member_of_a_direct_one_gets_conflict);

/// A text frame carrying `payload` as it is, valid UTF-8 or not.
fn raw_text_frame(payload: &[u8]) -> Message {
    Message::Frame(Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_echoed_with_its_code_and_the_connection_ends_cleanly() {
    within_limit(async {
        let system = System::start_sqlite().await;
        let api = system.api();
        let alice = api.new_user("alice").await;

        // A normal close and an application's own code (4000-4999) are both
        // echoed as sent (RFC 6455 section 5.5.1).
        for code in [1000, 4000] {
            let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
            assert_eq!(ws.close_with(code).await, Some(code), "the server echoes close {code}");
            assert!(ws.ends_cleanly().await, "the server ends the connection after the handshake");
        }

        // Before authenticating, too.
        let mut unauthenticated = Ws::connect(&system.ws(0)).await;
        assert_eq!(unauthenticated.close_with(1000).await, Some(1000));
        system.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007_and_broken_framing_with_1002() {
    within_limit(async {
        let system = System::start_sqlite().await;
        let api = system.api();
        let alice = api.new_user("alice").await;

        let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
        ws.send_raw(raw_text_frame(b"{\"type\":\"ping\",\"req\":1,\"x\":\"\xff\xfe\"}")).await;
        assert_eq!(ws.expect_close().await, 1007, "a text frame that is not UTF-8");

        let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
        let mut frame = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Text), true);
        frame.header_mut().rsv1 = true;
        ws.send_raw(Message::Frame(frame)).await;
        assert_eq!(ws.expect_close().await, 1002, "a reserved bit no extension was agreed for");

        let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
        ws.send_raw(Message::Frame(Frame::message(Vec::new(), OpCode::Data(Data::Continue), true))).await;
        assert_eq!(ws.expect_close().await, 1002, "a continuation frame with nothing to continue");
        system.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_the_size_limit_close_with_1009() {
    within_limit(async {
        let max_frame_bytes = 1024;
        let system = System::builder()
            .gateway_config(move |c| c.max_frame_bytes = max_frame_bytes)
            .start(Db::Sqlite)
            .await
            .expect("sqlite needs no server");
        let api = system.api();
        let alice = api.new_user("alice").await;

        // Over the configured limit: refused by the session.
        let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
        ws.send_text(&"x".repeat(max_frame_bytes + 1)).await;
        assert_eq!(ws.expect_close().await, 1009);

        // Over the hard limit the WebSocket layer enforces while reading.
        let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
        ws.send_text(&"x".repeat(max_frame_bytes * 4 + 1)).await;
        assert_eq!(ws.expect_close().await, 1009);
        system.stop().await;
    })
    .await;
}

async fn a_stranger_is_forbidden_to_change_any_conversation_and_a_member_of_a_direct_one_gets_conflict(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let mallory = api.new_user("mallory").await;
    let direct = api.direct(&alice, &bob).await;
    let (status, group) = api
        .post(
            "/v1/conversations",
            Some(&alice.access_token),
            json!({ "kind": "group", "title": "team", "members": [bob.user_id] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let group = group["conversation_id"].as_str().expect("conversation_id").to_owned();

    // Every change a client can ask for, on a conversation of either kind.
    let changes = |conversation: &str| {
        let path = format!("/v1/conversations/{conversation}");
        vec![
            (Method::PATCH, path.clone(), Some(json!({ "title": "mine now" }))),
            (Method::POST, format!("{path}/members"), Some(json!({ "members": [mallory.user_id] }))),
            (Method::DELETE, format!("{path}/members/{}", bob.user_id), None),
            (Method::PATCH, format!("{path}/members/{}", bob.user_id), Some(json!({ "role": "admin" }))),
        ]
    };
    for conversation in [&direct, &group] {
        for (method, path, body) in changes(conversation) {
            let (status, answer) = api.request(method.clone(), &path, Some(&mallory.access_token), body).await;
            assert_eq!(
                (status, answer["error"]["code"].clone()),
                (403, Value::from("forbidden")),
                "a stranger's {method} {path}: {answer}"
            );
        }
    }

    // A member of the direct conversation learns that it cannot change.
    for (method, path, body) in changes(&direct) {
        let (status, answer) = api.request(method.clone(), &path, Some(&alice.access_token), body).await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (409, Value::from("conflict")),
            "a member's {method} {path}: {answer}"
        );
    }
    system.stop().await;
}

/// The gateway's read buffer is 256 bytes: a frame ten times that, carrying a
/// NUL, written a few bytes at a time by a slow client, is read whole and
/// answered, and the socket serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_far_larger_than_the_read_buffer_arriving_a_few_bytes_at_a_time_is_read_whole() {
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    within_limit(async {
        let system = System::start_sqlite().await;
        let alice = system.api().new_user("alice").await;
        let mut request = system.ws(0).into_client_request().expect("ws url");
        let bearer = format!("Bearer {}", alice.access_token).parse().expect("header");
        request.headers_mut().insert("Authorization", bearer);
        let host = request.uri().authority().expect("an address").as_str().to_owned();
        let tcp = tokio::net::TcpStream::connect(host).await.expect("tcp");
        tcp.set_nodelay(true).expect("nodelay");
        let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.expect("upgrade");
        let ready = next_text(&mut ws).await;
        assert_eq!(ready["type"], "ready", "{ready}");

        let padding = format!("{}\u{0}{}", "p".repeat(1_300), "q".repeat(1_300));
        let text = json!({ "type": "ping", "req": 7, "padding": padding }).to_string();
        let mut frame = Frame::message(text.into_bytes(), OpCode::Data(Data::Text), true);
        frame.header_mut().mask = Some([0x12, 0x34, 0x56, 0x78]);
        let mut bytes = Vec::new();
        frame.format(&mut bytes).expect("a frame");
        for piece in bytes.chunks(7) {
            ws.get_mut().write_all(piece).await.expect("tcp write");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let answer = next_text(&mut ws).await;
        assert_eq!(answer, json!({ "type": "pong", "req": 7 }), "the whole frame was read");

        // And the socket goes on: a small frame right after.
        ws.send(Message::Text(json!({ "type": "ping", "req": 8 }).to_string().into())).await.expect("send");
        assert_eq!(next_text(&mut ws).await["req"], 8);
        system.stop().await;
    })
    .await;

    async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        loop {
            match ws.next().await.expect("a frame").expect("no error") {
                Message::Text(text) => return serde_json::from_str(&text).expect("json"),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
