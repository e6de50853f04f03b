//! `/v1/attachments` (addition to protocol v1): files people attach to
//! messages. An upload streams the request body to media chunk by chunk, so
//! the gateway holds one chunk of it at a time whatever the file's size; its
//! declared length is checked against the file limit and the uploader's quota
//! before a byte of it is read. A download streams media's reply, whole or one
//! byte range.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_proto::history::v1::AttachmentReadableRequest;
use chat_proto::media::v1::{
    Attachment, DownloadRequest, GetAttachmentRequest, GetUsageRequest, UploadHeader, UploadRequest, download_response,
    upload_request,
};
use futures::StreamExt;
use serde_json::{Value, json};

use super::extract::{AuthUser, Path};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::{AttachmentJson, rfc3339_ms};

/// An upload as clients see it: as a message shows it, and when it was made.
pub fn attachment_json(a: Attachment) -> Value {
    let created_at = rfc3339_ms(a.created_at_ms);
    let attachment = crate::messaging::attachment_of(a);
    let mut body = json!(AttachmentJson::from(&attachment));
    body["created_at"] = created_at.into();
    body
}

fn declared_length(headers: &HeaderMap) -> Result<u64, ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .ok_or_else(|| ApiError::invalid_argument("an upload needs a Content-Length header"))?;
    length.to_str().ok().and_then(|l| l.parse().ok()).ok_or_else(|| ApiError::invalid_argument("bad Content-Length"))
}

