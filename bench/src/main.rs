//! Benchmarks that need the real system around them.
//!
//! `chat-bench ingest [--messages N] [--conversations C]`: how fast history
//! stores a backlog of the CHAT stream, with batched transactions against one
//! transaction per message, on SQLite and PostgreSQL. The stream is filled
//! first (so the rate is history's alone), then history starts and the time
//! until its consumer's ack floor reaches the end of the stream is measured.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_common::shutdown::CancellationToken;
use chat_proto::events::v1::Message;
use chat_system_tests::{Db, NatsServer, database};
use prost::Message as _;

struct Options {
    messages: u64,
    conversations: u64,
}

fn options() -> anyhow::Result<(String, Options)> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let mut options = Options { messages: 20_000, conversations: 100 };
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--messages" => options.messages = value.parse()?,
            "--conversations" => options.conversations = value.parse()?,
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok((command, options))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, options) = options()?;
    match command.as_str() {
        "ingest" => ingest(&options).await,
        _ => bail!("usage: chat-bench ingest [--messages N] [--conversations C]"),
    }
}

async fn ingest(options: &Options) -> anyhow::Result<()> {
    println!(
        "history ingest: {} messages over {} conversations, backlog already in the stream",
        options.messages, options.conversations
    );
    println!("{:<10} {:>6} {:>10} {:>14}", "database", "batch", "seconds", "messages/s");
    for db in [Db::Sqlite, Db::Postgres] {
        for batch in [1, 256] {
            let seconds = ingest_once(db, batch, options).await?;
            println!(
                "{:<10} {:>6} {:>10.2} {:>14.0}",
                format!("{db:?}"),
                batch,
                seconds,
                options.messages as f64 / seconds
            );
        }
    }
    Ok(())
}

async fn ingest_once(db: Db, batch: usize, options: &Options) -> anyhow::Result<f64> {
    let nats = NatsServer::start().await;
    let dir = std::env::temp_dir().join(format!("chat-bench-{}", uuid::Uuid::new_v4().simple()));
    let postgres_name = format!("chat_bench_{}", uuid::Uuid::new_v4().simple());
    let url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("history.db").display()),
        Db::Postgres => database::create_postgres(&postgres_name).await.context("PostgreSQL is needed")?,
    };
    let client = chat_common::nats::connect(&nats.url(), "bench").await?;
    let js = async_nats::jetstream::new(client);
    let stream = chat_common::nats::chat_stream(&js, &Default::default()).await?;
    fill_stream(&js, options).await?;
    let last = stream.cached_info().state.last_sequence.max(options.messages);

    let mut config = chat_history::Config::local(&url, &nats.url());
    config.ingest_batch = batch;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let history = chat_history::App::build(config).await?;
    let running = tokio::spawn(history.run(shutdown.clone()));
    loop {
        let floor = stream.consumer_info("history").await.map(|i| i.ack_floor.stream_sequence).unwrap_or(0);
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
    Ok(seconds)
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
