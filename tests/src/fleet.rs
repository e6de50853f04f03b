//! Several instances of every service as processes, the way the system runs
//! past one machine: each instance listens on an address of its own and logs
//! to `data_dir/<service>-<n>.log`, and every service reaches the others
//! through the address lists the services take (`AUTH_GRPC_URL=a,b`), so
//! losing one instance leaves its work to the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::processes::{Databases, Kind, ServiceProcess, free_addr, start_service, var};

/// How many instances of each service.
#[derive(Debug, Clone)]
pub struct Counts(pub BTreeMap<Kind, usize>);

impl Counts {
    /// Three gateways and two of every other service.
    pub fn several() -> Self {
        Self(Kind::ALL.into_iter().map(|kind| (kind, if kind == Kind::Gateway { 3 } else { 2 })).collect())
    }
}

pub struct Fleet {
    instances: BTreeMap<Kind, Vec<ServiceProcess>>,
    databases: Databases,
}

impl Fleet {
    /// Starts `counts` instances on NATS at `nats_urls` (a comma-separated
    /// list) and `databases`, with `env` added to every instance's settings;
    /// services in [`Kind::ALL`]'s order, so each finds the ones it calls.
    pub async fn start(
        nats_urls: &str,
        data_dir: &Path,
        databases: Databases,
        counts: &Counts,
        env: &[(String, String)],
    ) -> Self {
        let addrs: BTreeMap<Kind, Vec<SocketAddr>> =
            counts.0.iter().map(|(kind, count)| (*kind, (0..*count).map(|_| free_addr()).collect())).collect();
        let mut shared_env = vec![var("NATS_URL", nats_urls)];
        for (kind, addrs) in &addrs {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            shared_env.extend(kind.peer_variable().map(|name| var(name, list.join(","))));
        }
        shared_env.extend(env.iter().cloned());
        let mut instances = BTreeMap::new();
        for (kind, addrs) in &addrs {
            let mut started = Vec::new();
            for (n, addr) in addrs.iter().enumerate() {
                let log = format!("{}-{}", kind.binary(), n + 1);
                let own = kind.own_settings(*addr, &databases);
                started.push(start_service(data_dir, &shared_env, kind.binary(), &log, *addr, own).await);
            }
            instances.insert(*kind, started);
        }
        Self { instances, databases }
    }

    /// The instances of `kind`.
    pub fn instances(&self, kind: Kind) -> &[ServiceProcess] {
        self.instances.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// Instance `index` of `kind`, to kill or restart.
    pub fn instance_mut(&mut self, kind: Kind, index: usize) -> &mut ServiceProcess {
        &mut self.instances.get_mut(&kind).expect("the service runs")[index]
    }

    /// Every gateway's address, for clients to spread over.
    pub fn gateway_addrs(&self) -> Vec<SocketAddr> {
        self.instances(Kind::Gateway).iter().map(|g| g.addr).collect()
    }

    /// The HTTP API through gateway `index`.
    pub fn api(&self, index: usize) -> crate::client::Api {
        crate::client::Api::new(&format!("http://{}", self.instances(Kind::Gateway)[index].addr))
    }

    pub fn databases(&self) -> &Databases {
        &self.databases
    }

    /// Every instance with its name (`history-2`), as processes a bench measures.
    pub fn processes(&self) -> impl Iterator<Item = (String, &ServiceProcess)> {
        self.instances.iter().flat_map(|(kind, all)| {
            all.iter().enumerate().map(move |(n, p)| (format!("{}-{}", kind.binary(), n + 1), p))
        })
    }

    /// Kills every instance and drops the PostgreSQL databases made for them.
    pub async fn stop(mut self) {
        for kind in Kind::ALL.into_iter().rev() {
            for instance in self.instances.get_mut(&kind).into_iter().flatten() {
                instance.kill().await;
            }
        }
        self.databases.drop_created().await;
    }
}

/// A failing test shows what every instance logged last.
impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, instance) in self.processes() {
                eprintln!("--- the end of {name}'s log ---\n{}", instance.log_tail());
            }
        }
    }
}
