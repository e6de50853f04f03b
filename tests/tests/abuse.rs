//! Hostile input and abuse: what one user, or one bad entry, can do to
//! everyone else. Each test reproduces a hole that was open, and shows it shut.

use std::time::Duration;

use base64::Engine;
use chat_system_tests::{Db, System, Ws, on_both_databases};
use prost::Message as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

on_both_databases!(
    a_body_with_a_nul_character_is_refused_at_the_edge,
    an_entry_history_cannot_store_is_set_aside_and_everything_after_it_flows,
    in_a_direct_conversation_nobody_deletes_the_other_persons_messages,
    a_device_reading_slowly_during_a_long_catch_up_is_closed_as_too_slow,
    a_sync_within_a_socket_that_connected_without_a_cursor_replays_what_it_missed,
    cursors_past_the_head_of_the_stream_are_refused_and_the_socket_goes_live,
    retiring_a_signing_key_closes_the_sockets_its_tokens_opened,
);

/// Scenarios where the database plays no part run on SQLite only.
macro_rules! on_sqlite {
    ($($test:ident => $scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                chat_system_tests::within_limit($scenario()).await;
            }
        )*
    };
}

on_sqlite!(
    a_client_cannot_dodge_address_limits_by_writing_its_own_forwarded_for => forwarded_for_entries_written_by_the_client_are_ignored,
    sending_faster_than_the_brakes_allow_is_refused_with_a_retry_hint => sends_and_new_conversations_beyond_their_rates_are_refused,
    a_socket_that_floods_frames_is_closed_and_syncs_are_rate_limited => frames_and_syncs_beyond_their_rates,
    sockets_beyond_the_per_user_and_per_gateway_limits_are_refused => sockets_beyond_their_limits,
    slow_request_headers_and_bodies_are_cut_off => slow_headers_and_bodies,
    blocking_and_muting_beyond_their_rate_are_refused_and_blocks_are_capped => safety_changes_beyond_their_limits,
);

/// A whole system on SQLite with the gateway's configuration changed.
async fn on_sqlite_with(change: impl Fn(&mut chat_gateway::Config) + Send + Sync + 'static) -> System {
    System::builder().gateway_config(change).start(Db::Sqlite).await.expect("SQLite always starts")
}

fn rate(burst: u32, refill_secs: u64) -> chat_common::rate_limit::Rate {
    chat_common::rate_limit::Rate { burst, refill: Duration::from_secs(refill_secs) }
}

