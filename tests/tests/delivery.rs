//! Delivery guarantees across gateways and reconnects: gap-free seq under
//! concurrent senders on different gateways, catch-up from a cursor with no
//! gap and no duplicate, a clean 1001 when a gateway shuts down, 4408 for a
//! device that stops reading (which then catches up with nothing lost), and
//! a dropped socket for one that never reads again.

use std::collections::BTreeMap;
use std::time::Duration;

use chat_system_tests::client::Api;
use chat_system_tests::{Db, Device, System, Ws, on_both_databases};
use serde_json::{Value, json};

on_both_databases!(
    concurrent_senders_on_two_gateways_get_gap_free_seqs_and_everyone_sees_all,
    a_reconnecting_device_gets_exactly_what_it_missed_from_its_cursor,
    sync_within_an_open_socket_replays_without_duplicates,
    gateway_shutdown_closes_sockets_with_going_away,
    a_socket_that_stops_answering_pings_is_closed,
    a_device_that_stops_reading_is_closed_as_too_slow_and_catches_up_after,
    a_device_that_never_reads_again_is_dropped_after_the_write_timeout,
);

/// Reads `count` message frames and returns their seqs per conversation.
async fn read_messages(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut frames = Vec::with_capacity(count);
    while frames.len() < count {
        let frame = ws.next_json().await;
        if frame["type"] == "message" {
            frames.push(frame);
        }
    }
    frames
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["message"]["seq"].as_u64().expect("seq")).collect()
}

async fn concurrent_senders_on_two_gateways_get_gap_free_seqs_and_everyone_sees_all(db: Db) {
    let Some(system) = System::start_with_gateways(db, 2).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut alice_reader, _) = Ws::open(&system.ws(0), &alice).await;
    let (mut bob_reader, _) = Ws::open(&system.ws(1), &bob).await;

    const EACH: usize = 40;
    let send_all = |url: String, device: Device, prefix: &'static str| {
        let conversation = conversation.clone();
        tokio::spawn(async move {
            let (mut ws, _) = Ws::open(&url, &device).await;
            let mut acked = Vec::new();
            for i in 0..EACH {
                let ack = ws.send_message(i as i64, &conversation, &format!("{prefix}-{i}"), prefix).await;
                assert_eq!(ack["type"], "ack", "{ack}");
                acked.push(ack["message"]["seq"].as_u64().expect("seq"));
            }
            acked
        })
    };
    // Two writers on different gateways race for the same conversation.
    let a = send_all(system.ws(0), alice.clone(), "a");
    let b = send_all(system.ws(1), bob.clone(), "b");
    let mut all: Vec<u64> = a.await.expect("alice sends").into_iter().chain(b.await.expect("bob sends")).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=(2 * EACH) as u64).collect::<Vec<_>>(), "every seq used once, no gap");

    for reader in [&mut alice_reader, &mut bob_reader] {
        let frames = read_messages(reader, 2 * EACH).await;
        assert_eq!(seqs(&frames), (1..=(2 * EACH) as u64).collect::<Vec<_>>(), "in seq order, once");
        reader.expect_silence(Duration::from_millis(200)).await;
    }
    assert_eq!(api.wait_for_history(&alice, &conversation, 2 * EACH).await.len(), 2 * EACH);
    system.stop().await;
}

