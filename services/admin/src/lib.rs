//! The admin service: the operators' API. Operators find and deactivate
//! and erase users, review reports and remove messages and members over gRPC,
//! authenticated with operator tokens (never a user's), each action recorded
//! in an audit log kept in admin's own database. Admin owns nothing else:
//! each action is carried out by the service that owns what it changes. See
//! docs/operations.md, "Administration".

#![forbid(unsafe_code)]

mod audit;
pub mod config;
mod export;
mod grpc;
mod metrics;
pub mod operators;

use std::net::SocketAddr;

use anyhow::Context;
use chat_common::server::{Addresses, GrpcServer};
use chat_common::shutdown::CancellationToken;
use chat_proto::admin::v1::admin_service_server::AdminServiceServer;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::media::v1::media_service_client::MediaServiceClient;
use chat_proto::notification::v1::notification_service_client::NotificationServiceClient;

pub use config::Config;
pub use operators::Operators;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The admin service, built and bound, ready to run.
pub struct App {
    server: GrpcServer,
}

impl App {
    /// Connects the database (applying migrations) and NATS, and binds the listeners.
    ///
    /// # Errors
    /// When the database, NATS or a listener cannot be set up.
    pub async fn build(config: Config) -> Result<Self, Error> {
        if config.operators.names().is_empty() {
            tracing::warn!("ADMIN_OPERATORS is empty: every admin call will be refused");
        }
        let pool = chat_common::db::connect(&config.database_url, config.database_max_connections)
            .await
            .context("connecting to the database")?;
        MIGRATOR.run(&pool).await.context("migrating the database")?;
        let nats = chat_common::nats::connect(&config.nats_url, "admin").await.context("connecting to NATS")?;
        let dependencies = chat_common::grpc::Dependencies::new(nats.clone(), Some(pool.clone()));
        let channel = |name: &str, url: &str| {
            chat_common::grpc::channel(url).with_context(|| format!("the {name} address {url:?}"))
        };
        let auth = AuthServiceClient::new(channel("auth", &config.auth_url)?);
        let history = chat_common::grpc::history_client(channel("history", &config.history_url)?);
        let js = async_nats::jetstream::new(nats);
        let exporter = export::Exporter {
            auth: auth.clone(),
            history: history.clone(),
            notification: NotificationServiceClient::new(channel("notification", &config.notification_url)?),
            js: js.clone(),
        };
        let service = grpc::AdminGrpc {
            audit: std::sync::Arc::new(audit::AuditLog::new(pool)),
            exporter,
            auth,
            history,
            media: MediaServiceClient::new(channel("media", &config.media_url)?),
            js,
            export_stall: config.export_stall,
        };
        let operators = config.operators.clone();
        let server = GrpcServer::bind(
            "admin",
            Addresses { grpc: &config.grpc_addr, metrics: &config.metrics_addr },
            tonic::service::Routes::new(AdminServiceServer::with_interceptor(service, move |request| {
                operators.check(request)
            })),
            &["chat.admin.v1.AdminService"],
            dependencies,
        )
        .await?;
        Ok(Self { server })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.server.grpc_addr()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.server.metrics_addr()
    }

    /// Serves until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the gRPC server fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        Ok(self.server.serve(metrics::get().registry.clone(), shutdown).await?)
    }
}
