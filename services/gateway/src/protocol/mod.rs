//! Protocol v1 as Rust types, for the WebSocket: what a client sends
//! (`client`), what the server sends (`server`), the bounds every message
//! meets (`rules`, shared with HTTP) and the close codes. It is the gateway's
//! lowest layer after `wire` and `error`: everything that speaks to a client
//! uses it, and it uses nothing of the gateway's machinery. Inside, lowest
//! first: `rules`, `server`, `client`.

mod client;
pub mod rules;
mod server;

use serde::{Deserialize, Serialize};

pub use client::{ClientFrame, FrameError, parse};
pub use server::{ServerFrame, last_seen_at};

/// WebSocket close codes of protocol v1 that the gateway sends.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_LARGE: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const TOO_SLOW: u16 = 4408;
    pub const RATE_LIMITED: u16 = 4429;
}

/// The `state` of a `typing` frame, either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypingState {
    Start,
    Stop,
}

impl TypingState {
    pub fn from_start(start: bool) -> Self {
        if start { Self::Start } else { Self::Stop }
    }

    pub fn is_start(self) -> bool {
        self == Self::Start
    }
}
