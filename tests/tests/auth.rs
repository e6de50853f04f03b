//! Identity that holds up under attack: forged tokens are refused at every
//! door, keys rotate without logging anyone out, stolen refresh tokens burn the
//! device, revocation closes exactly that device's sockets, passwords are
//! stored as strong argon2id hashes, and guessing is rate-limited.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::auth::v1::{ListSigningKeysRequest, RetireSigningKeyRequest, RotateSigningKeyRequest};
use chat_system_tests::{Db, Device, System, Ws, on_both_databases};
use serde_json::{Value, json};

on_both_databases!(
    every_forged_or_invalid_token_is_refused_over_http_and_websocket,
    rotated_keys_verify_old_tokens_until_retired_and_survive_restarts,
    refresh_rotates_and_reusing_a_spent_token_revokes_the_device,
    logout_and_device_revocation_close_only_that_devices_sockets,
    password_hashes_are_strong_argon2id,
    rate_limits_answer_429_with_retry_after_and_recover,
    registration_enforces_username_and_password_rules,
    a_new_gateway_accepts_a_burst_of_valid_tokens,
);

fn now() -> i64 {
    chat_common::time::now_ms() / 1000
}

fn claims(device: &Device) -> Value {
    json!({
        "sub": device.user_id, "did": device.device_id, "iss": "chat-auth", "aud": "chat",
        "iat": now(), "nbf": now(), "exp": now() + 600, "jti": uuid::Uuid::new_v4().to_string(),
    })
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("a JWT").kid.expect("kid")
}

async fn auth_client(system: &System) -> AuthServiceClient<tonic::transport::Channel> {
    AuthServiceClient::connect(format!("http://{}", system.auth_addr)).await.expect("auth gRPC")
}

/// Asserts `token` is refused over HTTP, at the WebSocket upgrade, and in a first `auth` frame.
async fn assert_refused_everywhere(system: &System, label: &str, token: &str) {
    let (status, body) = system.api().get("/v1/users/me", Some(token)).await;
    assert_eq!(status, 401, "{label} over HTTP: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{label}");
    assert_eq!(Ws::refused_status(&system.ws(0), Some(token), None).await, 401, "{label} at the upgrade");
    let mut ws = Ws::connect(&system.ws(0)).await;
    ws.send_json(json!({ "type": "auth", "token": token })).await;
    assert_eq!(ws.expect_close().await, 4401, "{label} in an auth frame");
}

async fn every_forged_or_invalid_token_is_refused_over_http_and_websocket(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let kid = kid_of(&alice.access_token);
    let (_, jwks) = api.get("/.well-known/jwks.json", None).await;
    let public_x = jwks["keys"][0]["x"].as_str().expect("x").to_owned();

    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!("{}.{}.", b64(&json!({ "alg": "none", "typ": "JWT", "kid": kid })), b64(&claims(&alice)));
    let hs256 = |secret: &[u8]| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims(&alice), &jsonwebtoken::EncodingKey::from_secret(secret)).expect("hs256")
    };
    let hs256_raw_key = hs256(&URL_SAFE_NO_PAD.decode(&public_x).expect("x decodes"));
    let hs256_text_key = hs256(public_x.as_bytes());
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims(&alice);
        change(&mut c);
        c
    };
    let expired = system.sign_with_auth_key(None, &with(&|c| c["exp"] = json!(now() - 600))).await;
    let not_yet = system
        .sign_with_auth_key(
            None,
            &with(&|c| {
                c["nbf"] = json!(now() + 600);
                c["exp"] = json!(now() + 900);
            }),
        )
        .await;
    let no_exp = system
        .sign_with_auth_key(
            None,
            &with(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            }),
        )
        .await;
    let wrong_aud = system.sign_with_auth_key(None, &with(&|c| c["aud"] = json!("another-service"))).await;
    let wrong_iss = system.sign_with_auth_key(None, &with(&|c| c["iss"] = json!("someone-else"))).await;
    let unknown_kid = system.sign_with_auth_key(Some("no-such-key"), &claims(&alice)).await;
    let signature_start = alice.access_token.rfind('.').expect("three parts") + 1;
    let mut flipped = alice.access_token.clone().into_bytes();
    let middle = signature_start + 30;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");

    for (label, token) in [
        ("alg none", alg_none.as_str()),
        ("HS256 with the raw public key", hs256_raw_key.as_str()),
        ("HS256 with the JWKS x text", hs256_text_key.as_str()),
        ("expired", expired.as_str()),
        ("nbf in the future", not_yet.as_str()),
        ("no exp", no_exp.as_str()),
        ("wrong aud", wrong_aud.as_str()),
        ("wrong iss", wrong_iss.as_str()),
        ("unknown kid", unknown_kid.as_str()),
        ("one flipped signature byte", flipped.as_str()),
    ] {
        assert_refused_everywhere(&system, label, token).await;
    }

    // The control: a token signed the same way with honest claims is accepted everywhere.
    let honest = system.sign_with_auth_key(None, &claims(&alice)).await;
    assert_eq!(api.get("/v1/users/me", Some(&honest)).await.0, 200);
    let (_, ready) = Ws::open(&system.ws(0), &Device { access_token: honest, ..alice.clone() }).await;
    assert_eq!(ready["device_id"], alice.device_id.as_str());
    system.stop().await;
}

