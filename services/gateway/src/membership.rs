//! Who is in which conversation: ONE member list per conversation for the
//! whole gateway, used by sending (is the sender a member, and the newest
//! persisted `seq` the sequencer starts from, without a call per message), by
//! live delivery (which local users a conversation reaches) and by presence
//! (who shares a conversation with whom).
//!
//! Lists come from history: a conversation's when someone sends to it, a
//! user's conversations when their socket connects. They are kept current by
//! the membership snapshots and removals in the CHAT stream, which delivery
//! applies here. A list is kept while a local user is in the conversation
//! (delivery tracks it); the others are a cache, dropped wholesale when it
//! grows past [`MAX_CACHED`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chat_common::grpc::Channel;
use chat_proto::history::v1::GetConversationRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;

use crate::error::ApiError;

const MAX_CACHED: usize = 100_000;

#[derive(Debug)]
pub struct Members {
    pub member_ids: Vec<String>,
    /// The newest persisted `seq` when the conversation was loaded (see
    /// `Sequencer::publish`); unknown for a list that came with the user's
    /// conversations, until someone sends to it.
    persisted_last_seq: Option<u64>,
}

impl Members {
    pub fn contains(&self, user_id: &str) -> bool {
        self.member_ids.iter().any(|m| m == user_id)
    }

    /// Whether members see each other's presence through this conversation
    /// (not in groups past [`SHARED_UP_TO_MEMBERS`]).
    ///
    /// [`SHARED_UP_TO_MEMBERS`]: chat_common::nats::presence::SHARED_UP_TO_MEMBERS
    pub fn shares_presence(&self) -> bool {
        self.member_ids.len() <= chat_common::nats::presence::SHARED_UP_TO_MEMBERS
    }

    /// The newest persisted `seq` when the list was loaded; known for every
    /// list [`MembershipCache::for_member`] returns.
    pub fn persisted_last_seq(&self) -> u64 {
        self.persisted_last_seq.unwrap_or_default()
    }
}

pub struct MembershipCache {
    history: HistoryServiceClient<Channel>,
    lists: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    conversations: HashMap<String, Entry>,
    /// The tracked conversations of each of their members.
    member_of: HashMap<String, HashSet<String>>,
}

struct Entry {
    members: Arc<Members>,
    /// A local user is in the conversation: the list is kept, and indexed by member.
    tracked: bool,
}

impl Lists {
    /// Sets a conversation's list, keeping `member_of` in step.
    fn put(&mut self, conversation_id: &str, members: Arc<Members>, tracked: bool) {
        self.unindex(conversation_id);
        if tracked {
            for member in &members.member_ids {
                self.member_of.entry(member.clone()).or_default().insert(conversation_id.to_owned());
            }
        }
        self.conversations.insert(conversation_id.to_owned(), Entry { members, tracked });
    }

    fn remove(&mut self, conversation_id: &str) {
        self.unindex(conversation_id);
        self.conversations.remove(conversation_id);
    }

    fn unindex(&mut self, conversation_id: &str) {
        let Some(Entry { members, tracked: true }) = self.conversations.get(conversation_id) else { return };
        for member in &members.member_ids {
            if let Some(conversations) = self.member_of.get_mut(member) {
                conversations.remove(conversation_id);
                if conversations.is_empty() {
                    self.member_of.remove(member);
                }
            }
        }
    }

    /// Keeps `member_ids` as the list, with what is known of the conversation's persisted `seq`.
    fn set(&mut self, conversation_id: &str, member_ids: Vec<String>, tracked: bool) {
        let persisted_last_seq = self.conversations.get(conversation_id).and_then(|e| e.members.persisted_last_seq);
        if !tracked && persisted_last_seq.is_none() {
            // Nobody here needs it: not delivered to, nor sent to.
            self.remove(conversation_id);
            return;
        }
        self.put(conversation_id, Arc::new(Members { member_ids, persisted_last_seq }), tracked);
    }

    fn tracked(&self, conversation_id: &str) -> bool {
        self.conversations.get(conversation_id).is_some_and(|e| e.tracked)
    }
}

