//! The notification binary: configuration, telemetry, serve until SIGINT/SIGTERM.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = chat_common::telemetry::init("notification")?;
    let config = chat_notification::Config::from_env().context("notification configuration")?;
    let app = chat_notification::App::build(config).await.context("starting notification")?;
    app.run(chat_common::shutdown::on_signal()).await?;
    tracing::info!("notification stopped");
    Ok(())
}
