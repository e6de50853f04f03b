//! Answers of the HTTP API to requests no route serves: every one carries the
//! protocol's error body. Found while fuzzing the API (tests/suites/http_fuzz.sh).
//! The database plays no part: SQLite only.

use chat_system_tests::{System, within_limit};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_serve_gets_405_with_allow_and_the_error_body() {
    within_limit(async {
        let system = System::start_sqlite().await;
        let response = reqwest::Client::new()
            .put(format!("{}/v1/users/me", system.http(0)))
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(response.status(), 405);
        let allow = response.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(allow.contains("GET"), "Allow names the methods served: {allow:?}");
        let body: Value = response.json().await.expect("a JSON error body");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        system.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_utf8_gets_400_with_the_error_body() {
    within_limit(async {
        let system = System::start_sqlite().await;
        let api = system.api();
        let alice = api.new_user("alice").await;
        for path in ["/v1/users/%FF", "/v1/users/by-username/%FF%FE", "/v1/conversations/%C3/messages", "/%FF"] {
            let (status, body) = api.get(path, Some(&alice.access_token)).await;
            assert_eq!(
                (status, body["error"]["code"].clone()),
                (400, Value::from("invalid_argument")),
                "{path}: {body}"
            );
        }
        system.stop().await;
    })
    .await;
}
