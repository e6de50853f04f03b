//! The `chat.history.v1.HistoryService` gRPC API.

use async_nats::jetstream;
use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::jetstream::stream::Stream;
use chat_common::conversation_log::ConversationLog;
use chat_proto::events::v1::{ConversationKind, MembershipChanged, ReadMarkerMoved};
use chat_proto::history::v1::{
    AddMembersRequest, AttachmentReadableRequest, AttachmentReadableResponse, CatchUpRequest, CatchUpResponse,
    ChangeMessageRequest, Conversation, CreateConversationRequest, CreateConversationResponse,
    EraseUserMessagesRequest, EraseUserMessagesResponse, FindSentMessageRequest, FindSentMessageResponse,
    GetConversationRequest, ListContactsRequest, ListContactsResponse, ListConversationsRequest,
    ListConversationsResponse, ListMessagesRequest, ListMessagesResponse, ListReportsRequest, ListReportsResponse,
    MarkReadRequest, MarkReadResponse, MessagesSentByRequest, MessagesSentByResponse, ReadMarkersSinceRequest,
    ReadMarkersSinceResponse, ReferencedAttachmentsRequest, ReferencedAttachmentsResponse, RemoveMemberRequest,
    RenameConversationRequest, Report, ReportMessageRequest, ReportMessageResponse, ResolveReportRequest,
    SearchMessagesRequest, SearchMessagesResponse, SetMemberRoleRequest, SetMutedRequest,
    history_service_server::HistoryService,
};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::groups::{self, Groups};
use crate::ingest::CONSUMER;
use crate::store::{Access, NewConversation, Store};
use crate::validate::{self, CATCH_UP_MAX};

/// How often, and at most how long, a page waits for messages the stream
/// holds and this database not yet (then it answers with what is stored).
const PERSIST_POLL: std::time::Duration = std::time::Duration::from_millis(2);
const PERSIST_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

pub struct HistoryGrpc {
    store: Store,
    js: jetstream::Context,
    stream: Stream,
    log: ConversationLog,
    /// The most members a group may have.
    max_group_members: usize,
}

impl HistoryGrpc {
    pub fn new(
        store: Store,
        js: jetstream::Context,
        stream: Stream,
        log: ConversationLog,
        max_group_members: usize,
    ) -> Self {
        Self { store, js, stream, log, max_group_members }
    }

