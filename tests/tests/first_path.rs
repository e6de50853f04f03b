//! The first path of the product, end to end over real sockets: register,
//! log in, open a direct conversation, send over a WebSocket, get the ack with
//! its seq, see it live on every device of both members, and page it back from
//! history. Each scenario runs on SQLite and on PostgreSQL.

use std::time::Duration;

use chat_system_tests::{Db, System, Ws, on_both_databases};
use serde_json::json;

on_both_databases!(
    a_message_reaches_every_device_of_both_members_and_history,
    resending_a_client_msg_id_returns_the_original_and_delivers_once,
    a_non_member_send_is_refused_and_nothing_is_stored,
    missing_bad_and_expired_tokens_are_refused,
    malformed_frames_get_error_frames_and_the_socket_keeps_working,
    http_send_and_paging_follow_the_protocol,
    a_resend_after_the_duplicate_window_still_returns_the_original,
    a_page_read_right_after_a_send_includes_it,
);

async fn a_message_reaches_every_device_of_both_members_and_history(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice_phone = api.new_user("alice").await;
    let alice_laptop = api.login("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    assert_ne!(alice_phone.device_id, alice_laptop.device_id, "each login is a new device");
    let conversation = api.direct(&alice_phone, &bob).await;

    // Header auth for three sockets, first-frame auth for the laptop.
    let (mut phone, _) = Ws::open(&system.ws(0), &alice_phone).await;
    let mut laptop = Ws::connect(&system.ws(0)).await;
    laptop.send_json(json!({ "type": "auth", "token": alice_laptop.access_token })).await;
    let ready = laptop.expect("ready").await;
    assert_eq!(ready["user_id"], alice_phone.user_id.as_str());
    assert_eq!(ready["device_id"], alice_laptop.device_id.as_str());
    assert!(ready["cursor"].is_string());
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut carol_ws, _) = Ws::open(&system.ws(0), &carol).await;

    let ack = phone.send_message(1, &conversation, "m-1", "hello bob").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let message = &ack["message"];
    assert_eq!(message["seq"], 1);
    assert_eq!(message["body"], "hello bob");
    assert_eq!(message["sender_id"], alice_phone.user_id.as_str());
    assert_eq!(message["sender_device_id"], alice_phone.device_id.as_str());
    assert_eq!(message["client_msg_id"], "m-1");
    assert_eq!(message["conversation_id"], conversation.as_str());
    assert!(message["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')));

    for socket in [&mut phone, &mut laptop, &mut bob_ws] {
        let frame = socket.expect("message").await;
        assert_eq!(frame["message"], *message, "every device sees the same message");
        assert!(frame["cursor"].is_string());
    }
    carol_ws.expect_silence(Duration::from_millis(300)).await;

    let second = bob_ws.send_message(7, &conversation, "b-1", "hi alice").await;
    assert_eq!(second["message"]["seq"], 2, "seq has no gaps");

    let stored = api.wait_for_history(&bob, &conversation, 2).await;
    assert_eq!(stored[0], *message);
    assert_eq!(stored[1]["body"], "hi alice");
    system.stop().await;
}

async fn resending_a_client_msg_id_returns_the_original_and_delivers_once(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;

    let first = alice_ws.send_message(1, &conversation, "same-id", "once").await;
    let again = alice_ws.send_message(2, &conversation, "same-id", "once").await;
    assert_eq!(again["type"], "ack");
    assert_eq!(again["message"], first["message"], "the re-send is acked with the original");

    // Over HTTP too, even with a different body: the original wins.
    let (status, body) = api
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&alice.access_token),
            json!({ "client_msg_id": "same-id", "body": "changed" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, first["message"]);

    bob_ws.expect("message").await;
    let next = alice_ws.send_message(3, &conversation, "other-id", "next").await;
    assert_eq!(next["message"]["seq"], 2, "the duplicate burned no seq");
    let frame = bob_ws.expect("message").await;
    assert_eq!(frame["message"]["seq"], 2, "bob received the duplicate only once");

    // A re-send after newer messages (the conversation's head has moved on).
    let late = alice_ws.send_message(4, &conversation, "same-id", "once").await;
    assert_eq!(late["message"], first["message"]);
    let after = alice_ws.send_message(5, &conversation, "third-id", "third").await;
    assert_eq!(after["message"]["seq"], 3);
    assert_eq!(bob_ws.expect("message").await["message"]["seq"], 3);
    assert_eq!(api.wait_for_history(&bob, &conversation, 3).await.len(), 3);
    system.stop().await;
}

async fn a_non_member_send_is_refused_and_nothing_is_stored(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let mallory = api.new_user("mallory").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut mallory_ws, _) = Ws::open(&system.ws(0), &mallory).await;

    let refused = mallory_ws.send_message(5, &conversation, "x-1", "let me in").await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "forbidden");
    assert_eq!(refused["req"], 5);

    let unknown = mallory_ws.send_message(6, &uuid::Uuid::new_v4().to_string(), "x-2", "anyone?").await;
    assert_eq!(unknown["code"], "not_found");

    let (status, body) = api.messages(&mallory, &conversation, "").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    bob_ws.expect_silence(Duration::from_millis(300)).await;
    // The socket still works after the refusals.
    mallory_ws.send_json(json!({ "type": "ping", "req": 9 })).await;
    assert_eq!(mallory_ws.expect("pong").await["req"], 9);
    assert_eq!(system.stored_message_count().await, 0);
    system.stop().await;
}

