//! Services as processes of their own: the binaries `cargo build --bins`
//! makes (scripts/test.sh does), configured only through the environment,
//! as an operator runs them. Tests use this for what only a separate process
//! has: being killed with SIGKILL, or exporting telemetry under its own
//! `service.name`. Children die with the test.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::nats::NatsServer;

/// One service binary, run as a child process: it can be killed (SIGKILL),
/// stopped (SIGTERM, waiting for it to exit) and started again on the same
/// address with the same environment.
pub struct ServiceProcess {
    name: String,
    env: Vec<(String, String)>,
    log: Option<std::path::PathBuf>,
    child: Option<tokio::process::Child>,
    /// Where it serves: gRPC for the services, HTTP for the gateway.
    pub addr: SocketAddr,
}

/// How much of a log a failing test shows.
const LOG_TAIL_LINES: usize = 40;

impl ServiceProcess {
    /// Starts binary `name` with exactly `env` (`RUST_LOG` defaults to `warn`)
    /// and waits until it accepts connections on `addr`. Its output (logs on
    /// stdout, a failure on stderr) goes to `log` if given, else is shown with
    /// `TEST_LOG`.
    pub async fn start(name: &str, addr: SocketAddr, env: &[(String, String)], log: Option<&Path>) -> Self {
        let mut process =
            Self { name: name.to_owned(), env: env.to_vec(), log: log.map(Path::to_owned), child: None, addr };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        let binary = crate::service_binary(&self.name);
        let output = || match &self.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("a log file");
                std::process::Stdio::from(file)
            }
            None if std::env::var_os("TEST_LOG").is_some() => std::process::Stdio::inherit(),
            None => std::process::Stdio::null(),
        };
        let mut command = tokio::process::Command::new(&binary);
        command
            .env_clear()
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            // Passed on for experiments with the runtime's threads (the bench).
            .envs(std::env::var("TOKIO_WORKER_THREADS").map(|n| ("TOKIO_WORKER_THREADS", n)))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Exited already (its address taken, say): whoever answers on the
            // address is not it.
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited ({status}) while starting:\n{}", self.name, self.log_tail());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} did not come up on {}", self.name, self.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
    }

    /// The last lines of its log, if it has one.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log else { return String::new() };
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// The gateway's WebSocket URL (for a gateway process).
    pub fn ws(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The process id, while it runs (to read its memory from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// SIGKILL: no goodbye to anyone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill the process");
        }
    }

    /// SIGTERM, then waits for the process to exit; returns how long it took
    /// and whether it exited successfully. Killed if it takes over `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> (Duration, bool) {
        let Some(mut child) = self.child.take() else { return (Duration::ZERO, true) };
        let started = tokio::time::Instant::now();
        if let Some(pid) = child.id() {
            let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            assert!(sent.is_ok_and(|s| s.success()), "SIGTERM to {} ({pid})", self.name);
        }
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => (started.elapsed(), status.is_ok_and(|s| s.success())),
            Err(_) => {
                let _ = child.kill().await;
                (started.elapsed(), false)
            }
        }
    }

    /// Starts it again (after `kill` or `terminate`) on the same address with
    /// the same environment and log.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

pub use crate::ports::free_addr;

