//! The static check of the docker compose deployment in `deploy/`, without a
//! Docker engine (CI has none): the compose file, the Dockerfile and the files
//! they reference. `tests/tests/deploy.rs` runs it on the repository's files,
//! and on broken copies to show that each kind of mistake is caught.
//!
//! What each service reads comes from the service itself: its config
//! module's `SETTINGS` (name, default, kind), the table its parsing reads
//! through. The check derives from it which variables are listen addresses
//! (they must bind `0.0.0.0` in a container), which name peers (a loopback
//! default is wrong in a container, so they must be set, and must name the
//! right compose service on the port it listens on), and that compose sets
//! every variable each service reads, so the file shows the whole configuration.

pub mod compose;
pub mod dockerfile;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chat_common::config::{ConfigError, Env, Kind, Peer, Setting, shared};
use yaml_rust2::Yaml;

/// One of the system's services: its binary and its compose service share the name.
pub struct App {
    pub name: &'static str,
    /// Its config module's `SETTINGS`.
    pub settings: &'static [&'static [Setting]],
    /// Its configuration's parsing, from a given environment.
    pub read: fn(Env<'_>) -> Result<(), ConfigError>,
    /// Whether it serves gRPC (published on host loopback for `grpcurl`).
    pub grpc: bool,
}

impl App {
    /// Every variable it reads.
    pub fn settings(&self) -> impl Iterator<Item = &'static Setting> + use<> {
        let tables: &'static [&'static [Setting]] = self.settings;
        tables.iter().flat_map(|table| table.iter())
    }
}

/// A service whose library is `$library`.
macro_rules! app {
    ($name:literal, $library:ident, grpc: $grpc:literal) => {
        App {
            name: $name,
            settings: $library::config::SETTINGS,
            read: |env| $library::Config::from_lookup(env).map(drop),
            grpc: $grpc,
        }
    };
}

/// The five services.
pub fn apps() -> [App; 5] {
    [
        app!("auth", chat_auth, grpc: true),
        app!("history", chat_history, grpc: true),
        app!("presence", chat_presence, grpc: true),
        app!("notification", chat_notification, grpc: true),
        app!("gateway", chat_gateway, grpc: false),
    ]
}

/// The compose services that are not ours.
const INFRA: [&str; 3] = ["nats", "postgres", "jaeger"];
/// Workspace binaries that are developer tools, not services: never deployed.
const TOOLS: [&str; 1] = ["chat-bench"];
/// The port each infrastructure service listens on.
const INFRA_PORTS: [(&str, i64); 3] = [("nats", 4222), ("postgres", 5432), ("jaeger", 4317)];

const COMPOSE: &str = "deploy/docker-compose.yml";

/// The compose service a peer setting must name.
fn compose_service(peer: Peer) -> &'static str {
    match peer {
        Peer::Auth => "auth",
        Peer::History => "history",
        Peer::Presence => "presence",
        Peer::Notification => "notification",
        Peer::Nats => "nats",
        Peer::Database => "postgres",
        Peer::TraceCollector => "jaeger",
    }
}

/// Whether a setting's default names this machine's loopback: right on one
/// machine, wrong in a container.
fn defaults_to_loopback(setting: &Setting) -> bool {
    matches!(compose::host_port(setting.default).0.as_deref(), Some("127.0.0.1" | "localhost" | "::1"))
}

/// The files the check reads: the repository's, some replaced by others
/// (the tests feed it broken ones).
pub struct Deployment {
    root: PathBuf,
    replaced: BTreeMap<String, String>,
}

impl Deployment {
    /// The repository's files.
    pub fn of_repository() -> Self {
        Self { root: crate::workspace_root(), replaced: BTreeMap::new() }
    }

    /// The repository's files, with `path` (relative to the repository) read as `text`.
    pub fn with(mut self, path: &str, text: impl Into<String>) -> Self {
        self.replaced.insert(path.to_owned(), text.into());
        self
    }

    /// The repository's files, with `path`'s text changed by `edit`.
    ///
    /// # Panics
    /// When `path` cannot be read.
    pub fn edited(self, path: &str, edit: impl FnOnce(&str) -> String) -> Self {
        let text = self.read(path).unwrap_or_else(|| panic!("{path} is readable"));
        let edited = edit(&text);
        assert_ne!(edited, text, "the edit of {path} changes it");
        self.with(path, edited)
    }

