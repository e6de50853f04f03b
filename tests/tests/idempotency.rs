//! Idempotency is permanent while a send asks nothing before publishing: a
//! re-send of a (sender, `client_msg_id`) that JetStream's duplicate window has
//! forgotten is still answered with the original (the gateway's set of sent
//! keys calls it "maybe sent", and history has it), with no second message
//! and no burnt seq; a gateway started later knows every key sent before it,
//! and needs history only for a key it cannot call new.

use std::time::{Duration, Instant};

use chat_system_tests::{Db, System, Ws, on_both_databases};

// A re-send after the window with every gateway up: first_path's
// `a_resend_after_the_duplicate_window_still_returns_the_original`.
on_both_databases!(a_gateway_started_later_sends_new_keys_without_history_and_never_a_known_key_twice);

async fn a_gateway_started_later_sends_new_keys_without_history_and_never_a_known_key_twice(db: Db) {
    let Some(mut system) = System::builder().duplicate_window(Duration::from_secs(1)).start(db).await else {
        return;
    };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    let original = alice_ws.send_message(1, &conversation, "before", "hello").await;
    assert_eq!(original["type"], "ack", "{original}");
    api.wait_for_history(&bob, &conversation, 1).await;

    // A gateway that starts now loads the keys of what was sent before it.
    // (Its socket opens and sends once while history is up: a first socket
    // reads the user's conversations, a first send their member list.)
    let later = system.start_gateway().await;
    let (mut ws, _) = Ws::open(&system.ws(later), &alice).await;
    assert_eq!(ws.send_message(2, &conversation, "warm", "members known").await["message"]["seq"], 2);
    system.kill_history().await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the duplicate window

    // New keys need nobody but JetStream once the keys are loaded.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut req = 10;
    let fresh = loop {
        req += 1;
        let reply = ws.send_message(req, &conversation, "while-history-is-down", "new").await;
        if reply["type"] == "ack" {
            break reply;
        }
        assert_eq!(reply["code"], "unavailable", "only while the keys load: {reply}");
        assert!(Instant::now() < deadline, "a new key still needs history: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fresh["message"]["seq"], 3);

    // A key sent before is never sent again: without history to give the
    // original, the send is refused, and nothing is stored.
    let refused = ws.send_message(100, &conversation, "before", "hello again").await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "unavailable", "{refused}");

    system.start_history().await;
    let resent = ws.send_message(101, &conversation, "before", "hello again").await;
    assert_eq!(resent["message"], original["message"], "the original once history answers");
    let next = ws.send_message(102, &conversation, "after", "next").await;
    assert_eq!(next["message"]["seq"], 4, "no seq was burnt");
    assert_eq!(api.wait_for_history(&bob, &conversation, 4).await.len(), 4);
    assert_eq!(system.stored_message_count().await, 4);
    system.stop().await;
}
