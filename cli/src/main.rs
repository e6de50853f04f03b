//! `chat`: a command-line client of the chat server. It speaks protocol v1
//! (docs/protocol.md) to the gateway over HTTP and WebSocket, as any
//! third-party client would; and, for operators (`chat admin …`), the admin
//! service's gRPC API with an operator token, never a user's login.
//!
//! Modules, one job each: `args` reads the command line, `commands` runs a
//! command, `api` does HTTP (and renews tokens), `tail` follows a
//! conversation over the WebSocket, `admin` speaks to the admin service,
//! `config` keeps credentials and cursors, `output` lays out what is
//! printed, `error` says what went wrong.

mod admin;
mod api;
mod args;
mod commands;
mod config;
mod error;
mod output;
mod tail;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let outcome = args::parse(std::env::args_os().skip(1)).and_then(|invocation| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let runtime = runtime.map_err(|e| error::Error::local(format!("cannot start: {e}")))?;
        runtime.block_on(commands::run(invocation))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.is_reported() {
                // Exactly one line, whatever the server's message held.
                let said = output::clean(&e.to_string()).replace(['\n', '\t'], " ");
                let _ = writeln!(std::io::stderr(), "chat: {said}");
            }
            e.exit_code()
        }
    }
}
