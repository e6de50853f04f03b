//! The `chat.notification.v1.NotificationService` gRPC API.

use std::collections::HashMap;
use std::sync::Arc;

use chat_common::grpc::Channel;
use chat_proto::history::v1::ListConversationsRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::notification::v1::notification_service_server::NotificationService;
use chat_proto::notification::v1::{
    AckDeliveredRequest, AckDeliveredResponse, Badge, DeadLetter, GetBadgesRequest, GetBadgesResponse,
    GetVapidPublicKeyRequest, GetVapidPublicKeyResponse, ListDeadLettersRequest, ListDeadLettersResponse,
    ListPendingRequest, ListPendingResponse, ListPushSubscriptionsRequest, ListPushSubscriptionsResponse,
    PushSubscription, RegisterPushSubscriptionRequest, RemovePushSubscriptionRequest, RemovePushSubscriptionResponse,
};
use tonic::{Request, Response, Status};

use crate::index::UserIndex;
use crate::pending::Pending;
use crate::send::Sender;
use crate::subscriptions::Subscriptions;

const MAX_DEAD_LETTERS: u32 = 500;

pub struct NotificationGrpc {
    pub pending: Arc<Pending>,
    pub subscriptions: Arc<Subscriptions>,
    pub dead: Arc<UserIndex<DeadLetter>>,
    pub sender: Arc<Sender>,
    pub history: HistoryServiceClient<Channel>,
}

fn user_id(value: &str) -> Result<&str, Status> {
    uuid::Uuid::parse_str(value).map(|_| value).map_err(|_| Status::invalid_argument("user_id must be a UUID"))
}

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    async fn list_pending(
        &self,
        request: Request<ListPendingRequest>,
    ) -> Result<Response<ListPendingResponse>, Status> {
        let req = request.into_inner();
        let user_id = user_id(&req.user_id)?;
        if req.count_only {
            return Ok(Response::new(ListPendingResponse {
                deliveries: Vec::new(),
                count: self.pending.count(user_id),
            }));
        }
        let deliveries: Vec<_> = self.pending.of(user_id).into_iter().map(|(_, d)| d).collect();
        Ok(Response::new(ListPendingResponse { count: deliveries.len() as u32, deliveries }))
    }

    async fn ack_delivered(
        &self,
        request: Request<AckDeliveredRequest>,
    ) -> Result<Response<AckDeliveredResponse>, Status> {
        let req = request.into_inner();
        let through = req.through_stream_seq;
        let acknowledged = self.pending.remove(user_id(&req.user_id)?, |d| d.stream_seq <= through).await;
        Ok(Response::new(AckDeliveredResponse { acknowledged: acknowledged as u32 }))
    }

    async fn get_badges(&self, request: Request<GetBadgesRequest>) -> Result<Response<GetBadgesResponse>, Status> {
        let req = request.into_inner();
        let user_id = user_id(&req.user_id)?.to_owned();
        let mut pending: HashMap<String, u32> = HashMap::new();
        for (_, delivery) in self.pending.of(&user_id) {
            *pending.entry(delivery.conversation_id).or_default() += 1;
        }
        let conversations = self
            .history
            .clone()
            .list_conversations(ListConversationsRequest { user_id, ..Default::default() })
            .await?
            .into_inner()
            .conversations;
        let badges: Vec<Badge> = conversations
            .into_iter()
            .map(|c| Badge {
                pending: pending.get(&c.conversation_id).copied().unwrap_or_default(),
                conversation_id: c.conversation_id,
                unread_count: c.unread_count,
            })
            .collect();
        let total_unread = badges.iter().map(|b| b.unread_count).sum();
        Ok(Response::new(GetBadgesResponse { badges, total_unread }))
    }

    async fn register_push_subscription(
        &self,
        request: Request<RegisterPushSubscriptionRequest>,
    ) -> Result<Response<PushSubscription>, Status> {
        Ok(Response::new(self.subscriptions.register(request.into_inner()).await?))
    }

    async fn remove_push_subscription(
        &self,
        request: Request<RemovePushSubscriptionRequest>,
    ) -> Result<Response<RemovePushSubscriptionResponse>, Status> {
        let req = request.into_inner();
        self.subscriptions.remove(&req.user_id, &req.subscription_id).await?;
        Ok(Response::new(RemovePushSubscriptionResponse {}))
    }

    async fn list_push_subscriptions(
        &self,
        request: Request<ListPushSubscriptionsRequest>,
    ) -> Result<Response<ListPushSubscriptionsResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(ListPushSubscriptionsResponse {
            subscriptions: self.subscriptions.list(user_id(&req.user_id)?),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 100,
            n if n <= MAX_DEAD_LETTERS => n,
            _ => return Err(Status::invalid_argument(format!("limit must be 1 to {MAX_DEAD_LETTERS}"))),
        };
        let items = if req.user_id.is_empty() { self.dead.all() } else { self.dead.of(user_id(&req.user_id)?) };
        let mut dead_letters: Vec<DeadLetter> = items.into_iter().map(|(_, _, letter)| letter).collect();
        dead_letters.sort_by_key(|l| std::cmp::Reverse(l.failed_at_ms));
        dead_letters.truncate(limit as usize);
        Ok(Response::new(ListDeadLettersResponse { dead_letters }))
    }

    async fn get_vapid_public_key(
        &self,
        _request: Request<GetVapidPublicKeyRequest>,
    ) -> Result<Response<GetVapidPublicKeyResponse>, Status> {
        Ok(Response::new(GetVapidPublicKeyResponse { public_key: self.sender.vapid_public_key().to_owned() }))
    }
}
