//! The `chat.presence.v1.PresenceService` gRPC API. Every answer is filtered
//! by the caller's contacts (from history): nobody learns the presence of a
//! user they share no conversation with.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_common::grpc::Channel;
use chat_proto::history::v1::ListContactsRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::presence::v1::{
    GetPresenceRequest, GetPresenceResponse, UserPresence, WatchPresenceRequest,
    presence_service_server::PresenceService,
};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};

use crate::tracker::Tracker;

const MAX_USERS_PER_CALL: usize = 500;
/// A watch re-reads the caller's contacts at most this often.
const CONTACTS_FRESH_FOR: Duration = Duration::from_secs(5);

pub struct PresenceGrpc {
    tracker: Arc<Tracker>,
    history: HistoryServiceClient<Channel>,
}

impl PresenceGrpc {
    pub fn new(tracker: Arc<Tracker>, history: HistoryServiceClient<Channel>) -> Self {
        Self { tracker, history }
    }
}

/// Checks a request's ids: a UUID caller and 1 to 500 UUID users (duplicates dropped).
fn validate(caller_id: &str, user_ids: Vec<String>) -> Result<Vec<String>, Status> {
    if uuid::Uuid::parse_str(caller_id).is_err() {
        return Err(Status::invalid_argument("caller_id must be a UUID"));
    }
    if user_ids.is_empty() || user_ids.len() > MAX_USERS_PER_CALL {
        return Err(Status::invalid_argument(format!("user_ids must name 1 to {MAX_USERS_PER_CALL} users")));
    }
    if user_ids.iter().any(|id| uuid::Uuid::parse_str(id).is_err()) {
        return Err(Status::invalid_argument("user_ids must be UUIDs"));
    }
    let mut seen = HashSet::new();
    Ok(user_ids.into_iter().filter(|id| seen.insert(id.clone())).collect())
}

/// Whom `caller_id` may see: everyone sharing a conversation, and themself.
async fn contacts(history: &HistoryServiceClient<Channel>, caller_id: &str) -> Result<HashSet<String>, Status> {
    let reply = history.clone().list_contacts(ListContactsRequest { user_id: caller_id.to_owned() }).await.map_err(
        |status| {
            tracing::warn!(code = ?status.code(), "cannot read contacts");
            Status::unavailable("contacts unavailable")
        },
    )?;
    let mut contacts: HashSet<String> = reply.into_inner().user_ids.into_iter().collect();
    contacts.insert(caller_id.to_owned());
    Ok(contacts)
}

type PresenceStream = Pin<Box<dyn Stream<Item = Result<UserPresence, Status>> + Send>>;

#[tonic::async_trait]
impl PresenceService for PresenceGrpc {
    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        let req = request.into_inner();
        let user_ids = validate(&req.caller_id, req.user_ids)?;
        let visible = contacts(&self.history, &req.caller_id).await?;
        let view = self.tracker.view();
        let presences = user_ids.iter().filter(|id| visible.contains(*id)).map(|id| view.presence(id)).collect();
        Ok(Response::new(GetPresenceResponse { presences }))
    }

    type WatchPresenceStream = PresenceStream;

    async fn watch_presence(
        &self,
        request: Request<WatchPresenceRequest>,
    ) -> Result<Response<Self::WatchPresenceStream>, Status> {
        let req = request.into_inner();
        let watched: HashSet<String> = validate(&req.caller_id, req.user_ids)?.into_iter().collect();
        let caller_id = req.caller_id;
        // Subscribe before reading the current state, so no change falls between.
        let mut changes = self.tracker.subscribe();
        let mut visible = contacts(&self.history, &caller_id).await?;
        let mut checked_at = Instant::now();
        let current: Vec<UserPresence> = {
            let view = self.tracker.view();
            watched.iter().filter(|id| visible.contains(*id)).map(|id| view.presence(id)).collect()
        };
        let tracker = self.tracker.clone();
        let history = self.history.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for presence in current {
                if tx.send(Ok(presence)).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    () = tx.closed() => return,
                    next = changes.recv() => next,
                };
                let user_id = match next {
                    Ok(user_id) => user_id,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ =
                            tx.send(Err(Status::resource_exhausted("fell behind presence changes; watch again"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !watched.contains(&user_id) {
                    continue;
                }
                if checked_at.elapsed() >= CONTACTS_FRESH_FOR {
                    match contacts(&history, &caller_id).await {
                        Ok(fresh) => visible = fresh,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                    checked_at = Instant::now();
                }
                if visible.contains(&user_id) {
                    let presence = tracker.view().presence(&user_id);
                    if tx.send(Ok(presence)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}
