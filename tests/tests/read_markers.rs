//! Read markers: a move reaches the user's other devices and the other
//! members (never the device that made it), never goes backwards or past the
//! newest message, drives unread counts, and is part of catch-up.

use std::time::Duration;

use chat_system_tests::{Db, Device, System, Ws, on_both_databases};
use serde_json::{Value, json};

on_both_databases!(read_markers_sync_across_devices_and_members_and_drive_unread_counts);

async fn unread(system: &System, device: &Device) -> u64 {
    let (status, body) = system.api().get("/v1/conversations", Some(&device.access_token)).await;
    assert_eq!(status, 200, "{body}");
    body["conversations"][0]["unread_count"].as_u64().expect("unread_count")
}

async fn wait_unread(system: &System, device: &Device, expected: u64) {
    for _ in 0..100 {
        if unread(system, device).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("unread count of {} never became {expected}", device.username);
}

fn read(conversation: &str, seq: u64) -> Value {
    json!({ "type": "read", "conversation_id": conversation, "seq": seq })
}

async fn read_markers_sync_across_devices_and_members_and_drive_unread_counts(db: Db) {
    let Some(system) = System::start(db).await else { return };
    let api = system.api();
    let phone = api.new_user("alice").await;
    let laptop = api.login("alice").await;
    let bob = api.new_user("bob").await;
    let bob_tablet = api.login("bob").await;
    let conversation = api.direct(&phone, &bob).await;
    let (mut phone_ws, _) = Ws::open(&system.ws(0), &phone).await;
    let (mut laptop_ws, _) = Ws::open(&system.ws(0), &laptop).await;
    let (mut bob_ws, _) = Ws::open(&system.ws(0), &bob).await;
    let (tablet_ws, tablet_ready) = Ws::open(&system.ws(0), &bob_tablet).await;
    let tablet_cursor = tablet_ready["cursor"].as_str().unwrap().to_owned();
    drop(tablet_ws);

    for i in 1..=5 {
        bob_ws.send_message(i, &conversation, &format!("b{i}"), "hi").await;
    }
    for socket in [&mut phone_ws, &mut laptop_ws, &mut bob_ws] {
        for _ in 0..5 {
            socket.expect("message").await;
        }
    }
    wait_unread(&system, &phone, 5).await;

    // The phone reads up to 3: the laptop and bob hear of it, the phone does not.
    phone_ws.send_json(read(&conversation, 3)).await;
    for socket in [&mut laptop_ws, &mut bob_ws] {
        let frame = socket.expect("read").await;
        assert_eq!(
            frame,
            json!({ "type": "read", "conversation_id": conversation, "user_id": phone.user_id, "seq": 3 })
        );
    }
    phone_ws.expect_silence(Duration::from_millis(200)).await;
    wait_unread(&system, &laptop, 2).await;
    assert_eq!(unread(&system, &bob).await, 0, "bob's own messages are never unread for him");

    // Backwards is ignored.
    laptop_ws.send_json(read(&conversation, 2)).await;
    phone_ws.expect_silence(Duration::from_millis(300)).await;
    bob_ws.expect_silence(Duration::from_millis(10)).await;
    assert_eq!(unread(&system, &phone).await, 2);

    // Past the newest message is capped at it.
    laptop_ws.send_json(read(&conversation, 999)).await;
    assert_eq!(phone_ws.expect("read").await["seq"], 5);
    assert_eq!(bob_ws.expect("read").await["seq"], 5);
    laptop_ws.expect_silence(Duration::from_millis(200)).await;
    wait_unread(&system, &phone, 0).await;

    // Refused reads get an error and change nothing.
    let mallory = api.new_user("mallory").await;
    let (mut mallory_ws, _) = Ws::open(&system.ws(0), &mallory).await;
    mallory_ws.send_json(read(&conversation, 1)).await;
    assert_eq!(mallory_ws.expect("error").await["code"], "forbidden");
    mallory_ws.send_json(read(&conversation, 0)).await;
    assert_eq!(mallory_ws.expect("error").await["code"], "invalid_argument");

    // bob's tablet was away: it catches up on the messages, then alice's latest marker.
    let (mut tablet, _) = Ws::open(&format!("{}?cursor={tablet_cursor}", system.ws(0)), &bob_tablet).await;
    for seq in 1..=5 {
        assert_eq!(tablet.expect("message").await["message"]["seq"], seq);
    }
    let marker = tablet.expect("read").await;
    assert_eq!((marker["user_id"].as_str(), marker["seq"].as_u64()), (Some(phone.user_id.as_str()), Some(5)));
    tablet.expect("synced").await;
    system.stop().await;
}
