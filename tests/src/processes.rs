//! Services as processes of their own: the binaries `cargo build --bins`
//! makes (scripts/test.sh does), configured only through the environment,
//! as an operator runs them. Tests use this for what only a separate process
//! has: being killed with SIGKILL, or exporting telemetry under its own
//! `service.name`. Children die with the test.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::nats::NatsServer;

/// One running service binary.
pub struct ServiceProcess {
    child: tokio::process::Child,
    /// Where it serves: gRPC for the services, HTTP for the gateway.
    pub addr: SocketAddr,
}

impl ServiceProcess {
    /// Starts binary `name` with exactly `env` (`RUST_LOG` defaults to `warn`)
    /// and waits until it accepts connections on `addr`. Its output (logs on
    /// stdout, a failure on stderr) goes to `log` if given, else is shown with
    /// `TEST_LOG`.
    pub async fn start(name: &str, addr: SocketAddr, env: &[(String, String)], log: Option<&Path>) -> Self {
        let binary = crate::service_binary(name);
        let output = || match log {
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
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "{name} did not come up on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, addr }
    }

    /// The gateway's WebSocket URL (for a gateway process).
    pub fn ws(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The process id (to read its memory from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: no goodbye to anyone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the process");
    }
}

/// A free TCP address on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

fn var(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

/// All five services as processes on one nats-server, with SQLite databases
/// in `data_dir` and each service's log in `data_dir/<service>.log`. `env`
/// is added to every service's environment.
pub struct Processes {
    pub auth: ServiceProcess,
    pub history: ServiceProcess,
    pub presence: ServiceProcess,
    pub notification: ServiceProcess,
    pub gateway: ServiceProcess,
    /// What every service is started with: where the others are, and `env`.
    shared_env: Vec<(String, String)>,
    data_dir: std::path::PathBuf,
}

impl Processes {
    pub async fn start(nats: &NatsServer, data_dir: &Path, env: &[(String, String)]) -> Self {
        let [auth, history, presence, notification, gateway] = std::array::from_fn(|_| free_addr());
        let mut shared_env = vec![
            var("NATS_URL", nats.url()),
            var("AUTH_GRPC_URL", auth),
            var("HISTORY_GRPC_URL", history),
            var("PRESENCE_GRPC_URL", presence),
            var("NOTIFICATION_GRPC_URL", notification),
        ];
        shared_env.extend(env.iter().cloned());
        let sqlite = |name: &str| format!("sqlite://{}", data_dir.join(name).display());
        let start = |name: &'static str, addr: SocketAddr, own: Vec<(String, String)>| {
            start_service(data_dir, &shared_env, name, name, addr, own)
        };
        let auth = start(
            "auth",
            auth,
            vec![
                var("AUTH_GRPC_ADDR", auth),
                var("AUTH_METRICS_ADDR", free_addr()),
                var("AUTH_DATABASE_URL", sqlite("auth.db")),
            ],
        )
        .await;
        let history = start(
            "history",
            history,
            vec![
                var("HISTORY_GRPC_ADDR", history),
                var("HISTORY_METRICS_ADDR", free_addr()),
                var("HISTORY_DATABASE_URL", sqlite("history.db")),
            ],
        )
        .await;
        let presence = start(
            "presence",
            presence,
            vec![var("PRESENCE_GRPC_ADDR", presence), var("PRESENCE_METRICS_ADDR", free_addr())],
        )
        .await;
        let notification = start(
            "notification",
            notification,
            vec![var("NOTIFICATION_GRPC_ADDR", notification), var("NOTIFICATION_METRICS_ADDR", free_addr())],
        )
        .await;
        let gateway = start_gateway(data_dir, &shared_env, "gateway", gateway).await;
        Self { auth, history, presence, notification, gateway, shared_env, data_dir: data_dir.to_owned() }
    }

    /// One more gateway process, logging to `data_dir/gateway-<n>.log`.
    pub async fn start_gateway(&self, n: usize) -> ServiceProcess {
        start_gateway(&self.data_dir, &self.shared_env, &format!("gateway-{n}"), free_addr()).await
    }

    /// What `service` has logged so far.
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(self.data_dir.join(format!("{service}.log"))).unwrap_or_default()
    }

    pub fn api(&self) -> crate::client::Api {
        crate::client::Api::new(&format!("http://{}", self.gateway.addr))
    }
}

async fn start_gateway(
    data_dir: &Path,
    shared_env: &[(String, String)],
    log: &str,
    addr: SocketAddr,
) -> ServiceProcess {
    let own = vec![var("GATEWAY_HTTP_ADDR", addr), var("GATEWAY_METRICS_ADDR", free_addr())];
    start_service(data_dir, shared_env, "gateway", log, addr, own).await
}

async fn start_service(
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
