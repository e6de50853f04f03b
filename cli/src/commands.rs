//! What each command does: the protocol v1 calls it makes, in order, and
//! the names it looks up so people read usernames rather than ids. The
//! answers go to `output` as the server gave them, with those names added.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::admin;
use crate::api::{Api, Call, Session, segment};
use crate::args::{Command, Invocation, USAGE};
use crate::config::ConfigDir;
use crate::error::Error;
use crate::output::{self, Output};
use crate::tail;

/// Runs one command.
///
/// # Errors
/// Whatever stopped it, as the one line the user reads.
pub async fn run(invocation: Invocation) -> Result<(), Error> {
    let out = Output::new(invocation.json);
    match invocation.command {
        Command::Help => output::line(USAGE.trim_end()),
        Command::Login { server, username, password_stdin } => {
            log_in(&ConfigDir::from_env()?, &server, &username, password_stdin, false, out).await
        }
        Command::Register { server, username, password_stdin } => {
            log_in(&ConfigDir::from_env()?, &server, &username, password_stdin, true, out).await
        }
        Command::Logout => log_out(ConfigDir::from_env()?, out).await,
        // Operators' commands: the admin service, not the user's login.
        Command::Admin { connection, action } => admin::run(connection, action, out).await,
        // Bot tokens will be dispatched here when they come, each to a
        // function of its own like those below.
        command => {
            let mut session = Session::resume(ConfigDir::from_env()?)?;
            as_user(&mut session, command, out).await
        }
    }
}

/// The commands of a logged-in device.
async fn as_user(session: &mut Session, command: Command, out: Output) -> Result<(), Error> {
    match command {
        Command::Whoami => whoami(session, out).await,
        Command::Conversations => conversations(session, out).await,
        Command::Send { conversation, text } => {
            let message = send(session, conversation, &text).await?;
            out.show(&message, |m| format!("sent #{}", m["seq"]))
        }
        Command::Dm { username, text } => dm(session, &username, &text, out).await,
        Command::GroupCreate { title, usernames } => create_group(session, &title, &usernames, out).await,
        Command::History { conversation, limit, before } => history(session, conversation, limit, before, out).await,
        Command::Tail { conversation, count, timeout } => {
            // Asked first over HTTP: a conversation that is not there, or not
            // the user's, is a clear error, and the token is fresh for the upgrade.
            let about = session.get(format!("/v1/conversations/{conversation}")).await?;
            let name = conversation_name(session, &about).await?;
            tail::run(session, conversation, &name, tail::Limits { count, timeout }, out).await
        }
        Command::Search { query, conversation } => search(session, &query, conversation, out).await,
        Command::Devices => {
            let devices = session.get("/v1/devices").await?;
            out.show(&devices, output::devices)
        }
        Command::RevokeDevice { device } => revoke(session, device, out).await,
        Command::Block { username } => block(session, &username, true, out).await,
        Command::Unblock { username } => block(session, &username, false, out).await,
        Command::Blocks => blocks(session, out).await,
        Command::Mute { conversation } => mute(session, conversation, true, out).await,
        Command::Unmute { conversation } => mute(session, conversation, false, out).await,
        Command::Report { conversation, message, reason } => {
            let path = format!("/v1/conversations/{conversation}/messages/{message}/reports");
            let report = session.call(Call::new(Method::POST, path, Some(json!({ "reason": reason })))).await?;
            out.show(&report, |r| {
                format!("reported message {message} (report {})", r["report_id"].as_str().unwrap_or("?"))
            })
        }
        Command::Help | Command::Login { .. } | Command::Register { .. } | Command::Logout | Command::Admin { .. } => {
            unreachable!("run handles the commands that need no session")
        }
    }
}

/// The password, from one line of standard input or `CHAT_PASSWORD`;
/// never from the command line, where other users of the machine see it.
fn password(from_stdin: bool) -> Result<String, Error> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::usage(format!("cannot read the password from standard input: {e}")))?;
        let password = line.strip_suffix('\n').map_or(line.as_str(), |l| l.strip_suffix('\r').unwrap_or(l));
        if password.is_empty() {
            return Err(Error::usage("no password on standard input"));
        }
        return Ok(password.to_owned());
    }
    match std::env::var("CHAT_PASSWORD") {
        Ok(password) if !password.is_empty() => Ok(password),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::usage("CHAT_PASSWORD is not UTF-8")),
        _ => Err(Error::usage("no password: pipe it in with --password-stdin, or set CHAT_PASSWORD")),
    }
}