    fn groups(&self) -> Groups<'_> {
        Groups { store: &self.store, log: &self.log, max_members: self.max_group_members }
    }

    async fn add_members(&self, req: AddMembersRequest) -> Result<Conversation, Error> {
        let groups = self.groups();
        let (conversation, added, who) = groups.add(req).await?;
        if !added.is_empty() {
            // Announced first, so the new members' gateways deliver them the system message.
            self.announce_membership(&conversation).await?;
            groups.record_added(&conversation.conversation_id, &who, added).await?;
        }
        self.store.conversation_state(&conversation.conversation_id).await
    }

    /// Mutes or unmutes, then announces the members (with who muted) so
    /// notification follows at this point of the conversation.
    async fn set_muted(&self, req: SetMutedRequest) -> Result<Conversation, Error> {
        let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
        let user_id = validate::uuid("user_id", &req.user_id)?;
        let muted_at_ms = req.muted.then(chat_common::time::now_ms);
        if !self.store.set_muted(&conversation_id, &user_id, muted_at_ms).await? {
            self.member_check(&conversation_id, &user_id).await?;
            return Err(Error::NotMember);
        }
        let conversation = self.store.conversation_for(&conversation_id, &user_id).await?;
        self.announce_membership(&conversation).await?;
        Ok(conversation)
    }

    async fn remove_member(&self, req: RemoveMemberRequest) -> Result<Conversation, Error> {
        let conversation = self.groups().remove(req).await?;
        self.announce_membership(&conversation).await?;
        Ok(conversation)
    }

    async fn create_conversation(&self, req: CreateConversationRequest) -> Result<CreateConversationResponse, Error> {
        let creator_id = validate::uuid("creator_id", &req.creator_id)?;
        let mut others = Vec::with_capacity(req.member_ids.len());
        for id in &req.member_ids {
            let id = validate::uuid("member_ids", id)?;
            if id != creator_id && !others.contains(&id) {
                others.push(id);
            }
        }
        let new = match req.kind() {
            ConversationKind::Direct => {
                if others.len() != 1 || req.member_ids.len() != 1 {
                    return Err(Error::InvalidArgument("a direct conversation has exactly one other member".into()));
                }
                let (a, b) = if creator_id < others[0] { (&creator_id, &others[0]) } else { (&others[0], &creator_id) };
                NewConversation {
                    id: uuid::Uuid::now_v7().to_string(),
                    kind: ConversationKind::Direct,
                    title: None,
                    direct_key: Some(format!("{a}:{b}")),
                    member_ids: vec![creator_id.clone(), others[0].clone()],
                    creator_id,
                }
            }
            ConversationKind::Group => {
                let title = groups::title(&req.title)?;
                groups::check_size(others.len() + 1, self.max_group_members)?;
                let mut member_ids = vec![creator_id.clone()];
                member_ids.extend(others);
                NewConversation {
                    id: uuid::Uuid::now_v7().to_string(),
                    kind: ConversationKind::Group,
                    title: Some(title),
                    direct_key: None,
                    member_ids,
                    creator_id,
                }
            }
            ConversationKind::Unspecified => {
                return Err(Error::InvalidArgument("kind must be \"direct\" or \"group\"".into()));
            }
        };
        let (id, created) = self.store.create_conversation(&new, chat_common::time::now_ms()).await?;
        let conversation = self.store.conversation_for(&id, &new.creator_id).await?;
        // Announced every time, also for an existing direct pair: the snapshot is
        // idempotent, and a retry after a failed announcement heals the gap.
        self.announce_membership(&conversation).await?;
        if created && conversation.kind() == ConversationKind::Group {
            self.groups().record_created(&conversation, &new.creator_id).await?;
        }
        Ok(CreateConversationResponse { conversation: Some(conversation), created })
    }

    /// Publishes the member list to the stream, so every gateway's membership
    /// view changes at this point of the conversation's history.
    async fn announce_membership(&self, conversation: &Conversation) -> Result<(), Error> {
        let event = MembershipChanged {
            conversation_id: conversation.conversation_id.clone(),
            member_ids: conversation.member_ids.clone(),
            muted_member_ids: conversation.muted_member_ids.clone(),
            kind: conversation.kind,
            ..Default::default()
        };
        let mut headers = async_nats::HeaderMap::new();
        chat_common::nats::inject_trace_context(&mut headers);
        let subject = chat_common::nats::membership_subject(&conversation.conversation_id);
        let unavailable = |e: String| Error::Unavailable(format!("cannot record the membership change: {e}"));
        self.js
            .publish_with_headers(subject, headers, event.encode_to_vec().into())
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(())
    }

    async fn member_check(&self, conversation_id: &str, user_id: &str) -> Result<(), Error> {
        if self.store.is_member(conversation_id, user_id).await? {
            Ok(())
        } else if self.store.conversation_exists(conversation_id).await? {
            Err(Error::NotMember)
        } else {
            Err(Error::NotFound(crate::error::NO_CONVERSATION))
        }
    }

    async fn list_messages(&self, req: ListMessagesRequest) -> Result<ListMessagesResponse, Error> {
        let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
        let user_id = validate::uuid("user_id", &req.user_id)?;
        let limit = validate::page_limit(req.limit)?;
        // A former member pages up to their removal and never past it.
        let before_seq = match self.store.access(&conversation_id, &user_id).await? {
            Access::Active { .. } => req.before_seq,
            Access::Former { until_seq } => Some(req.before_seq.map_or(until_seq + 1, |b| b.min(until_seq + 1))),
            Access::None => {
                self.member_check(&conversation_id, &user_id).await?;
                return Err(Error::NotMember);
            }
        };
        // Read your writes: a message is acknowledged once the stream holds it
        // and stored here moments later, so a page first waits until this
        // database holds what the stream holds within the page's range.
        // Without the stream the page is served from what is stored.
        let head = self.head_seq(&conversation_id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the conversation head; paging what is stored");
            0
        });
        let needed = before_seq.map_or(head, |before| head.min(before.saturating_sub(1)));
        let waiting_since = std::time::Instant::now();
        while self.store.last_seq(&conversation_id).await? < needed && waiting_since.elapsed() < PERSIST_WAIT_MAX {
            tokio::time::sleep(PERSIST_POLL).await;
        }
        let (messages, has_more) = self.store.messages_page(&conversation_id, before_seq, req.after_seq, limit).await?;
        Ok(ListMessagesResponse { messages, has_more })
    }

    /// The newest `seq` of a conversation, from the stream (history's own rows
    /// may lag it by a few milliseconds).
    async fn head_seq(&self, conversation_id: &str) -> Result<u64, Error> {
        let subject = chat_common::nats::message_subject(conversation_id);
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(last) => {
                Ok(last.headers.get(chat_common::nats::SEQ_HEADER).and_then(|v| v.as_str().parse().ok()).unwrap_or(0))
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::Unavailable(format!("cannot read the conversation head: {e}"))),
        }
    }

    /// Announces a forward move of the marker in the stream; the consumer
    /// stores it (forward only), every gateway delivers it in order.
    async fn mark_read(&self, req: MarkReadRequest) -> Result<MarkReadResponse, Error> {
        let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
        let user_id = validate::uuid("user_id", &req.user_id)?;
        let device_id = validate::uuid("device_id", &req.device_id)?;
        if req.seq == 0 {
            return Err(Error::InvalidArgument("seq must be a positive integer".into()));
        }
        self.member_check(&conversation_id, &user_id).await?;
        let current = self.store.read_marker(&conversation_id, &user_id).await?;
        let seq = req.seq.min(self.head_seq(&conversation_id).await?);
        if seq <= current {
            return Ok(MarkReadResponse { seq: current, moved: false });
        }
        let event = ReadMarkerMoved { conversation_id: conversation_id.clone(), user_id, device_id, seq };
        let mut headers = async_nats::HeaderMap::new();
        chat_common::nats::inject_trace_context(&mut headers);
        let unavailable = |e: String| Error::Unavailable(format!("cannot record the read marker: {e}"));
        self.js
            .publish_with_headers(
                chat_common::nats::read_subject(&conversation_id),
                headers,
                event.encode_to_vec().into(),
            )
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(MarkReadResponse { seq, moved: true })
    }

    async fn search(&self, req: SearchMessagesRequest) -> Result<SearchMessagesResponse, Error> {
        let user_id = validate::uuid("user_id", &req.user_id)?;
        let query = req.query.trim();
        if query.is_empty() || query.chars().count() > 200 {
            return Err(Error::InvalidArgument("query must be 1 to 200 characters".into()));
        }
        // A NUL ends FTS5's quoted strings early and PostgreSQL's text refuses
        // it: either database would fail the query (the gateway refuses these too).
        if query.chars().any(|c| c.is_control() && !c.is_whitespace()) {
            return Err(Error::InvalidArgument("query must not contain control characters".into()));
        }
        if !(1..=50).contains(&req.limit) {
            return Err(Error::InvalidArgument("limit must be between 1 and 50".into()));
        }
        let conversation_id = match req.conversation_id.as_str() {
            "" => None,
            id => {
                let id = validate::uuid("conversation_id", id)?;
                if matches!(self.store.access(&id, &user_id).await?, Access::None) {
                    self.member_check(&id, &user_id).await?;
                }
                Some(id)
            }
        };
        let before = if req.before_stream_seq == 0 { u64::MAX } else { req.before_stream_seq };
        let (messages, has_more) =
            self.store.search(&user_id, query, conversation_id.as_deref(), before, req.limit).await?;
        Ok(SearchMessagesResponse { messages, has_more })
    }

    /// How far history has stored the stream: the ack floor of its consumer.
    async fn persisted_through(&self) -> Result<u64, Error> {
        Ok(self
            .stream
            .consumer_info(CONSUMER)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot read the history consumer: {e}")))?
            .ack_floor
            .stream_sequence)
    }

    async fn catch_up(&self, req: CatchUpRequest) -> Result<CatchUpResponse, Error> {
        let user_id = validate::uuid("user_id", &req.user_id)?;
        if !(1..=CATCH_UP_MAX).contains(&req.limit) {
            return Err(Error::InvalidArgument(format!("limit must be between 1 and {CATCH_UP_MAX}")));
        }
        // Only rows up to the consumer's ack floor are returned: below it nothing
        // is missing, so the caller can read the rest from the stream without a gap.
        let persisted_through = self.persisted_through().await?;
        let (messages, has_more) =
            self.store.catch_up(&user_id, req.after_stream_seq, persisted_through, req.limit).await?;
        let changed = if has_more {
            Vec::new()
        } else {
            let since = if req.since_stream_seq == 0 { req.after_stream_seq } else { req.since_stream_seq };
            self.store.changed_since(&user_id, since, persisted_through).await?
        };
        Ok(CatchUpResponse { messages, persisted_through, has_more, changed })
    }
}

