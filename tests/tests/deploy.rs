//! The deployments in deploy/ (the compose files, the Dockerfile, the
//! Kubernetes manifests), checked statically (CI has no Docker engine and no
//! cluster): the repository's files pass, and broken copies of them are
//! caught with the specific complaint. See `chat_system_tests::deploy`.

use std::cell::RefCell;
use std::collections::BTreeSet;

use chat_system_tests::deploy::{Deployment, apps};

const COMPOSE: &str = "deploy/docker-compose.yml";
const NATS_CONF: &str = "deploy/nats/nats.conf";
const CLUSTER: &str = "deploy/docker-compose.cluster.yml";
const HAPROXY: &str = "deploy/lb/haproxy.cfg";
const K8S: &str = "deploy/k8s";
const NATS_VALUES: &str = "deploy/k8s/nats-values.yaml";

/// The problems found in the repository's files changed by `edit`.
fn problems_after(path: &str, edit: impl FnOnce(&str) -> String) -> Vec<String> {
    Deployment::of_repository().edited(path, edit).problems()
}

fn assert_reported_starting(problems: &[String], start: &str) {
    assert!(
        problems.iter().any(|p| p.starts_with(start)),
        "expected a complaint starting\n  {start}\namong\n  {}",
        problems.join("\n  ")
    );
}

fn assert_reported(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p == expected),
        "expected the complaint\n  {expected}\namong\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_deploy_files_pass_every_check() {
    let problems = Deployment::of_repository().problems();
    assert!(problems.is_empty(), "the deploy files have problems:\n  - {}", problems.join("\n  - "));
}

#[test]
fn each_service_reads_exactly_the_settings_it_declares() {
    for app in apps() {
        let asked = RefCell::new(BTreeSet::new());
        let env = |name: &str| {
            asked.borrow_mut().insert(name.to_owned());
            None
        };
        (app.read)(&env).unwrap_or_else(|e| panic!("{}'s defaults do not parse: {e}", app.name));
        let declared: BTreeSet<String> = app
            .settings()
            .filter(|s| !chat_common::telemetry::SETTINGS.contains(s))
            .map(|s| s.name.to_owned())
            .collect();
        assert_eq!(asked.into_inner(), declared, "{} reads other variables than its SETTINGS declare", app.name);
    }
}

#[test]
fn a_service_missing_a_required_peer_variable_is_reported() {
    let problems = problems_after(COMPOSE, |text| text.replace("      PRESENCE_GRPC_URL: http://presence:50053\n", ""));
    assert_reported(
        &problems,
        "compose: service 'gateway' does not set PRESENCE_GRPC_URL (the default 127.0.0.1:50053 points at the container itself)",
    );
}

#[test]
fn a_listen_address_on_loopback_is_reported() {
    let problems = problems_after(COMPOSE, |text| {
        text.replace("AUTH_GRPC_ADDR: 0.0.0.0:50051", "AUTH_GRPC_ADDR: 127.0.0.1:50051")
    });
    assert_reported(
        &problems,
        "compose: service 'auth': AUTH_GRPC_ADDR=127.0.0.1:50051 must bind 0.0.0.0 in a container",
    );
}

#[test]
fn a_metrics_address_on_loopback_is_reported() {
    let problems = problems_after(COMPOSE, |text| {
        text.replace("HISTORY_METRICS_ADDR: 0.0.0.0:9102", "HISTORY_METRICS_ADDR: 127.0.0.1:9102")
    });
    assert_reported(
        &problems,
        "compose: service 'history': HISTORY_METRICS_ADDR=127.0.0.1:9102 must bind 0.0.0.0 in a container",
    );
}

#[test]
fn a_variable_a_service_reads_but_compose_does_not_set_is_reported() {
    let problems = problems_after(COMPOSE, |text| text.replace("      PRESENCE_GRACE_MS: \"5000\"\n", ""));
    assert_reported(&problems, "compose: service 'presence' does not set PRESENCE_GRACE_MS, which presence reads");
}

