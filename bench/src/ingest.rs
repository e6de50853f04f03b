//! History ingest: how fast history stores a backlog of the CHAT stream,
//! batched against one transaction per message, on SQLite and PostgreSQL.
//! The stream is filled first (so the rate is history's alone), then history
//! starts in-process and the time until its consumer's ack floor reaches the
//! end of the stream is measured.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use chat_common::shutdown::CancellationToken;
use chat_proto::events::v1::Message;
use chat_system_tests::{Db, NatsServer, database};
use prost::Message as _;

use crate::report::Report;

pub struct Options {
    pub messages: u64,
    pub conversations: u64,
}

pub async fn run(options: &Options, report: &mut Report) -> anyhow::Result<()> {
    report.section(
        &format!(
            "History ingest: up to {} messages over {} conversations, backlog already in the stream",
            options.messages, options.conversations
        ),
        &["database", "batch", "messages", "seconds", "messages/s", "target"],
    );
    for db in [Db::Sqlite, Db::Postgres] {
        for batch in [1, 1024] {
            // One transaction per message is the baseline batching is
            // measured against: a tenth of the backlog tells its rate.
            let options = if batch == 1 {
                &Options { messages: (options.messages / 10).max(1), conversations: options.conversations }
            } else {
                options
            };
            let Some(seconds) = ingest_once(db, batch, options).await? else {
                report.row(&[&format!("{db:?}"), &batch.to_string(), "", "not reachable", "", ""]);
                continue;
            };
            // Issue 19's target, on both databases.
            let target = if batch == 1 { "" } else { "≥ 100,000" };
            report.row(&[
                &format!("{db:?}"),
                &batch.to_string(),
                &crate::report::count(options.messages as f64),
                &format!("{seconds:.2}"),
                &crate::report::count(options.messages as f64 / seconds),
                target,
            ]);
        }
    }
    Ok(())
}

/// One ingest of `messages` on SQLite with batches of 1,024, for counting its
/// instructions (scripts/bench-instructions runs it under callgrind, which
/// counts only history's code and SQLite's).
pub async fn once_on_sqlite(messages: u64) -> anyhow::Result<()> {
    let options = Options { messages, conversations: 100 };
    let seconds = ingest_once(Db::Sqlite, 1024, &options).await?.context("SQLite is always reachable")?;
    println!("stored {messages} messages in {seconds:.2} s");
    Ok(())
}

/// Seconds to store the backlog; `None` for PostgreSQL when none is
/// reachable outside CI.
async fn ingest_once(db: Db, batch: usize, options: &Options) -> anyhow::Result<Option<f64>> {
    let nats = NatsServer::start().await;
    let dir = std::env::temp_dir().join(format!("chat-bench-{}", uuid::Uuid::new_v4().simple()));
    let postgres_name = format!("chat_bench_{}", uuid::Uuid::new_v4().simple());
    let url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("history.db").display()),
        Db::Postgres => match database::create_postgres(&postgres_name).await {
            Some(url) => url,
            None => return Ok(None),
        },
    };
    let client = chat_common::nats::connect(&nats.url(), "bench").await?;
    let js = async_nats::jetstream::new(client);
    let stream = chat_common::nats::chat_stream(&js, &Default::default()).await?;
    fill_stream(&js, options).await?;
    let last = stream.cached_info().state.last_sequence.max(options.messages);

    let mut config = chat_history::Config::local(&url, &nats.url());
    config.ingest_batch = batch;
    let shutdown = CancellationToken::new();
    // Migrations and connecting are start-up, not ingest: the clock starts
    // when the consumer starts pulling.
    let history = chat_history::App::build(config).await?;
    let started = Instant::now();
    let running = tokio::spawn(history.run(shutdown.clone()));
    loop {
        let floor =
            stream.consumer_info(chat_history::CONSUMER).await.map(|i| i.ack_floor.stream_sequence).unwrap_or(0);
        if floor >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = running.await;
    if db == Db::Postgres {
        database::drop_postgres(&postgres_name).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(seconds))
}

/// Publishes the backlog: realistic messages, round-robin over conversations,
/// pipelined (many acks outstanding) so filling is quick.
async fn fill_stream(js: &async_nats::jetstream::Context, options: &Options) -> anyhow::Result<()> {
    let conversations: Vec<String> = (0..options.conversations).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let sender = uuid::Uuid::now_v7().to_string();
    let device = uuid::Uuid::now_v7().to_string();
    let mut pending = Vec::new();
    for i in 0..options.messages {
        let conversation = &conversations[(i % options.conversations) as usize];
        let message = Message {
            conversation_id: conversation.clone(),
            message_id: uuid::Uuid::now_v7().to_string(),
            seq: i / options.conversations + 1,
            sender_id: sender.clone(),
            sender_device_id: device.clone(),
            client_msg_id: format!("bench-{i}"),
            body: "a message of typical length, about as long as most chat lines are".to_owned(),
            sent_at_ms: chat_common::time::now_ms(),
            ..Default::default()
        };
        let subject = chat_common::nats::message_subject(conversation);
        pending.push(js.publish(subject, message.encode_to_vec().into()).await?);
        if pending.len() >= 1000 {
            for ack in pending.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in pending {
        ack.await?;
    }
    Ok(())
}
