//! The media service: the files and images people attach to messages. It
//! keeps their bytes in a directory or an S3-compatible bucket and what is
//! known about each (name, type from the bytes, size, owner) in its own
//! database, and streams both ways over gRPC. The gateway terminates the
//! client's HTTP and decides who may read what; see docs/architecture.md, "Media".

#![forbid(unsafe_code)]

mod blobs;
pub mod config;
mod grpc;
mod metrics;
mod records;
mod sniff;
mod upload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat_common::server::{Addresses, GrpcServer};
use chat_common::shutdown::CancellationToken;
use chat_proto::media::v1::media_service_server::MediaServiceServer;

pub use config::{Config, S3, Secret, Store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often unfinished uploads of stopped instances are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The media service, built and bound, ready to run.
pub struct App {
    server: GrpcServer,
    sweeper: Sweeper,
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
        let dependencies = chat_common::grpc::Dependencies::new(nats, Some(pool.clone()));
        let records = records::Records::new(pool);
        let limits = upload::Limits {
            max_file_bytes: config.max_file_bytes,
            quota_bytes: config.quota_bytes,
            idle: config.upload_idle,
            max: config.upload_max,
        };
        let sweeper = Sweeper { records: records.clone(), blobs: blobs.clone(), upload_max: config.upload_max };
        let service = grpc::MediaGrpc { records, blobs, limits };
        let server = GrpcServer::bind(
            "media",
            Addresses { grpc: &config.grpc_addr, metrics: &config.metrics_addr },
            tonic::service::Routes::new(MediaServiceServer::with_interceptor(service, dependencies.database_gate())),
            &["chat.media.v1.MediaService"],
            dependencies,
        )
        .await?;
        Ok(Self { server, sweeper })
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
            self.sweeper.run(shutdown.clone()),
            self.server.serve(metrics::get().registry.clone(), shutdown.clone())
        );
        Ok(served?)
    }
}

/// Removes uploads that an instance left `uploading` when it stopped: no
/// upload runs longer than `upload_max`, so one older than that (and a
/// minute) has no instance writing it.
struct Sweeper {
    records: records::Records,
    blobs: Arc<blobs::Blobs>,
    upload_max: Duration,
}

impl Sweeper {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "cannot sweep unfinished uploads");
            }
        }
    }

    async fn sweep(&self) -> anyhow::Result<()> {
        let cutoff = self.upload_max + Duration::from_secs(60);
        let before_ms = chat_common::time::now_ms() - i64::try_from(cutoff.as_millis()).unwrap_or(i64::MAX);
        for id in self.records.abandoned(before_ms, 100).await? {
            self.blobs.delete(&upload::file_key(&id)).await?;
            self.records.release(&id).await?;
            metrics::get().swept.inc();
            tracing::info!(attachment_id = %id, "an unfinished upload of a stopped instance removed");
        }
        Ok(())
    }
}
