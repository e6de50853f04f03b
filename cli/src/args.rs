//! The command line, parsed by hand into one checked [`Command`] (a dozen
//! commands and a handful of options need no framework). Everything that can
//! be wrong with it is found here, before anything is read or sent: ids must
//! be UUIDs, numbers numbers, each option must belong to its command. Such
//! mistakes are usage errors (exit code 2).
//!
//! Options may stand anywhere on the line (`--json` too); `--` ends them, so
//! a message may begin with a dash. A password is never an argument: it comes
//! from standard input (`--password-stdin`) or `CHAT_PASSWORD`.
//!
//! `chat admin <subcommand>` is one command per subcommand: its options are
//! checked against `admin <subcommand>`. A text option (`--reason`,
//! `--resolution`) takes every word after it up to the next option, so a
//! reason needs no quotes. An operator token is never an argument either: it
//! comes from `CHAT_ADMIN_TOKEN` or a file (`--admin-token-file`).

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use crate::error::Error;

pub const USAGE: &str = "\
chat: a command-line client of the chat server (protocol v1, HTTP and WebSocket)

usage: chat [--json] <command> [arguments]

  login <server-url> <username>      log in (password: --password-stdin or CHAT_PASSWORD)
  register <server-url> <username>   create the user, then log in
  logout                             log this device out and forget its credentials
  whoami                             who is logged in, where
  conversations                      conversations, unread counts, last messages
  send <conversation-id> <text...>   send a message; prints its seq
  dm <username> <text...>            send to someone, starting the conversation if needed
  group create <title> <username...> start a group
  history <conversation-id>          a page of messages, oldest first
      [--limit N] [--before SEQ]
  tail <conversation-id>             follow a conversation live, after what was missed
      [--count N] [--timeout SECS]
  search <query...>                  find messages
      [--conversation ID]
  devices                            this user's devices
  devices revoke <device-id>         log a device out
  block <username>, unblock <username>, blocks
  mute <conversation-id>, unmute <conversation-id>
  report <conversation-id> <message-id> <reason...>
  help                               this text

Operators (the admin service, gRPC; never a user's login):
  admin users <query>                users by username prefix or id
  admin deactivate <user-id> --reason <text...>
  admin erase <user-id> --reason <text...>
  admin export <user-id> --reason <text...> [--out FILE]   one JSON archive (FILE created 0600)
  admin reports [--status open|resolved|all] [--limit N]
  admin resolve <report-id> --resolution <text...> [--remove-message]
  admin remove-message <conversation-id> <message-id> --reason <text...>
  admin remove-member <conversation-id> <user-id> --reason <text...>
  admin audit [--limit N]            the audit log, newest first
      --admin-url URL                else $CHAT_ADMIN_URL, else http://127.0.0.1:50056
      --admin-token-file PATH        mode 0600 or stricter; else $CHAT_ADMIN_TOKEN

  --json    one JSON document per command (one JSON object per line for tail)
  --        the end of options: what follows is text, dashes and all

Credentials live in $CHAT_CONFIG_DIR, else $XDG_CONFIG_HOME/chat, else ~/.config/chat.
Exit codes: 0 done, 1 the server or network said no, 2 the command line is wrong.
";

/// What to run, and how to show it.
#[derive(Debug)]
pub struct Invocation {
    pub command: Command,
    pub json: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Login { server: String, username: String, password_stdin: bool },
    Register { server: String, username: String, password_stdin: bool },
    Logout,
    Whoami,
    Conversations,
    Send { conversation: Uuid, text: String },
    Dm { username: String, text: String },
    GroupCreate { title: String, usernames: Vec<String> },
    History { conversation: Uuid, limit: Option<u32>, before: Option<u64> },
    Tail { conversation: Uuid, count: Option<u64>, timeout: Option<Duration> },
    Search { query: String, conversation: Option<Uuid> },
    Devices,
    RevokeDevice { device: Uuid },
    Block { username: String },
    Unblock { username: String },
    Blocks,
    Mute { conversation: Uuid },
    Unmute { conversation: Uuid },
    Report { conversation: Uuid, message: Uuid, reason: String },
    Admin { connection: AdminConnection, action: AdminAction },
}

/// Where the admin service is and where the operator token comes from, as
/// given on the command line (the environment fills in the rest).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AdminConnection {
    /// `--admin-url`, checked and as `http://host:port`.
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// One call of the admin service.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminAction {
    Users { query: String, limit: Option<u32> },
    Deactivate { user: Uuid, reason: String },
    Erase { user: Uuid, reason: String },
    Export { user: Uuid, reason: String, out: Option<PathBuf> },
    Reports { status: String, limit: Option<u32> },
    Resolve { report: Uuid, resolution: String, remove_message: bool },
    RemoveMessage { conversation: Uuid, message: Uuid, reason: String },
    RemoveMember { conversation: Uuid, user: Uuid, reason: String },
    Audit { limit: Option<u32> },
}

