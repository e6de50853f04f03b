//! End-to-end latency at a fixed offered rate, and the maximum sustainable
//! rate. Pairs of users in direct conversations; each sender sends on a fixed
//! schedule (open loop: a slow system does not slow the senders down) and the
//! time from `send` to the `message` frame on the receiver's socket is taken
//! for every message. Nothing may be lost. Each step sends for a warm-up
//! first; latency and what the system spends (CPU by process, NATS messages)
//! are taken over the rest of the step only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chat_common::shutdown::CancellationToken;
use chat_system_tests::client::Device;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::setup::{Bench, Spent};
use crate::stats::Samples;
use crate::ws;

pub struct Pair {
    conversation_id: String,
    sender: Device,
    receiver: Device,
}

pub async fn pairs(bench: &Bench, count: usize) -> Vec<Pair> {
    let senders = bench.users("s", count).await;
    let receivers = bench.users("r", count).await;
    let mut pairs = Vec::with_capacity(count);
    for (sender, receiver) in senders.into_iter().zip(receivers) {
        let conversation_id = bench.api.direct(&sender, &receiver).await;
        pairs.push(Pair { conversation_id, sender, receiver });
    }
    pairs
}

pub struct Outcome {
    /// What the system spent while `measured` messages were sent.
    pub spent: Spent,
    pub measured: u64,
    pub sent: u64,
    pub received: u64,
    /// `error` frames answered to sends (refusals, overload).
    pub errors: u64,
    pub samples: Samples,
}

impl Outcome {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

/// How long receivers wait for stragglers after the last send.
const DRAIN: Duration = Duration::from_secs(5);

/// Sends `rate` messages per second in total, spread over the pairs, for
/// `warm_up` and then `duration`, which is measured.
pub async fn run_at(
    bench: &Bench,
    pairs: &[Pair],
    rate: u64,
    warm_up: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let url = bench.ws();
    let mut receivers = Vec::with_capacity(pairs.len());
    let mut senders = Vec::with_capacity(pairs.len());
    for pair in pairs {
        receivers.push(ws::open(&url, &pair.receiver.access_token).await?);
        senders.push(ws::open(&url, &pair.sender.access_token).await?);
    }
    let received = Arc::new(AtomicU64::new(0));
    let sends = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let readers: Vec<_> = receivers
        .into_iter()
        .map(|socket| tokio::spawn(receive(socket, received.clone(), measuring.clone(), stop.clone())))
        .collect();

    let count = pairs.len();
    let period = Duration::from_secs_f64(count as f64 / rate as f64);
    let per_sender = ((warm_up + duration).as_secs_f64() / period.as_secs_f64()).round() as u64;
    let writers: Vec<_> = senders
        .into_iter()
        .zip(pairs)
        .enumerate()
        .map(|(i, (socket, pair))| {
            let (mut sink, mut source) = socket.split();
            let conversation_id = pair.conversation_id.clone();
            let errors = errors.clone();
            let sends = sends.clone();
            let stop = stop.clone();
            // Acks and errors come back on the sender's own socket.
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        frame = source.next() => match frame {
                            Some(Ok(Message::Text(text))) if text.contains(r#""type":"error""#) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                    }
                }
            });
            tokio::spawn(async move {
                // Senders start spread over one period, not all at once.
                tokio::time::sleep(period.mul_f64(i as f64 / count as f64)).await;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for req in 1..=per_sender {
                    tick.tick().await;
                    if sink.send(ws::send_frame(req, &conversation_id)).await.is_err() {
                        return req - 1;
                    }
                    sends.fetch_add(1, Ordering::Relaxed);
                }
                per_sender
            })
        })
        .collect();
    tokio::time::sleep(warm_up).await;
    let before = bench.meter().await;
    let sent_before = sends.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for writer in writers {
        sent += writer.await?;
    }
    let deadline = tokio::time::Instant::now() + DRAIN;
    while received.load(Ordering::Relaxed) < sent && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let spent = bench.spent_since(before).await;
    let measured = sends.load(Ordering::Relaxed) - sent_before;
    stop.cancel();
    let mut samples = Samples::default();
    for reader in readers {
        samples.extend(reader.await?);
    }
    Ok(Outcome {
        spent,
        measured,
        sent,
        received: received.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        samples,
    })
}

async fn receive(
    socket: ws::Socket,
    received: Arc<AtomicU64>,
    measuring: Arc<AtomicBool>,
    stop: CancellationToken,
) -> Samples {
    let (_sink, mut source) = socket.split();
    let mut samples = Samples::default();
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            frame = source.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                if let Some(sent_at) = ws::sent_at(&text) {
                    if measuring.load(Ordering::Relaxed) {
                        samples.push(ws::now_micros().saturating_sub(sent_at));
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    samples
}
