//! The `chat.admin.v1.AdminService` gRPC API: each call is checked here,
//! recorded in the audit log, and carried out by the service that owns what
//! it changes (auth for users and devices, history for messages, members and
//! reports), whose answer, or refusal, is passed on as it is.

use chat_common::grpc::Channel;
use chat_proto::admin::v1::{
    DeactivateUserRequest, EraseUserRequest, EraseUserResponse, ExportRecord, ExportUserRequest, ListAuditLogRequest,
    ListAuditLogResponse, RemoveMemberRequest, RemoveMessageRequest, ResolveReportRequest,
    admin_service_server::AdminService,
};
use chat_proto::auth::v1::auth_service_client::AuthServiceClient;
use chat_proto::auth::v1::{self as auth};
use chat_proto::events::v1::{ChangeKind, Message};
use chat_proto::history::v1::history_service_client::HistoryServiceClient;
use chat_proto::history::v1::{self as history};
use chat_proto::media::v1::DeleteUserFilesRequest;
use chat_proto::media::v1::media_service_client::MediaServiceClient;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;
use tonic::{Request, Response, Status};

use crate::audit::{AuditLog, Pending};
use crate::export::Exporter;
use crate::operators::Operator;

/// Characters a reason or resolution may have.
const REASON_MAX_CHARS: usize = 1000;

pub struct AdminGrpc {
    pub audit: Arc<AuditLog>,
    pub exporter: Exporter,
    pub auth: AuthServiceClient<Channel>,
    pub history: HistoryServiceClient<Channel>,
    pub media: MediaServiceClient<Channel>,
    /// For the blocks bucket.
    pub js: async_nats::jetstream::Context,
    /// How long an export waits for its reader to take a record.
    pub export_stall: std::time::Duration,
}

/// The operator the interceptor let through.
fn operator<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Operator>()
        .map(|o| o.0.clone())
        .ok_or_else(|| Status::unauthenticated("operator credentials required"))
}

/// A reason: trimmed, 1 to 1,000 characters, no control characters but line breaks.
fn reason(field: &str, raw: &str) -> Result<String, Status> {
    let text = raw.trim();
    let bad = text.is_empty()
        || text.chars().count() > REASON_MAX_CHARS
        || text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    if bad {
        return Err(Status::invalid_argument(format!(
            "{field} must be 1 to {REASON_MAX_CHARS} characters without control characters"
        )));
    }
    Ok(text.to_owned())
}

fn uuid(field: &str, raw: &str) -> Result<String, Status> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| Status::invalid_argument(format!("{field} must be a UUID")))
}

impl AdminGrpc {
    /// Records the action, carries it out, and records how it ended. An
    /// action the audit log cannot take is not carried out.
    async fn audited<T>(
        &self,
        action: Pending<'_>,
        run: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let entry = self.audit.begin(&action).await?;
        let result = run.await;
        self.audit.finish(&entry, &action, &result).await;
        result
    }

    /// Every step of an erasure, each harmless to repeat, in an order that
    /// cuts the user off first.
    async fn erase(&self, user_id: &str) -> Result<EraseUserResponse, Status> {
        let user = auth::EraseUserRequest { user_id: user_id.to_owned() };
        let devices_removed = self.auth.clone().erase_user(user).await?.into_inner().devices_removed;
        let mut messages_erased = 0;
        // Rounds that erased nothing while some remained: history has not
        // stored the last round's deletions yet. Bounded, then retried by the operator.
        let mut idle_rounds = 0;
        loop {
            // Small batches: each deletion waits for the one before it to be stored.
            let batch = history::EraseUserMessagesRequest { user_id: user_id.to_owned(), limit: 50 };
            let erased = self.history.clone().erase_user_messages(batch).await?.into_inner();
            messages_erased += u64::from(erased.erased);
            if erased.remaining == 0 {
                break;
            }
            idle_rounds = if erased.erased == 0 { idle_rounds + 1 } else { 0 };
            if idle_rounds > 50 {
                return Err(Status::unavailable("history has not caught up with the deletions; erase again"));
            }
        }
        let files = DeleteUserFilesRequest { user_id: user_id.to_owned() };
        let files_removed = self.media.clone().delete_user_files(files).await?.into_inner().files_removed;
        let unavailable = |e: async_nats::Error| Status::unavailable(format!("cannot remove the user's blocks: {e}"));
        let blocks_removed = match chat_common::blocks::existing_bucket(&self.js).await.map_err(unavailable)? {
            Some(bucket) => chat_common::blocks::forget_user(&bucket, user_id).await.map_err(unavailable)?,
            None => 0,
        };
        let blocks_removed = u32::try_from(blocks_removed).unwrap_or(u32::MAX);
        Ok(EraseUserResponse { devices_removed, messages_erased, files_removed, blocks_removed })
    }

