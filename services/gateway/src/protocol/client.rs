//! Client → server frames of protocol v1. [`ClientFrame`] is the frame as the
//! session handles it; [`parse`] reads one in two steps: serde reads the text
//! into [`RawFrame`], which keeps every field as the client sent it (absent,
//! null, of the wrong JSON type, or as expected), and the mapping to
//! `ClientFrame` then refuses the first fault in the protocol's own words,
//! each with its code (`invalid_frame`, `unknown_type`, `invalid_argument`,
//! `too_large`) and the frame's `req` when it had one. serde's own messages
//! ("missing field", "unknown variant") never reach a client.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::TypingState;
use super::rules::{self, SendInput};
use super::server::ServerFrame;
use crate::error::{ApiError, ErrorCode};

/// A frame a client sent, checked against the protocol's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Auth {
        token: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    Send {
        req: i64,
        #[serde(flatten)]
        input: SendInput,
    },
    Sync {
        req: i64,
        cursor: String,
    },
    Typing {
        conversation_id: String,
        state: TypingState,
    },
    Read {
        conversation_id: String,
        seq: u64,
    },
    Ping {
        req: i64,
    },
    /// A new body for one message (addition to v1).
    Edit {
        req: i64,
        conversation_id: String,
        message_id: String,
        body: String,
    },
    /// The deletion of one message (addition to v1).
    Delete {
        req: i64,
        conversation_id: String,
        message_id: String,
    },
}

impl ClientFrame {
    /// The frame's `type`, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::Send { .. } => "send",
            Self::Sync { .. } => "sync",
            Self::Typing { .. } => "typing",
            Self::Read { .. } => "read",
            Self::Ping { .. } => "ping",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
        }
    }
}

/// Why a frame was refused: rendered as an `error` frame.
#[derive(Debug)]
pub struct FrameError {
    pub req: Option<i64>,
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    pub fn new(req: Option<i64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { req, code, message: message.into() }
    }

    fn invalid_frame(req: Option<i64>, message: impl Into<String>) -> Self {
        Self::new(req, ErrorCode::InvalidFrame, message)
    }

    fn invalid_argument(req: Option<i64>, message: &str) -> Self {
        Self::new(req, ErrorCode::InvalidArgument, message)
    }

    pub fn from_api(req: Option<i64>, err: &ApiError) -> Self {
        Self { req, code: err.code, message: err.message.clone() }
    }

    /// The `error` frame of a refusal by a brake, with `retry_after_ms`
    /// (addition): how long until the same frame would be accepted.
    pub fn refusal(req: Option<i64>, err: &ApiError) -> String {
        ServerFrame::error(req, err.code, &err.message, err.retry_after_ms).to_text()
    }

    /// The `error` frame of this refusal (counted in the errors metric).
    pub fn to_frame(&self) -> String {
        ServerFrame::error(self.req, self.code, &self.message, None).to_text()
    }
}

/// A client frame as sent: `type` picks the variant (an unknown one fails),
/// and every field is kept whatever it holds, so that [`parse`] can refuse
/// it with the protocol's message. `req` is read before `type`, from the
/// object itself.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RawFrame {
    Auth {
        #[serde(default)]
        token: Field<String>,
        #[serde(default)]
        cursor: Field<String>,
    },
    Send {
        #[serde(default)]
        conversation_id: Field<String>,
        #[serde(default)]
        client_msg_id: Field<String>,
        #[serde(default)]
        body: Field<String>,
        #[serde(default)]
        attachments: Field<Vec<String>>,
    },
    Sync {
        #[serde(default)]
        cursor: Field<String>,
    },
    Typing {
        #[serde(default)]
        conversation_id: Field<String>,
        #[serde(default)]
        state: Field<String>,
    },
    Read {
        #[serde(default)]
        conversation_id: Field<String>,
        #[serde(default)]
        seq: Field<u64>,
    },
    Ping {},
    Edit {
        #[serde(default)]
        conversation_id: Field<String>,
        #[serde(default)]
        message_id: Field<String>,
        #[serde(default)]
        body: Field<String>,
    },
    Delete {
        #[serde(default)]
        conversation_id: Field<String>,
        #[serde(default)]
        message_id: Field<String>,
    },
}

/// One field of a frame as the client sent it.
#[derive(Debug, Default)]
enum Field<T> {
    #[default]
    Absent,
    Null,
    /// Present, but not of the expected JSON type.
    Mistyped,
    Given(T),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Null => Self::Null,
            value => T::deserialize(value).map_or(Self::Mistyped, Self::Given),
        })
    }
}

