//! One upload from its header to its last byte. The declared size is checked
//! against the file limit and reserved against the owner's quota before any
//! byte is stored; the type is decided from the first bytes, so a file of no
//! allowed type is refused as soon as they arrive; more or fewer bytes than
//! declared, a stalled sender or a failing store abort it. Whatever fails,
//! nothing stays stored and nothing stays counted.

use std::time::Duration;

use chat_proto::media::v1::upload_request::Part;
use chat_proto::media::v1::{Attachment, UploadHeader, UploadRequest};
use futures::{Stream, StreamExt};
use tonic::Status;

use crate::blobs::{BlobWriter, Blobs};
use crate::records::{RecordError, Records};
use crate::sniff;

/// What bounds an upload.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub quota_bytes: u64,
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// Longest time for the whole upload.
    pub max: Duration,
}

const MAX_NAME_BYTES: usize = 255;

/// The key of an attachment's bytes in the store.
pub fn file_key(id: &str) -> String {
    format!("files/{id}")
}

/// A file name as a person would type it: no path, nothing invisible.
///
/// # Errors
/// `invalid_argument` saying what is wrong with it.
pub fn check_name(name: &str) -> Result<(), Status> {
    let refuse = |why: &str| Err(Status::invalid_argument(format!("the file name {why}")));
    if name.trim().is_empty() {
        return refuse("is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse(&format!("is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.contains(['/', '\\']) {
        return refuse("contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return refuse("contains a control character");
    }
    if name == "." || name == ".." {
        return refuse("names a directory");
    }
    Ok(())
}

fn check_header(header: &UploadHeader, limits: Limits) -> Result<(), Status> {
    uuid::Uuid::parse_str(&header.owner_id).map_err(|_| Status::invalid_argument("owner_id must be a UUID"))?;
    check_name(&header.name)?;
    if header.size == 0 {
        return Err(Status::invalid_argument("the file is empty"));
    }
    if header.size > limits.max_file_bytes {
        return Err(Status::out_of_range(format!(
            "the file is larger than the limit of {} bytes",
            limits.max_file_bytes
        )));
    }
    Ok(())
}

/// Receives one upload and returns what was stored.
///
/// # Errors
/// As the module says; `unavailable` when the database or the store fails.
pub async fn receive(
    records: &Records,
    blobs: &Blobs,
    limits: Limits,
    mut parts: impl Stream<Item = Result<UploadRequest, Status>> + Unpin,
) -> Result<Attachment, Status> {
    let header = match next_part(&mut parts, limits.idle).await? {
        Some(Part::Header(header)) => header,
        _ => return Err(Status::invalid_argument("an upload starts with its header")),
    };
    check_header(&header, limits)?;
    let mut attachment = Attachment {
        id: uuid::Uuid::now_v7().to_string(),
        owner_id: header.owner_id,
        name: header.name,
        size: header.size,
        created_at_ms: chat_common::time::now_ms(),
        ..Default::default()
    };
    match records.reserve(&attachment, limits.quota_bytes).await {
        Ok(()) => {}
        Err(RecordError::OverQuota { quota }) => {
            return Err(Status::out_of_range(format!("the file would pass your storage quota of {quota} bytes")));
        }
        Err(RecordError::Database(e)) => return Err(unavailable("reserving the upload", &e)),
    }
    let stored = match blobs.writer(&file_key(&attachment.id)).await {
        Ok(writer) => tokio::time::timeout(limits.max, store(writer, &mut attachment, &mut parts, limits))
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the upload took too long"))),
        Err(e) => Err(unavailable("starting to store the upload", &e)),
    };
    let stored = match stored {
        Ok(()) => records.mark_stored(&attachment).await.map_err(|e| unavailable("recording the upload", &e)),
        Err(refused) => Err(refused),
    };
    if let Err(refused) = stored {
        // The bytes first: a record without bytes is swept, bytes without a record never are.
        if let Err(e) = blobs.delete(&file_key(&attachment.id)).await {
            tracing::warn!(error = %e, attachment_id = %attachment.id, "cannot remove a failed upload's bytes");
        }
        if let Err(e) = records.release(&attachment.id).await {
            tracing::warn!(error = %e, attachment_id = %attachment.id, "cannot release a failed upload");
        }
        return Err(refused);
    }
    Ok(attachment)
}

/// Writes every chunk, deciding the content type from the first bytes.
async fn store(
    mut writer: BlobWriter,
    attachment: &mut Attachment,
    parts: &mut (impl Stream<Item = Result<UploadRequest, Status>> + Unpin),
    limits: Limits,
) -> Result<(), Status> {
    let mut received: u64 = 0;
    let mut prefix = Vec::with_capacity(sniff::SNIFF_BYTES);
    let result = async {
        loop {
            let chunk = match next_part(parts, limits.idle).await? {
                Some(Part::Chunk(chunk)) => chunk,
                Some(Part::Header(_)) => return Err(Status::invalid_argument("an upload has one header")),
                None => break,
            };
            received += chunk.len() as u64;
            if received > attachment.size {
                return Err(Status::invalid_argument(format!("more bytes than the {} declared", attachment.size)));
            }
            if attachment.content_type.is_empty() {
                let wanted = sniff::SNIFF_BYTES - prefix.len();
                prefix.extend_from_slice(&chunk[..chunk.len().min(wanted)]);
                if prefix.len() == sniff::SNIFF_BYTES {
                    attachment.content_type = decide(&prefix)?;
                }
            }
            writer.write(&chunk).await.map_err(|e| unavailable("storing the upload", &e))?;
        }
        if received < attachment.size {
            return Err(Status::invalid_argument(format!(
                "the upload ended after {received} of the {} bytes declared",
                attachment.size
            )));
        }
        if attachment.content_type.is_empty() {
            attachment.content_type = decide(&prefix)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => writer.finish().await.map_err(|e| unavailable("completing the upload", &e)),
        Err(refused) => {
            writer.abort().await;
            Err(refused)
        }
    }
}

fn decide(prefix: &[u8]) -> Result<String, Status> {
    sniff::content_type(prefix)
        .map(str::to_owned)
        .ok_or_else(|| Status::invalid_argument("the file's bytes are of no allowed type"))
}

async fn next_part(
    parts: &mut (impl Stream<Item = Result<UploadRequest, Status>> + Unpin),
    idle: Duration,
) -> Result<Option<Part>, Status> {
    match tokio::time::timeout(idle, parts.next()).await {
        Err(_) => Err(Status::deadline_exceeded("the upload stalled")),
        Ok(None) => Ok(None),
        Ok(Some(Err(status))) => Err(status),
        Ok(Some(Ok(UploadRequest { part: None }))) => Err(Status::invalid_argument("an empty upload message")),
        Ok(Some(Ok(UploadRequest { part: Some(part) }))) => Ok(Some(part)),
    }
}

fn unavailable(doing: &str, error: &dyn std::fmt::Display) -> Status {
    tracing::warn!(error = %error, "{doing} failed");
    Status::unavailable(format!("{doing} failed; retry shortly"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_paths_or_invisible_characters_are_refused() {
        for good in ["holiday.jpg", "Résumé 2026 (final).pdf", "..hidden", "a b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "  ", "../etc/passwd", "a/b", "a\\b", "bell\u{7}.txt", "line\nbreak", "nul\0", ".", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
    }
}