    async fn remove_message(&self, conversation_id: String, message_id: String) -> Result<Message, Status> {
        let request = history::ChangeMessageRequest {
            conversation_id,
            message_id,
            change: ChangeKind::Deleted.into(),
            by_operator: true,
            ..Default::default()
        };
        Ok(self.history.clone().change_message(request).await?.into_inner())
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn find_users(
        &self,
        request: Request<auth::FindUsersRequest>,
    ) -> Result<Response<auth::FindUsersResponse>, Status> {
        let operator = operator(&request)?;
        let req = request.into_inner();
        // Checked here as well as by auth: the audit log keeps the query.
        let query = req.query.trim();
        if query.is_empty() || query.chars().count() > 64 || query.chars().any(char::is_control) {
            return Err(Status::invalid_argument("query must be 1 to 64 printable characters"));
        }
        let details = json!({ "query": req.query, "limit": req.limit });
        let action = Pending { operator: &operator, action: "FindUsers", target: &req.query.clone(), details };
        let found = self.audited(action, async { Ok(self.auth.clone().find_users(req).await?.into_inner()) }).await?;
        Ok(Response::new(found))
    }

    async fn deactivate_user(
        &self,
        request: Request<DeactivateUserRequest>,
    ) -> Result<Response<auth::DeactivateUserResponse>, Status> {
        let operator = operator(&request)?;
        let req = request.into_inner();
        let user_id = uuid("user_id", &req.user_id)?;
        let why = reason("reason", &req.reason)?;
        let details = json!({ "reason": why });
        let action = Pending { operator: &operator, action: "DeactivateUser", target: &user_id, details };
        let call = auth::DeactivateUserRequest { user_id: user_id.clone() };
        let done =
            self.audited(action, async { Ok(self.auth.clone().deactivate_user(call).await?.into_inner()) }).await?;
        Ok(Response::new(done))
    }

    async fn erase_user(&self, request: Request<EraseUserRequest>) -> Result<Response<EraseUserResponse>, Status> {
        let operator = operator(&request)?;
        let req = request.into_inner();
        let user_id = uuid("user_id", &req.user_id)?;
        let why = reason("reason", &req.reason)?;
        let details = json!({ "reason": why });
        let action = Pending { operator: &operator, action: "EraseUser", target: &user_id, details };
        let erased = self.audited(action, self.erase(&user_id)).await?;
        Ok(Response::new(erased))
    }

    type ExportUserStream = Pin<Box<dyn futures::Stream<Item = Result<ExportRecord, Status>> + Send>>;

    /// The profile is read first, so an unknown user is refused before
    /// anything streams; the audit entry gets its outcome when the stream ends.
    async fn export_user(
        &self,
        request: Request<ExportUserRequest>,
    ) -> Result<Response<Self::ExportUserStream>, Status> {
        let operator = operator(&request)?;
        let req = request.into_inner();
        let user_id = uuid("user_id", &req.user_id)?;
        let why = reason("reason", &req.reason)?;
        let details = json!({ "reason": why });
        let action = Pending { operator: &operator, action: "ExportUser", target: &user_id, details };
        let entry = self.audit.begin(&action).await?;
        let profile = self.exporter.profile(&user_id).await;
        if profile.is_err() {
            self.audit.finish(&entry, &action, &profile).await;
        }
        let profile = profile?;
        let (sender, mut records) = tokio::sync::mpsc::channel(64);
        let out = crate::export::Out { records: sender, stall_limit: self.export_stall };
        let (exporter, audit) = (self.exporter.clone(), self.audit.clone());
        tokio::spawn(async move {
            let exported = async {
                out.emit("profile", profile).await?;
                exporter.run(&user_id, &out).await
            }
            .await;
            let action = Pending { operator: &operator, action: "ExportUser", target: &user_id, details: json!({}) };
            audit.finish(&entry, &action, &exported).await;
            if let Err(status) = exported {
                out.fail(status).await;
            }
        });
        Ok(Response::new(Box::pin(futures::stream::poll_fn(move |cx| records.poll_recv(cx)))))
    }

    async fn list_reports(
        &self,
        request: Request<history::ListReportsRequest>,
    ) -> Result<Response<history::ListReportsResponse>, Status> {
        let operator = operator(&request)?;
        let req = request.into_inner();
        let details = json!({ "status": req.status, "limit": req.limit, "before_ms": req.before_ms });
        let action = Pending { operator: &operator, action: "ListReports", target: "", details };
        let reports =
            self.audited(action, async { Ok(self.history.clone().list_reports(req).await?.into_inner()) }).await?;
        Ok(Response::new(reports))
    }

    async fn resolve_report(
        &self,
        request: Request<ResolveReportRequest>,
    ) -> Result<Response<history::Report>, Status> {
        let operator = operator(&request)?;
        let req = request.into_inner();
        let report_id = uuid("report_id", &req.report_id)?;
        let resolution = reason("resolution", &req.resolution)?;
        let details = json!({ "resolution": resolution, "remove_message": req.remove_message });
        let action = Pending { operator: &operator, action: "ResolveReport", target: &report_id, details };
        let resolved = self
            .audited(action, async {
                let call = history::ResolveReportRequest {
                    report_id: report_id.clone(),
                    resolved_by: operator.clone(),
                    resolution,
                    remove_message: req.remove_message,
                };
                Ok(self.history.clone().resolve_report(call).await?.into_inner())
            })
            .await?;
        Ok(Response::new(resolved))
    }

    async fn remove_message(&self, request: Request<RemoveMessageRequest>) -> Result<Response<Message>, Status> {
        let operator = operator(&request)?;
        let req = request.into_inner();
        let conversation_id = uuid("conversation_id", &req.conversation_id)?;
        let message_id = uuid("message_id", &req.message_id)?;
        let why = reason("reason", &req.reason)?;
        let details = json!({ "conversation_id": conversation_id, "reason": why });
        let action = Pending { operator: &operator, action: "RemoveMessage", target: &message_id, details };
        let removed =
            self.audited(action, Self::remove_message(self, conversation_id.clone(), message_id.clone())).await?;
        Ok(Response::new(removed))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<history::Conversation>, Status> {
        let operator = operator(&request)?;
        let req = request.into_inner();
        let conversation_id = uuid("conversation_id", &req.conversation_id)?;
        let user_id = uuid("user_id", &req.user_id)?;
        let why = reason("reason", &req.reason)?;
        let details = json!({ "conversation_id": conversation_id, "reason": why });
        let action = Pending { operator: &operator, action: "RemoveMember", target: &user_id, details };
        let call = history::RemoveMemberRequest {
            conversation_id,
            user_id: user_id.clone(),
            by_operator: true,
            ..Default::default()
        };
        let conversation =
            self.audited(action, async { Ok(self.history.clone().remove_member(call).await?.into_inner()) }).await?;
        Ok(Response::new(conversation))
    }

    async fn list_audit_log(
        &self,
        request: Request<ListAuditLogRequest>,
    ) -> Result<Response<ListAuditLogResponse>, Status> {
        operator(&request)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 50,
            limit @ 1..=200 => limit,
            _ => return Err(Status::invalid_argument("limit must be between 1 and 200")),
        };
        let before_ms = if req.before_ms > 0 { req.before_ms } else { i64::MAX };
        let entries = self.audit.list(before_ms, limit).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the audit log");
            Status::unavailable("the audit log cannot be read")
        })?;
        Ok(Response::new(ListAuditLogResponse { entries }))
    }
}