#[tonic::async_trait]
impl HistoryService for HistoryGrpc {
    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<CreateConversationResponse>, Status> {
        Ok(Response::new(self.create_conversation(request.into_inner()).await?))
    }

    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<Conversation>, Status> {
        let req = request.into_inner();
        let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
        let user_id = validate::uuid("user_id", &req.user_id)?;
        if req.members_only {
            return Ok(Response::new(self.store.conversation_members_for(&conversation_id, &user_id).await?));
        }
        let mut conversation = self.store.conversation_for(&conversation_id, &user_id).await?;
        conversation.read_markers = self.store.read_markers_of(&conversation_id).await?;
        Ok(Response::new(conversation))
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let req = request.into_inner();
        let user_id = validate::uuid("user_id", &req.user_id)?;
        let conversations = if req.ids_only {
            let up_to = if req.member_lists_up_to == 0 { u32::MAX } else { req.member_lists_up_to };
            self.store.conversation_members_of(&user_id, up_to).await?
        } else {
            self.store.conversations_of(&user_id).await?
        };
        Ok(Response::new(ListConversationsResponse { conversations }))
    }

    async fn list_contacts(
        &self,
        request: Request<ListContactsRequest>,
    ) -> Result<Response<ListContactsResponse>, Status> {
        let user_id = validate::uuid("user_id", &request.into_inner().user_id)?;
        Ok(Response::new(ListContactsResponse { user_ids: self.store.contacts_of(&user_id).await? }))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        Ok(Response::new(self.list_messages(request.into_inner()).await?))
    }

