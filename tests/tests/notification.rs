//! Offline delivery and push: a user with no device connected gets one
//! notification per batch of messages, over a signed webhook and a Web Push
//! the test decrypts; a connected device or a read elsewhere means no push;
//! a crash mid-push redoes it under the same idempotency key; failures are
//! retried with backoff and then dead-lettered; 410 removes a subscription;
//! the queue survives restarts and is handed over when a device connects.

use std::time::Duration;

use chat_proto::history::v1::MarkReadRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::notification::v1::notification_service_client::NotificationServiceClient;
use chat_proto::notification::v1::{GetBadgesRequest, ListDeadLettersRequest, ListPendingRequest};
use chat_system_tests::client::Api;
use chat_system_tests::push::{BrowserSubscription, PushEndpoint, verify_webhook};
use chat_system_tests::{Db, Device, System, Ws, on_both_databases};
use serde_json::{Value, json};

async fn webhook(api: &Api, device: &Device, url: &str) -> Value {
    let body = json!({ "type": "webhook", "url": url });
    let (status, created) = api.post("/v1/push/subscriptions", Some(&device.access_token), body).await;
    assert_eq!(status, 201, "{created}");
    assert!(created["webhook_secret"].as_str().is_some_and(|s| s.len() == 64), "{created}");
    created
}

async fn web_push(api: &Api, device: &Device, endpoint: &str, browser: &BrowserSubscription) -> Value {
    let body = json!({ "type": "web_push", "endpoint": endpoint, "keys": browser.keys() });
    let (status, created) = api.post("/v1/push/subscriptions", Some(&device.access_token), body).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn notification(system: &System) -> NotificationServiceClient<tonic::transport::Channel> {
    NotificationServiceClient::connect(format!("http://{}", system.notification_addr)).await.expect("notification")
}

async fn pending_of(system: &System, user: &Device) -> usize {
    let request = ListPendingRequest { user_id: user.user_id.clone(), count_only: false };
    let reply = notification(system).await.list_pending(request).await.expect("ListPending").into_inner();
    assert_eq!(reply.count as usize, reply.deliveries.len());
    reply.deliveries.len()
}

async fn send(api: &Api, from: &Device, conversation: &str, body: &str) {
    let (status, sent) = api
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&from.access_token),
            json!({ "client_msg_id": uuid::Uuid::new_v4().to_string(), "body": body }),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
}

/// Alice and bob in a direct conversation, and an endpoint for bob's pushes.
struct Pair {
    api: Api,
    alice: Device,
    bob: Device,
    conversation: String,
    endpoint: PushEndpoint,
}

impl Pair {
    async fn new(system: &System) -> Self {
        let api = system.api();
        let alice = api.new_user("alice").await;
        let bob = api.new_user("bob").await;
        let conversation = api.direct(&alice, &bob).await;
        Self { api, alice, bob, conversation, endpoint: PushEndpoint::start().await }
    }
}

/// Waits until `ready` holds for the number of deliveries waiting for `user`.
async fn wait_for_pending(system: &System, user: &Device, what: &str, ready: impl Fn(usize) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready(pending_of(system, user).await) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing more reaches `path` for a while.
async fn expect_no_more(endpoint: &PushEndpoint, path: &str, count: usize) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(endpoint.received(path).len(), count, "{path} got more than {count} requests");
}

on_both_databases!(an_offline_user_gets_one_webhook_and_one_decryptable_web_push);

