//! The gateway: terminates client WebSockets and the HTTP API of protocol v1.
//! It is stateless apart from its live sockets: messages are sequenced and
//! stored through JetStream (`chat_common::conversation_log`), delivered live by reading the
//! stream (`delivery`), and everything else is asked of auth and history.
//!
//! Its modules are layers: each uses only those before it, so no import runs
//! back up and none closes a circle (the `layers` test checks it). Layers,
//! lowest first: `metrics`, `wire` (JSON shapes shared by HTTP and WebSocket),
//! `error` (error codes), `protocol` (frames, close codes, bounds), `brakes`,
//! `config`, `outbox`, `membership` (the one member-list cache), `delivery`,
//! `revocation`, `tokens` (identity, credentials, verification), `typing`,
//! `presence`, `messaging`, `offline`, `state`, `ws`, `http`. This file
//! wires them together.

#![forbid(unsafe_code)]

mod brakes;
pub mod config;
mod delivery;
pub mod error;
mod http;
#[cfg(test)]
mod layers;
mod membership;
mod messaging;
mod metrics;
mod offline;
mod outbox;
mod presence;
mod protocol;
mod revocation;
mod state;
mod tokens;
mod typing;
mod wire;
mod ws;

/// The parsers of what a client sends, public for the fuzz targets in
/// `fuzz/` (they must take any input without panicking).
pub mod client_input {
    pub use crate::protocol::{ClientFrame, FrameError, parse as parse_frame};
    pub use crate::wire::{decode_cursor, encode_cursor};
}

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use chat_common::shutdown::CancellationToken;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::media::v1::media_service_client::MediaServiceClient;
use chat_proto::notification::v1::notification_service_client::NotificationServiceClient;
use chat_proto::presence::v1::presence_service_client::PresenceServiceClient;
use tokio::net::TcpListener;

pub use config::Config;

/// How long shutdown waits for sockets to say goodbye.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start-up waits for the blocks bucket to be read.
const BLOCKS_LOAD_LIMIT: Duration = Duration::from_secs(10);

/// Signing keys are refetched this often even without an announcement.
const KEYS_SAFETY_REFRESH: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The gateway, built and bound, ready to run.
pub struct App {
    listener: TcpListener,
    http_addr: SocketAddr,
    metrics: chat_common::metrics::Endpoint,
    state: state::AppState,
    stream_start: u64,
    /// Every key sent, filled from the stream (see `chat_common::sent_keys`).
    sent: std::sync::Arc<chat_common::sent_keys::SentKeys>,
    reconnections: chat_common::nats::Reconnections,
    revoked_bucket: async_nats::jetstream::kv::Store,
    key_changes: async_nats::Subscriber,
    typing_events: async_nats::Subscriber,
    presence_users: async_nats::jetstream::kv::Store,
}