    fn read(&self, path: &str) -> Option<String> {
        match self.replaced.get(path) {
            Some(text) => Some(text.clone()),
            None => std::fs::read_to_string(self.path(path)).ok(),
        }
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn is_file(&self, path: &str) -> bool {
        self.replaced.contains_key(path) || self.path(path).is_file()
    }

    fn is_dir(&self, path: &str) -> bool {
        self.path(path).is_dir()
    }

    fn exists(&self, path: &str) -> bool {
        self.replaced.contains_key(path) || self.path(path).exists()
    }

    /// Every problem found; none when the deployment is sound.
    pub fn problems(&self) -> Vec<String> {
        let mut check = Check { files: self, problems: Vec::new(), apps: apps() };
        check.all();
        check.problems
    }
}

/// `path` (relative to the repository, or absolute) seen from `base`.
fn resolve(base: &str, path: &str) -> String {
    if path.starts_with('/') { path.to_owned() } else { dockerfile::normalize(&format!("{base}/{path}")) }
}

/// The workspace's members (folders relative to the root) and binaries.
struct Workspace {
    members: Vec<String>,
    binaries: BTreeSet<String>,
}

/// Read once per test process with `cargo metadata`, which knows every
/// member and target as cargo does.
fn workspace(root: &Path) -> Result<&'static Workspace, String> {
    static WORKSPACE: OnceLock<Result<Workspace, String>> = OnceLock::new();
    WORKSPACE.get_or_init(|| read_workspace(root)).as_ref().map_err(Clone::clone)
}

