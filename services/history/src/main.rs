//! The history binary: configuration, telemetry, serve until SIGINT/SIGTERM.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = chat_common::telemetry::init("history")?;
    let config = chat_history::Config::from_env().context("history configuration")?;
    let app = chat_history::App::build(config).await.context("starting history")?;
    app.run(chat_common::shutdown::on_signal()).await?;
    tracing::info!("history stopped");
    Ok(())
}
