//! Faults under traffic: every part of the system is lost mid-traffic (killed
//! with SIGKILL, restarted, cut off) while the fault harness
//! (`chat_system_tests::faults`) sends and receives, and its checker then
//! proves nothing acked was lost, duplicated or delivered out of order. Each
//! test prints its fault report (recovery time, retries, reconnects).
//!
//! Everything runs as real processes: the service binaries of this build, a
//! real nats-server, SQLite files or PostgreSQL databases.

use std::time::{Duration, Instant};

use chat_system_tests::client::Api;
use chat_system_tests::faults::{Checked, Gateways, Report, Traffic, TrafficOptions};
use chat_system_tests::postgres_server::PostgresServer;
use chat_system_tests::processes::{Databases, Kind, Processes, ServiceProcess};
use chat_system_tests::proxy::Proxy;
use chat_system_tests::small_disk::SmallDisk;
use chat_system_tests::{Db, NatsServer, grpcurl, within_limit};

/// A whole system as processes with two gateways, and what the harness needs.
struct Stage {
    nats: NatsServer,
    system: Processes,
    second_gateway: ServiceProcess,
    /// Between the second gateway and NATS, when the test asked for it.
    nats_proxy: Option<Proxy>,
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
        Some(Self::start_on(data, databases, false).await)
    }

    /// A stage on `databases`; its second gateway reaches NATS through a
    /// proxy the test can cut when `proxied`.
    async fn start_on(data: tempfile::TempDir, databases: Databases, proxied: bool) -> Self {
        let nats = NatsServer::start().await;
        let system = Processes::start_with(&nats.url(), data.path(), databases, &settings()).await;
        let nats_proxy = if proxied { Some(Proxy::start(nats.addr()).await) } else { None };
        let second_env: Vec<(String, String)> =
            nats_proxy.iter().map(|proxy| ("NATS_URL".to_owned(), format!("nats://{}", proxy.addr))).collect();
        let second_gateway = system.start_gateway_with(2, &second_env).await;
        let gateways = Gateways::new([system.gateway.addr, second_gateway.addr]);
        Self { nats, system, second_gateway, nats_proxy, gateways, _data: data }
    }

    fn second_api(&self) -> Api {
        Api::new(&format!("http://{}", self.second_gateway.addr))
    }

    async fn traffic(&self) -> Traffic {
        Traffic::start(&self.system.api(), &self.gateways, TrafficOptions::default()).await
    }

    /// Runs the checker (through the second gateway, which every test keeps),
    /// then stops everything.
    async fn finish(self, traffic: Traffic) -> Report {
        let api = self.second_api();
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

/// kill -9 of `service` mid-traffic; it is started again `down` later.
async fn killed_and_restarted(db: Db, service: Kind, down: Duration) -> Option<Report> {
    let mut stage = Stage::start(db).await?;
    let mut traffic = stage.traffic().await;
    traffic.wait_for_acks(100).await;
    stage.system.service_mut(service).kill().await;
    tokio::time::sleep(down).await;
    stage.system.service_mut(service).restart().await;
    traffic.healed();
    traffic.wait_for_acks(100).await;
    Some(stage.finish(traffic).await)
}

/// Services the send path does not wait on: clients notice nothing.
async fn killed_unnoticed(db: Db, service: Kind) {
    if let Some(report) = killed_and_restarted(db, service, Duration::from_secs(3)).await {
        assert_eq!(report.retries, 0, "{service:?} down: no send failed");
    }
}

chat_system_tests::on_both_databases!(history_killed);

async fn history_killed(db: Db) {
    killed_unnoticed(db, Kind::History).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_killed() {
    within_limit(killed_unnoticed(Db::Sqlite, Kind::Notification)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_killed() {
    within_limit(killed_unnoticed(Db::Sqlite, Kind::Presence)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_killed() {
    within_limit(killed_unnoticed(Db::Sqlite, Kind::Auth)).await;
}

/// kill -9 of a gateway: its clients move to the other one, with their
/// cursors, and send again what was not acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed() {
    within_limit(async {
        killed_and_restarted(Db::Sqlite, Kind::Gateway, Duration::from_secs(3)).await;
    })
    .await;
}

/// PostgreSQL (a server of the test's own) crashes mid-traffic and is back
/// 3 s later: history and auth reconnect, history stores what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_and_restarted() {
    within_limit(async {
        let Some(postgres) = PostgresServer::start().await else { return };
        let data = tempfile::tempdir().expect("temp dir");
        let databases = Databases::postgres_on(&postgres.url(), data.path()).await.expect("the test's own server");
        let stage = Stage::start_on(data, databases, false).await;
        let mut traffic = stage.traffic().await;
        traffic.wait_for_acks(100).await;
        postgres.crash();
        tokio::time::sleep(Duration::from_secs(3)).await;
        postgres.start_again().await;
        traffic.healed();
        traffic.wait_for_acks(100).await;
        let report = stage.finish(traffic).await;
        assert_eq!(report.retries, 0, "sends do not wait on PostgreSQL");
    })
    .await;
}

/// PostgreSQL unreachable for 30 s (a partition: nothing answers, nothing is
/// closed): reads of history answer 503 within seconds instead of hanging,
/// sends go on, and history stores everything once the network is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_for_30_seconds() {
    within_limit(async {
        let Some(postgres) = PostgresServer::start().await else { return };
        let proxy = Proxy::start(postgres.addr()).await;
        let data = tempfile::tempdir().expect("temp dir");
        let mut databases = Databases::postgres_on(&postgres.url(), data.path()).await.expect("the test's own server");
        let through_proxy = |url: &str| url.replace(&postgres.addr().to_string(), &proxy.addr.to_string());
        databases.auth = through_proxy(&databases.auth);
        databases.history = through_proxy(&databases.history);
        databases.media = through_proxy(&databases.media);
        let stage = Stage::start_on(data, databases, false).await;
        let mut traffic = stage.traffic().await;
        traffic.wait_for_acks(100).await;

        proxy.cut();
        let cut = Instant::now();
        // History's health probe finds the database gone within about 2 s
        // (two failed probes); calls in between wait for their deadline.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let api = stage.system.api();
        let device = traffic.device();
        let asked = Instant::now();
        let (status, body) = api.get("/v1/conversations", Some(&device.access_token)).await;
        println!("conversations while PostgreSQL is unreachable: {status} after {:?}", asked.elapsed());
        assert_eq!(status, 503, "{body}");
        assert!(asked.elapsed() < Duration::from_secs(2), "an answer, not a hang");
        let asked = Instant::now();
        let login = serde_json::json!({ "username": device.username, "password": chat_system_tests::client::PASSWORD });
        let (status, body) = api.post("/v1/auth/login", None, login).await;
        println!("login while PostgreSQL is unreachable: {status} after {:?}", asked.elapsed());
        assert_eq!(status, 503, "{body}");
        assert!(asked.elapsed() < Duration::from_secs(2), "an answer, not a hang");
        // Health says so too, as grpcurl shows an operator.
        for service in [&stage.system.history, &stage.system.auth] {
            let addr = service.addr.to_string();
            let (_, answer) = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
            assert!(answer.contains("NOT_SERVING"), "{addr}: {answer}");
        }
        tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut.elapsed())).await;
        proxy.heal();
        traffic.healed();
        traffic.wait_for_acks(100).await;
        stage.finish(traffic).await;
    })
    .await;
}

/// A gateway cut off from NATS for 10 s (a partition: its connection stays
/// open and nothing gets through): its clients' sends are answered
/// `unavailable` within the store timeout instead of hanging, its readiness
/// turns 503, and once the network is back everything acked arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_cut_off_from_nats_for_10_seconds() {
    within_limit(async {
        let data = tempfile::tempdir().expect("temp dir");
        let databases = Databases::sqlite(data.path());
        let stage = Stage::start_on(data, databases, true).await;
        let proxy = stage.nats_proxy.as_ref().expect("the second gateway's proxy");
        let mut traffic = stage.traffic().await;
        traffic.wait_for_acks(100).await;

        proxy.cut();
        let cut = Instant::now();
        let readiness = stage.second_api();
        let mut not_ready_after = None;
        while cut.elapsed() < Duration::from_secs(10) {
            let (status, _) = readiness.get("/readyz", None).await;
            if status == 503 && not_ready_after.is_none() {
                not_ready_after = Some(cut.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("the cut-off gateway said it was not ready after {not_ready_after:?}");
        assert!(not_ready_after.is_some(), "readiness noticed the partition");
        proxy.heal();
        traffic.healed();
        traffic.wait_for_acks(100).await;
        let report = stage.finish(traffic).await;
        assert!(report.longest_wait < Duration::from_secs(3), "answers, not hangs: {report}");
    })
    .await;
}

/// The disk under history's SQLite file runs full mid-traffic, and space
/// comes back 5 s later: history keeps what it could not store yet and
/// stores it then, once each; sends never notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_under_history() {
    within_limit(async {
        let Some(disk) = SmallDisk::mount(32) else { return };
        let data = tempfile::tempdir().expect("temp dir");
        let mut databases = Databases::sqlite(data.path());
        databases.history = format!("sqlite://{}", disk.path().join("history.db").display());
        let stage = Stage::start_on(data, databases, false).await;
        let mut traffic = stage.traffic().await;
        traffic.wait_for_acks(100).await;
        disk.fill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        disk.free();
        traffic.healed();
        traffic.wait_for_acks(100).await;
        let report = stage.finish(traffic).await;
        assert_eq!(report.retries, 0, "sends do not wait on history's disk");
    })
    .await;
}

chat_system_tests::on_both_databases!(rolling_restart_with_sigterm);

/// Every service stopped with SIGTERM and started again, one at a time, under
/// traffic: each drains and exits cleanly within its bound, the gateways'
/// clients move over and send again, and nothing is lost or doubled.
async fn rolling_restart_with_sigterm(db: Db) {
    let Some(mut stage) = Stage::start(db).await else { return };
    let traffic = stage.traffic().await;
    traffic.wait_for_acks(50).await;
    for service in Kind::ALL {
        let (took, clean) = stage.system.service_mut(service).terminate(DRAIN_LIMIT).await;
        println!("{service:?} drained and exited in {} ms", took.as_millis());
        assert!(clean, "{service:?} exits with success after SIGTERM, within {DRAIN_LIMIT:?}");
        stage.system.service_mut(service).restart().await;
        traffic.wait_for_acks(50).await;
    }
    let (took, clean) = stage.second_gateway.terminate(DRAIN_LIMIT).await;
    println!("the second gateway drained and exited in {} ms", took.as_millis());
    assert!(clean, "the second gateway exits with success after SIGTERM");
    stage.second_gateway.restart().await;
    traffic.wait_for_acks(50).await;
    stage.finish(traffic).await;
}

/// The bound within which a service must drain and exit after SIGTERM.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// The durable consumers of history and notification are deleted (by an
/// operator, or lost with a NATS store): each service makes its own again at
/// its next pull, and history stores what was sent meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_consumers_are_made_again() {
    within_limit(async {
        let Some(system) = chat_system_tests::System::start(Db::Sqlite).await else { return };
        let api = system.api();
        let alice = api.new_user("alice").await;
        let bob = api.new_user("bob").await;
        let conversation = api.direct(&alice, &bob).await;
        let (mut ws, _) = chat_system_tests::Ws::open(&system.ws(0), &alice).await;
        assert_eq!(ws.send_message(1, &conversation, "m1", "before").await["type"], "ack");
        api.wait_for_history(&alice, &conversation, 1).await;

        let nats = async_nats::connect(system.nats.url()).await.expect("nats");
        let stream = async_nats::jetstream::new(nats).get_stream("CHAT").await.expect("the CHAT stream");
        for consumer in ["history", "notification"] {
            stream.delete_consumer(consumer).await.unwrap_or_else(|e| panic!("delete {consumer}: {e}"));
        }
        assert_eq!(ws.send_message(2, &conversation, "m2", "meanwhile").await["type"], "ack");
        let stored = api.wait_for_history(&alice, &conversation, 2).await;
        assert_eq!(stored.iter().map(|m| m["body"].as_str().unwrap()).collect::<Vec<_>>(), ["before", "meanwhile"]);
        for consumer in ["history", "notification"] {
            let deadline = Instant::now() + Duration::from_secs(15);
            while stream.consumer_info(consumer).await.is_err() {
                assert!(Instant::now() < deadline, "{consumer} did not make its consumer again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        system.stop().await;
    })
    .await;
}
