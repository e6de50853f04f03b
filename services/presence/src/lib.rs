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

use anyhow::Context;
use chat_common::nats::presence::Buckets;
use chat_common::server::{Addresses, GrpcServer};
use chat_common::shutdown::CancellationToken;
use chat_proto::presence::v1::presence_service_server::PresenceServiceServer;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The presence service, built and bound, ready to run.
pub struct App {
    server: GrpcServer,
    buckets: Buckets,
    tracker: Arc<tracker::Tracker>,
}

impl App {
    /// Opens the presence buckets and binds the gRPC listener.
    ///
    /// # Errors
    /// When NATS cannot be reached or the listener cannot be bound.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let nats = chat_common::nats::connect(&config.nats_url, "presence").await.context("connecting to NATS")?;
        let dependencies = chat_common::grpc::Dependencies::new(nats.clone(), None);
        let js = async_nats::jetstream::new(nats);
        let buckets =
            chat_common::nats::presence::buckets(&js, config.replicas).await.context("opening the presence buckets")?;
        let history = chat_common::grpc::history_client(
            chat_common::grpc::channel(&config.history_url).context("the history address")?,
        );
        let tracker = Arc::new(tracker::Tracker::new(config.grace));
        let server = GrpcServer::bind(
            "presence",
            Addresses { grpc: &config.grpc_addr, metrics: &config.metrics_addr },
            tonic::service::Routes::new(PresenceServiceServer::new(grpc::PresenceGrpc::new(tracker.clone(), history))),
            &["chat.presence.v1.PresenceService"],
            dependencies,
        )
        .await?;
        Ok(Self { server, buckets, tracker })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.server.grpc_addr()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.server.metrics_addr()
    }

    /// Serves gRPC and follows the presence buckets until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the gRPC server fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        // One task for both, so stopping or aborting it stops everything.
        let ((), served) = tokio::join!(
            self.tracker.run(self.buckets, shutdown.clone()),
            self.server.serve(metrics::get().registry.clone(), shutdown.clone())
        );
        Ok(served?)
    }
}
