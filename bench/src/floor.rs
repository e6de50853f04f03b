//! The floor: what the hardware and the two building blocks allow, measured
//! in the same run. A NATS hop (async-nats publish to a subscriber on the
//! same nats-server) and a bare WebSocket echo server (tokio-tungstenite with
//! the gateway's buffer sizes, no logic, run as its own process like the
//! gateway) on the same box.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::stats::Samples;
use crate::ws;

/// Publish-to-subscriber latency at `rate` messages/s for `duration`.
pub async fn nats_hop(url: &str, rate: u64, duration: Duration) -> anyhow::Result<Samples> {
    let publisher = async_nats::connect(url).await?;
    let subscriber = async_nats::connect(url).await?;
    let mut subscription = subscriber.subscribe("bench.floor").await?;
    subscriber.flush().await?;
    let count = (rate as f64 * duration.as_secs_f64()) as u64;
    let reader = tokio::spawn(async move {
        let mut samples = Samples::default();
        while (samples.len() as u64) < count {
            match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
                Ok(Some(message)) => {
                    let sent: u64 =
                        std::str::from_utf8(&message.payload).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                    samples.push(ws::now_micros().saturating_sub(sent));
                }
                _ => break,
            }
        }
        samples
    });
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..count {
        tick.tick().await;
        publisher.publish("bench.floor", ws::now_micros().to_string().into()).await?;
    }
    publisher.flush().await?;
    Ok(reader.await?)
}

/// Messages per second through one NATS hop, publishing as fast as possible,
/// timed to the last message received. Core NATS drops messages for a
/// subscriber that falls behind; those are not counted.
pub async fn nats_throughput(url: &str, count: u64) -> anyhow::Result<f64> {
    let publisher = async_nats::connect(url).await?;
    let subscriber = async_nats::connect(url).await?;
    let mut subscription = subscriber.subscribe("bench.floor.max").await?;
    subscriber.flush().await?;
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = 0;
        let mut last = started;
        while got < count {
            match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
                Ok(Some(_)) => {
                    got += 1;
                    last = Instant::now();
                }
                _ => break,
            }
        }
        (got, last)
    });
    let body = bytes::Bytes::from_static(b"a message of typical length, about as long as most chat lines are");
    for _ in 0..count {
        publisher.publish("bench.floor.max", body.clone()).await?;
    }
    publisher.flush().await?;
    let (got, last) = reader.await?;
    Ok(got as f64 / last.duration_since(started).as_secs_f64().max(1e-6))
}

/// Serves a bare WebSocket echo on `addr` until killed (`chat-bench echo-server`).
pub async fn echo_server(addr: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut socket) = tokio_tungstenite::accept_async_with_config(stream, Some(ws::config())).await else {
                return;
            };
            while let Some(Ok(frame)) = socket.next().await {
                if frame.is_text() && socket.send(frame).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The echo server as a child process of this binary.
pub struct EchoServer {
    child: tokio::process::Child,
    pub url: String,
}

impl EchoServer {
    pub async fn start() -> anyhow::Result<Self> {
        let addr = chat_system_tests::processes::free_addr();
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["echo-server", &addr.to_string()])
            .kill_on_drop(true)
            .spawn()?;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, url: format!("ws://{addr}/") })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn connect(&self) -> anyhow::Result<ws::Socket> {
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(self.url.as_str(), Some(ws::config()), true).await?;
        Ok(socket)
    }
}

/// Round-trip latency through the echo server: `connections` sockets sending
/// `rate` frames/s in total for `duration`.
pub async fn echo_round_trip(
    echo: &EchoServer,
    connections: usize,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Samples> {
    let period = Duration::from_secs_f64(connections as f64 / rate as f64);
    let per_socket = (duration.as_secs_f64() / period.as_secs_f64()).round() as u64;
    let mut tasks = Vec::new();
    for i in 0..connections {
        let (mut sink, mut source) = echo.connect().await?.split();
        let reader = tokio::spawn(async move {
            let mut samples = Samples::default();
            while (samples.len() as u64) < per_socket {
                match tokio::time::timeout(Duration::from_secs(5), source.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        samples.push(ws::now_micros().saturating_sub(text.parse().unwrap_or(0)));
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            samples
        });
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(period.mul_f64(i as f64 / connections as f64)).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..per_socket {
                tick.tick().await;
                if sink.send(Message::Text(ws::now_micros().to_string().into())).await.is_err() {
                    break;
                }
            }
            let samples = reader.await.unwrap_or_default();
            let _ = sink.close().await;
            samples
        }));
    }
    let mut samples = Samples::default();
    for task in tasks {
        samples.extend(task.await?);
    }
    Ok(samples)
}

/// Frames per second the echo server returns with `connections` sockets each
/// keeping `window` frames in flight, for `duration`.
pub async fn echo_throughput(echo: &EchoServer, connections: usize, duration: Duration) -> anyhow::Result<f64> {
    const WINDOW: usize = 32;
    let echoed = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut socket = echo.connect().await?;
        let echoed = echoed.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..WINDOW {
                if socket.send(Message::Text("x".repeat(64).into())).await.is_err() {
                    return;
                }
            }
            while tokio::time::Instant::now() < deadline {
                match socket.next().await {
                    Some(Ok(frame)) => {
                        echoed.fetch_add(1, Ordering::Relaxed);
                        if socket.send(frame).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
            let _ = socket.close(None).await;
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await?;
    }
    Ok(echoed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Connects (upgrade only) per second to the echo server with `concurrency`
/// connectors for `duration`.
pub async fn echo_connects(echo: &EchoServer, concurrency: usize, duration: Duration) -> anyhow::Result<f64> {
    let url = Arc::new(echo.url.clone());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (url, done) = (url.clone(), done.clone());
            tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    let connected =
                        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws::config()), true);
                    if let Ok((mut socket, _)) = connected.await {
                        done.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.close(None).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
