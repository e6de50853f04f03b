//! chat-bench: measurements of the running system against the floor the box
//! allows, speaking only protocol v1 to the gateway. `scripts/bench` runs
//! `chat-bench all` on a release build; BENCHMARKS.md records the results.
//!
//! ```text
//! chat-bench [all|floor|latency|max-rate|fanout|catch-up|idle|connect|connect-curve|history-depth|ingest|media] [--quick] [--postgres] [--nats-sync-always | --nats-cluster] [--gateways N] [--out FILE]
//! ```
//! `--quick` runs every scenario at a tiny size (the test suite's smoke test).
//! `--postgres` runs auth and history on PostgreSQL (`DATABASE_ADMIN_URL`)
//! instead of SQLite, and meters PostgreSQL's CPU with the services'.
//! `--nats-cluster` runs the system on three nats-servers in a cluster (each
//! in a network namespace of its own where it can) with every stream at three
//! replicas, in place of one nats-server. `--gateways N` starts N - 1 more
//! gateways that hold no socket: each reads every stream entry as any gateway
//! of a deployment does, so their CPU (and nats-server's) is what one more
//! gateway costs per message.

mod catch_up;
mod connect;
mod connect_curve;
mod fanout;
mod floor;
mod history_depth;
mod idle;
mod ingest;
mod latency;
mod media;
mod report;
mod setup;
mod stats;
mod ws;

use std::time::Duration;

use anyhow::{Context, bail};
use report::{Report, count, ms, ratio};
use setup::Bench;
use stats::Samples;

/// How big each scenario is.
struct Sizes {
    pairs: usize,
    latency_rates: Vec<u64>,
    /// Sending before each latency or rate step is measured.
    warm_up_seconds: u64,
    latency_seconds: u64,
    max_rate_steps: Vec<u64>,
    step_seconds: u64,
    /// Members of the group, one run each.
    group_members: Vec<usize>,
    /// Frames each fan-out run delivers flat out (members × messages).
    group_frames: u64,
    /// Missed messages a device catches up on, one run each.
    catch_up: Vec<u64>,
    gateways: usize,
    idle_connections: usize,
    /// Devices (each a user of its own) holding the idle sockets.
    idle_devices: usize,
    /// Sockets each helper process of the load generator holds (one process
    /// may hold 20,000 files here).
    idle_per_helper: usize,
    echo_idle_connections: usize,
    /// Sockets being opened at once, one connect step each; the first also
    /// sizes the echo floor's connects.
    connect_in_flight: Vec<usize>,
    connect_seconds: u64,
    /// Messages in history at each step of the paging and search curve.
    history_depth: Vec<u64>,
    /// Conversations of the user whose connects are measured, one step each.
    connect_curve: Vec<usize>,
    ingest: ingest::Options,
    /// MiB of the file uploaded and downloaded, and of each crowd upload.
    media_mib: usize,
    /// Clients uploading at once.
    media_clients: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            pairs: 100,
            latency_rates: vec![1_000, 5_000],
            warm_up_seconds: 3,
            latency_seconds: 10,
            max_rate_steps: vec![2_000, 4_000, 6_000, 8_000, 10_000, 12_000, 15_000, 20_000],
            step_seconds: 10,
            group_members: vec![100, 1_000, 10_000],
            group_frames: 500_000,
            catch_up: vec![1_000, 10_000, 100_000],
            gateways: 4,
            idle_connections: 50_000,
            idle_devices: 2_000,
            idle_per_helper: 12_500,
            echo_idle_connections: 4_000,
            connect_in_flight: vec![50, 200],
            connect_seconds: 10,
            connect_curve: vec![10, 1_000, 10_000],
            history_depth: vec![1_000_000, 10_000_000],
            ingest: ingest::Options { messages: 50_000, conversations: 200 },
            media_mib: 100,
            media_clients: 20,
        }
    }

    fn quick() -> Self {
        Self {
            pairs: 4,
            latency_rates: vec![100],
            warm_up_seconds: 0,
            latency_seconds: 1,
            max_rate_steps: vec![100, 200],
            step_seconds: 1,
            group_members: vec![3, 6],
            group_frames: 60,
            catch_up: vec![20],
            gateways: 2,
            idle_connections: 100,
            idle_devices: 40,
            idle_per_helper: 40,
            echo_idle_connections: 100,
            connect_in_flight: vec![4, 8],
            connect_seconds: 1,
            connect_curve: vec![2, 5],
            history_depth: vec![2_000, 5_000],
            ingest: ingest::Options { messages: 500, conversations: 10 },
            media_mib: 2,
            media_clients: 2,
        }
    }
}

