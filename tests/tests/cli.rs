//! The `chat` command-line client, driven as a process against a whole
//! system, as a person or a script would use it: registering and logging in
//! (credentials kept 0600), chatting, reading, tailing from a stored cursor,
//! devices, blocks, mutes and reports; and each way it can fail, with one
//! line on stderr and the exit code scripts test (1 for the server or
//! network, 2 for the command line). Each client has a config directory of
//! its own (`CHAT_CONFIG_DIR`).

use std::time::Duration;

use chat_system_tests::chat_cli::{COMMAND_TIMEOUT, ChatCli, SETTLE, mode};
use chat_system_tests::client::PASSWORD;
use chat_system_tests::{Db, System, on_both_databases};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

type Chat = ChatCli;

/// Puts credentials in place as if a login had stored them.
fn set_credentials(chat: &Chat, credentials: &Value) {
    std::fs::write(chat.file("credentials.json"), credentials.to_string()).expect("write credentials");
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    let line = tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line()).await.expect("a line in time");
    line.expect("stdout readable").expect("a line before the end")
}

/// The exit code of a long-running `chat` that should end by itself now.
async fn exit_code(child: &mut Child) -> Option<i32> {
    tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await.expect("chat ends in time").expect("wait").code()
}

fn bodies(page: &Value) -> Vec<&str> {
    page["messages"].as_array().expect("messages").iter().map(|m| m["body"].as_str().unwrap_or_default()).collect()
}

on_both_databases!(
    people_register_log_in_chat_read_and_log_out_from_the_command_line,
    tail_catches_up_from_its_stored_cursor_then_follows_live_and_ends_cleanly,
    devices_blocks_mutes_and_reports_from_the_command_line,
    every_failure_is_one_line_on_stderr_with_the_exit_code_scripts_test,
);

