//! The media service: the files and images people attach to messages. It
//! keeps their bytes in a directory or an S3-compatible bucket and what is
//! known about each (name, type from the bytes, size, owner) in its own
//! database, and streams both ways over gRPC. The gateway terminates the
//! client's HTTP and decides who may read what; see docs/architecture.md, "Media".

#![forbid(unsafe_code)]

mod blobs;
mod cleanup;
pub mod config;
mod grpc;
mod images;
mod metrics;
mod records;
mod sniff;
mod upload;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use chat_common::server::{Addresses, GrpcServer};
use chat_common::shutdown::CancellationToken;
use chat_proto::media::v1::media_service_server::MediaServiceServer;

pub use config::{Config, S3, Secret, Store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The media service, built and bound, ready to run.
pub struct App {
    server: GrpcServer,
    cleanup: cleanup::Cleanup,
}

impl App {
    /// Connects the database (applying migrations), opens the store and
    /// binds the listeners.
    ///
    /// # Errors
    /// When the database, the store, NATS or a listener cannot be set up.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let pool = chat_common::db::connect(&config.database_url, config.database_max_connections)
            .await
            .context("connecting to the database")?;
        MIGRATOR.run(&pool).await.context("migrating the database")?;
        let blobs = Arc::new(blobs::Blobs::open(&config.store).context("opening the attachment store")?);
        let nats = chat_common::nats::connect(&config.nats_url, "media").await.context("connecting to NATS")?;
        let dependencies = chat_common::grpc::Dependencies::new(nats.clone(), Some(pool.clone()));
        let history = chat_common::grpc::history_client(
            chat_common::grpc::channel(&config.history_url).context("the history address")?,
        );
        let records = records::Records::new(pool);
        let limits = upload::Limits {
            max_file_bytes: config.max_file_bytes,
            quota_bytes: config.quota_bytes,
            idle: config.upload_idle,
            max: config.upload_max,
            images: upload::ImageLimits {
                max_bytes: config.max_image_bytes,
                max_pixels: config.max_image_pixels,
                permits: Arc::new(tokio::sync::Semaphore::new(config.image_workers)),
            },
        };
        let cleanup = cleanup::Cleanup {
            records: records.clone(),
            blobs: blobs.clone(),
            history,
            js: async_nats::jetstream::new(nats),
            upload_max: config.upload_max,
            unattached_ttl: config.unattached_ttl,
            send_window: config.send_window,
            every: config.clean_every,
        };
        let service = grpc::MediaGrpc { records, blobs, limits };
        let server = GrpcServer::bind(
            "media",
            Addresses { grpc: &config.grpc_addr, metrics: &config.metrics_addr },
            tonic::service::Routes::new(MediaServiceServer::with_interceptor(service, dependencies.database_gate())),
            &["chat.media.v1.MediaService"],
            dependencies,
        )
        .await?;
        Ok(Self { server, cleanup })
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
        // One task for both, so stopping or aborting it stops everything.
        let ((), served) = tokio::join!(
            self.cleanup.run(shutdown.clone()),
            self.server.serve(metrics::get().registry.clone(), shutdown.clone())
        );
        Ok(served?)
    }
}
