//! Safety for users: blocking (a blocked sender's messages reach the blocker
//! hidden, live, in catch-up and pages, and are neither found nor pushed;
//! presence and typing do not cross a block; a user who blocked you looks
//! unknown when you try to bring them into a conversation), muting (no push,
//! unread counts go on) and reporting (kept with its context). Each with its
//! bad input refused and nothing half-applied.

use std::time::Duration;

use chat_system_tests::client::Api;
use chat_system_tests::push::{PushEndpoint, verify_webhook};
use chat_system_tests::{Db, Device, System, Ws, on_both_databases};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row as _;

async fn call(api: &Api, method: Method, path: &str, who: &Device) -> (u16, Value) {
    api.request(method, path, Some(&who.access_token), None).await
}

async fn block(api: &Api, who: &Device, whom: &str) -> (u16, Value) {
    call(api, Method::PUT, &format!("/v1/blocks/{whom}"), who).await
}

async fn unblock(api: &Api, who: &Device, whom: &str) -> (u16, Value) {
    call(api, Method::DELETE, &format!("/v1/blocks/{whom}"), who).await
}

async fn blocked_ids(api: &Api, who: &Device) -> Vec<Value> {
    let (status, body) = call(api, Method::GET, "/v1/blocks", who).await;
    assert_eq!(status, 200, "{body}");
    body["blocks"].as_array().unwrap().iter().map(|b| b["user_id"].clone()).collect()
}

async fn group(api: &Api, owner: &Device, members: &[&Device]) -> (u16, Value) {
    let members: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
    let body = json!({ "kind": "group", "title": "book club", "members": members });
    api.post("/v1/conversations", Some(&owner.access_token), body).await
}

/// The next `message` frame, passing over presence and read frames.
async fn next_message(ws: &mut Ws) -> Value {
    loop {
        let frame = ws.next_json().await;
        if frame["type"] == "message" {
            return frame;
        }
    }
}

fn assert_hidden(message: &Value, sender: &Device) {
    assert_eq!(message["hidden"], true, "{message}");
    assert_eq!(message["sender_id"], sender.user_id.as_str());
    assert_eq!((message["body"].as_str(), message["client_msg_id"].as_str()), (Some(""), Some("")), "{message}");
    assert!(message.get("attachments").is_none(), "{message}");
}

/// The users a socket is told are online right after it connects.
async fn online_now(ws: &mut Ws) -> Vec<String> {
    let mut online = Vec::new();
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(700), ws.next_json()).await {
        if frame["type"] == "presence" && frame["status"] == "online" {
            online.push(frame["user_id"].as_str().unwrap().to_owned());
        }
    }
    online
}

fn search_hits(body: &Value) -> usize {
    body["messages"].as_array().map_or(0, Vec::len)
}

on_both_databases!(
    a_block_hides_the_blocked_senders_messages_everywhere_the_blocker_reads_and_separates_presence_and_typing,
    a_user_who_blocked_you_looks_unknown_when_you_bring_them_into_a_conversation,
    muted_conversations_and_blocked_senders_are_not_pushed_and_unread_counts_go_on,
    a_report_keeps_the_message_and_its_context_as_they_read_then,
);