/// The admin subcommands, each checked as a command of its own.
const ADMIN: &[&str] = &[
    "admin users",
    "admin deactivate",
    "admin erase",
    "admin export",
    "admin reports",
    "admin resolve",
    "admin remove-message",
    "admin remove-member",
    "admin audit",
];

/// What an option takes after its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    /// One word (`--limit 3`, `--limit=3`).
    Value,
    /// Every word up to the next option, joined with spaces: a text.
    Words,
}

/// The options a command takes, besides `--json` and `--help` (any command).
const OPTIONS: &[(&str, Takes, &[&str])] = &[
    // (name, what it takes, the commands it belongs to)
    ("--password-stdin", Takes::Nothing, &["login", "register"]),
    ("--limit", Takes::Value, &["history", "admin users", "admin reports", "admin audit"]),
    ("--before", Takes::Value, &["history"]),
    ("--count", Takes::Value, &["tail"]),
    ("--timeout", Takes::Value, &["tail"]),
    ("--conversation", Takes::Value, &["search"]),
    ("--admin-url", Takes::Value, ADMIN),
    ("--admin-token-file", Takes::Value, ADMIN),
    (
        "--reason",
        Takes::Words,
        &["admin deactivate", "admin erase", "admin export", "admin remove-message", "admin remove-member"],
    ),
    ("--resolution", Takes::Words, &["admin resolve"]),
    ("--remove-message", Takes::Nothing, &["admin resolve"]),
    ("--out", Takes::Value, &["admin export"]),
    ("--status", Takes::Value, &["admin reports"]),
];

/// Options as given, in order: `(name, value)`.
type Options = Vec<(&'static str, Option<String>)>;

/// Parses the arguments after the program name.
///
/// # Errors
/// [`Error::Usage`] for anything but a complete, well-formed command.
pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Invocation, Error> {
    let mut words = Vec::new();
    let mut options: Options = Vec::new();
    let (mut json, mut help, mut ended) = (false, false, false);
    // The text option taking the words that follow, as an index in `options`.
    let mut text: Option<usize> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(|_| Error::usage("arguments must be UTF-8"))?;
        if ended || arg == "-" || !arg.starts_with('-') {
            match text.and_then(|i| options.get_mut(i)) {
                Some((_, Some(value))) => {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(&arg);
                }
                _ => words.push(arg),
            }
            continue;
        }
        // `--name=value`; the name alone is ever echoed (a mistyped
        // `--password=…` must not print the password).
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if name == "--" && inline.is_none() {
            // What follows is text: still the text option's, if one is open.
            ended = true;
            continue;
        }
        text = None;
        match name.as_str() {
            "--json" if inline.is_none() => json = true,
            "--help" | "-h" if inline.is_none() => help = true,
            _ => {
                let Some(&(known, takes, _)) = OPTIONS.iter().find(|(known, ..)| *known == name) else {
                    return Err(Error::usage(format!("unknown option {name}")));
                };
                let value = match (takes, inline) {
                    (Takes::Nothing, None) => None,
                    (Takes::Nothing, Some(_)) => return Err(Error::usage(format!("{known} takes no value"))),
                    (Takes::Value, Some(value)) => Some(value),
                    (Takes::Value, None) => {
                        let value = args.next().and_then(|v| v.into_string().ok());
                        Some(value.ok_or_else(|| Error::usage(format!("{known} needs a value")))?)
                    }
                    (Takes::Words, inline) => {
                        text = Some(options.len());
                        Some(inline.unwrap_or_default())
                    }
                };
                options.push((known, value));
            }
        }
    }
    if help || words.first().is_some_and(|w| w == "help") {
        return Ok(Invocation { command: Command::Help, json });
    }
    let Some(name) = words.first().cloned() else {
        return Err(Error::usage("no command given"));
    };
    // `chat admin users …` is the command `admin users`, and so on.
    let (key, skip) = if name == "admin" {
        let Some(sub) = words.get(1) else {
            return Err(Error::usage(
                "`chat admin` needs a subcommand (users, deactivate, erase, export, reports, resolve, remove-message, remove-member, audit)",
            ));
        };
        let key = format!("admin {sub}");
        if !ADMIN.contains(&key.as_str()) {
            return Err(Error::usage(format!("unknown command `chat {key}`")));
        }
        (key, 2)
    } else {
        (name, 1)
    };
    for (option, value) in &options {
        let (_, takes, commands) = OPTIONS.iter().find(|(known, ..)| known == option).expect("listed");
        if !commands.contains(&key.as_str()) {
            return Err(Error::usage(format!("{option} does not apply to `chat {key}`")));
        }
        if *takes == Takes::Words && value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Err(Error::usage(format!("{option} needs a text")));
        }
    }
    let command = command(&key, Words::new(&key, words[skip..].to_vec()), &options)?;
    Ok(Invocation { command, json })
}

