//! The system under test: a pinned nats-server (or a three-node cluster of
//! them with every stream at three replicas, `--nats-cluster`) and the five
//! service binaries of this build (release for `scripts/bench`) as processes
//! on SQLite (or PostgreSQL, `--postgres`), with the login and registration
//! limits raised so setting up users is quick, and the gateway's brakes
//! raised so they do not cap what is measured. It meters what every process
//! spends: CPU time from /proc (PostgreSQL's processes summed) and the
//! messages nats-server moves, from its monitoring endpoint.

use anyhow::Context as _;
use chat_system_tests::NatsServer;
use chat_system_tests::client::{Api, Device};
use chat_system_tests::cluster::NatsCluster;
use chat_system_tests::database::admin_url;
use chat_system_tests::processes::{Databases, Processes};
use futures::StreamExt;

/// One nats-server, or a cluster of three.
pub enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

/// What the CPU tables call the cluster's nodes.
const NODE_NAMES: [&str; 3] = ["nats n1", "nats n2", "nats n3"];

impl Nats {
    /// The services' `NATS_URL`.
    pub fn urls(&self) -> String {
        match self {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.urls(),
        }
    }

    /// One server's URL: the floor measures a hop through one server.
    pub fn url(&self) -> String {
        self.urls().split(',').next().unwrap_or_default().to_owned()
    }

    fn processes(&self) -> Vec<(&'static str, Option<u32>)> {
        match self {
            Nats::Single(server) => vec![("nats-server", server.pid())],
            Nats::Cluster(cluster) => (0..cluster.len()).map(|i| (NODE_NAMES[i], cluster.pid(i))).collect(),
        }
    }
}

pub struct Bench {
    pub system: Processes,
    pub api: Api,
    pub nats: Nats,
    /// Whether auth and history run on PostgreSQL (its CPU is metered too).
    pub postgres: bool,
    data: tempfile::TempDir,
    run: String,
    http: reqwest::Client,
    /// Gateways that hold no socket (`--gateways`), metered together.
    following_gateways: Vec<chat_system_tests::processes::ServiceProcess>,
}

/// What the whole system spent between two readings.
pub struct Spent {
    /// CPU seconds by process.
    pub cpu: Vec<(&'static str, f64)>,
    /// Messages into and out of nats-server (one server only).
    pub nats_messages: Option<(f64, f64)>,
}

impl Spent {
    pub fn total_cpu(&self) -> f64 {
        self.cpu.iter().map(|(_, seconds)| seconds).sum()
    }
}

/// How many users are registered at once (each costs a password hash).
const SETUP_CONCURRENCY: usize = 8;

impl Bench {
    /// The system, its nats-server syncing every write to disk when
    /// `sync_always` (see `--nats-sync-always`), or on a three-node cluster
    /// when `cluster`.
    pub async fn start(sync_always: bool, cluster: bool, postgres: bool) -> anyhow::Result<Self> {
        let nats = match (cluster, sync_always) {
            (true, false) => Nats::Cluster(NatsCluster::start(NODE_NAMES.len()).await),
            (true, true) => anyhow::bail!("--nats-cluster runs JetStream's default sync only"),
            (false, true) => Nats::Single(NatsServer::start_syncing_always().await),
            (false, false) => Nats::Single(NatsServer::start().await),
        };
        let data = tempfile::tempdir()?;
        let replicas = if cluster { "3" } else { "1" };
        let env: Vec<(String, String)> = [
            ("CHAT_STREAM_REPLICAS", replicas),
            ("AUTH_REGISTER_RATE_PER_ADDRESS", "100000/1"),
            ("AUTH_LOGIN_RATE_PER_ADDRESS", "100000/1"),
            // The bench measures the system's ceiling, not its brakes: a few
            // users hold thousands of sockets and one sender sends flat out.
            ("GATEWAY_MAX_SOCKETS_PER_USER", "1000000"),
            ("GATEWAY_SEND_RATE_PER_SOCKET", "1000000/0.000001"),
            ("GATEWAY_SEND_RATE_PER_USER", "1000000/0.000001"),
            ("GATEWAY_FRAME_RATE_PER_SOCKET", "1000000/0.000001"),
            ("GATEWAY_CONVERSATION_RATE_PER_USER", "1000000/0.000001"),
            // Fan-out is measured up to groups of 10,000.
            ("HISTORY_MAX_GROUP_MEMBERS", "10000"),
            ("RUST_LOG", "warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let databases = if postgres {
            Databases::postgres_on(&admin_url(), data.path())
                .await
                .context("PostgreSQL is not reachable (DATABASE_ADMIN_URL)")?
        } else {
            Databases::sqlite(data.path())
        };
        let system = Processes::start_with(&nats.urls(), data.path(), databases, &env).await;
        let api = system.api();
        let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
        Ok(Self {
            system,
            api,
            nats,
            postgres,
            data,
            run,
            http: reqwest::Client::new(),
            following_gateways: Vec::new(),
        })
    }

    /// Starts `count` more gateways that hold no socket and only follow the stream.
    pub async fn add_following_gateways(&mut self, count: usize) {
        for n in 0..count {
            let gateway = self.system.start_gateway(100 + n).await;
            self.following_gateways.push(gateway);
        }
    }

    /// The directory of the system's databases and media's files.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    pub fn ws(&self) -> String {
        self.system.gateway.ws()
    }

