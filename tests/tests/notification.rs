//! Offline delivery and push: a user with no device connected gets one
//! notification per batch of messages, over a signed webhook and a Web Push
//! the test decrypts; a connected device or a read elsewhere means no push;
//! a crash mid-push redoes it under the same idempotency key; failures are
//! retried with backoff and then dead-lettered, while history being down only
//! delays a push; 410 removes a subscription;
//! the queue survives restarts and is handed over when a device connects.

use std::time::Duration;

use chat_proto::history::v1::MarkReadRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::notification::v1::notification_service_client::NotificationServiceClient;
use chat_proto::notification::v1::{DeadLetter, GetBadgesRequest, ListDeadLettersRequest, ListPendingRequest};
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

/// The user's dead letters, newest first (at most 100).
async fn dead_letters(system: &System, user: &Device) -> Vec<DeadLetter> {
    let request = ListDeadLettersRequest { user_id: user.user_id.clone(), limit: 100 };
    notification(system).await.list_dead_letters(request).await.expect("ListDeadLetters").into_inner().dead_letters
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

    let letters = dead_letters(&system, &bob).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].subscription_id, broken["subscription_id"].as_str().unwrap());
    assert_eq!((letters[0].attempts, letters[0].last_error.as_str()), (3, "HTTP 500"));
    assert_eq!(letters[0].target, endpoint.url("broken"));
    system.stop().await;
}

/// History down for a few seconds while messages come in, apart (beyond the
/// coalescing window): the push waits, never goes out unchecked; once history
/// is back it goes out within seconds and covers every message once, and the
/// wait spent none of its attempts (the first send after it fails and is
/// still retried, not dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_held_up_by_history_goes_out_soon_after_and_keeps_its_attempts() {
    let mut system = System::builder()
        .notification_config(|c| {
            c.push_attempts = 2;
            c.retry_base = Duration::from_millis(500);
        })
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    webhook(&api, &bob, &endpoint.url("hook")).await;
    send(&api, &alice, &conversation, "before").await;
    endpoint.wait_for("hook", 1).await;

    system.kill_history().await;
    for i in 0..3 {
        send(&api, &alice, &conversation, &format!("while history is down {i}")).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    // Long enough for the waiting pushes to have been tried a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(endpoint.received("hook").len(), 1, "nothing pushed unchecked");

    endpoint.answer("hook", 500);
    system.start_history().await;
    let back = tokio::time::Instant::now();
    endpoint.wait_for("hook", 2).await;
    let resumed = back.elapsed();
    assert!(resumed < Duration::from_secs(4), "pushed {resumed:?} after history came back");
    endpoint.answer("hook", 200);
    let received = endpoint.wait_for("hook", 3).await;
    expect_no_more(&endpoint, "hook", 3).await;

    let mut counts = std::collections::HashMap::new();
    for request in &received[1..] {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        counts.insert(request.headers["idempotency-key"].to_str().unwrap().to_owned(), body["count"].as_u64());
    }
    assert_eq!(counts.len(), 1, "one notification, sent again after its failure: {counts:?}");
    assert_eq!(counts.values().map(|c| c.unwrap_or(0)).sum::<u64>(), 3, "covering the three messages");
    let letters = dead_letters(&system, &bob).await;
    assert!(letters.is_empty(), "the wait spent no attempt: {letters:?}");
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

/// An event the intake gets again, as it does when its acknowledgement was
/// lost (nats-server killed before it kept the consumer's acks, or
/// notification killed mid-event), queues nothing new: no second
/// notification covers its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_seen_again_is_not_pushed_again() {
    let system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    webhook(&api, &bob, &endpoint.url("hook")).await;
    send(&api, &alice, &conversation, "once").await;
    endpoint.wait_for("hook", 1).await;

    // The message's event once more on the CHAT stream, as a redelivery brings it.
    let js = async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.expect("nats"));
    let subject = format!("chat.conv.{conversation}.msg");
    let stream = js.get_stream(chat_common::nats::CHAT_STREAM).await.expect("the CHAT stream");
    let event = stream.get_last_raw_message_by_subject(&subject).await.expect("the message's event");
    js.publish(subject, event.payload).await.expect("published").await.expect("stored");
    expect_no_more(&endpoint, "hook", 1).await;
    assert_eq!(pending_of(&system, &bob).await, 1, "the message is queued once");

    // The next message is notified on its own.
    send(&api, &alice, &conversation, "twice?").await;
    let received = endpoint.wait_for("hook", 2).await;
    let next: Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!((next["count"].as_u64(), next["body"].as_str()), (Some(1), Some("twice?")), "{next}");
    expect_no_more(&endpoint, "hook", 2).await;
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

