//! Gap-free multi-device sync under stress: a long absence, reconnects racing
//! live traffic, and history crashing mid-stream. Nothing acked is lost and
//! nothing arrives twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chat_system_tests::{Db, System, Ws, on_both_databases};
use serde_json::Value;

on_both_databases!(
    an_offline_device_gets_500_missed_messages_across_3_conversations_in_order_once,
    reconnects_racing_live_traffic_see_every_message_exactly_once,
    history_killed_mid_stream_loses_nothing_and_writes_no_duplicate,
    catch_up_reads_from_the_stream_what_history_has_not_stored_yet,
);

/// Message frames until `synced` (exclusive), as (conversation, seq) in arrival order.
async fn read_until_synced(ws: &mut Ws) -> Vec<(String, u64)> {
    let mut seen = Vec::new();
    loop {
        let frame = ws.next_json().await;
        match frame["type"].as_str() {
            Some("message") => seen.push(key(&frame)),
            Some("synced") => return seen,
            _ => panic!("unexpected frame during catch-up: {frame}"),
        }
    }
}

fn key(frame: &Value) -> (String, u64) {
    (
        frame["message"]["conversation_id"].as_str().expect("conversation").to_owned(),
        frame["message"]["seq"].as_u64().expect("seq"),
    )
}

fn assert_in_order_once(seen: &[(String, u64)], expected: &BTreeMap<String, u64>) {
    let mut per_conversation: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (conversation, seq) in seen {
        per_conversation.entry(conversation).or_default().push(*seq);
    }
    for (conversation, last) in expected {
        let got = per_conversation.get(conversation.as_str()).cloned().unwrap_or_default();
        assert_eq!(got, (1..=*last).collect::<Vec<_>>(), "conversation {conversation}: in order, no gap, once");
    }
    assert_eq!(per_conversation.len(), expected.len(), "nothing from other conversations");
}

