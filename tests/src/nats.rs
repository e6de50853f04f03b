//! A real `nats-server` (the project's pinned one from `.tools/bin`) with
//! JetStream, on a free port, with its own store directory. Tests can kill and
//! restart it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// Its HTTP monitoring port (`/varz`: message and byte counters).
    monitor_port: u16,
    /// Its Go profiling port (`/debug/pprof`: the bench reads the live heap).
    profile_port: u16,
    store: tempfile::TempDir,
    /// A configuration file for the server, if any.
    config: Option<PathBuf>,
}

/// The nats-server this project pins: `NATS_SERVER_BIN`, or the one
/// scripts/install-tools.sh put in `.tools/bin`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return path.into();
    }
    let local = crate::workspace_root().join(".tools/bin/nats-server");
    assert!(
        local.exists(),
        "nats-server not found at {}: run scripts/install-tools.sh (or set NATS_SERVER_BIN)",
        local.display()
    );
    local
}

/// Starts a nats-server `command`: its log shown with `TEST_LOG`, killed
/// with the test.
pub(crate) fn spawn(mut command: Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server starts")
}

impl NatsServer {
    pub async fn start() -> Self {
        let mut server = Self {
            child: None,
            port: crate::ports::free_port(),
            monitor_port: crate::ports::free_port(),
            profile_port: crate::ports::free_port(),
            store: tempfile::tempdir().expect("temp dir"),
            config: None,
        };
        server.spawn().await;
        server
    }

    /// A server that writes every JetStream write to disk before it acks
    /// (`sync_interval: always`, as deploy/nats/nats.conf sets it), where
    /// the default syncs every two minutes.
    pub async fn start_syncing_always() -> Self {
        let store = tempfile::tempdir().expect("temp dir");
        let config = store.path().join("nats.conf");
        std::fs::write(&config, "jetstream {\n  sync_interval: always\n}\n").expect("nats.conf");
        let mut server = Self {
            child: None,
            port: crate::ports::free_port(),
            monitor_port: crate::ports::free_port(),
            profile_port: crate::ports::free_port(),
            store,
            config: Some(config),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor_port.to_string()])
            .args(["--profile", &self.profile_port.to_string(), "-js", "-sd"])
            .arg(self.store.path());
        self.child = Some(spawn(command));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not listen on port {} within 5 s", self.port);
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its monitoring endpoint, e.g. `{monitor_url}/varz`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// Its Go profiler, e.g. `{profile_url}/debug/pprof/heap?gc=1&debug=1`
    /// (the live heap after a collection).
    pub fn profile_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.profile_port)
    }

    /// Kills the server (SIGKILL); its JetStream store stays on disk.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}
