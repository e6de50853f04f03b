//! The rules a service's environment follows in every deployment, whatever
//! file describes it (a compose service, a Kubernetes Deployment), so compose
//! and Kubernetes are held to the same ones: listen addresses bind every
//! interface, every variable the service reads is set, peer addresses name the
//! right service on the port it listens on (and every instance of it, when a
//! list names several), auth and the gateway agree on tokens, and the stream
//! has as many replicas as NATS has nodes.

use std::collections::{BTreeMap, BTreeSet};

use chat_common::config::{Kind, Peer, Setting, shared, split_list};
use chat_common::nats::StreamSettings;

use super::{App, Check, compose, defaults_to_loopback, part};

/// One service as a deployment file configures it.
pub(super) struct Instance {
    /// How complaints about it start, e.g. `compose: service 'auth'`.
    pub place: String,
    /// Its name in the file (a compose service, a Deployment).
    pub name: String,
    pub app: App,
    /// Its environment, as the service will see it.
    pub environment: BTreeMap<String, String>,
}

impl Instance {
    /// The variable's value when it is set and not blank (as the services read it).
    fn value(&self, setting: &Setting) -> Option<&str> {
        self.environment.get(setting.name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }
}

/// The hosts peer addresses may name in one deployment.
pub(super) struct Topology {
    /// Each host: what it is (a service's name, or `nats`, `postgres`,
    /// `jaeger`; see [`part`]) and the port it listens on, when known.
    pub hosts: BTreeMap<String, (String, Option<i64>)>,
    /// Peers outside the deployment (Kubernetes' database): not checked here.
    pub external: Vec<Peer>,
    /// What a host must be, in complaints about one that is not: "a compose service".
    pub kind_of_host: &'static str,
}

impl Topology {
    /// The hosts that are `what`.
    fn hosts_of<'a>(&'a self, what: &'a str) -> impl Iterator<Item = &'a str> {
        self.hosts.iter().filter(move |(_, (is, _))| is == what).map(|(host, _)| host.as_str())
    }
}

/// The addresses a peer setting's value holds: NATS and the gRPC services
/// take comma-separated lists, the database and the trace collector one URL.
fn addresses(peer: Peer, value: &str) -> Vec<String> {
    match peer {
        Peer::Database | Peer::TraceCollector => vec![value.to_owned()],
        _ => split_list(value),
    }
}

impl Check<'_> {
    /// Listen and metrics addresses are set and bind every interface, and
    /// peers whose default is loopback are set. Returns the port each
    /// instance serves its API on, by name.
    pub(super) fn listen_addresses(&mut self, instances: &[Instance]) -> BTreeMap<String, Option<i64>> {
        let mut listen_ports = BTreeMap::new();
        for instance in instances {
            let place = &instance.place;
            for setting in instance.app.settings().filter(|s| matches!(s.kind, Kind::Listen | Kind::Metrics)) {
                let Some(value) = instance.value(setting) else {
                    self.fail(format!(
                        "{place} does not set {} (the default {} is unreachable from other containers)",
                        setting.name, setting.default
                    ));
                    continue;
                };
                let (host, port) = compose::host_port(value);
                if !matches!(host.as_deref(), Some("0.0.0.0" | "::")) {
                    self.fail(format!("{place}: {}={value} must bind 0.0.0.0 in a container", setting.name));
                }
                if setting.kind == Kind::Listen {
                    listen_ports.insert(instance.name.clone(), port);
                }
            }
            for setting in
                instance.app.settings().filter(|s| matches!(s.kind, Kind::Peer(_)) && defaults_to_loopback(s))
            {
                if instance.value(setting).is_none() {
                    self.fail(format!(
                        "{place} does not set {} (the default {} points at the container itself)",
                        setting.name, setting.default
                    ));
                }
            }
        }
        listen_ports
    }

    /// Every variable each service reads is set, so the file shows the whole configuration.
    pub(super) fn every_setting_is_set(&mut self, instances: &[Instance]) {
        for instance in instances {
            let unset: BTreeSet<&str> = instance
                .app
                .settings()
                .map(|s| s.name)
                .filter(|variable| !instance.environment.contains_key(*variable))
                .collect();
            for variable in unset {
                self.fail(format!("{} does not set {variable}, which {} reads", instance.place, instance.app.name));
            }
        }
    }

    /// Every address a peer setting holds names a host that is what the
    /// setting wants, on the port it listens on; a list names every such host.
    pub(super) fn peer_addresses(&mut self, instances: &[Instance], topology: &Topology) {
        for instance in instances {
            let place = &instance.place;
            for setting in instance.app.settings() {
                let Kind::Peer(peer) = setting.kind else { continue };
                let Some(value) = instance.value(setting).filter(|_| !topology.external.contains(&peer)) else {
                    continue;
                };
                let (variable, expected) = (setting.name, part(peer));
                let mut named = BTreeSet::new();
                for address in addresses(peer, value) {
                    let (host, port) = compose::host_port(&address);
                    let host = host.unwrap_or_default();
                    let Some((what, listens_on)) = topology.hosts.get(&host) else {
                        self.fail(format!(
                            "{place}: {variable}={value} names host '{host}', which is not {}",
                            topology.kind_of_host
                        ));
                        continue;
                    };
                    if what != expected {
                        self.fail(format!("{place}: {variable} points at '{host}', expected '{expected}'"));
                        continue;
                    }
                    named.insert(host.clone());
                    if let Some(listens_on) = listens_on
                        && port != Some(*listens_on)
                    {
                        let port = port.map_or_else(|| "none".to_owned(), |p| p.to_string());
                        self.fail(format!(
                            "{place}: {variable}={value} uses port {port}, but '{host}' listens on {listens_on}"
                        ));
                    }
                }
                if named.is_empty() {
                    continue; // already reported: it names nothing of the right kind
                }
                for host in topology.hosts_of(expected).filter(|host| !named.contains(*host)) {
                    self.fail(format!("{place}: {variable}={value} does not name '{host}'"));
                }
            }
        }
    }

    /// Auth and the gateway agree on the JWT issuer and audience.
    pub(super) fn tokens_agree(&mut self, label: &str, instances: &[Instance]) {
        let signers_and_verifiers: Vec<&Instance> =
            instances.iter().filter(|i| ["auth", "gateway"].contains(&i.app.name)).collect();
        let Some(first_auth) = signers_and_verifiers.iter().find(|i| i.app.name == "auth") else { return };
        for setting in [shared::JWT_ISSUER, shared::JWT_AUDIENCE] {
            let value = |instance: &Instance| instance.value(&setting).unwrap_or(setting.default).to_owned();
            let signed = value(first_auth);
            for other in &signers_and_verifiers {
                let seen = value(other);
                if seen != signed {
                    self.fail(format!(
                        "{label}: {} differs between {} ({signed}) and {} ({seen})",
                        setting.name, first_auth.name, other.name
                    ));
                }
            }
        }
    }

    /// The stream and buckets have one replica per NATS node: fewer lose
    /// acked messages with a node, more cannot be placed.
    pub(super) fn stream_replicas(&mut self, instances: &[Instance], nats_nodes: usize) {
        let setting = StreamSettings::REPLICAS;
        for instance in instances.iter().filter(|i| i.app.settings().any(|s| s.name == setting.name)) {
            let value = instance.value(&setting).unwrap_or(setting.default);
            if value.trim().parse::<usize>().ok() != Some(nats_nodes) {
                let nodes = if nats_nodes == 1 { "node" } else { "nodes" };
                self.fail(format!("{}: {}={value}, but NATS has {nats_nodes} {nodes}", instance.place, setting.name));
            }
        }
    }
}
