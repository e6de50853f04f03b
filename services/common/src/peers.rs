//! A peer service at several addresses. `AUTH_GRPC_URL` and the other peer
//! settings take a comma-separated list of `host:port`, and a host name may
//! stand for several instances (a compose service with replicas, a Kubernetes
//! headless Service). Calls are spread over the instances that answer, the
//! way a gRPC client's DNS resolver and health-checking balancer do it: a
//! watcher resolves the names again and asks every instance's
//! `grpc.health.v1` each [`PROBE_EVERY`], and the balancer holds only those
//! that say SERVING. So a lost instance costs the calls already sent to it
//! and those of at most one probe interval, and a new or returning instance
//! gets calls from the next probe on. When no instance is serving, all stay
//! in, so calls get the instances' own errors at once instead of waiting.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Endpoint;
use tonic::transport::channel::Change;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How often names are resolved and instances asked for their health.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one instance may take to answer a probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// One entry of a peer list: `host:port`, with an optional `http://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    host: String,
    port: u16,
}

/// Why a peer list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerListError {
    #[error("an empty entry in the address list")]
    Empty,
    #[error("{0:?} is not host:port (an optional http:// may come first)")]
    Malformed(String),
    #[error("{0:?}: only plain http:// is spoken between the services")]
    Scheme(String),
}

impl PeerAddress {
    fn parse(entry: &str) -> Result<Self, PeerListError> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(PeerListError::Empty);
        }
        let rest = match entry.split_once("://") {
            None => entry,
            Some(("http", rest)) => rest,
            Some(_) => return Err(PeerListError::Scheme(entry.to_owned())),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let malformed = || PeerListError::Malformed(entry.to_owned());
        let (host, port) = rest.rsplit_once(':').ok_or_else(malformed)?;
        let port: u16 = port.parse().map_err(|_| malformed())?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty()
            || port == 0
            || host.contains(['/', '@'])
            || host.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(malformed());
        }
        Ok(Self { host: host.to_owned(), port })
    }

    /// The address itself, when the host is an IP address (nothing to resolve).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host.parse().ok().map(|ip| SocketAddr::new(ip, self.port))
    }

    async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.socket_addr() {
            return Ok(vec![addr]);
        }
        let found = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host((self.host.as_str(), self.port)))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "name lookup timed out"))??;
        Ok(found.collect())
    }
}

/// Parses a comma-separated list of peer addresses.
///
/// # Errors
/// On an empty entry, an entry that is not `host:port`, or a scheme other
/// than `http`.
pub fn parse_list(list: &str) -> Result<Vec<PeerAddress>, PeerListError> {
    list.split(',').map(PeerAddress::parse).collect()
}

/// Keeps `balancer` holding the serving instances of `peers` until the
/// balancer is dropped (every channel using it gone); see the module header.
/// Addresses given as IP addresses are held from the start, so the first
/// calls need not wait for the first probe.
pub async fn watch(
    peers: Vec<PeerAddress>,
    endpoint: impl Fn(SocketAddr) -> Endpoint,
    balancer: tokio::sync::mpsc::Sender<Change<SocketAddr, Endpoint>>,
) {
    let mut resolved: HashMap<usize, Vec<SocketAddr>> = HashMap::new();
    let mut probes: HashMap<SocketAddr, HealthClient<tonic::transport::Channel>> = HashMap::new();
    let mut held: BTreeSet<SocketAddr> = peers.iter().filter_map(PeerAddress::socket_addr).collect();
    for addr in &held {
        if balancer.send(Change::Insert(*addr, endpoint(*addr))).await.is_err() {
            return;
        }
    }
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = balancer.closed() => return,
            _ = every.tick() => {}
        }
        for (index, peer) in peers.iter().enumerate() {
            match peer.resolve().await {
                Ok(addrs) => {
                    resolved.insert(index, addrs);
                }
                // A name that does not resolve now (its instances not up yet,
                // DNS slow) keeps what it resolved to last.
                Err(e) => tracing::debug!(host = %peer.host, error = %e, "cannot resolve a peer's name"),
            }
        }
        let known: BTreeSet<SocketAddr> = resolved.values().flatten().copied().collect();
        probes.retain(|addr, _| known.contains(addr));
        for addr in &known {
            probes.entry(*addr).or_insert_with(|| HealthClient::new(endpoint(*addr).connect_lazy()));
        }
        let answers = futures::future::join_all(probes.iter().map(|(addr, client)| {
            let mut client = client.clone();
            async move {
                let asked = client.check(HealthCheckRequest { service: String::new() });
                let serving = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, asked).await,
                    Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32
                );
                (*addr, serving)
            }
        }))
        .await;
        let serving: BTreeSet<SocketAddr> = answers.into_iter().filter_map(|(a, up)| up.then_some(a)).collect();
        let wanted = if serving.is_empty() { known } else { serving };
        for addr in wanted.difference(&held) {
            if balancer.send(Change::Insert(*addr, endpoint(*addr))).await.is_err() {
                return;
            }
            tracing::info!(%addr, "a peer instance answers; calls go to it");
        }
        for addr in held.difference(&wanted) {
            if balancer.send(Change::Remove(*addr)).await.is_err() {
                return;
            }
            tracing::warn!(%addr, "a peer instance is not serving; calls go to the others");
        }
        held = wanted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_or_without_a_scheme() {
        let peers = parse_list("127.0.0.1:50051, http://history-1:50052,[::1]:7").unwrap();
        assert_eq!(peers[0].socket_addr(), Some("127.0.0.1:50051".parse().unwrap()));
        assert_eq!(peers[1], PeerAddress { host: "history-1".into(), port: 50052 });
        assert_eq!(peers[1].socket_addr(), None);
        assert_eq!(peers[2].socket_addr(), Some("[::1]:7".parse().unwrap()));
        assert_eq!(parse_list("history:65535").unwrap()[0].port, u16::MAX);
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (list, reason) in [
            ("a:1,,b:2", "an empty entry"),
            ("history", "is not host:port"),
            ("history:0", "is not host:port"),
            ("history:http", "is not host:port"),
            (":50052", "is not host:port"),
            ("https://history:50052", "only plain http://"),
            ("http://user@history:1", "is not host:port"),
            ("history\0:50052", "is not host:port"),
            ("his tory:50052", "is not host:port"),
            ("history:65536", "is not host:port"),
            ("history:-1", "is not host:port"),
        ] {
            let error = parse_list(list).expect_err(list).to_string();
            assert!(error.contains(reason), "{list}: {error}");
        }
    }
}
