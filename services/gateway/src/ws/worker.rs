//! A socket's worker: the frames that need a backend round trip (sends, edits
//! and deletions, read markers) are done one at a time, in the order they
//! arrived, off the socket's own task, so that a slow store never stops the
//! socket from reading or writing meanwhile.

use std::time::Duration;

use tokio::sync::mpsc;

use super::socket::Socket;
use crate::error::ErrorCode;
use crate::messaging;
use crate::protocol::rules::SendInput;
use crate::protocol::{FrameError, ServerFrame};
use crate::state::AppState;
use crate::tokens::Identity;

/// Sends and read markers waiting to be stored, per socket; beyond this the
/// client is told to slow down.
const WORK_QUEUE: usize = 64;
/// How long a socket closing at shutdown waits for the work it already took.
const FINISH_TIMEOUT: Duration = Duration::from_secs(3);

/// Frames that need a backend round trip, done in order, one at a time.
pub enum Work {
    Send { req: i64, input: SendInput },
    Read { conversation_id: String, seq: u64 },
    Change { req: i64, conversation_id: String, message_id: String, body: Option<String> },
}

/// The socket's worker and its queues, started on the socket's first send,
/// change or read marker: an idle socket has no task and no queues.
#[derive(Default)]
pub struct Worker {
    running: Option<(mpsc::Sender<Work>, mpsc::Receiver<String>)>,
}

impl Worker {
    /// Queues work (starting the worker if need be), or tells the client to
    /// wait for answers first when too much is in flight.
    pub async fn take(
        &mut self,
        state: &AppState,
        identity: &Identity,
        socket: &mut Socket,
        req: Option<i64>,
        work: Work,
    ) -> Result<(), axum::Error> {
        let queue = &self.running.get_or_insert_with(|| spawn(state.clone(), identity.clone())).0;
        if queue.try_send(work).is_ok() {
            return Ok(());
        }
        let err = FrameError::new(req, ErrorCode::RateLimited, "too many frames in flight; wait for answers");
        socket.text(err.to_frame()).await
    }

    /// Takes no more work, lets the worker finish what it has (each send is
    /// bounded by the store timeout; all of it by [`FINISH_TIMEOUT`]) and
    /// writes its answers, so a send in flight at shutdown is acked or
    /// refused, not left without an answer.
    pub async fn finish(&mut self, socket: &mut Socket) {
        let Some((queue, mut replies)) = self.running.take() else { return };
        drop(queue);
        let deadline = tokio::time::Instant::now() + FINISH_TIMEOUT;
        while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.recv()).await {
            if socket.text(reply).await.is_err() {
                return;
            }
        }
    }

    /// The next answer to send; never, while no worker runs.
    pub async fn reply(&mut self) -> Option<String> {
        match &mut self.running {
            Some((_, replies)) => replies.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// Does this socket's work one item at a time, in the order it arrived (so
/// `seq`s follow the order of sends), and hands back each answer.
fn spawn(state: AppState, identity: Identity) -> (mpsc::Sender<Work>, mpsc::Receiver<String>) {
    let (work_tx, mut work_rx) = mpsc::channel::<Work>(WORK_QUEUE);
    let (replies_tx, replies_rx) = mpsc::channel::<String>(WORK_QUEUE);
    tokio::spawn(async move {
        while let Some(work) = work_rx.recv().await {
            if let Some(reply) = answer(&state, &identity, work).await
                && replies_tx.send(reply).await.is_err()
            {
                return;
            }
        }
    });
    (work_tx, replies_rx)
}

/// Does one item: a send or a change is answered with an `ack` or an
/// `error`, a read marker only with an `error` when it is refused.
async fn answer(state: &AppState, identity: &Identity, work: Work) -> Option<String> {
    match work {
        Work::Send { req, input } => {
            let started = std::time::Instant::now();
            let sent = messaging::send(&state.membership, &state.log, &state.media, identity, &input).await;
            crate::metrics::get().send_to_ack.observe(started.elapsed().as_secs_f64());
            Some(match sent {
                Ok(published) => ack_frame(req, &published.message),
                Err(e) => FrameError::from_api(Some(req), &e).to_frame(),
            })
        }
        Work::Change { req, conversation_id, message_id, body } => {
            Some(match messaging::change(&state.history, identity, &conversation_id, &message_id, body).await {
                Ok(message) => ack_frame(req, &message),
                Err(e) => FrameError::from_api(Some(req), &e).to_frame(),
            })
        }
        Work::Read { conversation_id, seq } => {
            messaging::mark_read(&state.membership, &state.history, identity, &conversation_id, seq)
                .await
                .err()
                .map(|e| FrameError::from_api(None, &e).to_frame())
        }
    }
}

fn ack_frame(req: i64, message: &chat_proto::events::v1::Message) -> String {
    ServerFrame::Ack { req, message: message.into() }.to_text()
}