impl Sizes {
    /// One latency step at `rate`: the warm-up, then `seconds` measured.
    async fn step(
        &self,
        bench: &Bench,
        pairs: &[latency::Pair],
        rate: u64,
        seconds: u64,
    ) -> anyhow::Result<latency::Outcome> {
        let warm_up = Duration::from_secs(self.warm_up_seconds);
        latency::run_at(bench, pairs, rate, warm_up, Duration::from_secs(seconds)).await
    }
}

/// What the floor measured, for the ratios.
#[derive(Default)]
struct Floor {
    /// Echo round trip plus one NATS hop, p50 and p99 (µs), at 1,000/s.
    path_p50: u64,
    path_p99: u64,
    nats_per_second: f64,
    echo_frames_per_second: f64,
    echo_connects_per_second: f64,
    echo_bytes_per_connection: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // On SIGINT or SIGTERM the run is dropped rather than the process killed,
    // so the services and nats-server it started are killed with their handles.
    tokio::select! {
        result = run() => result,
        () = chat_common::shutdown::signal() => bail!("interrupted"),
    }
}

async fn run() -> anyhow::Result<()> {
    setup::raise_open_files_limit();
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "all".to_owned());
    if scenario == "hold-sockets" {
        return idle::hold_sockets().await;
    }
    if scenario == "ingest-once" {
        // For scripts/bench-instructions: one SQLite ingest of N messages
        // (batch 1,024), run under callgrind.
        let messages: u64 = args.next().context("ingest-once needs a message count")?.parse()?;
        return ingest::once_on_sqlite(messages).await;
    }
    if scenario == "echo-server" {
        return floor::echo_server(&args.next().context("echo-server needs an address")?).await;
    }
    let mut sizes = Sizes::full();
    let mut out = std::path::PathBuf::from("target/bench/results.md");
    let mut sync_always = false;
    let mut cluster = false;
    let mut postgres = false;
    let mut gateways = 1;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--quick" => sizes = Sizes::quick(),
            "--nats-sync-always" => sync_always = true,
            "--nats-cluster" => cluster = true,
            "--postgres" => postgres = true,
            "--out" => out = args.next().context("--out needs a file")?.into(),
            "--gateways" => gateways = args.next().context("--gateways needs a count")?.parse()?,
            _ => bail!("unknown option {flag}"),
        }
    }
    let known = [
        "all",
        "floor",
        "latency",
        "max-rate",
        "fanout",
        "catch-up",
        "idle",
        "connect",
        "connect-curve",
        "history-depth",
        "ingest",
        "media",
    ];
    if !known.contains(&scenario.as_str()) {
        bail!(
            "usage: chat-bench [{}] [--quick] [--postgres] [--nats-sync-always | --nats-cluster] [--gateways N] [--out FILE]",
            known.join("|")
        );
    }
    let wants = |name: &str| scenario == "all" || scenario == name;
    let mut report = Report::default();
    let sync = if sync_always {
        "JetStream syncing every write to disk"
    } else {
        "JetStream's default sync (every 2 minutes)"
    };
    let nats =
        if cluster { "three nats-servers in a cluster, every stream at three replicas" } else { "one nats-server" };
    let database = if postgres { "PostgreSQL" } else { "SQLite" };
    let others = match gateways {
        0 => bail!("--gateways counts the gateway that holds the sockets: at least 1"),
        1 => String::new(),
        n => format!("; {} more gateways following the stream", n - 1),
    };
    report.note(&format!("Run of `chat-bench {scenario}` on {}; {nats}; {sync}; {database}{others}", machine()));

    let mut bench = Bench::start(sync_always, cluster, postgres).await?;
    bench.add_following_gateways(gateways - 1).await;
    // The scenarios that compare with nothing skip the floor.
    let floor = if ["ingest", "connect-curve", "history-depth", "media"].contains(&scenario.as_str()) {
        Floor::default()
    } else {
        measure_floor(&bench, &sizes, &mut report).await?
    };
    if wants("latency") || wants("max-rate") {
        let pairs = latency::pairs(&bench, sizes.pairs).await;
        if wants("latency") {
            latency_section(&bench, &pairs, &sizes, &floor, &mut report).await?;
        }
        if wants("max-rate") {
            max_rate_section(&bench, &pairs, &sizes, &floor, &mut report).await?;
        }
    }
    if wants("fanout") {
        fanout_section(&bench, &sizes, &floor, &mut report).await?;
    }
    if wants("catch-up") {
        catch_up_section(&bench, &sizes, &mut report).await?;
    }
    if wants("idle") {
        idle_section(&bench, &sizes, &floor, &mut report).await?;
    }
    if wants("connect") {
        connect_section(&bench, &sizes, &floor, &mut report).await?;
    }
    if wants("connect-curve") {
        connect_curve_section(&bench, &sizes, &mut report).await?;
    }
    if wants("history-depth") {
        history_depth_section(&bench, &sizes, &mut report).await?;
    }
    if wants("ingest") {
        ingest::run(&sizes.ingest, &mut report).await?;
    }
    if wants("media") {
        media_section(&bench, &sizes, &mut report).await?;
    }
    report.write(&out)?;
    eprintln!("\nwritten to {}", out.display());
    Ok(())
}

