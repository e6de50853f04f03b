//! Idempotency is permanent while NATS holds only a bounded index: a re-send
//! of a (sender, `client_msg_id`) that JetStream's duplicate window and the
//! index bucket have both forgotten is still answered with the original, from
//! history, with no second message and no burnt seq.

use std::time::{Duration, Instant};

use chat_common::nats::CLIENT_MSG_IDS_BUCKET;
use chat_system_tests::{Db, System, Ws, on_both_databases};
use serde_json::json;

on_both_databases!(a_resend_older_than_the_index_and_the_duplicate_window_returns_the_original);

async fn index_bucket(system: &System) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(system.nats.url()).await.expect("NATS");
    async_nats::jetstream::new(client).get_key_value(CLIENT_MSG_IDS_BUCKET).await.expect("the index bucket")
}

/// The index bucket's max age as JetStream holds it now.
async fn index_max_age(js: &async_nats::jetstream::Context) -> Duration {
    let mut stream = js.get_stream(format!("KV_{CLIENT_MSG_IDS_BUCKET}")).await.expect("the bucket's stream");
    stream.info().await.expect("stream info").config.max_age
}

async fn a_resend_older_than_the_index_and_the_duplicate_window_returns_the_original(db: Db) {
    let Some(system) = System::builder()
        .duplicate_window(Duration::from_secs(1))
        .client_msg_id_index_age(Duration::from_secs(1))
        .start(db)
        .await
    else {
        return;
    };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;

    let original = alice_ws.send_message(1, &conversation, "long-ago", "hello").await;
    assert_eq!(bob_ws.expect("message").await["message"], original["message"]);
    api.wait_for_history(&bob, &conversation, 1).await;

    // Wait until the index has forgotten the message (and, a second after the
    // send, JetStream's duplicate window with it): only history knows it now.
    let bucket = index_bucket(&system).await;
    let key = chat_common::conversation_log::idempotency_key(&alice.user_id, "long-ago");
    let deadline = Instant::now() + Duration::from_secs(30);
    while bucket.get(&key).await.expect("read the index").is_some() {
        assert!(Instant::now() < deadline, "the index entry outlived the bucket's max age");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let late = alice_ws.send_message(2, &conversation, "long-ago", "hello").await;
    assert_eq!(late["type"], "ack", "{late}");
    assert_eq!(late["message"], original["message"], "the original, not a second message");
    let (status, body) = api
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&alice.access_token),
            json!({ "client_msg_id": "long-ago", "body": "changed" }),
        )
        .await;
    assert_eq!((status, &body), (200, &original["message"]), "over HTTP too, the original wins");

    let next = alice_ws.send_message(3, &conversation, "fresh", "next").await;
    assert_eq!(next["message"]["seq"], 2, "no seq was burnt");
    assert_eq!(bob_ws.expect("message").await["message"]["seq"], 2, "bob got the original once");
    assert_eq!(api.wait_for_history(&bob, &conversation, 2).await.len(), 2);
    assert_eq!(system.stored_message_count().await, 2);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_bucket_keeps_entries_for_its_configured_age_and_a_bucket_kept_forever_is_bounded_at_start() {
    let age = Duration::from_secs(3600);
    let Some(mut system) = System::builder().client_msg_id_index_age(age).start(Db::Sqlite).await else { return };
    let client = async_nats::connect(system.nats.url()).await.expect("NATS");
    let js = async_nats::jetstream::new(client);
    assert_eq!(index_max_age(&js).await, age);

    // A bucket created before the index was bounded kept every key forever.
    let mut stream = js.get_stream(format!("KV_{CLIENT_MSG_IDS_BUCKET}")).await.expect("the bucket's stream");
    let mut unbounded = stream.info().await.expect("stream info").config.clone();
    unbounded.max_age = Duration::ZERO;
    js.update_stream(unbounded).await.expect("unbound the bucket");
    assert_eq!(index_max_age(&js).await, Duration::ZERO);

    system.kill_history().await;
    system.start_history().await;
    assert_eq!(index_max_age(&js).await, age, "bounded again at start");
    system.stop().await;
}
