//! The auth binary: configuration, telemetry, serve until SIGINT/SIGTERM.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = chat_common::telemetry::init("auth")?;
    let config = chat_auth::Config::from_env().context("auth configuration")?;
    let app = chat_auth::App::build(config).await.context("starting auth")?;
    app.run(chat_common::shutdown::on_signal()).await?;
    tracing::info!("auth stopped");
    Ok(())
}