async fn missing_bad_and_expired_tokens_are_refused(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let now = chat_common::time::now_ms() / 1000;
    let expired = system
        .sign_with_auth_key(
            None,
            &json!({
                "sub": alice.user_id, "did": alice.device_id, "iss": "chat-auth", "aud": "chat",
                "iat": now - 3600, "nbf": now - 3600, "exp": now - 600, "jti": "expired",
            }),
        )
        .await;
    // Flip one character in the middle of the signature (not the last one,
    // whose low bits are base64 padding).
    let signature_start = alice.access_token.rfind('.').expect("three parts") + 1;
    let middle = signature_start + 20;
    let mut tampered = alice.access_token.clone().into_bytes();
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");

    // HTTP: no token, garbage, tampered, expired.
    for token in [None, Some("not-a-jwt"), Some(tampered.as_str()), Some(expired.as_str())] {
        let (status, body) = api.get("/v1/users/me", token).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, me) = api.get("/v1/users/me", Some(&alice.access_token)).await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "alice");

    // WebSocket upgrade with a bad header: HTTP 401 before the upgrade.
    for token in ["not-a-jwt", tampered.as_str(), expired.as_str()] {
        assert_eq!(Ws::refused_status(&system.ws(0), Some(token), None).await, 401);
    }
    // An origin outside the allow-list: 403 before the upgrade.
    assert_eq!(Ws::refused_status(&system.ws(0), Some(&alice.access_token), Some("https://evil.example")).await, 403);

    // First-frame auth with a bad or expired token: close 4401.
    for token in ["not-a-jwt", expired.as_str()] {
        let mut ws = Ws::connect(&system.ws(0)).await;
        ws.send_json(json!({ "type": "auth", "token": token })).await;
        assert_eq!(ws.expect_close().await, 4401);
    }
    // Something other than auth first: close 4401.
    let mut ws = Ws::connect(&system.ws(0)).await;
    ws.send_json(json!({ "type": "ping", "req": 1 })).await;
    assert_eq!(ws.expect_close().await, 4401);
    system.stop().await;
}

async fn malformed_frames_get_error_frames_and_the_socket_keeps_working(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;

    let cases: Vec<(String, &str)> = vec![
        ("this is not json".into(), "invalid_frame"),
        ("[1, 2, 3]".into(), "invalid_frame"),
        (json!({ "req": 1 }).to_string(), "invalid_frame"),
        (json!({ "type": "teleport", "req": 2 }).to_string(), "unknown_type"),
        (json!({ "type": "send", "req": 3, "conversation_id": conversation }).to_string(), "invalid_frame"),
        (
            json!({ "type": "send", "req": 4, "conversation_id": conversation, "client_msg_id": "a", "body": "" }).to_string(),
            "invalid_argument",
        ),
        (
            json!({ "type": "send", "req": 5, "conversation_id": conversation, "client_msg_id": "a",
                    "body": "x".repeat(16_385) })
            .to_string(),
            "too_large",
        ),
        (
            json!({ "type": "send", "req": 6, "conversation_id": conversation, "client_msg_id": "c".repeat(65), "body": "b" })
                .to_string(),
            "invalid_argument",
        ),
    ];
    for (frame, code) in cases {
        ws.send_text(&frame).await;
        let error = ws.expect("error").await;
        assert_eq!(error["code"], code, "for {frame:.80}: {error}");
    }
    // Exactly at the limit is fine, and the socket still sends.
    let ack = ws.send_message(10, &conversation, "max", &"y".repeat(16_384)).await;
    assert_eq!(ack["type"], "ack", "{ack:.200}");
    assert_eq!(ack["message"]["seq"], 1);
    system.stop().await;
}

