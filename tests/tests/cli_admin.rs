//! `chat admin`, the operators' commands, driven as a process against a
//! whole system: the admin service at `CHAT_ADMIN_URL` (its `host:port`),
//! the test operator's token in `CHAT_ADMIN_TOKEN` or a 0600 file, never a
//! user's login (the operator's config directory stays empty). Finding and
//! deactivating users (their `chat` is logged out), reports made with
//! `chat report` and resolved with the message removed, removing messages
//! and members, the audit log of all of it, erasing a user and exporting one
//! into a 0600 archive; and each way it fails, with one line on stderr and
//! the exit code scripts test (1 for the service or network, 2 for the
//! command line), the token never shown.

use std::os::unix::fs::PermissionsExt;

use chat_system_tests::chat_cli::{ChatCli, mode};
use chat_system_tests::client::PASSWORD;
use chat_system_tests::{Db, OPERATOR_TOKEN, System, on_both_databases};
use serde_json::{Value, json};

type Chat = ChatCli;

fn messages(page: &Value) -> &[Value] {
    page["messages"].as_array().map(Vec::as_slice).expect("messages")
}

fn deleted(page: &Value, message_id: &str) -> bool {
    messages(page).iter().any(|m| m["message_id"] == message_id && m["deleted_at"].is_string())
}

/// The audit log, newest first, as `(action, target, outcome)`.
async fn audit(operator: &Chat) -> Vec<(String, String, String)> {
    let log = operator.admin(&["audit", "--json", "--limit", "200"]).await.json();
    let entries = log["entries"].as_array().expect("entries");
    assert!(entries.iter().all(|e| e["operator"] == "test-operator"), "{log}");
    let text = |e: &Value, field: &str| e[field].as_str().unwrap_or_default().to_owned();
    entries.iter().map(|e| (text(e, "action"), text(e, "target"), text(e, "outcome"))).collect()
}

on_both_databases!(
    operators_find_and_deactivate_users_from_the_command_line,
    operators_resolve_reports_and_remove_messages_and_members_from_the_command_line,
    an_erased_user_is_gone_and_the_operator_is_told_what_was_removed,
    every_admin_failure_is_one_line_on_stderr_and_the_token_is_never_shown,
    an_export_is_one_json_archive_only_the_operator_can_read,
);

