//! Administration over gRPC: only operator tokens get in (a user's token is
//! refused like any other); operators find and deactivate users (sockets
//! close, tokens and push subscriptions go, messages stay), review reports
//! and act on them, remove messages and members; every action, allowed or
//! refused downstream, lands in the audit log with its outcome. Also driven
//! through the real `grpcurl`, as docs/operations.md shows.

use std::time::Duration;

use chat_proto::admin::v1::admin_service_client::AdminServiceClient;
use chat_proto::admin::v1::{
    AuditEntry, DeactivateUserRequest, EraseUserRequest, ExportUserRequest, ListAuditLogRequest, RemoveMemberRequest,
    RemoveMessageRequest, ResolveReportRequest,
};
use chat_proto::auth::v1::FindUsersRequest;
use chat_proto::history::v1::ListReportsRequest;
use chat_proto::notification::v1::ListPushSubscriptionsRequest;
use chat_proto::notification::v1::notification_service_client::NotificationServiceClient;
use chat_system_tests::client::Api;
use chat_system_tests::{Db, Device, OPERATOR_TOKEN, System, Ws, grpcurl, on_both_databases};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

type Admin = AdminServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Waits until `device`'s page of the conversation (up to 200 messages)
/// shows what `shown` looks for; returns the page. (A change is stored a
/// moment after it is acknowledged.)
async fn wait_for_page(api: &Api, device: &Device, conversation: &str, shown: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = api.wait_for_history(device, conversation, 1).await;
        if shown(&page) {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page never showed it: {page:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until_deleted(api: &Api, device: &Device, conversation: &str, message_id: &Value) -> Vec<Value> {
    wait_for_page(api, device, conversation, |page| {
        page.iter().any(|m| m["message_id"] == *message_id && m["deleted_at"].is_string())
    })
    .await
}

/// Puts `authorization: Bearer <token>` on every call.
#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(request)
    }
}

async fn admin_with(system: &System, token: Option<&str>) -> Admin {
    let channel = Channel::from_shared(format!("http://{}", system.admin_addr)).unwrap().connect().await.unwrap();
    AdminServiceClient::with_interceptor(channel, Bearer(token.map(str::to_owned)))
}

async fn admin(system: &System) -> Admin {
    admin_with(system, Some(OPERATOR_TOKEN)).await
}

async fn audit_log(admin: &mut Admin) -> Vec<AuditEntry> {
    admin
        .list_audit_log(ListAuditLogRequest { limit: 200, before_ms: 0 })
        .await
        .expect("ListAuditLog")
        .into_inner()
        .entries
}

on_both_databases!(
    only_operator_tokens_get_in,
    a_deactivated_user_is_cut_off_and_their_messages_stay,
    reports_are_reviewed_and_acted_on,
    operators_remove_messages_and_members_and_every_action_is_audited,
    an_erased_user_leaves_tombstones_in_place_and_nothing_else,
    an_export_holds_everything_of_the_user_and_nothing_of_others,
    an_export_whose_reader_stops_reading_is_ended_and_audited,
);

async fn only_operator_tokens_get_in(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    for (token, what) in [
        (None, "no credentials"),
        (Some(alice.access_token.as_str()), "a user's access token"),
        (Some("test-operator-token-but-longer"), "a wrong token"),
        (Some(""), "an empty token"),
    ] {
        let mut client = admin_with(&system, token).await;
        let refused = client.find_users(FindUsersRequest { query: "alice".into(), limit: 0 }).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
        let refused = client.list_audit_log(ListAuditLogRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
    }
    // Refused calls did nothing, so there is nothing to audit.
    assert!(audit_log(&mut admin(&system).await).await.is_empty());

    // The real grpcurl, as operators use it.
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        &format!("authorization: Bearer {OPERATOR_TOKEN}"),
        "-d",
        r#"{"query": "ALI"}"#,
        &system.admin_addr,
        "chat.admin.v1.AdminService/FindUsers",
    ]);
    assert!(ok, "{out}");
    let found: Value = serde_json::from_str(&out).expect("grpcurl prints JSON");
    assert_eq!(found["users"][0]["user"]["userId"], alice.user_id.as_str(), "{found}");
    let (ok, out) = grpcurl(&["-plaintext", "-d", "{}", &system.admin_addr, "chat.admin.v1.AdminService/ListAuditLog"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    system.stop().await;
}

async fn a_deactivated_user_is_cut_off_and_their_messages_stay(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let bobby = api.new_user("bobby").await;
    let conversation = api.direct(&alice, &bob).await;
    api.send(&bob, &conversation, "hi alice").await;
    let hook = json!({ "type": "webhook", "url": "http://127.0.0.1:9/hook" });
    let (status, _) = api.post("/v1/push/subscriptions", Some(&bob.access_token), hook).await;
    assert_eq!(status, 201);
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let mut admin = admin(&system).await;

    // Found by a username prefix, in any case, or by id; `_` is no wildcard.
    let found = admin.find_users(FindUsersRequest { query: "BOB".into(), limit: 0 }).await.unwrap().into_inner();
    let names: Vec<String> = found.users.iter().map(|u| u.user.as_ref().unwrap().username.clone()).collect();
    assert_eq!(names, ["bob", "bobby"]);
    assert_eq!(found.users[0].active_devices, 1);
    let by_id = admin.find_users(FindUsersRequest { query: bob.user_id.clone(), limit: 0 }).await.unwrap().into_inner();
    assert_eq!(by_id.users.len(), 1);
    let wildcard = admin.find_users(FindUsersRequest { query: "b_b".into(), limit: 0 }).await.unwrap().into_inner();
    assert!(wildcard.users.is_empty());
    for (query, limit) in [("", 0), ("bob", 101), ("b\u{0}b", 0)] {
        let refused = admin.find_users(FindUsersRequest { query: query.into(), limit }).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{query:?} {limit}");
    }

    // Bad deactivations change nothing.
    let request =
        |user_id: &str, reason: &str| DeactivateUserRequest { user_id: user_id.into(), reason: reason.into() };
    let refused = admin.deactivate_user(request(&bob.user_id, "  ")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = admin.deactivate_user(request("nobody", "spam")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = admin.deactivate_user(request(&uuid::Uuid::new_v4().to_string(), "spam")).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    bob_ws.expect_silence(Duration::from_millis(200)).await;

    // Deactivated: the socket closes, tokens stop working, login is refused.
    let done = admin.deactivate_user(request(&bob.user_id, "spam campaign")).await.unwrap().into_inner();
    assert_eq!((done.devices_revoked, done.deactivated_now), (1, true));
    assert_eq!(bob_ws.expect_close().await, 4401);
    let (status, _) = api.get("/v1/users/me", Some(&bob.access_token)).await;
    assert_eq!(status, 401, "the access token is refused");
    let (status, _) = api.post("/v1/auth/refresh", None, json!({ "refresh_token": bob.refresh_token })).await;
    assert_eq!(status, 401, "the refresh token is refused");
    let login = json!({ "username": "bob", "password": chat_system_tests::client::PASSWORD });
    let (status, body) = api.post("/v1/auth/login", None, login).await;
    assert_eq!((status, body["error"]["message"].as_str()), (403, Some("this account is deactivated")), "{body}");
    let notification_channel = Channel::from_shared(format!("http://{}", system.notification_addr)).unwrap();
    let mut notification = NotificationServiceClient::new(notification_channel.connect().await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = ListPushSubscriptionsRequest { user_id: bob.user_id.clone() };
        let listed = notification.list_push_subscriptions(request).await.unwrap().into_inner();
        if listed.subscriptions.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the push subscription outlived the deactivation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let messages = api.wait_for_history(&alice, &conversation, 1).await;
    assert_eq!(messages[0]["body"], "hi alice", "messages stay");
    let again = admin.deactivate_user(request(&bob.user_id, "again")).await.unwrap().into_inner();
    assert_eq!((again.devices_revoked, again.deactivated_now), (0, false));
    let found = admin.find_users(FindUsersRequest { query: "bob".into(), limit: 1 }).await.unwrap().into_inner();
    assert!(found.users[0].deactivated_at_ms > 0 && found.users[0].active_devices == 0);

    // Every call that passed the operator check is in the log, with its outcome.
    let log = audit_log(&mut admin).await;
    let deactivations: Vec<(&str, &str)> =
        log.iter().filter(|e| e.action == "DeactivateUser").map(|e| (e.target.as_str(), e.outcome.as_str())).collect();
    assert_eq!(deactivations.len(), 3, "{log:?}");
    assert_eq!(deactivations[0], (bob.user_id.as_str(), "ok"));
    assert_eq!(deactivations[1], (bob.user_id.as_str(), "ok"));
    assert!(deactivations[2].1.starts_with("NotFound"), "{deactivations:?}");
    let first = log.iter().rfind(|e| e.action == "DeactivateUser" && e.outcome == "ok").unwrap();
    assert_eq!(first.operator, "test-operator");
    let details: Value = serde_json::from_str(&first.details_json).unwrap();
    assert_eq!(details["reason"], "spam campaign");
    let _ = bobby;
    system.stop().await;
}

async fn reports_are_reviewed_and_acted_on(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let club = api.group(&alice, "the club", &[&bob, &carol]).await;
    api.send(&alice, &club, "welcome").await;
    let nasty = api.send(&bob, &club, "you are all idiots").await;
    let mild = api.send(&bob, &club, "just kidding").await;
    api.wait_for_history(&carol, &club, 4).await;
    let report = |message: &Value, reason: &str| {
        let path = format!("/v1/conversations/{club}/messages/{}/reports", message["message_id"].as_str().unwrap());
        let (api, token, body) = (&api, carol.access_token.clone(), json!({ "reason": reason }));
        async move { api.post(&path, Some(&token), body).await }
    };
    let (status, nasty_report) = report(&nasty, "insults").await;
    assert_eq!(status, 201);
    let (status, mild_report) = report(&mild, "not funny").await;
    assert_eq!(status, 201);
    let mut admin = admin(&system).await;

    let open = |limit| ListReportsRequest { status: "open".into(), limit, before_ms: 0 };
    let listed = admin.list_reports(open(0)).await.unwrap().into_inner().reports;
    let ids: Vec<&str> = listed.iter().map(|r| r.report_id.as_str()).collect();
    assert_eq!(
        ids,
        [mild_report["report_id"].as_str().unwrap(), nasty_report["report_id"].as_str().unwrap()],
        "newest first"
    );
    let nasty_listed = &listed[1];
    assert_eq!(
        (nasty_listed.reporter_id.as_str(), nasty_listed.sender_id.as_str()),
        (carol.user_id.as_str(), bob.user_id.as_str())
    );
    assert_eq!(nasty_listed.reason, "insults");
    let context: Vec<Value> = serde_json::from_str(&nasty_listed.context_json).unwrap();
    let bodies: Vec<&str> = context.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert!(bodies.ends_with(&["welcome", "you are all idiots", "just kidding"]), "{bodies:?}");
    let refused = admin.list_reports(ListReportsRequest { status: "closed".into(), ..open(0) }).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    // Resolved with the message removed: it is a tombstone for everyone.
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    let resolve = |id: &Value, resolution: &str, remove_message| ResolveReportRequest {
        report_id: id.as_str().unwrap().to_owned(),
        resolution: resolution.into(),
        remove_message,
    };
    let refused = admin.resolve_report(resolve(&nasty_report["report_id"], "", true)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let unknown = json!(uuid::Uuid::new_v4().to_string());
    let refused = admin.resolve_report(resolve(&unknown, "removed", true)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let resolved =
        admin.resolve_report(resolve(&nasty_report["report_id"], "removed; warned", true)).await.unwrap().into_inner();
    assert_eq!((resolved.status.as_str(), resolved.resolved_by.as_str()), ("resolved", "test-operator"));
    let deleted = alice_ws.expect("message_deleted").await;
    assert_eq!(deleted["message"]["message_id"], nasty["message_id"]);
    let page = wait_until_deleted(&api, &carol, &club, &nasty["message_id"]).await;
    let removed = page.iter().find(|m| m["message_id"] == nasty["message_id"]).unwrap();
    assert!(removed["deleted_at"].is_string() && removed["body"] == "", "{removed}");
    let resolved =
        admin.resolve_report(resolve(&mild_report["report_id"], "no action", false)).await.unwrap().into_inner();
    assert_eq!(resolved.resolution, "no action");
    let page = api.wait_for_history(&carol, &club, 4).await;
    assert_eq!(page.iter().find(|m| m["message_id"] == mild["message_id"]).unwrap()["body"], "just kidding");
    // Resolving again keeps the first resolution.
    let again =
        admin.resolve_report(resolve(&mild_report["report_id"], "changed my mind", false)).await.unwrap().into_inner();
    assert_eq!(again.resolution, "no action");
    assert!(admin.list_reports(open(0)).await.unwrap().into_inner().reports.is_empty());
    let closed = ListReportsRequest { status: "resolved".into(), ..open(0) };
    assert_eq!(admin.list_reports(closed).await.unwrap().into_inner().reports.len(), 2);
    let log = audit_log(&mut admin).await;
    let resolutions = log.iter().filter(|e| e.action == "ResolveReport").count();
    assert_eq!(
        resolutions, 4,
        "the refused one without a resolution never reached the log; the unknown one did: {log:?}"
    );
    system.stop().await;
}

async fn operators_remove_messages_and_members_and_every_action_is_audited(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let direct = api.direct(&alice, &bob).await;
    let sent = api.send(&bob, &direct, "buy cheap watches").await;
    let club = api.group(&alice, "the club", &[&bob, &carol]).await;
    let mut admin = admin(&system).await;

    // A message in a conversation no operator is in.
    let remove = |conversation: &str, message: &Value, reason: &str| RemoveMessageRequest {
        conversation_id: conversation.to_owned(),
        message_id: message.as_str().unwrap().to_owned(),
        reason: reason.into(),
    };
    let removed = admin.remove_message(remove(&direct, &sent["message_id"], "spam")).await.unwrap().into_inner();
    assert!(removed.deleted_at_ms > 0 && removed.body.is_empty());
    let page = wait_until_deleted(&api, &alice, &direct, &sent["message_id"]).await;
    assert_eq!(page[0]["body"], "", "{page:?}");
    let created = api.wait_for_history(&alice, &club, 1).await;
    let refused = admin.remove_message(remove(&club, &created[0]["message_id"], "tidy")).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "a system message stays");
    let unknown = json!(uuid::Uuid::new_v4().to_string());
    let refused = admin.remove_message(remove(&direct, &unknown, "spam")).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    // Members: the owner too, and ownership passes on; not in a direct conversation.
    let (mut alice_ws, _) = Ws::open(&system.ws(0), &alice).await;
    let member = |conversation: &str, user: &Device| RemoveMemberRequest {
        conversation_id: conversation.to_owned(),
        user_id: user.user_id.clone(),
        reason: "abuse".into(),
    };
    let conversation = admin.remove_member(member(&club, &alice)).await.unwrap().into_inner();
    assert!(!conversation.member_ids.contains(&alice.user_id));
    let removal = alice_ws.expect("message").await;
    assert_eq!(removal["message"]["system"]["event"], "member_removed");
    assert_eq!(removal["message"]["sender_id"], "00000000-0000-0000-0000-000000000000");
    let (_, got) = api.get(&format!("/v1/conversations/{club}"), Some(&bob.access_token)).await;
    let owners: Vec<&Value> = got["member_roles"].as_array().unwrap().iter().filter(|m| m["role"] == "owner").collect();
    assert_eq!(owners.len(), 1, "someone owns the group again: {got}");
    api.send(&bob, &club, "after alice").await;
    alice_ws.expect_silence(Duration::from_millis(300)).await;
    let refused = admin.remove_member(member(&direct, &bob)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let refused = admin.remove_member(member(&club, &alice)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "no longer a member");

    let log = audit_log(&mut admin).await;
    let summary: Vec<(&str, bool)> = log.iter().map(|e| (e.action.as_str(), e.outcome == "ok")).collect();
    assert_eq!(
        summary,
        [
            ("RemoveMember", false),
            ("RemoveMember", false),
            ("RemoveMember", true),
            ("RemoveMessage", false),
            ("RemoveMessage", false),
            ("RemoveMessage", true),
        ],
        "newest first: {log:?}"
    );
    assert!(log.iter().all(|e| e.operator == "test-operator" && e.outcome != "pending"));
    let _ = carol;
    system.stop().await;
}

async fn an_erased_user_leaves_tombstones_in_place_and_nothing_else(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let direct = api.direct(&alice, &bob).await;
    let club = api.group(&alice, "the club", &[&bob, &carol]).await;
    api.send(&alice, &direct, "hello bob").await;
    // Bob's file, sent with a message.
    let upload = reqwest::Client::new()
        .post(format!("{}/v1/attachments", system.http(0)))
        .query(&[("name", "notes.txt")])
        .bearer_auth(&bob.access_token)
        .body("my private notes")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let file: Value = upload.json().await.unwrap();
    let file_id = file["id"].as_str().unwrap().to_owned();
    let with_file = json!({ "client_msg_id": "f1", "body": "see attached", "attachments": [file_id] });
    let (status, sent) =
        api.post(&format!("/v1/conversations/{direct}/messages"), Some(&bob.access_token), with_file).await;
    assert_eq!(status, 201, "{sent}");
    for i in 1..=60 {
        api.send(&bob, &club, &format!("bob says {i}")).await;
    }
    api.send(&alice, &direct, "after bob").await;
    assert_eq!(
        api.request(reqwest::Method::PUT, &format!("/v1/blocks/{}", bob.user_id), Some(&alice.access_token), None)
            .await
            .0,
        204
    );
    assert_eq!(
        api.request(reqwest::Method::PUT, &format!("/v1/blocks/{}", carol.user_id), Some(&bob.access_token), None)
            .await
            .0,
        204
    );
    let before = api.wait_for_history(&alice, &direct, 3).await;
    api.wait_for_history(&carol, &club, 61).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let mut admin = admin(&system).await;

    let erase = |user_id: &str, reason: &str| EraseUserRequest { user_id: user_id.into(), reason: reason.into() };
    let refused = admin.erase_user(erase(&bob.user_id, "")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = admin.erase_user(erase(&uuid::Uuid::new_v4().to_string(), "request")).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    let erased = admin.erase_user(erase(&bob.user_id, "the user asked (ticket 42)")).await.unwrap().into_inner();
    assert_eq!(
        (erased.devices_removed, erased.messages_erased, erased.files_removed, erased.blocks_removed),
        (1, 61, 1, 2),
        "{erased:?}"
    );
    assert_eq!(bob_ws.expect_close().await, 4401);

    // Tombstones in place: the same seqs, nothing of what bob wrote.
    let after = wait_until_deleted(&api, &alice, &direct, &sent["message_id"]).await;
    let seqs = |page: &[Value]| page.iter().map(|m| m["seq"].clone()).collect::<Vec<_>>();
    assert_eq!(seqs(&after), seqs(&before));
    assert_eq!(after[0]["body"], "hello bob");
    assert_eq!((after[1]["body"].as_str(), after[1].get("attachments")), (Some(""), None), "{:?}", after[1]);
    assert!(after[1]["deleted_at"].is_string());
    assert_eq!(after[2]["body"], "after bob");
    let from_bob = |m: &&Value| m["sender_id"] == bob.user_id.as_str() && m["system"].is_null();
    let all_erased = |page: &[Value]| page.iter().filter(from_bob).all(|m| m["body"] == "");
    let club_page = wait_for_page(&api, &carol, &club, all_erased).await;
    assert_eq!(club_page.iter().filter(from_bob).count(), 60);
    let (_, found) = api.get("/v1/search?q=bob", Some(&carol.access_token)).await;
    assert_eq!(found["messages"], json!([]), "{found}");

    // The profile is scrubbed, the name free again; the file and the blocks are gone.
    let (status, profile) = api.get(&format!("/v1/users/{}", bob.user_id), Some(&alice.access_token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (profile["username"].as_str(), profile["display_name"].as_str()),
        (Some(format!("erased-{}", bob.user_id).as_str()), Some("Deleted user"))
    );
    let login = json!({ "username": "bob", "password": chat_system_tests::client::PASSWORD });
    assert_eq!(api.post("/v1/auth/login", None, login).await.0, 401);
    let new_bob = api.new_user("bob").await;
    assert_ne!(new_bob.user_id, bob.user_id);
    let (status, _) = api.get(&format!("/v1/attachments/{file_id}"), Some(&alice.access_token)).await;
    assert_eq!(status, 404, "the file is gone");
    let (_, blocks) = api.get("/v1/blocks", Some(&alice.access_token)).await;
    assert_eq!(blocks["blocks"], json!([]));

    // Again: nothing left to do, and it says so.
    let again = admin.erase_user(erase(&bob.user_id, "again")).await.unwrap().into_inner();
    assert_eq!((again.devices_removed, again.messages_erased, again.files_removed, again.blocks_removed), (0, 0, 0, 0));
    let log = audit_log(&mut admin).await;
    let erasures: Vec<&str> = log.iter().filter(|e| e.action == "EraseUser").map(|e| e.outcome.as_str()).collect();
    assert_eq!(erasures.len(), 3, "{log:?}");
    assert_eq!(&erasures[..2], ["ok", "ok"]);
    system.stop().await;
}

async fn an_export_holds_everything_of_the_user_and_nothing_of_others(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let phone = api.login("alice").await;
    let bob = api.new_user("bob").await;
    let direct = api.direct(&alice, &bob).await;
    let club = api.group(&bob, "the club", &[&alice]).await;
    for i in 1..=3 {
        api.send(&alice, &direct, &format!("alice {i}")).await;
    }
    api.send(&alice, &club, "alice in the club").await;
    api.send(&bob, &direct, "bob's own words").await;
    let put = |path: String, who: &Device| {
        let (api, token) = (&api, who.access_token.clone());
        async move { api.request(reqwest::Method::PUT, &path, Some(&token), None).await.0 }
    };
    assert_eq!(put(format!("/v1/blocks/{}", bob.user_id), &alice).await, 204);
    assert_eq!(put(format!("/v1/conversations/{club}/mute"), &alice).await, 204);
    let hook = json!({ "type": "webhook", "url": "http://127.0.0.1:9/alice" });
    assert_eq!(api.post("/v1/push/subscriptions", Some(&phone.access_token), hook).await.0, 201);
    api.wait_for_history(&bob, &direct, 4).await;
    api.wait_for_history(&bob, &club, 2).await;
    let mut admin = admin(&system).await;

    let export = |user_id: &str, reason: &str| ExportUserRequest { user_id: user_id.into(), reason: reason.into() };
    let refused = admin.export_user(export(&alice.user_id, "")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = admin.export_user(export(&uuid::Uuid::new_v4().to_string(), "request")).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    let mut stream = admin.export_user(export(&alice.user_id, "subject access request")).await.unwrap().into_inner();
    let mut records: Vec<(String, Value)> = Vec::new();
    while let Some(record) = stream.message().await.expect("the export streams to its end") {
        records.push((record.kind.clone(), serde_json::from_str(&record.json).expect("each record is JSON")));
    }
    let of = |kind: &str| records.iter().filter(|(k, _)| k == kind).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    assert_eq!(records[0].0, "profile");
    assert_eq!(
        (records[0].1["user_id"].as_str(), records[0].1["username"].as_str()),
        (Some(alice.user_id.as_str()), Some("alice"))
    );
    assert_eq!(of("device").len(), 2);
    let conversations = of("conversation");
    assert_eq!(conversations.len(), 2);
    assert!(conversations.iter().any(|c| c["conversation_id"] == club.as_str() && c["muted"] == true));
    let bodies: Vec<String> = of("message").iter().map(|m| m["body"].as_str().unwrap().to_owned()).collect();
    assert_eq!(bodies, ["alice 1", "alice 2", "alice 3", "alice in the club"], "only what alice sent, in order");
    assert_eq!(
        of("block"),
        vec![json!({ "blocked_user_id": bob.user_id, "blocked_at_ms": of("block")[0]["blocked_at_ms"] })]
    );
    let subscriptions = of("push_subscription");
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(
        (subscriptions[0]["type"].as_str(), subscriptions[0]["device_id"].as_str()),
        (Some("webhook"), Some(phone.device_id.as_str()))
    );
    assert!(!records.iter().any(|(_, v)| v.to_string().contains("webhook_secret")), "no secret is exported");

    let log = audit_log(&mut admin).await;
    let exports: Vec<&str> = log.iter().filter(|e| e.action == "ExportUser").map(|e| e.outcome.as_str()).collect();
    assert_eq!(exports.len(), 2, "{log:?}");
    assert_eq!(exports[0], "ok");
    assert!(exports[1].starts_with("NotFound"));
    system.stop().await;
}

/// An operator's client that stops reading would hold the export (its task,
/// a page of messages) for ever once the stream's buffers are full: the
/// export ends after `ADMIN_EXPORT_STALL_SECS` without a record taken.
async fn an_export_whose_reader_stops_reading_is_ended_and_audited(db: Db) {
    let builder = System::builder().admin_config(|c| c.export_stall = Duration::from_secs(1));
    let Some(system) = builder.start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let direct = api.direct(&alice, &bob).await;
    // More than the client's HTTP/2 window (2 MiB) and the export's queue
    // (64 records) hold: 4 MB of messages.
    let (mut ws, _) = Ws::open(&system.ws(0), &alice).await;
    let body = "x".repeat(16_000);
    for i in 0..250_i64 {
        assert_eq!(ws.send_message(i, &direct, &format!("c{i}"), &body).await["type"], "ack");
    }
    // History holds them all once the newest is stored (it stores a
    // conversation in order).
    wait_for_page(&api, &alice, &direct, |page| page.iter().any(|m| m["seq"] == 250)).await;
    let mut admin = admin(&system).await;

    let request = ExportUserRequest { user_id: alice.user_id.clone(), reason: "subject access request".into() };
    let mut stream = admin.export_user(request).await.unwrap().into_inner();
    let first = stream.message().await.expect("the first record").expect("a record");
    assert_eq!(first.kind, "profile");
    // The reader stops; the export gives up on it.
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let log = audit_log(&mut admin).await;
            let export = log.iter().find(|e| e.action == "ExportUser").map(|e| e.outcome.clone());
            if export.as_deref().is_some_and(|o| o != "pending") {
                return export.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the stalled export ends");
    assert!(outcome.starts_with("DeadlineExceeded"), "{outcome}");
    // What the reader then reads ends in that error, not a complete archive.
    let mut read = 1;
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    assert!(read < 250, "the archive stopped part-way ({read} records)");
    if let Some(status) = ended {
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    drop(stream);
    system.stop().await;
}