#[test]
fn a_peer_address_naming_the_wrong_service_or_port_is_reported() {
    let problems = problems_after(COMPOSE, |text| {
        text.replacen("AUTH_GRPC_URL: http://auth:50051", "AUTH_GRPC_URL: http://history:50052", 1).replace(
            "HISTORY_GRPC_URL: http://history:50052\n      NATS_URL",
            "HISTORY_GRPC_URL: http://history:50099\n      NATS_URL",
        )
    });
    assert_reported(&problems, "compose: service 'notification': AUTH_GRPC_URL points at 'history', expected 'auth'");
    assert_reported(
        &problems,
        "compose: service 'presence': HISTORY_GRPC_URL=http://history:50099 uses port 50099, but 'history' listens on 50052",
    );
}

#[test]
fn auth_and_gateway_disagreeing_on_the_token_audience_is_reported() {
    let problems = problems_after(COMPOSE, |text| {
        text.replace(
            "      GATEWAY_HTTP_ADDR: 0.0.0.0:8080\n",
            "      GATEWAY_HTTP_ADDR: 0.0.0.0:8080\n      JWT_AUDIENCE: other\n",
        )
    });
    assert_reported(&problems, "compose: JWT_AUDIENCE differs between auth (chat) and gateway (other)");
}

#[test]
fn an_unpinned_image_is_reported() {
    let problems = problems_after(COMPOSE, |text| text.replace("image: postgres:16", "image: postgres"));
    assert_reported(
        &problems,
        "compose: service 'postgres': image 'postgres' has no tag (would mean 'latest'); pin a version",
    );
}

#[test]
fn a_nats_image_other_than_the_pinned_version_is_reported() {
    let problems =
        problems_after(COMPOSE, |text| text.replace("image: nats:2.15.1-alpine", "image: nats:2.10.0-alpine"));
    assert!(problems.iter().any(|p| p.starts_with("compose: nats image tag '2.10.0-alpine' is not ")), "{problems:?}");
}

#[test]
fn a_nats_config_without_sync_interval_always_is_reported() {
    let problems = problems_after(NATS_CONF, |text| text.replace("  sync_interval: always\n", ""));
    assert_reported(
        &problems,
        "deploy/nats/nats.conf: JetStream must set sync_interval: always (docs/operations.md, durability)",
    );
}

#[test]
fn a_nats_config_the_server_refuses_is_reported() {
    let problems = problems_after(NATS_CONF, |text| text.replace("jetstream {", "jetstream {{"));
    assert!(
        problems.iter().any(|p| p.starts_with("deploy/nats/nats.conf: nats-server refuses it: ")),
        "nats-server -t did not refuse a broken configuration: {problems:?}"
    );
}

#[test]
fn a_jetstream_store_outside_a_volume_is_reported() {
    let problems =
        problems_after(NATS_CONF, |text| text.replace("store_dir: /data/jetstream", "store_dir: /tmp/jetstream"));
    assert_reported(&problems, "deploy/nats/nats.conf: JetStream store_dir /tmp/jetstream is not on a volume");
}

#[test]
fn waiting_for_a_service_without_a_healthcheck_is_reported() {
    let problems = problems_after(COMPOSE, |text| {
        text.replacen(
            "      jaeger:\n        condition: service_started",
            "      jaeger:\n        condition: service_healthy",
            1,
        )
    });
    assert_reported(
        &problems,
        "compose: service 'auth' waits for 'jaeger' to be healthy, but 'jaeger' has no healthcheck",
    );
}

#[test]
fn a_runtime_stage_without_a_binary_or_running_as_root_is_reported() {
    let problems = problems_after("deploy/Dockerfile", |text| {
        text.replace(" /out/presence /out/history", " /out/history").replace("USER 10001:10001", "USER root")
    });
    assert_reported(
        &problems,
        "deploy/Dockerfile: the runtime stage does not COPY the binary 'presence' that compose runs",
    );
    assert_reported(&problems, "deploy/Dockerfile: the runtime stage must switch to a non-root USER");
}

