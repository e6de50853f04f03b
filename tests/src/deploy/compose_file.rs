//! The checks of one compose file. deploy/docker-compose.yml runs one
//! instance of everything; deploy/docker-compose.cluster.yml has the shape of
//! a deployment on several hosts (a three-node NATS cluster, two instances of
//! each service, a load balancer in front of the gateways). Both are held to
//! the same rules; the cluster file adds those of a cluster: every list of
//! peers names every instance, the NATS nodes route to each other with names
//! and stores of their own, and the load balancer fits the gateways.

use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::Yaml;

use super::env::{Instance, Topology};
use super::{Check, compose, haproxy, resolve};

/// A compose file and the shape it must have.
pub(super) struct Shape {
    pub path: &'static str,
    /// How its complaints start.
    pub label: &'static str,
    /// Instances of each service: one is named after it (`auth`); more are
    /// numbered (`auth-1`, `auth-2`).
    pub instances: usize,
    /// NATS nodes, named as instances are.
    pub nats_nodes: usize,
    /// The load balancer in front of the gateways, if any.
    pub load_balancer: Option<&'static str>,
}

pub(super) const FILES: [Shape; 2] = [
    Shape { path: "deploy/docker-compose.yml", label: "compose", instances: 1, nats_nodes: 1, load_balancer: None },
    Shape {
        path: "deploy/docker-compose.cluster.yml",
        label: "compose cluster",
        instances: 2,
        nats_nodes: 3,
        load_balancer: Some("lb"),
    },
];

/// The compose services that are not ours, besides NATS.
const INFRA: [&str; 2] = ["postgres", "jaeger"];
/// The port each infrastructure service listens on.
const INFRA_PORTS: [(&str, i64); 3] = [("nats", 4222), ("postgres", 5432), ("jaeger", 4317)];
/// Where NATS nodes must be waited for as healthy, not just started.
const WAIT_HEALTHY: [&str; 2] = ["nats", "postgres"];
/// The official HAProxy image reads its configuration here.
const HAPROXY_CONFIG: &str = "/usr/local/etc/haproxy/haproxy.cfg";

/// `base` when there is one, else `base-1`, `base-2`, ...
pub(super) fn numbered(base: &str, count: usize) -> Vec<String> {
    if count == 1 { vec![base.to_owned()] } else { (1..=count).map(|i| format!("{base}-{i}")).collect() }
}

/// What the rest of the check needs from a compose file.
pub(super) struct Summary {
    /// The Dockerfiles its builds use, with their contexts.
    pub dockerfiles: BTreeSet<(String, String)>,
    /// The workspace binaries it runs.
    pub binaries: BTreeSet<String>,
    /// The gateway's `stop_grace_period`, in seconds.
    pub gateway_grace: Option<f64>,
}

/// A NATS node's configuration file.
struct NatsConfig {
    path: String,
    text: String,
    /// The volume JetStream's store is on.
    store_volume: Option<String>,
}

