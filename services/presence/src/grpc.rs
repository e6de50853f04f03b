//! The `chat.presence.v1.PresenceService` gRPC API.

use std::sync::Arc;

use chat_proto::presence::v1::{GetPresenceRequest, GetPresenceResponse, presence_service_server::PresenceService};
use tonic::{Request, Response, Status};

use crate::state::Presence;

const MAX_USERS_PER_CALL: usize = 500;

pub struct PresenceGrpc {
    state: Arc<Presence>,
}

impl PresenceGrpc {
    pub fn new(state: Arc<Presence>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl PresenceService for PresenceGrpc {
    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        let req = request.into_inner();
        if req.user_ids.is_empty() || req.user_ids.len() > MAX_USERS_PER_CALL {
            return Err(Status::invalid_argument(format!("user_ids must name 1 to {MAX_USERS_PER_CALL} users")));
        }
        let mut presences = Vec::with_capacity(req.user_ids.len());
        for id in &req.user_ids {
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(Status::invalid_argument("user_ids must be UUIDs"));
            }
            presences.push(self.state.get(id));
        }
        Ok(Response::new(GetPresenceResponse { presences }))
    }
}
