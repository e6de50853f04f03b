//! Brakes on what one user or one socket may ask of this gateway, so that
//! nobody can flood, stall or exhaust it for everyone else. Each is a token
//! bucket or a count, configurable, with defaults that a person typing or a
//! well-behaved bot never meets; each refusal answers per the protocol
//! (`rate_limited` with a retry hint, close 4429, HTTP 429 with `Retry-After`,
//! 503 at the upgrade) and is counted in `gateway_brakes_total{brake}`.
//!
//! Per-user limits are kept per gateway: a user spread over several gateways
//! gets each gateway's allowance. That bounds what one user costs any one
//! gateway, which is what a brake is for.

use std::time::Duration;

use chat_common::rate_limit::{Bucket, Limiter, Rate};

use crate::error::ApiError;

/// The limits shared by all of this gateway's sockets and requests.
pub struct Brakes {
    sends_per_user: Limiter,
    conversations_per_user: Limiter,
    safety_changes_per_user: Limiter,
}

impl Brakes {
    pub fn new(sends_per_user: Rate, conversations_per_user: Rate, safety_changes_per_user: Rate) -> Self {
        Self {
            sends_per_user: Limiter::new(sends_per_user),
            conversations_per_user: Limiter::new(conversations_per_user),
            safety_changes_per_user: Limiter::new(safety_changes_per_user),
        }
    }

    /// One message from `user_id` (any socket, or HTTP).
    ///
    /// # Errors
    /// `rate_limited` with the wait.
    pub fn send(&self, user_id: &str) -> Result<(), ApiError> {
        self.sends_per_user.take(user_id).map_err(|wait| refused("send_per_user", wait))
    }

    /// One new conversation started by `user_id`.
    ///
    /// # Errors
    /// `rate_limited` with the wait.
    pub fn new_conversation(&self, user_id: &str) -> Result<(), ApiError> {
        self.conversations_per_user.take(user_id).map_err(|wait| refused("conversations_per_user", wait))
    }

    /// One block, unblock, mute, unmute or report by `user_id`: each is a
    /// write that other services follow or keep.
    ///
    /// # Errors
    /// `rate_limited` with the wait.
    pub fn safety_change(&self, user_id: &str) -> Result<(), ApiError> {
        self.safety_changes_per_user.take(user_id).map_err(|wait| refused("safety_changes_per_user", wait))
    }
}

/// The limits of one socket.
pub struct SocketBrakes {
    frames: Bucket,
    sends: Bucket,
    syncs: Bucket,
}

/// What a socket's frame meets.
pub enum Verdict {
    Go,
    /// Refused with this error; the socket stays open.
    Refuse(ApiError),
    /// The socket floods: close it with 4429.
    Close,
}

impl SocketBrakes {
    pub fn new(frames: Rate, sends: Rate, syncs: Rate) -> Self {
        Self { frames: Bucket::new(frames), sends: Bucket::new(sends), syncs: Bucket::new(syncs) }
    }

    /// Any frame at all: beyond this rate the client ignores every answer.
    pub fn frame(&mut self) -> Verdict {
        match self.frames.take() {
            Ok(()) => Verdict::Go,
            Err(_) => {
                count("frames_per_socket");
                Verdict::Close
            }
        }
    }

    /// A `send` frame: this socket's rate, then its user's.
    pub fn send(&mut self, brakes: &Brakes, user_id: &str) -> Verdict {
        match self.sends.take() {
            Err(wait) => Verdict::Refuse(refused("send_per_socket", wait)),
            Ok(()) => match brakes.send(user_id) {
                Ok(()) => Verdict::Go,
                Err(e) => Verdict::Refuse(e),
            },
        }
    }

    /// A `sync` frame (each replays from history and the stream).
    pub fn sync(&mut self) -> Verdict {
        match self.syncs.take() {
            Ok(()) => Verdict::Go,
            Err(wait) => Verdict::Refuse(refused("sync_per_socket", wait)),
        }
    }
}

/// Counts a brake that was met.
pub fn count(brake: &'static str) {
    crate::metrics::get().brakes.get_or_create(&chat_common::metrics::label("brake", brake)).inc();
}

fn refused(brake: &'static str, wait: Duration) -> ApiError {
    count(brake);
    ApiError::rate_limited_for(wait)
}
