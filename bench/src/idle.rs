//! Idle connections: the whole system's memory per authenticated, idle
//! WebSocket, counting every process that may grow with connections (the
//! gateways, nats-server, presence, notification, history, auth). Two steps:
//!
//! - one socket for each of many devices, on one gateway: what a connection
//!   costs every process when each is a device of its own;
//! - many more sockets over several gateway processes, the same devices
//!   holding many sockets each: whether the gateways' cost stays flat at scale.
//!
//! The load generator holds the sockets, the many of the second step in
//! helper processes of its own (`chat-bench hold-sockets`), since one process
//! may hold only so many files here (20,000, a limit root cannot raise in
//! this container). Each process's resident memory is read from /proc before
//! and after the measured sockets open; nats-server's live heap after a
//! forced collection instead, as its resident memory often did not grow at
//! all (the Go runtime reuses what it freed after the warm-up).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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
    measure(bench, &gateway, &targets(warm_up), &targets(measured), devices.len(), None).await
}

/// `connections` sockets spread over `gateways` processes (the first and
/// `gateways - 1` started here), the devices taking turns, held by helper
/// processes of `per_helper` sockets each.
pub async fn spread(
    bench: &Bench,
    devices: &[Device],
    gateways: usize,
    connections: usize,
    per_helper: usize,
) -> anyhow::Result<Outcome> {
    let mut extra = Vec::new();
    for n in 1..gateways {
        extra.push(bench.system.start_gateway(n).await);
    }
    let all: Vec<&ServiceProcess> = std::iter::once(&bench.system.gateway).chain(extra.iter()).collect();
    let targets: Vec<(String, String)> = (0..all.len() * WARM_UP + connections)
        .map(|i| (all[i % all.len()].ws(), devices[i % devices.len()].access_token.clone()))
        .collect();
    let (warm_up, measured) = targets.split_at(all.len() * WARM_UP);
    measure(bench, &all, warm_up, measured, devices.len(), Some(per_helper)).await
}

/// Sockets held open, here or by helper processes, until dropped.
struct Held {
    _here: Vec<ws::Socket>,
    /// Each helper holds its sockets until its stdin closes (it is killed with the handle).
    _helpers: Vec<tokio::process::Child>,
}

/// Opens `targets` in helper processes of `per_helper` sockets each, or here.
async fn hold(targets: &[(String, String)], per_helper: Option<usize>) -> anyhow::Result<Held> {
    let Some(per_helper) = per_helper else {
        return Ok(Held { _here: open_all(targets).await?, _helpers: Vec::new() });
    };
    let mut helpers = Vec::new();
    for chunk in targets.chunks(per_helper.max(1)) {
        let mut helper = tokio::process::Command::new(std::env::current_exe()?)
            .arg("hold-sockets")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = helper.stdin.take().context("the helper's stdin")?;
        let lines: String = chunk.iter().map(|(url, token)| format!("{url} {token}\n")).collect();
        stdin.write_all(format!("{}\n{lines}", chunk.len()).as_bytes()).await?;
        let mut stdout = BufReader::new(helper.stdout.take().context("the helper's stdout")?).lines();
        let answer = stdout.next_line().await?.unwrap_or_default();
        ensure!(answer == format!("held {}", chunk.len()), "a helper could not open its sockets: {answer}");
        // Kept open: the helper holds its sockets until this closes.
        helper.stdin = Some(stdin);
        helpers.push(helper);
    }
    Ok(Held { _here: Vec::new(), _helpers: helpers })
}

/// `chat-bench hold-sockets`: reads a count and then that many `url token`
/// lines from stdin, opens every socket, answers `held N` (or what failed),
/// and holds them until stdin closes.
pub async fn hold_sockets() -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let mut stdin = std::io::stdin().lock().lines();
    let count: usize = stdin.next().context("a count")??.parse()?;
    let mut targets = Vec::with_capacity(count);
    for _ in 0..count {
        let line = stdin.next().context("a target")??;
        let (url, token) = line.split_once(' ').context("`url token`")?;
        targets.push((url.to_owned(), token.to_owned()));
    }
    drop(stdin);
    match open_all(&targets).await {
        Ok(held) => {
            println!("held {}", held.len());
            // Until the parent closes stdin (or is gone).
            tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().count()).await?;
            drop(held);
        }
        Err(e) => println!("{e:#}"),
    }
    Ok(())
}

async fn measure(
    bench: &Bench,
    gateways: &[&ServiceProcess],
    warm_up: &[(String, String)],
    measured: &[(String, String)],
    devices: usize,
    per_helper: Option<usize>,
) -> anyhow::Result<Outcome> {
    let held = open_all(warm_up).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = memory(bench, gateways).await?;
    let measured_held = hold(measured, per_helper).await?;
    // Presence and notification learn of sockets through NATS: let them settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = memory(bench, gateways).await?;
    drop((held, measured_held));
    let per_connection = |(name, after): (&'static str, u64), before: u64| {
        (name, after.saturating_sub(before) as f64 / measured.len() as f64)
    };
    let bytes_per_connection = after.into_iter().zip(before).map(|(a, (_, b))| per_connection(a, b)).collect();
    Ok(Outcome { connections: measured.len(), devices, gateways: gateways.len(), bytes_per_connection })
}

/// Resident bytes of the gateways together, then of every other process of
/// the system (not the load generator); for a single nats-server, its live
/// heap after a collection ([`Bench::nats_live_heap`]).
async fn memory(bench: &Bench, gateways: &[&ServiceProcess]) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let mut gateways_bytes = 0;
    for gateway in gateways {
        gateways_bytes += resident_bytes(gateway.pid().unwrap_or(0))?;
    }
    let mut all = vec![("gateways", gateways_bytes)];
    for (name, pid) in bench.processes() {
        match name {
            "gateway" | "load generator" => {}
            "nats-server" => all.push((name, bench.nats_live_heap().await?)),
            _ => all.push((name, resident_bytes(pid)?)),
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