fn read_workspace(root: &Path) -> Result<Workspace, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata's output: {e}"))?;
    let root_dir = metadata["workspace_root"].as_str().unwrap_or_default();
    let mut workspace = Workspace { members: Vec::new(), binaries: BTreeSet::new() };
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let manifest = package["manifest_path"].as_str().unwrap_or_default();
        let folder = Path::new(manifest).parent().and_then(|p| p.strip_prefix(root_dir).ok());
        workspace.members.push(folder.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default());
        for target in package["targets"].as_array().into_iter().flatten() {
            if target["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "bin")) {
                workspace.binaries.insert(target["name"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    Ok(workspace)
}

struct Check<'a> {
    files: &'a Deployment,
    problems: Vec<String>,
    apps: [App; 5],
}

impl Check<'_> {
    fn fail(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.name == name)
    }

    fn check_pinned(&mut self, image: &str, place: &str) {
        if image.contains('$') {
            self.fail(format!("{place}: image '{image}' uses a variable; pin it literally"));
            return;
        }
        match compose::split_image(image) {
            (_, None, None) => {
                self.fail(format!("{place}: image '{image}' has no tag (would mean 'latest'); pin a version"))
            }
            (_, Some("latest"), _) => {
                self.fail(format!("{place}: image '{image}' uses the 'latest' tag; pin a version"))
            }
            _ => {}
        }
    }

    fn nats_version(&mut self) -> Option<String> {
        let path = "scripts/install-tools.sh";
        let Some(text) = self.files.read(path) else {
            self.fail(format!("{path} is missing; it pins NATS_SERVER_VERSION"));
            return None;
        };
        let version = text
            .lines()
            .find_map(|line| line.strip_prefix("NATS_SERVER_VERSION=\"")?.split_once('"').map(|(v, _)| v.to_owned()));
        if version.is_none() {
            self.fail(format!("{path} has no line NATS_SERVER_VERSION=\"...\""));
        }
        version
    }

    fn all(&mut self) {
        let workspace = match workspace(&self.files.root) {
            Ok(workspace) => workspace,
            Err(problem) => {
                self.fail(problem);
                return;
            }
        };
        let cargo_binaries: BTreeSet<String> =
            workspace.binaries.iter().filter(|b| !TOOLS.contains(&b.as_str())).cloned().collect();
        let pinned_nats = self.nats_version();

        let parsed = self
            .files
            .read(COMPOSE)
            .ok_or_else(|| "the file cannot be read".to_owned())
            .and_then(|text| compose::parse(&text));
        let document = match parsed {
            Ok(document) => document,
            Err(e) => {
                self.fail(format!("cannot parse {COMPOSE}: {e}"));
                return;
            }
        };
        let services: BTreeMap<String, &Yaml> = compose::entries(&document["services"]).into_iter().collect();
        let declared_volumes: BTreeSet<String> =
            compose::entries(&document["volumes"]).into_iter().map(|(name, _)| name).collect();
        let app_names: BTreeSet<&str> = self.apps.iter().map(|app| app.name).collect();

        for name in INFRA.iter().chain(&app_names) {
            if !services.contains_key(*name) {
                self.fail(format!("compose: service '{name}' is missing"));
            }
        }

        let dockerfiles = self.images_and_builds(&services);
        if let (Some(nats), Some(pinned)) = (services.get("nats"), &pinned_nats) {
            self.nats_image(nats, pinned);
        }
        let run_by = self.commands(&services, &app_names, &cargo_binaries);
        let listen_ports = self.listen_addresses(&services, &run_by);
        self.peer_addresses(&services, &listen_ports);
        self.every_setting_is_set(&services, &run_by);
        self.tokens_agree(&services, &run_by);
        self.published_ports(&services, &run_by, &listen_ports);
        self.dependencies(&services);
        self.volumes(&services, &declared_volumes);
        if let Some(nats) = services.get("nats") {
            self.nats_config(nats);
        }
        if let Some(postgres) = services.get("postgres")
            && !compose::volumes(postgres).iter().any(|v| v.bind && v.target.starts_with("/docker-entrypoint-initdb.d"))
        {
            self.fail(
                "compose: postgres mounts no init script into /docker-entrypoint-initdb.d \
                 (the history database would not exist)",
            );
        }
        let binaries: BTreeSet<&str> = run_by.values().map(String::as_str).collect();
        for (dockerfile, context) in dockerfiles {
            self.dockerfile(&dockerfile, &context, &binaries, &workspace.members);
        }
    }

    /// Each service has an image (pinned) or a build; returns the builds'
    /// Dockerfiles and contexts.
    fn images_and_builds(&mut self, services: &BTreeMap<String, &Yaml>) -> BTreeSet<(String, String)> {
        let mut dockerfiles = BTreeSet::new();
        for (name, service) in services {
            let image = compose::scalar(&service["image"]).filter(|_| compose::has(service, "image"));
            let build = &service["build"];
            if image.is_none() && !compose::has(service, "build") {
                self.fail(format!("compose: service '{name}' has neither image nor build"));
            }
            if let Some(image) = image {
                self.check_pinned(&image, &format!("compose: service '{name}'"));
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
                self.fail(format!("compose: service '{name}': build context {context} does not exist"));
            }
            if self.files.is_file(&dockerfile) {
                dockerfiles.insert((dockerfile, context));
            } else {
                self.fail(format!("compose: service '{name}': Dockerfile {dockerfile} does not exist"));
            }
        }
        dockerfiles
    }

    /// The nats image is the version the project pins everywhere.
    fn nats_image(&mut self, nats: &Yaml, pinned: &str) {
        let Some(image) = compose::scalar(&nats["image"]).filter(|_| compose::has(nats, "image")) else { return };
        let (repository, tag, _) = compose::split_image(&image);
        let tag = tag.unwrap_or_default();
        let version = tag.split('-').next().unwrap_or_default();
        if !["nats", "library/nats", "docker.io/library/nats"].contains(&repository) {
            self.fail(format!("compose: nats image '{image}' is not the official nats image"));
        }
        if version != pinned {
            self.fail(format!(
                "compose: nats image tag '{tag}' is not {pinned} (NATS_SERVER_VERSION in scripts/install-tools.sh)"
            ));
        }
        if compose::has(nats, "healthcheck") && !nats["healthcheck"].is_null() && !tag.contains("alpine") {
            self.fail(
                "compose: nats has a healthcheck, but the default nats image is scratch-based \
                 (no shell, no wget); use the -alpine variant",
            );
        }
    }

    /// Each app service runs one workspace binary, and every binary is run.
    /// Returns the binary each app service runs.
    fn commands(
        &mut self,
        services: &BTreeMap<String, &Yaml>,
        app_names: &BTreeSet<&str>,
        cargo_binaries: &BTreeSet<String>,
    ) -> BTreeMap<String, String> {
        let mut run_by: BTreeMap<String, String> = BTreeMap::new();
        for name in app_names.iter().filter(|name| services.contains_key(**name)) {
            let command = compose::command(services[*name]);
            let Some(program) = command.first() else {
                self.fail(format!("compose: service '{name}' has no command naming its binary"));
                continue;
            };
            let binary = program.rsplit('/').next().unwrap_or_default().to_owned();
            if !cargo_binaries.contains(&binary) {
                self.fail(format!(
                    "compose: service '{name}' runs '{program}', not one of the workspace binaries {cargo_binaries:?}"
                ));
                continue;
            }
            if run_by.values().any(|b| *b == binary) {
                self.fail(format!("compose: binary '{binary}' is run by more than one service"));
            }
            run_by.insert((*name).to_owned(), binary);
        }
        for binary in cargo_binaries {
            if !run_by.values().any(|b| b == binary) {
                self.fail(format!("compose: no service runs the workspace binary '{binary}'"));
            }
        }
        let expected: BTreeSet<String> = app_names.iter().map(|n| (*n).to_owned()).collect();
        if *cargo_binaries != expected {
            self.fail(format!("Cargo workspace binaries {cargo_binaries:?} differ from the expected {expected:?}"));
        }
        run_by
    }

    /// Listen addresses bind every interface, and peers whose default is
    /// loopback are set. Returns the port each app service serves its API on.
    fn listen_addresses(
        &mut self,
        services: &BTreeMap<String, &Yaml>,
        run_by: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Option<i64>> {
        let mut listen_ports = BTreeMap::new();
        for (name, binary) in run_by {
            let Some(app) = self.app(binary) else { continue };
            let settings: Vec<&Setting> = app.settings().collect();
            let environment = compose::environment(services[name]);
            let value = |setting: &Setting| environment.get(setting.name).filter(|v| !v.is_empty()).cloned();
            for setting in settings.iter().filter(|s| matches!(s.kind, Kind::Listen | Kind::Metrics)) {
                let Some(value) = value(setting) else {
                    self.fail(format!(
                        "compose: service '{name}' does not set {} (the default {} is unreachable from other containers)",
                        setting.name, setting.default
                    ));
                    continue;
                };
                let (host, port) = compose::host_port(&value);
                if !matches!(host.as_deref(), Some("0.0.0.0" | "::")) {
                    self.fail(format!(
                        "compose: service '{name}': {}={value} must bind 0.0.0.0 in a container",
                        setting.name
                    ));
                }
                if setting.kind == Kind::Listen {
                    listen_ports.insert(name.clone(), port);
                }
            }
            for setting in settings.iter().filter(|s| matches!(s.kind, Kind::Peer(_)) && defaults_to_loopback(s)) {
                if value(setting).is_none() {
                    self.fail(format!(
                        "compose: service '{name}' does not set {} (the default {} points at the container itself)",
                        setting.name, setting.default
                    ));
                }
            }
        }
        listen_ports
    }

    /// Every variable that names a peer names the right compose service, on the port it listens on.
    fn peer_addresses(&mut self, services: &BTreeMap<String, &Yaml>, listen_ports: &BTreeMap<String, Option<i64>>) {
        let peers: BTreeMap<&str, &str> = self
            .apps
            .iter()
            .flat_map(App::settings)
            .filter_map(|s| match s.kind {
                Kind::Peer(peer) => Some((s.name, compose_service(peer))),
                _ => None,
            })
            .collect();
        for (name, service) in services {
            for (variable, value) in compose::environment(service) {
                let Some(expected) = peers.get(variable.as_str()) else { continue };
                if value.is_empty() {
                    continue;
                }
                let (host, port) = compose::host_port(&value);
                let host = host.unwrap_or_default();
                if !services.contains_key(&host) {
                    self.fail(format!(
                        "compose: service '{name}': {variable}={value} names host '{host}', which is not a compose service"
                    ));
                    continue;
                }
                if host != *expected {
                    self.fail(format!(
                        "compose: service '{name}': {variable} points at '{host}', expected '{expected}'"
                    ));
                }
                let listens_on = listen_ports
                    .get(&host)
                    .copied()
                    .flatten()
                    .or_else(|| INFRA_PORTS.iter().find(|(infra, _)| *infra == host).map(|(_, port)| *port));
                if let Some(listens_on) = listens_on
                    && port != Some(listens_on)
                {
                    let port = port.map_or_else(|| "none".to_owned(), |p| p.to_string());
                    self.fail(format!(
                        "compose: service '{name}': {variable}={value} uses port {port}, but '{host}' listens on {listens_on}"
                    ));
                }
            }
        }
    }

    /// Compose sets every variable each service reads, so it shows the whole configuration.
    fn every_setting_is_set(&mut self, services: &BTreeMap<String, &Yaml>, run_by: &BTreeMap<String, String>) {
        for (name, binary) in run_by {
            let Some(app) = self.app(binary) else { continue };
            let environment = compose::environment(services[name]);
            let unset: BTreeSet<&str> =
                app.settings().map(|s| s.name).filter(|variable| !environment.contains_key(*variable)).collect();
            for variable in unset {
                self.fail(format!("compose: service '{name}' does not set {variable}, which {binary} reads"));
            }
        }
    }

    /// Auth and the gateway agree on the JWT issuer and audience.
    fn tokens_agree(&mut self, services: &BTreeMap<String, &Yaml>, run_by: &BTreeMap<String, String>) {
        let environment_of = |binary: &str| {
            run_by.iter().find(|(_, b)| *b == binary).map(|(name, _)| compose::environment(services[name]))
        };
        let (Some(auth), Some(gateway)) = (environment_of("auth"), environment_of("gateway")) else { return };
        for setting in [shared::JWT_ISSUER, shared::JWT_AUDIENCE] {
            let value = |environment: &BTreeMap<String, String>| {
                environment
                    .get(setting.name)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .unwrap_or_else(|| setting.default.to_owned())
            };
            let (a, g) = (value(&auth), value(&gateway));
            if a != g {
                self.fail(format!("compose: {} differs between auth ({a}) and gateway ({g})", setting.name));
            }
        }
    }

    /// Published ports reach what the service listens on; gRPC ports on host loopback.
    fn published_ports(
        &mut self,
        services: &BTreeMap<String, &Yaml>,
        run_by: &BTreeMap<String, String>,
        listen_ports: &BTreeMap<String, Option<i64>>,
    ) {
        for (name, binary) in run_by {
            let ports = compose::ports(services[name]);
            let Some(listens_on) = listen_ports.get(name) else { continue };
            let listens_on = listens_on.map_or_else(|| "none".to_owned(), |p| p.to_string());
            for port in &ports {
                if port.target != listens_on {
                    self.fail(format!(
                        "compose: service '{name}' publishes container port {}, but listens on {listens_on}",
                        port.target
                    ));
                }
            }
            let grpc = self.app(binary).is_some_and(|app| app.grpc);
            let p = &listens_on;
            if grpc
                && !ports.iter().any(|port| port.host_ip == "127.0.0.1" && port.published == *p && port.target == *p)
            {
                self.fail(format!("compose: service '{name}' should publish 127.0.0.1:{p}:{p} for grpcurl"));
            }
        }
    }

    /// `depends_on` targets exist; `service_healthy` targets have a healthcheck.
    fn dependencies(&mut self, services: &BTreeMap<String, &Yaml>) {
        for (name, service) in services {
            let depends_on = &service["depends_on"];
            let dependencies: Vec<(String, String)> = match depends_on {
                Yaml::Array(names) => {
                    names.iter().filter_map(compose::scalar).map(|d| (d, "service_started".to_owned())).collect()
                }
                _ => compose::entries(depends_on)
                    .into_iter()
                    .map(|(d, spec)| {
                        (d, compose::scalar(&spec["condition"]).unwrap_or_else(|| "service_started".to_owned()))
                    })
                    .collect(),
            };
            for (dependency, condition) in dependencies {
                let Some(target) = services.get(&dependency) else {
                    self.fail(format!("compose: service '{name}' depends on '{dependency}', which does not exist"));
                    continue;
                };
                let healthcheck = &target["healthcheck"];
                let has_test = compose::has(healthcheck, "test") && !healthcheck["test"].is_null();
                let disabled = healthcheck["disable"].as_bool().unwrap_or(false);
                if condition == "service_healthy" && (!has_test || disabled) {
                    self.fail(format!(
                        "compose: service '{name}' waits for '{dependency}' to be healthy, but '{dependency}' has no healthcheck"
                    ));
                }
            }
        }
    }

    /// Bind mounts' sources exist; named volumes are declared.
    fn volumes(&mut self, services: &BTreeMap<String, &Yaml>, declared: &BTreeSet<String>) {
        for (name, service) in services {
            for volume in compose::volumes(service) {
                let Some(source) = &volume.source else { continue };
                if volume.bind {
                    let home = std::env::var("HOME").unwrap_or_default();
                    let expanded =
                        source.strip_prefix('~').map_or_else(|| source.clone(), |rest| format!("{home}{rest}"));
                    let path = resolve("deploy", &expanded);
                    if !self.files.exists(&path) {
                        self.fail(format!("compose: service '{name}' mounts {source}, but {path} does not exist"));
                    }
                } else if !declared.contains(source) {
                    self.fail(format!(
                        "compose: service '{name}' uses volume '{source}', not declared under top-level volumes"
                    ));
                }
            }
        }
    }

    /// nats: its configuration is mounted where the command reads it, the
    /// pinned nats-server accepts it, and JetStream is durable, on a volume.
    fn nats_config(&mut self, nats: &Yaml) {
        let command = compose::command(nats);
        let mut target = "/etc/nats/nats-server.conf".to_owned(); // the alpine image's default
        for flag in ["--config", "-c"] {
            if let Some(at) = command.iter().position(|word| word == flag)
                && let Some(path) = command.get(at + 1)
            {
                target.clone_from(path);
            }
        }
        let volumes = compose::volumes(nats);
        let Some(source) = volumes.iter().find(|v| v.bind && v.target == target).and_then(|v| v.source.clone()) else {
            self.fail(format!("compose: nats reads {target}, but nothing is mounted there"));
            return;
        };
        let path = resolve("deploy", &source);
        let Some(text) = self.files.is_file(&path).then(|| self.files.read(&path)).flatten() else {
            return; // a missing file is reported with the volumes
        };
        self.nats_server_accepts(&path, &text);
        // The durability docs/operations.md promises: an fsync before every ack.
        let sync_always = regex::Regex::new(r"(?m)^\s*sync_interval\s*[:=]\s*always\b").expect("a valid pattern");
        if !sync_always.is_match(&text) {
            self.fail(format!("{path}: JetStream must set sync_interval: always (docs/operations.md, durability)"));
        }
        let store_dir = regex::Regex::new(r#"jetstream\s*[:=]?\s*\{[^}]*store_dir\s*[:=]\s*"?([^\s"}]+)"#)
            .expect("a valid pattern");
        match store_dir.captures(&text) {
            None => self.fail(format!("{path}: needs a jetstream {{ store_dir: ... }} block")),
            Some(found) => {
                let store = &found[1];
                let on_volume = volumes.iter().any(|v| {
                    !v.bind && (store == v.target || store.starts_with(&format!("{}/", v.target.trim_end_matches('/'))))
                });
                if !on_volume {
                    self.fail(format!("{path}: JetStream store_dir {store} is not on a volume"));
                }
            }
        }
        let monitoring = regex::Regex::new(r"(?m)^\s*http\s*[:=]\s*\S*8222").expect("a valid pattern");
        if !monitoring.is_match(&text) {
            self.fail(format!("{path}: HTTP monitoring on 8222 (used by the healthcheck) is not enabled"));
        }
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

    /// The Dockerfile: pinned base images; the build stage copies files that
    /// exist, are not dockerignored, and include every manifest; the runtime
    /// stage has every binary compose runs and a non-root user.
    fn dockerfile(&mut self, path: &str, context: &str, binaries: &BTreeSet<&str>, members: &[String]) {
        let stages = dockerfile::stages(&self.files.read(path).unwrap_or_default());
        let Some((runtime, builders)) = stages.split_last() else {
            self.fail(format!("{path}: no FROM line"));
            return;
        };
        let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
        for stage in &stages {
            if !names.contains(&stage.image.as_str()) && stage.image != "scratch" {
                self.check_pinned(&stage.image, &format!("{path}: FROM"));
            }
        }

        let ignore = [format!("{path}.dockerignore"), resolve(context, ".dockerignore")]
            .into_iter()
            .find(|candidate| self.files.is_file(candidate))
            .map(|file| dockerfile::ignore_patterns(&self.files.read(&file).unwrap_or_default()))
            .unwrap_or_default();
        let mut copied = Vec::new();
        for line in builders.iter().flat_map(|stage| &stage.lines) {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let instruction = tokens[0].to_ascii_uppercase();
            if !["COPY", "ADD"].contains(&instruction.as_str()) || tokens.iter().any(|t| t.starts_with("--from")) {
                continue;
            }
            let arguments: Vec<&str> = tokens[1..].iter().copied().filter(|t| !t.starts_with("--")).collect();
            for source in arguments.split_last().map_or(&[][..], |(_, sources)| sources) {
                let normalized = dockerfile::normalize(source);
                if !self.files.exists(&resolve(context, &normalized)) {
                    self.fail(format!("{path}: COPY source '{source}' does not exist in the build context {context}"));
                }
                let top = normalized.split('/').next().unwrap_or_default();
                for pattern in &ignore {
                    if dockerfile::matches(pattern, &normalized) || dockerfile::matches(pattern, top) {
                        self.fail(format!(
                            "{path}: COPY source '{source}' is excluded by the dockerignore pattern '{pattern}'"
                        ));
                    }
                }
                copied.push(normalized);
            }
        }
        let manifests = ["Cargo.toml".to_owned(), "Cargo.lock".to_owned()]
            .into_iter()
            .chain(members.iter().map(|member| dockerfile::normalize(&format!("{member}/Cargo.toml"))));
        for manifest in manifests {
            let is_copied = copied.iter().any(|c| c == "." || manifest == *c || manifest.starts_with(&format!("{c}/")));
            if !is_copied {
                self.fail(format!("{path}: the build stage does not copy {manifest} (needed by cargo --locked)"));
            }
        }

        let mut copied_binaries = BTreeSet::new();
        for line in &runtime.lines {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            if !tokens[0].eq_ignore_ascii_case("COPY") {
                continue;
            }
            let Some(from) = tokens.iter().find_map(|t| t.strip_prefix("--from=")) else { continue };
            if !names.contains(&from) && !from.chars().all(|c| c.is_ascii_digit()) && !from.contains(':') {
                self.fail(format!("{path}: COPY --from={from} names no build stage"));
            }
            let arguments: Vec<&str> = tokens[1..].iter().copied().filter(|t| !t.starts_with("--")).collect();
            for source in arguments.split_last().map_or(&[][..], |(_, sources)| sources) {
                copied_binaries.insert(source.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned());
            }
        }
        for binary in binaries {
            if !copied_binaries.contains(*binary) {
                self.fail(format!("{path}: the runtime stage does not COPY the binary '{binary}' that compose runs"));
            }
        }
        let user = runtime
            .lines
            .iter()
            .filter_map(|line| {
                line.split_once(char::is_whitespace).filter(|(word, _)| word.eq_ignore_ascii_case("USER"))
            })
            .map(|(_, user)| user.trim().to_owned())
            .next_back();
        if user.is_none_or(|user| ["root", "0"].contains(&user.split(':').next().unwrap_or_default())) {
            self.fail(format!("{path}: the runtime stage must switch to a non-root USER"));
        }
    }
}

/// Differences between README.md's configuration table and the services'
/// settings: every variable the table names is one a service reads, every
/// one a service reads is in the table, and where a row gives one default per
/// variable, each is the setting's own default (the table is a copy of the
/// `SETTINGS` tables, for readers).
pub fn readme_problems(readme: &str) -> Vec<String> {
    let declared: BTreeMap<&str, &str> = apps().iter().flat_map(App::settings).map(|s| (s.name, s.default)).collect();
    let section = readme.split("\n## ").find(|s| s.starts_with("Configuration\n")).unwrap_or_default();
    let quoted = |text: &str| text.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>();
    let mut problems = Vec::new();
    let mut documented = BTreeSet::new();
    for row in section.lines().filter(|line| line.starts_with("| `")) {
        let columns: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(variables), Some(defaults)) = (columns.get(1), columns.get(3)) else { continue };
        let variables = quoted(variables);
        let defaults = quoted(defaults);
        for variable in &variables {
            if !declared.contains_key(variable.as_str()) {
                problems.push(format!("README.md's configuration table names {variable}, which no service reads"));
            }
            documented.insert(variable.clone());
        }
        if variables.len() != defaults.len() {
            continue; // a row that abbreviates its defaults (`…`)
        }
        for (variable, default) in variables.iter().zip(&defaults) {
            if let Some(declared) = declared.get(variable.as_str())
                && declared != default
            {
                problems.push(format!(
                    "README.md's configuration table gives {variable} the default `{default}`, but it is `{declared}`"
                ));
            }
        }
    }
    for variable in declared.keys().filter(|v| !documented.contains(**v)) {
        problems.push(format!("README.md's configuration table does not mention {variable}"));
    }
    problems
}
