//! Groups: roles, renames, members coming and going, all recorded in the
//! conversation as system messages; a removed member gets nothing sent after
//! the removal, live, in catch-up or by paging; outsiders read nothing.

use std::time::Duration;

use chat_proto::events::v1::MemberRole;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::history::v1::{
    Actor, ChangeMessageRequest, CreateConversationRequest, GetConversationRequest, ListMessagesRequest,
    SetMemberRoleRequest,
};
use chat_system_tests::{Db, System, Ws, on_both_databases};
use serde_json::{Value, json};

on_both_databases!(group_lifecycle_with_roles_system_messages_and_removal);

/// The contracts' enums over gRPC, as a hostile or out-of-date caller sends
/// them: a value no build defines (up to `i32::MAX`), the unspecified zero,
/// and the owner's role, which only history hands out. Each is refused with
/// the reason and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_values_no_build_defines_are_refused_over_grpc() {
    chat_system_tests::within_limit(async {
        let system = System::start(Db::Sqlite).await.expect("sqlite needs no server");
        let api = system.api();
        let (alice, bob) = (api.new_user("enum_alice").await, api.new_user("enum_bob").await);
        let (status, group) = api
            .post(
                "/v1/conversations",
                Some(&alice.access_token),
                json!({ "kind": "group", "title": "g", "members": [bob.user_id] }),
            )
            .await;
        assert_eq!(status, 201, "{group}");
        let group = group["conversation_id"].as_str().unwrap().to_owned();
        let actor = Some(Actor { user_id: alice.user_id.clone(), device_id: alice.device_id.clone() });
        let mut history = HistoryServiceClient::connect(format!("http://{}", system.history_addr)).await.unwrap();
        for kind in [0, 3, i32::MAX, -1] {
            let refused = history
                .create_conversation(CreateConversationRequest {
                    creator_id: alice.user_id.clone(),
                    kind,
                    member_ids: vec![bob.user_id.clone()],
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "kind {kind}: {refused:?}");
            assert!(refused.message().contains("kind must be"), "{refused:?}");
        }
        for role in [0, MemberRole::Owner as i32, i32::MAX] {
            let refused = history
                .set_member_role(SetMemberRoleRequest {
                    conversation_id: group.clone(),
                    actor: actor.clone(),
                    user_id: bob.user_id.clone(),
                    role,
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "role {role}: {refused:?}");
        }
        for change in [0, i32::MAX] {
            let refused = history
                .change_message(ChangeMessageRequest {
                    conversation_id: group.clone(),
                    message_id: uuid::Uuid::now_v7().to_string(),
                    actor: actor.clone(),
                    change,
                    body: "x".into(),
                    by_operator: false,
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "change {change}: {refused:?}");
        }
        // Nothing changed: bob is still a plain member, and the HTTP words still hold.
        let (status, body) = api.get(&format!("/v1/conversations/{group}"), Some(&alice.access_token)).await;
        assert_eq!(status, 200, "{body}");
        let roles = body["member_roles"].as_array().unwrap();
        assert!(roles.iter().any(|r| r["user_id"] == bob.user_id.as_str() && r["role"] == "member"), "{body}");
        let path = format!("/v1/conversations/{group}/members/{}", bob.user_id);
        let nul_role = Some(json!({ "role": "owner\0" }));
        let (status, body) = api.request(reqwest::Method::PATCH, &path, Some(&alice.access_token), nul_role).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_argument")), "{body}");
        system.stop().await;
    })
    .await;
}

/// The next `message` frame must be a system message of `event`; returns it.
async fn expect_system(ws: &mut Ws, event: &str) -> Value {
    let frame = ws.expect("message").await;
    assert_eq!(frame["message"]["system"]["event"], event, "{frame}");
    frame
}

async fn group_lifecycle_with_roles_system_messages_and_removal(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    let dave = api.new_user("dave").await;
    let erin = api.new_user("erin").await;
    let (mut a, _) = Ws::open(&system.ws(0), &alice).await;
    let (mut b, _) = Ws::open(&system.ws(0), &bob).await;
    let (mut c, carol_ready) = Ws::open(&system.ws(0), &carol).await;
    let carol_start = carol_ready["cursor"].as_str().unwrap().to_owned();
    let (mut d, _) = Ws::open(&system.ws(0), &dave).await;

    let (status, created) = api
        .post(
            "/v1/conversations",
            Some(&alice.access_token),
            json!({ "kind": "group", "title": " Team ", "members": [bob.user_id, carol.user_id] }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["title"], "Team");
    let group = created["conversation_id"].as_str().unwrap().to_owned();
    assert!(
        created["member_roles"].as_array().unwrap().contains(&json!({ "user_id": alice.user_id, "role": "owner" }))
    );
    for ws in [&mut a, &mut b, &mut c] {
        let frame = expect_system(ws, "created").await;
        assert_eq!(frame["message"]["seq"], 1);
        assert_eq!(frame["message"]["system"]["title"], "Team");
    }
    a.send_message(1, &group, "hi", "hello team").await;
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(ws.expect("message").await["message"]["seq"], 2);
    }

    let path = format!("/v1/conversations/{group}");
    let patch = |token: String, path: String, body: Value| {
        let api = system.api();
        async move { api.request(reqwest::Method::PATCH, &path, Some(&token), Some(body)).await }
    };
    // A plain member may not rename; the owner makes bob an admin, who may.
    let (status, body) = patch(bob.access_token.clone(), path.clone(), json!({ "title": "Mine" })).await;
    assert_eq!((status, body["error"]["code"].clone()), (403, Value::from("forbidden")));
    let (status, _) =
        patch(alice.access_token.clone(), format!("{path}/members/{}", bob.user_id), json!({ "role": "admin" })).await;
    assert_eq!(status, 200);
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(expect_system(ws, "role_changed").await["message"]["system"]["role"], "admin");
    }
    let (status, renamed) = patch(bob.access_token.clone(), path.clone(), json!({ "title": "Team 2" })).await;
    assert_eq!((status, renamed["title"].clone()), (200, Value::from("Team 2")));
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(expect_system(ws, "renamed").await["message"]["system"]["title"], "Team 2");
    }

    // bob adds dave, who is told at once.
    let (status, _) =
        api.post(&format!("{path}/members"), Some(&bob.access_token), json!({ "members": [dave.user_id] })).await;
    assert_eq!(status, 200);
    for ws in [&mut a, &mut b, &mut c, &mut d] {
        let frame = expect_system(ws, "members_added").await;
        assert_eq!(frame["message"]["seq"], 5);
        assert_eq!(frame["message"]["system"]["user_ids"], json!([dave.user_id]));
    }
    // bob removes carol: she hears of it, and of nothing after.
    let (status, _) = api
        .request(reqwest::Method::DELETE, &format!("{path}/members/{}", carol.user_id), Some(&bob.access_token), None)
        .await;
    assert_eq!(status, 204);
    for ws in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(expect_system(ws, "member_removed").await["message"]["seq"], 6);
    }
    a.send_message(2, &group, "after", "after carol left").await;
    for ws in [&mut a, &mut b, &mut d] {
        assert_eq!(ws.expect("message").await["message"]["seq"], 7);
    }
    c.expect_silence(Duration::from_millis(300)).await;
    let refused = c.send_message(3, &group, "c-late", "let me back").await;
    assert_eq!(refused["code"], "forbidden");
    // A change naming her now says who was not found, not the conversation.
    let carol_path = format!("{path}/members/{}", carol.user_id);
    let (status, body) = patch(alice.access_token.clone(), carol_path.clone(), json!({ "role": "admin" })).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (404, Some("that user is not a member of this conversation"))
    );
    let (status, body) = api.request(reqwest::Method::DELETE, &carol_path, Some(&alice.access_token), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");

    // Paging stops at her removal; the list no longer shows the group.
    api.wait_for_history(&alice, &group, 7).await;
    let (status, page) = api.messages(&carol, &group, "?limit=50").await;
    assert_eq!(status, 200);
    let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let (_, later) = api.messages(&carol, &group, "?after_seq=6").await;
    assert_eq!((later["messages"].as_array().unwrap().len(), later["has_more"].clone()), (0, Value::from(false)));
    let (_, list) = api.get("/v1/conversations", Some(&carol.access_token)).await;
    assert!(list["conversations"].as_array().unwrap().iter().all(|c| c["conversation_id"] != group.as_str()));

    // The same over gRPC; and an outsider reads nothing at all.
    let mut history = HistoryServiceClient::connect(format!("http://{}", system.history_addr)).await.unwrap();
    let page = history
        .list_messages(ListMessagesRequest {
            conversation_id: group.clone(),
            user_id: carol.user_id.clone(),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.messages.last().map(|m| m.seq), Some(6));
    for members_only in [false, true] {
        let denied = history
            .get_conversation(GetConversationRequest {
                conversation_id: group.clone(),
                user_id: carol.user_id.clone(),
                members_only,
            })
            .await
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "members only: {members_only}");
    }
    // What a membership check asks: the members and the last seq, nothing per message.
    let members_only = history
        .get_conversation(GetConversationRequest {
            conversation_id: group.clone(),
            user_id: alice.user_id.clone(),
            members_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(members_only.member_ids.contains(&alice.user_id) && !members_only.member_ids.contains(&carol.user_id));
    assert!(members_only.last_seq >= 6, "{members_only:?}");
    assert_eq!((members_only.last_message, members_only.read_markers.len()), (None, 0));
    let denied = history
        .list_messages(ListMessagesRequest {
            conversation_id: group.clone(),
            user_id: erin.user_id.clone(),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(api.messages(&erin, &group, "").await.0, 403);

    // Carol reconnects from a cursor older than the group: up to the removal, nothing newer.
    let (mut back, _) = Ws::open(&format!("{}?cursor={carol_start}", system.ws(0)), &carol).await;
    let mut replayed = Vec::new();
    loop {
        let frame = back.next_json().await;
        match frame["type"].as_str() {
            Some("message") if frame["message"]["conversation_id"] == group.as_str() => {
                replayed.push(frame["message"]["seq"].as_u64().unwrap());
            }
            Some("synced") => break,
            _ => panic!("unexpected frame in catch-up: {frame}"),
        }
    }
    assert_eq!(replayed, vec![1, 2, 3, 4, 5, 6], "catch-up stops at her removal");

    // dave leaves; nobody can remove the owner; a direct conversation has fixed members.
    let (status, _) = api
        .request(reqwest::Method::DELETE, &format!("{path}/members/{}", dave.user_id), Some(&dave.access_token), None)
        .await;
    assert_eq!(status, 204);
    for ws in [&mut a, &mut b, &mut d] {
        assert_eq!(expect_system(ws, "member_left").await["message"]["seq"], 8);
    }
    let (status, _) = api
        .request(reqwest::Method::DELETE, &format!("{path}/members/{}", alice.user_id), Some(&bob.access_token), None)
        .await;
    assert_eq!(status, 403);
    let direct = api.direct(&alice, &erin).await;
    let (status, body) = api
        .post(
            &format!("/v1/conversations/{direct}/members"),
            Some(&alice.access_token),
            json!({ "members": [bob.user_id] }),
        )
        .await;
    assert_eq!((status, body["error"]["code"].clone()), (409, Value::from("conflict")));

    // The owner leaves: the admin inherits the group.
    let (status, _) = api
        .request(reqwest::Method::DELETE, &format!("{path}/members/{}", alice.user_id), Some(&alice.access_token), None)
        .await;
    assert_eq!(status, 204);
    let (_, seen_by_bob) = api.get(&path, Some(&bob.access_token)).await;
    assert_eq!(seen_by_bob["member_roles"], json!([{ "user_id": bob.user_id, "role": "owner" }]));
    assert_eq!(seen_by_bob["members"], json!([bob.user_id]));
    system.stop().await;
}

/// The operator's group limit (`HISTORY_MAX_GROUP_MEMBERS`, here 3) holds on
/// creation and on every addition, with the reason, and a refused addition
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_grows_no_larger_than_the_operators_limit() {
    chat_system_tests::within_limit(async {
        let system = System::builder()
            .history_config(|c| c.max_group_members = 3)
            .start(Db::Sqlite)
            .await
            .expect("sqlite needs no server");
        let api = system.api();
        let mut users = Vec::new();
        for name in ["cap_alice", "cap_bob", "cap_carol", "cap_dave"] {
            users.push(api.new_user(name).await);
        }
        let (alice, rest) = users.split_first().unwrap();
        let ids: Vec<&str> = rest.iter().map(|u| u.user_id.as_str()).collect();

        let too_many = json!({ "kind": "group", "title": "four", "members": ids });
        let (status, refused) = api.post("/v1/conversations", Some(&alice.access_token), too_many).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("at most 3 members"), "{refused}");

        let three = json!({ "kind": "group", "title": "three", "members": ids[..2] });
        let (status, group) = api.post("/v1/conversations", Some(&alice.access_token), three).await;
        assert_eq!(status, 201, "{group}");
        let group = group["conversation_id"].as_str().unwrap().to_owned();
        let members = format!("/v1/conversations/{group}/members");
        let (status, refused) = api.post(&members, Some(&alice.access_token), json!({ "members": [ids[2]] })).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("at most 3 members"), "{refused}");

        let (_, listed) = api.get("/v1/conversations", Some(&alice.access_token)).await;
        let listed = listed["conversations"].as_array().unwrap();
        let stored = listed.iter().find(|c| c["conversation_id"] == group.as_str()).expect("the group");
        assert_eq!(stored["members"].as_array().map(Vec::len), Some(3), "{stored}");
        assert_eq!(listed.len(), 1, "the refused group was not created: {listed:?}");
        system.stop().await;
    })
    .await;
}