#[test]
fn a_build_stage_missing_a_workspace_manifest_is_reported() {
    let problems = problems_after("deploy/Dockerfile", |text| text.replace("COPY bench/ bench/\n", ""));
    assert_reported(
        &problems,
        "deploy/Dockerfile: the build stage does not copy bench/Cargo.toml (needed by cargo --locked)",
    );
}

#[test]
fn the_readme_configuration_table_agrees_with_the_settings() {
    let readme = std::fs::read_to_string(chat_system_tests::workspace_root().join("README.md")).unwrap();
    let problems = chat_system_tests::deploy::readme_problems(&readme);
    assert!(problems.is_empty(), "README.md is out of date:\n  - {}", problems.join("\n  - "));
}

#[test]
fn a_readme_default_that_differs_from_the_setting_is_reported() {
    let readme = std::fs::read_to_string(chat_system_tests::workspace_root().join("README.md")).unwrap();
    let problems = chat_system_tests::deploy::readme_problems(
        &readme.replace("| `PRESENCE_GRACE_MS` | presence | `5000` |", "| `PRESENCE_GRACE_MS` | presence | `3000` |"),
    );
    assert_reported(
        &problems,
        "README.md's configuration table gives PRESENCE_GRACE_MS the default `3000`, but it is `5000`",
    );
}

// The cluster compose file: held to the same rules, and to those of a cluster.

#[test]
fn a_cluster_service_missing_a_nats_node_from_nats_url_is_reported() {
    let problems = problems_after(CLUSTER, |text| text.replace(",nats://nats-3:4222\n", "\n"));
    assert_reported(
        &problems,
        "compose cluster: service 'history-2': NATS_URL=nats://nats-1:4222,nats://nats-2:4222 does not name 'nats-3'",
    );
}

#[test]
fn a_cluster_peer_list_missing_an_instance_is_reported() {
    let problems = problems_after(CLUSTER, |text| {
        text.replacen("PRESENCE_GRPC_URL: presence-1:50053,presence-2:50053", "PRESENCE_GRPC_URL: presence-1:50053", 1)
    });
    assert_reported(
        &problems,
        "compose cluster: service 'gateway-1': PRESENCE_GRPC_URL=presence-1:50053 does not name 'presence-2'",
    );
}

#[test]
fn a_cluster_variable_a_service_reads_but_does_not_set_is_reported() {
    let problems = problems_after(CLUSTER, |text| text.replace("    PRESENCE_GRACE_MS: \"5000\"\n", ""));
    assert_reported(
        &problems,
        "compose cluster: service 'presence-2' does not set PRESENCE_GRACE_MS, which presence reads",
    );
}

#[test]
fn a_stream_with_fewer_replicas_than_nats_nodes_is_reported() {
    let problems =
        problems_after(CLUSTER, |text| text.replace("CHAT_STREAM_REPLICAS: \"3\"", "CHAT_STREAM_REPLICAS: \"1\""));
    assert_reported(&problems, "compose cluster: service 'auth-1': CHAT_STREAM_REPLICAS=1, but NATS has 3 nodes");
}

#[test]
fn a_cluster_service_not_waiting_for_a_nats_node_is_reported() {
    let problems = problems_after(CLUSTER, |text| {
        text.replace("  nats-3:\n    condition: service_healthy\n", "  nats-3:\n    condition: service_started\n")
    });
    assert_reported(
        &problems,
        "compose cluster: service 'gateway-2' waits for 'nats-3' to start, but should wait for it to be healthy",
    );
}