/// `POST /v1/attachments?name=<file name>`, the file's bytes as the body.
pub async fn upload(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = query.get("name").cloned().ok_or_else(|| ApiError::invalid_argument("name is required"))?;
    let size = declared_length(&headers)?;
    if size == 0 {
        return Err(ApiError::invalid_argument("the file is empty"));
    }
    let usage = state.media.clone().get_usage(GetUsageRequest { user_id: me.user_id.to_string() }).await?.into_inner();
    if size > usage.max_file_bytes {
        return Err(ApiError::too_large(format!(
            "the file is larger than the limit of {} bytes",
            usage.max_file_bytes
        )));
    }
    if usage.used_bytes.saturating_add(size) > usage.quota_bytes {
        return Err(ApiError::too_large(format!(
            "the file would pass your storage quota of {} bytes ({} used)",
            usage.quota_bytes, usage.used_bytes
        )));
    }

    let header = UploadHeader { owner_id: me.user_id.to_string(), name, size };
    let first = UploadRequest { part: Some(upload_request::Part::Header(header)) };
    // Each chunk must come within the body timeout; a stalled client ends
    // the stream early, and media refuses the upload as short.
    let stalled = Arc::new(AtomicBool::new(false));
    let idle = state.config.body_timeout;
    let chunks =
        futures::stream::unfold((body.into_data_stream(), stalled.clone()), move |(mut body, stalled)| async move {
            loop {
                match tokio::time::timeout(idle, body.next()).await {
                    Ok(Some(Ok(chunk))) if chunk.is_empty() => {}
                    Ok(Some(Ok(chunk))) => {
                        let part = UploadRequest { part: Some(upload_request::Part::Chunk(chunk)) };
                        return Some((part, (body, stalled)));
                    }
                    Ok(Some(Err(_)) | None) => return None,
                    Err(_) => {
                        stalled.store(true, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        });
    let stored = state.media.clone().upload(futures::stream::once(async { first }).chain(chunks)).await;
    if stalled.load(Ordering::Relaxed) {
        crate::brakes::count("body_timeout");
        return Err(ApiError::request_timeout());
    }
    match stored {
        Ok(attachment) => Ok((StatusCode::CREATED, Json(attachment_json(attachment.into_inner())))),
        Err(status) if status.code() == tonic::Code::OutOfRange => Err(ApiError::too_large(status.message())),
        Err(status) => Err(status.into()),
    }
}

/// The attachment, if `me` may read it: its uploader may, and whoever may
/// read a stored message that carries it (history decides, as for the message).
async fn readable(state: &AppState, me: &crate::tokens::Identity, id: &str) -> Result<Attachment, ApiError> {
    let id = uuid::Uuid::parse_str(id).map_err(|_| ApiError::invalid_argument("attachment_id must be a UUID"))?;
    let attachment_id = id.to_string();
    let attachment =
        state.media.clone().get_attachment(GetAttachmentRequest { attachment_id: attachment_id.clone() }).await?;
    let attachment = attachment.into_inner();
    if attachment.owner_id == *me.user_id {
        return Ok(attachment);
    }
    let asked = AttachmentReadableRequest { user_id: me.user_id.to_string(), attachment_id };
    if state.history.clone().attachment_readable(asked).await?.into_inner().readable {
        return Ok(attachment);
    }
    // The same answer as for an unknown id: no probing for others' files.
    Err(ApiError::not_found("no such attachment"))
}

/// `GET /v1/attachments/{attachment_id}`: what is known about it.
pub async fn get(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(attachment_json(readable(&state, &me, &id).await?)))
}

/// A `Range` header the way browsers and media players send it: one range
/// of bytes. Several ranges, or another unit, are served as the whole file.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    /// From `start`, `length` bytes.
    Part {
        start: u64,
        length: u64,
    },
    Unsatisfiable,
}

fn wanted(range: Option<&HeaderValue>, total: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.to_str().ok()).and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if total == 0 {
        return Wanted::Whole;
    }
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else { return Wanted::Whole };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        // The last `n` bytes.
        (true, false) => match number(last) {
            Some(0) => return Wanted::Unsatisfiable,
            Some(n) => (total.saturating_sub(n), total - 1),
            None => return Wanted::Whole,
        },
        (false, true) => match number(first) {
            Some(start) => (start, total.saturating_sub(1)),
            None => return Wanted::Whole,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => (start, end.min(total.saturating_sub(1))),
            _ => return Wanted::Whole,
        },
        (true, true) => return Wanted::Whole,
    };
    if start >= total {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part { start, length: end - start + 1 }
}

/// `GET /v1/attachments/{attachment_id}/content`: the file's bytes, whole or
/// the one range asked for (206).
pub async fn content(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let attachment = readable(&state, &me, &id).await?;
    let total = attachment.size;
    let (offset, length) = match wanted(headers.get(header::RANGE), total) {
        Wanted::Whole => (0, 0),
        Wanted::Part { start, length } => (start, length),
        Wanted::Unsatisfiable => {
            let error = ApiError::invalid_argument(format!("the range is outside the file ({total} bytes)"));
            let mut response = error.into_response();
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    stream(&state, attachment, false, offset, length).await
}

/// `GET /v1/attachments/{attachment_id}/thumbnail`: an image's thumbnail, whole.
pub async fn thumbnail(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let attachment = readable(&state, &me, &id).await?;
    if !attachment.has_thumbnail {
        return Err(ApiError::not_found("the attachment has no thumbnail"));
    }
    stream(&state, attachment, true, 0, 0).await
}

/// Streams the file (or its thumbnail) from media, from `offset`, `length`
/// bytes (0: to the end).
async fn stream(
    state: &AppState,
    attachment: Attachment,
    thumbnail: bool,
    offset: u64,
    length: u64,
) -> Result<Response, ApiError> {
    let request = DownloadRequest { attachment_id: attachment.id.clone(), thumbnail, offset, length };
    let mut reply = state.media.clone().download(request).await?.into_inner();
    let Some(Ok(first)) = reply.next().await else {
        return Err(ApiError::unavailable("the attachment cannot be read now; retry shortly"));
    };
    let Some(download_response::Part::Header(sent)) = first.part else {
        return Err(ApiError::internal());
    };
    let bytes = reply.map(|part| match part {
        Ok(chat_proto::media::v1::DownloadResponse { part: Some(download_response::Part::Chunk(chunk)) }) => Ok(chunk),
        Ok(_) => Err(std::io::Error::other("an unexpected part in a download")),
        // The response has begun: breaking the body is the only way left to say so.
        Err(status) => Err(std::io::Error::other(status.message().to_owned())),
    });
    let partial = sent.length < sent.total_size;
    let mut response = Response::new(Body::from_stream(bytes));
    *response.status_mut() = if partial { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, sent.content_type);
    set(header::CONTENT_LENGTH, sent.length.to_string());
    set(header::ACCEPT_RANGES, "bytes".to_owned());
    if partial {
        let last = sent.offset + sent.length - 1;
        set(header::CONTENT_RANGE, format!("bytes {}-{last}/{}", sent.offset, sent.total_size));
    }
    set(header::CONTENT_DISPOSITION, disposition(&attachment));
    set(header::CACHE_CONTROL, "private, max-age=3600".to_owned());
    // Files are what people uploaded: never run as a page of this origin.
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned());
    set(header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_owned());
    Ok(response)
}

/// Images, audio and video show in place; anything else downloads. The
/// name is given percent-encoded (RFC 6266, RFC 8187).
fn disposition(attachment: &Attachment) -> String {
    let inline = ["image/", "audio/", "video/"].iter().any(|kind| attachment.content_type.starts_with(kind));
    let mut encoded = String::new();
    for byte in attachment.name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{}; filename*=UTF-8''{encoded}", if inline { "inline" } else { "attachment" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, total: u64) -> Wanted {
        wanted(Some(&HeaderValue::from_str(value).unwrap()), total)
    }

    #[test]
    fn one_range_of_bytes_is_served_as_asked_and_clamped_to_the_file() {
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(range("bytes=0-9", 100), Wanted::Part { start: 0, length: 10 });
        assert_eq!(range("bytes=90-", 100), Wanted::Part { start: 90, length: 10 });
        assert_eq!(range("bytes=-5", 100), Wanted::Part { start: 95, length: 5 });
        assert_eq!(range("bytes=-500", 100), Wanted::Part { start: 0, length: 100 });
        assert_eq!(range("bytes=50-1000", 100), Wanted::Part { start: 50, length: 50 });
        let most = u64::MAX;
        assert_eq!(range(&format!("bytes=0-{most}"), 100), Wanted::Part { start: 0, length: 100 });
        assert_eq!(range(&format!("bytes=-{most}"), 100), Wanted::Part { start: 0, length: 100 });
        assert_eq!(range(&format!("bytes={most}-"), 100), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=99999999999999999999-", 100), Wanted::Whole, "past u64: not a number");
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable_and_odd_ones_mean_the_whole_file() {
        assert_eq!(range("bytes=100-", 100), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=100-200", 100), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=-0", 100), Wanted::Unsatisfiable);
        for odd in ["bytes=0-1,5-6", "items=0-1", "bytes=9-2", "bytes=x-", "bytes=-", "bytes=5"] {
            assert_eq!(range(odd, 100), Wanted::Whole, "{odd}");
        }
    }

    #[test]
    fn file_names_are_percent_encoded_in_the_disposition() {
        let pdf = Attachment {
            name: "Q3 report \"final\".pdf".into(),
            content_type: "application/pdf".into(),
            ..Default::default()
        };
        assert_eq!(disposition(&pdf), "attachment; filename*=UTF-8''Q3%20report%20%22final%22.pdf");
        let photo = Attachment { name: "été.jpg".into(), content_type: "image/jpeg".into(), ..Default::default() };
        assert_eq!(disposition(&photo), "inline; filename*=UTF-8''%C3%A9t%C3%A9.jpg");
    }
}