/// Reads a frame's fields in the protocol's order, each refusal carrying `req`.
struct Fields {
    req: Option<i64>,
}

impl Fields {
    /// The `req` a frame that is answered must carry.
    fn req(&self) -> Result<i64, FrameError> {
        self.req.ok_or_else(|| FrameError::invalid_frame(None, "req is missing"))
    }

    fn string(&self, name: &str, field: Field<String>) -> Result<String, FrameError> {
        match field {
            Field::Given(s) => Ok(s),
            Field::Absent => Err(FrameError::invalid_frame(self.req, format!("{name} is missing"))),
            Field::Null | Field::Mistyped => {
                Err(FrameError::invalid_frame(self.req, format!("{name} must be a string")))
            }
        }
    }

    fn optional_string(&self, name: &str, field: Field<String>) -> Result<Option<String>, FrameError> {
        match field {
            Field::Absent | Field::Null => Ok(None),
            field => self.string(name, field).map(Some),
        }
    }

    fn conversation_id(&self, field: Field<String>) -> Result<String, FrameError> {
        let id = self.string("conversation_id", field)?;
        rules::conversation_id(&id).map_err(|e| FrameError::from_api(self.req, &e))
    }

    fn message_id(&self, field: Field<String>) -> Result<String, FrameError> {
        let id = self.string("message_id", field)?;
        uuid::Uuid::parse_str(&id)
            .map(|id| id.to_string())
            .map_err(|_| FrameError::invalid_argument(self.req, "message_id must be a UUID"))
    }
}

/// Reads one text frame.
///
/// # Errors
/// The refusal to answer with, for anything that is not a valid client frame.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| FrameError::invalid_frame(None, "frame is not valid JSON"))?;
    let Value::Object(object) = &value else {
        return Err(FrameError::invalid_frame(None, "frame must be a JSON object"));
    };
    let req = match object.get("req") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| FrameError::invalid_frame(None, "req must be an integer"))?),
    };
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| FrameError::invalid_frame(req, "type is missing or not a string"))?;
    // With every field optional, a known `type` always deserializes.
    let raw = RawFrame::deserialize(&value).map_err(|_| {
        FrameError::new(req, ErrorCode::UnknownType, format!("unknown frame type {:?}", truncate(kind, 32)))
    })?;
    checked(raw, &Fields { req })
}