async fn a_block_hides_the_blocked_senders_messages_everywhere_the_blocker_reads_and_separates_presence_and_typing(
    db: Db,
) {
    let Some(system) = System::start_with_gateways(db, 2).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let (status, created) = group(&api, &alice, &[&bob, &carol]).await;
    assert_eq!(status, 201, "{created}");
    let club = created["conversation_id"].as_str().unwrap().to_owned();
    let (mut alice_ws, ready) = Ws::open(&system.ws(0), &alice).await;
    let alice_cursor = ready["cursor"].as_str().unwrap().to_owned();
    let (mut carol_ws, _) = Ws::open(&system.ws(0), &carol).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(1), &bob).await;

    assert_eq!(block(&api, &alice, &bob.user_id).await.0, 204);
    assert_eq!(block(&api, &alice, &bob.user_id).await.0, 204, "blocking twice is harmless");
    assert_eq!(blocked_ids(&api, &alice).await, vec![json!(bob.user_id)]);
    assert!(blocked_ids(&api, &bob).await.is_empty(), "a block is the blocker's alone");

    // Live, across gateways: hidden from alice, whole for carol and bob.
    let ack = bob_ws.send_message(1, &club, "spoiler-1", "spoilers: the butler did it").await;
    assert_eq!(ack["message"]["body"], "spoilers: the butler did it", "the sender is not told");
    assert_eq!(next_message(&mut bob_ws).await["message"]["body"], "spoilers: the butler did it", "bob's own copy");
    let to_alice = next_message(&mut alice_ws).await;
    assert_hidden(&to_alice["message"], &bob);
    assert_eq!(to_alice["message"]["seq"], ack["message"]["seq"], "the message keeps its place in seq");
    let to_carol = next_message(&mut carol_ws).await;
    assert_eq!(to_carol["message"]["body"], "spoilers: the butler did it");
    assert!(to_carol["message"].get("hidden").is_none());

    // Pages and the conversation list: hidden for alice only.
    let page = api.wait_for_history(&alice, &club, 2).await;
    assert_hidden(page.last().unwrap(), &bob);
    let carol_page = api.wait_for_history(&carol, &club, 2).await;
    assert_eq!(carol_page.last().unwrap()["body"], "spoilers: the butler did it");
    let (_, listed) = call(&api, Method::GET, "/v1/conversations", &alice).await;
    assert_hidden(&listed["conversations"][0]["last_message"], &bob);
    assert_eq!(listed["conversations"][0]["unread_count"], 0, "a hidden message is not unread: {listed}");

    // Search: not found by alice, found by carol.
    let (status, found) = call(&api, Method::GET, "/v1/search?q=butler", &alice).await;
    assert_eq!((status, search_hits(&found)), (200, 0), "{found}");
    let (_, found) = call(&api, Method::GET, "/v1/search?q=butler", &carol).await;
    assert_eq!(search_hits(&found), 1, "{found}");

    // Typing does not cross the block, either way; carol still sees both.
    bob_ws.send_json(json!({ "type": "typing", "conversation_id": club, "state": "start" })).await;
    assert_eq!(carol_ws.expect("typing").await["user_id"], bob.user_id.as_str());
    alice_ws.send_json(json!({ "type": "typing", "conversation_id": club, "state": "start" })).await;
    assert_eq!(carol_ws.expect("typing").await["user_id"], alice.user_id.as_str());
    alice_ws.expect_silence(Duration::from_millis(300)).await;
    bob_ws.expect_silence(Duration::from_millis(10)).await;

    // Presence does not either: neither is told of the other, nor may ask.
    for (asker, other) in [(&alice, &bob), (&bob, &alice)] {
        let (status, presence) =
            call(&api, Method::GET, &format!("/v1/presence?user_ids={}", other.user_id), asker).await;
        assert_eq!(
            (status, presence["presence"].clone()),
            (200, json!([])),
            "{} asks about {}",
            asker.username,
            other.username
        );
    }
    let (mut alice_presence, _) = Ws::open_with_presence(&system.ws(0), &alice).await;
    let (mut carol_presence, _) = Ws::open_with_presence(&system.ws(1), &carol).await;
    assert_eq!(online_now(&mut alice_presence).await, vec![carol.user_id.clone()], "bob is left out for alice");
    let mut seen_by_carol = online_now(&mut carol_presence).await;
    seen_by_carol.sort();
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(seen_by_carol, expected);
    bob_ws.close().await;
    loop {
        let frame = carol_presence.next_json().await;
        if frame["type"] == "presence" && frame["user_id"] == bob.user_id.as_str() {
            assert_eq!(frame["status"], "offline");
            break;
        }
    }
    alice_presence.expect_silence(Duration::from_millis(300)).await;
    alice_presence.close().await;
    carol_presence.close().await;

    // Catch-up: alice, away, misses one more; it comes back hidden.
    alice_ws.close().await;
    api.send(&bob, &club, "the gardener helped").await;
    let cursor_url = format!("{}?cursor={alice_cursor}", system.ws(1));
    let (mut alice_ws, _) = Ws::open(&cursor_url, &alice).await;
    let caught_up: Vec<Value> = {
        let mut messages = Vec::new();
        loop {
            let frame = alice_ws.next_json().await;
            match frame["type"].as_str() {
                Some("message") => messages.push(frame["message"].clone()),
                Some("synced") => break messages,
                _ => {}
            }
        }
    };
    let from_bob: Vec<&Value> = caught_up.iter().filter(|m| m["sender_id"] == bob.user_id.as_str()).collect();
    assert_eq!(from_bob.len(), 2, "{caught_up:?}");
    from_bob.iter().for_each(|m| assert_hidden(m, &bob));

    // Unblocked: everything reads whole again, stored messages included.
    assert_eq!(unblock(&api, &alice, &bob.user_id).await.0, 204);
    assert_eq!(unblock(&api, &alice, &bob.user_id).await.0, 204, "unblocking twice is harmless");
    assert!(blocked_ids(&api, &alice).await.is_empty());
    api.send(&bob, &club, "sorry for the spoilers").await;
    assert_eq!(next_message(&mut alice_ws).await["message"]["body"], "sorry for the spoilers");
    let page = api.wait_for_history(&alice, &club, 4).await;
    assert!(page.iter().all(|m| m.get("hidden").is_none()), "{page:?}");
    assert_eq!(page[1]["body"], "spoilers: the butler did it");
    let (_, found) = call(&api, Method::GET, "/v1/search?q=butler", &alice).await;
    assert_eq!(search_hits(&found), 1, "{found}");
    // Unread again: the three bob sent (alice has read nothing).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, got) = call(&api, Method::GET, &format!("/v1/conversations/{club}"), &alice).await;
        if got["unread_count"] == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "unread after the unblock: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    system.stop().await;
}

