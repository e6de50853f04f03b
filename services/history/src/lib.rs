//! The history service: conversations, membership and the durable record of
//! every message. It consumes the CHAT stream with a durable consumer (shared
//! by all instances, so nothing is written twice), inserts in batches with
//! idempotent keys, and answers paging and catch-up over gRPC.

#![forbid(unsafe_code)]

pub mod config;
mod dead_letters;
mod edits;
pub mod error;
mod groups;
mod grpc;
mod ingest;
mod metrics;
mod safety;
mod store;
mod validate;

use std::net::SocketAddr;

use anyhow::Context;
use chat_common::server::{Addresses, GrpcServer};
use chat_common::shutdown::CancellationToken;
use chat_proto::history::v1::history_service_server::HistoryServiceServer;

pub use config::Config;
pub use error::Error;
pub use ingest::CONSUMER;

/// Shared migrations, then the ones only one database understands (search).
/// Each set tolerates the other's versions in the migrations table.
async fn migrate(pool: &sqlx::AnyPool, backend: chat_common::db::Backend) -> Result<(), sqlx::migrate::MigrateError> {
    let mut shared = sqlx::migrate!("./migrations");
    shared.set_ignore_missing(true);
    shared.run(pool).await?;
    let mut specific = match backend {
        chat_common::db::Backend::Sqlite => sqlx::migrate!("./migrations-sqlite"),
        chat_common::db::Backend::Postgres => sqlx::migrate!("./migrations-postgres"),
    };
    specific.set_ignore_missing(true);
    specific.run(pool).await
}

/// The history service, built and bound, ready to run.
pub struct App {
    server: GrpcServer,
    /// `None` for a read-only instance.
    ingest: Option<ingest::Ingest>,
    /// Who blocked whom (for unread counts), and the bucket it follows.
    blocks: (std::sync::Arc<chat_common::blocks::Blocks>, async_nats::jetstream::kv::Store),
}

impl App {
    /// Connects the database and NATS, applies migrations, ensures the CHAT
    /// stream and the history consumer exist, and binds the gRPC listener.
    ///
    /// # Errors
    /// When a dependency cannot be reached or the listener cannot be bound.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let pool = chat_common::db::connect(&config.database_url, config.database_max_connections)
            .await
            .context("connecting to the database")?;
        let backend = chat_common::db::Backend::of(&config.database_url).ok_or_else(|| {
            Error::InvalidArgument(format!("{} must be sqlite: or postgres://", config::DATABASE_URL.name))
        })?;
        migrate(&pool, backend).await.context("migrating the database")?;
        let nats = chat_common::nats::connect(&config.nats_url, "history").await.context("connecting to NATS")?;
        let dependencies = chat_common::grpc::Dependencies::new(nats.clone(), Some(pool.clone()));
        let js = async_nats::jetstream::new(nats);
        let blocks_bucket =
            chat_common::blocks::bucket(&js, config.stream.replicas).await.context("opening the blocks bucket")?;
        let blocks = std::sync::Arc::new(chat_common::blocks::Blocks::default());
        let store = store::Store::new(pool, backend).following_blocks(blocks.clone());
        let stream = chat_common::nats::chat_stream(&js, &config.stream).await.context("opening the CHAT stream")?;
        // The durable consumer exists either way: its ack floor is what catch-up trusts.
        let writers = match (config.ingest_writers, backend) {
            (0, chat_common::db::Backend::Postgres) => 2,
            (0, chat_common::db::Backend::Sqlite) => 1,
            (writers, _) => writers,
        };
        // The writers have connections of their own: SQLite's page cache is
        // per connection and starts cold on one that another has written
        // since, so a writer that takes the pool's next connection for every
        // batch reads back the pages it has just written.
        let writes = chat_common::db::connect(&config.database_url, writers as u32)
            .await
            .context("connecting the ingest writers to the database")?;
        let ingest = ingest::Ingest::new(
            stream.clone(),
            store::Store::new(writes, backend),
            config.ingest_batch,
            writers,
            config.ack_wait,
        )
        .await?;
        let ingest = config.consume.then_some(ingest);

        // History reads no live stream: its set of sent keys is never complete,
        // so each system message it writes asks its own store, the archive.
        let sent = std::sync::Arc::new(chat_common::sent_keys::SentKeys::with_capacity(0));
        let archive = std::sync::Arc::new(store.clone());
        let log = chat_common::conversation_log::ConversationLog::new(js.clone(), stream.clone(), sent, archive);
        let service = grpc::HistoryGrpc::new(store, js, stream, log, config.max_group_members);
        let server = GrpcServer::bind(
            "history",
            Addresses { grpc: &config.grpc_addr, metrics: &config.metrics_addr },
            tonic::service::Routes::new(HistoryServiceServer::with_interceptor(service, dependencies.database_gate())),
            &["chat.history.v1.HistoryService"],
            dependencies,
        )
        .await?;
        Ok(Self { server, ingest, blocks: (blocks, blocks_bucket) })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.server.grpc_addr()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.server.metrics_addr()
    }

    /// Serves gRPC and consumes the stream until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the gRPC server fails for good (the consumer retries).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        // Both run in this one task (not spawned), so stopping or aborting it
        // stops both, as killing the process would.
        let consumer = self.ingest.as_ref().map(ingest::Ingest::consumer);
        let lag = async {
            if let Some(consumer) = consumer {
                metrics::get().lag.watch(ingest::CONSUMER, consumer, shutdown.clone()).await;
            }
        };
        let ingest = async {
            if let Some(ingest) = self.ingest {
                Box::pin(ingest.run(shutdown.clone())).await;
            }
        };
        let serve = async {
            let served = self.server.serve(metrics::get().registry.clone(), shutdown.clone()).await;
            // A server that stops for good takes the consumer down with it.
            shutdown.cancel();
            served
        };
        let (blocks, bucket) = self.blocks;
        let ((), (), (), served) = tokio::join!(ingest, lag, blocks.follow(bucket, shutdown.clone()), serve);
        served.map_err(Error::from)
    }
}