pub(crate) fn var(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

/// Where auth, history and media keep their tables (and media its files).
#[derive(Debug, Clone)]
pub struct Databases {
    pub auth: String,
    pub history: String,
    pub media: String,
    /// Media's `MEDIA_STORE`: a directory beside the databases.
    pub media_store: String,
    /// PostgreSQL databases made for this system, dropped by `Processes::stop`,
    /// with the server URL to drop them through.
    created: Option<(String, Vec<String>)>,
}

impl Databases {
    /// SQLite files in `dir`.
    pub fn sqlite(dir: &Path) -> Self {
        let url = |name: &str| format!("sqlite://{}", dir.join(name).display());
        Self {
            auth: url("auth.db"),
            history: url("history.db"),
            media: url("media.db"),
            media_store: dir.join("media").display().to_string(),
            created: None,
        }
    }

    /// Three new databases on the PostgreSQL server of `server_url` (a URL
    /// of any database on it), media's files in `dir`: `None` outside CI
    /// when the server cannot be reached (in CI that is a failure).
    pub async fn postgres_on(server_url: &str, dir: &Path) -> Option<Self> {
        let base = format!("chat_test_{}", uuid::Uuid::new_v4().simple());
        let names = vec![format!("{base}_auth"), format!("{base}_history"), format!("{base}_media")];
        let auth = crate::database::create_postgres_on(server_url, &names[0]).await?;
        let history = crate::database::create_postgres_on(server_url, &names[1]).await?;
        let media = crate::database::create_postgres_on(server_url, &names[2]).await?;
        let media_store = dir.join("media").display().to_string();
        Some(Self { auth, history, media, media_store, created: Some((server_url.to_owned(), names)) })
    }

    /// Drops the PostgreSQL databases made for this system, if any.
    pub async fn drop_created(&self) {
        if let Some((server, names)) = &self.created {
            for name in names {
                crate::database::drop_postgres_on(server, name).await;
            }
        }
    }

    /// Fresh databases of kind `db`: SQLite files in `dir`, or new databases
    /// on the test PostgreSQL server (`None` as for `postgres_on`).
    pub async fn of(db: crate::Db, dir: &Path) -> Option<Self> {
        match db {
            crate::Db::Sqlite => Some(Self::sqlite(dir)),
            crate::Db::Postgres => Self::postgres_on(&crate::database::admin_url(), dir).await,
        }
    }
}

/// The six services, in the order a system starts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Auth,
    History,
    Presence,
    Notification,
    Media,
    Gateway,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Auth, Kind::History, Kind::Presence, Kind::Notification, Kind::Media, Kind::Gateway];

    /// Its binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Auth => "auth",
            Kind::History => "history",
            Kind::Presence => "presence",
            Kind::Notification => "notification",
            Kind::Media => "media",
            Kind::Gateway => "gateway",
        }
    }

    /// The variable naming where the others call it, if they do.
    pub fn peer_variable(self) -> Option<&'static str> {
        match self {
            Kind::Auth => Some("AUTH_GRPC_URL"),
            Kind::History => Some("HISTORY_GRPC_URL"),
            Kind::Presence => Some("PRESENCE_GRPC_URL"),
            Kind::Notification => Some("NOTIFICATION_GRPC_URL"),
            Kind::Media => Some("MEDIA_GRPC_URL"),
            Kind::Gateway => None,
        }
    }

    /// An instance's own settings: where it listens (gRPC, or HTTP for the
    /// gateway, at `addr`; metrics on a free port) and its database.
    pub fn own_settings(self, addr: SocketAddr, databases: &Databases) -> Vec<(String, String)> {
        let (listen, metrics) = match self {
            Kind::Auth => ("AUTH_GRPC_ADDR", "AUTH_METRICS_ADDR"),
            Kind::History => ("HISTORY_GRPC_ADDR", "HISTORY_METRICS_ADDR"),
            Kind::Presence => ("PRESENCE_GRPC_ADDR", "PRESENCE_METRICS_ADDR"),
            Kind::Notification => ("NOTIFICATION_GRPC_ADDR", "NOTIFICATION_METRICS_ADDR"),
            Kind::Media => ("MEDIA_GRPC_ADDR", "MEDIA_METRICS_ADDR"),
            Kind::Gateway => ("GATEWAY_HTTP_ADDR", "GATEWAY_METRICS_ADDR"),
        };
        let mut settings = vec![var(listen, addr), var(metrics, free_addr())];
        match self {
            Kind::Auth => settings.push(var("AUTH_DATABASE_URL", &databases.auth)),
            Kind::History => settings.push(var("HISTORY_DATABASE_URL", &databases.history)),
            Kind::Media => {
                settings.push(var("MEDIA_DATABASE_URL", &databases.media));
                settings.push(var("MEDIA_STORE", &databases.media_store));
            }
            _ => {}
        }
        settings
    }
}

/// All six services as processes on one nats-server, each service's log in
/// `data_dir/<service>.log`. `env` is added to every service's environment.
pub struct Processes {
    pub auth: ServiceProcess,
    pub history: ServiceProcess,
    pub presence: ServiceProcess,
    pub notification: ServiceProcess,
    pub media: ServiceProcess,
    pub gateway: ServiceProcess,
    /// What every service is started with: where the others are, and `env`.
    shared_env: Vec<(String, String)>,
    data_dir: std::path::PathBuf,
    databases: Databases,
}

