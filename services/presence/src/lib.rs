//! The presence service: which users have a connected device, built from the
//! device connect/disconnect events every gateway publishes on NATS.

#![forbid(unsafe_code)]

pub mod config;
mod grpc;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

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
    events: async_nats::Subscriber,
    state: Arc<state::Presence>,
}

impl App {
    /// Subscribes to device events and binds the gRPC listener.
    ///
    /// # Errors
    /// When NATS cannot be reached or the listener cannot be bound.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let nats =
            chat_common::nats::connect(&config.nats_url, "presence").await.map_err(|e| Error::Unexpected(e.into()))?;
        let events = nats
            .subscribe(chat_common::nats::PRESENCE_DEVICE_SUBJECT)
            .await
            .map_err(|e| Error::Unexpected(e.into()))?;
        let state = Arc::new(state::Presence::default());
        let (listener, grpc_addr) =
            chat_common::grpc::bind(&config.grpc_addr).await.map_err(|e| Error::Unexpected(e.into()))?;
        let routes = chat_common::grpc::with_health_and_reflection(
            tonic::service::Routes::new(PresenceServiceServer::new(grpc::PresenceGrpc::new(state.clone()))),
            &["chat.presence.v1.PresenceService"],
        );
        tracing::info!(%grpc_addr, "presence listening");
        Ok(Self { listener, grpc_addr, routes, events, state })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves gRPC and applies device events until `shutdown` is cancelled.
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
        let ((), served) = tokio::join!(state::apply_events(self.events, self.state, shutdown.clone()), serve);
        served
    }
}
