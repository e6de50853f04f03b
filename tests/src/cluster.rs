//! A NATS cluster for the tests: the pinned nats-server, JetStream on every
//! node, cluster routes between them, as an operator runs NATS past one
//! machine.
//!
//! Each node runs in a network namespace of its own, joined to this host by a
//! veth pair on a bridge, so a test can cut a node off the network (its link
//! goes down: nothing is closed or reset, packets just stop, as in a real
//! partition) and heal it again. Making namespaces takes root and `ip`; where
//! that fails the nodes listen on loopback ports instead and the harness says
//! so, and then no node can be cut off (a test that needs it fails in CI and
//! is passed over elsewhere, saying why).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command as StdCommand;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

/// The client, cluster-route and monitoring ports of a node in a namespace
/// (each node has its own address there, so they can be the usual ones).
const CLIENT_PORT: u16 = 4222;
const ROUTE_PORT: u16 = 6222;
const MONITOR_PORT: u16 = 8222;
/// How long a node may take to come up and report JetStream healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

pub struct NatsCluster {
    nodes: Vec<Node>,
    network: Option<Network>,
}

struct Node {
    name: String,
    ip: IpAddr,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    /// The namespace it runs in, if any.
    namespace: Option<String>,
    child: Option<Child>,
    _store: tempfile::TempDir,
}