    async fn catch_up(&self, request: Request<CatchUpRequest>) -> Result<Response<CatchUpResponse>, Status> {
        Ok(Response::new(self.catch_up(request.into_inner()).await?))
    }

    async fn rename_conversation(
        &self,
        request: Request<RenameConversationRequest>,
    ) -> Result<Response<Conversation>, Status> {
        Ok(Response::new(self.groups().rename(request.into_inner()).await?))
    }

    async fn add_members(&self, request: Request<AddMembersRequest>) -> Result<Response<Conversation>, Status> {
        Ok(Response::new(self.add_members(request.into_inner()).await?))
    }

    async fn remove_member(&self, request: Request<RemoveMemberRequest>) -> Result<Response<Conversation>, Status> {
        Ok(Response::new(self.remove_member(request.into_inner()).await?))
    }

    async fn set_member_role(&self, request: Request<SetMemberRoleRequest>) -> Result<Response<Conversation>, Status> {
        Ok(Response::new(self.groups().set_role(request.into_inner()).await?))
    }

    async fn set_muted(&self, request: Request<SetMutedRequest>) -> Result<Response<Conversation>, Status> {
        Ok(Response::new(self.set_muted(request.into_inner()).await?))
    }

    async fn report_message(
        &self,
        request: Request<ReportMessageRequest>,
    ) -> Result<Response<ReportMessageResponse>, Status> {
        Ok(Response::new(crate::safety::report(&self.store, request.into_inner()).await?))
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        Ok(Response::new(crate::safety::list(&self.store, request.into_inner()).await?))
    }

    async fn resolve_report(&self, request: Request<ResolveReportRequest>) -> Result<Response<Report>, Status> {
        Ok(Response::new(crate::safety::resolve(&self.store, (&self.js, &self.stream), request.into_inner()).await?))
    }

    async fn messages_sent_by(
        &self,
        request: Request<MessagesSentByRequest>,
    ) -> Result<Response<MessagesSentByResponse>, Status> {
        let req = request.into_inner();
        let user_id = validate::uuid("user_id", &req.user_id)?;
        let limit = match req.limit {
            0 => 500,
            limit @ 1..=1000 => limit,
            _ => return Err(Error::InvalidArgument("limit must be between 1 and 1000".into()).into()),
        };
        let (messages, has_more) = self.store.messages_sent_by(&user_id, req.after_stream_seq, limit).await?;
        Ok(Response::new(MessagesSentByResponse { messages, has_more }))
    }

