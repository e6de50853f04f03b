//! Connect cost as a user's conversations grow: one user joins more and more
//! groups (each with one other member), and at each size a single client
//! connects with the user's token, waits for `ready`, and closes, one connect
//! after another. Sequential on purpose: each connect is then the user's only
//! socket, the case where the gateway must load the user's conversations.
//! Measured: time to `ready` and the CPU each process spent per connect.

use std::time::{Duration, Instant};

use anyhow::ensure;
use chat_system_tests::client::Device;
use futures::StreamExt;
use serde_json::json;

use crate::setup::{Bench, Spent};
use crate::stats::Samples;
use crate::ws;

/// Groups created at once while the user's conversations are set up.
const SETUP_CONCURRENCY: usize = 16;

/// One user whose conversations grow between steps.
pub struct Member {
    user: Device,
    partner: Device,
    conversations: usize,
}

pub struct Outcome {
    pub connects: u64,
    /// Microseconds from opening the TCP connection to `ready`.
    pub to_ready: Samples,
    pub spent: Spent,
}

impl Member {
    pub async fn new(bench: &Bench) -> Self {
        let mut users = bench.users("cc", 2).await;
        let partner = users.pop().expect("two users");
        let user = users.pop().expect("two users");
        Self { user, partner, conversations: 0 }
    }

    /// Creates groups until the user is in `count` conversations.
    pub async fn grow_to(&mut self, bench: &Bench, count: usize) -> anyhow::Result<()> {
        let (user, partner) = (&self.user, &self.partner);
        let created: Vec<(u16, serde_json::Value)> = futures::stream::iter(self.conversations..count)
            .map(|i| {
                let body = json!({ "kind": "group", "title": format!("c{i}"), "members": [partner.user_id] });
                bench.api.post("/v1/conversations", Some(&user.access_token), body)
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        if let Some((status, body)) = created.iter().find(|(status, _)| *status != 201) {
            anyhow::bail!("a group was not created ({status}): {body}");
        }
        self.conversations = count;
        Ok(())
    }

    /// Connects one after another for `duration`, at least `least` times.
    pub async fn connect(&self, bench: &Bench, duration: Duration, least: u64) -> anyhow::Result<Outcome> {
        let url = bench.ws();
        let before = bench.meter().await;
        let started = Instant::now();
        let mut to_ready = Samples::default();
        let mut connects = 0;
        while connects < least || started.elapsed() < duration {
            let opened = Instant::now();
            let mut socket = ws::open(&url, &self.user.access_token).await?;
            to_ready.push(opened.elapsed().as_micros() as u64);
            connects += 1;
            socket.close(None).await?;
        }
        let spent = bench.spent_since(before).await;
        ensure!(connects > 0, "no connect");
        Ok(Outcome { connects, to_ready, spent })
    }
}
