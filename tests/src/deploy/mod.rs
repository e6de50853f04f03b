//! The static check of the deployments in `deploy/`, without a Docker engine
//! or a Kubernetes cluster (CI has neither): the compose files (one host, and
//! the cluster shape), the Dockerfile, the Kubernetes manifests and the files
//! they reference. `tests/tests/deploy.rs` runs it on the repository's files,
//! and on broken copies to show that each kind of mistake is caught.
//!
//! What each service reads comes from the service itself: its config
//! module's `SETTINGS` (name, default, kind), the table its parsing reads
//! through. The check derives from it which variables are listen addresses
//! (they must bind `0.0.0.0` in a container), which name peers (a loopback
//! default is wrong in a container, so they must be set, and must name the
//! right service on the port it listens on), and that each deployment sets
//! every variable each service reads, so its files show the whole
//! configuration. Those rules are in `env.rs`, the same for compose and
//! Kubernetes.

pub mod compose;
mod compose_file;
pub mod dockerfile;
mod env;
pub mod haproxy;
mod k8s;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chat_common::config::{ConfigError, Env, Peer, Setting};

pub use k8s::KUBERNETES_VERSION;

/// One of the system's services: its binary and its compose service share the name.
#[derive(Clone, Copy)]
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

/// The seven services.
pub fn apps() -> [App; 7] {
    [
        app!("auth", chat_auth, grpc: true),
        app!("history", chat_history, grpc: true),
        app!("presence", chat_presence, grpc: true),
        app!("notification", chat_notification, grpc: true),
        app!("media", chat_media, grpc: true),
        app!("admin", chat_admin, grpc: true),
        app!("gateway", chat_gateway, grpc: false),
    ]
}

/// Workspace binaries that are tools, not services: never deployed (the
/// benchmark tool, and `chat`, the command-line client).
const TOOLS: [&str; 2] = ["chat-bench", "chat"];

/// What a peer setting must name: one of our services, or a part of the
/// infrastructure (as compose names it).
fn part(peer: Peer) -> &'static str {
    match peer {
        Peer::Auth => "auth",
        Peer::History => "history",
        Peer::Presence => "presence",
        Peer::Notification => "notification",
        Peer::Media => "media",
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

/// A duration such as `15s`, `1m30s`, `500ms` or `1h`, in seconds; a bare
/// number counts in `bare_unit` seconds (HAProxy's are milliseconds).
pub fn seconds(text: &str, bare_unit: f64) -> Option<f64> {
    let text = text.trim();
    if let Ok(number) = text.parse::<f64>() {
        return Some(number * bare_unit);
    }
    let unit_re = regex::Regex::new(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h|d)").expect("a valid pattern");
    let mut rest = text;
    let mut total = 0.0;
    while !rest.is_empty() {
        let found = unit_re.captures(rest)?;
        let number: f64 = found[1].parse().ok()?;
        let unit = match &found[2] {
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => 86400.0,
        };
        total += number * unit;
        rest = &rest[found[0].len()..];
    }
    (!text.is_empty()).then_some(total)
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

    /// The names of the files in folder `dir` (not below it), replaced ones included.
    fn list(&self, dir: &str) -> BTreeSet<String> {
        let on_disk = std::fs::read_dir(self.path(dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.path().is_file())
            .map(|entry| entry.file_name().to_string_lossy().into_owned());
        let replaced = self
            .replaced
            .keys()
            .filter_map(|path| path.strip_prefix(&format!("{dir}/")))
            .filter(|name| !name.contains('/'))
            .map(str::to_owned);
        on_disk.chain(replaced).collect()
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
    apps: [App; 7],
}

impl Check<'_> {
    fn fail(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
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
        let expected: BTreeSet<String> = self.apps.iter().map(|app| app.name.to_owned()).collect();
        if cargo_binaries != expected {
            self.fail(format!("Cargo workspace binaries {cargo_binaries:?} differ from the expected {expected:?}"));
        }
        let pinned_nats = self.nats_version();

        let mut dockerfiles = BTreeSet::new();
        let mut binaries = BTreeSet::new();
        let mut gateway_grace = None;
        for shape in &compose_file::FILES {
            let Some(summary) = self.compose_file(shape, &cargo_binaries, pinned_nats.as_deref()) else { continue };
            dockerfiles.extend(summary.dockerfiles);
            binaries.extend(summary.binaries);
            gateway_grace = gateway_grace.or(summary.gateway_grace);
        }
        let binaries: BTreeSet<&str> = binaries.iter().map(String::as_str).collect();
        for (dockerfile, context) in dockerfiles {
            self.dockerfile(&dockerfile, &context, &binaries, &workspace.members);
        }
        self.kubernetes(pinned_nats.as_deref(), gateway_grace);
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

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn durations_read_as_compose_and_haproxy_write_them() {
        assert_eq!(seconds("15s", 1.0), Some(15.0));
        assert_eq!(seconds("1m30s", 1.0), Some(90.0));
        assert_eq!(seconds("1h", 0.001), Some(3600.0));
        assert_eq!(seconds("500ms", 1.0), Some(0.5));
        assert_eq!(seconds("5000", 0.001), Some(5.0));
        assert_eq!(seconds("soon", 1.0), None);
        assert_eq!(seconds("", 1.0), None);
    }
}