async fn measure_floor(bench: &Bench, sizes: &Sizes, report: &mut Report) -> anyhow::Result<Floor> {
    let seconds = Duration::from_secs(sizes.latency_seconds);
    let rate = sizes.latency_rates[0];
    let mut hop = floor::nats_hop(&bench.nats.url(), rate, seconds).await?;
    let nats_per_second = floor::nats_throughput(&bench.nats.url(), rate * 200).await?;
    let echo = floor::EchoServer::start().await?;
    let mut round_trip = floor::echo_round_trip(&echo, sizes.pairs, rate, seconds).await?;
    let echo_frames_per_second = floor::echo_throughput(&echo, sizes.pairs, seconds).await?;
    let echo_connects_per_second =
        floor::echo_connects(&echo, sizes.connect_in_flight[0], Duration::from_secs(sizes.connect_seconds)).await?;
    let echo_bytes_per_connection = echo_memory(&echo, sizes.echo_idle_connections).await?;

    report.section("Floor: the building blocks alone, same box, same run", &["measure", "result"]);
    report.row(&[&format!("NATS hop (publish → subscriber) at {rate}/s, p50 / p99"), &pair(&mut hop)]);
    report.row(&["NATS hop, publishing flat out", &format!("{} msg/s", count(nats_per_second))]);
    report.row(&[&format!("WebSocket echo round trip at {rate}/s, p50 / p99"), &pair(&mut round_trip)]);
    report.row(&[
        "WebSocket echo, 32 frames in flight per socket",
        &format!("{} frames/s", count(echo_frames_per_second)),
    ]);
    report.row(&["WebSocket echo connects", &format!("{}/s", count(echo_connects_per_second))]);
    report
        .row(&["WebSocket echo server memory per idle socket", &format!("{} bytes", count(echo_bytes_per_connection))]);
    Ok(Floor {
        path_p50: hop.percentile(50.0) + round_trip.percentile(50.0),
        path_p99: hop.percentile(99.0) + round_trip.percentile(99.0),
        nats_per_second,
        echo_frames_per_second,
        echo_connects_per_second,
        echo_bytes_per_connection,
    })
}

