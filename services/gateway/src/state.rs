//! What every request handler and socket of the gateway shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_common::shutdown::CancellationToken;
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;

use crate::config::Config;
use crate::delivery::Registry;
use crate::membership::MembershipCache;
use crate::revocation::Revocations;
use crate::tokens::Verifier;
use crate::typing::Typing;
use chat_common::conversation_log::ConversationLog;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: AuthServiceClient<Channel>,
    pub history: HistoryServiceClient<Channel>,
    pub nats: async_nats::Client,
    /// The CHAT stream, for catch-up reads.
    pub stream: async_nats::jetstream::stream::Stream,
    pub verifier: Arc<Verifier>,
    pub revocations: Arc<Revocations>,
    pub log: Arc<ConversationLog>,
    pub membership: Arc<MembershipCache>,
    pub registry: Arc<Registry>,
    pub typing: Arc<Typing>,
    pub shutdown: CancellationToken,
    /// Open sockets, so shutdown can wait for their 1001 closes.
    pub sockets: TaskTracker,
    next_socket_id: Arc<AtomicU64>,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        auth: AuthServiceClient<Channel>,
        history: HistoryServiceClient<Channel>,
        nats: async_nats::Client,
        stream: async_nats::jetstream::stream::Stream,
        log: ConversationLog,
        shutdown: CancellationToken,
    ) -> Self {
        let revocations = Arc::new(Revocations::new(config.access_token_ttl));
        let registry = Arc::new(Registry::default());
        let typing = Arc::new(Typing::new(nats.clone(), registry.clone()));
        let verifier = Verifier::new(auth.clone(), &config.jwt_issuer, &config.jwt_audience, revocations.clone());
        Self {
            revocations,
            membership: Arc::new(MembershipCache::new(history.clone())),
            verifier: Arc::new(verifier),
            config: Arc::new(config),
            auth,
            history,
            nats,
            stream,
            log: Arc::new(log),
            registry,
            typing,
            shutdown,
            sockets: TaskTracker::new(),
            next_socket_id: Arc::new(AtomicU64::new(1)),
        }
    }

    pub fn next_socket_id(&self) -> u64 {
        self.next_socket_id.fetch_add(1, Ordering::Relaxed)
    }
}
