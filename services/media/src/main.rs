//! The media binary: configuration, telemetry, serve until SIGINT/SIGTERM.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = chat_common::telemetry::init("media")?;
    let config = chat_media::Config::from_env().context("media configuration")?;
    let app = chat_media::App::build(config).await.context("starting media")?;
    app.run(chat_common::shutdown::on_signal()).await?;
    tracing::info!("media stopped");
    Ok(())
}
