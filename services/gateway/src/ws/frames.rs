//! Client → server frames of protocol v1: parsed strictly, each failure mapped
//! to the protocol's error code (`invalid_frame`, `unknown_type`,
//! `invalid_argument`, `too_large`) with the frame's `req` when it had one.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::messaging::{self, SendInput};

#[derive(Debug)]
pub enum ClientFrame {
    Auth {
        token: String,
        cursor: Option<String>,
    },
    Send {
        req: i64,
        input: SendInput,
    },
    Sync {
        req: i64,
        cursor: String,
    },
    Typing {
        conversation_id: String,
        start: bool,
    },
    Read {
        conversation_id: String,
        seq: u64,
    },
    Ping {
        req: i64,
    },
    /// `edit` (with a body) or `delete` (without) of one message.
    Change {
        req: i64,
        conversation_id: String,
        message_id: String,
        body: Option<String>,
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
            Self::Change { body: Some(_), .. } => "edit",
            Self::Change { body: None, .. } => "delete",
        }
    }
}

/// Why a frame was refused: rendered as an `error` frame.
#[derive(Debug)]
pub struct FrameError {
    pub req: Option<i64>,
    pub code: &'static str,
    pub message: String,
}

impl FrameError {
    fn invalid_frame(req: Option<i64>, message: impl Into<String>) -> Self {
        Self { req, code: "invalid_frame", message: message.into() }
    }

    pub fn from_api(req: Option<i64>, err: &ApiError) -> Self {
        Self { req, code: err.code, message: err.message.clone() }
    }

    /// The `error` frame of a refusal by a brake, with `retry_after_ms`
    /// (addition): how long until the same frame would be accepted.
    pub fn refusal(req: Option<i64>, err: &ApiError) -> String {
        let mut frame = Self::from_api(req, err).value();
        if let Some(ms) = err.retry_after_ms {
            frame["retry_after_ms"] = ms.into();
        }
        frame.to_string()
    }

    pub fn to_frame(&self) -> String {
        self.value().to_string()
    }

    fn value(&self) -> Value {
        crate::metrics::get().errors.get_or_create(&chat_common::metrics::label("code", self.code)).inc();
        let mut frame = serde_json::json!({ "type": "error", "code": self.code, "message": self.message });
        if let Some(req) = self.req {
            frame["req"] = req.into();
        }
        frame
    }
}

pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| FrameError::invalid_frame(None, "frame is not valid JSON"))?;
    let Value::Object(fields) = value else {
        return Err(FrameError::invalid_frame(None, "frame must be a JSON object"));
    };
    let req = match fields.get("req") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| FrameError::invalid_frame(None, "req must be an integer"))?),
    };
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| FrameError::invalid_frame(req, "type is missing or not a string"))?;
    let f = Fields { fields: &fields, req };
    match kind {
        "auth" => Ok(ClientFrame::Auth {
            token: f.string("token")?.to_owned(),
            cursor: f.optional_string("cursor")?.map(str::to_owned),
        }),
        "send" => {
            let req = f.req()?;
            let input = SendInput {
                conversation_id: f.string("conversation_id")?.to_owned(),
                client_msg_id: f.string("client_msg_id")?.to_owned(),
                body: f.string("body")?.to_owned(),
            };
            messaging::validate(&input).map_err(|e| FrameError::from_api(Some(req), &e))?;
            Ok(ClientFrame::Send { req, input })
        }
        "sync" => Ok(ClientFrame::Sync { req: f.req()?, cursor: f.string("cursor")?.to_owned() }),
        "typing" => {
            let conversation_id = f.conversation_id()?;
            let start = match f.string("state")? {
                "start" => true,
                "stop" => false,
                _ => return Err(f.invalid_argument("state must be \"start\" or \"stop\"")),
            };
            Ok(ClientFrame::Typing { conversation_id, start })
        }
        "read" => {
            let conversation_id = f.conversation_id()?;
            let seq = f
                .fields
                .get("seq")
                .ok_or_else(|| FrameError::invalid_frame(req, "seq is missing"))?
                .as_u64()
                .filter(|s| *s >= 1)
                .ok_or_else(|| f.invalid_argument("seq must be a positive integer"))?;
            Ok(ClientFrame::Read { conversation_id, seq })
        }
        "ping" => Ok(ClientFrame::Ping { req: f.req()? }),
        "edit" | "delete" => {
            let req = f.req()?;
            let conversation_id = f.conversation_id()?;
            let message_id = uuid::Uuid::parse_str(f.string("message_id")?)
                .map_err(|_| f.invalid_argument("message_id must be a UUID"))?
                .to_string();
            let body = if kind == "edit" {
                let body = f.string("body")?;
                messaging::body(body).map_err(|e| FrameError::from_api(Some(req), &e))?;
                Some(body.to_owned())
            } else {
                None
            };
            Ok(ClientFrame::Change { req, conversation_id, message_id, body })
        }
        other => Err(FrameError {
            req,
            code: "unknown_type",
            message: format!("unknown frame type {:?}", truncate(other, 32)),
        }),
    }
}

struct Fields<'a> {
    fields: &'a Map<String, Value>,
    req: Option<i64>,
}

impl Fields<'_> {
    fn req(&self) -> Result<i64, FrameError> {
        self.req.ok_or_else(|| FrameError::invalid_frame(None, "req is missing"))
    }

    fn string(&self, name: &str) -> Result<&str, FrameError> {
        match self.fields.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(FrameError::invalid_frame(self.req, format!("{name} must be a string"))),
            None => Err(FrameError::invalid_frame(self.req, format!("{name} is missing"))),
        }
    }

    fn optional_string(&self, name: &str) -> Result<Option<&str>, FrameError> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(name).map(Some),
        }
    }

    fn conversation_id(&self) -> Result<String, FrameError> {
        let id = self.string("conversation_id")?;
        messaging::conversation_id(id).map_err(|e| FrameError::from_api(self.req, &e))
    }

    fn invalid_argument(&self, message: &str) -> FrameError {
        FrameError { req: self.req, code: "invalid_argument", message: message.to_owned() }
    }
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

    fn code(text: &str) -> &'static str {
        parse(text).err().map(|e| e.code).unwrap_or("ok")
    }

    #[test]
    fn malformed_frames_get_protocol_codes() {
        assert_eq!(code("not json"), "invalid_frame");
        assert_eq!(code("[1,2]"), "invalid_frame");
        assert_eq!(code(r#"{"req":1}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"dance","req":1}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"ping"}"#), "invalid_frame");
        assert_eq!(
            code(r#"{"type":"send","req":1,"conversation_id":"x","client_msg_id":"a","body":"b"}"#),
            "invalid_argument"
        );
        let big = "x".repeat(16_385);
        let frame =
            format!(r#"{{"type":"send","req":1,"conversation_id":"{CONV}","client_msg_id":"a","body":"{big}"}}"#);
        assert_eq!(code(&frame), "too_large");
        assert_eq!(code(r#"{"type":"ping","req":7}"#), "ok");
    }

    #[test]
    fn errors_echo_the_req() {
        let err = parse(r#"{"type":"send","req":42,"conversation_id":"nope"}"#).unwrap_err();
        assert_eq!(err.req, Some(42));
    }
}