fn command(name: &str, mut w: Words, options: &Options) -> Result<Command, Error> {
    let password_stdin = options.iter().any(|(o, _)| *o == "--password-stdin");
    let command = match name {
        "login" | "register" => {
            let server = server_url(&w.one("<server-url>")?)?;
            let username = username(w.one("<username>")?)?;
            if name == "login" {
                Command::Login { server, username, password_stdin }
            } else {
                Command::Register { server, username, password_stdin }
            }
        }
        "logout" => Command::Logout,
        "whoami" => Command::Whoami,
        "conversations" => Command::Conversations,
        "send" => Command::Send { conversation: w.id("<conversation-id>")?, text: w.rest("<text>")?.join(" ") },
        "dm" => Command::Dm { username: username(w.one("<username>")?)?, text: w.rest("<text>")?.join(" ") },
        "group" => match w.one("a subcommand (create)")?.as_str() {
            "create" => Command::GroupCreate {
                title: w.one("<title>")?,
                usernames: w.rest("<username>")?.into_iter().map(username).collect::<Result<_, _>>()?,
            },
            other => return Err(Error::usage(format!("unknown command `chat group {other}`"))),
        },
        "history" => Command::History {
            conversation: w.id("<conversation-id>")?,
            limit: number(options, "--limit")?,
            before: number(options, "--before")?,
        },
        "tail" => Command::Tail {
            conversation: w.id("<conversation-id>")?,
            count: positive(options, "--count")?,
            timeout: positive(options, "--timeout")?.map(Duration::from_secs),
        },
        "search" => {
            let conversation = match value(options, "--conversation") {
                Some(id) => Some(uuid(id, "conversation id")?),
                None => None,
            };
            Command::Search { query: w.rest("<query>")?.join(" "), conversation }
        }
        "devices" if w.is_empty() => Command::Devices,
        "devices" => match w.one("revoke")?.as_str() {
            "revoke" => Command::RevokeDevice { device: w.id("<device-id>")? },
            other => return Err(Error::usage(format!("unknown command `chat devices {other}`"))),
        },
        "block" => Command::Block { username: username(w.one("<username>")?)? },
        "unblock" => Command::Unblock { username: username(w.one("<username>")?)? },
        "blocks" => Command::Blocks,
        "mute" => Command::Mute { conversation: w.id("<conversation-id>")? },
        "unmute" => Command::Unmute { conversation: w.id("<conversation-id>")? },
        "report" => Command::Report {
            conversation: w.id("<conversation-id>")?,
            message: w.id("<message-id>")?,
            reason: w.rest("<reason>")?.join(" "),
        },
        admin if admin.starts_with("admin ") => {
            let connection = AdminConnection {
                url: value(options, "--admin-url").map(admin_url).transpose()?,
                token_file: value(options, "--admin-token-file").map(PathBuf::from),
            };
            Command::Admin { connection, action: admin_action(admin, &mut w, options)? }
        }
        // Bot tokens will be parsed here, each into a `Command` of its own
        // that `commands::run` dispatches.
        other => return Err(Error::usage(format!("unknown command `{other}`"))),
    };
    w.done()?;
    Ok(command)
}