impl MembershipCache {
    pub fn new(history: HistoryServiceClient<Channel>) -> Self {
        Self { history, lists: Mutex::new(Lists::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The conversation's members if `user_id` is one of them.
    ///
    /// # Errors
    /// `forbidden` for a non-member, `not_found` for an unknown conversation.
    pub async fn for_member(&self, conversation_id: &str, user_id: &str) -> Result<Arc<Members>, ApiError> {
        let cached = self
            .lock()
            .conversations
            .get(conversation_id)
            .filter(|e| e.members.persisted_last_seq.is_some())
            .map(|e| e.members.clone());
        let members = match cached {
            Some(members) => members,
            None => self.load(conversation_id, user_id).await?,
        };
        if members.contains(user_id) {
            Ok(members)
        } else {
            Err(ApiError::forbidden("not a member of this conversation"))
        }
    }

    /// Asks history for a conversation and keeps what it says. A tracked
    /// list is current already (the stream keeps it so): only its persisted
    /// `seq` is taken.
    async fn load(&self, conversation_id: &str, user_id: &str) -> Result<Arc<Members>, ApiError> {
        let conversation = self
            .history
            .clone()
            .get_conversation(GetConversationRequest {
                conversation_id: conversation_id.to_owned(),
                user_id: user_id.to_owned(),
                members_only: true,
            })
            .await?
            .into_inner();
        let mut lists = self.lock();
        let persisted_last_seq = Some(conversation.last_seq);
        let members = match lists.conversations.get(conversation_id) {
            Some(Entry { members, tracked: true }) => {
                let member_ids = members.member_ids.clone();
                Arc::new(Members { member_ids, persisted_last_seq })
            }
            _ => Arc::new(Members { member_ids: conversation.member_ids, persisted_last_seq }),
        };
        if lists.conversations.len() >= MAX_CACHED {
            // Untracked lists have no index entries to undo.
            lists.conversations.retain(|_, e| e.tracked);
        }
        let tracked = lists.tracked(conversation_id);
        lists.put(conversation_id, members.clone(), tracked);
        Ok(members)
    }

    /// A local user is in the conversation: keep its list. A list already
    /// tracked is kept as it is (a snapshot applied since `member_ids` was
    /// read is newer).
    pub fn track(&self, conversation_id: &str, member_ids: Vec<String>) {
        let mut lists = self.lock();
        if !lists.tracked(conversation_id) {
            lists.set(conversation_id, member_ids, true);
        }
    }

    /// No local user is in the conversation any more.
    pub fn untrack(&self, conversation_id: &str) {
        let mut lists = self.lock();
        if let Some(entry) = lists.conversations.get(conversation_id).filter(|e| e.tracked) {
            let member_ids = entry.members.member_ids.clone();
            lists.set(conversation_id, member_ids, false);
        }
    }

    /// Applies a membership snapshot from the stream; `tracked` says whether
    /// a local user is in the conversation now.
    pub fn apply_snapshot(&self, conversation_id: &str, member_ids: Vec<String>, tracked: bool) {
        let mut lists = self.lock();
        if tracked || lists.conversations.contains_key(conversation_id) {
            lists.set(conversation_id, member_ids, tracked);
        }
    }

    /// Drops members from a list (a removal, before its snapshot arrives).
    pub fn remove_members(&self, conversation_id: &str, user_ids: &[String]) {
        let mut lists = self.lock();
        if let Some(entry) = lists.conversations.get(conversation_id) {
            let member_ids = entry.members.member_ids.iter().filter(|m| !user_ids.contains(m)).cloned().collect();
            let tracked = entry.tracked;
            lists.set(conversation_id, member_ids, tracked);
        }
    }

    /// The members of a tracked conversation.
    pub fn members(&self, conversation_id: &str) -> Option<Arc<Members>> {
        self.lock().conversations.get(conversation_id).filter(|e| e.tracked).map(|e| e.members.clone())
    }

    /// The tracked conversations `user_id` is a member of.
    pub fn conversations_with(&self, user_id: &str) -> Vec<String> {
        self.lock().member_of.get(user_id).map(|c| c.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache whose history is never reached: these tests only feed it lists.
    fn cache() -> MembershipCache {
        let channel = chat_common::grpc::channel("127.0.0.1:9").unwrap();
        MembershipCache::new(HistoryServiceClient::new(channel))
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|&id| id.to_owned()).collect()
    }

    fn members_of(cache: &MembershipCache, conversation_id: &str) -> Option<Vec<String>> {
        cache.members(conversation_id).map(|m| m.member_ids.clone())
    }

    #[tokio::test]
    async fn a_tracked_list_follows_snapshots_and_removals_and_indexes_its_members() {
        let cache = cache();
        cache.track("c", ids(&["a", "b"]));
        assert_eq!(cache.conversations_with("b"), ids(&["c"]));
        cache.apply_snapshot("c", ids(&["a", "b", "d"]), true);
        assert_eq!(members_of(&cache, "c"), Some(ids(&["a", "b", "d"])));
        cache.remove_members("c", &ids(&["b"]));
        assert_eq!(members_of(&cache, "c"), Some(ids(&["a", "d"])));
        assert!(cache.conversations_with("b").is_empty());
        assert_eq!(cache.conversations_with("d"), ids(&["c"]));
    }

    #[tokio::test]
    async fn tracking_again_keeps_the_newer_list_a_snapshot_brought() {
        let cache = cache();
        cache.track("c", ids(&["a"]));
        cache.apply_snapshot("c", ids(&["a", "b"]), true);
        cache.track("c", ids(&["a"]));
        assert_eq!(members_of(&cache, "c"), Some(ids(&["a", "b"])));
    }

    #[tokio::test]
    async fn an_untracked_list_nobody_sent_to_is_forgotten_with_its_index() {
        let cache = cache();
        cache.track("c", ids(&["a", "b"]));
        cache.untrack("c");
        assert_eq!(members_of(&cache, "c"), None);
        assert!(cache.conversations_with("a").is_empty());
        // A snapshot of a conversation nobody here needs is not kept.
        cache.apply_snapshot("c", ids(&["a"]), false);
        assert!(cache.lock().conversations.is_empty());
    }

    #[tokio::test]
    async fn a_list_with_its_persisted_seq_outlives_tracking_as_a_cache_entry() {
        let cache = cache();
        cache.track("c", ids(&["a", "b"]));
        let loaded = Arc::new(Members { member_ids: ids(&["a", "b"]), persisted_last_seq: Some(7) });
        cache.lock().put("c", loaded, true);
        cache.untrack("c");
        assert!(cache.conversations_with("a").is_empty());
        cache.apply_snapshot("c", ids(&["a"]), false);
        let member = cache.for_member("c", "a").await.unwrap();
        assert_eq!((member.member_ids.clone(), member.persisted_last_seq()), (ids(&["a"]), 7));
        assert!(cache.for_member("c", "b").await.is_err());
    }
}
