//! Catch-up: a device is away while `missed` messages arrive in its
//! conversation, then comes back and sends `sync` with the cursor it had.
//! Measured: the time from `sync` to `synced` (every missed message received,
//! in order, once), the gateway's memory above what it held before the sync
//! (sampled while it ran), and the CPU each process spent per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::setup::{Bench, Spent};
use crate::ws;

/// Sends in flight while the backlog is made (the gateway allows 64).
const WINDOW: u64 = 32;

pub struct Outcome {
    pub seconds: f64,
    /// The gateway's resident memory at its highest during the catch-up,
    /// above where it was before.
    pub gateway_peak_bytes: u64,
    pub spent: Spent,
}

pub async fn run(bench: &Bench, missed: u64) -> anyhow::Result<Outcome> {
    let users = bench.users(&format!("k{missed}x"), 2).await;
    let (sender, reader) = (&users[0], &users[1]);
    let conversation_id = bench.api.direct(sender, reader).await;
    let url = bench.ws();
    let (away, cursor) = ws::open_ready(&url, &reader.access_token).await?;
    drop(away);

    send_backlog(&url, &sender.access_token, &conversation_id, missed).await?;
    wait_for_history(bench, reader, &conversation_id, missed).await?;

    let gateway = bench.system.gateway.pid().context("the gateway's pid")?;
    let (socket, _) = ws::open_ready(&url, &reader.access_token).await?;
    let (mut sink, mut source) = socket.split();
    let idle_bytes = crate::setup::resident_bytes(gateway)?;
    let peak = Arc::new(AtomicU64::new(idle_bytes));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(bytes) = crate::setup::resident_bytes(gateway) {
                    peak.fetch_max(bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let before = bench.meter().await;
    let started = Instant::now();
    sink.send(Message::Text(json!({ "type": "sync", "req": 1, "cursor": cursor }).to_string().into())).await?;
    let mut next_seq = 1;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(120), source.next())
            .await
            .context("catch-up stalled")?
            .context("the socket closed during catch-up")??;
        let Message::Text(text) = frame else { continue };
        let frame: serde_json::Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("message") => {
                ensure!(frame["message"]["seq"] == next_seq, "expected seq {next_seq}, got {frame}");
                next_seq += 1;
            }
            Some("synced") => break,
            Some("error") => anyhow::bail!("catch-up refused: {frame}"),
            _ => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let spent = bench.spent_since(before).await;
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    ensure!(next_seq - 1 == missed, "{} of {missed} missed messages came back", next_seq - 1);
    Ok(Outcome { seconds, gateway_peak_bytes: peak.load(Ordering::Relaxed).saturating_sub(idle_bytes), spent })
}

/// Sends `count` messages, `WINDOW` at a time, and waits for every ack.
async fn send_backlog(url: &str, token: &str, conversation_id: &str, count: u64) -> anyhow::Result<()> {
    let (mut sink, mut source) = ws::open(url, token).await?.split();
    let (mut sent, mut acked) = (0, 0);
    while acked < count {
        while sent < count && sent - acked < WINDOW {
            sent += 1;
            sink.send(ws::send_frame(sent, conversation_id)).await?;
        }
        let frame = source.next().await.context("the sender's socket closed")??;
        if let Message::Text(text) = frame {
            ensure!(!text.contains(r#""type":"error""#), "a send was refused: {text}");
            if text.contains(r#""type":"ack""#) {
                acked += 1;
            }
        }
    }
    Ok(())
}

/// Waits until history has stored the conversation's `count` messages.
async fn wait_for_history(
    bench: &Bench,
    reader: &chat_system_tests::client::Device,
    conversation_id: &str,
    count: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, page) = bench.api.messages(reader, conversation_id, "?limit=1").await;
        if page["messages"][0]["seq"] == count {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "history did not store {count} messages in time: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
