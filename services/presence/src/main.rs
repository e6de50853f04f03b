//! The presence binary: configuration, telemetry, serve until SIGINT/SIGTERM.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = chat_common::telemetry::init("presence")?;
    let config = chat_presence::Config::from_env().context("presence configuration")?;
    let app = chat_presence::App::build(config).await.context("starting presence")?;
    app.run(chat_common::shutdown::on_signal()).await?;
    tracing::info!("presence stopped");
    Ok(())
}