async fn a_user_who_blocked_you_looks_unknown_when_you_bring_them_into_a_conversation(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let nobody = uuid::Uuid::new_v4().to_string();

    // Bad blocks: refused, and nothing kept.
    let (status, body) = block(&api, &alice, &alice.user_id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_argument")), "{body}");
    assert_eq!(body["error"]["message"], "you cannot block yourself");
    let (status, body) = block(&api, &alice, "not-a-user").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_argument")), "{body}");
    let (status, body) = block(&api, &alice, &nobody).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, _) = api.request(Method::PUT, &format!("/v1/blocks/{}", bob.user_id), None, None).await;
    assert_eq!(status, 401);
    let (status, _) = api.request(Method::PUT, &format!("/v1/blocks/{}", bob.user_id), Some("forged"), None).await;
    assert_eq!(status, 401);
    assert_eq!(unblock(&api, &alice, &bob.user_id).await.0, 204, "no block to lift is fine");
    assert!(blocked_ids(&api, &alice).await.is_empty());

    // What trying to reach somebody unknown looks like.
    let direct_with = |id: &str| json!({ "kind": "direct", "members": [id] });
    let (status, unknown) = api.post("/v1/conversations", Some(&alice.access_token), direct_with(&nobody)).await;
    assert_eq!(status, 404);
    let as_unknown = |id: &str| serde_json::to_string(&unknown).unwrap().replace(&nobody, id);

    // Bob blocks alice, in capitals: the id is the same user.
    assert_eq!(block(&api, &bob, &alice.user_id.to_uppercase()).await.0, 204);
    assert_eq!(blocked_ids(&api, &bob).await, vec![json!(alice.user_id)]);
    let (status, answer) = api.post("/v1/conversations", Some(&alice.access_token), direct_with(&bob.user_id)).await;
    assert_eq!((status, serde_json::to_string(&answer).unwrap()), (404, as_unknown(&bob.user_id)));
    let upper = bob.user_id.to_uppercase();
    let (status, answer) = api.post("/v1/conversations", Some(&alice.access_token), direct_with(&upper)).await;
    assert_eq!(
        (status, serde_json::to_string(&answer).unwrap()),
        (404, as_unknown(&upper)),
        "capitals get past no block"
    );
    let (status, answer) = group(&api, &alice, &[&carol, &bob]).await;
    assert_eq!((status, serde_json::to_string(&answer).unwrap()), (404, as_unknown(&bob.user_id)));
    let (status, created) = group(&api, &alice, &[&carol]).await;
    assert_eq!(status, 201, "{created}");
    let club = created["conversation_id"].as_str().unwrap();
    let add = json!({ "members": [bob.user_id] });
    let (status, answer) = api.post(&format!("/v1/conversations/{club}/members"), Some(&alice.access_token), add).await;
    assert_eq!((status, serde_json::to_string(&answer).unwrap()), (404, as_unknown(&bob.user_id)));
    let (_, conversations) = call(&api, Method::GET, "/v1/conversations", &bob).await;
    assert_eq!(conversations["conversations"], json!([]), "nothing was made with bob in it");

    // The blocker may still start one; carol may still bring bob in.
    let (status, _) = api.post("/v1/conversations", Some(&bob.access_token), direct_with(&alice.user_id)).await;
    assert_eq!(status, 201);
    let (status, answer) = group(&api, &carol, &[&bob, &alice]).await;
    assert_eq!(status, 201, "{answer}");

    // Lifted: alice may reach bob again.
    assert_eq!(unblock(&api, &bob, &alice.user_id).await.0, 204);
    let (status, answer) = api.post("/v1/conversations", Some(&alice.access_token), direct_with(&bob.user_id)).await;
    assert_eq!(status, 200, "the direct conversation bob started: {answer}");
    system.stop().await;
}

