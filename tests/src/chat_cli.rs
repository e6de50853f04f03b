//! The `chat` binary driven as a process, as a person or a script uses it:
//! one client per config directory (`CHAT_CONFIG_DIR`), nothing of the
//! caller's own chat settings, every run bounded in time, and the operator
//! token never in what it prints.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::client::PASSWORD;
use crate::system::System;
use crate::{OPERATOR_TOKEN, service_binary};

/// Longer than any one command takes; a hang fails the test.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an eventually consistent answer (history's pages, search,
/// unread counts) may take to show what was sent.
pub const SETTLE: Duration = Duration::from_secs(20);

/// One person's `chat` (a user, or the operator), with a config directory of its own.
pub struct ChatCli {
    home: tempfile::TempDir,
    /// The config directory; the client creates it, so its mode is the client's.
    pub dir: PathBuf,
    /// The gateway's `http://host:port`.
    pub server: String,
    /// The admin service's `host:port`.
    pub admin_addr: String,
}

/// How a run ended.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Stdout of a run that succeeded without a word on stderr.
    pub fn ok(self) -> String {
        assert_eq!((self.code, self.stderr.as_str()), (Some(0), ""), "{self:?}");
        assert!(!self.stdout.contains(OPERATOR_TOKEN), "the token is never shown: {self:?}");
        self.stdout
    }

    pub fn json(self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"))
    }

    /// The one line on stderr of a run that failed with `code`, having printed nothing.
    pub fn failed(self, code: i32) -> String {
        assert_eq!(self.code, Some(code), "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        assert!(self.stderr.starts_with("chat: "), "{self:?}");
        assert_eq!(self.stderr.matches('\n').count(), 1, "exactly one line: {self:?}");
        assert!(self.stderr.ends_with('\n'), "{self:?}");
        assert!(!self.stderr.contains(OPERATOR_TOKEN), "the token is never shown: {self:?}");
        self.stderr.trim_end().to_owned()
    }
}

impl ChatCli {
    pub fn new(system: &System) -> Self {
        let home = tempfile::tempdir().expect("temp dir");
        let dir = home.path().join("chat");
        Self { home, dir, server: system.http(0), admin_addr: system.admin_addr.clone() }
    }

    /// `chat args`, with nothing of the caller's chat settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(service_binary("chat"));
        command
            .args(args)
            .env("CHAT_CONFIG_DIR", &self.dir)
            .env_remove("CHAT_PASSWORD")
            .env_remove("CHAT_ADMIN_URL")
            .env_remove("CHAT_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Ran {
        self.run_with(args, &[], None).await
    }

    /// Runs `chat args` with `env` set and `stdin` written to it.
    pub async fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Ran {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("chat runs");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(text.as_bytes()).await.expect("write stdin");
        }
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("chat {args:?} did not finish"))
            .expect("chat ran");
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
        }
    }

    /// As the operator: `chat admin args`, the service and token from the environment.
    pub async fn admin(&self, args: &[&str]) -> Ran {
        let args: Vec<&str> = ["admin"].iter().chain(args).copied().collect();
        let env = [("CHAT_ADMIN_URL", self.admin_addr.as_str()), ("CHAT_ADMIN_TOKEN", OPERATOR_TOKEN)];
        self.run_with(&args, &env, None).await
    }

    /// Registers `username` (password on stdin) and logs this client in; what it said.
    pub async fn register(&self, username: &str) -> String {
        let args = ["register", &self.server, username, "--password-stdin"];
        self.run_with(&args, &[], Some(&format!("{PASSWORD}\n"))).await.ok()
    }

    /// Registers and logs in as [`ChatCli::register`]; the user's id.
    pub async fn register_id(&self, username: &str) -> String {
        self.register(username).await;
        self.credentials()["user_id"].as_str().expect("a user id").to_owned()
    }

    /// A file in the config directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file in this client's home, outside its config directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    pub fn credentials(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.file("credentials.json")).expect("credentials")).expect("JSON")
    }

    /// Starts a long-running `chat` (a tail) whose lines are read as they come.
    pub fn spawn(&self, args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
        let mut child = self.command(args).spawn().expect("chat runs");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        (child, lines)
    }

    /// Runs `--json args` until `done` holds for its document.
    pub async fn poll_json(&self, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
        let args: Vec<&str> = ["--json"].iter().chain(args).copied().collect();
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let answer = self.run(&args).await.json();
            if done(&answer) {
                return answer;
            }
            assert!(tokio::time::Instant::now() < deadline, "chat {args:?} never settled: {answer}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A file's permission bits.
pub fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).expect("exists").permissions().mode() & 0o777
}
