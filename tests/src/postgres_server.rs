//! A PostgreSQL server of the test's own, made with `initdb` and run with
//! `pg_ctl` in a temporary directory on a free port, so a test can crash it
//! and start it again without touching the machine's shared server.
//!
//! The binaries come from Debian's PostgreSQL packages
//! (`/usr/lib/postgresql/<version>/bin`); PostgreSQL refuses to run as root,
//! so under root they run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

/// The newest installed PostgreSQL's binaries, if any.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent().and_then(Path::file_name).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

impl PostgresServer {
    /// Makes and starts a server: `None` outside CI when PostgreSQL's
    /// binaries are not installed (in CI that is a failure).
    pub async fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(!crate::in_ci(), "PostgreSQL's initdb is not installed (CI requires it)");
            eprintln!("PostgreSQL's initdb is not installed; skipping this test outside CI");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let owned = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status();
            assert!(owned.is_ok_and(|s| s.success()), "chown the server's directory to postgres");
        }
        let port = crate::processes::free_addr().port();
        let server = Self { bin, dir, port };
        let data = server.data().display().to_string();
        server.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        server.start_again().await;
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the server's programs, to run as `postgres` under root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        }
    }

    /// Runs one of the server's programs, panicking on failure.
    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(output.status.success(), "{program} failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops it as a crash would (`pg_ctl stop -m immediate`: every backend
    /// killed, recovery from the WAL at the next start).
    pub fn crash(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
    }

    /// Starts it (again) and waits until it accepts connections.
    pub async fn start_again(&self) {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        self.run("pg_ctl", &["start", "-D", &data, "-l", &log, "-o", &options, "-w"]);
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.command("pg_ctl").args(["stop", "-D", &data, "-m", "immediate"]).output();
    }
}