    /// `count` new users, each with one logged-in device.
    pub async fn users(&self, label: &str, count: usize) -> Vec<Device> {
        futures::stream::iter(0..count)
            .map(|i| {
                let name = format!("{label}{i}x{}", self.run);
                async move { self.api.new_user(&name).await }
            })
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await
    }

    /// Every process of the system, and this one (the load generator).
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        let s = &self.system;
        let services = [
            ("gateway", s.gateway.pid()),
            ("history", s.history.pid()),
            ("notification", s.notification.pid()),
            ("presence", s.presence.pid()),
            ("auth", s.auth.pid()),
            ("media", s.media.pid()),
            ("load generator", Some(std::process::id())),
        ];
        let following = self.following_gateways.iter().map(|gateway| ("other gateways", gateway.pid()));
        let all = self.nats.processes().into_iter().chain(services).chain(following);
        all.filter_map(|(name, pid)| pid.map(|pid| (name, pid))).collect()
    }

    /// CPU seconds (user + system) each process has used so far; with
    /// `--postgres`, the last entry is every PostgreSQL process together.
    pub fn cpu_seconds(&self) -> Vec<(&'static str, f64)> {
        // Processes of one name (the other gateways) are summed.
        let mut used: Vec<(&'static str, f64)> = Vec::new();
        for (name, pid) in self.processes() {
            let seconds = cpu_seconds(pid).unwrap_or(0.0);
            match used.iter_mut().find(|(known, _)| *known == name) {
                Some((_, total)) => *total += seconds,
                None => used.push((name, seconds)),
            }
        }
        if self.postgres {
            used.push(("postgres", postgres_cpu_seconds()));
        }
        used
    }

    /// The CPU and NATS messages used so far, for [`Self::spent_since`].
    pub async fn meter(&self) -> Spent {
        Spent { cpu: self.cpu_seconds(), nats_messages: self.nats_messages().await }
    }

    /// What was spent since `before` (from [`Self::meter`]).
    pub async fn spent_since(&self, before: Spent) -> Spent {
        let now = self.meter().await;
        let cpu =
            now.cpu.into_iter().zip(before.cpu).map(|((name, after), (_, before))| (name, after - before)).collect();
        let nats_messages = now.nats_messages.zip(before.nats_messages).map(|((i, o), (bi, bo))| (i - bi, o - bo));
        Spent { cpu, nats_messages }
    }

    /// Messages in and out of the one nats-server so far (`/varz`).
    async fn nats_messages(&self) -> Option<(f64, f64)> {
        let Nats::Single(server) = &self.nats else { return None };
        let varz: serde_json::Value =
            self.http.get(format!("{}/varz", server.monitor_url())).send().await.ok()?.json().await.ok()?;
        Some((varz["in_msgs"].as_f64()?, varz["out_msgs"].as_f64()?))
    }

    /// The one nats-server's live Go heap after a forced collection (its
    /// profiler's `HeapAlloc`). Its resident memory is no measure of what
    /// new connections hold: the Go runtime keeps freed memory and fills it
    /// again before it grows.
    pub async fn nats_live_heap(&self) -> anyhow::Result<u64> {
        let Nats::Single(server) = &self.nats else { anyhow::bail!("a cluster has no single heap") };
        let url = format!("{}/debug/pprof/heap?gc=1&debug=1", server.profile_url());
        let profile = self.http.get(url).send().await?.error_for_status()?.text().await?;
        let line = profile.lines().find_map(|l| l.strip_prefix("# HeapAlloc = "));
        Ok(line.context("HeapAlloc in nats-server's heap profile")?.trim().parse()?)
    }

    /// CPU seconds each process has used since `before` (from [`Self::cpu_seconds`]).
    pub fn cpu_since(&self, before: Vec<(&'static str, f64)>) -> Vec<(&'static str, f64)> {
        self.cpu_seconds().into_iter().zip(before).map(|((name, after), (_, before))| (name, after - before)).collect()
    }
}

/// CPU seconds (user + system) a process has used, from /proc (clock ticks of 10 ms).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// CPU seconds used by every process named `postgres` (the server and its
/// backends; the bench's connections are pooled, so they live through a run).
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(|pid| cpu_seconds(pid).ok())
        .sum()
}

/// Resident memory of a process in bytes, from /proc.
pub fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kib * 1024)
}

/// Lets this process, and the processes it starts, hold as many sockets as
/// they may: the soft limit up to the hard one, and both up to `fs.nr_open`
/// where this may raise the hard limit (root with `CAP_SYS_RESOURCE`).
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|v| v.trim().parse::<u64>().ok());
    let hard = getrlimit(Resource::Nofile).maximum;
    // `None` is no limit at all.
    let most = hard.map(|hard| hard.max(ceiling.unwrap_or(hard)));
    if setrlimit(Resource::Nofile, Rlimit { current: most, maximum: most }).is_err() {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: hard, maximum: hard });
    }
}
