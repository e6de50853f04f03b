//! Typing indicators: across gateways to the other members only, `stop` when
//! a `start` is not renewed within 6 s, a flood limited, never stored.

use std::time::{Duration, Instant};

use chat_system_tests::{Db, System, Ws};
use serde_json::{Value, json};

fn typing(conversation: &str, state: &str) -> Value {
    json!({ "type": "typing", "conversation_id": conversation, "state": state })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_members_expires_and_is_rate_limited() {
    // Typing touches no database; SQLite only stands in for the services' storage.
    let system = System::start_with_gateways(Db::Sqlite, 2).await.expect("sqlite needs no server");
    let api = system.api();
    let phone = api.new_user("alice").await;
    let laptop = api.login("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let conversation = api.direct(&phone, &bob).await;
    let (mut phone_ws, _) = Ws::open(&system.ws(0), &phone).await;
    let (mut laptop_ws, _) = Ws::open(&system.ws(0), &laptop).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(1), &bob).await;
    let (mut carol_ws, _) = Ws::open(&system.ws(1), &carol).await;
    let expected = |state: &str| json!({ "type": "typing", "conversation_id": conversation, "user_id": phone.user_id, "state": state });

    phone_ws.send_json(typing(&conversation, "start")).await;
    assert_eq!(bob_ws.expect("typing").await, expected("start"), "across gateways");
    phone_ws.send_json(typing(&conversation, "stop")).await;
    assert_eq!(bob_ws.expect("typing").await, expected("stop"));
    laptop_ws.expect_silence(Duration::from_millis(200)).await;
    carol_ws.expect_silence(Duration::from_millis(10)).await;

    // A start that is not renewed runs out after about 6 s.
    phone_ws.send_json(typing(&conversation, "start")).await;
    assert_eq!(bob_ws.expect("typing").await, expected("start"));
    let started = Instant::now();
    assert_eq!(bob_ws.expect("typing").await, expected("stop"));
    let lasted = started.elapsed();
    assert!(lasted >= Duration::from_millis(5500) && lasted < Duration::from_secs(8), "expired after {lasted:?}");

    // Not a member: refused. A flood: limited at the source.
    carol_ws.send_json(typing(&conversation, "start")).await;
    assert_eq!(carol_ws.expect("error").await["code"], "forbidden");
    for _ in 0..30 {
        phone_ws.send_json(typing(&conversation, "start")).await;
    }
    let mut refused = 0;
    for _ in 0..30 {
        let frame = phone_ws.next_json().await;
        if frame["code"] == "rate_limited" {
            refused += 1;
        }
        if refused >= 20 {
            break;
        }
    }
    assert!(refused >= 20, "most of the flood is refused ({refused})");
    let mut delivered = 0;
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), bob_ws.next_json()).await {
        assert_eq!(frame["type"], "typing");
        delivered += 1;
    }
    assert!((1..=6).contains(&delivered), "bob saw {delivered} typing frames from a flood of 30");
    system.stop().await;
}