impl App {
    /// Connects NATS, ensures the CHAT stream, prepares gRPC clients (they
    /// connect lazily, so start order does not matter) and binds the listener.
    ///
    /// # Errors
    /// When NATS cannot be reached or the listener cannot be bound.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, Error> {
        let (nats, reconnections) =
            chat_common::nats::connect_following(&config.nats_url, "gateway").await.context("connecting to NATS")?;
        let mut js = async_nats::jetstream::new(nats.clone());
        // No store request outlasts a send's own deadline.
        js.set_timeout(messaging::SEND_TIMEOUT);
        let stream = chat_common::nats::chat_stream(&js, &config.stream).await.context("opening the CHAT stream")?;
        let stream_start = stream.cached_info().state.last_sequence;
        let channel = |name: &str, url: &str| {
            chat_common::grpc::channel(url).with_context(|| format!("the {name} address {url:?}"))
        };
        let services = state::Services {
            auth: AuthServiceClient::new(channel("auth", &config.auth_url)?),
            history: chat_common::grpc::history_client(channel("history", &config.history_url)?),
            presence: PresenceServiceClient::new(channel("presence", &config.presence_url)?),
            notification: NotificationServiceClient::new(channel("notification", &config.notification_url)?),
            media: MediaServiceClient::new(channel("media", &config.media_url)?),
        };
        let revoked_bucket = chat_common::nats::revoked_devices(&js, config.access_token_ttl, config.stream.replicas)
            .await
            .context("opening the revoked devices bucket")?;
        let key_changes =
            nats.subscribe(chat_common::nats::KEYS_CHANGED_SUBJECT).await.context("subscribing to key changes")?;
        let typing_events =
            nats.subscribe(chat_common::nats::TYPING_SUBJECTS).await.context("subscribing to typing events")?;
        let sent =
            std::sync::Arc::new(chat_common::sent_keys::SentKeys::for_stream(stream.cached_info().state.messages));
        let presence_buckets = chat_common::nats::presence::buckets(&js, config.stream.replicas)
            .await
            .context("opening the presence buckets")?;
        let presence_users = presence_buckets.users.clone();
        let presence = presence::PresenceReporter::new(js.clone(), &presence_buckets, config.presence_ttl);
        let archive = std::sync::Arc::new(messaging::HistoryArchive(services.history.clone()));
        let js_for_blocks = js.clone();
        let log = chat_common::conversation_log::ConversationLog::new(js, stream.clone(), sent.clone(), archive);
        let (listener, http_addr) = chat_common::grpc::bind(&config.http_addr)
            .await
            .with_context(|| format!("binding the HTTP listener on {}", config.http_addr))?;
        let metrics = chat_common::metrics::Endpoint::bind(&config.metrics_addr)
            .await
            .with_context(|| format!("binding the metrics listener on {}", config.metrics_addr))?;
        let blocks_bucket = chat_common::blocks::bucket(&js_for_blocks, config.stream.replicas)
            .await
            .context("opening the blocks bucket")?;
        let newest_block = chat_common::blocks::newest_revision(&blocks_bucket).await;
        let nats = state::Nats { client: nats, stream, blocks_bucket };
        let state = state::AppState::new(config, services, nats, log, presence, shutdown);
        tokio::spawn(state.blocks.clone().follow(state.blocks_bucket.clone(), state.shutdown.clone()));
        // Blocks are known before the first frame is delivered.
        if !state.blocks.caught_up_to(newest_block, BLOCKS_LOAD_LIMIT).await {
            tracing::warn!("the blocks were not all loaded in time; serving while they arrive");
        }
        // Revocations are known before the first request is served.
        state
            .revocations
            .load(&revoked_bucket)
            .await
            .map_err(anyhow::Error::from_boxed)
            .context("loading the revoked devices")?;
        tracing::info!(%http_addr, "gateway listening");
        Ok(Self {
            listener,
            http_addr,
            metrics,
            state,
            stream_start,
            sent,
            reconnections,
            revoked_bucket,
            key_changes,
            typing_events,
            presence_users,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr
    }

    /// Serves until the shutdown token given to `build` is cancelled, then
    /// closes every socket with 1001 and waits for them (bounded).
    ///
    /// # Errors
    /// When the HTTP server fails.
    pub async fn run(self) -> Result<(), Error> {
        let state = self.state;
        let shutdown = state.shutdown.clone();
        let dispatcher = tokio::spawn(delivery::run_dispatcher(
            state.stream.clone(),
            self.stream_start,
            self.reconnections,
            state.registry.clone(),
            self.sent.clone(),
            shutdown.clone(),
        ));
        // The keys of what was sent before the dispatcher's start; until they
        // are in, sends ask history whether they are re-sends.
        let sent_keys = tokio::spawn(chat_common::sent_keys::load_until_done(
            state.stream.clone(),
            self.stream_start,
            self.sent,
            shutdown.clone(),
        ));
        let revocations = tokio::spawn(revocation::watch(
            self.revoked_bucket,
            state.revocations.clone(),
            state.registry.clone(),
            shutdown.clone(),
        ));
        let key_changes = tokio::spawn(tokens::watch_key_changes(
            self.key_changes,
            state.verifier.clone(),
            state.registry.clone(),
            KEYS_SAFETY_REFRESH,
            shutdown.clone(),
        ));
        let typing = tokio::spawn(state.typing.clone().run(self.typing_events, shutdown.clone()));
        let announcements =
            tokio::spawn(presence::follow_announcements(self.presence_users, state.registry.clone(), shutdown.clone()));
        // The heartbeat outlives the sockets: it stops (and removes this
        // gateway from presence) only after they have closed.
        let heartbeat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(state.presence.clone().heartbeat(heartbeat_stop.clone()));
        let metrics = tokio::spawn(self.metrics.serve(metrics::get().registry.clone(), shutdown.clone()));
        let sockets = state.sockets.clone();
        let header_timeout = state.config.header_timeout;
        http::serve(self.listener, http::router(state), header_timeout, shutdown.clone()).await;
        shutdown.cancel();
        sockets.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, sockets.wait()).await.is_err() {
            tracing::warn!("sockets did not close in time");
        }
        heartbeat_stop.cancel();
        let _ =
            tokio::join!(dispatcher, sent_keys, revocations, key_changes, typing, announcements, heartbeat, metrics);
        Ok(())
    }
}
