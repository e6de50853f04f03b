//! Group fan-out: a group of `members`, every member connected; `SENDERS` of
//! them send `messages` messages between them, each keeping a window of sends
//! unacknowledged. The rate is delivered `message` frames per second over all
//! sockets (each message reaches every member's socket, the sender's too),
//! from the first send to the last frame. One sender by default, as the
//! target is stated; more do not add rate, since a gateway stores one
//! conversation's messages one after another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::setup::Bench;
use crate::ws;

/// Sends in flight per sender (the gateway answers "too many in flight" past 64).
const WINDOW: usize = 32;
/// Members that send.
const SENDERS: usize = 1;

pub struct Outcome {
    pub frames: u64,
    pub seconds: f64,
    /// Each process's CPU use while it ran, in % of one core.
    pub cpu: Vec<(&'static str, f64)>,
}

pub async fn run(bench: &Bench, members: usize, messages: u64) -> anyhow::Result<Outcome> {
    let users = bench.users("g", members).await;
    let (owner, others) = users.split_first().expect("a group has members");
    let ids: Vec<&str> = others.iter().map(|u| u.user_id.as_str()).collect();
    let body = json!({ "kind": "group", "title": "fan-out", "members": ids });
    let (status, group) = bench.api.post("/v1/conversations", Some(&owner.access_token), body).await;
    ensure!(status == 201, "group not created: {group}");
    let conversation_id = group["conversation_id"].as_str().unwrap_or_default().to_owned();

    let senders = SENDERS.min(users.len()) as u64;
    let expected = messages * users.len() as u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let url = bench.ws();
    let mut readers = Vec::new();
    let mut sending = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let (sink, source) = ws::open(&url, &user.access_token).await?.split();
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let share =
            if (i as u64) < senders { messages / senders + u64::from((i as u64) < messages % senders) } else { 0 };
        readers.push(tokio::spawn(read(source, delivered.clone(), messages, (share, acks_tx))));
        if share > 0 {
            sending.push((sink, acks, share));
        } else {
            drop(sink);
        }
    }
    let cpu_before = bench.cpu_seconds();
    let started = Instant::now();
    let tasks: Vec<_> = sending
        .into_iter()
        .map(|(sink, acks, share)| tokio::spawn(send(sink, acks, share, conversation_id.clone())))
        .collect();
    for task in tasks {
        task.await??;
    }
    let mut last_frame = started;
    for reader in readers {
        last_frame = last_frame.max(reader.await?);
    }
    let seconds = last_frame.duration_since(started).as_secs_f64();
    let cpu = bench.cpu_since(cpu_before).into_iter().map(|(name, used)| (name, used * 100.0 / seconds)).collect();
    let frames = delivered.load(Ordering::Relaxed);
    ensure!(frames == expected, "{frames} of {expected} frames delivered");
    Ok(Outcome { frames, seconds, cpu })
}

/// Counts this socket's `message` frames until it has all `messages`, and
/// passes the `acks.0` acks (or a refusal) its sender waits for on to it.
/// Returns when the last frame arrived.
async fn read(
    mut source: futures::stream::SplitStream<ws::Socket>,
    delivered: Arc<AtomicU64>,
    messages: u64,
    (mut acks_due, acks): (u64, mpsc::UnboundedSender<Result<(), String>>),
) -> Instant {
    let mut got = 0;
    let mut last = Instant::now();
    while got < messages || acks_due > 0 {
        match tokio::time::timeout(Duration::from_secs(10), source.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                // Only the senders' messages count, not the group's system messages.
                if text.contains(r#""type":"message""#) && !text.contains(r#""system":{"#) {
                    got += 1;
                    last = Instant::now();
                    delivered.fetch_add(1, Ordering::Relaxed);
                } else if text.contains(r#""type":"ack""#) {
                    acks_due = acks_due.saturating_sub(1);
                    let _ = acks.send(Ok(()));
                } else if text.contains(r#""type":"error""#) {
                    let _ = acks.send(Err(text.to_string()));
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    last
}

async fn send(
    mut sink: futures::stream::SplitSink<ws::Socket, Message>,
    mut acks: mpsc::UnboundedReceiver<Result<(), String>>,
    share: u64,
    conversation_id: String,
) -> anyhow::Result<()> {
    let (mut sent, mut acked) = (0, 0);
    while acked < share {
        while sent < share && sent - acked < WINDOW as u64 {
            sent += 1;
            sink.send(ws::send_frame(sent, &conversation_id)).await?;
        }
        match tokio::time::timeout(Duration::from_secs(10), acks.recv()).await {
            Ok(Some(Ok(()))) => acked += 1,
            Ok(Some(Err(refusal))) => bail!("a send was refused: {refusal}"),
            _ => bail!("a sender's socket stopped answering"),
        }
    }
    Ok(())
}
