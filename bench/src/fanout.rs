//! Group fan-out: one sender, a group of `members` with every member
//! connected; the sender sends `messages` messages, keeping a window of them
//! unacknowledged; the rate is delivered `message` frames per second over all
//! receivers, from the first send to the last frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::setup::Bench;
use crate::ws;

/// Sends in flight at once (the gateway answers "too many in flight" past 64).
const WINDOW: usize = 32;

pub struct Outcome {
    pub frames: u64,
    pub seconds: f64,
}

pub async fn run(bench: &Bench, members: usize, messages: u64) -> anyhow::Result<Outcome> {
    let users = bench.users("g", members).await;
    let (owner, others) = users.split_first().expect("a group has members");
    let ids: Vec<&str> = others.iter().map(|u| u.user_id.as_str()).collect();
    let (status, group) = bench
        .api
        .post(
            "/v1/conversations",
            Some(&owner.access_token),
            json!({ "kind": "group", "title": "fan-out", "members": ids }),
        )
        .await;
    ensure!(status == 201, "group not created: {group}");
    let conversation_id = group["conversation_id"].as_str().unwrap_or_default().to_owned();

    let url = bench.ws();
    let delivered = Arc::new(AtomicU64::new(0));
    let expected = messages * others.len() as u64;
    let mut readers = Vec::new();
    for member in others {
        let (_sink, mut source) = ws::open(&url, &member.access_token).await?.split();
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            let _keep_open = _sink;
            let mut got = 0;
            while got < messages {
                match tokio::time::timeout(Duration::from_secs(10), source.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) if text.contains(r#""type":"message""#) => {
                        got += 1;
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
        }));
    }
    let (mut sink, mut source) = ws::open(&url, &owner.access_token).await?.split();
    let started = Instant::now();
    let mut sent = 0;
    let mut acked = 0;
    while acked < messages {
        while sent < messages && sent - acked < WINDOW as u64 {
            sent += 1;
            sink.send(ws::send_frame(sent, &conversation_id)).await?;
        }
        match tokio::time::timeout(Duration::from_secs(10), source.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains(r#""type":"ack""#) => acked += 1,
            Ok(Some(Ok(Message::Text(text)))) if text.contains(r#""type":"error""#) => {
                anyhow::bail!("a send was refused: {text}")
            }
            Ok(Some(Ok(_))) => {}
            _ => anyhow::bail!("the sender's socket stopped answering"),
        }
    }
    for reader in readers {
        reader.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let frames = delivered.load(Ordering::Relaxed);
    ensure!(frames == expected, "{frames} of {expected} frames delivered");
    Ok(Outcome { frames, seconds })
}
