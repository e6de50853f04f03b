//! The static check of the Kubernetes manifests in deploy/k8s (CI has no
//! cluster). kubernetes-validate (pinned in scripts/deploy-requirements.txt,
//! installed by scripts/install-tools.sh) checks every resource
//! kustomization.yaml lists against the schemas of a pinned Kubernetes
//! version, strictly (no unknown fields). This module checks what a schema
//! cannot: that every manifest is listed, that each Deployment sets what its
//! service reads (the rules compose is held to, in `env.rs`), that probes,
//! disruption budgets, Services and the autoscaler fit the services, and that
//! the NATS chart's values make the cluster the services are configured for.

use std::collections::BTreeMap;

use base64::Engine as _;
use chat_common::config::{Kind, Peer};
use yaml_rust2::Yaml;

use super::env::{Instance, Topology};
use super::{App, Check, compose};

/// The Kubernetes version the manifests are validated against.
pub const KUBERNETES_VERSION: &str = "1.34.0";

const DIR: &str = "deploy/k8s";
const KUSTOMIZATION: &str = "deploy/k8s/kustomization.yaml";
/// Values for the NATS Helm chart: not a kustomize resource.
const NATS_VALUES: &str = "deploy/k8s/nats-values.yaml";
const LABEL: &str = "deploy/k8s";
/// JetStream at R3 needs three nodes, as in the cluster compose file.
const NATS_NODES: usize = 3;

/// One resource of a manifest.
struct Resource {
    kind: String,
    name: String,
    doc: Yaml,
}

/// What kustomization.yaml says.
struct Kustomization {
    resources: Vec<String>,
    namespace: Option<String>,
    /// `images:` entries: the name Deployments use, and what it becomes.
    images: BTreeMap<String, String>,
}

/// The NATS cluster the chart makes.
struct NatsCluster {
    /// The StatefulSet's name (`fullnameOverride`): pods `<name>-<i>`, headless Service `<name>-headless`.
    name: String,
    replicas: usize,
    port: i64,
}

/// The resources of one kind.
fn of_kind<'a>(resources: &'a [Resource], kind: &'a str) -> impl Iterator<Item = &'a Resource> {
    resources.iter().filter(move |r| r.kind == kind)
}

/// A mapping's keys and values as text.
fn text_map(value: &Yaml) -> BTreeMap<String, String> {
    compose::entries(value).into_iter().map(|(k, v)| (k, compose::scalar(v).unwrap_or_default())).collect()
}

/// A list's items; none for anything else.
fn items(value: &Yaml) -> &[Yaml] {
    match value {
        Yaml::Array(items) => items,
        _ => &[],
    }
}

/// Whether `selector` (`matchLabels`, or a Service's selector) is non-empty and all in `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A container port given by number or by name.
fn container_port(container: &Yaml, port: &Yaml) -> Option<i64> {
    match port {
        Yaml::Integer(number) => Some(*number),
        Yaml::String(name) => items(&container["ports"])
            .iter()
            .find(|p| compose::scalar(&p["name"]).as_deref() == Some(name))
            .and_then(|p| p["containerPort"].as_i64()),
        _ => None,
    }
}