async fn a_reconnecting_device_gets_exactly_what_it_missed_from_its_cursor(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let with_bob = api.direct(&alice, &bob).await;
    let with_carol = api.direct(&alice, &carol).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut carol_ws, _) = Ws::open(&system.ws(0), &carol).await;

    // Alice is online for the first message and keeps its cursor.
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    bob_ws.send_message(0, &with_bob, "before", "before").await;
    let seen = alice_ws.expect("message").await;
    let cursor = seen["cursor"].as_str().expect("cursor").to_owned();
    drop(alice_ws);

    // While she is away: messages in two conversations, from two people.
    for i in 1..=20 {
        bob_ws.send_message(i, &with_bob, &format!("b{i}"), &format!("bob {i}")).await;
        if i % 2 == 0 {
            carol_ws.send_message(i, &with_carol, &format!("c{i}"), &format!("carol {i}")).await;
        }
    }

    // Reconnect with the cursor in the query string.
    let url = format!("{}?cursor={cursor}", system.ws(0));
    let (mut back, ready) = Ws::open(&url, &alice).await;
    assert_eq!(ready["cursor"], cursor.as_str(), "ready keeps the stored cursor until catch-up ends");
    let missed = read_messages(&mut back, 30).await;
    let synced = back.expect("synced").await;
    assert!(synced.get("req").is_none());
    let mut per_conversation: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for frame in &missed {
        per_conversation
            .entry(frame["message"]["conversation_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(frame["message"]["seq"].as_u64().unwrap());
    }
    assert_eq!(per_conversation[&with_bob], (2..=21).collect::<Vec<_>>(), "bob's, in order, no gap");
    assert_eq!(per_conversation[&with_carol], (1..=10).collect::<Vec<_>>(), "carol's, in order, no gap");

    // Then live, with nothing replayed twice.
    let live = bob_ws.send_message(99, &with_bob, "after", "after").await;
    let frame = back.expect("message").await;
    assert_eq!(frame["message"], live["message"]);
    assert!(frame["cursor"].is_string());

    // The same cursor in the auth frame (which wins over the query) replays the same set.
    let mut again = Ws::connect(&format!("{}?cursor=bogus", system.ws(0))).await;
    again.send_json(json!({ "type": "auth", "token": alice.access_token, "cursor": cursor })).await;
    again.expect("ready").await;
    let replayed = read_messages(&mut again, 31).await;
    again.expect("synced").await;
    assert_eq!(replayed.len(), 31);

    // An unknown cursor: an error, then live from now like a new device.
    let bad = format!("{}?cursor=not-a-cursor", system.ws(0));
    let (mut fresh, _) = Ws::open(&bad, &alice).await;
    let error = fresh.expect("error").await;
    assert_eq!(error["code"], "invalid_argument");
    fresh.expect_silence(Duration::from_millis(200)).await;
    system.stop().await;
}

async fn sync_within_an_open_socket_replays_without_duplicates(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut alice_ws, ready) = Ws::open(&system.ws(0), &alice).await;
    let start = ready["cursor"].as_str().unwrap().to_owned();

    for i in 1..=5 {
        bob_ws.send_message(i, &conversation, &format!("s{i}"), "x").await;
    }
    let live = read_messages(&mut alice_ws, 5).await;
    assert_eq!(seqs(&live), vec![1, 2, 3, 4, 5]);

    // Asking again from an older cursor sends nothing this socket already has.
    alice_ws.send_json(json!({ "type": "sync", "req": 42, "cursor": start })).await;
    let synced = alice_ws.expect("synced").await;
    assert_eq!(synced["req"], 42);
    assert_eq!(synced["cursor"], live[4]["cursor"]);

    let bad = json!({ "type": "sync", "req": 43, "cursor": "nope" });
    alice_ws.send_json(bad).await;
    assert_eq!(alice_ws.expect("error").await["code"], "invalid_argument");
    system.stop().await;
}

