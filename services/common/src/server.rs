//! The listeners of a gRPC service, set up and served the same way in each:
//! the gRPC listener and the metrics listener bound in `build` (so port 0
//! works and the bound ports are known), `grpc.health.v1` following the
//! service's dependencies, reflection, and serving until shutdown.
//!
//! A service builds its routes and [`Dependencies`], calls [`GrpcServer::bind`]
//! at the end of its `build`, and joins [`GrpcServer::serve`] with its own
//! tasks in `run`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::grpc::{Dependencies, Health};
use crate::metrics::{Endpoint, Registry};

/// A gRPC service's listeners, bound, with health and reflection added.
pub struct GrpcServer {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    routes: Routes,
    health: Health,
    metrics: Endpoint,
}

/// Where a [`GrpcServer`] listens: its `<SERVICE>_GRPC_ADDR` and `<SERVICE>_METRICS_ADDR`.
#[derive(Debug, Clone, Copy)]
pub struct Addresses<'a> {
    pub grpc: &'a str,
    pub metrics: &'a str,
}

impl GrpcServer {
    /// Binds both listeners and adds health (following `dependencies`) and
    /// reflection (advertising `grpc_services`) to `routes`. `service` names
    /// the service in the log line that says where it listens.
    ///
    /// # Errors
    /// When an address cannot be bound.
    pub async fn bind(
        service: &'static str,
        addresses: Addresses<'_>,
        routes: Routes,
        grpc_services: &[&str],
        dependencies: Dependencies,
    ) -> anyhow::Result<Self> {
        let (listener, grpc_addr) = crate::grpc::bind(addresses.grpc)
            .await
            .with_context(|| format!("binding the gRPC listener on {}", addresses.grpc))?;
        let (routes, health) = crate::grpc::with_health_and_reflection(routes, grpc_services, dependencies);
        let metrics = Endpoint::bind(addresses.metrics)
            .await
            .with_context(|| format!("binding the metrics listener on {}", addresses.metrics))?;
        tracing::info!(%grpc_addr, metrics_addr = %metrics.addr, "{service} listening");
        Ok(Self { listener, grpc_addr, routes, health, metrics })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr
    }

    /// Serves gRPC, health and `registry`'s metrics until `shutdown` is
    /// cancelled; a gRPC server that stops for any reason cancels `shutdown`,
    /// so the service's other tasks stop with it. Runs in the caller's task
    /// (nothing is spawned), so aborting that task stops everything.
    ///
    /// # Errors
    /// When the gRPC server fails.
    pub async fn serve(self, registry: Arc<Registry>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grpc = async {
            let served = crate::grpc::serve(self.routes, self.listener, shutdown.clone()).await;
            shutdown.cancel();
            served.context("serving gRPC")
        };
        let ((), (), served) =
            tokio::join!(self.health.watch(shutdown.clone()), self.metrics.serve(registry, shutdown.clone()), grpc);
        served
    }
}