impl Check<'_> {
    /// deploy/k8s against the services, the compose files' gateway grace
    /// period and the pinned NATS version.
    pub(super) fn kubernetes(&mut self, pinned_nats: Option<&str>, gateway_grace: Option<f64>) {
        let Some(kustomization) = self.kustomization() else { return };
        self.kubernetes_validate(&kustomization.resources);
        let resources = self.resources(&kustomization.resources);

        match &kustomization.namespace {
            None => self.fail(format!("{KUSTOMIZATION} sets no namespace")),
            Some(namespace) => {
                if !of_kind(&resources, "Namespace").any(|r| r.name == *namespace) {
                    self.fail(format!("{LABEL}: no Namespace '{namespace}' among the resources"));
                }
            }
        }
        for (name, image) in &kustomization.images {
            self.check_pinned(image, &format!("{KUSTOMIZATION}: images entry '{name}'"));
        }
        let config_maps: BTreeMap<String, BTreeMap<String, String>> =
            of_kind(&resources, "ConfigMap").map(|r| (r.name.clone(), text_map(&r.doc["data"]))).collect();
        let secrets: BTreeMap<String, BTreeMap<String, String>> = of_kind(&resources, "Secret")
            .map(|r| {
                let mut values = text_map(&r.doc["stringData"]);
                for (key, encoded) in text_map(&r.doc["data"]) {
                    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
                    values.entry(key).or_insert_with(|| String::from_utf8_lossy(&decoded).into_owned());
                }
                (r.name.clone(), values)
            })
            .collect();
        let nats = self.nats_values(pinned_nats);

        // Each service's Deployment, read as an instance of it.
        let mut instances = Vec::new();
        let mut deployments = Vec::new();
        for app in self.apps {
            let Some(deployment) = of_kind(&resources, "Deployment").find(|r| r.name == app.name) else {
                self.fail(format!("{LABEL}: no Deployment '{}'", app.name));
                continue;
            };
            let place = format!("{LABEL}: Deployment '{}'", app.name);
            let pod = &deployment.doc["spec"]["template"]["spec"];
            let containers = items(&pod["containers"]);
            let Some(container) = containers
                .iter()
                .find(|c| compose::scalar(&c["name"]).as_deref() == Some(app.name))
                .or(containers.first())
            else {
                self.fail(format!("{place} has no container"));
                continue;
            };
            let environment = self.environment(&place, container, &config_maps, &secrets);
            instances.push(Instance { place, name: app.name.to_owned(), app, environment });
            deployments.push((app, deployment, container));
        }
        let listen_ports = self.listen_addresses(&instances);

        for &(app, deployment, container) in &deployments {
            let place = format!("{LABEL}: Deployment '{}'", app.name);
            let listens_on = listen_ports.get(app.name).copied().flatten();
            self.deployment(app, deployment, container, listens_on, &kustomization);
            let labels = text_map(&deployment.doc["spec"]["template"]["metadata"]["labels"]);
            let budget = of_kind(&resources, "PodDisruptionBudget")
                .find(|pdb| selects(&text_map(&pdb.doc["spec"]["selector"]["matchLabels"]), &labels));
            match budget {
                None => self.fail(format!("{place} has no PodDisruptionBudget")),
                Some(pdb) if pdb.doc["spec"]["minAvailable"].as_i64() != Some(1) => self.fail(format!(
                    "{LABEL}: PodDisruptionBudget '{}' should keep minAvailable: 1 (one pod of two may go at a time)",
                    pdb.name
                )),
                Some(_) => {}
            }
            if app.name == "gateway"
                && let Some(grace) = gateway_grace
            {
                let given =
                    deployment.doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
                if (given as f64 - grace).abs() > f64::EPSILON {
                    self.fail(format!(
                        "{place}: terminationGracePeriodSeconds is {given}, but the gateway's drain is given {grace} s \
                         (stop_grace_period in the compose files)"
                    ));
                }
            }
        }

        // Services: one per service, headless for the gRPC ones.
        let mut hosts = BTreeMap::new();
        for service in of_kind(&resources, "Service") {
            let port = items(&service.doc["spec"]["ports"]).first().and_then(|p| p["port"].as_i64());
            hosts.insert(service.name.clone(), (service.name.clone(), port));
        }
        for &(app, deployment, container) in &deployments {
            let listens_on = listen_ports.get(app.name).copied().flatten();
            if let Some(port) = self.service(app.name, app.grpc, deployment, container, listens_on, &resources) {
                hosts.insert(app.name.to_owned(), (app.name.to_owned(), Some(port)));
            }
        }
        if let Some(nats) = &nats {
            for i in 0..nats.replicas {
                hosts.insert(format!("{0}-{i}.{0}-headless", nats.name), ("nats".to_owned(), Some(nats.port)));
            }
        }
        let topology = Topology {
            hosts,
            external: vec![Peer::Database, Peer::TraceCollector],
            kind_of_host: "a Service of deploy/k8s or a pod of the NATS chart",
        };
        self.peer_addresses(&instances, &topology);
        self.every_setting_is_set(&instances);
        self.tokens_agree(LABEL, &instances);
        if let Some(nats) = &nats {
            self.stream_replicas(&instances, nats.replicas);
        }
        for instance in &instances {
            for setting in instance.app.settings().filter(|s| s.kind == Kind::Peer(Peer::Database)) {
                let value = instance.environment.get(setting.name).map(String::as_str).unwrap_or(setting.default);
                if !["postgres://", "postgresql://"].iter().any(|scheme| value.starts_with(scheme)) {
                    self.fail(format!(
                        "{}: {} must be a postgres:// URL (replicas share no disk)",
                        instance.place, setting.name
                    ));
                }
            }
        }

        let scales_gateway = of_kind(&resources, "HorizontalPodAutoscaler").find(|hpa| {
            let target = &hpa.doc["spec"]["scaleTargetRef"];
            compose::scalar(&hpa.doc["apiVersion"]).as_deref() == Some("autoscaling/v2")
                && compose::scalar(&target["kind"]).as_deref() == Some("Deployment")
                && compose::scalar(&target["name"]).as_deref() == Some("gateway")
        });
        match scales_gateway {
            None => {
                self.fail(format!("{LABEL}: no HorizontalPodAutoscaler (autoscaling/v2) scales Deployment 'gateway'"))
            }
            Some(hpa) => {
                let least = hpa.doc["spec"]["minReplicas"].as_i64().unwrap_or(1);
                if least < 2 {
                    self.fail(format!(
                        "{LABEL}: HorizontalPodAutoscaler '{}' may scale the gateway down to {least}",
                        hpa.name
                    ));
                }
            }
        }
    }

    /// kustomization.yaml, and whether it lists every manifest in deploy/k8s.
    fn kustomization(&mut self) -> Option<Kustomization> {
        let parsed = self
            .files
            .read(KUSTOMIZATION)
            .ok_or_else(|| "the file cannot be read".to_owned())
            .and_then(|text| compose::parse(&text));
        let document = match parsed {
            Ok(document) => document,
            Err(e) => {
                self.fail(format!("cannot parse {KUSTOMIZATION}: {e}"));
                return None;
            }
        };
        let resources: Vec<String> = items(&document["resources"]).iter().filter_map(compose::scalar).collect();
        for resource in &resources {
            if !self.files.is_file(&format!("{DIR}/{resource}")) {
                self.fail(format!("{KUSTOMIZATION} lists {resource}, which does not exist"));
            }
        }
        let own = [KUSTOMIZATION, NATS_VALUES].map(|path| path.rsplit('/').next().unwrap_or_default());
        for file in self.files.list(DIR) {
            let manifest = file.ends_with(".yaml") || file.ends_with(".yml");
            if manifest && !own.contains(&file.as_str()) && !resources.contains(&file) {
                self.fail(format!("{KUSTOMIZATION} does not list {file}"));
            }
        }
        let images = items(&document["images"])
            .iter()
            .filter_map(|entry| {
                let name = compose::scalar(&entry["name"])?;
                let new_name = compose::scalar(&entry["newName"]).unwrap_or_else(|| name.clone());
                let image = match (compose::scalar(&entry["newTag"]), compose::scalar(&entry["digest"])) {
                    (_, Some(digest)) => format!("{new_name}@{digest}"),
                    (Some(tag), None) => format!("{new_name}:{tag}"),
                    (None, None) => new_name,
                };
                Some((name, image))
            })
            .collect();
        Some(Kustomization { resources, namespace: compose::scalar(&document["namespace"]), images })
    }

    /// The pinned kubernetes-validate, strict, on every listed manifest: each
    /// line it prints about them is a complaint.
    fn kubernetes_validate(&mut self, listed: &[String]) {
        let tool = self.files.root.join(".tools/venv/bin/kubernetes-validate");
        if !tool.exists() {
            self.fail(format!("{LABEL}: {} is missing: run scripts/install-tools.sh", tool.display()));
            return;
        }
        let listed: Vec<&String> = listed.iter().filter(|file| self.files.is_file(&format!("{DIR}/{file}"))).collect();
        if listed.is_empty() {
            return;
        }
        // Replaced files are validated from a folder of their own, under the same names.
        let scratch = tempfile::tempdir().expect("a temporary folder");
        let folder = if listed.iter().any(|file| self.files.replaced.contains_key(&format!("{DIR}/{file}"))) {
            for file in &listed {
                let text = self.files.read(&format!("{DIR}/{file}")).unwrap_or_default();
                std::fs::write(scratch.path().join(file), text).expect("the manifest is written");
            }
            scratch.path().to_owned()
        } else {
            self.files.path(DIR)
        };
        let run = std::process::Command::new(&tool)
            .args(["--strict", "--quiet", "--kubernetes-version", KUBERNETES_VERSION])
            .args(&listed)
            .current_dir(folder)
            .output();
        match run {
            Ok(validated) if validated.status.success() => {}
            Ok(validated) => {
                let said = format!(
                    "{}{}",
                    String::from_utf8_lossy(&validated.stdout),
                    String::from_utf8_lossy(&validated.stderr)
                );
                let lines: Vec<&str> = said.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
                if lines.is_empty() {
                    self.fail(format!("{LABEL}: kubernetes-validate failed ({}) without a word", validated.status));
                }
                for line in lines {
                    self.fail(format!("{LABEL}: kubernetes-validate refuses: {line}"));
                }
            }
            Err(e) => self.fail(format!("{LABEL}: cannot run {}: {e}", tool.display())),
        }
    }

    /// Every resource of the listed manifests.
    fn resources(&mut self, listed: &[String]) -> Vec<Resource> {
        let mut resources = Vec::new();
        for file in listed {
            let path = format!("{DIR}/{file}");
            let Some(text) = self.files.read(&path) else { continue };
            let documents = match yaml_rust2::YamlLoader::load_from_str(&text) {
                Ok(documents) => documents,
                Err(e) => {
                    self.fail(format!("cannot parse {path}: {e}"));
                    continue;
                }
            };
            for doc in documents.into_iter().filter(|doc| !doc.is_null()) {
                let kind = compose::scalar(&doc["kind"]).unwrap_or_default();
                let name = compose::scalar(&doc["metadata"]["name"]).unwrap_or_default();
                resources.push(Resource { kind, name, doc });
            }
        }
        resources
    }

    /// A container's environment as the service will see it: `envFrom`
    /// ConfigMaps and Secrets, then `env`, with the values they refer to.
    fn environment(
        &mut self,
        place: &str,
        container: &Yaml,
        config_maps: &BTreeMap<String, BTreeMap<String, String>>,
        secrets: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> BTreeMap<String, String> {
        let mut environment = BTreeMap::new();
        let source = |kind: &str, name: &str| {
            let found = if kind == "ConfigMap" { config_maps.get(name) } else { secrets.get(name) };
            found.ok_or_else(|| format!("{place} refers to {kind} '{name}', which is not among the resources"))
        };
        for from in items(&container["envFrom"]) {
            for (kind, key) in [("ConfigMap", "configMapRef"), ("Secret", "secretRef")] {
                let Some(name) = compose::scalar(&from[key]["name"]).filter(|_| compose::has(from, key)) else {
                    continue;
                };
                match source(kind, &name) {
                    Ok(values) => environment.extend(values.clone()),
                    Err(problem) => self.fail(problem),
                }
            }
        }
        for variable in items(&container["env"]) {
            let Some(name) = compose::scalar(&variable["name"]) else { continue };
            let value_from = &variable["valueFrom"];
            let mut value = compose::scalar(&variable["value"]).filter(|_| compose::has(variable, "value"));
            for (kind, key) in [("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")] {
                let reference = &value_from[key];
                let Some(source_name) = compose::scalar(&reference["name"]).filter(|_| compose::has(value_from, key))
                else {
                    continue;
                };
                let entry = compose::scalar(&reference["key"]).unwrap_or_default();
                match source(kind, &source_name).map(|values| values.get(&entry)) {
                    Ok(Some(found)) => value = Some(found.clone()),
                    Ok(None) => self.fail(format!(
                        "{place}: {name} refers to key '{entry}' of {kind} '{source_name}', which it does not have"
                    )),
                    Err(problem) => self.fail(problem),
                }
            }
            environment.insert(name, value.unwrap_or_default());
        }
        environment
    }

    /// A Deployment: replicas, the binary it runs, the image kustomize pins,
    /// probes that fit the service, resources, and a non-root user.
    fn deployment(
        &mut self,
        app: App,
        deployment: &Resource,
        container: &Yaml,
        listens_on: Option<i64>,
        kustomization: &Kustomization,
    ) {
        let (name, grpc) = (app.name, app.grpc);
        let place = &format!("{LABEL}: Deployment '{name}'");
        let spec = &deployment.doc["spec"];
        let replicas = spec["replicas"].as_i64().unwrap_or(1);
        if replicas < 2 {
            self.fail(format!("{place} runs {replicas} replica; run at least 2"));
        }
        let labels = text_map(&spec["template"]["metadata"]["labels"]);
        if !selects(&text_map(&spec["selector"]["matchLabels"]), &labels) {
            self.fail(format!("{place}: its selector does not select its own pods"));
        }
        let command: Vec<String> = items(&container["command"]).iter().filter_map(compose::scalar).collect();
        match command.first() {
            None => self.fail(format!("{place} sets no command (the image's default runs the gateway)")),
            Some(program) if program.rsplit('/').next() != Some(name) => {
                self.fail(format!("{place} runs '{program}', expected '{name}'"));
            }
            Some(_) => {}
        }
        let image = compose::scalar(&container["image"]).unwrap_or_default();
        if !kustomization.images.contains_key(compose::split_image(&image).0) {
            self.fail(format!("{place} uses image '{image}', which no images: entry of {KUSTOMIZATION} pins"));
        }

        let port = listens_on.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let readiness = &container["readinessProbe"];
        let liveness = &container["livenessProbe"];
        if readiness.is_badvalue() {
            self.fail(format!("{place} has no readinessProbe"));
        } else if grpc {
            if readiness["grpc"]["port"].as_i64() != listens_on {
                self.fail(format!("{place}: its readinessProbe should be grpc on port {port} (grpc.health.v1)"));
            }
        } else {
            let get = &readiness["httpGet"];
            if compose::scalar(&get["path"]).as_deref() != Some("/readyz")
                || container_port(container, &get["port"]) != listens_on
            {
                self.fail(format!("{place}: its readinessProbe should be GET /readyz on port {port}"));
            }
        }
        if liveness.is_badvalue() {
            self.fail(format!("{place} has no livenessProbe"));
        } else if !grpc && compose::scalar(&liveness["httpGet"]["path"]).as_deref() != Some("/healthz") {
            self.fail(format!("{place}: its livenessProbe should be GET /healthz (whether the process is alive)"));
        }

        for (bound, resource) in [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")]
        {
            if container["resources"][bound][resource].is_badvalue() {
                self.fail(format!("{place} sets no resources.{bound}.{resource}"));
            }
        }
        let pod = &spec["template"]["spec"];
        let non_root = [&pod["securityContext"], &container["securityContext"]]
            .iter()
            .any(|context| context["runAsNonRoot"].as_bool() == Some(true));
        if !non_root {
            self.fail(format!("{place} does not set runAsNonRoot: true"));
        }
        if container["securityContext"]["allowPrivilegeEscalation"].as_bool() != Some(false) {
            self.fail(format!("{place} does not set allowPrivilegeEscalation: false"));
        }
    }

    /// The Service of a service: selects its pods and reaches the port it
    /// listens on; headless for a gRPC service (its name resolves to every pod,
    /// and callers balance over them), not for the gateway (the way in).
    /// Returns the Service's port that reaches it.
    fn service(
        &mut self,
        name: &str,
        grpc: bool,
        deployment: &Resource,
        container: &Yaml,
        listens_on: Option<i64>,
        resources: &[Resource],
    ) -> Option<i64> {
        let Some(service) = resources.iter().find(|r| r.kind == "Service" && r.name == name) else {
            self.fail(format!("{LABEL}: no Service '{name}'"));
            return None;
        };
        let spec = &service.doc["spec"];
        let labels = text_map(&deployment.doc["spec"]["template"]["metadata"]["labels"]);
        if !selects(&text_map(&spec["selector"]), &labels) {
            self.fail(format!("{LABEL}: Service '{name}' does not select the pods of Deployment '{name}'"));
        }
        let headless = compose::scalar(&spec["clusterIP"]).as_deref() == Some("None");
        if grpc && !headless {
            self.fail(format!(
                "{LABEL}: Service '{name}' must be headless (clusterIP: None), so its name resolves to every pod"
            ));
        }
        if !grpc && headless {
            self.fail(format!("{LABEL}: Service '{name}' must not be headless: it is the way in"));
        }
        let reaching = items(&spec["ports"]).iter().find(|port| {
            let target = if port["targetPort"].is_badvalue() { &port["port"] } else { &port["targetPort"] };
            listens_on.is_some() && container_port(container, target) == listens_on
        });
        match reaching {
            Some(port) => port["port"].as_i64(),
            None => {
                let port = listens_on.map_or_else(|| "?".to_owned(), |p| p.to_string());
                self.fail(format!("{LABEL}: Service '{name}' does not reach port {port} of its pods"));
                None
            }
        }
    }

    /// The NATS chart's values: the pinned image, a three-node cluster,
    /// JetStream on persistent volumes with an fsync before every ack.
    fn nats_values(&mut self, pinned: Option<&str>) -> Option<NatsCluster> {
        let parsed = self
            .files
            .read(NATS_VALUES)
            .ok_or_else(|| "the file cannot be read".to_owned())
            .and_then(|text| compose::parse(&text));
        let values = match parsed {
            Ok(values) => values,
            Err(e) => {
                self.fail(format!("cannot parse {NATS_VALUES}: {e}"));
                return None;
            }
        };
        let image = &values["container"]["image"];
        let repository = compose::scalar(&image["repository"]).unwrap_or_else(|| "nats".to_owned());
        if repository != "nats" {
            self.fail(format!(
                "{NATS_VALUES}: container.image.repository '{repository}' is not the official nats image"
            ));
        }
        let tag = compose::scalar(&image["tag"]).unwrap_or_default();
        if let Some(pinned) = pinned
            && tag.split('-').next() != Some(pinned)
        {
            self.fail(format!(
                "{NATS_VALUES}: container.image.tag '{tag}' is not {pinned} (NATS_SERVER_VERSION in scripts/install-tools.sh)"
            ));
        }
        let config = &values["config"];
        if config["cluster"]["enabled"].as_bool() != Some(true) {
            self.fail(format!("{NATS_VALUES}: config.cluster.enabled must be true"));
        }
        let replicas = config["cluster"]["replicas"].as_i64().unwrap_or(0);
        if replicas != NATS_NODES as i64 {
            self.fail(format!(
                "{NATS_VALUES}: config.cluster.replicas is {replicas}; JetStream at R{NATS_NODES} needs {NATS_NODES} nodes"
            ));
        }
        let jetstream = &config["jetstream"];
        if jetstream["enabled"].as_bool() != Some(true) {
            self.fail(format!("{NATS_VALUES}: config.jetstream.enabled must be true"));
        }
        let file_store = &jetstream["fileStore"];
        if file_store["enabled"].as_bool() == Some(false) || file_store["pvc"]["enabled"].as_bool() == Some(false) {
            self.fail(format!(
                "{NATS_VALUES}: JetStream's file store must be on a PersistentVolumeClaim (config.jetstream.fileStore)"
            ));
        }
        if compose::scalar(&jetstream["merge"]["sync_interval"]).as_deref() != Some("always") {
            self.fail(format!(
                "{NATS_VALUES}: config.jetstream.merge must set sync_interval: always (docs/operations.md, durability)"
            ));
        }
        let Some(name) = compose::scalar(&values["fullnameOverride"]).filter(|name| !name.is_empty()) else {
            self.fail(format!(
                "{NATS_VALUES}: set fullnameOverride: NATS_URL names the pods, whose names would follow the release's"
            ));
            return None;
        };
        let port = config["nats"]["port"].as_i64().unwrap_or(4222);
        Some(NatsCluster { name, replicas: usize::try_from(replicas).unwrap_or(0), port })
    }
}