fn pair(samples: &mut Samples) -> String {
    format!("{} / {}", ms(samples.percentile(50.0)), ms(samples.percentile(99.0)))
}

async fn echo_memory(echo: &floor::EchoServer, connections: usize) -> anyhow::Result<f64> {
    let pid = echo.pid().context("echo server pid")?;
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(echo.connect().await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = setup::resident_bytes(pid)?;
    for _ in 0..connections {
        held.push(echo.connect().await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = setup::resident_bytes(pid)?;
    Ok(after.saturating_sub(before) as f64 / connections as f64)
}

async fn latency_section(
    bench: &Bench,
    pairs: &[latency::Pair],
    sizes: &Sizes,
    floor: &Floor,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut spent = Vec::new();
    let mut rows = Vec::new();
    for &rate in &sizes.latency_rates {
        let mut outcome = sizes.step(bench, pairs, rate, sizes.latency_seconds).await?;
        let (p50, p99, p999) =
            (outcome.samples.percentile(50.0), outcome.samples.percentile(99.0), outcome.samples.percentile(99.9));
        let target = match rate {
            1_000 => "p50 ≤ 1 ms, p99 ≤ 5 ms",
            5_000 => "p99 ≤ 10 ms",
            _ => "",
        };
        rows.push(vec![
            count(rate as f64),
            count(outcome.sent as f64),
            outcome.lost().to_string(),
            outcome.errors.to_string(),
            ms(p50),
            ms(p99),
            ms(p999),
            target.to_owned(),
            format!("{} / {}", ratio(p50 as f64, floor.path_p50 as f64), ratio(p99 as f64, floor.path_p99 as f64)),
        ]);
        spent.push((rate, outcome.measured, outcome.spent));
    }
    // What each message costs leads: unlike rates, it barely moves with the machine's pace.
    let mut columns = vec!["offered/s", "all processes"];
    if let Some((_, _, first)) = spent.first() {
        columns.extend(first.cpu.iter().map(|(name, _)| *name));
    }
    columns.push("NATS messages in / out");
    report.section(
        &format!(
            "CPU time per message (µs), by process, {} pairs, {} s after {} s of warm-up",
            sizes.pairs, sizes.latency_seconds, sizes.warm_up_seconds
        ),
        &columns,
    );
    for (rate, measured, spent) in &spent {
        let per_message = |seconds: f64| format!("{:.0}", seconds * 1e6 / (*measured).max(1) as f64);
        let mut cells = vec![count(*rate as f64), format!("**{}**", per_message(spent.total_cpu()))];
        cells.extend(spent.cpu.iter().map(|(_, seconds)| per_message(*seconds)));
        cells.push(spent.nats_messages.map_or("–".to_owned(), |(into, out)| {
            format!("{:.1} / {:.1}", into / (*measured).max(1) as f64, out / (*measured).max(1) as f64)
        }));
        report.row(&cells.iter().map(String::as_str).collect::<Vec<_>>());
    }
    report.note("Target: all processes together ≤ 250 µs per message at 1,000/s, nats-server ≤ 100 µs of it.");
    report.section(
        &format!("End-to-end latency, send to receipt on the peer's socket, {} pairs", sizes.pairs),
        &["offered/s", "sent", "lost", "errors", "p50", "p99", "p99.9", "target", "p50 / p99 to the floor"],
    );
    for row in &rows {
        report.row(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    report.note("The floor for latency is one WebSocket echo round trip plus one NATS hop, at the same rate.");
    Ok(())
}

/// Group fan-out, one run per group size.
async fn fanout_section(bench: &Bench, sizes: &Sizes, floor: &Floor, report: &mut Report) -> anyhow::Result<()> {
    report.section(
        &format!(
            "Group fan-out: one member sends {} frames' worth of messages flat out to a group whose members \
             are all connected, then {} messages one at a time",
            count(sizes.group_frames as f64),
            fanout::PACED
        ),
        &[
            "members",
            "messages",
            "frames delivered",
            "frames/s",
            "of the echo floor",
            "CPU per frame, all processes",
            "send → last member has it, p50 / p99",
            "members connecting one by one: s",
            "CPU per connect: all processes / history",
        ],
    );
    for &members in &sizes.group_members {
        let messages = (sizes.group_frames / members as u64).max(1);
        let mut outcome = fanout::run(bench, members, messages).await?;
        let per_second = outcome.frames as f64 / outcome.seconds;
        report.row(&[
            &count(members as f64),
            &count(messages as f64),
            &count(outcome.frames as f64),
            &count(per_second),
            &ratio(per_second, floor.echo_frames_per_second),
            &format!("{:.1} µs", outcome.spent.total_cpu() * 1e6 / outcome.frames as f64),
            &format!(
                "{} / {}",
                ms(outcome.to_last_member.percentile(50.0)),
                ms(outcome.to_last_member.percentile(99.0))
            ),
            &format!("{:.1}", outcome.connecting.0),
            &{
                let spent = &outcome.connecting.1;
                let history = spent.cpu.iter().find(|(name, _)| *name == "history").map_or(0.0, |(_, s)| *s);
                let per_connect = |seconds: f64| seconds * 1e6 / members as f64;
                format!("{:.0} / {:.0} µs", per_connect(spent.total_cpu()), per_connect(history))
            },
        ]);
    }
    report.note("Target: ≥ 100,000 frames/s.");
    Ok(())
}

/// Memory per idle socket, every process: one socket per device, then many
/// sockets per device over several gateways.
async fn idle_section(bench: &Bench, sizes: &Sizes, floor: &Floor, report: &mut Report) -> anyhow::Result<()> {
    let devices = idle::devices(bench, sizes.idle_devices).await;
    let one_each = idle::one_per_device(bench, &devices).await?;
    let spread = idle::spread(bench, &devices, sizes.gateways, sizes.idle_connections, sizes.idle_per_helper).await?;
    let mut columns = vec!["connections", "devices", "gateways", "all processes"];
    columns.extend(one_each.bytes_per_connection.iter().map(|(name, _)| *name));
    columns.push("target");
    report.section("Idle connections: resident memory per authenticated socket (bytes), by process", &columns);
    for outcome in [&one_each, &spread] {
        let mut cells =
            vec![count(outcome.connections as f64), count(outcome.devices as f64), outcome.gateways.to_string()];
        cells.push(format!("**{}**", count(outcome.total())));
        cells.extend(outcome.bytes_per_connection.iter().map(|(_, bytes)| count(*bytes)));
        cells.push("≤ 8,192 all processes".to_owned());
        report.row(&cells.iter().map(String::as_str).collect::<Vec<_>>());
    }
    report.note(&format!(
        "The bare echo server holds an idle socket in {} bytes.",
        count(floor.echo_bytes_per_connection)
    ));
    Ok(())
}

/// One catch-up per size: the curve of time, memory and CPU against what was missed.
async fn catch_up_section(bench: &Bench, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    report.section(
        "Catch-up: a device back after missing N messages in one conversation sends `sync` with its cursor",
        &[
            "missed",
            "seconds to `synced`",
            "messages/s",
            "gateway memory above before, at its peak",
            "CPU per message: all processes",
            "gateway",
            "history",
        ],
    );
    for &missed in &sizes.catch_up {
        let outcome = catch_up::run(bench, missed).await?;
        let per_message = |name: &str| {
            let seconds = outcome.spent.cpu.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, s)| *s);
            format!("{:.0} µs", seconds * 1e6 / missed as f64)
        };
        report.row(&[
            &count(missed as f64),
            &format!("{:.2}", outcome.seconds),
            &count(missed as f64 / outcome.seconds),
            &format!("{} KiB", count(outcome.gateway_peak_bytes as f64 / 1024.0)),
            &format!("{:.0} µs", outcome.spent.total_cpu() * 1e6 / missed as f64),
            &per_message("gateway"),
            &per_message("history"),
        ]);
    }
    Ok(())
}

/// Attachments: throughput against the disk's floor, and memory while many upload.
async fn media_section(bench: &Bench, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let mib = sizes.media_mib;
    let run = media::throughput(bench, bench.data_dir(), mib).await?;
    report.section(
        &format!(
            "Attachments: one {mib} MiB file uploaded through the gateway and media to the directory store, \
             then downloaded, against the same bytes written to and read from a file on the same disk"
        ),
        &["", "MiB/s", "of the floor", "CPU per MiB: all processes", "gateway", "media"],
    );
    let per_mib = |spent: &setup::Spent, name: &str| {
        let seconds = spent.cpu.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, s)| *s);
        format!("{:.1} ms", seconds * 1e3 / mib as f64)
    };
    report.row(&["floor: write", &count(run.floor_write), "", "", "", ""]);
    report.row(&["floor: read", &count(run.floor_read), "", "", "", ""]);
    for (what, rate, floor, spent) in [
        ("upload", run.upload, run.floor_write, &run.upload_spent),
        ("download", run.download, run.floor_read, &run.download_spent),
    ] {
        report.row(&[
            what,
            &count(rate),
            &ratio(rate, floor),
            &format!("{:.1} ms", spent.total_cpu() * 1e3 / mib as f64),
            &per_mib(spent, "gateway"),
            &per_mib(spent, "media"),
        ]);
    }
    let clients = sizes.media_clients;
    let crowd = media::crowd(bench, clients, mib).await?;
    report.section(
        &format!("Attachments: {clients} clients upload {mib} MiB each at once"),
        &["seconds", "MiB/s in all", "media memory above before, at its peak", "gateway, the same"],
    );
    report.row(&[
        &format!("{:.1}", crowd.seconds),
        &count((clients * mib) as f64 / crowd.seconds),
        &format!("{} MiB", count(crowd.media_peak_bytes as f64 / 1_048_576.0)),
        &format!("{} MiB", count(crowd.gateway_peak_bytes as f64 / 1_048_576.0)),
    ]);
    Ok(())
}

/// Paging and search latency against the number of messages stored.
async fn history_depth_section(bench: &Bench, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let mut columns = vec!["messages stored"];
    columns.extend(history_depth::REQUESTS);
    report.section(
        &format!(
            "Paging (50 messages) and search (20 results) over HTTP as history grows: one user's {} \
             conversations hold every message; p50 / p99 of up to 50 requests one after another (at least 3 \
             where they take over 30 s together)",
            history_depth::CONVERSATIONS
        ),
        &columns,
    );
    let mut history = history_depth::History::new(bench).await?;
    for &messages in &sizes.history_depth {
        let started = std::time::Instant::now();
        history.grow_to(bench, messages).await?;
        eprintln!("history holds {messages} messages ({:.0} s to fill)", started.elapsed().as_secs_f64());
        let mut cells = vec![count(messages as f64)];
        for (mut samples, failed) in history.measure(bench).await? {
            let mut cell = format!("{} / {}", ms(samples.percentile(50.0)), ms(samples.percentile(99.0)));
            if failed > 0 {
                cell.push_str(&format!(" ({failed} of {} failed)", failed + samples.len()));
            }
            cells.push(cell);
        }
        report.row(&cells.iter().map(String::as_str).collect::<Vec<_>>());
    }
    Ok(())
}

/// Connects with authentication, one step per number in flight.
async fn connect_section(bench: &Bench, sizes: &Sizes, floor: &Floor, report: &mut Report) -> anyhow::Result<()> {
    report.section(
        "Connect and authenticate: clients in a loop, each opening a socket, waiting for `ready`, closing it",
        &["in flight", "connects", "failures", "per second", "to `ready` p50", "p99", "of the echo floor"],
    );
    let mut notes = Vec::new();
    for &in_flight in &sizes.connect_in_flight {
        let mut outcome = connect::run(bench, in_flight, Duration::from_secs(sizes.connect_seconds)).await?;
        report.row(&[
            &in_flight.to_string(),
            &count(outcome.connects as f64),
            &outcome.failures.to_string(),
            &count(outcome.per_second),
            &ms(outcome.to_ready.percentile(50.0)),
            &ms(outcome.to_ready.percentile(99.0)),
            &ratio(outcome.per_second, floor.echo_connects_per_second),
        ]);
        let cpu: Vec<String> =
            outcome.cpu_per_connect.iter().map(|(name, micros)| format!("{name} {micros:.0} µs")).collect();
        notes.push(format!("CPU per connect at {in_flight} in flight: {}.", cpu.join(", ")));
    }
    notes.push("Targets: ≥ 5,000 connects/s at 50 in flight; p99 ≤ 100 ms at 200 in flight.".to_owned());
    report.note(&notes.join(" "));
    Ok(())
}

/// Connect cost against the user's conversations: one curve point per size.
async fn connect_curve_section(bench: &Bench, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    report.section(
        "Connect cost against the user's conversations: one client connects, waits for `ready`, closes, again",
        &["conversations", "connects", "to `ready` p50", "p99", "CPU per connect: all processes", "gateway", "history"],
    );
    let mut member = connect_curve::Member::new(bench).await;
    for &conversations in &sizes.connect_curve {
        member.grow_to(bench, conversations).await?;
        let seconds = Duration::from_secs(sizes.connect_seconds);
        let mut outcome = member.connect(bench, seconds, 20).await?;
        let per_connect = |seconds: f64| format!("{:.0} µs", seconds * 1e6 / outcome.connects as f64);
        let of = |name: &str| outcome.spent.cpu.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, s)| *s);
        report.row(&[
            &count(conversations as f64),
            &count(outcome.connects as f64),
            &ms(outcome.to_ready.percentile(50.0)),
            &ms(outcome.to_ready.percentile(99.0)),
            &per_connect(outcome.spent.total_cpu()),
            &per_connect(of("gateway")),
            &per_connect(of("history")),
        ]);
    }
    Ok(())
}

