//! Editing and deleting: only the sender edits; the sender or a group's owner
//! or admin deletes; changes are delivered like messages and never before the
//! message they change; history shows the latest body and tombstones.

use std::collections::HashSet;

use chat_system_tests::{Db, System, Ws, on_both_databases};
use serde_json::{Value, json};

on_both_databases!(
    an_edit_sent_right_after_its_message_never_arrives_before_it,
    edits_and_deletions_follow_the_rules_and_reach_history_and_catch_up,
);

async fn an_edit_sent_right_after_its_message_never_arrives_before_it(db: Db) {
    let Some(system) = System::start_with_gateways(db, 2).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let laptop = api.login("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut writer, _) = Ws::open(&system.ws(0), &alice).await;
    let (mut alice_laptop, _) = Ws::open(&system.ws(1), &laptop).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(1), &bob).await;

    const ROUNDS: i64 = 20;
    for i in 0..ROUNDS {
        let ack = writer.send_message(2 * i, &conversation, &format!("e{i}"), "typo").await;
        let message_id = ack["message"]["message_id"].as_str().unwrap().to_owned();
        writer
            .send_json(json!({ "type": "edit", "req": 2 * i + 1, "conversation_id": conversation, "message_id": message_id, "body": "fixed" }))
            .await;
    }
    for reader in [&mut alice_laptop, &mut bob_ws] {
        let mut seen = HashSet::new();
        let mut edits = 0;
        while edits < ROUNDS {
            let frame = reader.next_json().await;
            let id = frame["message"]["message_id"].as_str().unwrap().to_owned();
            match frame["type"].as_str() {
                Some("message") => assert!(seen.insert(id), "each message once"),
                Some("message_edited") => {
                    assert!(seen.contains(&id), "an edit arrived before its message: {frame}");
                    assert_eq!(frame["message"]["body"], "fixed");
                    assert!(frame["message"]["edited_at"].is_string());
                    edits += 1;
                }
                _ => panic!("unexpected frame {frame}"),
            }
        }
    }
    system.stop().await;
}

async fn edits_and_deletions_follow_the_rules_and_reach_history_and_catch_up(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let (status, group) = api
        .post(
            "/v1/conversations",
            Some(&alice.access_token),
            json!({ "kind": "group", "title": "G", "members": [bob.user_id, carol.user_id] }),
        )
        .await;
    assert_eq!(status, 201);
    let group = group["conversation_id"].as_str().unwrap().to_owned();
    let (mut a, _) = Ws::open(&system.ws(0), &alice).await;
    let (mut b, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut c, _) = Ws::open(&system.ws(0), &carol).await;
    let ack = b.send_message(1, &group, "m1", "first").await;
    let m1 = ack["message"]["message_id"].as_str().unwrap().to_owned();
    for ws in [&mut a, &mut b] {
        ws.expect("message").await;
    }
    // carol goes away with the cursor of m1: she has it, and will need its changes.
    let carol_cursor = c.expect("message").await["cursor"].as_str().unwrap().to_owned();
    drop(c);

    let frame = |kind: &str, req: i64, body: Option<&str>| {
        let mut f = json!({ "type": kind, "req": req, "conversation_id": group, "message_id": m1 });
        if let Some(body) = body {
            f["body"] = body.into();
        }
        f
    };
    // Nobody but the sender edits, not even the owner.
    a.send_json(frame("edit", 2, Some("owner's words"))).await;
    assert_eq!(a.reply(2).await["code"], "forbidden");
    b.send_json(frame("edit", 3, Some("first, fixed"))).await;
    let edited = b.reply(3).await;
    assert_eq!(edited["message"]["body"], "first, fixed");
    for ws in [&mut a, &mut b] {
        let change = ws.expect("message_edited").await;
        assert_eq!(change["message"]["body"], "first, fixed");
        assert_eq!(change["message"]["seq"], edited["message"]["seq"], "an edit keeps the message's place");
    }

    // A plain member may not delete someone else's message; the owner may.
    let (mut c2, _) = Ws::open(&system.ws(0), &api.login("carol").await).await;
    c2.send_json(frame("delete", 4, None)).await;
    assert_eq!(c2.reply(4).await["code"], "forbidden");
    a.send_json(frame("delete", 5, None)).await;
    let deleted = a.reply(5).await;
    assert_eq!((deleted["message"]["body"].as_str(), deleted["message"]["deleted_at"].is_string()), (Some(""), true));
    for ws in [&mut a, &mut b, &mut c2] {
        assert_eq!(ws.expect("message_deleted").await["message"]["message_id"], m1.as_str());
    }
    b.send_json(frame("edit", 6, Some("too late"))).await;
    assert_eq!(b.reply(6).await["code"], "conflict");

    // Over HTTP: the sender edits a second message; system messages do not change.
    let ack = b.send_message(7, &group, "m2", "second").await;
    let m2 = ack["message"]["message_id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/conversations/{group}/messages/{m2}"),
            Some(&bob.access_token),
            Some(json!({ "body": "second, fixed" })),
        )
        .await;
    assert_eq!((status, body["body"].clone()), (200, Value::from("second, fixed")));
    let (_, page) = api.messages(&alice, &group, "?limit=10").await;
    let created_id = page["messages"][0]["message_id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/conversations/{group}/messages/{created_id}"),
            Some(&alice.access_token),
            None,
        )
        .await;
    assert_eq!((status, body["error"]["code"].clone()), (409, Value::from("conflict")));

    // History shows the latest body and the tombstone.
    let mut stored = Vec::new();
    for _ in 0..100 {
        let (_, page) = api.messages(&alice, &group, "?limit=10").await;
        stored = page["messages"].as_array().unwrap().clone();
        if stored.len() == 3 && stored[2]["body"] == "second, fixed" && stored[1]["deleted_at"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stored[1]["body"], "", "a tombstone keeps its place with no body");
    assert!(stored[1]["deleted_at"].is_string());
    assert_eq!(stored[2]["body"], "second, fixed");
    assert!(stored[2]["edited_at"].is_string());

    // carol's first device comes back: a change for m1, which it had (now
    // deleted), and m2 as it is now (edited).
    let (mut back, _) = Ws::open(&format!("{}?cursor={carol_cursor}", system.ws(0)), &carol).await;
    let mut frames = Vec::new();
    loop {
        let frame = back.next_json().await;
        if frame["type"] == "synced" {
            break;
        }
        frames.push(frame);
    }
    let last_of = |id: &str| frames.iter().rev().find(|f| f["message"]["message_id"] == id).cloned().unwrap();
    assert_eq!(last_of(&m1)["type"], "message_deleted", "{frames:?}");
    assert!(
        frames.iter().all(|f| !(f["type"] == "message" && f["message"]["message_id"] == m1.as_str())),
        "m1 is not sent again"
    );
    assert_eq!(last_of(&m2)["message"]["body"], "second, fixed");
    system.stop().await;
}
