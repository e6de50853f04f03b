//! Paging and search as history grows: one user in [`CONVERSATIONS`]
//! direct conversations whose messages fill the CHAT stream (published
//! straight to it, as the gateway would, so filling is quick; history stores
//! them as it stores any), then the user's client asks over HTTP, as a
//! client does, for: the newest page, a page in the middle and the oldest
//! page of one conversation, and a search for a common word and a rare one.
//! Measured: each request's time, one request after another, and how many
//! failed (a request slower than the gateway's 5 s bound on a call is a 503).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chat_proto::events::v1::Message;
use chat_system_tests::client::Device;
use prost::Message as _;

use crate::setup::Bench;
use crate::stats::Samples;

/// The user's conversations; the messages go round them in turn.
pub const CONVERSATIONS: usize = 10;
/// Words bodies are made of: `w0` is in every body, `w1`..`w9` in a tenth each,
/// and so on; a body of [`WORDS_PER_BODY`] words.
const WORDS_PER_BODY: usize = 8;
/// Times each request is made, unless they take longer than [`PER_KIND`]
/// together (then at least [`LEAST`] times).
const REPEATS: usize = 50;
const PER_KIND: Duration = Duration::from_secs(30);
const LEAST: usize = 3;
/// Publishes awaited at once while filling.
const IN_FLIGHT: usize = 2_000;

/// A user, their conversations, and how many messages each holds so far.
pub struct History {
    user: Device,
    conversations: Vec<String>,
    sender_id: String,
    device_id: String,
    messages: u64,
}

/// The requests, in the order of [`History::measure`]'s result.
pub const REQUESTS: [&str; 5] = [
    "newest page",
    "page in the middle",
    "oldest page",
    "search, a word in every message",
    "search, a word in 1 of 100,000 messages",
];

impl History {
    pub async fn new(bench: &Bench) -> anyhow::Result<Self> {
        let users = bench.users("h", CONVERSATIONS + 1).await;
        let (user, partners) = users.split_first().context("users")?;
        let mut conversations = Vec::new();
        for partner in partners {
            conversations.push(bench.api.direct(user, partner).await);
        }
        let user = user.clone();
        let (sender_id, device_id) = (user.user_id.clone(), user.device_id.clone());
        Ok(Self { user, conversations, sender_id, device_id, messages: 0 })
    }

    /// Publishes messages until history holds `total`, and waits until history has stored them.
    pub async fn grow_to(&mut self, bench: &Bench, total: u64) -> anyhow::Result<()> {
        let client = chat_common::nats::connect(&bench.nats.urls(), "bench-history-depth").await?;
        let js = async_nats::jetstream::new(client);
        let mut pending = std::collections::VecDeque::new();
        let per_conversation = CONVERSATIONS as u64;
        for i in self.messages..total {
            let conversation = &self.conversations[(i % per_conversation) as usize];
            let message = Message {
                conversation_id: conversation.clone(),
                message_id: uuid::Uuid::now_v7().to_string(),
                seq: i / per_conversation + 1,
                sender_id: self.sender_id.clone(),
                sender_device_id: self.device_id.clone(),
                client_msg_id: format!("depth-{i}"),
                body: body(i),
                sent_at_ms: chat_common::time::now_ms(),
                ..Default::default()
            };
            let subject = chat_common::nats::message_subject(conversation);
            pending.push_back(js.publish(subject, message.encode_to_vec().into()).await?);
            if pending.len() >= IN_FLIGHT {
                pending.pop_front().context("a publish in flight")?.await?;
            }
        }
        for ack in pending {
            ack.await?;
        }
        self.messages = total;
        self.wait_until_stored(bench).await
    }

    /// Waits until every conversation's newest message is stored.
    async fn wait_until_stored(&self, bench: &Bench) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(3_600);
        for (n, conversation) in self.conversations.iter().enumerate() {
            // Messages n, n + 10, n + 20, … went to conversation n.
            let newest = self.messages.saturating_sub(n as u64).div_ceil(CONVERSATIONS as u64);
            loop {
                let (_, page) = bench.api.messages(&self.user, conversation, "?limit=1").await;
                if page["messages"][0]["seq"] == newest {
                    break;
                }
                ensure!(Instant::now() < deadline, "history did not store the messages in time: {page}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }

    /// Each of [`REQUESTS`]: microseconds per answered request, and how many
    /// of the requests failed.
    pub async fn measure(&self, bench: &Bench) -> anyhow::Result<Vec<(Samples, usize)>> {
        let depth = self.messages / CONVERSATIONS as u64;
        let conversation = &self.conversations[0];
        let page = |query: String| format!("/v1/conversations/{conversation}/messages?limit=50{query}");
        let rare = format!("r{}", self.messages / 2 / RARE_EVERY);
        let paths = [
            page(String::new()),
            page(format!("&before_seq={}", depth / 2)),
            page("&after_seq=0".to_owned()),
            "/v1/search?q=w0&limit=20".to_owned(),
            format!("/v1/search?q={rare}&limit=20"),
        ];
        let mut results = Vec::new();
        for path in &paths {
            let (mut samples, mut failed, mut made) = (Samples::default(), 0, 0);
            let kind_started = Instant::now();
            while made < REPEATS && (made < LEAST || kind_started.elapsed() < PER_KIND) {
                made += 1;
                let started = Instant::now();
                let (status, body) = bench.api.get(path, Some(&self.user.access_token)).await;
                if status != 200 {
                    eprintln!("{path}: {status} {body}");
                    failed += 1;
                    continue;
                }
                samples.push(started.elapsed().as_micros() as u64);
                ensure!(body["messages"].as_array().is_some_and(|m| !m.is_empty()), "{path} found nothing: {body}");
            }
            results.push((samples, failed));
        }
        Ok(results)
    }
}

/// One in this many messages carries a word of its own (`r<n>`).
const RARE_EVERY: u64 = 100_000;

/// The body of message `i`: `w0` always, then one word from each of sets
/// ten times larger than the last (`w10`–`w99`, `w100`–`w999`, …), and
/// every [`RARE_EVERY`]th message a word of its own.
fn body(i: u64) -> String {
    let mut words = vec!["w0".to_owned()];
    for level in 1..WORDS_PER_BODY as u32 {
        let low = 10u64.pow(level);
        let mixed = i.wrapping_mul(2_654_435_761).wrapping_add(u64::from(level) * 40_503);
        words.push(format!("w{}", low + mixed % (9 * low)));
    }
    if i.is_multiple_of(RARE_EVERY) {
        words.push(format!("r{}", i / RARE_EVERY));
    }
    words.join(" ")
}