async fn people_register_log_in_chat_read_and_log_out_from_the_command_line(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let (alice, bob) = (Chat::new(&system), Chat::new(&system));

    // Registered and logged in; the credentials are the user's alone.
    let said = alice.register("alice").await;
    assert!(said.starts_with(&format!("registered and logged in as alice on {}", system.http(0))), "{said}");
    assert_eq!(mode(&alice.file("credentials.json")), 0o600);
    assert_eq!(mode(&alice.dir), 0o700);
    let credentials = alice.credentials();
    for field in ["server", "user_id", "username", "device_id", "access_token", "refresh_token"] {
        assert!(credentials[field].as_str().is_some_and(|v| !v.is_empty()), "{field} in {credentials}");
    }
    let token = credentials["access_token"].as_str().unwrap();
    assert!(!said.contains(token) && !said.contains(PASSWORD), "no secrets on stdout: {said}");
    let shown = bob
        .run_with(&["register", &system.http(0), "bob", "--json"], &[("CHAT_PASSWORD", PASSWORD)], None)
        .await
        .json();
    assert_eq!(shown["username"], "bob");
    assert!(shown.get("access_token").is_none() && shown.get("refresh_token").is_none(), "{shown}");

    // whoami, both ways.
    let me = alice.run(&["whoami"]).await.ok();
    assert!(me.starts_with(&format!("alice on {} (user {}", system.http(0), credentials["user_id"].as_str().unwrap())));
    let me = alice.run(&["whoami", "--json"]).await.json();
    assert_eq!(
        (&me["username"], &me["user_id"], &me["device_id"]),
        (&json!("alice"), &credentials["user_id"], &credentials["device_id"])
    );

    // A direct message starts the conversation; send adds to it.
    let first = alice.run(&["--json", "dm", "bob", "hello", "bob"]).await.json();
    assert_eq!((first["seq"].as_u64(), first["body"].as_str()), (Some(1), Some("hello bob")), "{first}");
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(alice.run(&["send", &conversation, "are", "you", "there?"]).await.ok(), "sent #2\n");
    let said = alice.run(&["dm", "bob", "--", "--still", "here"]).await.ok();
    assert_eq!(said, format!("sent #3 to bob (conversation {conversation})\n"));

    // Bob's list: who it is with, what is unread, the last message.
    let list = bob.poll_json(&["conversations"], |l| l["conversations"][0]["unread_count"] == 3).await;
    let listed = &list["conversations"][0];
    assert_eq!(
        (&listed["conversation_id"], &listed["kind"], &listed["name"]),
        (&json!(conversation), &json!("direct"), &json!("alice"))
    );
    assert_eq!((&listed["muted"], &listed["last_message"]["body"]), (&json!(false), &json!("--still here")));
    assert_eq!(listed["last_message"]["sender_username"], "alice");
    let lines = bob.run(&["conversations"]).await.ok();
    let line = lines.lines().find(|l| l.starts_with(&conversation)).unwrap_or_else(|| panic!("{lines}"));
    assert!(line.contains("direct") && line.contains("alice") && line.contains("3 unread"), "{line}");
    assert!(line.ends_with("alice: --still here") && !line.contains("muted"), "{line}");

    // History: oldest first, with names; a smaller page says how to go back.
    let page = bob.poll_json(&["history", &conversation], |p| bodies(p).len() == 3).await;
    assert_eq!(bodies(&page), ["hello bob", "are you there?", "--still here"]);
    assert!(page["messages"].as_array().unwrap().iter().all(|m| m["sender_username"] == "alice"), "{page}");
    let text = bob.run(&["history", &conversation]).await.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, (seq, body)) in lines.iter().zip([(1, "hello bob"), (2, "are you there?"), (3, "--still here")]) {
        assert!(line.starts_with(&format!("#{seq} ")) && line.ends_with(&format!(" alice: {body}")), "{line}");
    }
    let text = bob.run(&["history", &conversation, "--limit", "1"]).await.ok();
    assert_eq!(
        text.lines().nth(1),
        Some(format!("(older messages: chat history {conversation} --before 3)").as_str()),
        "{text}"
    );
    let older = bob.run(&["history", &conversation, "--limit=2", "--before", "3", "--json"]).await.json();
    assert_eq!((bodies(&older), &older["has_more"]), (vec!["hello bob", "are you there?"], &json!(false)));

    // Search, in all of bob's conversations and in one.
    let found = bob.poll_json(&["search", "there"], |r| bodies(r).len() == 1).await;
    assert_eq!(found["messages"][0]["sender_username"], "alice");
    let text = bob.run(&["search", "THERE", "--conversation", &conversation]).await.ok();
    assert!(
        text.starts_with(&format!("{conversation} #2 ")) && text.trim_end().ends_with("alice: are you there?"),
        "{text}"
    );
    assert_eq!(bob.run(&["search", "nowhere"]).await.ok(), "no messages found\n");

    // A group, named by its title in the list.
    let said = alice.run(&["group", "create", "book club", "bob"]).await.ok();
    assert!(said.starts_with("created group \"book club\" ") && said.ends_with(" with bob\n"), "{said}");
    let group = said.split_whitespace().nth(4).expect("the group's id").to_owned();
    let list = bob.poll_json(&["conversations"], |l| l["conversations"].as_array().unwrap().len() == 2).await;
    let listed = list["conversations"].as_array().unwrap().iter().find(|c| c["conversation_id"] == group.as_str());
    assert_eq!(listed.map(|c| (&c["kind"], &c["name"])), Some((&json!("group"), &json!("book club"))), "{list}");
    bob.poll_json(&["history", &group], |p| bodies(p).len() == 1).await;
    let text = bob.run(&["history", &group]).await.ok();
    assert!(text.starts_with("#1 ") && text.ends_with(" * alice created the group\n"), "{text}");

    // Logging out ends the device on the server and forgets it here.
    assert_eq!(alice.run(&["logout"]).await.ok(), "logged out\n");
    assert!(!alice.file("credentials.json").exists());
    let deadline = tokio::time::Instant::now() + SETTLE;
    while system.api().get("/v1/users/me", Some(token)).await.0 != 401 {
        assert!(tokio::time::Instant::now() < deadline, "the device is still logged in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alice.run(&["whoami"]).await.failed(1), "chat: not logged in; run `chat login`");
    let said = alice.run_with(&["login", &system.http(0), "ALICE"], &[("CHAT_PASSWORD", PASSWORD)], None).await.ok();
    assert!(said.starts_with("logged in as alice on "), "the name as the server spells it: {said}");
    assert_eq!(mode(&alice.file("credentials.json")), 0o600);
    system.stop().await;
}

async fn tail_catches_up_from_its_stored_cursor_then_follows_live_and_ends_cleanly(db: Db) {
    let Some(mut system) = System::start(db).await else { return };
    let (alice, bob) = (Chat::new(&system), Chat::new(&system));
    alice.register("alice").await;
    bob.register("bob").await;
    let conversation =
        alice.run(&["--json", "dm", "bob", "zero"]).await.json()["conversation_id"].as_str().unwrap().to_owned();
    let send = async |text: &str| alice.run(&["send", &conversation, text]).await.ok();

    // The first tail has no cursor: it goes live from its start.
    let (mut tail, mut lines) = bob.spawn(&["tail", &conversation, "--count", "1"]);
    assert_eq!(next_line(&mut lines).await, "tailing alice; Ctrl-C to stop");
    send("one").await;
    let line = next_line(&mut lines).await;
    assert!(line.starts_with("#2 ") && line.ends_with(" alice: one"), "{line}");
    assert_eq!(exit_code(&mut tail).await, Some(0), "ends after --count");
    assert_eq!(lines.next_line().await.unwrap(), None, "nothing more printed");
    assert_eq!(mode(&bob.file("cursors.json")), 0o600);

    // Sent while no tail ran: caught up from the stored cursor, then live.
    send("two").await;
    send("three").await;
    let (mut tail, mut lines) = bob.spawn(&["--json", "tail", &conversation, "--count", "4"]);
    let mut frames = Vec::new();
    for _ in 0..2 {
        frames.push(serde_json::from_str::<Value>(&next_line(&mut lines).await).expect("a JSON line"));
    }
    send("four").await;
    frames.push(serde_json::from_str(&next_line(&mut lines).await).expect("a JSON line"));
    let four = &frames[2]["message"];
    let api = system.api();
    let alice_device = api.login("alice").await;
    let edit = json!({ "body": "four!" });
    let path = format!("/v1/conversations/{conversation}/messages/{}", four["message_id"].as_str().unwrap());
    let (status, _) = api.request(reqwest::Method::PATCH, &path, Some(&alice_device.access_token), Some(edit)).await;
    assert_eq!(status, 200);
    frames.push(serde_json::from_str(&next_line(&mut lines).await).expect("a JSON line"));
    assert_eq!(exit_code(&mut tail).await, Some(0));
    let seen: Vec<(&str, &str, &str)> = frames
        .iter()
        .map(|f| {
            let m = &f["message"];
            (f["type"].as_str().unwrap(), m["body"].as_str().unwrap(), m["sender_username"].as_str().unwrap())
        })
        .collect();
    let expected = [("message", "two", "alice"), ("message", "three", "alice"), ("message", "four", "alice")];
    assert_eq!(seen[..3], expected, "in order, once, nothing before the cursor");
    assert_eq!(seen[3], ("message_edited", "four!", "alice"));

    // Nothing new: a tail shows nothing again, and ends at its timeout.
    let ran = bob.run(&["tail", &conversation, "--timeout", "1"]).await;
    assert_eq!(ran.ok(), "tailing alice; Ctrl-C to stop\n");

    // SIGTERM ends a tail cleanly.
    let (mut tail, mut lines) = bob.spawn(&["tail", &conversation]);
    assert_eq!(next_line(&mut lines).await, "tailing alice; Ctrl-C to stop");
    let pid = tail.id().expect("running").to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    assert_eq!(exit_code(&mut tail).await, Some(0), "a clean end on SIGTERM");

    // The gateway restarts under a tail: it connects again from its cursor,
    // and what was sent meanwhile is shown once.
    let (mut tail, mut lines) = bob.spawn(&["tail", &conversation, "--count", "2"]);
    assert_eq!(next_line(&mut lines).await, "tailing alice; Ctrl-C to stop");
    let addr = system.gateway_addr(0);
    system.stop_gateway(0).await;
    system.restart_gateway(0, addr).await;
    send("five").await;
    send("six").await;
    let (five, six) = (next_line(&mut lines).await, next_line(&mut lines).await);
    assert!(five.ends_with(" alice: five") && six.ends_with(" alice: six"), "{five} / {six}");
    assert_eq!(exit_code(&mut tail).await, Some(0));
    let mut said = String::new();
    tail.stderr.take().expect("stderr").read_to_string(&mut said).await.expect("stderr readable");
    assert!(said.contains("chat: note: the server closed the connection (1001"), "{said}");

    // A stored cursor the server does not know: a note, then live from now.
    let cursors = bob.file("cursors.json");
    let mut stored: Value = serde_json::from_slice(&std::fs::read(&cursors).expect("cursors")).expect("JSON");
    for (_, by_conversation) in stored.as_object_mut().unwrap() {
        by_conversation[&conversation] = json!("bm90LWEtY3Vyc29y");
    }
    std::fs::write(&cursors, stored.to_string()).expect("write cursors");
    let ran = bob.run(&["tail", &conversation, "--timeout", "1"]).await;
    assert_eq!((ran.code, ran.stdout.as_str()), (Some(0), "tailing alice; Ctrl-C to stop\n"), "{ran:?}");
    assert_eq!(ran.stderr, "chat: note: invalid_argument: unknown or malformed cursor; delivering from now\n");
    let fresh = bob.run(&["tail", &conversation, "--timeout", "1"]).await;
    assert_eq!(fresh.ok(), "tailing alice; Ctrl-C to stop\n", "the fresh cursor was kept");

    // A blocked sender's message, caught up: hidden.
    assert_eq!(bob.run(&["block", "alice"]).await.ok(), "blocked alice\n");
    send("secret").await;
    let text = bob.run(&["tail", &conversation, "--count", "1"]).await.ok();
    let line = text.lines().nth(1).unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("#8 ") && line.ends_with(" alice: (hidden: from a blocked user)"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    system.stop().await;
}

async fn devices_blocks_mutes_and_reports_from_the_command_line(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let (alice, bob) = (Chat::new(&system), Chat::new(&system));
    alice.register("alice").await;
    bob.register("bob").await;
    let phone = system.api().login("alice").await;

    // Devices: this one marked, the other revoked.
    let text = alice.run(&["devices"]).await.ok();
    assert_eq!(text.lines().count(), 2, "{text}");
    let this = alice.credentials()["device_id"].as_str().unwrap().to_owned();
    let line = text.lines().find(|l| l.starts_with(&this)).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("chat CLI") && line.ends_with("(this device)"), "{line}");
    let devices = alice.run(&["--json", "devices"]).await.json();
    let current: Vec<&Value> = devices["devices"].as_array().unwrap().iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["device_id"], this.as_str());
    let said = alice.run(&["devices", "revoke", &phone.device_id]).await.ok();
    assert_eq!(said, format!("revoked device {}\n", phone.device_id));
    let devices = alice.run(&["devices", "--json"]).await.json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");

    // Blocks: listed by name, and lifted.
    let bob_id = bob.credentials()["user_id"].as_str().unwrap().to_owned();
    let conversation =
        bob.run(&["--json", "dm", "alice", "hi", "alice"]).await.json()["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(alice.run(&["block", "bob"]).await.ok(), "blocked bob\n");
    let blocks = alice.run(&["blocks", "--json"]).await.json();
    assert_eq!((&blocks["blocks"][0]["user_id"], &blocks["blocks"][0]["username"]), (&json!(bob_id), &json!("bob")));
    let text = alice.run(&["blocks"]).await.ok();
    assert!(text.starts_with("bob  blocked 20") && text.lines().count() == 1, "{text}");
    bob.run(&["send", &conversation, "secret", "plan"]).await.ok();
    let page = alice.poll_json(&["history", &conversation], |p| bodies(p).len() == 2).await;
    assert_eq!(page["messages"][1]["hidden"], true);
    let text = alice.run(&["history", &conversation]).await.ok();
    assert!(text.lines().nth(1).unwrap().ends_with(" bob: (hidden: from a blocked user)"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    let unblocked = alice.run(&["unblock", "bob", "--json"]).await.json();
    assert_eq!(unblocked, json!({ "user_id": bob_id, "username": "bob", "blocked": false }));
    assert_eq!(alice.run(&["blocks"]).await.ok(), "nobody is blocked\n");
    let text = alice.run(&["history", &conversation]).await.ok();
    assert!(text.lines().nth(1).unwrap().ends_with(" bob: secret plan"), "{text}");

    // Mute: shown in the list, both ways, until unmuted.
    assert_eq!(alice.run(&["mute", &conversation]).await.ok(), format!("muted {conversation}\n"));
    let text = alice.run(&["conversations"]).await.ok();
    assert!(text.lines().next().unwrap().contains("  muted  "), "{text}");
    assert_eq!(alice.run(&["--json", "conversations"]).await.json()["conversations"][0]["muted"], true);
    assert_eq!(alice.run(&["unmute", &conversation, "--json"]).await.json()["muted"], false);
    assert_eq!(alice.run(&["--json", "conversations"]).await.json()["conversations"][0]["muted"], false);
    assert!(!alice.run(&["conversations"]).await.ok().contains("muted"));

    // Reports: kept once; one's own message is refused.
    let message_id = page["messages"][1]["message_id"].as_str().unwrap().to_owned();
    let said = alice.run(&["report", &conversation, &message_id, "spam", "and", "threats"]).await.ok();
    assert!(said.starts_with(&format!("reported message {message_id} (report ")), "{said}");
    let again = alice.run(&["--json", "report", &conversation, &message_id, "again"]).await.json();
    assert!(said.contains(again["report_id"].as_str().unwrap()), "the first report: {again} {said}");
    let own = bob.run(&["report", &conversation, &message_id, "mine"]).await.failed(1);
    assert_eq!(own, "chat: invalid_argument: you cannot report your own message");
    system.stop().await;
}

async fn every_failure_is_one_line_on_stderr_with_the_exit_code_scripts_test(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let alice = Chat::new(&system);
    let server = system.http(0);

    // The command line itself: exit 2, nothing sent.
    assert!(alice.run(&["frobnicate"]).await.failed(2).contains("unknown command `frobnicate`"));
    assert!(alice.run(&["send"]).await.failed(2).contains("needs <conversation-id>"));
    assert!(alice.run(&["history", "not-a-uuid"]).await.failed(2).contains("'not-a-uuid' is not a conversation id"));
    assert!(alice.run(&["whoami", "--limit", "3"]).await.failed(2).contains("--limit does not apply"));
    let no_password = alice.run(&["login", &server, "alice"]).await.failed(2);
    assert!(no_password.contains("--password-stdin") && no_password.contains("CHAT_PASSWORD"), "{no_password}");
    let as_argument = alice.run(&["login", &server, "alice", "--password", "hunter2hunter2"]).await.failed(2);
    assert!(as_argument.contains("unknown option --password") && !as_argument.contains("hunter2"), "{as_argument}");
    let usage = alice.run(&["help"]).await.ok();
    assert!(usage.starts_with("chat: a command-line client") && usage.contains("usage: chat"), "{usage}");
    assert_eq!(alice.run(&["tail", "--help"]).await.ok(), usage);

    // Not logged in.
    assert_eq!(alice.run(&["whoami"]).await.failed(1), "chat: not logged in; run `chat login`");
    assert_eq!(alice.run(&["--json", "conversations"]).await.failed(1), "chat: not logged in; run `chat login`");

    // The server says no: its code and message; no password repeated.
    alice.register("alice").await;
    let before = alice.credentials();
    let wrong =
        alice.run_with(&["login", &server, "alice"], &[("CHAT_PASSWORD", "not the password")], None).await.failed(1);
    assert!(wrong.starts_with("chat: unauthorized: "), "{wrong}");
    assert!(!wrong.contains("not the password"));
    assert_eq!(alice.credentials(), before, "a failed login keeps the device that was logged in");
    let nobody = alice.run(&["dm", "nobody", "hi"]).await.failed(1);
    assert!(nobody.starts_with("chat: not_found: "), "{nobody}");
    let stranger = uuid::Uuid::new_v4().to_string();
    let forbidden = alice.run(&["history", &stranger]).await.failed(1);
    assert!(
        forbidden.starts_with("chat: ") && (forbidden.contains("not_found") || forbidden.contains("forbidden")),
        "{forbidden}"
    );
    assert!(alice.run(&["tail", &stranger, "--count", "1"]).await.failed(1).starts_with("chat: "));

    // No server: one line naming it and why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let nowhere = format!("http://{closed}");
    let unreachable =
        alice.run_with(&["login", &nowhere, "alice"], &[("CHAT_PASSWORD", PASSWORD)], None).await.failed(1);
    assert_eq!(unreachable, format!("chat: cannot reach {nowhere}: connection refused"));
    let mut elsewhere = before.clone();
    elsewhere["server"] = json!(nowhere);
    set_credentials(&alice, &elsewhere);
    let unreachable = alice.run(&["tail", "0190c1d2-0000-7000-8000-000000000001"]).await.failed(1);
    assert_eq!(unreachable, format!("chat: cannot reach {nowhere}: connection refused"));

    // An expired access token is renewed once, and the new pair kept.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({
        "sub": before["user_id"], "did": before["device_id"], "iss": "chat-auth", "aud": "chat",
        "iat": now - 1200, "nbf": now - 1200, "exp": now - 600, "jti": uuid::Uuid::new_v4().to_string(),
    });
    let expired = system.sign_with_auth_key(None, &claims).await;
    let mut stale = before.clone();
    stale["access_token"] = json!(expired);
    set_credentials(&alice, &stale);
    let me = alice.run(&["--json", "whoami"]).await.json();
    assert_eq!(me["username"], "alice");
    let renewed = alice.credentials();
    assert_ne!(renewed["access_token"], json!(expired));
    assert_ne!(renewed["refresh_token"], before["refresh_token"]);
    assert_eq!(renewed["device_id"], before["device_id"]);
    assert_eq!(mode(&alice.file("credentials.json")), 0o600);
    assert_eq!(alice.run(&["whoami", "--json"]).await.json(), me, "the renewed token works as it is");

    // A refresh the server refuses (this one was spent above): logged out.
    let mut dead = renewed.clone();
    dead["access_token"] = json!(expired);
    dead["refresh_token"] = before["refresh_token"].clone();
    set_credentials(&alice, &dead);
    assert_eq!(alice.run(&["whoami"]).await.failed(1), "chat: not logged in; run `chat login`");
    system.stop().await;
}
