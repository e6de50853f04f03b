//! What an operator relies on: every gRPC service answers `grpc.health.v1`
//! and reflection through a real `grpcurl`, and the gateway's health endpoints.

use std::process::Command;

use chat_system_tests::{Db, System, workspace_root};
use serde_json::Value;

fn grpcurl(args: &[&str]) -> (bool, String) {
    let binary = std::env::var_os("GRPCURL_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin/grpcurl"));
    assert!(binary.exists(), "grpcurl not found at {}: run scripts/install-tools.sh", binary.display());
    let output = Command::new(binary).args(args).output().expect("grpcurl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_health_and_reflection_through_grpcurl() {
    let system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
    let services = [
        (&system.auth_addr, "chat.auth.v1.AuthService"),
        (&system.history_addr, "chat.history.v1.HistoryService"),
        (&system.presence_addr, "chat.presence.v1.PresenceService"),
        (&system.notification_addr, "chat.notification.v1.NotificationService"),
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
    tokio::task::spawn_blocking(move || {
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