async fn operators_find_and_deactivate_users_from_the_command_line(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let (alice, bob, bobby, operator) =
        (Chat::new(&system), Chat::new(&system), Chat::new(&system), Chat::new(&system));
    let alice_id = alice.register_id("alice").await;
    let bob_id = bob.register_id("bob").await;
    bobby.register("bobby").await;

    // Found by a username prefix, in any case: a line each, and as JSON.
    let text = operator.admin(&["users", "BOB"]).await.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(&format!("{bob_id}  bob  ")), "{text}");
    assert!(lines[0].contains(" created 20") && lines[0].contains("  active  1 active device"), "{text}");
    assert!(lines[1].contains("  bobby  "), "{text}");
    let found = operator.admin(&["--json", "users", &alice_id]).await.json();
    let user = &found["users"][0];
    assert_eq!((&user["user_id"], &user["username"]), (&json!(alice_id), &json!("alice")), "{found}");
    assert_eq!(
        (&user["deactivated"], &user["deactivated_at"], &user["active_devices"]),
        (&json!(false), &Value::Null, &json!(1))
    );
    assert!(user["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{found}");
    assert_eq!(operator.admin(&["users", "nobody"]).await.ok(), "no users found\n");

    // Deactivated, with a reason of several words: bob's own chat is logged out.
    assert_eq!(bob.run(&["whoami", "--json"]).await.json()["username"], "bob");
    let said =
        operator.admin(&["deactivate", &bob_id, "--reason", "spam", "campaign,", "see", "ticket", "7"]).await.ok();
    assert_eq!(said, format!("deactivated user {bob_id}: 1 device revoked\n"));
    assert_eq!(bob.run(&["whoami"]).await.failed(1), "chat: not logged in; run `chat login`");
    let login = bob.run_with(&["login", &bob.server, "bob"], &[("CHAT_PASSWORD", PASSWORD)], None).await.failed(1);
    assert!(login.starts_with("chat: forbidden: "), "{login}");
    let again = operator.admin(&["deactivate", &bob_id, "--reason", "again", "--json"]).await.json();
    assert_eq!(again, json!({ "user_id": bob_id, "devices_revoked": 0, "deactivated_now": false }));
    let found = operator.admin(&["users", "bob", "--json"]).await.json();
    assert_eq!((&found["users"][0]["deactivated"], &found["users"][0]["active_devices"]), (&json!(true), &json!(0)));
    assert!(operator.admin(&["users", "bob"]).await.ok().lines().next().unwrap().contains("  deactivated 20"));

    // An id that names nobody: the service's not_found.
    let nobody = uuid::Uuid::new_v4().to_string();
    let refused = operator.admin(&["deactivate", &nobody, "--reason", "spam"]).await.failed(1);
    assert!(refused.starts_with("chat: admin: not_found: "), "{refused}");

    // The audit log: each call, its target and outcome, newest first.
    let log = audit(&operator).await;
    let deactivations: Vec<(&str, &str)> =
        log.iter().filter(|(a, ..)| a == "DeactivateUser").map(|(_, t, o)| (t.as_str(), o.as_str())).collect();
    assert_eq!(deactivations.len(), 3, "{log:?}");
    assert!(deactivations[0].0 == nobody && deactivations[0].1.starts_with("NotFound"), "{log:?}");
    assert_eq!(deactivations[1..], [(bob_id.as_str(), "ok"), (bob_id.as_str(), "ok")]);
    assert!(log.iter().any(|(a, t, o)| a == "FindUsers" && t == "BOB" && o == "ok"), "{log:?}");
    let json = operator.admin(&["--json", "audit"]).await.json();
    let first = json["entries"].as_array().unwrap().iter().rfind(|e| e["action"] == "DeactivateUser").unwrap();
    assert_eq!(first["details"]["reason"], "spam campaign, see ticket 7", "{first}");
    assert!(first["at"].as_str().is_some_and(|t| t.starts_with("20") && t.ends_with('Z')), "{first}");
    let text = operator.admin(&["audit"]).await.ok();
    let lines: Vec<&str> = text.lines().collect();
    // The oldest of each: the log reads newest first.
    let at = |entry: &str| lines.iter().rposition(|l| l.contains(entry)).unwrap_or_else(|| panic!("{entry}: {text}"));
    let first = at(&format!("  test-operator  DeactivateUser  {bob_id}  ok"));
    assert!(lines[first].starts_with("20"), "{text}");
    assert_eq!(lines[first + 1], "    reason: spam campaign, see ticket 7", "{text}");
    let refusal = at(&format!("  DeactivateUser  {nobody}  NotFound: "));
    assert!(refusal < first, "newest first: {text}");
    assert_eq!(operator.admin(&["audit", "--limit", "1"]).await.ok().lines().count(), 2, "one entry and its details");
    assert!(!operator.dir.join("credentials.json").exists(), "the operator never logged in as a user");
    system.stop().await;
}