/// A system on SQLite with notification's configuration changed, and bob.
async fn system_with_bob(
    change: impl Fn(&mut chat_notification::Config) + Send + Sync + 'static,
) -> (System, Api, Device) {
    let system = System::builder().notification_config(change).start(Db::Sqlite).await.expect("sqlite needs no server");
    let api = system.api();
    let bob = api.new_user("bob").await;
    (system, api, bob)
}

/// Registers `body` for `device`, expecting 400 `invalid_argument`; returns the message.
async fn refused_registration(api: &Api, device: &Device, body: Value) -> String {
    let (status, answer) = api.post("/v1/push/subscriptions", Some(&device.access_token), body.clone()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_argument")), "{body}: {answer}");
    answer["error"]["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_push_subscriptions_are_refused() {
    let (system, api, bob) = system_with_bob(|c| c.allow_http_endpoints = false).await;
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
        refused_registration(&api, &bob, body).await;
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

/// The push subscriptions `device` sees listed.
async fn listed_urls(api: &Api, device: &Device) -> Vec<String> {
    let (status, listed) = api.get("/v1/push/subscriptions", Some(&device.access_token)).await;
    assert_eq!(status, 200, "{listed}");
    listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until `device` sees exactly `urls` listed.
async fn wait_for_listed(api: &Api, device: &Device, urls: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = listed_urls(api, device).await;
        if listed == urls {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "listed {listed:?}, expected {urls:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a device stops being logged in.
#[derive(Clone, Copy)]
enum Revocation {
    Logout,
    RevokedFromAnotherDevice,
    RefreshTokenReused,
}

async fn revoke(api: &Api, device: &Device, other: &Device, how: Revocation) {
    match how {
        Revocation::Logout => {
            let (status, body) = api.post("/v1/auth/logout", Some(&device.access_token), json!({})).await;
            assert_eq!(status, 204, "{body}");
        }
        Revocation::RevokedFromAnotherDevice => {
            let path = format!("/v1/devices/{}", device.device_id);
            let (status, body) = api.request(reqwest::Method::DELETE, &path, Some(&other.access_token), None).await;
            assert_eq!(status, 204, "{body}");
        }
        Revocation::RefreshTokenReused => {
            let refresh = json!({ "refresh_token": device.refresh_token });
            assert_eq!(api.post("/v1/auth/refresh", None, refresh.clone()).await.0, 200);
            let (status, body) = api.post("/v1/auth/refresh", None, refresh).await;
            assert_eq!(status, 401, "the re-used token revokes the device: {body}");
        }
    }
}

/// Bob's device A and device B each register a webhook; A is revoked (while
/// notification runs, or while it is down when `restart` says so); bob is
/// offline and alice writes: B is pushed, A is not, and A's subscription is
/// no longer listed.
async fn a_revoked_devices_subscription_gets_no_push(db: Db, how: Revocation, notification_down: bool) {
    let Some(mut system) = System::start(db).await else { return };
    let Pair { api, alice, bob: device_a, conversation, endpoint } = Pair::new(&system).await;
    let device_b = api.login("bob").await;
    webhook(&api, &device_a, &endpoint.url("a")).await;
    webhook(&api, &device_b, &endpoint.url("b")).await;
    assert_eq!(listed_urls(&api, &device_b).await.len(), 2);

    if notification_down {
        system.kill_notification().await;
    }
    revoke(&api, &device_a, &device_b, how).await;
    if notification_down {
        system.start_notification().await;
    }
    wait_for_listed(&api, &device_b, &[endpoint.url("b")]).await;

    send(&api, &alice, &conversation, "for bob's devices still logged in").await;
    endpoint.wait_for("b", 1).await;
    expect_no_more(&endpoint, "a", 0).await;
    system.stop().await;
}

on_both_databases!(
    a_logged_out_devices_subscription_gets_no_push,
    a_revoked_devices_subscription_is_dropped_and_gets_no_push,
    a_device_revoked_for_a_reused_refresh_token_gets_no_push,
    a_device_revoked_while_notification_was_down_gets_no_push,
);

async fn a_logged_out_devices_subscription_gets_no_push(db: Db) {
    a_revoked_devices_subscription_gets_no_push(db, Revocation::Logout, false).await;
}

async fn a_revoked_devices_subscription_is_dropped_and_gets_no_push(db: Db) {
    a_revoked_devices_subscription_gets_no_push(db, Revocation::RevokedFromAnotherDevice, false).await;
}

async fn a_device_revoked_for_a_reused_refresh_token_gets_no_push(db: Db) {
    a_revoked_devices_subscription_gets_no_push(db, Revocation::RefreshTokenReused, false).await;
}

async fn a_device_revoked_while_notification_was_down_gets_no_push(db: Db) {
    a_revoked_devices_subscription_gets_no_push(db, Revocation::Logout, true).await;
}

/// A TCP listener on 127.0.0.1 that only counts the connections it accepts:
/// proof that nothing connected to a refused endpoint.
struct ConnectionCounter {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ConnectionCounter {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_endpoints_on_private_addresses_are_refused_at_registration() {
    let (system, api, bob) = system_with_bob(|c| c.allow_private_endpoints = false).await;
    let browser = BrowserSubscription::new();
    let counter = ConnectionCounter::start().await;
    let port = counter.addr.port();
    let cases = [
        (json!({ "type": "webhook", "url": format!("http://127.0.0.1:{port}/hook") }), "loopback"),
        (json!({ "type": "webhook", "url": "http://10.0.0.1/hook" }), "private"),
        (json!({ "type": "webhook", "url": format!("http://[::1]:{port}/hook") }), "loopback"),
        (json!({ "type": "webhook", "url": "http://169.254.169.254/latest/meta-data/" }), "link-local"),
        (json!({ "type": "webhook", "url": "http://100.64.0.1/hook" }), "carrier-grade NAT"),
        (json!({ "type": "webhook", "url": "https://[fd00::1]/hook" }), "unique local"),
        (json!({ "type": "webhook", "url": "http://[::ffff:169.254.169.254]/" }), "link-local"),
        (json!({ "type": "webhook", "url": format!("http://localhost:{port}/hook") }), "loopback"),
        (json!({ "type": "web_push", "endpoint": "https://192.168.1.1/push", "keys": browser.keys() }), "private"),
    ];
    for (body, kind) in cases {
        let message = refused_registration(&api, &bob, body.clone()).await;
        assert!(message.contains("must not point at a") && message.contains(kind), "{body}: {message}");
    }
    assert!(listed_urls(&api, &bob).await.is_empty());
    assert_eq!(counter.accepted(), 0, "registration connects nowhere");
    system.stop().await;
}

/// One dead letter per subscription whose `last_error` starts with `reason`.
async fn wait_for_dead_letters(system: &System, user: &Device, count: usize, reason: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let letters = dead_letters(system, user).await;
        let matching: Vec<String> =
            letters.iter().filter(|l| l.last_error.starts_with(reason)).map(|l| l.target.clone()).collect();
        if matching.len() >= count {
            return matching;
        }
        assert!(tokio::time::Instant::now() < deadline, "dead letters {letters:?}, expected {count} for {reason}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of a metric series on a service's `/metrics`, 0 when absent.
async fn metric(system: &System, service: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", system.metrics_addrs[service]))
        .await
        .expect("metrics answer")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_stored_before_the_endpoint_policy_tightened_are_never_connected_to() {
    let mut system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, .. } = Pair::new(&system).await;
    let counter = ConnectionCounter::start().await;
    let port = counter.addr.port();
    // Stored while private addresses and http were allowed (as in development).
    let literal = format!("http://127.0.0.1:{port}/hook");
    let named = format!("http://localhost:{port}/hook");
    webhook(&api, &bob, &literal).await;
    webhook(&api, &bob, &named).await;

    // Private addresses are disallowed now: nothing is sent, both are dead letters.
    system.kill_notification().await;
    system.set_notification_config(|c| c.allow_private_endpoints = false);
    system.start_notification().await;
    send(&api, &alice, &conversation, "to nowhere private").await;
    let mut targets = wait_for_dead_letters(&system, &bob, 2, "refused: must not point at a loopback address").await;
    targets.sort();
    assert_eq!(targets, vec![literal.clone(), named.clone()]);
    assert!(metric(&system, "notification", "notification_pushes_total{outcome=\"refused\"}").await >= 2.0);

    // Private addresses allowed again, but http no longer.
    system.kill_notification().await;
    system.set_notification_config(|c| c.allow_http_endpoints = false);
    system.start_notification().await;
    send(&api, &alice, &conversation, "to nowhere plain").await;
    wait_for_dead_letters(&system, &bob, 2, "refused: must be an https URL").await;
    assert_eq!(counter.accepted(), 0, "no connection to a refused endpoint, ever");
    system.stop().await;
}

/// The CHAT stream captures only `subjects` from now on (a way to make one
/// kind of publish fail, as when nats-server refuses it).
async fn chat_stream_subjects(system: &System, subjects: &[&str]) {
    let nats = async_nats::connect(system.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let mut stream = js.get_stream(chat_common::nats::CHAT_STREAM).await.expect("the CHAT stream");
    let mut config = stream.info().await.expect("stream info").config.clone();
    config.subjects = subjects.iter().map(|s| (*s).to_owned()).collect();
    js.update_stream(config).await.expect("the stream's subjects change");
}

on_both_databases!(a_removed_member_gets_no_preview_even_when_the_membership_snapshot_after_the_removal_fails);

async fn a_removed_member_gets_no_preview_even_when_the_membership_snapshot_after_the_removal_fails(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let (alice, bob, carol) = (api.new_user("alice").await, api.new_user("bob").await, api.new_user("carol").await);
    let endpoint = PushEndpoint::start().await;
    webhook(&api, &bob, &endpoint.url("bob")).await;
    webhook(&api, &carol, &endpoint.url("carol")).await;
    let (status, created) = api
        .post(
            "/v1/conversations",
            Some(&alice.access_token),
            json!({ "kind": "group", "title": "Team", "members": [bob.user_id, carol.user_id] }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let group = created["conversation_id"].as_str().unwrap().to_owned();
    send(&api, &alice, &group, "hello team").await;
    endpoint.wait_for("bob", 1).await;
    endpoint.wait_for("carol", 1).await;

    // Alice removes carol; the removal is committed (its system message and
    // history's row), but the membership snapshot after it cannot be published.
    chat_stream_subjects(&system, &["chat.conv.*.msg", "chat.conv.*.read", "chat.conv.*.edit"]).await;
    let path = format!("/v1/conversations/{group}/members/{}", carol.user_id);
    let (status, answer) = api.request(reqwest::Method::DELETE, &path, Some(&alice.access_token), None).await;
    assert_eq!(status, 503, "the snapshot failed: {answer}");
    chat_stream_subjects(&system, &[chat_common::nats::CHAT_SUBJECTS]).await;
    let (status, conversation) = api.get(&format!("/v1/conversations/{group}"), Some(&alice.access_token)).await;
    assert_eq!(status, 200, "{conversation}");
    assert_eq!(conversation["members"], json!([alice.user_id, bob.user_id]), "carol is no longer a member");

    send(&api, &alice, &group, "only for the team as it is now").await;
    let pushed = endpoint.wait_for("bob", 2).await;
    assert_eq!(serde_json::from_slice::<Value>(&pushed[1].body).unwrap()["body"], "only for the team as it is now");
    expect_no_more(&endpoint, "carol", 1).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_entries_on_the_chat_stream_are_set_aside_and_pushes_keep_flowing() {
    let system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    webhook(&api, &bob, &endpoint.url("hook")).await;

    // Garbage straight onto the stream (subjects of a conversation nobody
    // writes to, so the conversation's own log stays readable).
    let nats = async_nats::connect(system.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let elsewhere = uuid::Uuid::new_v4();
    let mut garbage_seqs = Vec::new();
    for subject in [format!("chat.conv.{elsewhere}.msg"), format!("chat.conv.{elsewhere}.members")] {
        let ack = js.publish(subject, vec![0xff, 0xff, 0xff, 0xff].into()).await.expect("published");
        garbage_seqs.push(ack.await.expect("stored").sequence);
    }

    send(&api, &alice, &conversation, "still flowing").await;
    let pushed = endpoint.wait_for("hook", 1).await;
    assert_eq!(serde_json::from_slice::<Value>(&pushed[0].body).unwrap()["body"], "still flowing");

    let dead_events = js.get_key_value("notify_dead_events").await.expect("the dead events bucket");
    for seq in garbage_seqs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let record = loop {
            if let Some(record) = dead_events.get(seq.to_string()).await.expect("readable") {
                break record;
            }
            assert!(tokio::time::Instant::now() < deadline, "no dead event for stream entry {seq}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let record: Value = serde_json::from_slice(&record).expect("JSON");
        assert_eq!(record["stream_seq"], seq);
        assert!(record["reason"].as_str().unwrap().starts_with("undecodable payload"), "{record}");
        assert!(record["subject"].as_str().unwrap().starts_with(&format!("chat.conv.{elsewhere}.")), "{record}");
    }
    // At least: the counter is shared by every notification in this test process.
    assert!(metric(&system, "notification", "notification_dead_events_total").await >= 2.0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_keeps_failing_is_set_aside_after_its_attempts_and_later_ones_flow() {
    let mut system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let Pair { api, alice, bob, conversation, endpoint } = Pair::new(&system).await;
    webhook(&api, &bob, &endpoint.url("hook")).await;
    send(&api, &alice, &conversation, "before").await;
    endpoint.wait_for("hook", 1).await;

    // A fresh notification (no member lists cached) with two attempts per
    // event; history is down, so the next message's members cannot be read.
    system.kill_notification().await;
    system.set_notification_config(|c| c.intake_attempts = 2);
    system.start_notification().await;
    system.kill_history().await;
    send(&api, &alice, &conversation, "while history is down").await;

    let nats = async_nats::connect(system.nats.url()).await.expect("nats");
    let dead_events = async_nats::jetstream::new(nats).get_key_value("notify_dead_events").await.expect("bucket");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let record = loop {
        let keys: Vec<String> = futures::StreamExt::collect::<Vec<_>>(dead_events.keys().await.expect("keys"))
            .await
            .into_iter()
            .map(|key| key.expect("a key"))
            .collect();
        if let Some(key) = keys.first() {
            break serde_json::from_slice::<Value>(&dead_events.get(key).await.unwrap().unwrap()).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["attempts"], 2, "{record}");
    assert!(record["reason"].as_str().unwrap().starts_with("failed 2 times; last: history answered"), "{record}");
    assert_eq!(record["subject"], format!("chat.conv.{conversation}.msg"));

    system.start_history().await;
    send(&api, &alice, &conversation, "after").await;
    let pushed = endpoint.wait_for("hook", 2).await;
    assert_eq!(serde_json::from_slice::<Value>(&pushed[1].body).unwrap()["body"], "after");
    assert!(metric(&system, "notification", "notification_dead_events_total").await >= 1.0);
    system.stop().await;
}
