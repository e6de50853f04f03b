//! One upload from its header to its last byte. The declared size is checked
//! against the file limit and reserved against the owner's quota before any
//! byte is stored; the type is decided from the first bytes, so a file of no
//! allowed type is refused as soon as they arrive; more or fewer bytes than
//! declared, a stalled sender or a failing store abort it. Whatever fails,
//! nothing stays stored and nothing stays counted.
//!
//! A file streams to the store as it arrives. An image is held whole (it is
//! bounded, and few are held at once) and kept only once `images` has checked
//! it, stripped its metadata and made its thumbnail.

use std::time::Duration;

use chat_proto::media::v1::upload_request::Part;
use chat_proto::media::v1::{Attachment, UploadHeader, UploadRequest};
use futures::{Stream, StreamExt};
use tonic::Status;

use crate::blobs::{BlobWriter, Blobs};
use crate::images;
use crate::records::{RecordError, Records};
use crate::sniff;

/// What bounds an upload.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub quota_bytes: u64,
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// Longest time for the whole upload.
    pub max: Duration,
    pub images: ImageLimits,
}

/// What bounds the images held and decoded.
#[derive(Debug, Clone)]
pub struct ImageLimits {
    /// The largest image file (images are held whole while they are checked).
    pub max_bytes: u64,
    /// The most pixels an image may have; a larger one is refused from its header.
    pub max_pixels: u64,
    /// Images held and decoded at once.
    pub permits: std::sync::Arc<tokio::sync::Semaphore>,
}

const MAX_NAME_BYTES: usize = 255;

/// The key of an attachment's bytes in the store.
pub fn file_key(id: &str) -> String {
    format!("files/{id}")
}

/// The key of an image's thumbnail in the store.
pub fn thumbnail_key(id: &str) -> String {
    format!("thumbnails/{id}")
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

fn check_header(header: &UploadHeader, limits: &Limits) -> Result<(), Status> {
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
    limits: &Limits,
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
    let stored = tokio::time::timeout(limits.max, store(blobs, &mut attachment, &mut parts, limits))
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("the upload took too long")));
    let stored = match stored {
        Ok(()) => records.mark_stored(&attachment).await.map_err(|e| unavailable("recording the upload", &e)),
        Err(refused) => Err(refused),
    };
    if let Err(refused) = stored {
        // The bytes first: a record without bytes is swept, bytes without a record never are.
        for key in [file_key(&attachment.id), thumbnail_key(&attachment.id)] {
            if let Err(e) = blobs.delete(&key).await {
                tracing::warn!(error = %e, attachment_id = %attachment.id, "cannot remove a failed upload's bytes");
            }
        }
        if let Err(e) = records.release(&attachment.id).await {
            tracing::warn!(error = %e, attachment_id = %attachment.id, "cannot release a failed upload");
        }
        return Err(refused);
    }
    Ok(attachment)
}

/// Where the bytes of an upload go once its type is known.
enum Sink {
    /// The first bytes, until they tell the type.
    Undecided(Vec<u8>),
    /// Any file but an image: streamed to the store.
    File(BlobWriter),
    /// An image: held whole (it is bounded) to be checked and stripped.
    Image(Vec<u8>, tokio::sync::OwnedSemaphorePermit),
}

/// Receives every chunk into the sink the first bytes choose, then keeps
/// the file (and an image's thumbnail).
async fn store(
    blobs: &Blobs,
    attachment: &mut Attachment,
    parts: &mut (impl Stream<Item = Result<UploadRequest, Status>> + Unpin),
    limits: &Limits,
) -> Result<(), Status> {
    let mut received: u64 = 0;
    let mut sink = Sink::Undecided(Vec::with_capacity(sniff::SNIFF_BYTES));
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
            match &mut sink {
                Sink::Undecided(first) => {
                    first.extend_from_slice(&chunk);
                    if first.len() >= sniff::SNIFF_BYTES {
                        sink = open_sink(blobs, attachment, std::mem::take(first), limits).await?;
                    }
                }
                Sink::File(writer) => writer.write(&chunk).await.map_err(|e| unavailable("storing the upload", &e))?,
                Sink::Image(bytes, _) => bytes.extend_from_slice(&chunk),
            }
        }
        if received < attachment.size {
            return Err(Status::invalid_argument(format!(
                "the upload ended after {received} of the {} bytes declared",
                attachment.size
            )));
        }
        if let Sink::Undecided(first) = &mut sink {
            sink = open_sink(blobs, attachment, std::mem::take(first), limits).await?;
        }
        Ok(())
    }
    .await;
    match (result, sink) {
        (Ok(()), Sink::File(writer)) => writer.finish().await.map_err(|e| unavailable("completing the upload", &e)),
        (Ok(()), Sink::Image(bytes, permit)) => keep_image(blobs, attachment, bytes, limits, permit).await,
        (Ok(()), Sink::Undecided(_)) => Err(Status::internal("an upload ended undecided")),
        (Err(refused), Sink::File(writer)) => {
            writer.abort().await;
            Err(refused)
        }
        (Err(refused), _) => Err(refused),
    }
}

/// Decides the type from the first bytes and opens the sink for it, with
/// those bytes in it.
async fn open_sink(
    blobs: &Blobs,
    attachment: &mut Attachment,
    first: Vec<u8>,
    limits: &Limits,
) -> Result<Sink, Status> {
    attachment.content_type = decide(&first)?;
    if images::TYPES.contains(&attachment.content_type.as_str()) {
        if attachment.size > limits.images.max_bytes {
            return Err(Status::out_of_range(format!("an image is at most {} bytes", limits.images.max_bytes)));
        }
        // Few images are held and decoded at once: each may take a lot of memory.
        let permit = limits.images.permits.clone().acquire_owned().await.map_err(|_| Status::unavailable("closing"))?;
        let mut bytes = Vec::with_capacity(usize::try_from(attachment.size).unwrap_or_default());
        bytes.extend_from_slice(&first);
        return Ok(Sink::Image(bytes, permit));
    }
    let mut writer =
        blobs.writer(&file_key(&attachment.id)).await.map_err(|e| unavailable("starting to store the upload", &e))?;
    writer.write(&first).await.map_err(|e| unavailable("storing the upload", &e))?;
    Ok(Sink::File(writer))
}

/// Checks, strips and keeps an image with its thumbnail.
async fn keep_image(
    blobs: &Blobs,
    attachment: &mut Attachment,
    bytes: Vec<u8>,
    limits: &Limits,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), Status> {
    let content_type = attachment.content_type.clone();
    let max_pixels = limits.images.max_pixels;
    let processed = tokio::task::spawn_blocking(move || {
        let processed = images::process(&content_type, bytes, max_pixels);
        drop(permit);
        processed
    })
    .await
    .map_err(|_| Status::internal("processing the image failed"))?
    .map_err(|refused| Status::invalid_argument(refused.0))?;
    attachment.size = processed.bytes.len() as u64;
    attachment.width = processed.width;
    attachment.height = processed.height;
    attachment.blurhash = processed.blurhash;
    attachment.has_thumbnail = true;
    attachment.thumbnail_type = processed.thumbnail_type.to_owned();
    blobs.put(&file_key(&attachment.id), processed.bytes).await.map_err(|e| unavailable("storing the image", &e))?;
    blobs
        .put(&thumbnail_key(&attachment.id), processed.thumbnail)
        .await
        .map_err(|e| unavailable("storing the thumbnail", &e))
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