async fn gateway_shutdown_closes_sockets_with_going_away(db: Db) {
    let Some(mut system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
    system.stop_gateway(0).await;
    assert_eq!(ws.expect_close().await, 1001);
    system.stop().await;
}

async fn a_socket_that_stops_answering_pings_is_closed(db: Db) {
    let Some(system) = System::builder()
        .gateway_config(|c| {
            c.ping_interval = Duration::from_millis(200);
            c.idle_timeout = Duration::from_secs(1);
        })
        .start(db)
        .await
    else {
        return;
    };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let (mut silent, _) = Ws::open(&system.ws(0), &alice).await;
    let (mut healthy, _) = Ws::open(&system.ws(0), &alice).await;

    // A client answers pings only while it reads its socket; the silent one
    // stops reading, like a peer behind a dead connection.
    healthy.expect_silence(Duration::from_millis(2500)).await;
    let ended = silent.expect_ended().await;
    assert!(matches!(ended, Some(1001) | None), "closed as half-open, got {ended:?}");
    healthy.send_json(json!({ "type": "ping", "req": 1 })).await;
    assert_eq!(healthy.expect("pong").await["req"], 1, "a socket that answers stays open");
    system.stop().await;
}

/// No pings for a client that stops reading: answering a ping queued behind
/// the frames, it would write into a socket the server has closed and miss
/// the close code, and silence would close it as half-open first.
fn without_pings(config: &mut chat_gateway::Config) {
    config.ping_interval = Duration::from_secs(3600);
    config.idle_timeout = Duration::from_secs(7200);
}

/// Sends `count` messages of 16 KB, each acknowledged: the sender is never
/// slowed by a reader that stopped.
async fn send_large_messages(ws: &mut Ws, conversation: &str, count: i64) {
    let body = "x".repeat(16_000);
    for n in 1..=count {
        let ack = ws.send_message(n, conversation, &format!("m{n}"), &body).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
}

async fn a_device_that_stops_reading_is_closed_as_too_slow_and_catches_up_after(db: Db) {
    const MESSAGES: i64 = 800;
    let Some(system) = System::builder()
        .gateway_config(|c| {
            c.socket_queue = 8;
            without_pings(c);
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
    let (mut stalled, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;

    // Bob's device stops reading. Once the kernel's buffers towards it are
    // full (a few MB), frames wait in its queue of 8, and a full queue closes
    // it. The sender is not slowed down: every send is acknowledged.
    send_large_messages(&mut alice_ws, &conversation, MESSAGES).await;
    let (frames, code) = stalled.frames_until_close().await;
    assert_eq!(code, 4408, "closed as too slow");
    let received: Vec<Value> = frames.into_iter().filter(|f| f["type"] == "message").collect();
    assert!((received.len() as i64) < MESSAGES, "the socket was closed before it had everything");
    assert_eq!(seqs(&received), (1..=received.len() as u64).collect::<Vec<_>>(), "what it got, in order");

    // Nothing is lost: from the last cursor it got, the device gets the rest.
    let cursor =
        received.last().map(|f| f["cursor"].as_str().expect("cursor").to_owned()).expect("some frames arrived");
    let (mut back, _) = Ws::open(&format!("{}?cursor={cursor}", system.ws(0)), &bob).await;
    let rest = read_messages(&mut back, (MESSAGES as usize) - received.len()).await;
    back.expect("synced").await;
    assert_eq!(
        seqs(&rest),
        (received.len() as u64 + 1..=MESSAGES as u64).collect::<Vec<_>>(),
        "the rest, in order, once"
    );
    system.stop().await;
}

/// Polls `who`'s presence, as `asker` sees it, until it is `wanted`.
async fn wait_for_status(api: &Api, asker: &Device, who: &Device, wanted: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let path = format!("/v1/presence?user_ids={}", who.user_id);
        let (status, body) = api.get(&path, Some(&asker.access_token)).await;
        assert_eq!(status, 200, "{body}");
        if body["presence"][0]["status"] == wanted {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not {wanted} within 15 s: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_device_that_never_reads_again_is_dropped_after_the_write_timeout(db: Db) {
    // More than the kernel's buffers towards the device hold (a few MB each way).
    const MESSAGES: i64 = 1000;
    let Some(system) = System::builder()
        .gateway_config(|c| {
            c.write_timeout = Duration::from_secs(1);
            without_pings(c);
            chat_system_tests::without_send_brakes(c);
        })
        .presence_config(|c| c.grace = Duration::ZERO)
        .start(db)
        .await
    else {
        return;
    };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    // Bob's device stays connected and never reads.
    let (_stalled, _) = Ws::open(&system.ws(0), &bob).await;
    wait_for_status(&api, &alice, &bob, "online").await;

    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    send_large_messages(&mut alice_ws, &conversation, MESSAGES).await;
    // A write to it now waits for a reader that never comes: the gateway
    // drops the socket, and bob goes offline although his connection is open.
    wait_for_status(&api, &alice, &bob, "offline").await;
    system.stop().await;
}