async fn an_offline_device_gets_500_missed_messages_across_3_conversations_in_order_once(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice_phone = api.new_user("alice").await;
    let alice_laptop = api.login("alice").await;
    let friends = [api.new_user("bob").await, api.new_user("carol").await, api.new_user("dave").await];
    let mut conversations = Vec::new();
    let mut senders = Vec::new();
    for friend in &friends {
        conversations.push(api.direct(&alice_phone, friend).await);
        senders.push(Ws::open(&system.ws(0), friend).await.0);
    }
    // The phone connects once to get a cursor, then goes away; the laptop stays.
    let (phone, ready) = Ws::open(&system.ws(0), &alice_phone).await;
    let cursor = ready["cursor"].as_str().unwrap().to_owned();
    drop(phone);
    let (mut laptop, _) = Ws::open(&system.ws(0), &alice_laptop).await;

    let mut expected = BTreeMap::new();
    for i in 0..500 {
        let which = i % 3;
        let ack =
            senders[which].send_message(i as i64, &conversations[which], &format!("m{i}"), &format!("#{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        expected.insert(conversations[which].clone(), ack["message"]["seq"].as_u64().unwrap());
    }

    let mut online = Vec::new();
    while online.len() < 500 {
        let frame = laptop.next_json().await;
        assert_eq!(frame["type"], "message", "{frame}");
        online.push(key(&frame));
    }
    assert_in_order_once(&online, &expected);

    let (mut back, _) = Ws::open(&format!("{}?cursor={cursor}", system.ws(0)), &alice_phone).await;
    let missed = read_until_synced(&mut back).await;
    assert_in_order_once(&missed, &expected);
    let as_set = |v: &[(String, u64)]| v.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(as_set(&missed), as_set(&online), "both devices converge on the same set");
    back.expect_silence(Duration::from_millis(200)).await;
    system.stop().await;
}

async fn reconnects_racing_live_traffic_see_every_message_exactly_once(db: Db) {
    let Some(system) = System::start_with_gateways(db, 2).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    const TOTAL: usize = 300;
    // Alice's starting point, before any message exists.
    let (first, ready) = Ws::open(&system.ws(1), &alice).await;
    drop(first);
    let mut cursor = ready["cursor"].as_str().unwrap().to_owned();

    let sender = {
        let url = system.ws(0);
        let bob = bob.clone();
        let conversation = conversation.clone();
        tokio::spawn(async move {
            let (mut ws, _) = Ws::open(&url, &bob).await;
            for i in 0..TOTAL {
                let ack = ws.send_message(i as i64, &conversation, &format!("r{i}"), "racing").await;
                assert_eq!(ack["type"], "ack", "{ack}");
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };

    // Alice keeps reconnecting, alternating gateways, always from the cursor of
    // the last frame she processed, and dropping the socket mid-stream.
    let mut seen: Vec<u64> = Vec::new();
    let mut round = 0usize;
    while seen.len() < TOTAL {
        round += 1;
        let url = format!("{}?cursor={cursor}", system.ws(round % 2));
        let (mut ws, _) = Ws::open(&url, &alice).await;
        let mut synced = false;
        let mut read_this_round = 0;
        // Read some messages (caught up or live, whichever comes), then drop
        // the connection while traffic flows: mid-catch-up when Alice is far
        // behind, after `synced` when she is not. A fixed count per round, so
        // a slow machine reconnects as often as a fast one.
        while read_this_round < 7 + round % 5 && seen.len() < TOTAL {
            let frame = match tokio::time::timeout(Duration::from_secs(5), ws.next_json()).await {
                Ok(frame) => frame,
                Err(_) => panic!(
                    "round {round}: stalled after {} messages (synced: {synced}); missing {:?}",
                    seen.len(),
                    (1..=TOTAL as u64).filter(|s| !seen.contains(s)).collect::<Vec<_>>()
                ),
            };
            match frame["type"].as_str() {
                Some("message") => {
                    seen.push(frame["message"]["seq"].as_u64().unwrap());
                    cursor = frame["cursor"].as_str().unwrap().to_owned();
                    read_this_round += 1;
                }
                Some("synced") => {
                    synced = true;
                    cursor = frame["cursor"].as_str().unwrap().to_owned();
                }
                _ => panic!("unexpected frame {frame}"),
            }
        }
        assert!(round < 500, "no progress");
    }
    sender.await.expect("sender finished");
    assert!(round > 5, "the test reconnected often ({round} rounds)");
    assert_eq!(seen, (1..=TOTAL as u64).collect::<Vec<_>>(), "no gap, no duplicate, in order");

    // And nothing more is pending for that cursor.
    let (mut last, _) = Ws::open(&format!("{}?cursor={cursor}", system.ws(0)), &alice).await;
    assert!(read_until_synced(&mut last).await.is_empty());
    system.stop().await;
}

async fn history_killed_mid_stream_loses_nothing_and_writes_no_duplicate(db: Db) {
    let Some(mut system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;

    let mut acked = Vec::new();
    for i in 0..300 {
        if i == 100 {
            system.kill_history().await;
        }
        if i == 200 {
            system.start_history().await;
        }
        let ack = ws.send_message(i, &conversation, &format!("k{i}"), "during a crash").await;
        assert_eq!(ack["type"], "ack", "sends do not depend on history: {ack}");
        acked.push(ack["message"]["seq"].as_u64().unwrap());
    }
    // Kill it once more while it catches up, then let it finish.
    system.kill_history().await;
    system.start_history().await;

    // What the crashed instances had taken comes back after the consumer's
    // ack wait (10 s); until then a page may have holes, so read it all again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let all = loop {
        let mut all: Vec<u64> = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = api.messages(&bob, &conversation, &format!("?after_seq={after}&limit=200")).await;
            assert_eq!(status, 200);
            let seqs: Vec<u64> =
                page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
            all.extend(&seqs);
            after = *seqs.last().unwrap_or(&after);
            if !page["has_more"].as_bool().unwrap() {
                break;
            }
        }
        if all.len() >= acked.len() || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(all, acked, "every acked message, once, in order");
    assert_eq!(system.stored_message_count().await, 300, "no duplicate rows");
    system.stop().await;
}

async fn catch_up_reads_from_the_stream_what_history_has_not_stored_yet(db: Db) {
    let Some(mut system) = System::start(db).await else { return };
    let api = system.api();
    let phone = api.new_user("alice").await;
    let laptop = api.login("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&phone, &bob).await;
    let (away, ready) = Ws::open(&system.ws(0), &phone).await;
    let cursor = ready["cursor"].as_str().unwrap().to_owned();
    drop(away);
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut laptop_ws, _) = Ws::open(&system.ws(0), &laptop).await;

    for i in 1..=5 {
        bob_ws.send_message(i, &conversation, &format!("stored-{i}"), "stored").await;
    }
    api.wait_for_history(&bob, &conversation, 5).await;
    // From here on history serves reads but stores nothing: the rest stays in the stream only.
    system.kill_history().await;
    system.start_history_read_only().await;
    for i in 6..=15 {
        bob_ws.send_message(i, &conversation, &format!("tail-{i}"), "only in the stream").await;
    }
    for _ in 0..15 {
        laptop_ws.expect("message").await;
    }
    laptop_ws.send_json(serde_json::json!({ "type": "read", "conversation_id": conversation, "seq": 12 })).await;
    let marker = loop {
        let frame = bob_ws.next_json().await;
        if frame["type"] != "message" {
            break frame;
        }
    };
    assert_eq!((marker["type"].as_str(), marker["seq"].as_u64()), (Some("read"), Some(12)));
    assert_eq!(system.stored_message_count().await, 5, "history holds only the first five");

    let (mut back, _) = Ws::open(&format!("{}?cursor={cursor}", system.ws(0)), &phone).await;
    let mut seqs = Vec::new();
    loop {
        let frame = back.next_json().await;
        match frame["type"].as_str() {
            Some("message") => seqs.push(frame["message"]["seq"].as_u64().unwrap()),
            Some("read") => {
                assert_eq!((frame["user_id"].as_str(), frame["seq"].as_u64()), (Some(phone.user_id.as_str()), Some(12)))
            }
            Some("synced") => break,
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>(), "five from history, ten from the stream, in order, once");

    // Storing resumes and catches up.
    system.kill_history().await;
    system.start_history().await;
    api.wait_for_history(&bob, &conversation, 15).await;
    assert_eq!(system.stored_message_count().await, 15);
    system.stop().await;
}