async fn http_send_and_paging_follow_the_protocol(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    assert_eq!(api.direct(&bob, &alice).await, conversation, "one direct conversation per pair");

    let path = format!("/v1/conversations/{conversation}/messages");
    for i in 1..=7 {
        let (status, body) = api
            .post(
                &path,
                Some(&alice.access_token),
                json!({ "client_msg_id": format!("h-{i}"), "body": format!("#{i}") }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["seq"], i);
    }
    api.wait_for_history(&bob, &conversation, 7).await;
    let seqs = |body: &serde_json::Value| -> Vec<u64> {
        body["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
    };
    let (_, newest) = api.messages(&bob, &conversation, "?limit=3").await;
    assert_eq!((seqs(&newest), newest["has_more"].as_bool()), (vec![5, 6, 7], Some(true)));
    let (_, older) = api.messages(&bob, &conversation, "?limit=3&before_seq=5").await;
    assert_eq!((seqs(&older), older["has_more"].as_bool()), (vec![2, 3, 4], Some(true)));
    let (_, oldest) = api.messages(&bob, &conversation, "?limit=3&before_seq=2").await;
    assert_eq!((seqs(&oldest), oldest["has_more"].as_bool()), (vec![1], Some(false)));
    let (_, after) = api.messages(&bob, &conversation, "?limit=4&after_seq=2").await;
    assert_eq!((seqs(&after), after["has_more"].as_bool()), (vec![3, 4, 5, 6], Some(true)));
    let (_, between) = api.messages(&bob, &conversation, "?after_seq=2&before_seq=5").await;
    assert_eq!((seqs(&between), between["has_more"].as_bool()), (vec![3, 4], Some(false)));
    for bad in ["?limit=0", "?limit=201", "?before_seq=abc"] {
        let (status, body) = api.messages(&bob, &conversation, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument");
    }

    let (status, list) = api.get("/v1/conversations", Some(&bob.access_token)).await;
    assert_eq!(status, 200);
    let entry = &list["conversations"][0];
    assert_eq!(entry["conversation_id"], conversation.as_str());
    assert_eq!(entry["last_message"]["seq"], 7);
    assert_eq!(entry["unread_count"], 7);
    system.stop().await;
}

/// history stores messages in batches a few milliseconds after JetStream
/// has them; a page read right after the `201` must still hold the message.
async fn a_page_read_right_after_a_send_includes_it(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let path = format!("/v1/conversations/{conversation}/messages");
    for seq in 1..=20_u64 {
        let (status, body) = api
            .post(&path, Some(&alice.access_token), json!({ "client_msg_id": format!("r-{seq}"), "body": "hi" }))
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, newest) = api.messages(&alice, &conversation, "?limit=1").await;
        assert_eq!(status, 200, "{newest}");
        assert_eq!(newest["messages"][0]["seq"], seq, "the newest page after send {seq}");
        let (_, after) = api.messages(&bob, &conversation, &format!("?after_seq={}", seq - 1)).await;
        assert_eq!(after["messages"][0]["seq"], seq, "the page after seq {} for the peer", seq - 1);
    }
    system.stop().await;
}

async fn a_resend_after_the_duplicate_window_still_returns_the_original(db: Db) {
    let Some(system) = System::builder().duplicate_window(Duration::from_secs(1)).start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;

    let original = alice_ws.send_message(1, &conversation, "late-retry", "hello").await;
    assert_eq!(bob_ws.expect("message").await["message"], original["message"]);
    // Well past JetStream's duplicate window.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = alice_ws.send_message(2, &conversation, "late-retry", "hello").await;
    assert_eq!(late["message"], original["message"], "the original, not a second message");
    let (status, body) = api
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&alice.access_token),
            json!({ "client_msg_id": "late-retry", "body": "hello" }),
        )
        .await;
    assert_eq!((status, &body), (200, &original["message"]));

    let next = alice_ws.send_message(3, &conversation, "fresh", "next").await;
    assert_eq!(next["message"]["seq"], 2, "no seq was burnt");
    assert_eq!(bob_ws.expect("message").await["message"]["seq"], 2, "bob got the original once");
    assert_eq!(api.wait_for_history(&bob, &conversation, 2).await.len(), 2);
    assert_eq!(system.stored_message_count().await, 2);
    system.stop().await;
}
