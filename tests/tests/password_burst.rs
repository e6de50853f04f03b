//! A burst of registrations and logins cannot exhaust auth's memory: argon2id
//! needs 19 MiB per hash, so auth hashes a bounded number at once, queues a
//! bounded number more and refuses the rest at once with 429 and
//! `Retry-After`. Auth runs as a process of its own here, so its peak
//! resident memory (`VmHWM`) can be read from /proc.

use chat_system_tests::client::{Api, PASSWORD};
use chat_system_tests::{Db, System, on_both_databases};
use serde_json::json;

on_both_databases!(a_burst_of_registrations_and_logins_keeps_auth_memory_bounded);

/// Requests in flight at once, each from its own client.
const CLIENTS: usize = 64;
const USERS_PER_CLIENT: usize = 4;
/// The target for auth's resident memory under any burst.
const PEAK_LIMIT_KIB: u64 = 256 * 1024;

/// The per-address limits would refuse this burst first (every client is
/// 127.0.0.1); the hash queue is small so the burst certainly overflows it.
const AUTH_ENV: &[(&str, &str)] = &[
    ("AUTH_LOGIN_RATE_PER_ADDRESS", "100000/0.001"),
    ("AUTH_REGISTER_RATE_PER_ADDRESS", "100000/0.001"),
    ("AUTH_HASH_QUEUE", "16"),
];

/// A `kB` field of /proc/<pid>/status.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the auth process's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Posts until the answer is `expected`, waiting out each refusal; every
/// refusal must be the documented one. Returns how many refusals it met.
async fn post_until(api: &Api, path: &str, body: serde_json::Value, expected: u16) -> usize {
    let mut refusals = 0;
    loop {
        let (status, headers, answer) =
            api.request_with_headers(reqwest::Method::POST, path, None, Some(body.clone())).await;
        if status == expected {
            return refusals;
        }
        assert_eq!(status, 429, "{path}: only success or a refusal, got {answer}");
        assert_eq!(answer["error"]["code"], "rate_limited", "{path}: {answer}");
        let wait: u64 = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a refusal carries Retry-After in seconds");
        assert!(wait >= 1, "Retry-After is at least a second");
        refusals += 1;
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    }
}

async fn a_burst_of_registrations_and_logins_keeps_auth_memory_bounded(db: Db) {
    let Some(system) = System::builder().auth_as_process(AUTH_ENV).start(db).await else { return };
    let pid = system.auth_pid().expect("auth runs as a process");
    let base = system.http(0);

    let clients = (0..CLIENTS).map(|client| {
        let api = Api::new(&base);
        tokio::spawn(async move {
            let usernames: Vec<String> = (0..USERS_PER_CLIENT).map(|n| format!("burst_{client}_{n}")).collect();
            let mut refusals = 0;
            for username in &usernames {
                let body = json!({ "username": username, "password": PASSWORD });
                refusals += post_until(&api, "/v1/auth/register", body, 201).await;
            }
            for username in &usernames {
                let body = json!({ "username": username, "password": PASSWORD });
                refusals += post_until(&api, "/v1/auth/login", body, 200).await;
            }
            refusals
        })
    });
    let mut refusals = 0;
    for client in futures::future::join_all(clients).await {
        refusals += client.expect("a client finishes");
    }

    let peak = status_kib(pid, "VmHWM:");
    let now = status_kib(pid, "VmRSS:");
    eprintln!("auth: peak {peak} KiB, now {now} KiB, {refusals} refusals");
    assert!(peak < PEAK_LIMIT_KIB, "auth's resident memory peaked at {peak} KiB");
    assert!(refusals > 0, "a burst of {CLIENTS} beyond the hash queue meets refusals");
}
