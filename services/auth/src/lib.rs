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

use chat_common::shutdown::CancellationToken;
use chat_proto::auth::v1::auth_service_server::AuthServiceServer;
use futures::StreamExt;
use tokio::net::TcpListener;

pub use chat_common::rate_limit::Rate;
pub use config::Config;
pub use error::{Error, RETRY_AFTER_METADATA};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The auth service, built and bound, ready to run.
pub struct App {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    routes: tonic::service::Routes,
    health: chat_common::grpc::Health,
    metrics: chat_common::metrics::Endpoint,
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
            .map_err(|e| Error::Unexpected(e.into()))?;
        MIGRATOR.run(&pool).await.map_err(|e| Error::Unexpected(e.into()))?;
        let store = store::Store::new(pool.clone());
        let keys = Arc::new(keys::Keyring::load(&store, &config).await?);
        let passwords = password::Hasher::new(config.hash_concurrency, config.hash_queue).await?;

        let unavailable = |e: &dyn std::fmt::Display| Error::Unavailable(format!("NATS: {e}"));
        let nats = chat_common::nats::connect(&config.nats_url, "auth").await.map_err(|e| unavailable(&e))?;
        let js = async_nats::jetstream::new(nats.clone());
        let ttl = Duration::from_secs(config.access_token_ttl_secs.unsigned_abs());
        let revoked =
            chat_common::nats::revoked_devices(&js, ttl, config.replicas).await.map_err(|e| unavailable(&e))?;
        let subscriber = nats.subscribe(chat_common::nats::KEYS_CHANGED_SUBJECT).await.map_err(|e| unavailable(&e))?;
        let key_changes = KeyChanges { subscriber, keys: keys.clone(), store: store.clone() };
        let dependencies = chat_common::grpc::Dependencies::new(nats.clone(), Some(pool));
        let announcer = grpc::Announcer { nats, revoked };
        let service = grpc::AuthGrpc::new(config.clone(), store, keys, passwords, announcer);

        let (listener, grpc_addr) =
            chat_common::grpc::bind(&config.grpc_addr).await.map_err(|e| Error::Unexpected(e.into()))?;
        let (routes, health) = chat_common::grpc::with_health_and_reflection(
            tonic::service::Routes::new(AuthServiceServer::with_interceptor(service, dependencies.database_gate())),
            &["chat.auth.v1.AuthService"],
            dependencies,
        );
        let metrics = chat_common::metrics::Endpoint::bind(&config.metrics_addr)
            .await
            .map_err(|e| Error::Unexpected(e.into()))?;
        tracing::info!(%grpc_addr, metrics_addr = %metrics.addr, "auth listening");
        Ok(Self { listener, grpc_addr, routes, health, metrics, key_changes })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr
    }

    /// Serves until `shutdown` is cancelled.
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
            self.key_changes.run(shutdown.clone()),
            self.health.watch(shutdown.clone()),
            self.metrics.serve(metrics::get().registry.clone(), shutdown.clone()),
            serve
        );
        served
    }
}
