//! The notification service. Today it runs as a proper member of the system
//! (configuration, NATS connection, gRPC health and reflection, graceful
//! shutdown); offline queues and push delivery are the next capability built
//! on it.

#![forbid(unsafe_code)]

pub mod config;

use std::net::SocketAddr;

use chat_common::shutdown::CancellationToken;
use chat_proto::notification::v1::notification_service_server::{NotificationService, NotificationServiceServer};
use tokio::net::TcpListener;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

struct NotificationGrpc;

impl NotificationService for NotificationGrpc {}

/// The notification service, built and bound, ready to run.
pub struct App {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    routes: tonic::service::Routes,
    _nats: async_nats::Client,
}

impl App {
    /// Connects NATS and binds the gRPC listener.
    ///
    /// # Errors
    /// When NATS cannot be reached or the listener cannot be bound.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let nats = chat_common::nats::connect(&config.nats_url, "notification")
            .await
            .map_err(|e| Error::Unexpected(e.into()))?;
        let (listener, grpc_addr) =
            chat_common::grpc::bind(&config.grpc_addr).await.map_err(|e| Error::Unexpected(e.into()))?;
        let routes = chat_common::grpc::with_health_and_reflection(
            tonic::service::Routes::new(NotificationServiceServer::new(NotificationGrpc)),
            &["chat.notification.v1.NotificationService"],
        );
        tracing::info!(%grpc_addr, "notification listening");
        Ok(Self { listener, grpc_addr, routes, _nats: nats })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the gRPC server fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        chat_common::grpc::serve(self.routes, self.listener, shutdown).await.map_err(|e| Error::Unexpected(e.into()))
    }
}
