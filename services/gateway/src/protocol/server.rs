//! Server → client frames of protocol v1, written by serde. A frame borrows
//! what it shows and is written once: a stream event's text is shared by every
//! socket it goes to.

use chat_proto::events::v1::{Message, ReadMarkerMoved};
use chat_proto::presence::v1::PresenceStatus;
use serde::Serialize;

use super::TypingState;
use crate::error::ErrorCode;
use crate::wire::{MessageJson, encode_cursor, rfc3339_ms};

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// The socket is authenticated; live delivery starts after `cursor`.
    Ready {
        user_id: &'a str,
        device_id: &'a str,
        cursor: String,
        /// Deliveries notification holds for the user (addition to v1).
        #[serde(skip_serializing_if = "Option::is_none")]
        pending_deliveries: Option<usize>,
    },
    /// Catch-up is done; `req` when a `sync` asked for it.
    Synced {
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<i64>,
        cursor: String,
    },
    Ack {
        req: i64,
        message: MessageJson<'a>,
    },
    Message {
        message: MessageJson<'a>,
        cursor: String,
    },
    /// Addition to v1.
    MessageEdited {
        message: MessageJson<'a>,
        cursor: String,
    },
    /// Addition to v1.
    MessageDeleted {
        message: MessageJson<'a>,
        cursor: String,
    },
    Read {
        conversation_id: &'a str,
        user_id: &'a str,
        seq: u64,
    },
    Typing {
        conversation_id: &'a str,
        user_id: &'a str,
        state: TypingState,
    },
    Presence {
        user_id: &'a str,
        #[serde(serialize_with = "word")]
        status: PresenceStatus,
        /// Null when the user was never seen.
        last_seen_at: Option<String>,
    },
    Pong {
        req: i64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<i64>,
        code: ErrorCode,
        message: &'a str,
        /// How long until the same frame would be accepted (addition to v1).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// A contract enum as its protocol v1 word.
fn word<S: serde::Serializer>(status: &PresenceStatus, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(status.word())
}

impl<'a> ServerFrame<'a> {
    /// The `message` frame of a stored message, with its cursor.
    pub fn message(message: &'a Message, stream_seq: u64) -> Self {
        Self::Message { message: message.into(), cursor: encode_cursor(stream_seq) }
    }

    /// The `message_edited` or `message_deleted` frame of a change, with its cursor.
    pub fn change(message: &'a Message, stream_seq: u64) -> Self {
        let (message_json, cursor) = (message.into(), encode_cursor(stream_seq));
        if message.deleted_at_ms != 0 {
            Self::MessageDeleted { message: message_json, cursor }
        } else {
            Self::MessageEdited { message: message_json, cursor }
        }
    }

    /// The same frame for a reader who blocked the sender of the message it
    /// carries (see `MessageJson::hidden`); any other frame is left as it is.
    pub fn hidden(self) -> Self {
        match self {
            Self::Message { message, cursor } => Self::Message { message: message.hidden(), cursor },
            Self::MessageEdited { message, cursor } => Self::MessageEdited { message: message.hidden(), cursor },
            Self::MessageDeleted { message, cursor } => Self::MessageDeleted { message: message.hidden(), cursor },
            other => other,
        }
    }

    /// The frame as `viewer` sees it: hidden if it carries a message from
    /// someone they blocked.
    pub fn for_viewer(self, blocks: &chat_common::blocks::Blocks, viewer: &str) -> Self {
        let (Self::Message { message, .. }
        | Self::MessageEdited { message, .. }
        | Self::MessageDeleted { message, .. }) = &self
        else {
            return self;
        };
        if blocks.hides(viewer, message.sender_id) { self.hidden() } else { self }
    }

    /// The `read` frame of a marker move.
    pub fn read(event: &'a ReadMarkerMoved) -> Self {
        Self::Read { conversation_id: &event.conversation_id, user_id: &event.user_id, seq: event.seq }
    }

    /// The `presence` frame of a user: `last_seen_at` is now for an online
    /// user, when the last device went away for an offline one, null when never seen.
    pub fn presence(user_id: &'a str, online: bool, last_seen_at_ms: i64) -> Self {
        Self::Presence {
            user_id,
            status: PresenceStatus::of(online),
            last_seen_at: last_seen_at(online, last_seen_at_ms),
        }
    }

    /// An `error` frame; counted in the errors metric, as each is sent once.
    pub fn error(req: Option<i64>, code: ErrorCode, message: &'a str, retry_after_ms: Option<u64>) -> Self {
        code.count();
        Self::Error { req, code, message, retry_after_ms }
    }

    /// The frame's text.
    pub fn to_text(&self) -> String {
        // Writing to a string cannot fail, nor can these types (no maps with
        // non-string keys, no fallible `Serialize`).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A user's `last_seen_at` as protocol v1 shows it (frames and HTTP alike).
pub fn last_seen_at(online: bool, last_seen_at_ms: i64) -> Option<String> {
    match (online, last_seen_at_ms) {
        (true, _) => Some(rfc3339_ms(chat_common::time::now_ms())),
        (false, 0) => None,
        (false, ms) => Some(rfc3339_ms(ms)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn message() -> Message {
        Message {
            conversation_id: "c".into(),
            message_id: "m".into(),
            seq: 3,
            sender_id: "u".into(),
            sender_device_id: "d".into(),
            client_msg_id: "k".into(),
            body: "hi".into(),
            sent_at_ms: 1_700_000_000_123,
            ..Default::default()
        }
    }

    fn parsed(frame: &ServerFrame<'_>) -> Value {
        serde_json::from_str(&frame.to_text()).unwrap()
    }

    /// Each frame holds the same JSON as the frame built by hand before the
    /// typed frames (`json!` objects), field for field.
    #[test]
    fn frames_hold_the_json_of_protocol_v1() {
        let m = message();
        let message_json = json!({
            "conversation_id": "c", "message_id": "m", "seq": 3, "sender_id": "u", "sender_device_id": "d",
            "client_msg_id": "k", "body": "hi", "sent_at": "2023-11-14T22:13:20.123Z",
        });
        let cursor = encode_cursor(42);
        assert_eq!(
            parsed(&ServerFrame::message(&m, 42)),
            json!({ "type": "message", "message": message_json, "cursor": cursor })
        );
        assert_eq!(
            parsed(&ServerFrame::Ack { req: 7, message: (&m).into() }),
            json!({ "type": "ack", "req": 7, "message": message_json })
        );
        assert_eq!(
            parsed(&ServerFrame::Ready {
                user_id: "u",
                device_id: "d",
                cursor: cursor.clone(),
                pending_deliveries: None
            }),
            json!({ "type": "ready", "user_id": "u", "device_id": "d", "cursor": cursor })
        );
        assert_eq!(
            parsed(&ServerFrame::Ready {
                user_id: "u",
                device_id: "d",
                cursor: cursor.clone(),
                pending_deliveries: Some(2)
            }),
            json!({ "type": "ready", "user_id": "u", "device_id": "d", "cursor": cursor, "pending_deliveries": 2 })
        );
        assert_eq!(
            parsed(&ServerFrame::Synced { req: None, cursor: cursor.clone() }),
            json!({ "type": "synced", "cursor": cursor })
        );
        assert_eq!(
            parsed(&ServerFrame::Synced { req: Some(4), cursor: cursor.clone() }),
            json!({ "type": "synced", "req": 4, "cursor": cursor })
        );
        assert_eq!(parsed(&ServerFrame::Pong { req: 9 }), json!({ "type": "pong", "req": 9 }));
        let marker =
            ReadMarkerMoved { conversation_id: "c".into(), user_id: "u".into(), device_id: "d".into(), seq: 5 };
        assert_eq!(
            parsed(&ServerFrame::read(&marker)),
            json!({ "type": "read", "conversation_id": "c", "user_id": "u", "seq": 5 })
        );
        assert_eq!(
            parsed(&ServerFrame::Typing { conversation_id: "c", user_id: "u", state: TypingState::Start }),
            json!({ "type": "typing", "conversation_id": "c", "user_id": "u", "state": "start" })
        );
        assert_eq!(
            parsed(&ServerFrame::presence("u", false, 0)),
            json!({ "type": "presence", "user_id": "u", "status": "offline", "last_seen_at": null })
        );
        assert_eq!(
            parsed(&ServerFrame::presence("u", false, 1_700_000_000_123)),
            json!({ "type": "presence", "user_id": "u", "status": "offline", "last_seen_at": "2023-11-14T22:13:20.123Z" })
        );
        assert_eq!(parsed(&ServerFrame::presence("u", true, 0))["status"], "online");
        assert_eq!(
            parsed(&ServerFrame::error(None, ErrorCode::InvalidFrame, "no", None)),
            json!({ "type": "error", "code": "invalid_frame", "message": "no" })
        );
        assert_eq!(
            parsed(&ServerFrame::error(Some(1), ErrorCode::RateLimited, "slow", Some(250))),
            json!({ "type": "error", "req": 1, "code": "rate_limited", "message": "slow", "retry_after_ms": 250 })
        );
    }

    #[test]
    fn a_change_is_an_edit_or_a_deletion() {
        let mut m = message();
        m.edited_at_ms = 1_700_000_000_123;
        let edited = parsed(&ServerFrame::change(&m, 5));
        assert_eq!(edited["type"], "message_edited");
        assert_eq!(edited["message"]["edited_at"], "2023-11-14T22:13:20.123Z");
        m.deleted_at_ms = 1_700_000_000_124;
        assert_eq!(parsed(&ServerFrame::change(&m, 5))["type"], "message_deleted");
    }
}
