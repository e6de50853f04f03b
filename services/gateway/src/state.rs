//! What every request handler and socket of the gateway shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_common::blocks::Blocks;
use chat_common::grpc::Channel;
use chat_common::shutdown::CancellationToken;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::media::v1::media_service_client::MediaServiceClient;
use chat_proto::notification::v1::notification_service_client::NotificationServiceClient;
use chat_proto::presence::v1::presence_service_client::PresenceServiceClient;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::Registry;
use crate::membership::MembershipCache;
use crate::presence::PresenceReporter;
use crate::revocation::Revocations;
use crate::tokens::Verifier;
use crate::typing::Typing;
use chat_common::conversation_log::ConversationLog;

/// gRPC clients of the other services (they connect lazily).
pub struct Services {
    pub auth: AuthServiceClient<Channel>,
    pub history: HistoryServiceClient<Channel>,
    pub presence: PresenceServiceClient<Channel>,
    pub notification: NotificationServiceClient<Channel>,
    pub media: MediaServiceClient<Channel>,
}

/// What the gateway reads and writes in NATS besides sending.
pub struct Nats {
    pub client: async_nats::Client,
    /// The CHAT stream, for catch-up reads.
    pub stream: async_nats::jetstream::stream::Stream,
    pub blocks_bucket: async_nats::jetstream::kv::Store,
}

/// The gateway's shared state. Cloned for every request and socket, so a
/// clone is one reference count (the clients and the stream description
/// inside take kilobytes).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub auth: AuthServiceClient<Channel>,
    pub history: HistoryServiceClient<Channel>,
    pub presence_api: PresenceServiceClient<Channel>,
    pub notification: NotificationServiceClient<Channel>,
    pub media: MediaServiceClient<Channel>,
    pub nats: async_nats::Client,
    /// The CHAT stream, for catch-up reads.
    pub stream: async_nats::jetstream::stream::Stream,
    pub verifier: Arc<Verifier>,
    pub revocations: Arc<Revocations>,
    pub log: Arc<ConversationLog>,
    pub membership: Arc<MembershipCache>,
    pub registry: Arc<Registry>,
    pub brakes: crate::brakes::Brakes,
    pub typing: Arc<Typing>,
    pub presence: Arc<PresenceReporter>,
    /// Who blocked whom, followed from `blocks_bucket`, which this gateway
    /// writes its users' blocks to.
    pub blocks: Arc<Blocks>,
    pub blocks_bucket: async_nats::jetstream::kv::Store,
    pub shutdown: CancellationToken,
    /// Open sockets, so shutdown can wait for their 1001 closes.
    pub sockets: TaskTracker,
    next_socket_id: AtomicU64,
}

impl AppState {
    pub fn new(
        config: Config,
        services: Services,
        nats: Nats,
        log: ConversationLog,
        presence: PresenceReporter,
        shutdown: CancellationToken,
    ) -> Self {
        let Services { auth, history, presence: presence_api, notification, media } = services;
        let Nats { client: nats, stream, blocks_bucket } = nats;
        let revocations = Arc::new(Revocations::new(config.access_token_ttl));
        let membership = Arc::new(MembershipCache::new(history.clone()));
        let blocks = Arc::new(Blocks::default());
        let registry = Arc::new(Registry::new(membership.clone(), blocks.clone()));
        let typing = Arc::new(Typing::new(nats.clone(), registry.clone()));
        let verifier = Verifier::new(auth.clone(), &config.jwt_issuer, &config.jwt_audience, revocations.clone());
        let brakes = crate::brakes::Brakes::new(
            config.send_rate_per_user,
            config.conversation_rate_per_user,
            config.safety_rate_per_user,
        );
        Self(Arc::new(Shared {
            brakes,
            revocations,
            membership,
            verifier: Arc::new(verifier),
            config: Arc::new(config),
            auth,
            history,
            nats,
            stream,
            log: Arc::new(log),
            registry,
            typing,
            presence: Arc::new(presence),
            presence_api,
            blocks,
            blocks_bucket,
            notification,
            media,
            shutdown,
            sockets: TaskTracker::new(),
            next_socket_id: AtomicU64::new(1),
        }))
    }
}

impl Shared {
    pub fn next_socket_id(&self) -> u64 {
        self.next_socket_id.fetch_add(1, Ordering::Relaxed)
    }
}