async fn log_in(
    config: &ConfigDir,
    server: &str,
    username: &str,
    password_stdin: bool,
    register: bool,
    out: Output,
) -> Result<(), Error> {
    let password = password(password_stdin)?;
    let api = Api::new(server)?;
    if register {
        api.register(username, &password).await?;
    }
    let credentials = api.login(username, &password).await?;
    config.save_credentials(&credentials)?;
    let shown = json!({
        "server": credentials.server, "user_id": credentials.user_id,
        "username": credentials.username, "device_id": credentials.device_id,
    });
    out.show(&shown, |s| {
        let done = if register { "registered and logged in" } else { "logged in" };
        let (name, server, device) = (s["username"].as_str(), s["server"].as_str(), s["device_id"].as_str());
        let name = output::clean(name.unwrap_or_default());
        format!("{done} as {name} on {} (device {})", server.unwrap_or_default(), device.unwrap_or_default())
    })
}

/// Logs the device out on the server, then forgets it here. A device the
/// server has already let go (revoked, expired) is forgotten all the same;
/// when the server cannot be reached the credentials stay, to try again.
async fn log_out(config: ConfigDir, out: Output) -> Result<(), Error> {
    let mut session = Session::resume(config.clone())?;
    match session.call(Call::new(Method::POST, "/v1/auth/logout", None)).await {
        Ok(_) | Err(Error::NotLoggedIn) => {}
        Err(e) => return Err(e),
    }
    config.remove_credentials()?;
    out.show(&json!({ "logged_out": true }), |_| "logged out".to_owned())
}

async fn whoami(session: &mut Session, out: Output) -> Result<(), Error> {
    let me = session.get("/v1/users/me").await?;
    let credentials = session.credentials();
    let shown = json!({
        "server": credentials.server, "user_id": me["user_id"], "username": me["username"],
        "display_name": me["display_name"], "device_id": credentials.device_id,
    });
    out.show(&shown, output::whoami)
}

/// What people call a conversation: a group's title, or the other member's username.
async fn conversation_name(session: &mut Session, conversation: &Value) -> Result<String, Error> {
    if conversation["kind"] == "group" {
        return Ok(conversation["title"].as_str().unwrap_or_default().to_owned());
    }
    let me = session.credentials().user_id.clone();
    let members = conversation["members"].as_array().map(Vec::as_slice).unwrap_or_default();
    let other = members.iter().filter_map(Value::as_str).find(|id| !id.eq_ignore_ascii_case(&me));
    Ok(match other {
        Some(id) => session.username(id).await?.unwrap_or_else(|| format!("user {id}")),
        None => "yourself".to_owned(),
    })
}

/// Adds `sender_username` to each message whose sender is known.
async fn name_senders<'a>(
    session: &mut Session,
    messages: impl IntoIterator<Item = &'a mut Value>,
) -> Result<(), Error> {
    for message in messages {
        if message.is_null() {
            continue;
        }
        if let Some(sender) = message["sender_id"].as_str().map(str::to_owned)
            && let Some(username) = session.username(&sender).await?
        {
            message["sender_username"] = username.into();
        }
    }
    Ok(())
}

fn messages_of(page: &mut Value) -> impl Iterator<Item = &mut Value> {
    page["messages"].as_array_mut().into_iter().flatten()
}

async fn conversations(session: &mut Session, out: Output) -> Result<(), Error> {
    let mut list = session.get("/v1/conversations").await?;
    for conversation in list["conversations"].as_array_mut().into_iter().flatten() {
        conversation["name"] = conversation_name(session, conversation).await?.into();
        name_senders(session, [&mut conversation["last_message"]]).await?;
    }
    out.show(&list, output::conversations)
}

/// Sends `text` with a fresh `client_msg_id`; the stored message.
async fn send(session: &mut Session, conversation: Uuid, text: &str) -> Result<Value, Error> {
    let body = json!({ "client_msg_id": Uuid::new_v4().to_string(), "body": text });
    let path = format!("/v1/conversations/{conversation}/messages");
    // A retry after a token refresh carries the same `client_msg_id`: the
    // server stores the message once.
    session.call(Call::new(Method::POST, path, Some(body))).await
}

/// A user's id, by username.
async fn user_id(session: &mut Session, username: &str) -> Result<String, Error> {
    let user = session.user_named(username).await?;
    match user["user_id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => Err(session.api().unexpected(format!("a user without an id: {}", segment(username)))),
    }
}