async fn rotated_keys_verify_old_tokens_until_retired_and_survive_restarts(db: Db) {
    let Some(mut system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let old_kid = kid_of(&alice.access_token);
    let mut auth = auth_client(&system).await;

    let rotated = auth.rotate_signing_key(RotateSigningKeyRequest {}).await.expect("rotate").into_inner();
    assert_ne!(rotated.kid, old_kid);
    assert!(rotated.signing);
    let newer = api.login("alice").await;
    assert_eq!(kid_of(&newer.access_token), rotated.kid, "the new key signs");
    assert_eq!(api.get("/v1/users/me", Some(&alice.access_token)).await.0, 200, "the old key still verifies");
    assert_eq!(api.get("/v1/users/me", Some(&newer.access_token)).await.0, 200);

    // An auth restart keeps both keys: nobody is logged out.
    system.restart_auth().await;
    assert_eq!(api.get("/v1/users/me", Some(&alice.access_token)).await.0, 200);
    assert_eq!(api.get("/v1/users/me", Some(&newer.access_token)).await.0, 200);
    let after_restart = api.login("alice").await;
    assert_eq!(kid_of(&after_restart.access_token), rotated.kid);

    let mut auth = auth_client(&system).await;
    let refused = auth
        .retire_signing_key(RetireSigningKeyRequest { kid: rotated.kid.clone() })
        .await
        .expect_err("the signing key cannot be retired");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    auth.retire_signing_key(RetireSigningKeyRequest { kid: old_kid.clone() }).await.expect("retire");

    // The gateway hears of the retirement and refuses the old key's tokens.
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.get("/v1/users/me", Some(&alice.access_token)).await.0 != 401 {
        assert!(Instant::now() < deadline, "a retired key's token was still accepted after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api.get("/v1/users/me", Some(&newer.access_token)).await.0, 200);
    let (_, jwks) = api.get("/.well-known/jwks.json", None).await;
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, vec![rotated.kid.as_str()]);
    let keys = auth.list_signing_keys(ListSigningKeysRequest {}).await.expect("list").into_inner().keys;
    let old = keys.iter().find(|k| k.kid == old_kid).expect("old key listed");
    assert!(old.retired_at_ms > 0 && !old.signing);
    system.stop().await;
}

async fn refresh_rotates_and_reusing_a_spent_token_revokes_the_device(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let phone = api.new_user("alice").await;
    let laptop = api.login("alice").await;
    let (mut phone_ws, _) = Ws::open(&system.ws(0), &phone).await;
    let (mut laptop_ws, _) = Ws::open(&system.ws(0), &laptop).await;

    let (status, fresh) = api.post("/v1/auth/refresh", None, json!({ "refresh_token": phone.refresh_token })).await;
    assert_eq!(status, 200, "{fresh}");
    let next_refresh = fresh["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next_refresh, phone.refresh_token, "rotated on use");
    assert!(fresh["expires_in"].as_i64().unwrap() > 0);
    assert_eq!(api.get("/v1/users/me", Some(fresh["access_token"].as_str().unwrap())).await.0, 200);

    // The spent token comes back: a thief or a replay. The whole device goes.
    let (status, body) = api.post("/v1/auth/refresh", None, json!({ "refresh_token": phone.refresh_token })).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(phone_ws.expect_close().await, 4401, "the device's socket closes");
    let (status, _) = api.post("/v1/auth/refresh", None, json!({ "refresh_token": next_refresh })).await;
    assert_eq!(status, 401, "the newest refresh token of the family is dead too");
    assert_eq!(api.get("/v1/users/me", Some(&phone.access_token)).await.0, 401);
    assert_eq!(api.get("/v1/users/me", Some(fresh["access_token"].as_str().unwrap())).await.0, 401);

    // The other device is untouched.
    laptop_ws.send_json(json!({ "type": "ping", "req": 1 })).await;
    assert_eq!(laptop_ws.expect("pong").await["req"], 1);
    assert_eq!(api.get("/v1/users/me", Some(&laptop.access_token)).await.0, 200);
    for bad in ["", "nonsense", &"x".repeat(500)] {
        let (status, _) = api.post("/v1/auth/refresh", None, json!({ "refresh_token": bad })).await;
        assert_eq!(status, 401);
    }
    system.stop().await;
}

async fn logout_and_device_revocation_close_only_that_devices_sockets(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let phone = api.new_user("alice").await;
    let laptop = api.login("alice").await;
    let tablet = api.login("alice").await;
    let bob = api.new_user("bob").await;
    let (mut phone_tab1, _) = Ws::open(&system.ws(0), &phone).await;
    let (mut phone_tab2, _) = Ws::open(&system.ws(0), &phone).await;
    let (mut laptop_ws, _) = Ws::open(&system.ws(0), &laptop).await;
    let (mut tablet_ws, _) = Ws::open(&system.ws(0), &tablet).await;

    let (status, listed) = api.get("/v1/devices", Some(&laptop.access_token)).await;
    assert_eq!(status, 200);
    let devices = listed["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3);
    assert!(devices.iter().any(|d| d["device_id"] == laptop.device_id.as_str() && d["current"] == true));
    assert!(devices.iter().all(|d| d["created_at"].is_string() && d["last_seen_at"].is_string()));

    let started = Instant::now();
    let (status, _) = api.post("/v1/auth/logout", Some(&phone.access_token), json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(phone_tab1.expect_close().await, 4401);
    assert_eq!(phone_tab2.expect_close().await, 4401, "every socket of the device");
    assert!(started.elapsed() < Duration::from_secs(1), "closed within a second: {:?}", started.elapsed());
    assert_eq!(api.get("/v1/users/me", Some(&phone.access_token)).await.0, 401);
    assert_eq!(Ws::refused_status(&system.ws(0), Some(&phone.access_token), None).await, 401);

    // Revoking another of my devices by id.
    let (status, _) = api
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{}", tablet.device_id),
            Some(&laptop.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(tablet_ws.expect_close().await, 4401);
    // Someone else's device is not mine to revoke.
    let (status, body) = api
        .request(reqwest::Method::DELETE, &format!("/v1/devices/{}", laptop.device_id), Some(&bob.access_token), None)
        .await;
    assert_eq!((status, body["error"]["code"].clone()), (404, Value::from("not_found")));

    laptop_ws.send_json(json!({ "type": "ping", "req": 3 })).await;
    assert_eq!(laptop_ws.expect("pong").await["req"], 3, "the laptop stays connected");
    let (_, listed) = api.get("/v1/devices", Some(&laptop.access_token)).await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1);
    system.stop().await;
}

async fn password_hashes_are_strong_argon2id(db: Db) {
    let Some(system) = System::start(db).await else { return };
    system.api().new_user("alice").await;

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&system.auth_db_url).await.expect("auth database");
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE username_lower = 'alice'")
        .fetch_one(&pool)
        .await
        .expect("hash");
    pool.close().await;
    assert!(!hash.contains("correct horse"), "the password is not stored");
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts[1], "argon2id", "{hash}");
    let params: std::collections::HashMap<&str, u32> =
        parts[3].split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, v.parse().expect("number"))).collect();
    assert!(params["m"] >= 19_456 && params["t"] >= 2 && params["p"] >= 1, "{hash}");

    // Timing is compared in tests/login_timing.rs, alone on the machine.
    system.stop().await;
}

async fn rate_limits_answer_429_with_retry_after_and_recover(db: Db) {
    let Some(system) = System::builder()
        .auth_config(|c| {
            c.login_failures_per_username = "3/1".parse().expect("rate");
            c.register_per_address = "3/1".parse().expect("rate");
        })
        .start(db)
        .await
    else {
        return;
    };
    let api = system.api();
    let post = |path: &'static str, body: Value| {
        let api = system.api();
        async move { api.request_with_headers(reqwest::Method::POST, path, None, Some(body)).await }
    };
    let register =
        |name: &str| post("/v1/auth/register", json!({ "username": name, "password": "correct horse battery" }));

    for name in ["ann", "ben", "cat"] {
        assert_eq!(register(name).await.0, 201);
    }
    let (status, headers, body) = register("dan").await;
    assert_eq!((status, body["error"]["code"].clone()), (429, Value::from("rate_limited")));
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(register("dan").await.0, 201, "recovers after Retry-After");

    let login = |password: &'static str| post("/v1/auth/login", json!({ "username": "ann", "password": password }));
    for _ in 0..3 {
        assert_eq!(login("wrong password!").await.0, 401);
    }
    let (status, headers, _) = login("correct horse battery").await;
    assert_eq!(status, 429, "locked even with the right password");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(login("correct horse battery").await.0, 200, "recovers");
    // Another username is not affected by ann's lock.
    assert_eq!(
        api.post("/v1/auth/login", None, json!({ "username": "ben", "password": "correct horse battery" })).await.0,
        200
    );
    system.stop().await;
}