async fn muted_conversations_and_blocked_senders_are_not_pushed_and_unread_counts_go_on(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let with_alice = api.direct(&bob, &alice).await;
    let with_carol = api.direct(&bob, &carol).await;
    let endpoint = PushEndpoint::start().await;
    let body = json!({ "type": "webhook", "url": endpoint.url("bob") });
    let (status, hook) = api.post("/v1/push/subscriptions", Some(&bob.access_token), body).await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["webhook_secret"].as_str().unwrap().to_owned();
    let pushed = |n: usize| {
        let endpoint = &endpoint;
        let secret = secret.clone();
        async move { verify_webhook(&endpoint.wait_for("bob", n).await[n - 1], &secret) }
    };
    let mute_path = |c: &str| format!("/v1/conversations/{c}/mute");

    // Bad mutes: refused, nothing changed.
    let (status, _) = call(&api, Method::PUT, &mute_path(&with_alice), &carol).await;
    assert_eq!(status, 403, "not a member");
    let (status, _) = call(&api, Method::PUT, &mute_path(&uuid::Uuid::new_v4().to_string()), &bob).await;
    assert_eq!(status, 404);
    let (status, _) = call(&api, Method::PUT, &mute_path("nope"), &bob).await;
    assert_eq!(status, 400);

    // Bob mutes carol's conversation: carol's message is not pushed, the
    // next one from alice is, alone.
    assert_eq!(call(&api, Method::PUT, &mute_path(&with_carol), &bob).await.0, 204);
    assert_eq!(call(&api, Method::PUT, &mute_path(&with_carol), &bob).await.0, 204, "muting twice is harmless");
    api.send(&carol, &with_carol, "psst").await;
    api.send(&alice, &with_alice, "lunch?").await;
    let first = pushed(1).await;
    assert_eq!(
        (first["title"].as_str(), first["body"].as_str(), first["count"].as_u64()),
        (Some("alice"), Some("lunch?"), Some(1)),
        "{first}"
    );
    let (_, got) = call(&api, Method::GET, &format!("/v1/conversations/{with_carol}"), &bob).await;
    assert_eq!(
        (got["muted"].as_bool(), got["unread_count"].as_u64()),
        (Some(true), Some(1)),
        "unread counts go on: {got}"
    );
    let (_, listed) = call(&api, Method::GET, "/v1/conversations", &bob).await;
    let muted: Vec<bool> =
        listed["conversations"].as_array().unwrap().iter().map(|c| c["muted"].as_bool().unwrap()).collect();
    assert_eq!(muted.iter().filter(|m| **m).count(), 1, "{listed}");

    // Bob blocks alice: her message is not pushed; carol's, unmuted, is.
    assert_eq!(call(&api, Method::DELETE, &mute_path(&with_carol), &bob).await.0, 204);
    assert_eq!(block(&api, &bob, &alice.user_id).await.0, 204);
    api.send(&alice, &with_alice, "hello? are you ignoring me?").await;
    api.send(&carol, &with_carol, "unmuted now").await;
    let second = pushed(2).await;
    assert_eq!(
        (second["title"].as_str(), second["body"].as_str(), second["count"].as_u64()),
        (Some("carol"), Some("unmuted now"), Some(1)),
        "{second}"
    );
    let (_, got) = call(&api, Method::GET, &format!("/v1/conversations/{with_carol}"), &bob).await;
    assert_eq!(got["muted"], false);

    // Unblocked: alice is pushed again.
    assert_eq!(unblock(&api, &bob, &alice.user_id).await.0, 204);
    api.send(&alice, &with_alice, "there you are").await;
    let third = pushed(3).await;
    assert_eq!((third["title"].as_str(), third["body"].as_str()), (Some("alice"), Some("there you are")), "{third}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(endpoint.received("bob").len(), 3, "nothing else was pushed");
    system.stop().await;
}

async fn a_report_keeps_the_message_and_its_context_as_they_read_then(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let mallory = api.new_user("mallory").await;
    let (_, created) = group(&api, &alice, &[&bob, &carol]).await;
    let club = created["conversation_id"].as_str().unwrap().to_owned();
    for i in 1..=7 {
        api.send(&alice, &club, &format!("before {i}")).await;
    }
    let reported = api.send(&bob, &club, "something nasty").await;
    let reported_id = reported["message_id"].as_str().unwrap().to_owned();
    for i in 1..=2 {
        api.send(&carol, &club, &format!("after {i}")).await;
    }
    api.wait_for_history(&carol, &club, 11).await;
    let path = |m: &str| format!("/v1/conversations/{club}/messages/{m}/reports");
    let report = |who: &Device, m: &str, reason: &str| {
        let (api, path, token) = (&api, path(m), who.access_token.clone());
        let body = json!({ "reason": reason });
        async move { api.post(&path, Some(&token), body).await }
    };

    // Bad reports: each refused with a clear error, none kept.
    let first_seq_id = api.wait_for_history(&carol, &club, 11).await[0]["message_id"].as_str().unwrap().to_owned();
    let too_long = "x".repeat(1001);
    for (who, message, reason, status, code) in [
        (&carol, reported_id.as_str(), "", 400, "invalid_argument"),
        (&carol, reported_id.as_str(), "   ", 400, "invalid_argument"),
        (&carol, reported_id.as_str(), too_long.as_str(), 400, "invalid_argument"),
        (&carol, reported_id.as_str(), "bad\u{0}word", 400, "invalid_argument"),
        (&bob, reported_id.as_str(), "I regret it", 400, "invalid_argument"),
        (&carol, first_seq_id.as_str(), "a system message", 409, "conflict"),
        (&mallory, reported_id.as_str(), "not my business", 403, "forbidden"),
        (&carol, "not-an-id", "harassment", 400, "invalid_argument"),
    ] {
        let (got, body) = report(who, message, reason).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{} reports {reason:?}: {body}",
            who.username
        );
    }
    let (got, body) = report(&carol, &uuid::Uuid::new_v4().to_string(), "harassment").await;
    assert_eq!(got, 404, "{body}");
    let (got, body) = api.post(&path(&reported_id), Some(&carol.access_token), json!({})).await;
    assert_eq!(got, 400, "no reason: {body}");

    // A report, then the same again: the first comes back.
    let (got, first) = report(&carol, &reported_id, "harassment\nplease look").await;
    assert_eq!(got, 201, "{first}");
    let (got, again) = report(&carol, &reported_id, "again").await;
    assert_eq!((got, &again["report_id"]), (200, &first["report_id"]), "{again}");

    // Bob deletes it afterwards: the report keeps what it said, and its neighbours.
    let delete_path = format!("/v1/conversations/{club}/messages/{reported_id}");
    assert_eq!(call(&api, Method::DELETE, &delete_path, &bob).await.0, 200);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&system.history_db_url).await.expect("history's database");
    let rows = sqlx::query("SELECT id, reporter_id, sender_id, reason, context, status FROM reports")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one report kept");
    let row = &rows[0];
    assert_eq!(row.get::<String, _>("id"), first["report_id"].as_str().unwrap());
    assert_eq!(
        (row.get::<String, _>("reporter_id"), row.get::<String, _>("sender_id")),
        (carol.user_id.clone(), bob.user_id.clone())
    );
    assert_eq!(
        (row.get::<String, _>("reason"), row.get::<String, _>("status")),
        ("harassment\nplease look".to_owned(), "open".to_owned())
    );
    let context: Vec<Value> = serde_json::from_str(&row.get::<String, _>("context")).unwrap();
    let bodies: Vec<&str> = context.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(
        bodies,
        ["before 3", "before 4", "before 5", "before 6", "before 7", "something nasty", "after 1", "after 2"]
    );
    pool.close().await;
    system.stop().await;
}
