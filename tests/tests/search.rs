//! Full-text search of one's own conversations (FTS5 on SQLite, PostgreSQL
//! text search): only conversations the caller is in, every word must match,
//! newest first, paged, hostile input harmless, edits and deletions followed.

use std::time::Duration;

use chat_system_tests::{Db, Device, System, on_both_databases};
use serde_json::{Value, json};

on_both_databases!(
    search_finds_only_my_messages_newest_first_and_follows_edits,
    a_search_with_control_characters_is_refused_as_invalid,
);

async fn search(system: &System, device: &Device, query: &str) -> (u16, Value) {
    system.api().get(&format!("/v1/search?{query}"), Some(&device.access_token)).await
}

fn bodies(found: &Value) -> Vec<String> {
    found["messages"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap().to_owned()).collect()
}

/// Polls until the search returns `expected` bodies (history is eventually consistent).
async fn search_until(system: &System, device: &Device, query: &str, expected: &[&str]) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, found) = search(system, device, query).await;
        assert_eq!(status, 200, "{found}");
        if bodies(&found) == expected {
            return found;
        }
        last = found;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("search {query:?} gave {last}, expected {expected:?}");
}

async fn search_finds_only_my_messages_newest_first_and_follows_edits(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let ab = api.direct(&alice, &bob).await;
    let ac = api.direct(&alice, &carol).await;
    let bc = api.direct(&bob, &carol).await;
    let send = |device: &Device, conversation: &str, id: &str, body: &str| {
        let api = system.api();
        let (token, path, body) = (
            device.access_token.clone(),
            format!("/v1/conversations/{conversation}/messages"),
            json!({ "client_msg_id": id, "body": body }),
        );
        async move {
            let (status, message) = api.post(&path, Some(&token), body).await;
            assert_eq!(status, 201, "{message}");
            message
        }
    };
    send(&alice, &ab, "1", "the quick brown fox").await;
    let lazy = send(&bob, &ab, "2", "Lazy dogs sleep").await;
    send(&alice, &ac, "3", "a secret fox for carol").await;
    send(&bob, &bc, "4", "bob and carol discuss the fox").await;
    let again = send(&bob, &ab, "5", "fox again").await;

    let found =
        search_until(&system, &alice, "q=fox", &["fox again", "a secret fox for carol", "the quick brown fox"]).await;
    assert!(found.get("next_page").is_none());
    search_until(&system, &bob, "q=FOX", &["fox again", "bob and carol discuss the fox", "the quick brown fox"]).await;
    search_until(&system, &alice, "q=quick%20fox", &["the quick brown fox"]).await;
    search_until(&system, &alice, &format!("q=fox&conversation_id={ab}"), &["fox again", "the quick brown fox"]).await;

    // Paging, newest first.
    let (_, first) = search(&system, &alice, "q=fox&limit=2").await;
    assert_eq!(bodies(&first), ["fox again", "a secret fox for carol"]);
    let page = first["next_page"].as_str().expect("a next page");
    let (_, second) = search(&system, &alice, &format!("q=fox&limit=2&page={page}")).await;
    assert_eq!(bodies(&second), ["the quick brown fox"]);
    assert!(second.get("next_page").is_none());

    // Search syntax in the input is just text.
    for hostile in ["%22OR*%20NEAR(", "fox%20OR%20dogs", "-fox", "*", "%27%3B%20DROP%20TABLE%20messages%3B--"] {
        let (status, found) = search(&system, &alice, &format!("q={hostile}")).await;
        assert_eq!(status, 200, "{hostile}: {found}");
    }
    search_until(&system, &alice, "q=fox", &["fox again", "a secret fox for carol", "the quick brown fox"]).await;

    // Edits and deletions are followed.
    let lazy_id = lazy["message_id"].as_str().unwrap();
    let (status, _) = api
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/conversations/{ab}/messages/{lazy_id}"),
            Some(&bob.access_token),
            Some(json!({ "body": "Lazy cats sleep" })),
        )
        .await;
    assert_eq!(status, 200);
    search_until(&system, &alice, "q=dogs", &[]).await;
    search_until(&system, &alice, "q=cats", &["Lazy cats sleep"]).await;
    let again_id = again["message_id"].as_str().unwrap();
    let (status, _) = api
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/conversations/{ab}/messages/{again_id}"),
            Some(&bob.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    search_until(&system, &alice, "q=again", &[]).await;

    // Bad input is refused clearly.
    for (query, status) in [
        ("q=", 400),
        ("q=fox&limit=51", 400),
        ("q=fox&page=nonsense", 400),
        (&*format!("q=fox&conversation_id={bc}"), 403),
    ] {
        let (got, body) = search(&system, &alice, query).await;
        assert_eq!(got, status, "{query}: {body}");
    }
    system.stop().await;
}

/// Found by schemathesis (tests/suites/http_fuzz.sh): a NUL in `q` ended the
/// quoted FTS5 string early on SQLite and is refused by PostgreSQL's text
/// type, and the search answered 500.
async fn a_search_with_control_characters_is_refused_as_invalid(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let conversation = api.direct(&alice, &bob).await;
    let (status, _) = api
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&alice.access_token),
            json!({ "client_msg_id": "m-1", "body": "lunch at noon" }),
        )
        .await;
    assert_eq!(status, 201);

    for q in ["lunch%00", "%00", "lun%1Bch", "lunch%7F"] {
        let (status, answer) = search(&system, &alice, &format!("q={q}")).await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (400, Value::from("invalid_argument")),
            "q={q}: {answer}"
        );
    }
    // Whitespace still separates words.
    search_until(&system, &alice, "q=lunch%09noon", &["lunch at noon"]).await;
    system.stop().await;
}