/// `chat admin <subcommand> …`; `name` is `admin <subcommand>`.
fn admin_action(name: &str, w: &mut Words, options: &Options) -> Result<AdminAction, Error> {
    let text = |option: &str| match value(options, option) {
        Some(text) => Ok(text.trim().to_owned()),
        None => Err(Error::usage(format!("`chat {name}` needs {option} <text>"))),
    };
    Ok(match name {
        "admin users" => AdminAction::Users { query: w.one("<query>")?, limit: limit(options)? },
        "admin deactivate" => AdminAction::Deactivate { user: w.id("<user-id>")?, reason: text("--reason")? },
        "admin erase" => AdminAction::Erase { user: w.id("<user-id>")?, reason: text("--reason")? },
        "admin export" => AdminAction::Export {
            user: w.id("<user-id>")?,
            reason: text("--reason")?,
            out: value(options, "--out").map(PathBuf::from),
        },
        "admin reports" => {
            let status = value(options, "--status").unwrap_or("open");
            if !matches!(status, "open" | "resolved" | "all") {
                return Err(Error::usage(format!("--status is open, resolved or all, not '{status}'")));
            }
            AdminAction::Reports { status: status.to_owned(), limit: limit(options)? }
        }
        "admin resolve" => AdminAction::Resolve {
            report: w.id("<report-id>")?,
            resolution: text("--resolution")?,
            remove_message: options.iter().any(|(o, _)| *o == "--remove-message"),
        },
        "admin remove-message" => AdminAction::RemoveMessage {
            conversation: w.id("<conversation-id>")?,
            message: w.id("<message-id>")?,
            reason: text("--reason")?,
        },
        "admin remove-member" => AdminAction::RemoveMember {
            conversation: w.id("<conversation-id>")?,
            user: w.id("<user-id>")?,
            reason: text("--reason")?,
        },
        "admin audit" => AdminAction::Audit { limit: limit(options)? },
        other => unreachable!("ADMIN lists {other}"),
    })
}

