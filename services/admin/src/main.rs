//! The admin binary: configuration, telemetry, serve until SIGINT/SIGTERM.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = chat_common::telemetry::init("admin")?;
    let config = chat_admin::Config::from_env().context("admin configuration")?;
    let app = chat_admin::App::build(config).await.context("starting admin")?;
    app.run(chat_common::shutdown::on_signal()).await?;
    tracing::info!("admin stopped");
    Ok(())
}