async fn an_offline_user_gets_one_webhook_and_one_decryptable_web_push(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    let hook = webhook(&api, &bob, &endpoint.url("hook")).await;
    let browser = BrowserSubscription::new();
    web_push(&api, &bob, &endpoint.url("push"), &browser).await;
    // Bob's phone has been here before: it holds a cursor.
    let (phone, ready) = Ws::open(&system.ws(0), &bob).await;
    let cursor = ready["cursor"].as_str().unwrap().to_owned();
    phone.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, vapid) = api.get("/v1/push/vapid-public-key", None).await;
    assert_eq!(status, 200);
    let vapid_key = vapid["public_key"].as_str().expect("a key").to_owned();

    // Bob has no device connected: one message, one notification each way.
    send(&api, &alice, &conversation, "are you there, bob?").await;
    let hooked = endpoint.wait_for("hook", 1).await;
    let pushed = endpoint.wait_for("push", 1).await;
    let from_hook = verify_webhook(&hooked[0], hook["webhook_secret"].as_str().unwrap());
    let from_push = browser.open(&pushed[0], &endpoint.url("push"), &vapid_key);
    assert_eq!(from_hook, from_push, "the same notification both ways");
    assert_eq!(from_hook["title"], "alice");
    assert_eq!(from_hook["body"], "are you there, bob?");
    assert_eq!((from_hook["count"].as_u64(), from_hook["badge"].as_u64()), (Some(1), Some(1)));
    assert_eq!(from_hook["conversation_ids"], json!([conversation]));
    let key = hooked[0].headers["idempotency-key"].to_str().unwrap();
    assert_eq!(key, from_hook["id"]);
    expect_no_more(&endpoint, "hook", 1).await;

    // Three quick messages: one notification for all three.
    for body in ["one", "two", "three"] {
        send(&api, &alice, &conversation, body).await;
    }
    let hooked = endpoint.wait_for("hook", 2).await;
    let batch = verify_webhook(&hooked[1], hook["webhook_secret"].as_str().unwrap());
    assert_eq!(batch["body"], "3 new messages from alice");
    assert_eq!((batch["count"].as_u64(), batch["badge"].as_u64()), (Some(3), Some(4)));
    expect_no_more(&endpoint, "hook", 2).await;
    assert_eq!(endpoint.received("push").len(), 2);

    assert_eq!(pending_of(&system, &bob).await, 4);
    let badges = notification(&system)
        .await
        .get_badges(GetBadgesRequest { user_id: bob.user_id.clone() })
        .await
        .expect("GetBadges")
        .into_inner();
    assert_eq!(badges.total_unread, 4);
    assert_eq!((badges.badges[0].unread_count, badges.badges[0].pending), (4, 4));
    // Bob's phone comes back: `ready` says four were waiting, its catch-up
    // hands them over, and then they leave the queue.
    let (mut phone, ready) = Ws::open(&format!("{}?cursor={cursor}", system.ws(0)), &bob).await;
    assert_eq!(ready["pending_deliveries"], 4, "{ready}");
    let caught_up: Vec<Value> = [
        phone.expect("message").await,
        phone.expect("message").await,
        phone.expect("message").await,
        phone.expect("message").await,
    ]
    .into();
    let bodies: Vec<&str> = caught_up.iter().map(|f| f["message"]["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["are you there, bob?", "one", "two", "three"]);
    phone.expect("synced").await;
    wait_for_pending(&system, &bob, "the queue drains once bob has the messages", |n| n == 0).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_push_to_a_connected_user_or_for_a_conversation_read_elsewhere() {
    let system = System::builder()
        .notification_config(|c| c.coalesce = Duration::from_secs(2))
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    webhook(&api, &bob, &endpoint.url("hook")).await;

    // Connected on his phone: the message arrives there, nothing is pushed.
    let (mut phone, _) = Ws::open(&system.ws(0), &bob).await;
    send(&api, &alice, &conversation, "hi").await;
    let delivered = phone.expect("message").await;
    expect_no_more(&endpoint, "hook", 0).await;
    assert_eq!(pending_of(&system, &bob).await, 0);
    phone.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Offline again; the conversation is read on another device (here: its
    // marker moves through history, exactly as a `read` frame does) before
    // the coalescing window ends: the push is dropped.
    send(&api, &alice, &conversation, "did you see this?").await;
    wait_for_pending(&system, &bob, "queued for offline bob", |n| n == 1).await;
    let seq = delivered["message"]["seq"].as_u64().unwrap() + 1;
    let mut history = HistoryServiceClient::connect(format!("http://{}", system.history_addr)).await.unwrap();
    history
        .mark_read(MarkReadRequest {
            conversation_id: conversation.clone(),
            user_id: bob.user_id.clone(),
            device_id: bob.device_id.clone(),
            seq,
        })
        .await
        .expect("MarkRead");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(endpoint.received("hook").len(), 0, "nothing pushed for a read conversation");
    assert_eq!(pending_of(&system, &bob).await, 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_push_redoes_it_once_under_the_same_idempotency_key() {
    let mut system = System::builder()
        .notification_config(|c| c.ack_wait = Duration::from_secs(2))
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    webhook(&api, &bob, &endpoint.url("hook")).await;
    endpoint.delay("hook", Duration::from_secs(1));

    send(&api, &alice, &conversation, "hello").await;
    let first = endpoint.wait_for("hook", 1).await;
    // The push is in flight (the endpoint holds its answer): kill notification.
    system.kill_notification().await;
    system.start_notification().await;
    let both = endpoint.wait_for("hook", 2).await;
    let key = |r: &chat_system_tests::push::Received| r.headers["idempotency-key"].to_str().unwrap().to_owned();
    assert_eq!(key(&both[1]), key(&first[0]), "the redo carries the same idempotency key");
    assert_eq!(both[0].body, both[1].body, "and the same notification");
    expect_no_more(&endpoint, "hook", 2).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pushes_back_off_then_dead_letter_and_410_removes_the_subscription() {
    let base = Duration::from_millis(300);
    let system = System::builder()
        .notification_config(move |c| {
            c.push_attempts = 3;
            c.retry_base = base;
        })
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    endpoint.answer("broken", 500);
    endpoint.answer("gone", 410);
    let broken = webhook(&api, &bob, &endpoint.url("broken")).await;
    webhook(&api, &bob, &endpoint.url("gone")).await;

    send(&api, &alice, &conversation, "hello").await;
    let attempts = endpoint.wait_for("broken", 3).await;
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= base && gaps[1] >= base * 2, "exponential backoff: {gaps:?}");
    expect_no_more(&endpoint, "broken", 3).await;
    assert_eq!(endpoint.received("gone").len(), 1, "410 is not retried");

    let (_, listed) = api.get("/v1/push/subscriptions", Some(&bob.access_token)).await;
    let ids: Vec<&Value> = listed["subscriptions"].as_array().unwrap().iter().map(|s| &s["subscription_id"]).collect();
    assert_eq!(ids, vec![&broken["subscription_id"]], "410 removed its subscription");
    assert!(listed["subscriptions"][0].get("webhook_secret").is_none(), "secrets are never listed");

    let letters = notification(&system)
        .await
        .list_dead_letters(ListDeadLettersRequest { user_id: bob.user_id.clone(), limit: 10 })
        .await
        .expect("ListDeadLetters")
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].subscription_id, broken["subscription_id"].as_str().unwrap());
    assert_eq!((letters[0].attempts, letters[0].last_error.as_str()), (3, "HTTP 500"));
    assert_eq!(letters[0].target, endpoint.url("broken"));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_push_each_batch_once() {
    let mut system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    system.start_another_notification().await;
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    webhook(&api, &bob, &endpoint.url("hook")).await;

    // Messages apart (beyond the 300 ms window): one notification each.
    for i in 0..4 {
        send(&api, &alice, &conversation, &format!("message {i}")).await;
        endpoint.wait_for("hook", i + 1).await;
    }
    // A burst: one notification for all of it.
    for i in 0..5 {
        send(&api, &alice, &conversation, &format!("burst {i}")).await;
    }
    let received = endpoint.wait_for("hook", 5).await;
    expect_no_more(&endpoint, "hook", 5).await;
    let ids: std::collections::HashSet<&str> =
        received.iter().map(|r| r.headers["idempotency-key"].to_str().unwrap()).collect();
    assert_eq!(ids.len(), 5, "five different notifications");
    let last: Value = serde_json::from_slice(&received[4].body).unwrap();
    assert_eq!(last["count"], 5);
    assert_eq!(pending_of(&system, &bob).await, 9, "each message queued once");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_survives_a_nats_server_restart() {
    let mut system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, .. } = Pair::new(&system).await;
    send(&api, &alice, &conversation, "one").await;
    send(&api, &alice, &conversation, "two").await;
    wait_for_pending(&system, &bob, "both queued", |n| n == 2).await;
    // Restart nats-server and notification: nothing in memory survives.
    system.kill_notification().await;
    system.nats.restart().await;
    system.start_notification().await;
    wait_for_pending(&system, &bob, "the queue is back after the restart", |n| n == 2).await;
    let (_bob_ws, ready) = Ws::open(&system.ws(0), &bob).await;
    assert_eq!(ready["pending_deliveries"], 2, "{ready}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_push_subscriptions_are_refused() {
    let system = System::builder()
        .notification_config(|c| c.allow_http_endpoints = false)
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let api = system.api();
    let bob = api.new_user("bob").await;
    let browser = BrowserSubscription::new();
    let cases = [
        json!({ "type": "webhook", "url": "http://example.com/hook" }),
        json!({ "type": "webhook", "url": "not a url" }),
        json!({ "type": "webhook", "url": format!("https://example.com/{}", "a".repeat(3000)) }),
        json!({ "type": "web_push", "endpoint": "https://push.example/x", "keys": { "p256dh": "AAAA", "auth": browser.keys()["auth"] } }),
        json!({ "type": "web_push", "endpoint": "https://push.example/x", "keys": { "p256dh": browser.keys()["p256dh"], "auth": "AAAA" } }),
        json!({ "type": "sms", "number": "123" }),
        json!({ "type": "webhook" }),
    ];
    for body in cases {
        let (status, answer) = api.post("/v1/push/subscriptions", Some(&bob.access_token), body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_argument")), "{body}: {answer}");
    }
    let (status, _) =
        api.post("/v1/push/subscriptions", None, json!({ "type": "webhook", "url": "https://a.example/" })).await;
    assert_eq!(status, 401);
    for i in 0..20 {
        let body = json!({ "type": "webhook", "url": format!("https://hooks.example/{i}") });
        assert_eq!(api.post("/v1/push/subscriptions", Some(&bob.access_token), body).await.0, 201);
    }
    let body = json!({ "type": "webhook", "url": "https://hooks.example/one-too-many" });
    let (status, answer) = api.post("/v1/push/subscriptions", Some(&bob.access_token), body).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("conflict")), "{answer}");
    let (status, _) = api
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/push/subscriptions/{}", uuid::Uuid::new_v4()),
            Some(&bob.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404);
    system.stop().await;
}
