//! The gateway binary: configuration, telemetry, serve until SIGINT/SIGTERM.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = chat_common::telemetry::init("gateway")?;
    let config = chat_gateway::Config::from_env().context("gateway configuration")?;
    let app = chat_gateway::App::build(config, chat_common::shutdown::on_signal()).await.context("starting gateway")?;
    app.run().await?;
    tracing::info!("gateway stopped");
    Ok(())
}