async fn a_body_with_a_nul_character_is_refused_at_the_edge(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let token = Some(alice.access_token.as_str());

    let path = format!("/v1/conversations/{conversation}/messages");
    let (status, body) = api.post(&path, token, json!({ "client_msg_id": "n1", "body": "a\u{0}b" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_argument")), "{body}");

    let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
    let refused = ws.send_message(1, &conversation, "n2", "a\u{0}b").await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("invalid_argument")));

    // Edits are checked alike, on both paths.
    let ack = ws.send_message(2, &conversation, "ok", "fine").await;
    let message_id = ack["message"]["message_id"].as_str().expect("message_id").to_owned();
    ws.send_json(
        json!({ "type": "edit", "req": 3, "conversation_id": conversation, "message_id": message_id, "body": "\u{0}" }),
    )
    .await;
    let refused = ws.reply(3).await;
    assert_eq!(refused["code"], "invalid_argument", "{refused}");
    let (status, body) = api
        .request(reqwest::Method::PATCH, &format!("{path}/{message_id}"), token, Some(json!({ "body": "x\u{0}" })))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_argument")), "{body}");

    // Nothing refused was stored: history holds the one good message, unedited.
    let stored = api.wait_for_history(&alice, &conversation, 1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["body"], "fine");
    system.stop().await;
}

/// A message with U+0000 (which PostgreSQL's text refuses) and an entry that
/// does not decode, written straight into the stream as no gateway would:
/// history stores everything around them and sets aside what it cannot store.
async fn an_entry_history_cannot_store_is_set_aside_and_everything_after_it_flows(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
    assert_eq!(ws.send_message(1, &conversation, "before", "before").await["type"], "ack");
    api.wait_for_history(&alice, &conversation, 1).await;

    let poisoned = chat_proto::events::v1::Message {
        conversation_id: conversation.clone(),
        message_id: uuid::Uuid::now_v7().to_string(),
        seq: 2,
        sender_id: alice.user_id.clone(),
        sender_device_id: alice.device_id.clone(),
        client_msg_id: "poison".into(),
        body: "poi\u{0}son".into(),
        sent_at_ms: 1,
        ..Default::default()
    };
    let subject = |id: &str| format!("chat.conv.{id}.msg");
    let nul_at = system.publish_raw(subject(&conversation), poisoned.encode_to_vec()).await;
    let garbage_at = system.publish_raw(subject(&uuid::Uuid::new_v4().to_string()), vec![0xff; 7]).await;

    // Later messages are stored, in that conversation and in others.
    for i in 0..5 {
        let ack = ws.send_message(10 + i, &conversation, &format!("after-{i}"), "after").await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let carol = api.new_user("carol").await;
    let other = api.direct(&alice, &carol).await;
    assert_eq!(ws.send_message(20, &other, "elsewhere", "elsewhere").await["type"], "ack");
    let refuses_nul = db == Db::Postgres;
    let stored = api.wait_for_history(&alice, &conversation, if refuses_nul { 6 } else { 7 }).await;
    assert_eq!(stored.last().expect("messages")["body"], "after");
    api.wait_for_history(&carol, &other, 1).await;

    let mut expected = vec![garbage_at as i64];
    if refuses_nul {
        expected.insert(0, nul_at as i64);
    }
    let letters = system.dead_letters().await;
    assert_eq!(letters.iter().map(|(at, _)| *at).collect::<Vec<_>>(), expected, "{letters:?}");
    assert!(letters.iter().all(|(_, reason)| !reason.is_empty()));
    // Counted (each registry is shared by every instance in this test process: at least these).
    assert!(counter(&system, "history", "history_dead_letters_total").await >= expected.len());
    assert!(counter(&system, "gateway", "gateway_skipped_entries_total").await >= 1, "live delivery passed it over");

    // A restart does not bring the refused entries back: nothing is recorded twice.
    let mut system = system;
    system.kill_history().await;
    system.start_history().await;
    assert_eq!(ws.send_message(30, &conversation, "last", "last").await["type"], "ack");
    api.wait_for_history(&alice, &conversation, stored.len() + 1).await;
    assert_eq!(system.dead_letters().await.len(), expected.len());
    tokio::time::sleep(Duration::from_millis(100)).await;
    system.stop().await;
}

async fn in_a_direct_conversation_nobody_deletes_the_other_persons_messages(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    // alice starts the conversation (and is stored as its owner).
    let conversation = api.direct(&alice, &bob).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let ack = bob_ws.send_message(1, &conversation, "b1", "mine").await;
    let message_id = ack["message"]["message_id"].as_str().expect("message_id").to_owned();

    let path = format!("/v1/conversations/{conversation}/messages/{message_id}");
    let (status, body) = api.request(reqwest::Method::DELETE, &path, Some(&alice.access_token), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    alice_ws
        .send_json(json!({ "type": "delete", "req": 2, "conversation_id": conversation, "message_id": message_id }))
        .await;
    assert_eq!(alice_ws.reply(2).await["code"], "forbidden");

    // Bob still deletes his own.
    let (status, body) = api.request(reqwest::Method::DELETE, &path, Some(&bob.access_token), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["deleted_at"].is_string());
    system.stop().await;
}

/// Live frames that arrive during a replay are held back until it ends; a
/// device that reads slowly meanwhile must meet the same bound as any other.
async fn a_device_reading_slowly_during_a_long_catch_up_is_closed_as_too_slow(db: Db) {
    let Some(system) = System::builder()
        .gateway_config(|c| {
            c.socket_queue = 8;
            c.ping_interval = Duration::from_secs(3600);
            c.idle_timeout = Duration::from_secs(7200);
            chat_system_tests::without_send_brakes(c);
        })
        .start(db)
        .await
    else {
        return;
    };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (bob_ws, ready) = Ws::open(&system.ws(0), &bob).await;
    let cursor = ready["cursor"].as_str().expect("cursor").to_owned();
    bob_ws.close().await;
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    // More than the kernel's socket buffers hold, so the replay waits for bob to read.
    let body = "x".repeat(16_000);
    for n in 1..=800 {
        assert_eq!(alice_ws.send_message(n, &conversation, &format!("m{n}"), &body).await["type"], "ack");
    }
    api.wait_for_history(&alice, &conversation, 200).await;

    let url = format!("{}?cursor={cursor}", system.ws(0));
    let mut bob_ws = Ws::connect_with_header(&url, &bob.access_token).await;
    // bob does not read while the replay runs and live messages keep coming.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 1..=40 {
        let ack = alice_ws.send_message(1000 + n, &conversation, &format!("live{n}"), "live").await;
        assert_eq!(ack["type"], "ack");
    }
    let (frames, code) = bob_ws.frames_until_close().await;
    assert_eq!(code, 4408, "closed as too slow after {} frames", frames.len());
    assert!(frames.iter().all(|f| f["type"] != "synced"), "the replay was cut short");
    system.stop().await;
}

async fn a_sync_within_a_socket_that_connected_without_a_cursor_replays_what_it_missed(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (bob_ws, ready) = Ws::open(&system.ws(0), &bob).await;
    let stored_cursor = ready["cursor"].as_str().expect("cursor").to_owned();
    bob_ws.close().await;
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    for n in 1..=3 {
        assert_eq!(
            alice_ws.send_message(n, &conversation, &format!("m{n}"), &format!("missed {n}")).await["type"],
            "ack"
        );
    }

    // Connected without a cursor: live from now.
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    assert_eq!(alice_ws.send_message(4, &conversation, "m4", "live").await["type"], "ack");
    assert_eq!(bob_ws.expect("message").await["message"]["seq"], 4);

    bob_ws.send_json(json!({ "type": "sync", "req": 9, "cursor": stored_cursor })).await;
    let mut replayed = Vec::new();
    let synced = loop {
        let frame = bob_ws.next_json().await;
        match frame["type"].as_str() {
            Some("message") => replayed.push(frame["message"]["seq"].as_u64().expect("seq")),
            Some("synced") => break frame,
            _ => panic!("unexpected frame {frame}"),
        }
    };
    assert_eq!(replayed, [1, 2, 3], "what the socket missed, and not what it had");
    assert_eq!(synced["req"], 9);

    // The same sync again replays nothing: the socket has it all now.
    bob_ws.send_json(json!({ "type": "sync", "req": 10, "cursor": stored_cursor })).await;
    assert_eq!(bob_ws.expect("synced").await["req"], 10);
    assert_eq!(alice_ws.send_message(5, &conversation, "m5", "live again").await["type"], "ack");
    assert_eq!(bob_ws.expect("message").await["message"]["seq"], 5);
    system.stop().await;
}

fn cursor_at(position: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("s1:{position}"))
}

async fn cursors_past_the_head_of_the_stream_are_refused_and_the_socket_goes_live(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;

    for (n, position) in [(1, u64::MAX), (2, 1_000_000)] {
        let url = format!("{}?cursor={}", system.ws(0), cursor_at(position));
        let mut bob_ws = Ws::connect_with_header(&url, &bob.access_token).await;
        bob_ws.expect("ready").await;
        let refused = bob_ws.expect("error").await;
        assert_eq!(refused["code"], "invalid_argument", "{refused}");
        // Live from now: the next message arrives, none is skipped.
        assert_eq!(alice_ws.send_message(n, &conversation, &format!("m{n}"), "hello").await["type"], "ack");
        assert_eq!(bob_ws.expect("message").await["message"]["seq"], n);

        // The same cursors in a `sync` frame.
        bob_ws.send_json(json!({ "type": "sync", "req": 7, "cursor": cursor_at(position) })).await;
        let refused = bob_ws.reply(7).await;
        assert_eq!(refused["code"], "invalid_argument", "{refused}");
        bob_ws.send_json(json!({ "type": "ping", "req": 8 })).await;
        assert_eq!(bob_ws.expect("pong").await["req"], 8);
        bob_ws.close().await;
    }

    // bob's sockets are gone, and so is he: he goes offline for alice.
    let path = format!("/v1/presence?user_ids={}", bob.user_id);
    for _ in 0..200 {
        let (_, body) = api.get(&path, Some(&alice.access_token)).await;
        if body["presence"][0]["status"] == "offline" {
            system.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("bob stayed online");
}

/// Behind a proxy, the address that counts is the one the proxy appended
/// last; whatever the client wrote before it is its own choice.
async fn forwarded_for_entries_written_by_the_client_are_ignored() {
    let Some(system) = System::builder()
        .gateway_config(|c| c.trust_forwarded_for = true)
        .auth_config(|c| {
            c.login_per_address = rate(3, 600);
        })
        .start(Db::Sqlite)
        .await
    else {
        return;
    };
    system.api().new_user("alice").await; // one login from 127.0.0.1 (no header)
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for n in 0..4 {
        let response = http
            .post(format!("{}/v1/auth/login", system.http(0)))
            .header("X-Forwarded-For", format!("10.9.8.{n}, 203.0.113.7"))
            .json(&json!({ "username": "alice", "password": chat_system_tests::client::PASSWORD }))
            .send()
            .await
            .expect("gateway answers");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429], "one address, whatever the client prepends");
    system.stop().await;
}

async fn sends_and_new_conversations_beyond_their_rates_are_refused() {
    let system = on_sqlite_with(|c| {
        c.send_rate_per_socket = rate(3, 60);
        c.send_rate_per_user = rate(5, 60);
        c.conversation_rate_per_user = rate(2, 60);
    })
    .await;
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
    for n in 1..=3 {
        assert_eq!(ws.send_message(n, &conversation, &format!("m{n}"), "hi").await["type"], "ack");
    }
    let refused = ws.send_message(4, &conversation, "m4", "hi").await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(refused["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0 && ms <= 60_000), "{refused}");

    // The user's own allowance spans sockets and HTTP: two more, then 429.
    let path = format!("/v1/conversations/{conversation}/messages");
    let token = Some(alice.access_token.as_str());
    for n in 5..=6 {
        let (status, body) = api.post(&path, token, json!({ "client_msg_id": format!("m{n}"), "body": "hi" })).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, headers, body) = api
        .request_with_headers(reqwest::Method::POST, &path, token, Some(json!({ "client_msg_id": "m7", "body": "hi" })))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(headers.contains_key("retry-after"));
    // Nothing refused was stored.
    assert_eq!(api.wait_for_history(&alice, &conversation, 5).await.len(), 5);

    // Starting conversations: the first one above and one more, then 429.
    api.direct(&alice, &carol).await;
    let (status, headers, body) = api
        .request_with_headers(
            reqwest::Method::POST,
            "/v1/conversations",
            token,
            Some(json!({ "kind": "group", "title": "g", "members": [bob.user_id] })),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(headers.contains_key("retry-after"));
    system.stop().await;
}

async fn frames_and_syncs_beyond_their_rates() {
    let system = on_sqlite_with(|c| {
        c.frame_rate_per_socket = rate(20, 600);
        c.sync_rate_per_socket = rate(2, 60);
    })
    .await;
    let api = system.api();
    let alice = api.new_user("alice").await;
    let (mut ws, ready) = Ws::open(&system.ws(0), &alice).await;
    let cursor = ready["cursor"].as_str().expect("cursor").to_owned();
    for req in 1..=2 {
        ws.send_json(json!({ "type": "sync", "req": req, "cursor": cursor })).await;
        assert_eq!(ws.expect("synced").await["req"], req);
    }
    ws.send_json(json!({ "type": "sync", "req": 3, "cursor": cursor })).await;
    let refused = ws.reply(3).await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(refused["retry_after_ms"].as_u64().is_some(), "{refused}");

    // 3 frames so far: 17 more pings are within the rate, the 18th closes the
    // socket; what follows it is read and dropped, and the close still arrives.
    for req in 10..40 {
        ws.send_json(json!({ "type": "ping", "req": req })).await;
    }
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, 4429, "{frames:?}");
    assert_eq!(frames.iter().filter(|f| f["type"] == "pong").count(), 17, "the frames within the rate were answered");
    system.stop().await;
}

async fn sockets_beyond_their_limits() {
    let system = on_sqlite_with(|c| {
        c.max_sockets_per_user = 2;
        c.max_sockets = 3;
    })
    .await;
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let (_first, _) = Ws::open(&system.ws(0), &alice).await;
    let (_second, _) = Ws::open(&system.ws(0), &alice).await;
    // A third of alice's: refused at the upgrade with a header, closed 4429 after an auth frame.
    assert_eq!(Ws::refused_status(&system.ws(0), Some(&alice.access_token), None).await, 429);
    let mut third = Ws::connect(&system.ws(0)).await;
    third.send_json(json!({ "type": "auth", "token": alice.access_token })).await;
    assert_eq!(third.expect_close().await, 4429);

    // Its task ends once it has the client's answering close; then bob's
    // first socket fills the gateway, and the next upgrade of anyone is 503.
    third.close().await;
    let mut bob_socket = None;
    for _ in 0..100 {
        let mut request = system.ws(0).into_client_request().expect("ws url");
        request.headers_mut().insert("Authorization", format!("Bearer {}", bob.access_token).parse().expect("header"));
        match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => {
                bob_socket = Some(connected);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(bob_socket.is_some(), "a place on the gateway is free again");
    assert_eq!(Ws::refused_status(&system.ws(0), Some(&bob.access_token), None).await, 503);
    system.stop().await;
}

async fn slow_headers_and_bodies() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let system = on_sqlite_with(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    // Headers that never end: the connection is answered 408 and closed.
    let mut slow = tokio::net::TcpStream::connect(system.gateway_addr(0)).await.expect("connects");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("writes");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
        .await
        .expect("the gateway ends the connection")
        .expect("reads");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A body that stops arriving: 408 with the protocol's error body.
    let mut slow = tokio::net::TcpStream::connect(system.gateway_addr(0)).await.expect("connects");
    let head = "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user";
    slow.write_all(head.as_bytes()).await.expect("writes");
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer))
        .await
        .expect("the gateway answers")
        .expect("reads");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    system.stop().await;
}

async fn retiring_a_signing_key_closes_the_sockets_its_tokens_opened(db: Db) {
    use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
    use chat_proto::auth::v1::{RetireSigningKeyRequest, RotateSigningKeyRequest};
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let header = jsonwebtoken::decode_header(&alice.access_token).expect("a JWT");
    let old_kid = header.kid.expect("kid");
    let (mut old_socket, _) = Ws::open(&system.ws(0), &alice).await;

    let mut auth = AuthServiceClient::connect(format!("http://{}", system.auth_addr)).await.expect("auth gRPC");
    auth.rotate_signing_key(RotateSigningKeyRequest {}).await.expect("rotate");
    let laptop = api.login("alice").await;
    let (mut new_socket, _) = Ws::open(&system.ws(0), &laptop).await;
    auth.retire_signing_key(RetireSigningKeyRequest { kid: old_kid }).await.expect("retire");

    assert_eq!(old_socket.expect_close().await, 4401, "the retired key's socket is closed");
    new_socket.send_json(json!({ "type": "ping", "req": 1 })).await;
    assert_eq!(new_socket.expect("pong").await["req"], 1, "the new key's socket stays");
    system.stop().await;
}

/// A counter's value on a service's `/metrics`.
async fn counter(system: &System, service: &str, name: &str) -> usize {
    let metrics = reqwest::get(format!("http://{}/metrics", system.metrics_addrs[service]))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("{name} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Every block is held by every gateway, notification instance and history,
/// and every mute and report is a write: a user cannot make them without end.
async fn safety_changes_beyond_their_limits() {
    let system = on_sqlite_with(|c| {
        c.safety_rate_per_user = rate(6, 60);
        c.max_blocks_per_user = 2;
    })
    .await;
    let api = system.api();
    let alice = api.new_user("alice").await;
    let [bob, carol, dave] = [api.new_user("bob").await, api.new_user("carol").await, api.new_user("dave").await];
    let token = Some(alice.access_token.as_str());
    let put = async |whom: &str| api.request(reqwest::Method::PUT, &format!("/v1/blocks/{whom}"), token, None).await;

    // Two blocks, the most allowed; blocking one of them again changes nothing.
    assert_eq!(put(&bob.user_id).await.0, 204);
    assert_eq!(put(&carol.user_id).await.0, 204);
    assert_eq!(put(&carol.user_id).await.0, 204, "already blocked: not a new block");
    let (status, body) = put(&dave.user_id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("blocked 2 users"), "{body}");
    let (_, blocks) = api.request(reqwest::Method::GET, "/v1/blocks", token, None).await;
    assert_eq!(blocks["blocks"].as_array().map(Vec::len), Some(2), "the refused block was not made: {blocks}");

    // Unblocking frees a place.
    let (status, _) = api.request(reqwest::Method::DELETE, &format!("/v1/blocks/{}", bob.user_id), token, None).await;
    assert_eq!(status, 204);
    assert_eq!(put(&dave.user_id).await.0, 204);

    // Six changes so far (the refused block counted too); a mute is the seventh.
    let conversation = api.direct(&alice, &bob).await;
    let (status, headers, body) = api
        .request_with_headers(reqwest::Method::PUT, &format!("/v1/conversations/{conversation}/mute"), token, None)
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(headers.contains_key("retry-after"));
    let (_, listed) = api.request(reqwest::Method::GET, "/v1/conversations", token, None).await;
    let muted =
        listed["conversations"].as_array().unwrap().iter().find(|c| c["conversation_id"] == conversation.as_str());
    assert_eq!(muted.map(|c| c["muted"].clone()), Some(json!(false)), "the refused mute was not made: {listed}");
    // Other users have their own allowance.
    let (status, _) = api
        .request(reqwest::Method::PUT, &format!("/v1/blocks/{}", alice.user_id), Some(&bob.access_token), None)
        .await;
    assert_eq!(status, 204);
    system.stop().await;
}
