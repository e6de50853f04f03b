//! The notification service: a queue of deliveries for users with no device
//! connected, push notifications (Web Push and signed webhooks) when they
//! help, and the badge counts and subscriptions behind them. All its state is
//! in JetStream, so instances share it and restarts lose nothing.

#![forbid(unsafe_code)]

mod buckets;
pub mod config;
mod endpoint;
mod grpc;
mod index;
mod intake;
mod metrics;
mod pending;
mod pusher;
mod revocations;
mod send;
mod subscriptions;
mod webpush;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_nats::jetstream::consumer::PullConsumer;
use chat_common::server::{Addresses, GrpcServer};
use chat_common::shutdown::CancellationToken;
use chat_common::sockets::SocketIndex;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::notification::v1::DeadLetter;
use chat_proto::notification::v1::notification_service_server::NotificationServiceServer;

pub use config::Config;
pub use send::webhook_signature;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// `N` random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system has randomness");
    bytes
}

/// The notification service, built and bound, ready to run.
/// How long the intake waits for the blocks bucket to be read at start.
const BLOCKS_LOAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct App {
    server: GrpcServer,
    presence: chat_common::nats::presence::Buckets,
    buckets: buckets::Buckets,
    sockets: Arc<Mutex<SocketIndex>>,
    pending: Arc<pending::Pending>,
    subscriptions: Arc<subscriptions::Subscriptions>,
    dead: Arc<index::UserIndex<DeadLetter>>,
    intake: intake::Intake,
    pusher: Arc<pusher::Pusher>,
    pusher_consumer: PullConsumer,
    js: async_nats::jetstream::Context,
    /// Who blocked whom, the bucket it follows, and the bucket's newest
    /// revision at start (the intake waits until it is in).
    blocks: (Arc<chat_common::blocks::Blocks>, async_nats::jetstream::kv::Store, u64),
}

impl App {
    /// Opens the streams, buckets and consumers, loads (or creates) the VAPID
    /// key and binds the gRPC listener.
    ///
    /// # Errors
    /// When NATS cannot be reached or the listener cannot be bound.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let nats = chat_common::nats::connect(&config.nats_url, "notification").await.context("connecting to NATS")?;
        let dependencies = chat_common::grpc::Dependencies::new(nats.clone(), None);
        let js = async_nats::jetstream::new(nats);
        let replicas = config.stream.replicas;
        let chat = chat_common::nats::chat_stream(&js, &config.stream).await.context("opening the CHAT stream")?;
        let presence =
            chat_common::nats::presence::buckets(&js, replicas).await.context("opening the presence buckets")?;
        let buckets = buckets::Buckets::open(&js, replicas).await.context("opening the notification buckets")?;
        let vapid = webpush::Vapid::load_or_create(&buckets.keys, &config.vapid_subject)
            .await
            .context("loading the VAPID key")?;
        let policy = endpoint::EndpointPolicy {
            allow_http: config.allow_http_endpoints,
            allow_private: config.allow_private_endpoints,
        };
        let sender = Arc::new(send::Sender::new(vapid, config.push_timeout, policy));
        let history = chat_common::grpc::history_client(
            chat_common::grpc::channel(&config.history_url).context("the history address")?,
        );
        let auth = AuthServiceClient::new(chat_common::grpc::channel(&config.auth_url).context("the auth address")?);

        let blocks_bucket = chat_common::blocks::bucket(&js, replicas).await.context("opening the blocks bucket")?;
        let blocks = Arc::new(chat_common::blocks::Blocks::default());
        let newest_block = chat_common::blocks::newest_revision(&blocks_bucket).await;
        let sockets = Arc::new(Mutex::new(SocketIndex::default()));
        let pending = Arc::new(pending::Pending::new(js.clone(), buckets.pending.clone()));
        let subscriptions = Arc::new(subscriptions::Subscriptions::new(buckets.subscriptions.clone(), policy));
        let dead = Arc::new(index::UserIndex::new());
        let intake = intake::Intake::new(
            &chat,
            config.intake_attempts,
            buckets.dead_events.clone(),
            pending.clone(),
            sockets.clone(),
            history.clone(),
            blocks.clone(),
        )
        .await
        .map_err(anyhow::Error::from_boxed)
        .context("setting up the intake of the CHAT stream")?;
        let settings = pusher::Settings {
            coalesce: config.coalesce,
            attempts: config.push_attempts.max(1),
            retry_base: config.retry_base,
            ack_wait: config.ack_wait,
        };
        let pusher = Arc::new(pusher::Pusher::new(
            pending.clone(),
            &buckets,
            subscriptions.clone(),
            sockets.clone(),
            sender.clone(),
            auth,
            history.clone(),
            settings,
        ));
        let pusher_consumer =
            pusher.consumer(&js).await.map_err(anyhow::Error::from_boxed).context("opening the pusher's consumer")?;

        let api = grpc::NotificationGrpc {
            pending: pending.clone(),
            subscriptions: subscriptions.clone(),
            dead: dead.clone(),
            sender,
            history,
        };
        let server = GrpcServer::bind(
            "notification",
            Addresses { grpc: &config.grpc_addr, metrics: &config.metrics_addr },
            tonic::service::Routes::new(NotificationServiceServer::new(api)),
            &["chat.notification.v1.NotificationService"],
            dependencies,
        )
        .await?;
        Ok(Self {
            server,
            presence,
            buckets,
            sockets,
            pending,
            subscriptions,
            dead,
            intake,
            pusher,
            pusher_consumer,
            js,
            blocks: (blocks, blocks_bucket, newest_block),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.server.grpc_addr()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.server.metrics_addr()
    }

    /// Serves gRPC, keeps the queue and pushes until `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the gRPC server fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        // Everything in this one task, so stopping or aborting it stops everything.
        let lag = &metrics::get().lag;
        let (blocks, blocks_bucket, newest_block) = self.blocks;
        let (.., served) = tokio::join!(
            lag.watch(intake::CONSUMER, self.intake.consumer(), shutdown.clone()),
            lag.watch(pusher::CONSUMER, self.pusher_consumer.clone(), shutdown.clone()),
            chat_common::sockets::follow(&self.presence, &self.sockets, &shutdown),
            self.pending.index.clone().follow(self.buckets.pending.clone(), shutdown.clone()),
            self.subscriptions.index.clone().follow(self.buckets.subscriptions.clone(), shutdown.clone()),
            revocations::follow(self.js.clone(), self.subscriptions.clone(), shutdown.clone()),
            self.dead.clone().follow(self.buckets.dead.clone(), shutdown.clone()),
            blocks.clone().follow(blocks_bucket, shutdown.clone()),
            // Boxed: the intake's future is the largest here. It starts once
            // the blocks are in, so nothing is queued from a blocked sender.
            Box::pin(async {
                if !blocks.caught_up_to(newest_block, BLOCKS_LOAD_LIMIT).await {
                    tracing::warn!("the blocks were not all loaded in time; reading the stream while they arrive");
                }
                self.intake.run(shutdown.clone()).await;
            }),
            self.pusher.run(self.pusher_consumer, shutdown.clone()),
            self.server.serve(metrics::get().registry.clone(), shutdown.clone()),
        );
        Ok(served?)
    }
}