#[test]
fn a_cluster_nats_node_the_server_refuses_or_without_a_route_is_reported() {
    let path = "deploy/nats/cluster/nats-2.conf";
    let problems = Deployment::of_repository()
        .edited(path, |text| text.replace("    nats-route://nats-3:6222\n", ""))
        .edited("deploy/nats/cluster/nats-3.conf", |text| text.replace("cluster {", "cluster {{"))
        .problems();
    assert_reported(&problems, "deploy/nats/cluster/nats-2.conf: the cluster's routes do not name nats-3:6222");
    assert_reported_starting(&problems, "deploy/nats/cluster/nats-3.conf: nats-server refuses it: ");
}

#[test]
fn two_cluster_nodes_with_one_name_or_one_store_are_reported() {
    let problems = Deployment::of_repository()
        .edited("deploy/nats/cluster/nats-2.conf", |text| text.replace("server_name: nats-2", "server_name: nats-1"))
        .edited(CLUSTER, |text| text.replace("      - nats-3-data:/data", "      - nats-1-data:/data"))
        .problems();
    assert_reported(&problems, "deploy/nats/cluster/nats-2.conf: server_name nats-1 is also that of nats-1");
    assert_reported(&problems, "compose cluster: nats-3 keeps JetStream on volume 'nats-1-data', as nats-1 does");
}

#[test]
fn a_load_balancer_missing_a_gateway_or_its_health_check_is_reported() {
    let problems = problems_after(HAPROXY, |text| {
        text.replace("    server gateway-2 gateway-2:8080\n", "").replace("    option httpchk GET /readyz\n", "")
    });
    assert_reported(&problems, "deploy/lb/haproxy.cfg: backend 'gateways' does not send to gateway-2:8080");
    assert_reported(
        &problems,
        "deploy/lb/haproxy.cfg: backend 'gateways' does not check the gateways' GET /readyz (option httpchk GET /readyz)",
    );
}

#[test]
fn a_load_balancer_cutting_websockets_is_reported() {
    let problems = problems_after(HAPROXY, |text| {
        text.replace("timeout tunnel 1h", "timeout tunnel 20s").replace("    mode http\n", "    mode tcp\n")
    });
    assert_reported(
        &problems,
        "deploy/lb/haproxy.cfg: timeout tunnel 20s is shorter than the gateways' GATEWAY_IDLE_TIMEOUT_SECS (30 s): \
         the balancer would cut sockets the gateway keeps",
    );
    assert_reported(
        &problems,
        "deploy/lb/haproxy.cfg: frontend 'chat' runs in mode tcp; it needs mode http (WebSocket upgrades, /readyz checks)",
    );
}

#[test]
fn gateways_trusting_an_address_the_balancer_does_not_give_are_reported() {
    let problems = problems_after(HAPROXY, |text| text.replace("    option forwardfor\n", ""));
    assert_reported(
        &problems,
        "compose cluster: gateway-1 trusts X-Forwarded-For (GATEWAY_TRUST_FORWARDED_FOR=true), but lb does not \
         append it (option forwardfor): clients could choose the address they are limited by",
    );
}

// The Kubernetes manifests.

#[test]
fn a_manifest_kubernetes_validate_rejects_is_reported() {
    let problems = problems_after(&format!("{K8S}/auth.yaml"), |text| {
        text.replacen(
            "allowPrivilegeEscalation: false",
            "allowPrivilegeEscalation: false\n            privileged: maybe",
            1,
        )
    });
    assert_reported_starting(
        &problems,
        "deploy/k8s: kubernetes-validate refuses: ERROR auth.yaml did not validate for resource deployment/auth",
    );
}

#[test]
fn a_manifest_kustomization_does_not_list_is_reported() {
    let problems = problems_after(&format!("{K8S}/kustomization.yaml"), |text| text.replace("  - presence.yaml\n", ""));
    assert_reported(&problems, "deploy/k8s/kustomization.yaml does not list presence.yaml");
    assert_reported(&problems, "deploy/k8s: no Deployment 'presence'");
}

