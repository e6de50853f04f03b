//! What an operator relies on: every gRPC service answers `grpc.health.v1`
//! and reflection through a real `grpcurl`, and the gateway's health endpoints.

use chat_system_tests::{Db, System, grpcurl};
use serde_json::Value;

/// grpcurl's rendering of an empty message.
fn empty(answer: &str) -> bool {
    answer.split_whitespace().collect::<String>() == "{}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_health_and_reflection_through_grpcurl() {
    let system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let services = [
        (&system.auth_addr, "chat.auth.v1.AuthService"),
        (&system.history_addr, "chat.history.v1.HistoryService"),
        (&system.presence_addrs[0], "chat.presence.v1.PresenceService"),
        (&system.notification_addr, "chat.notification.v1.NotificationService"),
        (&system.media_addr, "chat.media.v1.MediaService"),
    ];
    let addrs: Vec<(String, &str)> = services.iter().map(|(a, s)| ((*a).clone(), *s)).collect();
    tokio::task::spawn_blocking(move || {
        for (addr, service) in &addrs {
            let (ok, listed) = grpcurl(&["-plaintext", addr, "list"]);
            assert!(ok && listed.contains(service) && listed.contains("grpc.health.v1.Health"), "{addr}: {listed}");
            let chat_services = listed.lines().filter(|l| l.starts_with("chat.")).count();
            assert_eq!(chat_services, 1, "{addr} advertises only what it serves: {listed}");
            let request = format!(r#"{{"service":"{service}"}}"#);
            let (ok, health) = grpcurl(&["-plaintext", "-d", &request, addr, "grpc.health.v1.Health/Check"]);
            assert!(ok && health.contains("SERVING"), "{addr}: {health}");
            let (ok, described) = grpcurl(&["-plaintext", addr, "describe", service]);
            assert!(ok, "{addr}: {described}");
        }
    })
    .await
    .expect("grpcurl checks");

    // A real call through reflection: register, then look the user up.
    let auth = system.auth_addr.clone();
    let user_id = tokio::task::spawn_blocking(move || {
        let (ok, created) = grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"username":"opsuser","password":"long enough"}"#,
            &auth,
            "chat.auth.v1.AuthService/Register",
        ]);
        assert!(ok, "{created}");
        let (ok, found) = grpcurl(&[
            "-plaintext",
            "-d",
            r#"{"username":"OPSUSER"}"#,
            &auth,
            "chat.auth.v1.AuthService/GetUserByUsername",
        ]);
        assert!(ok && found.contains("\"username\": \"opsuser\""), "{found}");
        let (ok, refused) =
            grpcurl(&["-plaintext", "-d", r#"{"username":"x"}"#, &auth, "chat.auth.v1.AuthService/GetUserByUsername"]);
        assert!(!ok && refused.contains("InvalidArgument"), "{refused}");
        found.split('"').skip_while(|part| *part != "userId").nth(2).expect("a user id").to_owned()
    })
    .await
    .expect("grpcurl calls");

    // One call through reflection on each of the other services.
    let (history, presence, notification) =
        (system.history_addr.clone(), system.presence_addrs[0].clone(), system.notification_addr.clone());
    tokio::task::spawn_blocking(move || {
        let user = format!(r#"{{"user_id":"{user_id}"}}"#);
        let (ok, listed) =
            grpcurl(&["-plaintext", "-d", &user, &history, "chat.history.v1.HistoryService/ListConversations"]);
        assert!(ok && empty(&listed), "a new user has no conversations: {listed}");
        let request = format!(r#"{{"caller_id":"{user_id}","user_ids":["{user_id}"]}}"#);
        let (ok, seen) =
            grpcurl(&["-plaintext", "-d", &request, &presence, "chat.presence.v1.PresenceService/GetPresence"]);
        assert!(ok && seen.contains("\"status\": \"PRESENCE_STATUS_OFFLINE\""), "{seen}");
        let (ok, pending) = grpcurl(&[
            "-plaintext",
            "-d",
            &user,
            &notification,
            "chat.notification.v1.NotificationService/ListPending",
        ]);
        assert!(ok && empty(&pending), "nothing waits for a new user: {pending}");
    })
    .await
    .expect("grpcurl calls");

    let api = system.api();
    assert_eq!(api.get("/healthz", None).await.0, 200);
    let (status, ready) = api.get("/readyz", None).await;
    assert_eq!((status, ready["status"].clone()), (200, Value::from("ready")));
    let (status, jwks) = api.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    let (status, missing) = api.get("/v1/nope", None).await;
    assert_eq!((status, missing["error"]["code"].clone()), (404, Value::from("not_found")));
    system.stop().await;
}

/// Health follows the dependencies: with nats-server gone, the gateway's
/// `/readyz` and every service's `grpc.health.v1` say so; back when it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_nats() {
    let mut system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let services = [
        (system.auth_addr.clone(), "chat.auth.v1.AuthService"),
        (system.history_addr.clone(), "chat.history.v1.HistoryService"),
        (system.presence_addrs[0].clone(), "chat.presence.v1.PresenceService"),
        (system.notification_addr.clone(), "chat.notification.v1.NotificationService"),
        (system.media_addr.clone(), "chat.media.v1.MediaService"),
    ];
    let statuses = move || {
        let services = services.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                services
                    .iter()
                    .map(|(addr, service)| {
                        let request = format!(r#"{{"service":"{service}"}}"#);
                        let (_, answer) = grpcurl(&["-plaintext", "-d", &request, addr, "grpc.health.v1.Health/Check"]);
                        if answer.contains("NOT_SERVING") {
                            "NOT_SERVING"
                        } else if answer.contains("SERVING") {
                            "SERVING"
                        } else {
                            "?"
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .expect("grpcurl")
        }
    };
    let api = system.api();
    let wait_for = |ready: u16, status: &'static str| {
        let statuses = statuses.clone();
        let api = &api;
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let (code, _) = api.get("/readyz", None).await;
                let health = statuses().await;
                if code == ready && health.iter().all(|s| *s == status) {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "readyz {code}, health {health:?}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    wait_for(200, "SERVING").await;
    system.nats.kill().await;
    wait_for(503, "NOT_SERVING").await;
    system.nats.restart().await;
    wait_for(200, "SERVING").await;
    system.stop().await;
}

/// Parses Prometheus text exposition: every sample line is `name{labels} value`
/// with a numeric value; returns (series, value) pairs.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            assert!(matches!(words.first(), Some(&"HELP" | &"TYPE" | &"EOF")), "bad comment line: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.push((series.to_owned(), value));
    }
    samples
}

fn value_of(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {series} among {samples:?}"))
}

/// Every service serves Prometheus metrics, and they move with traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_metrics_that_move_with_traffic() {
    let system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let scrape = |service: &'static str| {
        let addr = system.metrics_addrs[service];
        async move {
            let response = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics answer");
            assert_eq!(response.status(), 200);
            let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(content_type.starts_with("text/plain"), "{content_type}");
            parse_prometheus(&response.text().await.unwrap())
        }
    };
    for service in ["gateway", "auth", "history", "presence", "notification"] {
        scrape(service).await;
    }

    // Traffic: two users, a message to an offline one, then to an online one.
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (mut alice_ws, _) = chat_system_tests::Ws::open(&system.ws(0), &alice).await;
    let ack = alice_ws.send_message(1, &conversation, "m1", "while bob is away").await;
    assert_eq!(ack["type"], "ack");
    api.wait_for_history(&alice, &conversation, 1).await;
    let (mut bob_ws, _) = chat_system_tests::Ws::open(&system.ws(0), &bob).await;
    alice_ws.send_message(2, &conversation, "m2", "hi bob").await;
    bob_ws.expect("message").await;

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let gateway = scrape("gateway").await;
        let auth = scrape("auth").await;
        let history = scrape("history").await;
        let presence = scrape("presence").await;
        let notification = scrape("notification").await;
        let moved = value_of(&gateway, r#"gateway_frames_in_total{type="send"}"#) >= 2.0
            && value_of(&gateway, "gateway_frames_out_total") >= 4.0
            && value_of(&gateway, "gateway_send_to_ack_seconds_count") >= 2.0
            && value_of(&gateway, "gateway_fan_out_seconds_count") >= 2.0
            && value_of(&gateway, "gateway_connections") >= 1.0
            && value_of(&auth, r#"auth_logins_total{outcome="ok"}"#) >= 2.0
            && value_of(&history, "history_ingest_batch_size_count") >= 1.0
            && value_of(&history, r#"jetstream_consumer_pending{consumer="history"}"#) >= 0.0
            && value_of(&presence, r#"presence_announced_total{status="online"}"#) >= 2.0
            && value_of(&notification, "notification_queued_total") >= 1.0
            && value_of(&notification, r#"jetstream_consumer_pending{consumer="pusher"}"#) >= 0.0;
        if moved {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics did not move:\n{gateway:?}\n{presence:?}\n{notification:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    system.stop().await;
}

/// An upgrade keeps history's place in the stream: a consumer made by an
/// earlier version (one filter per subject kind) is updated in place to read
/// the whole stream, and what it had not stored yet is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_takes_over_a_consumer_made_by_an_earlier_version() {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use prost::Message as _;

    let nats = chat_system_tests::NatsServer::start().await;
    let js = async_nats::jetstream::new(chat_common::nats::connect(&nats.url(), "upgrade-test").await.unwrap());
    let stream = chat_common::nats::chat_stream(&js, &Default::default()).await.unwrap();
    stream
        .create_consumer(pull::Config {
            durable_name: Some(chat_history::CONSUMER.to_owned()),
            filter_subjects: ["msg", "read", "edit"].iter().map(|kind| format!("chat.conv.*.{kind}")).collect(),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let conversation = uuid::Uuid::now_v7().to_string();
    for seq in 1..=3 {
        let message = chat_proto::events::v1::Message {
            conversation_id: conversation.clone(),
            message_id: uuid::Uuid::now_v7().to_string(),
            seq,
            sender_id: uuid::Uuid::now_v7().to_string(),
            sender_device_id: "d".to_owned(),
            client_msg_id: format!("c-{seq}"),
            body: "hello".to_owned(),
            sent_at_ms: 1,
            ..Default::default()
        };
        let subject = chat_common::nats::message_subject(&conversation);
        js.publish(subject, message.encode_to_vec().into()).await.unwrap().await.unwrap();
    }

    let dir = std::env::temp_dir().join(format!("upgrade-test-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}", dir.join("history.db").display());
    let history = chat_history::App::build(chat_history::Config::local(&url, &nats.url())).await.unwrap();
    let shutdown = chat_common::shutdown::CancellationToken::new();
    let running = tokio::spawn(history.run(shutdown.clone()));
    let info = loop {
        let info = stream.consumer_info(chat_history::CONSUMER).await.unwrap();
        if info.ack_floor.stream_sequence >= 3 {
            break info;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(info.config.filter_subject, chat_common::nats::CHAT_SUBJECTS);
    assert!(info.config.filter_subjects.is_empty(), "{:?}", info.config.filter_subjects);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `NATS_URL` may name a cluster's servers, comma-separated: a service
/// connects through one that answers, whichever order they come in. A list
/// with an empty entry is refused with the reason, not half-used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_url_may_list_several_servers() {
    let nats = chat_system_tests::NatsServer::start().await;
    let nobody = chat_system_tests::ports::free_addr();
    for urls in [format!("nats://{nobody}, {}", nats.url()), format!("{},nats://{nobody}", nats.url())] {
        let client = chat_common::nats::connect(&urls, "test").await.unwrap_or_else(|e| panic!("{urls}: {e}"));
        client.flush().await.expect("a round trip through the live server");
    }
    let refused = chat_common::nats::connect(&format!("{},,nats://{nobody}", nats.url()), "test")
        .await
        .expect_err("an empty entry is refused");
    assert!(refused.to_string().contains("an empty entry"), "{refused}");
}