async fn dm(session: &mut Session, username: &str, text: &str, out: Output) -> Result<(), Error> {
    let other = user_id(session, username).await?;
    let body = json!({ "kind": "direct", "members": [other] });
    let conversation = session.call(Call::new(Method::POST, "/v1/conversations", Some(body))).await?;
    let Some(id) = conversation["conversation_id"].as_str().and_then(|id| Uuid::parse_str(id).ok()) else {
        return Err(session.api().unexpected("a conversation without an id".into()));
    };
    let message = send(session, id, text).await?;
    let name = output::clean(session.username(&other).await?.as_deref().unwrap_or(username));
    out.show(&message, |m| format!("sent #{} to {name} (conversation {id})", m["seq"]))
}

async fn create_group(session: &mut Session, title: &str, usernames: &[String], out: Output) -> Result<(), Error> {
    let mut members = Vec::new();
    for username in usernames {
        members.push(user_id(session, username).await?);
    }
    let body = json!({ "kind": "group", "title": title, "members": members });
    let group = session.call(Call::new(Method::POST, "/v1/conversations", Some(body))).await?;
    out.show(&group, |g| {
        let id = g["conversation_id"].as_str().unwrap_or_default();
        format!("created group \"{}\" {id} with {}", output::clean(title), output::clean(&usernames.join(", ")))
    })
}

async fn history(
    session: &mut Session,
    conversation: Uuid,
    limit: Option<u32>,
    before: Option<u64>,
    out: Output,
) -> Result<(), Error> {
    let mut query = Vec::new();
    query.extend(limit.map(|l| ("limit", l.to_string())));
    query.extend(before.map(|b| ("before_seq", b.to_string())));
    let mut page = session.call(Call::get(format!("/v1/conversations/{conversation}/messages")).query(&query)).await?;
    name_senders(session, messages_of(&mut page)).await?;
    out.show(&page, |p| output::history(p, &conversation.to_string()))
}

async fn search(session: &mut Session, text: &str, conversation: Option<Uuid>, out: Output) -> Result<(), Error> {
    let mut query = vec![("q", text.to_owned())];
    query.extend(conversation.map(|c| ("conversation_id", c.to_string())));
    let mut results = session.call(Call::get("/v1/search").query(&query)).await?;
    name_senders(session, messages_of(&mut results)).await?;
    out.show(&results, output::search)
}

/// Revokes a device; revoking this one is logging out.
async fn revoke(session: &mut Session, device: Uuid, out: Output) -> Result<(), Error> {
    session.call(Call::new(Method::DELETE, format!("/v1/devices/{device}"), None)).await?;
    let this_device = Uuid::parse_str(&session.credentials().device_id).is_ok_and(|d| d == device);
    if this_device {
        session.config().remove_credentials()?;
    }
    let shown = json!({ "device_id": device.to_string(), "revoked": true, "this_device": this_device });
    out.show(&shown, |_| {
        let note = if this_device { " (this device: logged out)" } else { "" };
        format!("revoked device {device}{note}")
    })
}

async fn block(session: &mut Session, username: &str, blocked: bool, out: Output) -> Result<(), Error> {
    let id = user_id(session, username).await?;
    let method = if blocked { Method::PUT } else { Method::DELETE };
    session.call(Call::new(method, format!("/v1/blocks/{}", segment(&id)), None)).await?;
    let name = session.username(&id).await?.unwrap_or_else(|| username.to_owned());
    let shown = json!({ "user_id": id, "username": name, "blocked": blocked });
    out.show(&shown, |_| format!("{} {}", if blocked { "blocked" } else { "unblocked" }, output::clean(&name)))
}

async fn blocks(session: &mut Session, out: Output) -> Result<(), Error> {
    let mut list = session.get("/v1/blocks").await?;
    for block in list["blocks"].as_array_mut().into_iter().flatten() {
        if let Some(id) = block["user_id"].as_str().map(str::to_owned)
            && let Some(name) = session.username(&id).await?
        {
            block["username"] = name.into();
        }
    }
    out.show(&list, output::blocks)
}

async fn mute(session: &mut Session, conversation: Uuid, muted: bool, out: Output) -> Result<(), Error> {
    let method = if muted { Method::PUT } else { Method::DELETE };
    session.call(Call::new(method, format!("/v1/conversations/{conversation}/mute"), None)).await?;
    let shown = json!({ "conversation_id": conversation.to_string(), "muted": muted });
    out.show(&shown, |_| format!("{} {conversation}", if muted { "muted" } else { "unmuted" }))
}
