//! The web client in a real browser: Debian's Chromium driven by
//! playwright-core (tests/browser/web_client.mjs, installed by
//! scripts/install-browser.sh). This test runs the services, starts the
//! script, and stops and restarts a gateway when the script asks.
//! Screenshots of the main views land in `target/screenshots/`.

use std::process::Stdio;
use std::time::Duration;

use chat_system_tests::{Db, System, workspace_root};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Node, Chromium and the script's packages, or why they are missing.
fn browser_tools() -> Result<(), String> {
    let root = workspace_root();
    if !root.join("tests/browser/node_modules/playwright-core").is_dir() {
        return Err("tests/browser/node_modules is missing: run scripts/install-browser.sh".into());
    }
    if !std::path::Path::new(&chromium()).is_file() {
        return Err(format!("{} is missing: run scripts/install-browser.sh", chromium()));
    }
    Ok(())
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_works_in_a_real_browser() {
    if let Err(why) = browser_tools() {
        assert!(!chat_system_tests::in_ci(), "{why}");
        eprintln!("skipped outside CI: {why}");
        return;
    }
    chat_system_tests::within_limit(async {
        let mut system = System::builder()
            .gateways(2)
            .presence_config(|c| c.grace = Duration::from_secs(1))
            .start(Db::Sqlite)
            .await
            .expect("sqlite needs no server");
        let root = workspace_root();
        let shots = root.join("target/screenshots");
        let mut script = Command::new("node")
            .arg(root.join("tests/browser/web_client.mjs"))
            .current_dir(root.join("tests/browser"))
            .env("GATEWAY_A", system.http(0))
            .env("GATEWAY_B", system.http(1))
            .env("SCREENSHOTS", &shots)
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut to_script = script.stdin.take().expect("stdin");
        let mut lines = BufReader::new(script.stdout.take().expect("stdout")).lines();
        let gateway_a = system.gateway_addr(0);
        let mut done = false;
        while let Some(line) = lines.next_line().await.expect("script output") {
            match line.as_str() {
                "STOP_GATEWAY_A" => {
                    system.stop_gateway(0).await;
                    to_script.write_all(b"STOPPED\n").await.expect("answer");
                }
                "START_GATEWAY_A" => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    system.restart_gateway(0, gateway_a).await;
                    to_script.write_all(b"STARTED\n").await.expect("answer");
                }
                "DONE" => done = true,
                other => println!("{other}"),
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(30), script.wait()).await.expect("ends").expect("status");
        assert!(status.success() && done, "the browser scenario failed (see its output above)");
        system.stop().await;
    })
    .await;
}