impl Node {
    fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.client_port)
    }

    async fn spawn(&mut self) {
        let mut command = match &self.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(crate::nats::binary());
                command
            }
            None => Command::new(crate::nats::binary()),
        };
        command.arg("-c").arg(&self.config);
        self.child = Some(crate::nats::spawn(command));
    }

    /// Waits until the node reports itself and JetStream healthy.
    async fn wait_healthy(&self) {
        let url = format!("http://{}/healthz", SocketAddr::new(self.ip, self.monitor_port));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().expect("http client");
        let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
        loop {
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "NATS node {} not healthy within {HEALTHY_WITHIN:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Where one node listens.
#[derive(Clone, Copy)]
struct Listens {
    ip: IpAddr,
    client: u16,
    route: u16,
    monitor: u16,
}

impl NatsCluster {
    /// `size` nodes, each in a namespace of its own where namespaces can be
    /// made, on loopback ports otherwise; returns once every node reports
    /// JetStream healthy.
    pub async fn start(size: usize) -> Self {
        let network = match Network::create(size) {
            Ok(network) => Some(network),
            Err(reason) => {
                assert!(!crate::in_ci(), "cannot give the NATS nodes network namespaces in CI: {reason}");
                println!(
                    "NATS cluster on loopback ports, not in network namespaces ({reason}): no node can be cut off"
                );
                None
            }
        };
        let listens: Vec<Listens> = (0..size)
            .map(|i| match &network {
                Some(network) => {
                    Listens { ip: network.node_ip(i), client: CLIENT_PORT, route: ROUTE_PORT, monitor: MONITOR_PORT }
                }
                None => {
                    let [client, route, monitor] = std::array::from_fn(|_| crate::ports::free_port());
                    Listens { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), client, route, monitor }
                }
            })
            .collect();
        let routes: Vec<String> =
            listens.iter().map(|l| format!("\"nats-route://{}\"", SocketAddr::new(l.ip, l.route))).collect();
        let mut nodes = Vec::new();
        for (i, listen) in listens.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = tempfile::tempdir().expect("temp dir");
            let config = store.path().join("nats.conf");
            std::fs::write(&config, node_config(&name, listen, &routes, store.path())).expect("nats.conf");
            nodes.push(Node {
                name,
                ip: listen.ip,
                client_port: listen.client,
                monitor_port: listen.monitor,
                config,
                namespace: network.as_ref().map(|n| n.namespaces[i].clone()),
                child: None,
                _store: store,
            });
        }
        for node in &mut nodes {
            node.spawn().await;
        }
        for node in &nodes {
            node.wait_healthy().await;
        }
        Self { nodes, network }
    }

    /// Whether nodes can be cut off (they run in namespaces).
    pub fn can_partition(&self) -> bool {
        self.network.is_some()
    }

    /// Every node's client URL, comma-separated, as `NATS_URL` takes them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://{}", n.client_addr())).collect::<Vec<_>>().join(",")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index`'s name (`n1`, `n2`, …), as JetStream reports leaders.
    pub fn name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    /// Node `index`'s process id, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().and_then(Child::id)
    }

    /// Kills node `index` with SIGKILL; its store stays on disk.
    pub async fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts node `index` again with its store, and waits until it is healthy
    /// (caught up with the cluster).
    pub async fn restart(&mut self, index: usize) {
        self.kill(index).await;
        self.nodes[index].spawn().await;
        self.nodes[index].wait_healthy().await;
    }

    /// SIGTERM to node `index` (nats-server's graceful stop), waiting up to
    /// 10 s for it to exit.
    pub async fn stop(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            if let Some(pid) = child.id() {
                let _ = StdCommand::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    /// Cuts node `index` off the network: its link goes down, so nothing
    /// reaches it or leaves it, and nothing is closed.
    pub fn cut(&self, index: usize) {
        let network = self.network.as_ref().expect("the nodes run in network namespaces");
        ip(&["link", "set", &network.host_links[index], "down"]).expect("take the node's link down");
    }

    /// Brings node `index`'s link back up.
    pub fn heal(&self, index: usize) {
        let network = self.network.as_ref().expect("the nodes run in network namespaces");
        ip(&["link", "set", &network.host_links[index], "up"]).expect("bring the node's link up");
    }

    /// The node leading `stream` (its index), once it has one.
    pub async fn stream_leader(&self, stream: &str) -> usize {
        let client = chat_common::nats::connect(&self.urls(), "test").await.expect("nats");
        let js = async_nats::jetstream::new(client);
        let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Ok(mut found) = js.get_stream(stream).await
                && let Ok(info) = found.info().await
                && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
                && let Some(index) = self.nodes.iter().position(|n| n.name == leader)
            {
                return index;
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader of stream {stream}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One node's configuration: JetStream with its own store, routes to every node.
fn node_config(name: &str, listen: &Listens, routes: &[String], store: &std::path::Path) -> String {
    format!(
        "server_name: {name}\n\
         listen: \"{client}\"\n\
         http: \"{monitor}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n}}\n\
         cluster {{\n  name: chat\n  listen: \"{route}\"\n  routes: [{routes}]\n}}\n",
        client = SocketAddr::new(listen.ip, listen.client),
        monitor = SocketAddr::new(listen.ip, listen.monitor),
        route = SocketAddr::new(listen.ip, listen.route),
        store = store.display(),
        routes = routes.join(", "),
    )
}

/// Runs `ip` with `args`; the error says what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = StdCommand::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A bridge on this host with one veth pair per node, the node's end in a
/// namespace of its own: 10.77.N.1, .2, … for the nodes, 10.77.N.254 for
/// this host, N the first subnet no interface here uses. Names carry this
/// process's id, so what a killed test run left behind is recognised and
/// removed by the next run.
struct Network {
    subnet: u8,
    bridge: String,
    host_links: Vec<String>,
    namespaces: Vec<String>,
}

/// Namespaces and bridges this harness makes start with these.
const NAMESPACE_PREFIX: &str = "chat-";
const BRIDGE_PREFIX: &str = "chb";

impl Network {
    fn node_ip(&self, index: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, self.subnet, u8::try_from(index + 1).expect("a small cluster")))
    }

    fn create(size: usize) -> Result<Self, String> {
        // One cluster's network at a time in this process: each picks a free subnet.
        static CREATING: Mutex<()> = Mutex::new(());
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let _one_at_a_time = CREATING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        remove_leftovers();
        let subnet = free_subnet()?;
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        let mut network = Self {
            subnet,
            bridge: format!("{BRIDGE_PREFIX}{pid}{k:02}"),
            host_links: Vec::new(),
            namespaces: Vec::new(),
        };
        // Dropping a half-made network removes what was made.
        ip(&["link", "add", &network.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.77.{subnet}.254/24"), "dev", &network.bridge])?;
        ip(&["link", "set", &network.bridge, "up"])?;
        for i in 0..size {
            let namespace = format!("{NAMESPACE_PREFIX}{pid}-{k:02}-{i}");
            ip(&["netns", "add", &namespace])?;
            network.namespaces.push(namespace.clone());
            let host_link = format!("chh{pid}{k:02}{i}");
            let node_link = format!("chn{pid}{k:02}{i}");
            ip(&["link", "add", &host_link, "type", "veth", "peer", "name", &node_link])?;
            network.host_links.push(host_link.clone());
            ip(&["link", "set", &node_link, "netns", &namespace])?;
            ip(&["link", "set", &host_link, "master", &network.bridge, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &namespace, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&["addr", "add", &format!("{}/24", network.node_ip(i)), "dev", &node_link])?;
            inside(&["link", "set", &node_link, "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(network)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // A namespace's end of each veth pair goes with it, and the host's end with that.
        for namespace in &self.namespaces {
            let _ = ip(&["netns", "del", namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// The first 10.77.N.0/24 no interface on this host has an address in.
fn free_subnet() -> Result<u8, String> {
    let output = StdCommand::new("ip").args(["-o", "-4", "addr", "show"]).output().map_err(|e| e.to_string())?;
    let taken = String::from_utf8_lossy(&output.stdout).into_owned();
    (1..=250).find(|n| !taken.contains(&format!(" 10.77.{n}."))).ok_or_else(|| "no free 10.77.N.0/24 subnet".to_owned())
}

/// Removes namespaces and bridges of test processes that are gone.
fn remove_leftovers() {
    let alive = |pid: &str| std::path::Path::new("/proc").join(pid).exists();
    if let Ok(output) = StdCommand::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if let Some(pid) = name.strip_prefix(NAMESPACE_PREFIX).and_then(|rest| rest.split('-').next())
                && !alive(pid)
            {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(output) = StdCommand::new("ip").args(["-o", "link", "show", "type", "bridge"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split(": ").nth(1).unwrap_or_default();
            if let Some(digits) = name.strip_prefix(BRIDGE_PREFIX)
                && digits.len() > 2
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !alive(&digits[..digits.len() - 2])
            {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}
