//! Who may send to a conversation, without a call per message: the member list
//! is fetched from history once and then kept current by the membership
//! snapshots in the CHAT stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chat_common::grpc::Channel;
use chat_proto::history::v1::GetConversationRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;

use crate::error::ApiError;

const MAX_CACHED: usize = 100_000;

#[derive(Debug)]
pub struct Members {
    pub member_ids: Vec<String>,
    /// The newest persisted `seq` when this entry was loaded (see `Sequencer::publish`).
    pub persisted_last_seq: u64,
}

impl Members {
    pub fn contains(&self, user_id: &str) -> bool {
        self.member_ids.iter().any(|m| m == user_id)
    }
}

pub struct MembershipCache {
    history: HistoryServiceClient<Channel>,
    entries: Mutex<HashMap<String, Arc<Members>>>,
}

impl MembershipCache {
    pub fn new(history: HistoryServiceClient<Channel>) -> Self {
        Self { history, entries: Mutex::new(HashMap::new()) }
    }

    /// The conversation's members if `user_id` is one of them.
    ///
    /// # Errors
    /// `forbidden` for a non-member, `not_found` for an unknown conversation.
    pub async fn for_member(&self, conversation_id: &str, user_id: &str) -> Result<Arc<Members>, ApiError> {
        let cached = self.lock().get(conversation_id).cloned();
        let members = match cached {
            Some(members) => members,
            None => {
                let conversation = self
                    .history
                    .clone()
                    .get_conversation(GetConversationRequest {
                        conversation_id: conversation_id.to_owned(),
                        user_id: user_id.to_owned(),
                    })
                    .await?
                    .into_inner();
                let members = Arc::new(Members {
                    member_ids: conversation.member_ids,
                    persisted_last_seq: conversation.last_seq,
                });
                let mut entries = self.lock();
                if entries.len() >= MAX_CACHED {
                    entries.clear();
                }
                entries.insert(conversation_id.to_owned(), members.clone());
                members
            }
        };
        if members.contains(user_id) {
            Ok(members)
        } else {
            Err(ApiError::forbidden("not a member of this conversation"))
        }
    }

    /// Applies a membership snapshot from the stream.
    pub fn update(&self, conversation_id: &str, member_ids: Vec<String>) {
        let mut entries = self.lock();
        if let Some(old) = entries.get(conversation_id) {
            let persisted_last_seq = old.persisted_last_seq;
            entries.insert(conversation_id.to_owned(), Arc::new(Members { member_ids, persisted_last_seq }));
        }
    }

    /// Drops members from a cached list (a removal, before its snapshot arrives).
    pub fn remove_members(&self, conversation_id: &str, user_ids: &[String]) {
        let mut entries = self.lock();
        if let Some(old) = entries.get(conversation_id) {
            let member_ids = old.member_ids.iter().filter(|m| !user_ids.contains(m)).cloned().collect();
            let persisted_last_seq = old.persisted_last_seq;
            entries.insert(conversation_id.to_owned(), Arc::new(Members { member_ids, persisted_last_seq }));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Members>>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