impl Processes {
    /// The six services on SQLite files in `data_dir`.
    pub async fn start(nats: &NatsServer, data_dir: &Path, env: &[(String, String)]) -> Self {
        Self::start_with(&nats.url(), data_dir, Databases::sqlite(data_dir), env).await
    }

    /// The six services on `databases`, connected to NATS at `nats_url`.
    pub async fn start_with(nats_url: &str, data_dir: &Path, databases: Databases, env: &[(String, String)]) -> Self {
        let addrs: [SocketAddr; 6] = std::array::from_fn(|_| free_addr());
        let mut shared_env = vec![var("NATS_URL", nats_url)];
        for (kind, addr) in Kind::ALL.iter().zip(&addrs) {
            shared_env.extend(kind.peer_variable().map(|name| var(name, addr)));
        }
        shared_env.extend(env.iter().cloned());
        let mut started = Vec::new();
        for (kind, addr) in Kind::ALL.into_iter().zip(addrs) {
            let own = kind.own_settings(addr, &databases);
            started.push(start_service(data_dir, &shared_env, kind.binary(), kind.binary(), addr, own).await);
        }
        let [auth, history, presence, notification, media, gateway] =
            <[ServiceProcess; 6]>::try_from(started).unwrap_or_else(|_| unreachable!("one of each"));
        let data_dir = data_dir.to_owned();
        Self { auth, history, presence, notification, media, gateway, shared_env, data_dir, databases }
    }

    /// One more gateway process, logging to `data_dir/gateway-<n>.log`.
    pub async fn start_gateway(&self, n: usize) -> ServiceProcess {
        self.start_gateway_with(n, &[]).await
    }

    /// One more gateway process with `env` added (over the shared settings).
    pub async fn start_gateway_with(&self, n: usize, env: &[(String, String)]) -> ServiceProcess {
        let addr = free_addr();
        let shared: Vec<(String, String)> = self.shared_env.iter().chain(env).cloned().collect();
        let own = Kind::Gateway.own_settings(addr, &self.databases);
        start_service(&self.data_dir, &shared, "gateway", &format!("gateway-{n}"), addr, own).await
    }

    /// The process of `kind`'s service (the first gateway for gateways).
    pub fn service_mut(&mut self, kind: Kind) -> &mut ServiceProcess {
        match kind {
            Kind::Auth => &mut self.auth,
            Kind::History => &mut self.history,
            Kind::Presence => &mut self.presence,
            Kind::Notification => &mut self.notification,
            Kind::Media => &mut self.media,
            Kind::Gateway => &mut self.gateway,
        }
    }

    /// What `service` has logged so far.
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(self.data_dir.join(format!("{service}.log"))).unwrap_or_default()
    }

    pub fn api(&self) -> crate::client::Api {
        crate::client::Api::new(&format!("http://{}", self.gateway.addr))
    }

    /// Where auth, history and media keep their tables.
    pub fn databases(&self) -> &Databases {
        &self.databases
    }

    /// Kills every service and drops the PostgreSQL databases made for them.
    pub async fn stop(mut self) {
        for service in [
            &mut self.gateway,
            &mut self.media,
            &mut self.notification,
            &mut self.presence,
            &mut self.history,
            &mut self.auth,
        ] {
            service.kill().await;
        }
        self.databases.drop_created().await;
    }
}

/// A failing test shows what every service logged last: a test's temporary
/// directory, logs included, is gone once it ends.
impl Drop for Processes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in [&self.auth, &self.history, &self.presence, &self.notification, &self.media, &self.gateway] {
                eprintln!("--- the end of {}'s log ---\n{}", service.name, service.log_tail());
            }
        }
    }
}

pub(crate) async fn start_service(
    data_dir: &Path,
    shared_env: &[(String, String)],
    binary: &str,
    log: &str,
    addr: SocketAddr,
    own: Vec<(String, String)>,
) -> ServiceProcess {
    // The service's own settings first: a shared variable may override them.
    let env: Vec<(String, String)> = own.into_iter().chain(shared_env.iter().cloned()).collect();
    ServiceProcess::start(binary, addr, &env, Some(&data_dir.join(format!("{log}.log")))).await
}