/// The admin service's address: `host:port` or `http://host:port`, kept as
/// `http://host:port`. Plaintext gRPC only, as admin speaks it (reach it
/// over a trusted network or a tunnel).
///
/// # Errors
/// [`Error::Usage`] for anything else.
pub fn admin_url(word: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::usage(format!("'{word}' is not the admin service's address: {why}"));
    let full = if word.contains("://") { word.to_owned() } else { format!("http://{word}") };
    let url = url::Url::parse(&full).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "http" {
        return Err(bad("it is host:port or http://host:port (admin speaks plaintext gRPC)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials do not belong in it"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it is host:port, without a path or query"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The words after a command's name, taken in order.
struct Words {
    command: String,
    words: std::collections::VecDeque<String>,
}

impl Words {
    fn new(command: &str, words: Vec<String>) -> Self {
        Self { command: command.to_owned(), words: words.into() }
    }

    fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    fn one(&mut self, what: &str) -> Result<String, Error> {
        self.words.pop_front().ok_or_else(|| Error::usage(format!("`chat {}` needs {what}", self.command)))
    }

    fn id(&mut self, what: &str) -> Result<Uuid, Error> {
        let word = self.one(what)?;
        uuid(&word, what.trim_matches(['<', '>']).replace('-', " ").as_str())
    }

    /// All the remaining words, at least one.
    fn rest(&mut self, what: &str) -> Result<Vec<String>, Error> {
        if self.words.is_empty() {
            return Err(Error::usage(format!("`chat {}` needs {what}", self.command)));
        }
        Ok(self.words.drain(..).collect())
    }

    fn done(self) -> Result<(), Error> {
        match self.words.front() {
            None => Ok(()),
            Some(extra) => Err(Error::usage(format!("unexpected argument '{extra}' for `chat {}`", self.command))),
        }
    }
}

fn uuid(word: &str, what: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(word).map_err(|_| Error::usage(format!("'{word}' is not a {what} (a UUID)")))
}

/// A username goes into a URL path: "." and ".." would walk the path
/// instead of naming anyone, so they are refused here; everything else is
/// percent-encoded and left for the server to judge.
fn username(word: String) -> Result<String, Error> {
    if word.is_empty() || word == "." || word == ".." {
        return Err(Error::usage(format!("'{word}' is not a username")));
    }
    Ok(word)
}

/// The gateway's base URL: `http` or `https`, a host, no credentials, no
/// query; kept without a trailing slash so paths append to it.
fn server_url(word: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::usage(format!("'{word}' is not a server URL: {why}"));
    let url = url::Url::parse(word).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("it must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials do not belong in it"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it may not carry a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn value<'a>(options: &'a Options, name: &str) -> Option<&'a str> {
    options.iter().rev().find(|(o, _)| *o == name).and_then(|(_, v)| v.as_deref())
}

fn number<T: std::str::FromStr>(options: &Options, name: &str) -> Result<Option<T>, Error> {
    match value(options, name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| Error::usage(format!("{name} needs a number, not '{v}'"))),
    }
}

fn positive(options: &Options, name: &str) -> Result<Option<u64>, Error> {
    match number::<u64>(options, name)? {
        Some(0) => Err(Error::usage(format!("{name} needs a number above 0"))),
        n => Ok(n),
    }
}

/// `--limit` for the admin service (the service says how high it may go).
fn limit(options: &Options) -> Result<Option<u32>, Error> {
    let limit = positive(options, "--limit")?;
    limit.map(|n| u32::try_from(n).map_err(|_| Error::usage(format!("--limit {n} is too large")))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<Invocation, Error> {
        parse(line.split_whitespace().map(std::ffi::OsString::from))
    }

    const ID: &str = "0190c1d2-0000-7000-8000-000000000001";

    #[test]
    fn json_may_stand_anywhere_and_text_is_joined() {
        let parsed = parse_line(&format!("send {ID} hello --json there")).unwrap();
        assert!(parsed.json);
        assert_eq!(parsed.command, Command::Send { conversation: ID.parse().unwrap(), text: "hello there".into() });
    }

    #[test]
    fn after_a_double_dash_everything_is_text() {
        let parsed = parse_line(&format!("send {ID} -- --json -1")).unwrap();
        assert!(!parsed.json);
        assert_eq!(parsed.command, Command::Send { conversation: ID.parse().unwrap(), text: "--json -1".into() });
    }

    #[test]
    fn options_belong_to_their_commands() {
        let tail = parse_line(&format!("tail {ID} --count=3 --timeout 9")).unwrap().command;
        let expected =
            Command::Tail { conversation: ID.parse().unwrap(), count: Some(3), timeout: Some(Duration::from_secs(9)) };
        assert_eq!(tail, expected);
        let wrong = parse_line(&format!("send {ID} hi --limit 3")).unwrap_err();
        assert_eq!(wrong.to_string(), "--limit does not apply to `chat send`; see `chat help`");
        assert!(matches!(parse_line(&format!("tail {ID} --count 0")), Err(Error::Usage(_))));
        assert!(matches!(parse_line(&format!("history {ID} --limit many")), Err(Error::Usage(_))));
    }

    #[test]
    fn a_password_given_as_an_option_is_refused_without_being_repeated() {
        let error = parse_line("login http://localhost alice --password=hunter22").unwrap_err();
        assert!(matches!(error, Error::Usage(_)));
        assert!(!error.to_string().contains("hunter22"), "{error}");
    }

    #[test]
    fn unknown_commands_missing_arguments_and_bad_ids_are_usage_errors() {
        for line in ["frobnicate", "", "send", &format!("send {ID}"), "send not-an-id hi", "group", "group make x y"] {
            assert!(matches!(parse_line(line), Err(Error::Usage(_))), "{line:?}");
        }
        assert!(matches!(parse_line("whoami extra"), Err(Error::Usage(_))));
        assert!(matches!(parse_line("dm .. hi"), Err(Error::Usage(_))));
    }

    #[test]
    fn server_urls_are_http_or_https_without_credentials() {
        assert_eq!(server_url("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(server_url("https://chat.example/base/").unwrap(), "https://chat.example/base");
        for bad in ["127.0.0.1:8080", "ftp://x", "http://u:p@x", "http://x/?q=1", "nonsense"] {
            assert!(server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn help_wins_over_everything_else() {
        assert_eq!(parse_line("send --help").unwrap().command, Command::Help);
        assert_eq!(parse_line("help").unwrap().command, Command::Help);
    }

    #[test]
    fn admin_subcommands_take_their_own_options_and_texts_run_to_the_next_option() {
        let parsed = parse_line(&format!("admin deactivate {ID} --reason spam campaign, see ticket --json")).unwrap();
        assert!(parsed.json);
        let Command::Admin { connection, action } = parsed.command else { panic!("an admin command") };
        assert_eq!(connection, AdminConnection::default());
        assert_eq!(
            action,
            AdminAction::Deactivate { user: ID.parse().unwrap(), reason: "spam campaign, see ticket".into() }
        );
        let line =
            format!("admin resolve {ID} --remove-message --resolution=removed and warned --admin-url 127.0.0.1:9");
        let Command::Admin { connection, action } = parse_line(&line).unwrap().command else { panic!() };
        assert_eq!(connection.url.as_deref(), Some("http://127.0.0.1:9"));
        let expected = AdminAction::Resolve {
            report: ID.parse().unwrap(),
            resolution: "removed and warned".into(),
            remove_message: true,
        };
        assert_eq!(action, expected);
        let after_dashes = parse(["admin", "erase", ID, "--reason", "--", "-1", "--json"].map(Into::into)).unwrap();
        let Command::Admin { action, .. } = after_dashes.command else { panic!() };
        assert_eq!(action, AdminAction::Erase { user: ID.parse().unwrap(), reason: "-1 --json".into() });
        let Command::Admin { action, .. } = parse_line("admin reports --limit 5").unwrap().command else { panic!() };
        assert_eq!(action, AdminAction::Reports { status: "open".into(), limit: Some(5) });
    }

    #[test]
    fn admin_mistakes_are_usage_errors() {
        for line in [
            "admin".to_owned(),
            "admin frobnicate".to_owned(),
            format!("admin deactivate {ID}"),
            format!("admin deactivate {ID} --reason"),
            format!("admin deactivate {ID} --reason   "),
            "admin deactivate bob --reason spam".to_owned(),
            format!("admin erase --reason spam {ID}"),
            "admin users bob --reason spam".to_owned(),
            "admin reports --status closed".to_owned(),
            "admin audit --limit 0".to_owned(),
            format!("admin resolve {ID} --reason x"),
            "admin users bob --admin-url https://admin.example".to_owned(),
            "admin users bob --admin-url http://u:p@admin:1".to_owned(),
            format!("send {ID} hi --reason x"),
        ] {
            assert!(matches!(parse_line(&line), Err(Error::Usage(_))), "{line:?}");
        }
    }

    #[test]
    fn the_admin_address_is_host_and_port_over_plain_http() {
        assert_eq!(admin_url("127.0.0.1:50056").unwrap(), "http://127.0.0.1:50056");
        assert_eq!(admin_url("http://admin.internal:50056/").unwrap(), "http://admin.internal:50056");
        assert_eq!(admin_url("localhost:1").unwrap(), "http://localhost:1");
        for bad in ["https://admin:1", "http://admin:1/x", "http://admin:1?q", "grpc://admin:1", ":1"] {
            assert!(admin_url(bad).is_err(), "{bad}");
        }
    }
}