impl Check<'_> {
    pub(super) fn compose_file(
        &mut self,
        shape: &Shape,
        cargo_binaries: &BTreeSet<String>,
        pinned_nats: Option<&str>,
    ) -> Option<Summary> {
        let label = shape.label;
        let parsed = self
            .files
            .read(shape.path)
            .ok_or_else(|| "the file cannot be read".to_owned())
            .and_then(|text| compose::parse(&text));
        let document = match parsed {
            Ok(document) => document,
            Err(e) => {
                self.fail(format!("cannot parse {}: {e}", shape.path));
                return None;
            }
        };
        let services: BTreeMap<String, &Yaml> = compose::entries(&document["services"]).into_iter().collect();
        let declared_volumes: BTreeSet<String> =
            compose::entries(&document["volumes"]).into_iter().map(|(name, _)| name).collect();
        let nats_nodes = numbered("nats", shape.nats_nodes);

        let expected: Vec<String> = nats_nodes
            .iter()
            .cloned()
            .chain(INFRA.map(str::to_owned))
            .chain(self.apps.iter().flat_map(|app| numbered(app.name, shape.instances)))
            .chain(shape.load_balancer.map(str::to_owned))
            .collect();
        for name in expected {
            if !services.contains_key(&name) {
                self.fail(format!("{label}: service '{name}' is missing"));
            }
        }

        let dockerfiles = self.images_and_builds(label, &services);
        if let Some(pinned) = pinned_nats {
            for node in nats_nodes.iter().filter_map(|node| services.get_key_value(node)) {
                self.nats_image(label, node, pinned);
            }
        }
        let instances = self.instances(shape, &services, cargo_binaries);
        let listen_ports = self.listen_addresses(&instances);
        let topology = topology(&services, &instances, &listen_ports, &nats_nodes);
        self.peer_addresses(&instances, &topology);
        self.every_setting_is_set(&instances);
        self.tokens_agree(label, &instances);
        self.stream_replicas(&instances, shape.nats_nodes);
        self.published_ports(shape, &services, &instances, &listen_ports);
        self.dependencies(label, &services);
        self.waits_for_peers(&instances, &services, &topology);
        self.volumes(label, &services, &declared_volumes);
        self.nats_configs(label, &services, &nats_nodes);
        if let Some(postgres) = services.get("postgres")
            && !compose::volumes(postgres).iter().any(|v| v.bind && v.target.starts_with("/docker-entrypoint-initdb.d"))
        {
            self.fail(format!(
                "{label}: postgres mounts no init script into /docker-entrypoint-initdb.d \
                 (the history database would not exist)"
            ));
        }
        if let Some(lb) = shape.load_balancer {
            self.load_balancer(label, lb, &services, &instances, &listen_ports);
        }

        let gateway_grace = instances
            .iter()
            .filter(|i| i.app.name == "gateway")
            .find_map(|i| compose::scalar(&services[&i.name]["stop_grace_period"]))
            .and_then(|grace| super::seconds(&grace, 1.0));
        let binaries = instances.iter().map(|i| i.app.name.to_owned()).collect();
        Some(Summary { dockerfiles, binaries, gateway_grace })
    }

    /// Each service has an image (pinned) or a build; returns the builds'
    /// Dockerfiles and contexts.
    fn images_and_builds(&mut self, label: &str, services: &BTreeMap<String, &Yaml>) -> BTreeSet<(String, String)> {
        let mut dockerfiles = BTreeSet::new();
        for (name, service) in services {
            let image = compose::scalar(&service["image"]).filter(|_| compose::has(service, "image"));
            let build = &service["build"];
            if image.is_none() && !compose::has(service, "build") {
                self.fail(format!("{label}: service '{name}' has neither image nor build"));
            }
            if let Some(image) = image {
                self.check_pinned(&image, &format!("{label}: service '{name}'"));
            }
            if !compose::has(service, "build") {
                continue;
            }
            let (context, dockerfile) = match compose::scalar(build) {
                Some(context) => (context, "Dockerfile".to_owned()),
                None => (
                    compose::scalar(&build["context"]).unwrap_or_else(|| ".".to_owned()),
                    compose::scalar(&build["dockerfile"]).unwrap_or_else(|| "Dockerfile".to_owned()),
                ),
            };
            let context = resolve("deploy", &context);
            let dockerfile = resolve(&context, &dockerfile);
            if !self.files.is_dir(&context) {
                self.fail(format!("{label}: service '{name}': build context {context} does not exist"));
            }
            if self.files.is_file(&dockerfile) {
                dockerfiles.insert((dockerfile, context));
            } else {
                self.fail(format!("{label}: service '{name}': Dockerfile {dockerfile} does not exist"));
            }
        }
        dockerfiles
    }

    /// A NATS node's image is the version the project pins everywhere.
    fn nats_image(&mut self, label: &str, (node, service): (&String, &&Yaml), pinned: &str) {
        let Some(image) = compose::scalar(&service["image"]).filter(|_| compose::has(service, "image")) else {
            return;
        };
        let (repository, tag, _) = compose::split_image(&image);
        let tag = tag.unwrap_or_default();
        let version = tag.split('-').next().unwrap_or_default();
        if !["nats", "library/nats", "docker.io/library/nats"].contains(&repository) {
            self.fail(format!("{label}: {node} image '{image}' is not the official nats image"));
        }
        if version != pinned {
            self.fail(format!(
                "{label}: {node} image tag '{tag}' is not {pinned} (NATS_SERVER_VERSION in scripts/install-tools.sh)"
            ));
        }
        if compose::has(service, "healthcheck") && !service["healthcheck"].is_null() && !tag.contains("alpine") {
            self.fail(format!(
                "{label}: {node} has a healthcheck, but the default nats image is scratch-based \
                 (no shell, no wget); use the -alpine variant"
            ));
        }
    }

    /// Each instance of each service runs that service's binary, and every
    /// workspace binary is run. Returns the instances found.
    fn instances(
        &mut self,
        shape: &Shape,
        services: &BTreeMap<String, &Yaml>,
        cargo_binaries: &BTreeSet<String>,
    ) -> Vec<Instance> {
        let label = shape.label;
        let mut instances = Vec::new();
        for app in self.apps {
            for name in numbered(app.name, shape.instances) {
                let Some(service) = services.get(&name) else { continue };
                let command = compose::command(service);
                let Some(program) = command.first() else {
                    self.fail(format!("{label}: service '{name}' has no command naming its binary"));
                    continue;
                };
                let binary = program.rsplit('/').next().unwrap_or_default();
                if !cargo_binaries.contains(binary) {
                    self.fail(format!(
                        "{label}: service '{name}' runs '{program}', not one of the workspace binaries {cargo_binaries:?}"
                    ));
                    continue;
                }
                if binary != app.name {
                    self.fail(format!("{label}: service '{name}' runs '{binary}', expected '{}'", app.name));
                    continue;
                }
                let environment = compose::environment(service);
                instances.push(Instance { place: format!("{label}: service '{name}'"), name, app, environment });
            }
        }
        for binary in cargo_binaries {
            if !instances.iter().any(|i| i.app.name == binary) {
                self.fail(format!("{label}: no service runs the workspace binary '{binary}'"));
            }
        }
        instances
    }

    /// Published ports reach what the service listens on; no host port is
    /// published twice; each gRPC service is reachable for grpcurl on host
    /// loopback through its first instance.
    fn published_ports(
        &mut self,
        shape: &Shape,
        services: &BTreeMap<String, &Yaml>,
        instances: &[Instance],
        listen_ports: &BTreeMap<String, Option<i64>>,
    ) {
        let label = shape.label;
        for instance in instances {
            let name = &instance.name;
            let listens_on = listen_ports.get(name).copied().flatten();
            let listens_on = listens_on.map_or_else(|| "none".to_owned(), |p| p.to_string());
            for port in compose::ports(services[name]) {
                if port.target != listens_on {
                    self.fail(format!(
                        "{label}: service '{name}' publishes container port {}, but listens on {listens_on}",
                        port.target
                    ));
                }
            }
        }
        for app in self.apps.into_iter().filter(|app| app.grpc) {
            let first = &numbered(app.name, shape.instances)[0];
            let Some(Some(p)) = listen_ports.get(first) else { continue };
            let ports = compose::ports(services[first]);
            let p = p.to_string();
            if !ports.iter().any(|port| port.host_ip == "127.0.0.1" && port.published == p && port.target == p) {
                self.fail(format!("{label}: service '{first}' should publish 127.0.0.1:{p}:{p} for grpcurl"));
            }
        }
        let mut published: BTreeMap<String, &String> = BTreeMap::new();
        for (name, service) in services {
            for port in compose::ports(service).into_iter().filter(|port| !port.published.is_empty()) {
                if let Some(other) = published.insert(port.published.clone(), name) {
                    self.fail(format!(
                        "{label}: services '{other}' and '{name}' both publish host port {}",
                        port.published
                    ));
                }
            }
        }
    }

    /// `depends_on` targets exist; `service_healthy` targets have a healthcheck.
    fn dependencies(&mut self, label: &str, services: &BTreeMap<String, &Yaml>) {
        for (name, service) in services {
            for (dependency, condition) in compose::depends_on(service) {
                let Some(target) = services.get(&dependency) else {
                    self.fail(format!("{label}: service '{name}' depends on '{dependency}', which does not exist"));
                    continue;
                };
                let healthcheck = &target["healthcheck"];
                let has_test = compose::has(healthcheck, "test") && !healthcheck["test"].is_null();
                let disabled = healthcheck["disable"].as_bool().unwrap_or(false);
                if condition == "service_healthy" && (!has_test || disabled) {
                    self.fail(format!(
                        "{label}: service '{name}' waits for '{dependency}' to be healthy, but '{dependency}' has no healthcheck"
                    ));
                }
            }
        }
    }

    /// Each instance waits for every host its peer variables name, and for
    /// NATS and PostgreSQL to be healthy (a started one may not answer yet).
    fn waits_for_peers(&mut self, instances: &[Instance], services: &BTreeMap<String, &Yaml>, topology: &Topology) {
        for instance in instances {
            let waits_for: BTreeMap<String, String> =
                compose::depends_on(services[&instance.name]).into_iter().collect();
            let mut named: BTreeMap<String, &str> = BTreeMap::new();
            for setting in instance.app.settings().filter(|s| matches!(s.kind, chat_common::config::Kind::Peer(_))) {
                let value = instance.environment.get(setting.name).map(String::as_str).unwrap_or_default();
                for address in value.split(',') {
                    if let Some(host) = compose::host_port(address.trim()).0
                        && topology.hosts.contains_key(&host)
                    {
                        named.entry(host).or_insert(setting.name);
                    }
                }
            }
            for (host, variable) in named {
                let place = &instance.place;
                match waits_for.get(&host) {
                    None => self.fail(format!("{place} does not wait for '{host}' (named by {variable})")),
                    Some(condition)
                        if condition != "service_healthy"
                            && WAIT_HEALTHY.contains(&topology.hosts[&host].0.as_str()) =>
                    {
                        self.fail(format!("{place} waits for '{host}' to start, but should wait for it to be healthy"))
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Bind mounts' sources exist; named volumes are declared.
    fn volumes(&mut self, label: &str, services: &BTreeMap<String, &Yaml>, declared: &BTreeSet<String>) {
        for (name, service) in services {
            for volume in compose::volumes(service) {
                let Some(source) = &volume.source else { continue };
                if volume.bind {
                    let home = std::env::var("HOME").unwrap_or_default();
                    let expanded =
                        source.strip_prefix('~').map_or_else(|| source.clone(), |rest| format!("{home}{rest}"));
                    let path = resolve("deploy", &expanded);
                    if !self.files.exists(&path) {
                        self.fail(format!("{label}: service '{name}' mounts {source}, but {path} does not exist"));
                    }
                } else if !declared.contains(source) {
                    self.fail(format!(
                        "{label}: service '{name}' uses volume '{source}', not declared under top-level volumes"
                    ));
                }
            }
        }
    }

    /// Each NATS node's configuration passes [`Self::nats_config`]; in a
    /// cluster, each node has a name and a store of its own, and routes to
    /// every node.
    fn nats_configs(&mut self, label: &str, services: &BTreeMap<String, &Yaml>, nodes: &[String]) {
        let mut names: BTreeMap<String, &String> = BTreeMap::new();
        let mut stores: BTreeMap<String, &String> = BTreeMap::new();
        let server_name =
            regex::Regex::new(r#"(?m)^\s*server_name\s*[:=]\s*"?([A-Za-z0-9_.-]+)"#).expect("a valid pattern");
        for node in nodes {
            let Some(service) = services.get(node) else { continue };
            let Some(config) = self.nats_config(label, node, service) else { continue };
            if nodes.len() == 1 {
                continue;
            }
            let path = &config.path;
            match server_name.captures(&config.text).map(|found| found[1].to_owned()) {
                None => self.fail(format!("{path}: no server_name (each node of a JetStream cluster needs its own)")),
                Some(name) => {
                    if let Some(other) = names.insert(name.clone(), node) {
                        self.fail(format!("{path}: server_name {name} is also that of {other}"));
                    }
                }
            }
            if let Some(volume) = config.store_volume
                && let Some(other) = stores.insert(volume.clone(), node)
            {
                self.fail(format!("{label}: {node} keeps JetStream on volume '{volume}', as {other} does"));
            }
            self.nats_routes(path, &config.text, nodes);
        }
    }

    /// A cluster node's `cluster` block listens for routes and names every node.
    fn nats_routes(&mut self, path: &str, text: &str, nodes: &[String]) {
        let Some(cluster) = block(text, "cluster") else {
            self.fail(format!("{path}: no cluster {{ ... }} block, but NATS has {} nodes", nodes.len()));
            return;
        };
        let listen = regex::Regex::new(r#"(?m)^\s*(?:listen\s*[:=]\s*"?[^\s"]*:|port\s*[:=]\s*)(\d+)"#)
            .expect("a valid pattern");
        let Some(port) = listen.captures(cluster).map(|found| found[1].to_owned()) else {
            self.fail(format!("{path}: the cluster block has no listen port for routes"));
            return;
        };
        let route =
            regex::Regex::new(r"(?:nats-route|nats)://(?:[^@\s]+@)?([A-Za-z0-9_.-]+):(\d+)").expect("a valid pattern");
        let routes: BTreeSet<(String, String)> =
            route.captures_iter(cluster).map(|found| (found[1].to_owned(), found[2].to_owned())).collect();
        for node in nodes {
            if !routes.contains(&(node.clone(), port.clone())) {
                self.fail(format!("{path}: the cluster's routes do not name {node}:{port}"));
            }
        }
    }

    /// A NATS node: its configuration is mounted where the command reads it,
    /// the pinned nats-server accepts it, and JetStream is durable, on a volume.
    fn nats_config(&mut self, label: &str, node: &str, service: &Yaml) -> Option<NatsConfig> {
        let command = compose::command(service);
        let mut target = "/etc/nats/nats-server.conf".to_owned(); // the alpine image's default
        for flag in ["--config", "-c"] {
            if let Some(at) = command.iter().position(|word| word == flag)
                && let Some(path) = command.get(at + 1)
            {
                target.clone_from(path);
            }
        }
        let volumes = compose::volumes(service);
        let Some(source) = volumes.iter().find(|v| v.bind && v.target == target).and_then(|v| v.source.clone()) else {
            self.fail(format!("{label}: {node} reads {target}, but nothing is mounted there"));
            return None;
        };
        let path = resolve("deploy", &source);
        // A missing file is reported with the volumes.
        let text = self.files.is_file(&path).then(|| self.files.read(&path)).flatten()?;
        self.nats_server_accepts(&path, &text);
        // The durability docs/operations.md promises: an fsync before every ack.
        let sync_always = regex::Regex::new(r"(?m)^\s*sync_interval\s*[:=]\s*always\b").expect("a valid pattern");
        if !sync_always.is_match(&text) {
            self.fail(format!("{path}: JetStream must set sync_interval: always (docs/operations.md, durability)"));
        }
        let store_dir = regex::Regex::new(r#"jetstream\s*[:=]?\s*\{[^}]*store_dir\s*[:=]\s*"?([^\s"}]+)"#)
            .expect("a valid pattern");
        let mut store_volume = None;
        match store_dir.captures(&text) {
            None => self.fail(format!("{path}: needs a jetstream {{ store_dir: ... }} block")),
            Some(found) => {
                let store = &found[1];
                let volume = volumes.iter().find(|v| {
                    !v.bind && (store == v.target || store.starts_with(&format!("{}/", v.target.trim_end_matches('/'))))
                });
                match volume {
                    Some(volume) => store_volume.clone_from(&volume.source),
                    None => self.fail(format!("{path}: JetStream store_dir {store} is not on a volume")),
                }
            }
        }
        let monitoring = regex::Regex::new(r"(?m)^\s*http\s*[:=]\s*\S*8222").expect("a valid pattern");
        if !monitoring.is_match(&text) {
            self.fail(format!("{path}: HTTP monitoring on 8222 (used by the healthcheck) is not enabled"));
        }
        Some(NatsConfig { path, text, store_volume })
    }

    /// The pinned nats-server itself parses the configuration (`-t`: test it).
    fn nats_server_accepts(&mut self, path: &str, text: &str) {
        let server = crate::nats::binary();
        let scratch = tempfile::tempdir().expect("a temporary folder");
        let file = if self.files.replaced.contains_key(path) {
            let file = scratch.path().join("nats.conf");
            std::fs::write(&file, text).expect("the configuration is written");
            file
        } else {
            self.files.path(path)
        };
        match std::process::Command::new(&server).arg("-t").arg("-c").arg(&file).output() {
            Ok(tested) if tested.status.success() => {}
            Ok(tested) => {
                let said = if tested.stderr.is_empty() { tested.stdout } else { tested.stderr };
                self.fail(format!("{path}: nats-server refuses it: {}", String::from_utf8_lossy(&said).trim()));
            }
            Err(e) => self.fail(format!("{path}: cannot run {}: {e}", server.display())),
        }
    }

    /// The load balancer in front of the gateways: the official HAProxy
    /// image, published on the port it binds, in HTTP mode (WebSocket
    /// upgrades pass through), sending to every gateway on its port, only
    /// while its `/readyz` answers, without cutting sockets the gateway keeps,
    /// and handing the gateways the client's address as they expect.
    fn load_balancer(
        &mut self,
        label: &str,
        lb: &str,
        services: &BTreeMap<String, &Yaml>,
        instances: &[Instance],
        listen_ports: &BTreeMap<String, Option<i64>>,
    ) {
        let Some(service) = services.get(lb) else { return };
        let image = compose::scalar(&service["image"]).unwrap_or_default();
        if !["haproxy", "library/haproxy", "docker.io/library/haproxy"].contains(&compose::split_image(&image).0) {
            self.fail(format!("{label}: {lb} image '{image}' is not the official haproxy image"));
            return;
        }
        let command = compose::command(service);
        let target = command
            .iter()
            .position(|word| word == "-f")
            .and_then(|at| command.get(at + 1).cloned())
            .unwrap_or_else(|| HAPROXY_CONFIG.to_owned());
        let volumes = compose::volumes(service);
        let Some(source) = volumes.iter().find(|v| v.bind && v.target == target).and_then(|v| v.source.clone()) else {
            self.fail(format!("{label}: {lb} reads {target}, but nothing is mounted there"));
            return;
        };
        let path = resolve("deploy", &source);
        let Some(text) = self.files.is_file(&path).then(|| self.files.read(&path)).flatten() else { return };
        let config = haproxy::Config::parse(&text);
        let gateways: Vec<(&String, Option<i64>, &Instance)> = instances
            .iter()
            .filter(|i| i.app.name == "gateway")
            .map(|i| (&i.name, listen_ports.get(&i.name).copied().flatten(), i))
            .collect();
        let frontends: Vec<&haproxy::Section> = config.of_kind(&["frontend", "listen"]).collect();
        let bound: BTreeSet<String> = frontends
            .iter()
            .flat_map(|f| f.lines_starting(&["bind"]))
            .filter_map(|rest| rest.first())
            .filter_map(|address| address.rsplit_once(':').map(|(_, port)| port.to_owned()))
            .collect();
        let published = compose::ports(service);
        if published.is_empty() {
            self.fail(format!("{label}: {lb} publishes no port, and the gateways are reached only through it"));
        }
        for port in &published {
            if !bound.contains(&port.target) {
                self.fail(format!(
                    "{label}: {lb} publishes container port {}, but {path} binds {bound:?}",
                    port.target
                ));
            }
        }

        for frontend in &frontends {
            let (kind, name) = (&frontend.kind, &frontend.name);
            let mode =
                config.setting(frontend, &["mode"]).and_then(|rest| rest.first().cloned()).unwrap_or("tcp".into());
            if mode != "http" {
                self.fail(format!(
                    "{path}: {kind} '{name}' runs in mode {mode}; it needs mode http (WebSocket upgrades, /readyz checks)"
                ));
            }
            for proxy in std::iter::once(*frontend).chain(config.of_kind(&["defaults"])) {
                for action in [["http-request", "del-header"], ["http-request", "set-header"]] {
                    for rest in proxy.lines_starting(&action) {
                        let Some(header) = rest.first() else { continue };
                        if ["upgrade", "connection"].contains(&header.to_lowercase().as_str()) {
                            let action = action.join(" ");
                            self.fail(format!("{path}: '{action} {header}' breaks the WebSocket upgrade"));
                        }
                    }
                }
            }
            let backend_name = if frontend.kind == "listen" {
                Some(frontend.name.clone())
            } else {
                config.setting(frontend, &["default_backend"]).and_then(|rest| rest.first().cloned())
            };
            let Some(backend_name) = backend_name else {
                self.fail(format!("{path}: {kind} '{name}' has no default_backend"));
                continue;
            };
            let Some(backend) = config.of_kind(&["backend", "listen"]).find(|s| s.name == backend_name) else {
                self.fail(format!("{path}: {kind} '{name}' sends to backend '{backend_name}', which is not defined"));
                continue;
            };
            self.lb_backend(&path, backend, &config, &gateways);
        }
        if frontends.is_empty() {
            self.fail(format!("{path}: no frontend"));
        }

        let appends = frontends.iter().any(|f| config.setting(f, &["option", "forwardfor"]).is_some());
        for (gateway, _, instance) in &gateways {
            let trusts = instance.environment.get("GATEWAY_TRUST_FORWARDED_FOR").is_some_and(|v| v.trim() == "true");
            if appends && !trusts {
                self.fail(format!(
                    "{label}: {lb} appends X-Forwarded-For (option forwardfor), but {gateway} does not trust it \
                     (GATEWAY_TRUST_FORWARDED_FOR): all clients would share the balancer's address in the per-address limits"
                ));
            }
            if trusts && !appends {
                self.fail(format!(
                    "{label}: {gateway} trusts X-Forwarded-For (GATEWAY_TRUST_FORWARDED_FOR=true), but {lb} does not \
                     append it (option forwardfor): clients could choose the address they are limited by"
                ));
            }
        }
        let waits_for: BTreeMap<String, String> = compose::depends_on(service).into_iter().collect();
        for (gateway, _, _) in &gateways {
            if waits_for.get(*gateway).map(String::as_str) != Some("service_healthy") {
                self.fail(format!("{label}: {lb} does not wait for '{gateway}' to be healthy"));
            }
        }
    }

    /// The backend sends to every gateway and nothing else, checks their
    /// `/readyz`, and keeps upgraded sockets as long as the gateways do.
    fn lb_backend(
        &mut self,
        path: &str,
        backend: &haproxy::Section,
        config: &haproxy::Config,
        gateways: &[(&String, Option<i64>, &Instance)],
    ) {
        let name = &backend.name;
        let mode = config.setting(backend, &["mode"]).and_then(|rest| rest.first().cloned()).unwrap_or("tcp".into());
        if mode != "http" {
            self.fail(format!("{path}: backend '{name}' runs in mode {mode}; it needs mode http"));
        }
        let default_check =
            config.setting(backend, &["default-server"]).is_some_and(|rest| rest.iter().any(|w| w == "check"));
        let servers: Vec<&[String]> = backend.lines_starting(&["server"]).collect();
        let mut sent_to = BTreeSet::new();
        for server in &servers {
            let (Some(server_name), Some(address)) = (server.first(), server.get(1)) else { continue };
            let (host, port) = compose::host_port(address);
            let host = host.unwrap_or_default();
            let is_gateway = gateways.iter().any(|(gateway, listens_on, _)| **gateway == host && *listens_on == port);
            if !is_gateway {
                self.fail(format!("{path}: backend '{name}' sends to {address}, which is not a gateway on its port"));
            }
            sent_to.insert(host);
            if !default_check && !server.iter().any(|w| w == "check") {
                self.fail(format!("{path}: backend '{name}': server '{server_name}' is not health-checked ('check')"));
            }
        }
        for (gateway, listens_on, _) in gateways {
            if !sent_to.contains(*gateway) {
                let port = listens_on.map_or_else(|| "?".to_owned(), |p| p.to_string());
                self.fail(format!("{path}: backend '{name}' does not send to {gateway}:{port}"));
            }
        }
        let checks_readyz =
            config.setting(backend, &["option", "httpchk"]).is_some_and(|rest| rest.iter().any(|w| w == "/readyz"))
                || config
                    .setting(backend, &["http-check", "send"])
                    .is_some_and(|rest| rest.windows(2).any(|w| w[0] == "uri" && w[1] == "/readyz"));
        if !checks_readyz {
            self.fail(format!(
                "{path}: backend '{name}' does not check the gateways' GET /readyz (option httpchk GET /readyz)"
            ));
        }
        let idle = gateways
            .iter()
            .filter_map(|(_, _, instance)| instance.environment.get("GATEWAY_IDLE_TIMEOUT_SECS"))
            .filter_map(|value| value.trim().parse::<f64>().ok())
            .fold(0.0, f64::max);
        match config.setting(backend, &["timeout", "tunnel"]).and_then(|rest| rest.first().cloned()) {
            None => self.fail(format!(
                "{path}: backend '{name}' sets no timeout tunnel: upgraded WebSockets would be cut after timeout client/server"
            )),
            Some(tunnel) => match super::seconds(&tunnel, 0.001) {
                Some(seconds) if seconds >= idle => {}
                Some(_) => self.fail(format!(
                    "{path}: timeout tunnel {tunnel} is shorter than the gateways' GATEWAY_IDLE_TIMEOUT_SECS ({idle} s): \
                     the balancer would cut sockets the gateway keeps"
                )),
                None => self.fail(format!("{path}: timeout tunnel {tunnel} is not an HAProxy time")),
            },
        }
    }
}

/// Where each host a compose peer variable may name is: every service, as
/// what it is (an instance of one of ours, a NATS node, or itself) on the
/// port it listens on.
fn topology(
    services: &BTreeMap<String, &Yaml>,
    instances: &[Instance],
    listen_ports: &BTreeMap<String, Option<i64>>,
    nats_nodes: &[String],
) -> Topology {
    let hosts = services
        .keys()
        .map(|name| {
            let what = match instances.iter().find(|i| i.name == *name) {
                Some(instance) => instance.app.name.to_owned(),
                None if nats_nodes.contains(name) => "nats".to_owned(),
                None => name.clone(),
            };
            let port = listen_ports
                .get(name)
                .copied()
                .flatten()
                .or_else(|| INFRA_PORTS.iter().find(|(infra, _)| *infra == what).map(|(_, port)| *port));
            (name.clone(), (what, port))
        })
        .collect();
    Topology { hosts, external: Vec::new(), kind_of_host: "a compose service" }
}

/// The body of the top-level block `name { ... }` of a NATS configuration.
fn block<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = regex::Regex::new(&format!(r"(?m)^\s*{name}\s*[:=]?\s*\{{")).expect("a valid pattern").find(text)?;
    let body = &text[start.end()..];
    let mut depth = 1;
    for (at, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[..at]);
                }
            }
            _ => {}
        }
    }
    None
}
