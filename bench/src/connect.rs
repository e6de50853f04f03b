//! Connects with authentication per second: `concurrency` clients each open a
//! socket with a bearer token, wait for `ready` (token checked, the device's
//! conversations and waiting deliveries read), close it, and go again. Each
//! connect is timed from the TCP connect to `ready`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::setup::Bench;
use crate::stats::Samples;
use crate::ws;

pub struct Outcome {
    pub connects: u64,
    pub failures: u64,
    pub per_second: f64,
    /// Microseconds from the TCP connect to `ready`, successful connects only.
    pub to_ready: Samples,
    /// CPU microseconds per connect, by process.
    pub cpu_per_connect: Vec<(&'static str, f64)>,
}

pub async fn run(bench: &Bench, concurrency: usize, duration: Duration) -> anyhow::Result<Outcome> {
    // A few sockets per user at a time, well below the gateway's limit per user.
    let devices = bench.users(&format!("c{concurrency}x"), concurrency.div_ceil(8).max(1)).await;
    let url = Arc::new(bench.ws());
    let (connects, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = tokio::time::Instant::now() + duration;
    let cpu_before = bench.cpu_seconds();
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let token = devices[i % devices.len()].access_token.clone();
            let (url, connects, failures) = (url.clone(), connects.clone(), failures.clone());
            tokio::spawn(async move {
                let mut to_ready = Samples::default();
                while tokio::time::Instant::now() < deadline {
                    let opened = Instant::now();
                    match ws::open(&url, &token).await {
                        Ok(mut socket) => {
                            to_ready.push(opened.elapsed().as_micros() as u64);
                            connects.fetch_add(1, Ordering::Relaxed);
                            let _ = socket.close(None).await;
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                to_ready
            })
        })
        .collect();
    let mut to_ready = Samples::default();
    for task in tasks {
        to_ready.extend(task.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let connects = connects.load(Ordering::Relaxed);
    let per_connect = |used: f64| used * 1e6 / connects.max(1) as f64;
    let cpu_per_connect =
        bench.cpu_since(cpu_before).into_iter().map(|(name, used)| (name, per_connect(used))).collect();
    Ok(Outcome {
        connects,
        failures: failures.load(Ordering::Relaxed),
        per_second: connects as f64 / seconds,
        to_ready,
        cpu_per_connect,
    })
}
