//! The gRPC API of media (`chat.media.v1.MediaService`).

use std::pin::Pin;
use std::sync::Arc;

use chat_proto::media::v1::media_service_server::MediaService;
use chat_proto::media::v1::{
    Attachment, ClaimAttachmentsRequest, ClaimAttachmentsResponse, DeleteUserFilesRequest, DeleteUserFilesResponse,
    DownloadHeader, DownloadRequest, DownloadResponse, GetAttachmentRequest, GetUsageRequest, UploadRequest, Usage,
    download_response,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::blobs::Blobs;
use crate::records::{ClaimError, Records, STORED};

/// Attachments one message may carry (the gateway allows fewer).
const CLAIM_MAX: usize = 32;
use crate::upload::{self, Limits};

pub struct MediaGrpc {
    pub records: Records,
    pub blobs: Arc<Blobs>,
    pub limits: Limits,
}

fn uuid(field: &str, value: &str) -> Result<(), Status> {
    uuid::Uuid::parse_str(value).map(|_| ()).map_err(|_| Status::invalid_argument(format!("{field} must be a UUID")))
}

fn unreadable(attachment_id: &str, e: &object_store::Error) -> Status {
    tracing::error!(error = %e, %attachment_id, "a stored attachment cannot be read");
    Status::unavailable("the attachment cannot be read now; retry shortly")
}

fn database(e: &sqlx::Error) -> Status {
    tracing::warn!(error = %e, "media's database failed");
    Status::unavailable("media's database failed; retry shortly")
}

impl MediaGrpc {
    /// A stored attachment (not one still uploading).
    async fn stored(&self, id: &str) -> Result<Attachment, Status> {
        uuid("attachment_id", id)?;
        match self.records.get(id).await.map_err(|e| database(&e))? {
            Some((attachment, state)) if state == STORED => Ok(attachment),
            _ => Err(Status::not_found("no such attachment")),
        }
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MediaService for MediaGrpc {
    async fn upload(&self, request: Request<Streaming<UploadRequest>>) -> Result<Response<Attachment>, Status> {
        let attachment = upload::receive(&self.records, &self.blobs, &self.limits, request.into_inner()).await;
        crate::metrics::count_upload(match &attachment {
            Ok(stored) => {
                crate::metrics::get().uploaded_bytes.inc_by(stored.size);
                "stored"
            }
            Err(status) => match status.code() {
                tonic::Code::InvalidArgument => "invalid",
                tonic::Code::OutOfRange => "too_large",
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => "stalled",
                _ => "failed",
            },
        });
        attachment.map(Response::new)
    }

    type DownloadStream = DownloadStream;

    async fn download(&self, request: Request<DownloadRequest>) -> Result<Response<DownloadStream>, Status> {
        let request = request.into_inner();
        let attachment = self.stored(&request.attachment_id).await?;
        let (key, content_type, total) = if request.thumbnail {
            if !attachment.has_thumbnail {
                return Err(Status::not_found("the attachment has no thumbnail"));
            }
            let key = upload::thumbnail_key(&attachment.id);
            let size = self.blobs.size(&key).await.map_err(|e| unreadable(&attachment.id, &e))?;
            (key, attachment.thumbnail_type.clone(), size)
        } else {
            (upload::file_key(&attachment.id), attachment.content_type.clone(), attachment.size)
        };
        if request.offset >= total {
            return Err(Status::out_of_range(format!("the range starts past the end ({total} bytes)")));
        }
        let end = match request.length {
            0 => total,
            length => request.offset.saturating_add(length).min(total),
        };
        let bytes = self.blobs.read(&key, request.offset..end).await.map_err(|e| unreadable(&attachment.id, &e))?;
        let header = DownloadHeader {
            content_type,
            attachment: Some(attachment),
            total_size: total,
            offset: request.offset,
            length: end - request.offset,
        };
        let first = futures::stream::once(async move {
            Ok(DownloadResponse { part: Some(download_response::Part::Header(header)) })
        });
        let chunks = bytes.map(|chunk| match chunk {
            Ok(chunk) => {
                crate::metrics::get().downloaded_bytes.inc_by(chunk.len() as u64);
                Ok(DownloadResponse { part: Some(download_response::Part::Chunk(chunk)) })
            }
            Err(e) => {
                tracing::error!(error = %e, "reading an attachment failed midway");
                Err(Status::unavailable("reading the attachment failed"))
            }
        });
        Ok(Response::new(Box::pin(first.chain(chunks))))
    }

    async fn get_attachment(&self, request: Request<GetAttachmentRequest>) -> Result<Response<Attachment>, Status> {
        self.stored(&request.into_inner().attachment_id).await.map(Response::new)
    }

    async fn delete_user_files(
        &self,
        request: Request<DeleteUserFilesRequest>,
    ) -> Result<Response<DeleteUserFilesResponse>, Status> {
        let user_id = uuid::Uuid::parse_str(&request.into_inner().user_id)
            .map_err(|_| Status::invalid_argument("user_id must be a UUID"))?
            .to_string();
        let ids = self.records.start_deleting_all_of(&user_id).await.map_err(|e| database(&e))?;
        for id in &ids {
            crate::cleanup::remove(&self.records, &self.blobs, id, "erased").await.map_err(|e| {
                tracing::warn!(error = %e, attachment_id = %id, "cannot remove an erased user's file yet");
                Status::unavailable("a file could not be removed now; retry (the clean-up also finishes it)")
            })?;
        }
        Ok(Response::new(DeleteUserFilesResponse { files_removed: u32::try_from(ids.len()).unwrap_or(u32::MAX) }))
    }

    async fn claim_attachments(
        &self,
        request: Request<ClaimAttachmentsRequest>,
    ) -> Result<Response<ClaimAttachmentsResponse>, Status> {
        let request = request.into_inner();
        uuid("user_id", &request.user_id)?;
        uuid("conversation_id", &request.conversation_id)?;
        if request.attachment_ids.len() > CLAIM_MAX {
            return Err(Status::invalid_argument(format!("at most {CLAIM_MAX} attachments")));
        }
        for id in &request.attachment_ids {
            uuid("attachment_ids", id)?;
        }
        let now = chat_common::time::now_ms();
        let claimed =
            self.records.claim(&request.user_id, &request.conversation_id, &request.attachment_ids, now).await;
        match claimed {
            Ok(attachments) => Ok(Response::new(ClaimAttachmentsResponse { attachments })),
            Err(ClaimError::Unknown(id)) => Err(Status::not_found(format!("no such attachment: {id}"))),
            Err(ClaimError::ElsewhereAttached(id)) => {
                Err(Status::failed_precondition(format!("attachment {id} is attached in another conversation")))
            }
            Err(ClaimError::Database(e)) => Err(database(&e)),
        }
    }

    async fn get_usage(&self, request: Request<GetUsageRequest>) -> Result<Response<Usage>, Status> {
        let user_id = request.into_inner().user_id;
        uuid("user_id", &user_id)?;
        let used_bytes = self.records.used_bytes(&user_id).await.map_err(|e| database(&e))?;
        Ok(Response::new(Usage {
            used_bytes,
            quota_bytes: self.limits.quota_bytes,
            max_file_bytes: self.limits.max_file_bytes,
        }))
    }
}
