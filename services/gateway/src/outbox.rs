//! A socket's outbound queue, shared by whoever hands the socket frames (the
//! dispatcher, presence, typing) and the socket's own task, which writes them.
//! It also carries a request to close the socket (revoked device, too slow).
//!
//! It exists to keep an idle socket small: a channel allocates its first
//! block of slots up front and keeps it, while this queue holds no buffer
//! until frames arrive and lets a large one go once drained.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// A serialised text frame. Reference-counted: one event is serialised once
/// and handed to every socket without copying.
pub type Frame = axum::extract::ws::Utf8Bytes;

/// A frame for one socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A stream event, with its stream position.
    Live { stream_seq: u64, frame: Frame },
    /// Something only worth having live (typing, presence): no position, never replayed.
    Ephemeral { frame: Frame },
}

/// A drained queue keeps a buffer up to this many frames for the next burst.
const KEPT_CAPACITY: usize = 8;

pub struct Outbox {
    inner: Mutex<Inner>,
    wake: Notify,
}

struct Inner {
    frames: VecDeque<Outbound>,
    limit: usize,
    close: Option<u16>,
}

/// The queue already holds its limit of frames.
#[derive(Debug)]
struct Full;

impl Outbox {
    /// A queue that holds at most `limit` frames.
    pub fn new(limit: usize) -> Self {
        Self { inner: Mutex::new(Inner { frames: VecDeque::new(), limit, close: None }), wake: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame the socket must get (a stream event, a presence change).
    /// A socket too far behind to take it is closed as too slow (4408): it
    /// reconnects and catches up, and nobody else waits for it.
    pub fn deliver(&self, frame: Outbound) {
        if self.push(frame).is_err() {
            self.close(crate::protocol::close::TOO_SLOW);
        }
    }

    /// Queues a frame only worth having now (typing); dropped when the queue is full.
    pub fn offer(&self, frame: Outbound) {
        let _ = self.push(frame);
    }

    /// Queues a frame. Once the socket is asked to close, frames are dropped.
    fn push(&self, frame: Outbound) -> Result<(), Full> {
        let mut inner = self.lock();
        if inner.close.is_some() {
            return Ok(());
        }
        if inner.frames.len() >= inner.limit {
            return Err(Full);
        }
        let was_empty = inner.frames.is_empty();
        inner.frames.push_back(frame);
        drop(inner);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Asks the socket to close with `code`; the first request wins.
    pub fn close(&self, code: u16) {
        let mut inner = self.lock();
        if inner.close.is_none() {
            inner.close = Some(code);
            inner.frames = VecDeque::new();
            drop(inner);
            self.wake.notify_one();
        }
    }

    /// The close code asked for, if any.
    pub fn close_requested(&self) -> Option<u16> {
        self.lock().close
    }

    /// The next frame to write, if one is queued.
    pub fn pop(&self) -> Option<Outbound> {
        let mut inner = self.lock();
        let frame = inner.frames.pop_front();
        if inner.frames.is_empty() && inner.frames.capacity() > KEPT_CAPACITY {
            inner.frames = VecDeque::new();
        }
        frame
    }

    /// Waits until a frame is queued or a close is asked for. Only the
    /// socket's own task waits; it may stop waiting at any time.
    pub async fn ready(&self) {
        loop {
            {
                let inner = self.lock();
                if inner.close.is_some() || !inner.frames.is_empty() {
                    return;
                }
            }
            // A wake-up given while nobody waits is kept for the next wait.
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Outbound {
        Outbound::Live { stream_seq: n, frame: format!("{n}").into() }
    }

    fn seq(outbound: Option<Outbound>) -> Option<u64> {
        match outbound {
            Some(Outbound::Live { stream_seq, .. }) => Some(stream_seq),
            _ => None,
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_a_full_queue_refuses_more() {
        let outbox = Outbox::new(2);
        outbox.push(frame(1)).unwrap();
        outbox.push(frame(2)).unwrap();
        assert!(outbox.push(frame(3)).is_err());
        outbox.ready().await;
        assert_eq!(seq(outbox.pop()), Some(1));
        assert_eq!(seq(outbox.pop()), Some(2));
        assert_eq!(seq(outbox.pop()), None);
        outbox.push(frame(4)).unwrap();
        assert_eq!(seq(outbox.pop()), Some(4));
    }

    #[tokio::test]
    async fn a_waiting_socket_wakes_for_a_frame_and_for_a_close() {
        let outbox = std::sync::Arc::new(Outbox::new(8));
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                outbox.ready().await;
                seq(outbox.pop())
            }
        });
        tokio::task::yield_now().await;
        outbox.push(frame(7)).unwrap();
        assert_eq!(waiting.await.unwrap(), Some(7));

        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                outbox.ready().await;
                outbox.close_requested()
            }
        });
        tokio::task::yield_now().await;
        outbox.close(4401);
        outbox.close(4408);
        assert_eq!(waiting.await.unwrap(), Some(4401));
        // Frames handed to a closing socket are dropped, not refused.
        assert!(outbox.push(frame(8)).is_ok());
        assert_eq!(seq(outbox.pop()), None);
    }

    #[test]
    fn a_frame_that_must_arrive_closes_a_full_socket_and_one_only_offered_does_not() {
        let outbox = Outbox::new(1);
        outbox.deliver(frame(1));
        outbox.offer(frame(2));
        assert_eq!(outbox.close_requested(), None, "a dropped typing frame closes nothing");
        outbox.deliver(frame(3));
        assert_eq!(outbox.close_requested(), Some(crate::protocol::close::TOO_SLOW));
    }

    #[test]
    fn a_drained_queue_lets_its_buffer_go() {
        let outbox = Outbox::new(1024);
        for n in 0..100 {
            outbox.push(frame(n)).unwrap();
        }
        while outbox.pop().is_some() {}
        assert_eq!(outbox.lock().frames.capacity(), 0);
    }
}
