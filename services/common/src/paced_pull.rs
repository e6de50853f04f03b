//! Reads a durable pull consumer in bursts instead of one message at a time.
//!
//! A consumer with a pull always outstanding is sent every message the moment
//! it is stored. At 1,000 messages a second, that is 1,000 wake-ups of the
//! reader and of nats-server for the deliveries, and as many again for the
//! acknowledgements, each read on its own: on a 2-core VM, half of
//! notification's CPU and a fifth of nats-server's (BENCHMARKS.md).
//!
//! A reader whose work may wait a few milliseconds (history's ingest,
//! notification's intake; never live delivery) uses this instead:
//! - it takes what has gathered in one pull;
//! - it handles that and acknowledges it, and the acks leave in one write;
//! - it pauses for `pace` before the next pull.
//!
//! When nothing has gathered, one long pull waits for the next message, so a
//! lone message is not delayed. While more is stored than a burst took, the
//! next pull follows at once, so a backlog drains at full speed.

use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;

use crate::log_throttle::LogThrottle;
use crate::shutdown::CancellationToken;

/// How long one pull waits for a message when nothing has gathered.
const IDLE_PULL: Duration = Duration::from_secs(5);
/// How long a pull that takes what is there may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed pull, before the consumer is made again and
/// the pull retried.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct PacedPull {
    stream: Stream,
    config: pull::Config,
    consumer: PullConsumer,
    max: usize,
    pace: Duration,
    /// When the last burst was pulled, if it drained the consumer.
    last_burst: Option<tokio::time::Instant>,
    warnings: LogThrottle,
}

impl PacedPull {
    /// Creates (or updates) the durable consumer `config` names on `stream`.
    ///
    /// # Errors
    /// When JetStream refuses the consumer.
    pub async fn new(
        stream: Stream,
        config: pull::Config,
        max: usize,
        pace: Duration,
    ) -> Result<Self, async_nats::Error> {
        let consumer = stream.create_consumer(config.clone()).await?;
        Ok(Self {
            stream,
            config,
            consumer,
            max: max.max(1),
            pace,
            last_burst: None,
            warnings: LogThrottle::new(Duration::from_secs(10)),
        })
    }

    /// The durable consumer (for its lag).
    pub fn consumer(&self) -> PullConsumer {
        self.consumer.clone()
    }

    /// The next burst of messages, at most `max`; `None` once `shutdown`.
    /// A failed pull is retried (the consumer made again first, in case it
    /// was deleted), with a warning at most every 10 s.
    pub async fn next_burst(&mut self, shutdown: &CancellationToken) -> Option<Vec<Message>> {
        loop {
            // On the heap: a pull's futures are large, and the services'
            // futures that hold this one must fit a thread's stack.
            let burst = tokio::select! {
                () = shutdown.cancelled() => return None,
                burst = Box::pin(self.pull()) => burst,
            };
            match burst {
                Ok(burst) if burst.is_empty() => {}
                Ok(burst) => return Some(burst),
                Err(e) => {
                    if let Some(unlogged) = self.warnings.due() {
                        tracing::warn!(error = %e, consumer = ?self.config.durable_name, unlogged_since_last = unlogged, "cannot pull from the consumer; retrying");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                    if let Ok(consumer) = self.stream.create_consumer(self.config.clone()).await {
                        self.consumer = consumer;
                    }
                }
            }
        }
    }

    /// One burst: after a pause when the last one drained the consumer, what has
    /// gathered; when nothing has, the first message to arrive within
    /// [`IDLE_PULL`] (none when it ends first).
    async fn pull(&mut self) -> Result<Vec<Message>, async_nats::Error> {
        if let Some(last) = self.last_burst.take() {
            tokio::time::sleep_until(last + self.pace).await;
        }
        let mut pulled_at = tokio::time::Instant::now();
        let mut burst = collect(self.consumer.fetch().max_messages(self.max).messages().await?, ANSWER_TIMEOUT).await?;
        if burst.is_empty() {
            let wait = self.consumer.batch().max_messages(1).expires(IDLE_PULL).messages().await?;
            burst = collect(wait, IDLE_PULL + ANSWER_TIMEOUT).await?;
            pulled_at = tokio::time::Instant::now();
        }
        // Drained: give what comes next `pace` to gather. With more stored
        // and waiting (a backlog, or a burst cut short by the consumer's
        // limit of unacknowledged messages), pull again at once.
        if burst.last().is_some_and(|last| last.info().is_ok_and(|info| info.pending == 0)) {
            self.last_burst = Some(pulled_at);
        }
        Ok(burst)
    }
}

/// The messages of one pull, or an error when its end has not come within
/// `limit` (the pull or its answer was lost, say to a reconnection).
async fn collect(mut batch: pull::Batch, limit: Duration) -> Result<Vec<Message>, async_nats::Error> {
    let mut messages = Vec::new();
    let all = async {
        while let Some(message) = batch.next().await {
            messages.push(message?);
        }
        Ok::<(), async_nats::Error>(())
    };
    tokio::time::timeout(limit, all).await.map_err(|_| "no end of the pull within its time")??;
    Ok(messages)
}
