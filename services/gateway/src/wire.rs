//! The JSON shapes of protocol v1 that are shared by HTTP and WebSocket:
//! `Message` (with its attachments), timestamps and cursors.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_proto::events::v1::{Attachment, Message};
use serde::Serialize;

/// `Message` of the protocol.
#[derive(Debug, Serialize)]
pub struct MessageJson<'a> {
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub seq: u64,
    pub sender_id: &'a str,
    pub sender_device_id: &'a str,
    pub client_msg_id: &'a str,
    pub body: &'a str,
    pub sent_at: String,
    /// Only on system messages (addition to v1): what happened to the conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemJson<'a>>,
    /// Only on edited messages (addition to v1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// Only on deleted messages (addition to v1): the body is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Only on messages with files (addition to v1).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentJson<'a>>,
    /// Only on messages from a user the reader blocked (addition to v1): the
    /// body, files and `client_msg_id` are left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl MessageJson<'_> {
    /// The message as a reader who blocked its sender sees it: its place in
    /// `seq` and who sent it, nothing of what it says. A system message (a
    /// change to the conversation) is shown whole.
    pub fn hidden(self) -> Self {
        if self.system.is_some() {
            return self;
        }
        Self { body: "", client_msg_id: "", attachments: Vec::new(), hidden: true, ..self }
    }

    /// The message as `viewer` sees it.
    pub fn for_viewer(self, blocks: &chat_common::blocks::Blocks, viewer: &str) -> Self {
        if blocks.hides(viewer, self.sender_id) { self.hidden() } else { self }
    }
}

/// A file as messages and uploads show it (addition to v1): where to fetch
/// it, and for images their size, a thumbnail and a blurred placeholder.
#[derive(Debug, Serialize)]
pub struct AttachmentJson<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub content_type: &'a str,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blurhash: Option<&'a str>,
}

impl<'a> From<&'a Attachment> for AttachmentJson<'a> {
    fn from(a: &'a Attachment) -> Self {
        let image = a.width > 0 && a.height > 0;
        Self {
            id: &a.id,
            name: &a.name,
            content_type: &a.content_type,
            size: a.size,
            width: image.then_some(a.width),
            height: image.then_some(a.height),
            url: format!("/v1/attachments/{}/content", a.id),
            thumbnail_url: a.has_thumbnail.then(|| format!("/v1/attachments/{}/thumbnail", a.id)),
            blurhash: Some(a.blurhash.as_str()).filter(|b| !b.is_empty()),
        }
    }
}

/// `system` of a system message: the event, the members it is about, and the
/// new title or role where the event sets one.
#[derive(Debug, Serialize)]
pub struct SystemJson<'a> {
    pub event: &'a str,
    pub user_ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
}

impl<'a> From<&'a Message> for MessageJson<'a> {
    fn from(m: &'a Message) -> Self {
        Self {
            conversation_id: &m.conversation_id,
            message_id: &m.message_id,
            seq: m.seq,
            sender_id: &m.sender_id,
            sender_device_id: &m.sender_device_id,
            client_msg_id: &m.client_msg_id,
            body: &m.body,
            sent_at: rfc3339_ms(m.sent_at_ms),
            system: m.system.as_ref().map(|s| SystemJson {
                event: s.kind().word(),
                user_ids: &s.user_ids,
                title: Some(s.title.as_str()).filter(|t| !t.is_empty()),
                role: Some(s.role().word()).filter(|r| !r.is_empty()),
            }),
            edited_at: (m.edited_at_ms != 0).then(|| rfc3339_ms(m.edited_at_ms)),
            deleted_at: (m.deleted_at_ms != 0).then(|| rfc3339_ms(m.deleted_at_ms)),
            attachments: m.attachments.iter().map(AttachmentJson::from).collect(),
            hidden: false,
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T15:04:05.123Z`.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            let f = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&f).ok()
        })
        .unwrap_or_default()
}

const CURSOR_PREFIX: &str = "s1:";

/// A cursor names a position in the CHAT stream: everything at or before it
/// has been delivered. Clients treat it as opaque.
pub fn encode_cursor(stream_seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{stream_seq}"))
}

/// `None` for anything this gateway did not issue.
pub fn decode_cursor(cursor: &str) -> Option<u64> {
    if cursor.is_empty() || cursor.len() > 64 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    text.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_foreign_strings() {
        assert_eq!(decode_cursor(&encode_cursor(0)), Some(0));
        assert_eq!(decode_cursor(&encode_cursor(u64::MAX)), Some(u64::MAX));
        assert_eq!(decode_cursor("garbage!"), None);
        assert_eq!(decode_cursor(""), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("s1:-4")), None);
    }

    #[test]
    fn a_system_message_says_what_happened_and_only_the_fields_the_event_sets() {
        let mut message = Message::default();
        let system =
            chat_proto::events::v1::SystemEvent { user_ids: vec!["u".into()], title: "T".into(), ..Default::default() };
        message.system = Some(system);
        let json = serde_json::to_value(MessageJson::from(&message)).unwrap();
        let event = json["system"]["event"].clone();
        assert_eq!(json["system"], serde_json::json!({ "event": event, "user_ids": ["u"], "title": "T" }));
        assert!(serde_json::to_value(MessageJson::from(&Message::default())).unwrap().get("system").is_none());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
