//! The whole-system test harness: a real `nats-server` per test, a fresh
//! database per test (SQLite file or a new PostgreSQL database), and all five
//! services started in-process through their libraries on port 0.
//!
//! Logs are off unless `TEST_LOG=1`.

pub mod chat_cli;
pub mod client;
pub mod cluster;
pub mod database;
pub mod deploy;
pub mod faults;
pub mod fleet;
pub mod nats;
pub mod otlp;
pub mod ports;
pub mod postgres_server;
pub mod processes;
pub mod proxy;
pub mod push;
pub mod s3;
pub mod small_disk;
pub mod system;

pub use client::{Device, Ws};
pub use database::Db;
pub use nats::NatsServer;
pub use system::{System, without_send_brakes};

/// No scenario may run longer than this: a hang fails the test instead of
/// holding CI until its own limit.
pub const SCENARIO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// Runs a scenario under [`SCENARIO_TIMEOUT`], on the heap: a whole
/// scenario's future can outgrow a test thread's stack in a debug build.
pub async fn within_limit(scenario: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(SCENARIO_TIMEOUT, Box::pin(scenario)).await.is_err() {
        panic!("the scenario did not finish within {SCENARIO_TIMEOUT:?}");
    }
}

/// The token of the one operator every test system's admin service knows.
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// Generates one `#[tokio::test]` per database for an `async fn(Db)` scenario.
#[macro_export]
macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::within_limit(super::$scenario($crate::Db::Sqlite)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::within_limit(super::$scenario($crate::Db::Postgres)).await;
                }
            }
        )*
    };
}

/// Installs a log subscriber once when `TEST_LOG` is set.
pub fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                ))
                .with_test_writer()
                .try_init();
        }
    });
}

/// The workspace root (for `.tools/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(ToOwned::to_owned).unwrap_or_default()
}

/// A service binary of this workspace, built next to the running executable:
/// beside it (a bench in `target/release`) or one folder up (a test binary in
/// `target/debug/deps`). `cargo test` alone does not build it: scripts/test.sh
/// runs `cargo build --bins` first.
pub fn service_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let beside = exe.parent().map(|dir| dir.join(name)).unwrap_or_default();
    let above = exe.parent().and_then(std::path::Path::parent).map(|dir| dir.join(name)).unwrap_or_default();
    let found = [&beside, &above].into_iter().find(|path| path.is_file());
    found
        .cloned()
        .unwrap_or_else(|| panic!("{} is missing: run `cargo build --workspace --bins` first", above.display()))
}

/// Runs the project's pinned `grpcurl` (or `GRPCURL_BIN`); returns whether
/// it succeeded and what it printed (stdout, then stderr).
pub fn grpcurl(args: &[&str]) -> (bool, String) {
    let binary = std::env::var_os("GRPCURL_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin/grpcurl"));
    assert!(binary.exists(), "grpcurl not found at {}: run scripts/install-tools.sh", binary.display());
    let output = std::process::Command::new(binary).args(args).output().expect("grpcurl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// True when running under CI, where a missing dependency must fail a test.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}
