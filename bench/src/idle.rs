//! Idle connections: the whole system's memory per authenticated, idle
//! WebSocket, counting every process that may grow with connections (the
//! gateways, nats-server, presence, notification, history, auth). Two steps:
//!
//! - one socket for each of many devices, on one gateway: what a connection
//!   costs every process when each is a device of its own;
//! - many more sockets over several gateway processes, the same devices
//!   holding many sockets each: whether the gateways' cost stays flat at scale.
//!
//! The load generator holds every socket; each process's resident memory is
//! read from /proc before and after the measured sockets open.

use std::time::Duration;

use chat_system_tests::client::Device;
use chat_system_tests::processes::ServiceProcess;
use futures::StreamExt;

use crate::setup::{Bench, resident_bytes};
use crate::ws;

/// Connections opened at once.
const CONCURRENCY: usize = 64;
/// Sockets per gateway opened before the first reading, so one-time
/// allocations (pools, caches) are not counted per connection.
const WARM_UP: usize = 200;

pub struct Outcome {
    pub connections: usize,
    pub devices: usize,
    pub gateways: usize,
    /// Bytes per measured connection by process, the gateways summed.
    pub bytes_per_connection: Vec<(&'static str, f64)>,
}

impl Outcome {
    pub fn total(&self) -> f64 {
        self.bytes_per_connection.iter().map(|(_, bytes)| bytes).sum()
    }
}

/// Devices for both steps: `count` users with one device each.
pub async fn devices(bench: &Bench, count: usize) -> Vec<Device> {
    bench.users("i", count).await
}

/// One socket per device on the first gateway.
pub async fn one_per_device(bench: &Bench, devices: &[Device]) -> anyhow::Result<Outcome> {
    let gateway = [&bench.system.gateway];
    let (warm_up, measured) = devices.split_at(WARM_UP.min(devices.len() / 4));
    let targets = |devices: &[Device]| -> Vec<(String, String)> {
        devices.iter().map(|d| (bench.ws(), d.access_token.clone())).collect()
    };
    measure(bench, &gateway, &targets(warm_up), &targets(measured), devices.len()).await
}

/// `connections` sockets spread over `gateways` processes (the first and
/// `gateways - 1` started here), the devices taking turns.
pub async fn spread(bench: &Bench, devices: &[Device], gateways: usize, connections: usize) -> anyhow::Result<Outcome> {
    let mut extra = Vec::new();
    for n in 1..gateways {
        extra.push(bench.system.start_gateway(n).await);
    }
    let all: Vec<&ServiceProcess> = std::iter::once(&bench.system.gateway).chain(extra.iter()).collect();
    let targets: Vec<(String, String)> = (0..all.len() * WARM_UP + connections)
        .map(|i| (all[i % all.len()].ws(), devices[i % devices.len()].access_token.clone()))
        .collect();
    let (warm_up, measured) = targets.split_at(all.len() * WARM_UP);
    measure(bench, &all, warm_up, measured, devices.len()).await
}

async fn measure(
    bench: &Bench,
    gateways: &[&ServiceProcess],
    warm_up: &[(String, String)],
    measured: &[(String, String)],
    devices: usize,
) -> anyhow::Result<Outcome> {
    let mut held = open_all(warm_up).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = resident(bench, gateways)?;
    held.extend(open_all(measured).await?);
    // Presence and notification learn of sockets through NATS: let them settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = resident(bench, gateways)?;
    drop(held);
    let per_connection = |(name, after): (&'static str, u64), before: u64| {
        (name, after.saturating_sub(before) as f64 / measured.len() as f64)
    };
    let bytes_per_connection = after.into_iter().zip(before).map(|(a, (_, b))| per_connection(a, b)).collect();
    Ok(Outcome { connections: measured.len(), devices, gateways: gateways.len(), bytes_per_connection })
}

/// Resident bytes of the gateways together, then of every other process of
/// the system (not the load generator).
fn resident(bench: &Bench, gateways: &[&ServiceProcess]) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let mut gateways_bytes = 0;
    for gateway in gateways {
        gateways_bytes += resident_bytes(gateway.pid().unwrap_or(0))?;
    }
    let mut all = vec![("gateways", gateways_bytes)];
    for (name, pid) in bench.processes() {
        if name != "gateway" && name != "load generator" {
            all.push((name, resident_bytes(pid)?));
        }
    }
    Ok(all)
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
