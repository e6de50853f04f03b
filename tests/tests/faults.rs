//! Faults under traffic: every part of the system is lost mid-traffic (killed
//! with SIGKILL, restarted, cut off) while the fault harness
//! (`chat_system_tests::faults`) sends and receives, and its checker then
//! proves nothing acked was lost, duplicated or delivered out of order. Each
//! test prints its fault report (recovery time, retries, reconnects).
//!
//! Everything runs as real processes: the service binaries of this build, a
//! real nats-server, SQLite files or PostgreSQL databases.

use std::time::Duration;

use chat_system_tests::faults::{Checked, Gateways, Report, Traffic, TrafficOptions};
use chat_system_tests::processes::{Databases, Processes, ServiceProcess};
use chat_system_tests::{Db, NatsServer, within_limit};

/// A whole system as processes with two gateways, and what the harness needs.
struct Stage {
    nats: NatsServer,
    system: Processes,
    second_gateway: ServiceProcess,
    gateways: Gateways,
    _data: tempfile::TempDir,
}

fn settings() -> Vec<(String, String)> {
    [
        ("AUTH_REGISTER_RATE_PER_ADDRESS", "1000/1"),
        ("AUTH_LOGIN_RATE_PER_ADDRESS", "1000/1"),
        ("NOTIFICATION_ALLOW_HTTP_ENDPOINTS", "true"),
        ("NOTIFICATION_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("NOTIFICATION_COALESCE_MS", "300"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl Stage {
    async fn start(db: Db) -> Option<Self> {
        let data = tempfile::tempdir().expect("temp dir");
        let databases = Databases::of(db, data.path()).await?;
        let nats = NatsServer::start().await;
        let system = Processes::start_with(&nats.url(), data.path(), databases, &settings()).await;
        let second_gateway = system.start_gateway(2).await;
        let gateways = Gateways::new([system.gateway.addr, second_gateway.addr]);
        Some(Self { nats, system, second_gateway, gateways, _data: data })
    }

    async fn traffic(&self) -> Traffic {
        Traffic::start(&self.system.api(), &self.gateways, TrafficOptions::default()).await
    }

    /// Runs the checker (through the second gateway, which every test keeps),
    /// then stops everything.
    async fn finish(self, traffic: Traffic) -> Report {
        let api = chat_system_tests::client::Api::new(&format!("http://{}", self.second_gateway.addr));
        let checked =
            Checked { api: &api, nats_url: &self.nats.url(), history_database: &self.system.databases().history };
        let report = traffic.finish(&checked).await;
        let mut second = self.second_gateway;
        second.kill().await;
        self.system.stop().await;
        report
    }
}

/// Traffic with nothing broken: the checker's baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_passes_the_checker() {
    within_limit(async {
        let Some(stage) = Stage::start(Db::Sqlite).await else { return };
        let traffic = stage.traffic().await;
        traffic.wait_for_acks(150).await;
        let report = stage.finish(traffic).await;
        assert_eq!(report.retries, 0, "nothing failed, so nothing was retried");
    })
    .await;
}

/// kill -9 of nats-server mid-traffic, restarted 3 s later on the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_and_restarted() {
    within_limit(async {
        let Some(mut stage) = Stage::start(Db::Sqlite).await else { return };
        let mut traffic = stage.traffic().await;
        traffic.wait_for_acks(100).await;
        stage.nats.kill().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        stage.nats.restart().await;
        traffic.healed();
        traffic.wait_for_acks(100).await;
        stage.finish(traffic).await;
    })
    .await;
}
