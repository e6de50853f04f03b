//! Group fan-out: a group of `members`, every member connected, and one of
//! them sending. First `messages` messages with a window of sends
//! unacknowledged: the rate is delivered `message` frames per second over all
//! sockets (each message reaches every member's socket, the sender's too),
//! from the first send to the last frame. Then [`PACED`] messages one at a
//! time: for each, the time from its send until the last member has it.
//! One sender, as the target is stated; more do not add rate, since a
//! gateway stores one conversation's messages one after another. Before
//! that, the members connect one after another, timed and metered: each
//! connect is a member's first socket, so it loads that member's conversations.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::setup::{Bench, Spent};
use crate::stats::Samples;
use crate::ws;

/// Sends in flight (the gateway answers "too many in flight" past 64).
const WINDOW: u64 = 32;
/// Messages sent one at a time after the flat-out part.
pub const PACED: usize = 20;
/// Most users one request names (the gateway's limit); a larger group is
/// created with the first of them and grown by adding the rest.
const NAMED_PER_REQUEST: usize = 256;

pub struct Outcome {
    pub frames: u64,
    pub seconds: f64,
    /// What every process spent during the flat-out part.
    pub spent: Spent,
    /// Microseconds from a paced message's send until its last member had it.
    pub to_last_member: Samples,
    /// Seconds for every member to connect, one after another, and what
    /// every process spent meanwhile.
    pub connecting: (f64, Spent),
}

/// What every member's reader records.
#[derive(Default)]
struct Received {
    frames: u64,
    last_frame: Option<Instant>,
    /// Per paced message, the latest arrival so far (µs after its send).
    paced: [u64; PACED],
}

pub async fn run(bench: &Bench, members: usize, messages: u64) -> anyhow::Result<Outcome> {
    let users = bench.users(&format!("g{members}x"), members).await;
    let conversation_id = create_group(bench, &users).await?;

    let received = Arc::new(Mutex::new(Received::default()));
    let url = bench.ws();
    let (acks_tx, mut acks) = mpsc::unbounded_channel();
    let mut sink = None;
    let mut readers = Vec::new();
    let before = bench.meter().await;
    let connecting_since = Instant::now();
    for (i, user) in users.iter().enumerate() {
        let (writer, source) = ws::open(&url, &user.access_token).await?.split();
        let acks = (i == 0).then(|| acks_tx.clone());
        readers.push(tokio::spawn(read(source, received.clone(), messages, acks)));
        if i == 0 {
            sink = Some(writer);
        }
    }
    let connecting = (connecting_since.elapsed().as_secs_f64(), bench.spent_since(before).await);
    let mut sink = sink.expect("the owner sends");
    let frames_of = |count: u64| count * users.len() as u64;

    let before = bench.meter().await;
    let started = Instant::now();
    send(&mut sink, &mut acks, &conversation_id, 1..=messages).await?;
    let last_frame = wait_for(&received, frames_of(messages)).await?;
    let spent = bench.spent_since(before).await;
    let seconds = last_frame.duration_since(started).as_secs_f64();

    for n in 1..=PACED as u64 {
        send(&mut sink, &mut acks, &conversation_id, messages + n..=messages + n).await?;
        wait_for(&received, frames_of(messages + n)).await?;
    }
    let mut to_last_member = Samples::default();
    for latest in received.lock().expect("readers do not panic").paced {
        to_last_member.push(latest);
    }
    for reader in readers {
        reader.abort();
    }
    Ok(Outcome { frames: frames_of(messages), seconds, spent, to_last_member, connecting })
}

/// A group of `users`, the first its owner.
async fn create_group(bench: &Bench, users: &[chat_system_tests::client::Device]) -> anyhow::Result<String> {
    let (owner, others) = users.split_first().expect("a group has members");
    let ids: Vec<&str> = others.iter().map(|u| u.user_id.as_str()).collect();
    let mut chunks = ids.chunks(NAMED_PER_REQUEST);
    let body = json!({ "kind": "group", "title": "fan-out", "members": chunks.next().unwrap_or_default() });
    let (status, group) = bench.api.post("/v1/conversations", Some(&owner.access_token), body).await;
    ensure!(status == 201, "group not created: {group}");
    let conversation_id = group["conversation_id"].as_str().unwrap_or_default().to_owned();
    for chunk in chunks {
        let path = format!("/v1/conversations/{conversation_id}/members");
        let (status, body) = bench.api.post(&path, Some(&owner.access_token), json!({ "members": chunk })).await;
        ensure!(status == 200, "members not added: {status} {body}");
    }
    Ok(conversation_id)
}

/// Waits until the members together have `frames` messages; returns when
/// the last of them arrived.
async fn wait_for(received: &Mutex<Received>, frames: u64) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let received = received.lock().expect("readers do not panic");
            if received.frames >= frames {
                return Ok(received.last_frame.unwrap_or_else(Instant::now));
            }
            ensure!(Instant::now() < deadline, "{} of {frames} frames delivered", received.frames);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Records this socket's `message` frames (the first `flat_out` counted, the
/// paced ones after them timed), and passes acks and refusals on to the
/// sender when this is the sender's socket.
async fn read(
    mut source: futures::stream::SplitStream<ws::Socket>,
    received: Arc<Mutex<Received>>,
    flat_out: u64,
    acks: Option<mpsc::UnboundedSender<Result<(), String>>>,
) {
    let mut got = 0;
    while let Some(Ok(frame)) = source.next().await {
        let Message::Text(text) = frame else { continue };
        // Only the sender's messages count, not the group's system messages.
        if text.contains(r#""type":"message""#) && !text.contains(r#""system":{"#) {
            let now = Instant::now();
            let mut received = received.lock().expect("readers do not panic");
            received.frames += 1;
            received.last_frame = Some(now);
            if got >= flat_out
                && let Some(sent_at) = ws::sent_at(&text)
            {
                let paced = (got - flat_out) as usize;
                let latency = ws::now_micros().saturating_sub(sent_at);
                if let Some(latest) = received.paced.get_mut(paced) {
                    *latest = (*latest).max(latency);
                }
            }
            got += 1;
        } else if let Some(acks) = &acks {
            if text.contains(r#""type":"ack""#) {
                let _ = acks.send(Ok(()));
            } else if text.contains(r#""type":"error""#) {
                let _ = acks.send(Err(text.to_string()));
            }
        }
    }
}

/// Sends the messages numbered `numbers`, [`WINDOW`] unacknowledged at most,
/// and waits for every ack.
async fn send(
    sink: &mut futures::stream::SplitSink<ws::Socket, Message>,
    acks: &mut mpsc::UnboundedReceiver<Result<(), String>>,
    conversation_id: &str,
    numbers: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<()> {
    let (mut next, last) = numbers.into_inner();
    let mut unacked = 0;
    while next <= last || unacked > 0 {
        while next <= last && unacked < WINDOW {
            sink.send(ws::send_frame(next, conversation_id)).await?;
            (next, unacked) = (next + 1, unacked + 1);
        }
        match tokio::time::timeout(Duration::from_secs(10), acks.recv()).await {
            Ok(Some(Ok(()))) => unacked -= 1,
            Ok(Some(Err(refusal))) => bail!("a send was refused: {refusal}"),
            _ => bail!("the sender's socket stopped answering"),
        }
    }
    Ok(())
}