async fn operators_resolve_reports_and_remove_messages_and_members_from_the_command_line(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let (alice, bob, carol, operator) =
        (Chat::new(&system), Chat::new(&system), Chat::new(&system), Chat::new(&system));
    alice.register("alice").await;
    let bob_id = bob.register_id("bob").await;
    carol.register("carol").await;
    let sent = bob.run(&["--json", "dm", "alice", "you", "are", "an", "idiot"]).await.json();
    let (direct, nasty) = (sent["conversation_id"].as_str().unwrap().to_owned(), sent["message_id"].as_str().unwrap());
    let spam = bob.run(&["--json", "send", &direct, "buy cheap watches"]).await.json();
    let spam = spam["message_id"].as_str().unwrap().to_owned();
    alice.poll_json(&["history", &direct], |p| messages(p).len() == 2).await;

    // A report made by a user, then seen by the operator.
    let report = alice.run(&["--json", "report", &direct, nasty, "insults"]).await.json();
    let report_id = report["report_id"].as_str().unwrap().to_owned();
    let text = operator.admin(&["reports"]).await.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with(&format!("{report_id}  open  20")) && lines[0].ends_with("  reason: insults"),
        "{text}"
    );
    assert!(lines[1].contains(&format!("message {nasty} in {direct}, sent by {bob_id}")), "{text}");
    assert_eq!(lines[2], "    > you are an idiot");
    let listed = operator.admin(&["reports", "--json", "--status", "all", "--limit", "5"]).await.json();
    let listed = &listed["reports"][0];
    assert_eq!(
        (&listed["report_id"], &listed["status"], &listed["reason"]),
        (&json!(report_id), &json!("open"), &json!("insults"))
    );
    assert!(
        listed["context"].as_array().is_some_and(|c| c.iter().any(|m| m["body"] == "you are an idiot")),
        "{listed}"
    );
    assert_eq!(listed["resolved_at"], Value::Null);

    // Resolved with the message removed: a tombstone in alice's history.
    let said = operator
        .admin(&["resolve", &report_id, "--remove-message", "--resolution", "removed;", "warned", "bob"])
        .await
        .ok();
    assert!(said.starts_with(&format!("report {report_id} (the message removed): resolved 20")), "{said}");
    assert!(said.ends_with(" by test-operator: removed; warned bob\n"), "{said}");
    let page = alice.poll_json(&["history", &direct], |p| deleted(p, nasty)).await;
    assert_eq!(messages(&page)[0]["body"], "");
    assert!(alice.run(&["history", &direct]).await.ok().lines().next().unwrap().ends_with(" bob: (deleted)"));
    assert_eq!(operator.admin(&["reports"]).await.ok(), "no open reports\n");
    let resolved = operator.admin(&["--json", "reports", "--status", "resolved"]).await.json();
    let resolved = &resolved["reports"][0];
    assert_eq!((&resolved["status"], &resolved["resolved_by"]), (&json!("resolved"), &json!("test-operator")));
    assert_eq!(resolved["resolution"], "removed; warned bob");
    let again = operator.admin(&["resolve", &report_id, "--resolution", "changed", "my", "mind"]).await.ok();
    assert!(again.starts_with(&format!("report {report_id} was resolved already")), "{again}");
    assert!(again.ends_with(": removed; warned bob\n"), "the first resolution stays: {again}");

    // A message removed without a report.
    let said = operator.admin(&["remove-message", &direct, &spam, "--reason", "spam"]).await.ok();
    assert_eq!(said, format!("removed message {spam} (#2) from conversation {direct}\n"));
    alice.poll_json(&["history", &direct], |p| deleted(p, &spam)).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = operator.admin(&["remove-message", &direct, &unknown, "--reason", "spam"]).await.failed(1);
    assert!(refused.starts_with("chat: admin: not_found: "), "{refused}");

    // A member removed from a group.
    let said = alice.run(&["group", "create", "book club", "bob", "carol"]).await.ok();
    let group = said.split_whitespace().nth(4).expect("the group's id").to_owned();
    let removed = operator.admin(&["--json", "remove-member", &group, &bob_id, "--reason", "abuse"]).await.json();
    assert_eq!((&removed["conversation_id"], &removed["title"]), (&json!(group), &json!("book club")));
    let members = removed["member_ids"].as_array().unwrap();
    assert!(members.len() == 2 && !members.contains(&json!(bob_id)), "{removed}");
    let refused = operator.admin(&["remove-member", &group, &bob_id, "--reason", "abuse"]).await.failed(1);
    assert!(refused.starts_with("chat: admin: not_found: "), "no longer a member: {refused}");
    let refused = operator.admin(&["remove-member", &direct, &bob_id, "--reason", "abuse"]).await.failed(1);
    assert!(refused.starts_with("chat: admin: failed_precondition: "), "{refused}");

    // All of it in the audit log, newest first.
    let log = audit(&operator).await;
    let actions: Vec<(&str, &str)> = log
        .iter()
        .filter(|(a, ..)| a != "ListReports")
        .map(|(a, _, o)| (a.as_str(), if o == "ok" { "ok" } else { "refused" }))
        .collect();
    assert_eq!(
        actions,
        [
            ("RemoveMember", "refused"),
            ("RemoveMember", "refused"),
            ("RemoveMember", "ok"),
            ("RemoveMessage", "refused"),
            ("RemoveMessage", "ok"),
            ("ResolveReport", "ok"),
            ("ResolveReport", "ok"),
        ],
        "{log:?}"
    );
    let text = operator.admin(&["audit"]).await.ok();
    assert!(text.contains(&format!("  ResolveReport  {report_id}  ok")), "{text}");
    assert!(text.contains("    remove_message: true, resolution: removed; warned bob"), "{text}");
    system.stop().await;
}

