//! Past one machine: a three-node NATS cluster (each node in a network
//! namespace of its own, `chat_system_tests::cluster`), the CHAT stream and
//! every key-value bucket at three replicas, and three gateways and two
//! instances of every other service on PostgreSQL, reaching each other
//! through address lists. The fault harness's users are spread over the
//! gateways, chatting in direct and group conversations.
//!
//! Each test breaks part of the cluster under that traffic and ends with the
//! harness's checker: every acked message stored once, delivered once and in
//! order to every device, no seq gap, nothing pushed twice. Each prints its
//! fault report (recovery time, retries, reconnects).
//!
//! The clusters are large for a small machine (three nats-servers and eleven
//! service processes), so these tests take turns.

use std::time::Duration;

use chat_system_tests::cluster::NatsCluster;
use chat_system_tests::faults::{Checked, Gateways, Report, Traffic, TrafficOptions};
use chat_system_tests::fleet::{Counts, Fleet};
use chat_system_tests::processes::{Databases, Kind};
use chat_system_tests::{Db, within_limit};

/// The stream every message goes through.
const CHAT_STREAM: &str = "CHAT";
/// The bound within which a service must drain and exit after SIGTERM.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `scenario` once no other cluster test runs, within the scenario limit.
async fn in_turn(scenario: impl std::future::Future<Output = ()>) {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    within_limit(scenario).await;
}

struct Stage {
    cluster: NatsCluster,
    fleet: Fleet,
    gateways: Gateways,
    _data: tempfile::TempDir,
}

fn settings() -> Vec<(String, String)> {
    [
        ("CHAT_STREAM_REPLICAS", "3"),
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
    /// `None` only outside CI when PostgreSQL is not reachable.
    async fn start() -> Option<Self> {
        let data = tempfile::tempdir().expect("temp dir");
        let databases = Databases::of(Db::Postgres, data.path()).await?;
        let cluster = NatsCluster::start(3).await;
        let fleet = Fleet::start(&cluster.urls(), data.path(), databases, &Counts::several(), &settings()).await;
        let gateways = Gateways::new(fleet.gateway_addrs());
        Some(Self { cluster, fleet, gateways, _data: data })
    }

    async fn traffic(&self) -> Traffic {
        Traffic::start(&self.fleet.api(0), &self.gateways, TrafficOptions::default()).await
    }

    /// Runs the checker, then stops everything.
    async fn finish(self, traffic: Traffic) -> Report {
        let api = self.fleet.api(0);
        let urls = self.cluster.urls();
        let checked = Checked { api: &api, nats_url: &urls, history_database: &self.fleet.databases().history };
        let report = traffic.finish(&checked).await;
        self.fleet.stop().await;
        report
    }

    async fn leader(&self) -> usize {
        self.cluster.stream_leader(CHAT_STREAM).await
    }
}

/// Traffic over the cluster with nothing broken: what the others compare with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_over_the_cluster() {
    in_turn(async {
        let Some(stage) = Stage::start().await else { return };
        let traffic = stage.traffic().await;
        traffic.wait_for_acks(150).await;
        let report = stage.finish(traffic).await;
        assert_eq!(report.retries, 0, "nothing failed, so nothing was retried");
    })
    .await;
}

/// kill -9 of the node leading the CHAT stream: the other two elect a new
/// leader and carry on; the node comes back 5 s later and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_and_restarted() {
    in_turn(async {
        let Some(mut stage) = Stage::start().await else { return };
        let mut traffic = stage.traffic().await;
        traffic.wait_for_acks(100).await;
        let leader = stage.leader().await;
        println!("killing {}, the CHAT stream's leader", stage.cluster.name(leader));
        stage.cluster.kill(leader).await;
        traffic.wait_for_acks(100).await;
        println!("{} is the new leader", stage.cluster.name(stage.leader().await));
        tokio::time::sleep(Duration::from_secs(2)).await;
        stage.cluster.restart(leader).await;
        traffic.healed();
        traffic.wait_for_acks(100).await;
        stage.finish(traffic).await;
    })
    .await;
}

/// The stream leader cut off the network for 10 s (its link down: nothing
/// closed, nothing answered), then healed: the majority elects a new leader,
/// clients of the cut node notice by their pings and move, and the node
/// catches up once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_cut_off_for_10_seconds() {
    in_turn(async {
        let Some(stage) = Stage::start().await else { return };
        if !stage.cluster.can_partition() {
            println!("passed over: the NATS nodes are not in network namespaces, so none can be cut off");
            return;
        }
        let mut traffic = stage.traffic().await;
        traffic.wait_for_acks(100).await;
        let leader = stage.leader().await;
        println!("cutting off {}, the CHAT stream's leader", stage.cluster.name(leader));
        stage.cluster.cut(leader);
        tokio::time::sleep(Duration::from_secs(10)).await;
        stage.cluster.heal(leader);
        traffic.healed();
        traffic.wait_for_acks(100).await;
        stage.finish(traffic).await;
    })
    .await;
}

/// kill -9 of one instance of every service at once: the others carry the
/// traffic while they are down, and they come back 5 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_of_every_service_killed() {
    in_turn(async {
        let Some(mut stage) = Stage::start().await else { return };
        let mut traffic = stage.traffic().await;
        traffic.wait_for_acks(100).await;
        for kind in Kind::ALL {
            stage.fleet.instance_mut(kind, 0).kill().await;
        }
        traffic.wait_for_acks(100).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for kind in Kind::ALL {
            stage.fleet.instance_mut(kind, 0).restart().await;
        }
        traffic.healed();
        traffic.wait_for_acks(100).await;
        stage.finish(traffic).await;
    })
    .await;
}

/// Every instance of every service stopped with SIGTERM and started again,
/// then every NATS node, one at a time, under traffic: each drains and exits
/// cleanly, and every send succeeds once retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_everything() {
    in_turn(async {
        let Some(mut stage) = Stage::start().await else { return };
        let traffic = stage.traffic().await;
        traffic.wait_for_acks(50).await;
        for kind in Kind::ALL {
            for index in 0..stage.fleet.instances(kind).len() {
                let instance = stage.fleet.instance_mut(kind, index);
                let (took, clean) = instance.terminate(DRAIN_LIMIT).await;
                println!("{}-{} drained and exited in {} ms", kind.binary(), index + 1, took.as_millis());
                assert!(clean, "{kind:?} {index} exits with success after SIGTERM, within {DRAIN_LIMIT:?}");
                instance.restart().await;
                traffic.wait_for_acks(30).await;
            }
        }
        for node in 0..stage.cluster.len() {
            stage.cluster.stop(node).await;
            println!("NATS node {} stopped", stage.cluster.name(node));
            stage.cluster.restart(node).await;
            traffic.wait_for_acks(30).await;
        }
        stage.finish(traffic).await;
    })
    .await;
}