    async fn erase_user_messages(
        &self,
        request: Request<EraseUserMessagesRequest>,
    ) -> Result<Response<EraseUserMessagesResponse>, Status> {
        let erased = crate::safety::erase_messages(&self.store, (&self.js, &self.stream), request.into_inner()).await?;
        Ok(Response::new(erased))
    }

    async fn change_message(
        &self,
        request: Request<ChangeMessageRequest>,
    ) -> Result<Response<chat_proto::events::v1::Message>, Status> {
        Ok(Response::new(crate::edits::change(&self.store, &self.js, &self.stream, request.into_inner()).await?))
    }

    async fn search_messages(
        &self,
        request: Request<SearchMessagesRequest>,
    ) -> Result<Response<SearchMessagesResponse>, Status> {
        Ok(Response::new(self.search(request.into_inner()).await?))
    }

    async fn mark_read(&self, request: Request<MarkReadRequest>) -> Result<Response<MarkReadResponse>, Status> {
        Ok(Response::new(self.mark_read(request.into_inner()).await?))
    }

    async fn find_sent_message(
        &self,
        request: Request<FindSentMessageRequest>,
    ) -> Result<Response<FindSentMessageResponse>, Status> {
        let req = request.into_inner();
        let sender_id = validate::uuid("sender_id", &req.sender_id)?;
        if !(1..=validate::CLIENT_MSG_ID_MAX_CHARS).contains(&req.client_msg_id.chars().count()) {
            let message = format!("client_msg_id must be 1 to {} characters", validate::CLIENT_MSG_ID_MAX_CHARS);
            return Err(Error::InvalidArgument(message).into());
        }
        let message = self.store.sent_message(&sender_id, &req.client_msg_id).await?;
        Ok(Response::new(FindSentMessageResponse { message }))
    }

    async fn attachment_readable(
        &self,
        request: Request<AttachmentReadableRequest>,
    ) -> Result<Response<AttachmentReadableResponse>, Status> {
        let req = request.into_inner();
        let user_id = validate::uuid("user_id", &req.user_id)?;
        let attachment_id = validate::uuid("attachment_id", &req.attachment_id)?;
        if self.store.attachment_readable(&user_id, &attachment_id).await? {
            return Ok(Response::new(AttachmentReadableResponse { readable: true }));
        }
        // Read your writes, as a page does: a member fetches a file as soon
        // as its message arrives, which may be before this database has it.
        // So "no" waits until the database holds what the stream held when asked.
        let head = self.stream.clone().info().await.map(|info| info.state.last_sequence).unwrap_or_default();
        let waiting_since = std::time::Instant::now();
        while self.persisted_through().await? < head && waiting_since.elapsed() < PERSIST_WAIT_MAX {
            tokio::time::sleep(PERSIST_POLL * 5).await;
        }
        let readable = self.store.attachment_readable(&user_id, &attachment_id).await?;
        Ok(Response::new(AttachmentReadableResponse { readable }))
    }

    async fn referenced_attachments(
        &self,
        request: Request<ReferencedAttachmentsRequest>,
    ) -> Result<Response<ReferencedAttachmentsResponse>, Status> {
        let req = request.into_inner();
        if req.attachment_ids.len() > validate::ATTACHMENTS_ASKED_MAX {
            let message = format!("at most {} attachment_ids at once", validate::ATTACHMENTS_ASKED_MAX);
            return Err(Error::InvalidArgument(message).into());
        }
        let ids =
            req.attachment_ids.iter().map(|id| validate::uuid("attachment_ids", id)).collect::<Result<Vec<_>, _>>()?;
        let attachment_ids = self.store.referenced_attachments(&ids).await?;
        Ok(Response::new(ReferencedAttachmentsResponse { attachment_ids }))
    }

    async fn read_markers_since(
        &self,
        request: Request<ReadMarkersSinceRequest>,
    ) -> Result<Response<ReadMarkersSinceResponse>, Status> {
        let req = request.into_inner();
        let user_id = validate::uuid("user_id", &req.user_id)?;
        let through = self.persisted_through().await?;
        let markers = self.store.read_markers_since(&user_id, req.after_stream_seq, through).await?;
        Ok(Response::new(ReadMarkersSinceResponse { markers }))
    }
}