async fn an_erased_user_is_gone_and_the_operator_is_told_what_was_removed(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let (alice, bob, operator) = (Chat::new(&system), Chat::new(&system), Chat::new(&system));
    alice.register("alice").await;
    let bob_id = bob.register_id("bob").await;
    let sent = bob.run(&["--json", "dm", "alice", "my", "secret"]).await.json();
    let direct = sent["conversation_id"].as_str().unwrap().to_owned();
    bob.run(&["send", &direct, "and", "another"]).await.ok();
    alice.run(&["send", &direct, "hello bob"]).await.ok();
    bob.run(&["block", "alice"]).await.ok();
    alice.poll_json(&["history", &direct], |p| messages(p).len() == 3).await;

    let said = operator.admin(&["erase", &bob_id, "--reason", "the", "user", "asked", "(ticket 42)"]).await.ok();
    assert_eq!(said, format!("erased user {bob_id}: removed 1 device, 2 messages, 0 files, 1 block\n"));
    assert_eq!(bob.run(&["whoami"]).await.failed(1), "chat: not logged in; run `chat login`");
    let page =
        alice.poll_json(&["history", &direct], |p| messages(p).iter().filter(|m| m["body"] == "").count() == 2).await;
    assert_eq!(messages(&page)[2]["body"], "hello bob", "others' messages stay");
    let found = operator.admin(&["--json", "users", &bob_id]).await.json();
    assert_eq!(found["users"][0]["username"], format!("erased-{bob_id}"));
    let again = operator.admin(&["--json", "erase", &bob_id, "--reason", "again"]).await.json();
    assert_eq!(
        again,
        json!({ "user_id": bob_id, "devices_removed": 0, "messages_erased": 0, "files_removed": 0, "blocks_removed": 0 })
    );
    let erasures: Vec<String> =
        audit(&operator).await.into_iter().filter(|(a, ..)| a == "EraseUser").map(|(.., o)| o).collect();
    assert_eq!(erasures, ["ok", "ok"]);
    system.stop().await;
}