#[test]
fn a_deployment_without_a_readiness_probe_or_a_budget_is_reported() {
    let problems = Deployment::of_repository()
        .edited(&format!("{K8S}/presence.yaml"), |text| {
            text.replace(
                "          readinessProbe:\n            grpc:\n              port: 50053\n            periodSeconds: 5\n            failureThreshold: 2\n",
                "",
            )
        })
        .edited(&format!("{K8S}/history.yaml"), |text| {
            text.split("\n---\n").filter(|doc| !doc.contains("kind: PodDisruptionBudget")).collect::<Vec<_>>().join("\n---\n")
        })
        .problems();
    assert_reported(&problems, "deploy/k8s: Deployment 'presence' has no readinessProbe");
    assert_reported(&problems, "deploy/k8s: Deployment 'history' has no PodDisruptionBudget");
}

#[test]
fn a_deployment_missing_a_variable_or_naming_a_wrong_peer_is_reported() {
    let problems = problems_after(&format!("{K8S}/notification.yaml"), |text| {
        text.replace("            - name: NOTIFICATION_INTAKE_ATTEMPTS\n              value: \"10\"\n", "")
            .replace("value: auth:50051", "value: history:50052")
    });
    assert_reported(
        &problems,
        "deploy/k8s: Deployment 'notification' does not set NOTIFICATION_INTAKE_ATTEMPTS, which notification reads",
    );
    assert_reported(
        &problems,
        "deploy/k8s: Deployment 'notification': AUTH_GRPC_URL points at 'history', expected 'auth'",
    );
}

#[test]
fn a_grpc_service_that_is_not_headless_is_reported() {
    let problems = problems_after(&format!("{K8S}/history.yaml"), |text| text.replace("  clusterIP: None\n", ""));
    assert_reported(
        &problems,
        "deploy/k8s: Service 'history' must be headless (clusterIP: None), so its name resolves to every pod",
    );
}

#[test]
fn a_gateway_grace_period_shorter_than_its_drain_is_reported() {
    let problems = problems_after(&format!("{K8S}/gateway.yaml"), |text| {
        text.replace("terminationGracePeriodSeconds: 15", "terminationGracePeriodSeconds: 5")
    });
    assert_reported(
        &problems,
        "deploy/k8s: Deployment 'gateway': terminationGracePeriodSeconds is 5, but the gateway's drain is given 15 s \
         (stop_grace_period in the compose files)",
    );
}

#[test]
fn nats_values_with_one_replica_or_another_version_are_reported() {
    let problems = problems_after(NATS_VALUES, |text| {
        text.replace("    replicas: 3\n", "    replicas: 1\n").replace("tag: 2.15.1-alpine", "tag: 2.10.0-alpine")
    });
    assert_reported(
        &problems,
        "deploy/k8s/nats-values.yaml: config.cluster.replicas is 1; JetStream at R3 needs 3 nodes",
    );
    assert_reported_starting(&problems, "deploy/k8s/nats-values.yaml: container.image.tag '2.10.0-alpine' is not ");
    // NATS_URL still names three pods, two of which the chart no longer makes.
    assert_reported_starting(&problems, "deploy/k8s: Deployment 'auth': NATS_URL=");
}

#[test]
fn nats_values_without_a_durable_jetstream_are_reported() {
    let problems = problems_after(NATS_VALUES, |text| {
        text.replace("      sync_interval: always\n", "      max_file_store: 10G\n")
            .replace("      pvc:\n        enabled: true", "      pvc:\n        enabled: false")
    });
    assert_reported(
        &problems,
        "deploy/k8s/nats-values.yaml: config.jetstream.merge must set sync_interval: always (docs/operations.md, durability)",
    );
    assert_reported(
        &problems,
        "deploy/k8s/nats-values.yaml: JetStream's file store must be on a PersistentVolumeClaim (config.jetstream.fileStore)",
    );
}