/// Steps the offered rate up until p99 passes 50 ms or anything is lost.
async fn max_rate_section(
    bench: &Bench,
    pairs: &[latency::Pair],
    sizes: &Sizes,
    floor: &Floor,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.section(
        &format!(
            "Maximum sustainable rate, {} pairs, {} s per step after {} s of warm-up",
            sizes.pairs, sizes.step_seconds, sizes.warm_up_seconds
        ),
        &["offered/s", "sent", "lost", "errors", "p99", "sustained", "CPU per message, all processes"],
    );
    let mut best = 0;
    for &rate in &sizes.max_rate_steps {
        let mut outcome = sizes.step(bench, pairs, rate, sizes.step_seconds).await?;
        let p99 = outcome.samples.percentile(99.0);
        let sustained = outcome.lost() == 0 && outcome.errors == 0 && p99 < 50_000;
        report.row(&[
            &count(rate as f64),
            &count(outcome.sent as f64),
            &outcome.lost().to_string(),
            &outcome.errors.to_string(),
            &ms(p99),
            if sustained { "yes" } else { "no" },
            &format!("{:.0} µs", outcome.spent.total_cpu() * 1e6 / outcome.measured.max(1) as f64),
        ]);
        if !sustained {
            break;
        }
        best = rate;
    }
    // Issue 19's targets: 15,000 on SQLite, 10,000 with PostgreSQL.
    let target = if bench.postgres { "10,000" } else { "15,000" };
    report.note(&format!(
        "Maximum sustainable rate: **{} messages/s** (target ≥ {target}); {} of the NATS hop flat out.",
        count(best as f64),
        ratio(best as f64, floor.nats_per_second)
    ));
    Ok(())
}

/// CPU model, cores and memory, from /proc.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name")).map(|v| v.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = memory
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    format!("{} ({cores} cores, {:.0} GiB)", model.unwrap_or("unknown CPU"), kib / 1024.0 / 1024.0)
}