/// The frame, once each field holds what the protocol allows.
fn checked(raw: RawFrame, f: &Fields) -> Result<ClientFrame, FrameError> {
    Ok(match raw {
        RawFrame::Auth { token, cursor } => {
            ClientFrame::Auth { token: f.string("token", token)?, cursor: f.optional_string("cursor", cursor)? }
        }
        RawFrame::Send { conversation_id, client_msg_id, body, attachments } => {
            let req = f.req()?;
            let conversation_id = f.string("conversation_id", conversation_id)?;
            let client_msg_id = f.string("client_msg_id", client_msg_id)?;
            let attachments = match attachments {
                Field::Absent | Field::Null => Vec::new(),
                Field::Given(ids) => rules::attachment_ids(ids),
                Field::Mistyped => {
                    return Err(FrameError::invalid_frame(Some(req), "attachments must be an array of strings"));
                }
            };
            let body = match body {
                // A message of files needs no caption.
                Field::Absent if !attachments.is_empty() => String::new(),
                body => f.string("body", body)?,
            };
            let input = SendInput { conversation_id, client_msg_id, body, attachments };
            rules::validate(&input).map_err(|e| FrameError::from_api(Some(req), &e))?;
            ClientFrame::Send { req, input }
        }
        RawFrame::Sync { cursor } => ClientFrame::Sync { req: f.req()?, cursor: f.string("cursor", cursor)? },
        RawFrame::Typing { conversation_id, state } => {
            let conversation_id = f.conversation_id(conversation_id)?;
            let state = match f.string("state", state)?.as_str() {
                "start" => TypingState::Start,
                "stop" => TypingState::Stop,
                _ => return Err(FrameError::invalid_argument(f.req, "state must be \"start\" or \"stop\"")),
            };
            ClientFrame::Typing { conversation_id, state }
        }
        RawFrame::Read { conversation_id, seq } => {
            let conversation_id = f.conversation_id(conversation_id)?;
            let seq = match seq {
                Field::Absent => return Err(FrameError::invalid_frame(f.req, "seq is missing")),
                Field::Given(seq) if seq >= 1 => seq,
                _ => return Err(FrameError::invalid_argument(f.req, "seq must be a positive integer")),
            };
            ClientFrame::Read { conversation_id, seq }
        }
        RawFrame::Ping {} => ClientFrame::Ping { req: f.req()? },
        RawFrame::Edit { conversation_id, message_id, body } => {
            let req = f.req()?;
            let conversation_id = f.conversation_id(conversation_id)?;
            let message_id = f.message_id(message_id)?;
            let body = f.string("body", body)?;
            rules::body(&body).map_err(|e| FrameError::from_api(Some(req), &e))?;
            ClientFrame::Edit { req, conversation_id, message_id, body }
        }
        RawFrame::Delete { conversation_id, message_id } => {
            let req = f.req()?;
            ClientFrame::Delete {
                req,
                conversation_id: f.conversation_id(conversation_id)?,
                message_id: f.message_id(message_id)?,
            }
        }
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: &str = "0190c3f4-1111-7000-8000-000000000000";
    const MSG: &str = "0190c3f4-2222-7000-8000-000000000000";

    fn refusal(text: &str) -> (Option<i64>, &'static str, String) {
        match parse(text) {
            Ok(frame) => panic!("{text} was accepted as {frame:?}"),
            Err(e) => (e.req, e.code.as_str(), e.message),
        }
    }

    #[test]
    fn malformed_frames_get_protocol_codes() {
        assert_eq!(refusal("not json").1, "invalid_frame");
        assert_eq!(refusal("[1,2]").1, "invalid_frame");
        assert_eq!(refusal(r#"{"req":1}"#).1, "invalid_frame");
        assert_eq!(refusal(r#"{"type":"dance","req":1}"#).1, "unknown_type");
        assert_eq!(refusal(r#"{"type":"ping"}"#).1, "invalid_frame");
        assert_eq!(
            refusal(r#"{"type":"send","req":1,"conversation_id":"x","client_msg_id":"a","body":"b"}"#).1,
            "invalid_argument"
        );
        let big = "x".repeat(16_385);
        let frame =
            format!(r#"{{"type":"send","req":1,"conversation_id":"{CONV}","client_msg_id":"a","body":"{big}"}}"#);
        assert_eq!(refusal(&frame).1, "too_large");
        assert_eq!(parse(r#"{"type":"ping","req":7}"#).unwrap(), ClientFrame::Ping { req: 7 });
    }

    #[test]
    fn errors_echo_the_req() {
        let err = parse(r#"{"type":"send","req":42,"conversation_id":"nope"}"#).unwrap_err();
        assert_eq!(err.req, Some(42));
    }

    /// Each refusal's exact words, in the order the fields are checked.
    #[test]
    fn each_fault_is_refused_in_the_protocols_words() {
        let cases: &[(&str, Option<i64>, &str, &str)] = &[
            ("not json", None, "invalid_frame", "frame is not valid JSON"),
            ("[1]", None, "invalid_frame", "frame must be a JSON object"),
            (r#"{"type":"ping","req":"1"}"#, None, "invalid_frame", "req must be an integer"),
            (r#"{"type":"ping","req":null}"#, None, "invalid_frame", "req must be an integer"),
            (r#"{"type":"ping","req":1.5}"#, None, "invalid_frame", "req must be an integer"),
            (r#"{"req":3}"#, Some(3), "invalid_frame", "type is missing or not a string"),
            (r#"{"type":7,"req":3}"#, Some(3), "invalid_frame", "type is missing or not a string"),
            (r#"{"type":"dance","req":3}"#, Some(3), "unknown_type", "unknown frame type \"dance\""),
            (r#"{"type":"Ping","req":3}"#, Some(3), "unknown_type", "unknown frame type \"Ping\""),
            (r#"{"type":"ping"}"#, None, "invalid_frame", "req is missing"),
            (r#"{"type":"send","conversation_id":7}"#, None, "invalid_frame", "req is missing"),
            (r#"{"type":"send","req":1,"client_msg_id":7}"#, Some(1), "invalid_frame", "conversation_id is missing"),
            (
                r#"{"type":"send","req":1,"conversation_id":"x","client_msg_id":7}"#,
                Some(1),
                "invalid_frame",
                "client_msg_id must be a string",
            ),
            (
                r#"{"type":"send","req":1,"conversation_id":"x","client_msg_id":"a"}"#,
                Some(1),
                "invalid_frame",
                "body is missing",
            ),
            (
                r#"{"type":"send","req":1,"conversation_id":"x","client_msg_id":"a","body":"b"}"#,
                Some(1),
                "invalid_argument",
                "conversation_id must be a UUID",
            ),
            (r#"{"type":"auth"}"#, None, "invalid_frame", "token is missing"),
            (r#"{"type":"auth","token":"t","cursor":5}"#, None, "invalid_frame", "cursor must be a string"),
            (r#"{"type":"sync","req":2}"#, Some(2), "invalid_frame", "cursor is missing"),
            (r#"{"type":"typing","state":"start"}"#, None, "invalid_frame", "conversation_id is missing"),
            (r#"{"type":"typing","conversation_id":null}"#, None, "invalid_frame", "conversation_id must be a string"),
            (r#"{"type":"typing","conversation_id":"x"}"#, None, "invalid_argument", "conversation_id must be a UUID"),
            (r#"{"type":"read","conversation_id":"x"}"#, None, "invalid_argument", "conversation_id must be a UUID"),
            (&format!(r#"{{"type":"read","conversation_id":"{CONV}"}}"#), None, "invalid_frame", "seq is missing"),
            (
                &format!(r#"{{"type":"read","req":4,"conversation_id":"{CONV}","seq":"5"}}"#),
                Some(4),
                "invalid_argument",
                "seq must be a positive integer",
            ),
            (
                &format!(r#"{{"type":"read","conversation_id":"{CONV}","seq":0}}"#),
                None,
                "invalid_argument",
                "seq must be a positive integer",
            ),
            (
                &format!(r#"{{"type":"read","conversation_id":"{CONV}","seq":null}}"#),
                None,
                "invalid_argument",
                "seq must be a positive integer",
            ),
            (
                &format!(r#"{{"type":"typing","conversation_id":"{CONV}","state":"dance"}}"#),
                None,
                "invalid_argument",
                "state must be \"start\" or \"stop\"",
            ),
            (
                &format!(r#"{{"type":"edit","req":5,"conversation_id":"{CONV}","message_id":"m"}}"#),
                Some(5),
                "invalid_argument",
                "message_id must be a UUID",
            ),
            (
                &format!(r#"{{"type":"edit","req":5,"conversation_id":"{CONV}","message_id":"{MSG}"}}"#),
                Some(5),
                "invalid_frame",
                "body is missing",
            ),
            (
                &format!(r#"{{"type":"edit","req":5,"conversation_id":"{CONV}","message_id":"{MSG}","body":""}}"#),
                Some(5),
                "invalid_argument",
                "body must not be empty",
            ),
            (r#"{"type":"delete","conversation_id":"x"}"#, None, "invalid_frame", "req is missing"),
        ];
        for (text, req, code, message) in cases {
            assert_eq!(refusal(text), (*req, *code, (*message).to_owned()), "for {text}");
        }
    }

    #[test]
    fn a_long_unknown_type_is_cut_in_the_answer() {
        let kind = "é".repeat(40);
        let (_, code, message) = refusal(&format!(r#"{{"type":"{kind}","req":1}}"#));
        assert_eq!((code, message), ("unknown_type", format!("unknown frame type {:?}", "é".repeat(32))));
    }

    #[test]
    fn a_repeated_key_counts_as_its_last_value() {
        assert_eq!(parse(r#"{"type":"dance","type":"ping","req":1}"#).unwrap(), ClientFrame::Ping { req: 1 });
        assert_eq!(refusal(r#"{"type":"ping","req":1,"type":"dance"}"#).1, "unknown_type");
    }

    /// The typed frames are the wire's shape: each, written by serde, reads back as itself.
    #[test]
    fn every_frame_reads_back_as_written() {
        let frames = [
            ClientFrame::Auth { token: "t".into(), cursor: None },
            ClientFrame::Auth { token: "t".into(), cursor: Some("c".into()) },
            ClientFrame::Send {
                req: 1,
                input: SendInput {
                    conversation_id: CONV.into(),
                    client_msg_id: "m-1".into(),
                    body: "hi".into(),
                    attachments: Vec::new(),
                },
            },
            ClientFrame::Sync { req: 2, cursor: "c".into() },
            ClientFrame::Typing { conversation_id: CONV.into(), state: TypingState::Stop },
            ClientFrame::Read { conversation_id: CONV.into(), seq: 9 },
            ClientFrame::Ping { req: -3 },
            ClientFrame::Edit { req: 4, conversation_id: CONV.into(), message_id: MSG.into(), body: "new".into() },
            ClientFrame::Delete { req: 5, conversation_id: CONV.into(), message_id: MSG.into() },
        ];
        for frame in frames {
            let text = serde_json::to_string(&frame).unwrap();
            assert_eq!(parse(&text).unwrap(), frame, "for {text}");
        }
    }
}
