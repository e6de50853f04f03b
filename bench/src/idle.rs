//! Idle connections: server memory per authenticated, idle WebSocket. The
//! connections are spread over several gateway processes (the per-process
//! open-file limit here is about 20,000) and held by this process; each
//! gateway's resident memory is read from /proc before and after.

use std::time::Duration;

use futures::StreamExt;

use crate::setup::{Bench, resident_bytes};
use crate::ws;

/// Connections opened at once.
const CONCURRENCY: usize = 64;
/// Connections per gateway opened before the first reading, so one-time
/// allocations (pools, caches) are not counted per connection.
const WARM_UP: usize = 200;

pub struct Outcome {
    pub connections: usize,
    pub gateways: usize,
    pub bytes_per_connection: f64,
}

pub async fn run(bench: &Bench, gateways: usize, connections: usize) -> anyhow::Result<Outcome> {
    let mut extra = Vec::new();
    for n in 1..gateways {
        extra.push(bench.system.start_gateway(n).await);
    }
    let all: Vec<&chat_system_tests::processes::ServiceProcess> =
        std::iter::once(&bench.system.gateway).chain(extra.iter()).collect();
    let devices = bench.users("i", 20).await;
    let targets: Vec<(String, String)> = (0..all.len() * WARM_UP + connections)
        .map(|i| (all[i % all.len()].ws(), devices[i % devices.len()].access_token.clone()))
        .collect();
    let (warm_up, measured) = targets.split_at(all.len() * WARM_UP);

    let mut held = open_all(warm_up).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<u64> = all.iter().map(|g| resident_bytes(g.pid().unwrap_or(0))).collect::<Result<_, _>>()?;
    held.extend(open_all(measured).await?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<u64> = all.iter().map(|g| resident_bytes(g.pid().unwrap_or(0))).collect::<Result<_, _>>()?;
    let grown: u64 = after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).sum();
    drop(held);
    Ok(Outcome { connections, gateways: all.len(), bytes_per_connection: grown as f64 / connections as f64 })
}

async fn open_all(targets: &[(String, String)]) -> anyhow::Result<Vec<ws::Socket>> {
    futures::stream::iter(targets)
        .map(|(url, token)| ws::open(url, token))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}
