//! Removes the files nothing refers to, every `MEDIA_CLEAN_EVERY_SECS`:
//! - uploads an instance left unfinished when it stopped (no upload runs
//!   longer than `MEDIA_UPLOAD_MAX_SECS`);
//! - uploads no message attached within `MEDIA_UNATTACHED_TTL_SECS`;
//! - files attached to messages that no stored message carries any more
//!   (the messages were deleted, or their sends failed).
//!
//! The last needs care: a message that carries a file may be in the CHAT
//! stream and not yet in history's database. A send publishes its message
//! within the gateway's send timeout of attaching its files, so a file last
//! attached `MEDIA_SEND_WINDOW_SECS` before a checkpoint is carried only by
//! messages the stream held at that checkpoint; it is asked about once
//! history's consumer has stored the stream past that position, never before.

use std::time::Duration;

use chat_common::grpc::Channel;
use chat_common::shutdown::CancellationToken;
use chat_proto::history::v1::ReferencedAttachmentsRequest;
use chat_proto::history::v1::history_service_client::HistoryServiceClient;

use crate::blobs::Blobs;
use crate::records::{Records, Unused};
use crate::upload::{file_key, thumbnail_key};

/// Rows looked at per query.
const PAGE: i64 = 500;

pub struct Cleanup {
    pub records: Records,
    pub blobs: std::sync::Arc<Blobs>,
    pub history: HistoryServiceClient<Channel>,
    pub js: async_nats::jetstream::Context,
    pub upload_max: Duration,
    pub unattached_ttl: Duration,
    pub send_window: Duration,
    pub every: Duration,
}

/// A moment, and how far the CHAT stream reached then.
#[derive(Clone, Copy)]
struct Checkpoint {
    at_ms: i64,
    stream_last: u64,
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Cleanup {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut checkpoint = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
            if let Err(e) = self.round(&mut checkpoint).await {
                tracing::warn!(error = %e, "cannot clean up attachments now; trying again later");
            }
        }
    }

    async fn round(&self, checkpoint: &mut Option<Checkpoint>) -> anyhow::Result<()> {
        let now = chat_common::time::now_ms();
        for id in self.records.being_deleted(PAGE).await? {
            self.remove(&id, "cut_short").await?;
        }
        let unfinished_before = now - ms(self.upload_max + Duration::from_secs(60));
        for id in self.records.abandoned(unfinished_before, PAGE).await? {
            self.remove(&id, "unfinished").await?;
        }
        let unattached_before = now - ms(self.unattached_ttl);
        for id in self.records.unattached(unattached_before, PAGE).await? {
            if self.records.start_deleting(&id, Unused::Unattached, unattached_before).await? {
                self.remove(&id, "unattached").await?;
            }
        }
        let stream_last = self.stream_last().await?;
        match *checkpoint {
            Some(previous) if self.history_stored_through(previous.stream_last).await? => {
                self.remove_unreferenced(previous.at_ms - ms(self.send_window)).await?;
                *checkpoint = Some(Checkpoint { at_ms: now, stream_last });
            }
            Some(_) => tracing::debug!("history has not stored the stream past the checkpoint yet"),
            None => *checkpoint = Some(Checkpoint { at_ms: now, stream_last }),
        }
        Ok(())
    }

    /// Removes the files last attached before `before_ms` that no stored message carries.
    async fn remove_unreferenced(&self, before_ms: i64) -> anyhow::Result<()> {
        let mut after = String::new();
        loop {
            let page = self.records.attached_before(before_ms, &after, PAGE).await?;
            let Some(last) = page.last() else { return Ok(()) };
            after.clone_from(last);
            let request = ReferencedAttachmentsRequest { attachment_ids: page.clone() };
            let referenced = self.history.clone().referenced_attachments(request).await?.into_inner().attachment_ids;
            for id in page.iter().filter(|id| !referenced.contains(id)) {
                if self.records.start_deleting(id, Unused::Attached, before_ms).await? {
                    self.remove(id, "unreferenced").await?;
                }
            }
        }
    }

    async fn remove(&self, id: &str, why: &'static str) -> anyhow::Result<()> {
        remove(&self.records, &self.blobs, id, why).await
    }

    async fn stream_last(&self) -> anyhow::Result<u64> {
        let mut stream = self.js.get_stream(chat_common::nats::CHAT_STREAM).await?;
        Ok(stream.info().await?.state.last_sequence)
    }

    /// Whether history's consumer has stored every entry up to `position`.
    async fn history_stored_through(&self, position: u64) -> anyhow::Result<bool> {
        let stream = self.js.get_stream(chat_common::nats::CHAT_STREAM).await?;
        let info = stream.consumer_info(chat_common::nats::HISTORY_CONSUMER).await?;
        let idle = info.num_pending == 0 && info.num_ack_pending == 0;
        Ok(idle || info.ack_floor.stream_sequence >= position)
    }
}
/// Removes an attachment marked as being deleted: the bytes, then the row
/// (which gives the bytes back to the quota).
///
/// # Errors
/// When the store or the database fails (the mark stays; the clean-up finishes it).
pub async fn remove(records: &Records, blobs: &Blobs, id: &str, why: &'static str) -> anyhow::Result<()> {
    blobs.delete(&file_key(id)).await?;
    blobs.delete(&thumbnail_key(id)).await?;
    records.release(id).await?;
    crate::metrics::count_removed(why);
    tracing::info!(attachment_id = %id, why, "attachment removed");
    Ok(())
}
