//! Presence: online while any device is connected, offline (with
//! `last_seen_at`) after the grace period once none is, no flicker on a quick
//! reconnect, a killed gateway's users going offline, only contacts told, and
//! several presence instances agreeing through restarts.
//!
//! Presence keeps its state in NATS; history is only asked who shares a
//! conversation with whom, so the scenario that exercises that (privacy) runs
//! on both databases and the rest on SQLite.

use std::time::{Duration, Instant};

use chat_proto::presence::v1::presence_service_client::PresenceServiceClient;
use chat_proto::presence::v1::{GetPresenceRequest, PresenceStatus, UserPresence, WatchPresenceRequest};
use chat_system_tests::client::Api;
use chat_system_tests::{Db, Device, System, Ws, on_both_databases};
use futures::StreamExt;
use serde_json::{Value, json};

/// Short grace period for the tests (production default: 5 s).
const GRACE: Duration = Duration::from_secs(1);

async fn system_with_grace(db: Db, grace: Duration) -> Option<System> {
    System::builder().presence_config(move |c| c.grace = grace).start(db).await
}

/// Waits for the next `presence` frame and checks whom and what it is about.
async fn expect_presence(ws: &mut Ws, who: &Device, status: &str) -> Value {
    let frame = ws.expect("presence").await;
    assert_eq!(frame["user_id"], who.user_id, "{frame}");
    assert_eq!(frame["status"], status, "{frame}");
    frame
}

/// `GET /v1/presence` for one user, as `asker` sees it: `None` when left out.
async fn http_presence(api: &Api, asker: &Device, who: &Device) -> Option<Value> {
    let (status, body) = api.get(&format!("/v1/presence?user_ids={}", who.user_id), Some(&asker.access_token)).await;
    assert_eq!(status, 200, "{body}");
    let list = body["presence"].as_array().expect("a presence list").clone();
    assert!(list.len() <= 1, "{body}");
    list.into_iter().next()
}

async fn grpc(addr: &str) -> PresenceServiceClient<tonic::transport::Channel> {
    PresenceServiceClient::connect(format!("http://{addr}")).await.expect("presence answers")
}

/// What presence instance `addr` says of `who`, asked by `caller`.
async fn grpc_presence(addr: &str, caller: &Device, who: &Device) -> Option<UserPresence> {
    let request = GetPresenceRequest { user_ids: vec![who.user_id.clone()], caller_id: caller.user_id.clone() };
    grpc(addr).await.get_presence(request).await.expect("GetPresence").into_inner().presences.into_iter().next()
}

/// Polls until `check` holds (presence changes settle within moments).
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Alice and bob in a direct conversation, bob connected to gateway 0 and
/// keeping presence frames.
async fn alice_and_bob_watching(system: &System) -> (Api, Device, Device, Ws) {
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    api.direct(&alice, &bob).await;
    let (bob_ws, _) = Ws::open_with_presence(&system.ws(0), &bob).await;
    (api, alice, bob, bob_ws)
}