async fn registration_enforces_username_and_password_rules(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let register = |username: &str, password: &str| {
        let body = json!({ "username": username, "password": password });
        let api = system.api();
        async move { api.post("/v1/auth/register", None, body).await }
    };
    for (username, password) in
        [("ab", "long enough"), ("has space", "long enough"), ("émile", "long enough"), ("bob", "short")]
    {
        let (status, body) = register(username, password).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (400, Value::from("invalid_argument")),
            "{username}: {body}"
        );
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(register("Alice", chat_system_tests::client::PASSWORD).await.0, 201);
    let (status, body) = register("alice", "another one").await;
    assert_eq!((status, body["error"]["code"].clone()), (409, Value::from("conflict")), "unique case-insensitively");
    let (status, found) = api.get("/v1/users/by-username/ALICE", Some(&api.login("alice").await.access_token)).await;
    assert_eq!((status, found["username"].clone()), (200, Value::from("Alice")));
    let (status, body) = api.post("/v1/auth/register", None, json!({ "username": "x" })).await;
    assert_eq!((status, body["error"]["code"].clone()), (400, Value::from("invalid_argument")), "missing field");
    system.stop().await;
}

/// A gateway that has just started fetches the signing keys once; sockets
/// arriving while it does wait for the keys instead of being refused.
async fn a_new_gateway_accepts_a_burst_of_valid_tokens(db: Db) {
    let Some(mut system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let fresh = system.start_gateway().await;
    let url = system.ws(fresh);
    let opened = futures::future::join_all((0..32).map(|_| Ws::open(&url, &alice))).await;
    assert_eq!(opened.len(), 32, "every socket got ready");
}
