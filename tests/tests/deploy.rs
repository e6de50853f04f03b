//! The docker compose deployment in deploy/, checked statically (CI has no
//! Docker engine): the repository's files pass, and broken copies of them
//! are caught with the specific complaint. See `chat_system_tests::deploy`.

use std::cell::RefCell;
use std::collections::BTreeSet;

use chat_system_tests::deploy::{Deployment, apps};

const COMPOSE: &str = "deploy/docker-compose.yml";
const NATS_CONF: &str = "deploy/nats/nats.conf";

/// The problems found in the repository's files changed by `edit`.
fn problems_after(path: &str, edit: impl FnOnce(&str) -> String) -> Vec<String> {
    Deployment::of_repository().edited(path, edit).problems()
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
