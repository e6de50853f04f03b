//! One message, one trace: the five services run as processes exporting over
//! OTLP/gRPC to a receiver in the test; a message from alice to bob (offline,
//! with a webhook) must yield spans from the gateway, history, notification
//! and auth that share one trace id and hang from one root, with trace context
//! carried in NATS headers and gRPC metadata. No body reaches a span.

use std::collections::HashSet;
use std::time::Duration;

use chat_system_tests::otlp::{Collector, Span};
use chat_system_tests::processes::Processes;
use chat_system_tests::push::PushEndpoint;
use chat_system_tests::{NatsServer, Ws};
use serde_json::json;

const BODY: &str = "a body that must never reach a span";

/// Every hop of one send, by service.
const HOPS: [(&str, &str); 6] = [
    ("gateway", "gateway.receive"),
    ("gateway", "jetstream.publish"),
    ("gateway", "gateway.deliver"),
    ("history", "history.persist"),
    ("notification", "notification.decide"),
    ("notification", "notification.push"),
];

/// The pusher asks auth for the sender's name: auth's server span (named by
/// the gRPC method's path) in the trace shows context crossed gRPC.
const AUTH_METHODS: &str = "/chat.auth.v1.AuthService/";

/// Every hop, auth's included: each process exports on its own schedule, so
/// auth's span can reach the collector after the notification's last one.
fn has_every_hop(spans: &[Span]) -> bool {
    HOPS.iter().all(|(service, name)| spans.iter().any(|s| s.service == *service && s.name == *name))
        && spans.iter().any(|s| s.service == "auth" && s.name.starts_with(AUTH_METHODS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_across_the_services() {
    chat_system_tests::within_limit(async {
        let collector = Collector::start().await;
        let nats = NatsServer::start().await;
        let data = tempfile::tempdir().expect("temp dir");
        let env: Vec<(String, String)> = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("NOTIFICATION_ALLOW_HTTP_ENDPOINTS", "true".to_owned()),
            ("NOTIFICATION_ALLOW_PRIVATE_ENDPOINTS", "true".to_owned()),
            ("NOTIFICATION_COALESCE_MS", "200".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info,chat_gateway=debug".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let system = Processes::start(&nats, data.path(), &env).await;
        let api = system.api();
        let alice = api.new_user("alice").await;
        let bob = api.new_user("bob").await;
        let conversation = api.direct(&alice, &bob).await;
        let endpoint = PushEndpoint::start().await;
        let body = json!({ "type": "webhook", "url": endpoint.url("hook") });
        let (status, created) = api.post("/v1/push/subscriptions", Some(&bob.access_token), body).await;
        assert_eq!(status, 201, "{created}");

        let (mut ws, _) = Ws::open(&system.gateway.ws(), &alice).await;
        let ack = ws.send_message(1, &conversation, "traced", BODY).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        endpoint.wait_for("hook", 1).await;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let trace = loop {
            let spans = collector.spans();
            let receive = spans.iter().find(|s| s.name == "gateway.receive");
            if let Some(receive) = receive {
                let trace: Vec<Span> = spans.iter().filter(|s| s.trace_id == receive.trace_id).cloned().collect();
                if has_every_hop(&trace) {
                    break trace;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every hop reached the collector; got {:?}\ngateway log:\n{}",
                spans.iter().map(|s| (&s.service, &s.name)).collect::<Vec<_>>(),
                system.log("gateway")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        // One tree: a single root (the gateway's receive), every other span's
        // parent in the trace.
        let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
        let roots: Vec<&Span> = trace.iter().filter(|s| s.parent_span_id.is_empty()).collect();
        assert_eq!(roots.len(), 1, "one root: {roots:?}");
        assert_eq!((roots[0].service.as_str(), roots[0].name.as_str()), ("gateway", "gateway.receive"));
        for span in &trace {
            assert!(
                span.parent_span_id.is_empty() || ids.contains(span.parent_span_id.as_str()),
                "{} of {} hangs from a span outside the trace",
                span.name,
                span.service
            );
        }
        // Nothing of the body anywhere.
        for span in collector.spans() {
            for (key, value) in &span.attributes {
                assert!(!value.contains("must never reach"), "{key} of {} carries the body", span.name);
            }
        }

        // JSON log lines; the one written inside the send names its trace.
        let log = system.log("gateway");
        let lines: Vec<serde_json::Value> =
            log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
        let durable = lines.iter().find(|l| l["fields"]["message"] == "message durable").expect("the send was logged");
        assert_eq!(durable["trace_id"], roots[0].trace_id.as_str(), "{durable}");
        for service in ["gateway", "auth", "history", "presence", "notification"] {
            let log = system.log(service);
            for secret in [BODY, chat_system_tests::client::PASSWORD, &alice.access_token, &alice.refresh_token] {
                assert!(!log.contains(secret), "{service} logged {secret:.12}…");
            }
        }
        drop(system);
    })
    .await;
}
