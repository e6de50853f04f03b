//! The auth service: users, password hashes (argon2id), devices, refresh tokens
//! and the Ed25519 keys that sign access tokens. Every other service verifies
//! access tokens locally with the public keys published here (JWKS).

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
mod grpc;
mod keys;
mod metrics;
mod password;
mod store;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat_common::server::{Addresses, GrpcServer};
use chat_common::shutdown::CancellationToken;
use chat_proto::auth::v1::auth_service_server::AuthServiceServer;
use futures::StreamExt;

pub use chat_common::rate_limit::Rate;
pub use config::Config;
pub use error::{Error, RETRY_AFTER_METADATA};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The auth service, built and bound, ready to run.
pub struct App {
    server: GrpcServer,
    key_changes: KeyChanges,
}

/// Reloads this instance's keys when any instance rotates or retires one.
struct KeyChanges {
    subscriber: async_nats::Subscriber,
    keys: Arc<keys::Keyring>,
    store: store::Store,
}

impl KeyChanges {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = self.subscriber.next() => {
                    if next.is_none() {
                        return;
                    }
                    if let Err(e) = self.keys.reload(&self.store).await {
                        tracing::error!(error = %e, "cannot reload signing keys");
                    }
                }
            }
        }
    }
}

impl App {
    /// Connects the database, applies migrations, loads (or creates) the signing
    /// key and binds the gRPC listener.
    ///
    /// # Errors
    /// When the database or the listener cannot be set up.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let pool = chat_common::db::connect(&config.database_url, config.database_max_connections)
            .await
            .context("connecting to the database")?;
        MIGRATOR.run(&pool).await.context("migrating the database")?;
        let store = store::Store::new(pool.clone());
        let keys = Arc::new(keys::Keyring::load(&store, &config).await?);
        let passwords = password::Hasher::new(config.hash_concurrency, config.hash_queue).await?;

        let nats = chat_common::nats::connect(&config.nats_url, "auth").await.context("connecting to NATS")?;
        let js = async_nats::jetstream::new(nats.clone());
        let ttl = Duration::from_secs(config.access_token_ttl_secs.unsigned_abs());
        let revoked = chat_common::nats::revoked_devices(&js, ttl, config.replicas)
            .await
            .context("opening the revoked devices bucket")?;
        let subscriber =
            nats.subscribe(chat_common::nats::KEYS_CHANGED_SUBJECT).await.context("subscribing to key changes")?;
        let key_changes = KeyChanges { subscriber, keys: keys.clone(), store: store.clone() };
        let dependencies = chat_common::grpc::Dependencies::new(nats.clone(), Some(pool));
        let announcer = grpc::Announcer { nats, revoked };
        let service = grpc::AuthGrpc::new(config.clone(), store, keys, passwords, announcer);

        let server = GrpcServer::bind(
            "auth",
            Addresses { grpc: &config.grpc_addr, metrics: &config.metrics_addr },
            tonic::service::Routes::new(AuthServiceServer::with_interceptor(service, dependencies.database_gate())),
            &["chat.auth.v1.AuthService"],
            dependencies,
        )
        .await?;
        Ok(Self { server, key_changes })
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
            self.key_changes.run(shutdown.clone()),
            self.server.serve(metrics::get().registry.clone(), shutdown.clone())
        );
        Ok(served?)
    }
}
