//! The presence service: decides who is online from the sockets gateways
//! record in NATS key-value buckets, announces each change exactly once, and
//! answers who is online to those allowed to know.

#![forbid(unsafe_code)]

pub mod config;
mod grpc;
mod metrics;
mod tracker;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use chat_common::nats::presence::Buckets;
use chat_common::shutdown::CancellationToken;
use chat_proto::presence::v1::presence_service_server::PresenceServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The presence service, built and bound, ready to run.
pub struct App {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    routes: tonic::service::Routes,
    buckets: Buckets,
    tracker: Arc<tracker::Tracker>,
    health: chat_common::grpc::Health,
    metrics: chat_common::metrics::Endpoint,
}

impl App {
    /// Opens the presence buckets and binds the gRPC listener.
    ///
    /// # Errors
    /// When NATS cannot be reached or the listener cannot be bound.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let unexpected = |e: &dyn std::fmt::Display| Error::Unexpected(anyhow::anyhow!("{e}"));
        let nats = chat_common::nats::connect(&config.nats_url, "presence").await.map_err(|e| unexpected(&e))?;
        let dependencies = chat_common::grpc::Dependencies::new(nats.clone(), None);
        let js = async_nats::jetstream::new(nats);
        let buckets = chat_common::nats::presence::buckets(&js, config.replicas).await.map_err(|e| unexpected(&e))?;
        let history = chat_common::grpc::history_client(
            chat_common::grpc::channel(&config.history_url).map_err(|e| unexpected(&e))?,
        );
        let tracker = Arc::new(tracker::Tracker::new(config.grace));
        let (listener, grpc_addr) = chat_common::grpc::bind(&config.grpc_addr).await.map_err(|e| unexpected(&e))?;
        let (routes, health) = chat_common::grpc::with_health_and_reflection(
            tonic::service::Routes::new(PresenceServiceServer::new(grpc::PresenceGrpc::new(tracker.clone(), history))),
            &["chat.presence.v1.PresenceService"],
            dependencies,
        );
        let metrics = chat_common::metrics::Endpoint::bind(&config.metrics_addr).await.map_err(|e| unexpected(&e))?;
        tracing::info!(%grpc_addr, metrics_addr = %metrics.addr, "presence listening");
        Ok(Self { listener, grpc_addr, routes, buckets, tracker, health, metrics })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr
    }

    /// Serves gRPC and follows the presence buckets until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the gRPC server fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        // One task for both, so stopping or aborting it stops everything.
        let serve = async {
            let served = chat_common::grpc::serve(self.routes, self.listener, shutdown.clone()).await;
            shutdown.cancel();
            served.map_err(|e| Error::Unexpected(e.into()))
        };
        let ((), (), (), served) = tokio::join!(
            self.tracker.run(self.buckets, shutdown.clone()),
            self.health.watch(shutdown.clone()),
            self.metrics.serve(metrics::get().registry.clone(), shutdown.clone()),
            serve
        );
        served
    }
}