async fn every_admin_failure_is_one_line_on_stderr_and_the_token_is_never_shown(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let (bob, operator) = (Chat::new(&system), Chat::new(&system));
    let bob_id = bob.register_id("bob").await;
    let url = [("CHAT_ADMIN_URL", system.admin_addr.as_str())];

    // No token: nothing is sent.
    let refused = operator.run_with(&["admin", "users", "bob"], &url, None).await.failed(1);
    assert_eq!(refused, "chat: no operator token: set CHAT_ADMIN_TOKEN or --admin-token-file");
    let with_login = bob.run_with(&["admin", "users", "bob"], &url, None).await.failed(1);
    assert_eq!(with_login, refused, "a user's login is no operator token");

    // A wrong token: the service refuses it.
    let wrong = [url[0], ("CHAT_ADMIN_TOKEN", "not-the-operator-token")];
    let refused = operator.run_with(&["admin", "audit"], &wrong, None).await.failed(1);
    assert_eq!(refused, "chat: admin: unauthenticated: unknown operator credentials");
    assert!(!refused.contains("not-the-operator-token"));

    // A token file: refused unless only its owner may read it; its token never shown.
    let file = operator.path("operator-token");
    std::fs::write(&file, format!("{OPERATOR_TOKEN}\n")).expect("write the token file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = file.to_str().unwrap();
    let args = ["admin", "users", "bob", "--admin-token-file", path];
    let refused = operator.run_with(&args, &url, None).await.failed(1);
    assert!(refused.contains(path) && refused.contains("0644") && refused.contains("world-readable"), "{refused}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let found = operator.run_with(&["admin", "users", "bob", "--admin-token-file", path, "--json"], &url, None).await;
    assert_eq!(found.json()["users"][0]["user_id"], bob_id.as_str());
    let from_the_file = [url[0], ("CHAT_ADMIN_TOKEN", "not-the-operator-token")];
    let args = ["admin", "users", "bob", "--admin-token-file", path];
    let found = operator.run_with(&args, &from_the_file, None).await.ok();
    assert!(found.starts_with(&bob_id), "the file named on the command line wins: {found}");
    let missing = operator.path("no-such-token");
    let args = ["admin", "users", "bob", "--admin-token-file", missing.to_str().unwrap()];
    let refused = operator.run_with(&args, &url, None).await.failed(1);
    assert!(refused.contains("cannot read the operator token file") && refused.contains("not found"), "{refused}");

    // The command line: exit 2, nothing sent.
    let refused = operator.admin(&["deactivate", &bob_id]).await.failed(2);
    assert!(refused.contains("`chat admin deactivate` needs --reason"), "{refused}");
    assert!(operator.admin(&["deactivate", &bob_id, "--reason"]).await.failed(2).contains("--reason needs a text"));
    assert!(operator.admin(&["erase", "bob", "--reason", "x"]).await.failed(2).contains("'bob' is not a user id"));
    assert!(operator.admin(&["users", "bob", "--reason", "x"]).await.failed(2).contains("--reason does not apply"));
    assert!(
        operator
            .admin(&["reports", "--status", "closed"])
            .await
            .failed(2)
            .contains("--status is open, resolved or all")
    );
    assert!(operator.admin(&["frobnicate"]).await.failed(2).contains("unknown command `chat admin frobnicate`"));
    assert!(operator.admin(&[]).await.failed(2).contains("`chat admin` needs a subcommand"));
    let args = ["admin", "audit", "--admin-url", "https://admin.example"];
    assert!(operator.run_with(&args, &[], None).await.failed(2).contains("plaintext gRPC"));

    // The service says no: its code and message.
    let nobody = uuid::Uuid::new_v4().to_string();
    let refused = operator.admin(&["deactivate", &nobody, "--reason", "spam"]).await.failed(1);
    assert_eq!(refused, "chat: admin: not_found: user not found");
    let refused = operator.admin(&["resolve", &nobody, "--resolution", "no action"]).await.failed(1);
    assert!(refused.starts_with("chat: admin: not_found: "), "{refused}");

    // No service: one line naming it and why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let nowhere = format!("http://{closed}");
    let args = ["admin", "audit", "--admin-url", &nowhere];
    let unreachable = operator.run_with(&args, &[("CHAT_ADMIN_TOKEN", OPERATOR_TOKEN)], None).await.failed(1);
    assert_eq!(unreachable, format!("chat: cannot reach the admin service at {nowhere}: connection refused"));
    system.stop().await;
}

async fn an_export_is_one_json_archive_only_the_operator_can_read(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let (alice, bob, operator) = (Chat::new(&system), Chat::new(&system), Chat::new(&system));
    let alice_id = alice.register_id("alice").await;
    let bob_id = bob.register_id("bob").await;
    let sent = bob.run(&["--json", "dm", "alice", "first", "words"]).await.json();
    let direct = sent["conversation_id"].as_str().unwrap().to_owned();
    bob.run(&["send", &direct, "second", "words"]).await.ok();
    alice.run(&["send", &direct, "not bob's"]).await.ok();
    bob.run(&["block", "alice"]).await.ok();
    alice.poll_json(&["history", &direct], |p| messages(p).len() == 3).await;

    // To a file only the operator may read.
    let out = operator.path("bob.json");
    let said = operator
        .admin(&["export", &bob_id, "--reason", "subject", "access", "request", "--out", out.to_str().unwrap()])
        .await
        .ok();
    assert!(said.starts_with(&format!("exported user {bob_id} to {}: the profile, ", out.display())), "{said}");
    assert!(said.contains("1 device, 1 conversation, 2 messages, 1 block, 0 push subscriptions"), "{said}");
    assert_eq!(mode(&out), 0o600);
    let archive: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("the archive")).expect("the archive is JSON");
    assert_eq!(archive["user_id"], bob_id.as_str());
    assert!(archive["exported_at"].as_str().is_some_and(|t| t.starts_with("20") && t.ends_with('Z')), "{archive}");
    assert_eq!((&archive["profile"]["user_id"], &archive["profile"]["username"]), (&json!(bob_id), &json!("bob")));
    let bodies: Vec<&str> =
        archive["messages"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["first words", "second words"], "only bob's messages: {archive}");
    assert_eq!(archive["conversations"][0]["conversation_id"], direct.as_str());
    assert_eq!(archive["devices"].as_array().unwrap().len(), 1);
    assert_eq!(archive["blocks"][0]["blocked_user_id"], alice_id.as_str());
    assert_eq!(archive["push_subscriptions"], json!([]));
    assert!(archive.get("other").is_none(), "{archive}");

    // A file that was there is replaced whole, 0600 whatever it was.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let args = ["--json", "export", &bob_id, "--reason", "again", "--out", out.to_str().unwrap()];
    let shown = operator.admin(&args).await.json();
    assert_eq!((&shown["counts"]["messages"], &shown["profile"]), (&json!(2), &json!(true)), "{shown}");
    assert_eq!(mode(&out), 0o600);

    // To standard output: the same archive.
    let printed = operator.admin(&["export", &bob_id, "--reason", "to", "stdout", "--json"]).await.json();
    assert_eq!((&printed["profile"], &printed["messages"]), (&archive["profile"], &archive["messages"]));

    // Nobody to export, and the log.
    let nobody = uuid::Uuid::new_v4().to_string();
    let out = operator.path("nobody.json");
    let args = ["export", &nobody, "--reason", "request", "--out", out.to_str().unwrap()];
    let refused = operator.admin(&args).await.failed(1);
    assert!(refused.starts_with("chat: admin: not_found: "), "{refused}");
    assert!(!out.exists(), "no archive for nobody");
    let exports: Vec<(String, String)> =
        audit(&operator).await.into_iter().filter(|(a, ..)| a == "ExportUser").map(|(_, t, o)| (t, o)).collect();
    assert_eq!(exports.len(), 4, "{exports:?}");
    assert!(exports[0].0 == nobody && exports[0].1.starts_with("NotFound"), "{exports:?}");
    assert!(exports[1..].iter().all(|(t, o)| *t == bob_id && o == "ok"), "{exports:?}");
    system.stop().await;
}
