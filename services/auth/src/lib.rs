//! The auth service: users, password hashes (argon2id), devices, refresh tokens
//! and the Ed25519 keys that sign access tokens. Every other service verifies
//! access tokens locally with the public keys published here (JWKS).

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
mod grpc;
mod keys;
mod password;
mod store;
mod validate;

use std::net::SocketAddr;

use chat_common::shutdown::CancellationToken;
use chat_proto::auth::v1::auth_service_server::AuthServiceServer;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The auth service, built and bound, ready to run.
pub struct App {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    routes: tonic::service::Routes,
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
        let store = store::Store::new(pool);
        let signer = keys::Signer::load_or_create(&store, &config).await?;
        let passwords = password::Hasher::new()?;
        let service = grpc::AuthGrpc::new(config.clone(), store, signer, passwords);

        let (listener, grpc_addr) = chat_common::grpc::bind(&config.grpc_addr)
            .await
            .map_err(|e| Error::Unexpected(e.into()))?;
        let routes = chat_common::grpc::with_health_and_reflection(
            tonic::service::Routes::new(AuthServiceServer::new(service)),
            &["chat.auth.v1.AuthService"],
        );
        tracing::info!(%grpc_addr, "auth listening");
        Ok(Self { listener, grpc_addr, routes })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the gRPC server fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        chat_common::grpc::serve(self.routes, self.listener, shutdown)
            .await
            .map_err(|e| Error::Unexpected(e.into()))
    }
}