fn parse_time(value: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(value.as_str().expect("a time"), &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_while_any_device_is_connected_then_offline_with_last_seen() {
    let system = system_with_grace(Db::Sqlite, GRACE).await.expect("sqlite needs no server");
    let api = system.api();
    let phone = api.new_user("alice").await;
    let laptop = api.login("alice").await;
    let bob = api.new_user("bob").await;
    api.direct(&phone, &bob).await;

    let (mut bob_ws, _) = Ws::open_with_presence(&system.ws(0), &bob).await;
    assert_eq!(http_presence(&api, &bob, &phone).await.expect("a contact")["status"], "offline");
    assert_eq!(http_presence(&api, &bob, &phone).await.unwrap()["last_seen_at"], Value::Null, "never seen");
    eventually("bob online", Duration::from_secs(5), || async {
        http_presence(&api, &phone, &bob).await.is_some_and(|p| p["status"] == "online")
    })
    .await;

    // Alice's phone hears at once that bob is online; bob hears of alice.
    let (mut phone_ws, _) = Ws::open_with_presence(&system.ws(0), &phone).await;
    let initial = expect_presence(&mut phone_ws, &bob, "online").await;
    assert!(initial["last_seen_at"].is_string(), "{initial}");
    expect_presence(&mut bob_ws, &phone, "online").await;
    let (laptop_ws, _) = Ws::open(&system.ws(0), &laptop).await;
    bob_ws.expect_silence(Duration::from_millis(300)).await;

    // One device goes: still online.
    phone_ws.close().await;
    bob_ws.expect_silence(GRACE * 2).await;
    assert_eq!(http_presence(&api, &bob, &phone).await.unwrap()["status"], "online");
    let counted = grpc_presence(&system.presence_addrs[0], &bob, &phone).await.expect("visible");
    assert_eq!((counted.status(), counted.connected_devices), (PresenceStatus::Online, 1));

    // The last one goes: offline after the grace period, with last_seen_at.
    let closed_at = time::OffsetDateTime::now_utc();
    laptop_ws.close().await;
    let started = Instant::now();
    let offline = expect_presence(&mut bob_ws, &phone, "offline").await;
    assert!(started.elapsed() >= GRACE - Duration::from_millis(100), "not before the grace period");
    let last_seen = parse_time(&offline["last_seen_at"]);
    let skew = time::Duration::seconds(1);
    assert!(
        last_seen >= closed_at - skew && last_seen <= closed_at + skew,
        "last seen {last_seen}, closed {closed_at}"
    );
    let answered = http_presence(&api, &bob, &phone).await.unwrap();
    assert_eq!(answered["status"], "offline");
    assert_eq!(answered["last_seen_at"], offline["last_seen_at"]);
    bob_ws.expect_silence(Duration::from_millis(300)).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_reconnect_or_a_change_of_device_shows_no_offline() {
    let grace = Duration::from_secs(3);
    let system = system_with_grace(Db::Sqlite, grace).await.expect("sqlite needs no server");
    let api = system.api();
    let phone = api.new_user("alice").await;
    let laptop = api.login("alice").await;
    let bob = api.new_user("bob").await;
    api.direct(&phone, &bob).await;
    let (mut bob_ws, _) = Ws::open_with_presence(&system.ws(0), &bob).await;
    let (phone_ws, _) = Ws::open(&system.ws(0), &phone).await;
    expect_presence(&mut bob_ws, &phone, "online").await;

    // The phone drops (no close frame) and comes back at once.
    drop(phone_ws);
    let (phone_ws, _) = Ws::open(&system.ws(0), &phone).await;
    bob_ws.expect_silence(grace + Duration::from_secs(1)).await;

    // Alice moves from her phone to her laptop.
    phone_ws.close().await;
    tokio::time::sleep(grace / 3).await;
    let (laptop_ws, _) = Ws::open(&system.ws(0), &laptop).await;
    bob_ws.expect_silence(grace + Duration::from_secs(1)).await;
    assert_eq!(http_presence(&api, &bob, &laptop).await.unwrap()["status"], "online");

    laptop_ws.close().await;
    expect_presence(&mut bob_ws, &phone, "offline").await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_only_socket_stops_answering_goes_offline() {
    let idle = Duration::from_secs(1);
    let system = System::builder()
        .presence_config(|c| c.grace = GRACE)
        .gateway_config(move |c| {
            c.ping_interval = Duration::from_millis(200);
            c.idle_timeout = idle;
        })
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let (_, alice, _, mut bob_ws) = alice_and_bob_watching(&system).await;
    // Alice's socket is never read again, so it never answers a ping: half-open.
    let (_silent, _) = Ws::open(&system.ws(0), &alice).await;
    expect_presence(&mut bob_ws, &alice, "online").await;
    let started = Instant::now();
    let offline = expect_presence(&mut bob_ws, &alice, "offline").await;
    assert!(started.elapsed() >= idle, "not before the idle timeout");
    assert!(offline["last_seen_at"].is_string());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_of_a_killed_gateway_go_offline() {
    let ttl = Duration::from_secs(2);
    let system = System::builder()
        .presence_config(|c| c.grace = GRACE)
        .gateway_config(move |c| c.presence_ttl = ttl)
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let (api, alice, bob, mut bob_ws) = alice_and_bob_watching(&system).await;

    let mut gateway = system.spawn_gateway_process().await;
    let (_alice_ws, _) = Ws::open(&gateway.ws(), &alice).await;
    expect_presence(&mut bob_ws, &alice, "online").await;

    // SIGKILL: no socket closes, no goodbye. The heartbeat key expires after
    // its TTL and the grace period follows.
    gateway.kill().await;
    let killed = Instant::now();
    expect_presence(&mut bob_ws, &alice, "offline").await;
    let took = killed.elapsed();
    assert!(took <= ttl + GRACE + Duration::from_secs(3), "offline {took:?} after the kill");
    assert_eq!(http_presence(&api, &bob, &alice).await.unwrap()["status"], "offline");
    system.stop().await;
}

/// NATS away for 10 s, longer than the gateway's heartbeat TTL: the
/// gateway's key lapses and presence may drop its sockets, so the gateway
/// records its open sockets again once NATS is back. Alice, whose socket
/// stayed open throughout, is online again and stays so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_off_from_nats_longer_than_its_ttl_records_its_sockets_again() {
    let ttl = Duration::from_secs(2);
    let mut system = System::builder()
        .presence_config(|c| c.grace = GRACE)
        .gateway_config(move |c| c.presence_ttl = ttl)
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let (api, alice, bob, mut bob_ws) = alice_and_bob_watching(&system).await;
    let (_alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    expect_presence(&mut bob_ws, &alice, "online").await;

    system.nats.kill().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    system.nats.restart().await;

    let online = || async { http_presence(&api, &bob, &alice).await.is_some_and(|p| p["status"] == "online") };
    eventually("alice online again", Duration::from_secs(30), online).await;
    // Past another TTL and grace: recorded, not a leftover about to lapse.
    tokio::time::sleep(ttl + GRACE + Duration::from_secs(1)).await;
    assert_eq!(http_presence(&api, &bob, &alice).await.expect("a contact")["status"], "online");
    system.stop().await;
}

on_both_databases!(only_users_sharing_a_conversation_see_presence);

async fn only_users_sharing_a_conversation_see_presence(db: Db) {
    let Some(system) = system_with_grace(db, GRACE).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    api.direct(&alice, &bob).await;
    let (mut bob_ws, _) = Ws::open_with_presence(&system.ws(0), &bob).await;
    let (mut carol_ws, _) = Ws::open_with_presence(&system.ws(0), &carol).await;
    let (alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    expect_presence(&mut bob_ws, &alice, "online").await;

    // Carol shares nothing with alice: no frame, nothing over HTTP or gRPC.
    carol_ws.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(http_presence(&api, &carol, &alice).await, None);
    assert_eq!(grpc_presence(&system.presence_addrs[0], &carol, &alice).await, None);
    assert_eq!(grpc_presence(&system.presence_addrs[0], &bob, &alice).await.unwrap().status(), PresenceStatus::Online);
    assert_eq!(
        grpc_presence(&system.presence_addrs[0], &carol, &carol).await.unwrap().status(),
        PresenceStatus::Online,
        "oneself"
    );
    let mut carol_watch = grpc(&system.presence_addrs[0])
        .await
        .watch_presence(WatchPresenceRequest {
            user_ids: vec![alice.user_id.clone()],
            caller_id: carol.user_id.clone(),
        })
        .await
        .expect("WatchPresence")
        .into_inner();
    let mut bob_watch = grpc(&system.presence_addrs[0])
        .await
        .watch_presence(WatchPresenceRequest { user_ids: vec![alice.user_id.clone()], caller_id: bob.user_id.clone() })
        .await
        .expect("WatchPresence")
        .into_inner();
    let first = bob_watch.message().await.expect("stream").expect("the current state");
    assert_eq!((first.user_id.as_str(), first.status()), (alice.user_id.as_str(), PresenceStatus::Online));

    alice_ws.close().await;
    expect_presence(&mut bob_ws, &alice, "offline").await;
    let change = bob_watch.message().await.expect("stream").expect("a change");
    assert_eq!(change.status(), PresenceStatus::Offline);
    assert!(change.last_seen_at_ms > 0);
    carol_ws.expect_silence(Duration::from_millis(300)).await;
    let nothing = tokio::time::timeout(Duration::from_millis(500), carol_watch.message()).await;
    assert!(nothing.is_err(), "carol's watch stays silent: {nothing:?}");

    // A group with carol makes them contacts; removing her ends it.
    let (status, group) = api
        .post(
            "/v1/conversations",
            Some(&alice.access_token),
            json!({ "kind": "group", "title": "g", "members": [carol.user_id] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(carol_ws.expect("message").await["message"]["system"]["event"], "created");
    let (alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    expect_presence(&mut carol_ws, &alice, "online").await;
    expect_presence(&mut bob_ws, &alice, "online").await;
    assert_eq!(http_presence(&api, &carol, &alice).await.unwrap()["status"], "online");
    let (status, body) = api
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/conversations/{group_id}/members/{}", carol.user_id),
            Some(&alice.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(carol_ws.expect("message").await["message"]["system"]["event"], "member_removed");
    eventually("carol no longer sees alice", Duration::from_secs(5), || async {
        http_presence(&api, &carol, &alice).await.is_none()
    })
    .await;
    alice_ws.close().await;
    expect_presence(&mut bob_ws, &alice, "offline").await;
    carol_ws.expect_silence(Duration::from_millis(500)).await;

    // Bad requests get clear errors.
    for query in
        ["", "?user_ids=", "?user_ids=not-a-uuid", &format!("?user_ids={}", vec![bob.user_id.as_str(); 201].join(","))]
    {
        let (status, body) = api.get(&format!("/v1/presence{query}"), Some(&bob.access_token)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_argument")), "{query}: {body}");
    }
    let (status, _) = api.get(&format!("/v1/presence?user_ids={}", alice.user_id), None).await;
    assert_eq!(status, 401);
    let refused = grpc(&system.presence_addrs[0])
        .await
        .get_presence(GetPresenceRequest { user_ids: vec![alice.user_id.clone()], caller_id: "nobody".into() })
        .await
        .expect_err("an invalid caller");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_presence_instances_agree_through_restarts() {
    let system = System::builder()
        .presence_instances(2)
        .presence_config(|c| c.grace = GRACE)
        .start(Db::Sqlite)
        .await
        .expect("sqlite needs no server");
    let mut system = system;
    let (_, alice, bob, mut bob_ws) = alice_and_bob_watching(&system).await;
    let addrs = system.presence_addrs.clone();
    let agree = |status: &'static str| {
        let (addrs, bob, alice) = (addrs.clone(), bob.clone(), alice.clone());
        async move {
            for addr in &addrs {
                let seen = grpc_presence(addr, &bob, &alice).await.expect("visible");
                if seen.status().word() != status {
                    return false;
                }
            }
            true
        }
    };

    // Each change is announced once, though two instances decide it.
    let (alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    expect_presence(&mut bob_ws, &alice, "online").await;
    eventually("both see alice online", Duration::from_secs(5), || agree("online")).await;
    alice_ws.close().await;
    expect_presence(&mut bob_ws, &alice, "offline").await;
    bob_ws.expect_silence(GRACE).await;
    eventually("both see alice offline", Duration::from_secs(5), || agree("offline")).await;

    // One instance down: the other carries on alone.
    system.kill_presence(0).await;
    let (alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    expect_presence(&mut bob_ws, &alice, "online").await;
    assert_eq!(grpc_presence(&addrs[1], &bob, &alice).await.unwrap().status(), PresenceStatus::Online);
    // Restarted, it knows what happened while it was away.
    system.start_presence(0).await;
    eventually("the restarted instance agrees", Duration::from_secs(5), || agree("online")).await;
    let last_seen_before = grpc_presence(&addrs[1], &bob, &alice).await.unwrap().last_seen_at_ms;

    // The other one restarts while alice leaves.
    system.kill_presence(1).await;
    alice_ws.close().await;
    expect_presence(&mut bob_ws, &alice, "offline").await;
    system.start_presence(1).await;
    eventually("both agree again", Duration::from_secs(5), || agree("offline")).await;
    let a = grpc_presence(&addrs[0], &bob, &alice).await.unwrap();
    let b = grpc_presence(&addrs[1], &bob, &alice).await.unwrap();
    assert_eq!(a, b);
    assert!(a.last_seen_at_ms > last_seen_before);
    bob_ws.expect_silence(GRACE).await;
    system.stop().await;
}

on_both_databases!(a_group_of_more_than_256_members_carries_messages_but_not_presence);

/// A group past 256 members (possible where an operator raised the limit)
/// carries messages to its members but shares no presence: with thousands of
/// members, every connect would be a frame to each. A direct conversation
/// beside it still shares presence.
async fn a_group_of_more_than_256_members_carries_messages_but_not_presence(db: Db) {
    let Some(system) = System::builder()
        .history_config(|c| c.max_group_members = 300)
        .auth_config(|c| {
            c.register_per_address = "1000/1".parse().expect("rate");
            c.login_per_address = "1000/1".parse().expect("rate");
        })
        .start(db)
        .await
    else {
        return;
    };
    let api = system.api();
    let alice = api.new_user("big_alice").await;
    let carol = api.new_user("big_carol").await;
    api.direct(&alice, &carol).await;
    let others: Vec<Device> = futures::stream::iter(0..256)
        .map(|i| {
            let api = &api;
            async move { api.new_user(&format!("big_member{i}")).await }
        })
        .buffered(8)
        .collect()
        .await;
    let ids: Vec<&str> = others.iter().map(|u| u.user_id.as_str()).collect();
    let (status, group) = api
        .post(
            "/v1/conversations",
            Some(&alice.access_token),
            json!({ "kind": "group", "title": "everyone", "members": ids[..255] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let group = group["conversation_id"].as_str().expect("an id").to_owned();
    let (status, grown) = api
        .post(
            &format!("/v1/conversations/{group}/members"),
            Some(&alice.access_token),
            json!({ "members": [ids[255]] }),
        )
        .await;
    assert_eq!(status, 200, "{grown}");
    assert_eq!(grown["members"].as_array().map(Vec::len), Some(257), "{grown}");

    let (mut alice_ws, _) = Ws::open_with_presence(&system.ws(0), &alice).await;
    let (bob, last) = (&others[0], &others[255]);
    let (mut bob_ws, _) = Ws::open(&system.ws(0), bob).await;
    let (mut last_ws, _) = Ws::open(&system.ws(0), last).await;
    eventually("bob online", Duration::from_secs(5), || async {
        http_presence(&api, bob, bob).await.is_some_and(|p| p["status"] == "online")
    })
    .await;
    // Carol's change comes after bob's: had bob's been sent, alice would get it first.
    let (_carol_ws, _) = Ws::open(&system.ws(0), &carol).await;
    expect_presence(&mut alice_ws, &carol, "online").await;
    assert_eq!(http_presence(&api, &alice, bob).await, None, "the big group makes no contacts");
    // A socket opened now hears of the contacts online: carol, not bob.
    let (mut alice_again, _) = Ws::open_with_presence(&system.ws(0), &alice).await;
    expect_presence(&mut alice_again, &carol, "online").await;
    alice_again.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(http_presence(&api, &alice, &carol).await.expect("a contact")["status"], "online");

    let ack = alice_ws.send_message(1, &group, "hello-everyone", "hello, all 257").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    for ws in [&mut bob_ws, &mut last_ws] {
        let message = ws.expect("message").await;
        assert_eq!(message["message"]["body"], "hello, all 257", "{message}");
    }
    system.stop().await;
}
