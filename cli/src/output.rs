//! What `chat` prints on standard output, in either of its two forms: lines
//! for people, or with `--json` one JSON document per command (one object per
//! line for `tail`) for scripts. Commands hand over the protocol's own JSON,
//! with names already looked up (`name` on a conversation, `sender_username`
//! on a message, `username` on a block), or for `chat admin` the admin
//! service's answers as JSON (times as RFC 3339); this module only lays it
//! out.
//!
//! Text from other people (bodies, titles, names) is shown with its control
//! characters replaced: a message must not be able to drive the reader's
//! terminal with escape sequences. A closed standard output (`| head`) ends
//! the command quietly.

use std::io::Write;

use serde_json::Value;

use crate::error::Error;

/// Shown instead of a message from someone the reader blocked.
pub const HIDDEN: &str = "(hidden: from a blocked user)";

/// Characters of a last message shown in the conversation list.
const PREVIEW_CHARS: usize = 60;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    pub fn is_json(self) -> bool {
        self.json
    }

    /// Prints `json`, or the lines `human` makes of it.
    pub fn show(self, json: &Value, human: impl FnOnce(&Value) -> String) -> Result<(), Error> {
        if self.json { line(&json.to_string()) } else { line(&human(json)) }
    }
}

/// Writes `text` and a line break to standard output, at once (a `tail`
/// read through a pipe shows each message as it comes).
pub fn line(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Error::OutputClosed,
        _ => Error::local(format!("cannot write to standard output: {}", crate::error::io_cause(&e))),
    })
}

/// Someone else's text, safe for a terminal: control characters other
/// than line breaks and tabs become U+FFFD.
pub fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{FFFD}' } else { c }).collect()
}

/// Someone else's text on one line.
fn one_line(text: &str) -> String {
    clean(text).replace(['\n', '\t'], " ")
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_default()
}

/// `2026-11-23T15:04:05.123Z` → `2026-11-23 15:04` (UTC, as the server says).
pub fn short_time(rfc3339: &str) -> String {
    match rfc3339.get(..16) {
        Some(minutes) if minutes.as_bytes().get(10) == Some(&b'T') => minutes.replacen('T', " ", 1),
        _ => one_line(rfc3339),
    }
}

fn sender(message: &Value) -> String {
    match message["sender_username"].as_str() {
        Some(name) => one_line(name),
        None => format!("user {}", str_of(message, "sender_id")),
    }
}

/// What a message says, for people: its body, or why there is none.
fn what_it_says(message: &Value) -> String {
    if message["hidden"] == true {
        return HIDDEN.to_owned();
    }
    if message.get("deleted_at").is_some_and(|d| !d.is_null()) {
        return "(deleted)".to_owned();
    }
    let mut said = clean(str_of(message, "body"));
    for file in message["attachments"].as_array().into_iter().flatten() {
        if !said.is_empty() {
            said.push(' ');
        }
        said.push_str(&format!("[file: {}]", one_line(str_of(file, "name"))));
    }
    if message.get("edited_at").is_some_and(|e| !e.is_null()) {
        said.push_str(" (edited)");
    }
    said
}

/// `#12 2026-11-23 15:04 alice: hello`; later lines of a long body indented.
pub fn message_line(message: &Value) -> String {
    let seq = message["seq"].as_u64().unwrap_or_default();
    let time = short_time(str_of(message, "sent_at"));
    let text = if message.get("system").is_some_and(Value::is_object) {
        // A system message's body says what its sender did ("created the group").
        format!("#{seq} {time} * {} {}", sender(message), one_line(str_of(message, "body")))
    } else {
        format!("#{seq} {time} {}: {}", sender(message), what_it_says(message))
    };
    text.replace('\n', "\n    ")
}

/// One line per message, oldest first, and how to page further back.
pub fn history(page: &Value, conversation: &str) -> String {
    let messages = page["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut lines: Vec<String> = messages.iter().map(message_line).collect();
    if lines.is_empty() {
        lines.push("no messages".to_owned());
    }
    if page["has_more"] == true
        && let Some(first) = messages.first().and_then(|m| m["seq"].as_u64())
    {
        lines.push(format!("(older messages: chat history {conversation} --before {first})"));
    }
    lines.join("\n")
}

/// Search results, newest first, each with its conversation.
pub fn search(results: &Value) -> String {
    let messages = results["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut lines: Vec<String> =
        messages.iter().map(|m| format!("{} {}", str_of(m, "conversation_id"), message_line(m))).collect();
    if lines.is_empty() {
        lines.push("no messages found".to_owned());
    }
    if results.get("next_page").is_some_and(|p| !p.is_null()) {
        lines.push("(older results not shown)".to_owned());
    }
    lines.join("\n")
}

fn preview(message: &Value) -> String {
    if message.is_null() {
        return String::new();
    }
    let text = if message.get("system").is_some_and(Value::is_object) {
        format!("{} {}", sender(message), one_line(str_of(message, "body")))
    } else {
        format!("{}: {}", sender(message), one_line(&what_it_says(message)))
    };
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// One conversation a line: id, kind, name, unread count, muted, last message.
pub fn conversations(list: &Value) -> String {
    let conversations = list["conversations"].as_array().map(Vec::as_slice).unwrap_or_default();
    if conversations.is_empty() {
        return "no conversations yet".to_owned();
    }
    let rows: Vec<[String; 6]> = conversations
        .iter()
        .map(|c| {
            let unread = c["unread_count"].as_u64().unwrap_or_default();
            [
                str_of(c, "conversation_id").to_owned(),
                one_line(str_of(c, "kind")),
                one_line(str_of(c, "name")),
                if unread > 0 { format!("{unread} unread") } else { String::new() },
                if c["muted"] == true { "muted".to_owned() } else { String::new() },
                preview(&c["last_message"]),
            ]
        })
        .collect();
    table(&rows)
}

/// Rows in columns two spaces apart, the last column as it is.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == N {
                    line.push_str(cell);
                } else if widths[i] > 0 {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            line.trim_end().to_owned()
        })
        .collect();
    lines.join("\n")
}

pub fn devices(list: &Value) -> String {
    let devices = list["devices"].as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<[String; 4]> = devices
        .iter()
        .map(|d| {
            [
                str_of(d, "device_id").to_owned(),
                one_line(str_of(d, "name")),
                format!("last seen {}", short_time(str_of(d, "last_seen_at"))),
                if d["current"] == true { "(this device)".to_owned() } else { String::new() },
            ]
        })
        .collect();
    if rows.is_empty() { "no devices".to_owned() } else { table(&rows) }
}

pub fn blocks(list: &Value) -> String {
    let blocks = list["blocks"].as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<[String; 2]> = blocks
        .iter()
        .map(|b| {
            let who = b["username"].as_str().map_or_else(|| str_of(b, "user_id").to_owned(), one_line);
            [who, format!("blocked {}", short_time(str_of(b, "blocked_at")))]
        })
        .collect();
    if rows.is_empty() { "nobody is blocked".to_owned() } else { table(&rows) }
}

pub fn whoami(me: &Value) -> String {
    let username = one_line(str_of(me, "username"));
    let display = one_line(str_of(me, "display_name"));
    let shown = if display.is_empty() || display == username { username } else { format!("{username} ({display})") };
    format!("{shown} on {} (user {}, device {})", str_of(me, "server"), str_of(me, "user_id"), str_of(me, "device_id"))
}

/// `2026-11-23T15:04:05.123Z` → `2026-11-23 15:04:05`; nothing for `null`.
fn seconds(time: &Value) -> String {
    match time.as_str().and_then(|t| t.get(..19)) {
        Some(seconds) if seconds.as_bytes().get(10) == Some(&b'T') => seconds.replacen('T', " ", 1),
        _ => time.as_str().map(one_line).unwrap_or_default(),
    }
}

/// `chat admin users`: one user a line.
pub fn admin_users(found: &Value) -> String {
    let users = found["users"].as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<[String; 6]> = users
        .iter()
        .map(|u| {
            let devices = u["active_devices"].as_u64().unwrap_or_default();
            [
                str_of(u, "user_id").to_owned(),
                one_line(str_of(u, "username")),
                one_line(str_of(u, "display_name")),
                format!("created {}", short_time(str_of(u, "created_at"))),
                match u["deactivated_at"].as_str() {
                    Some(at) => format!("deactivated {}", short_time(at)),
                    None => "active".to_owned(),
                },
                format!("{devices} active device{}", if devices == 1 { "" } else { "s" }),
            ]
        })
        .collect();
    if rows.is_empty() { "no users found".to_owned() } else { table(&rows) }
}

/// What a reported message said, from the report's context.
fn reported_text(report: &Value) -> String {
    let context = report["context"].as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(message) = context.iter().find(|m| m["message_id"] == report["message_id"]) else {
        return "(not in the report's context)".to_owned();
    };
    if message["deleted_at_ms"].as_i64().is_some_and(|d| d > 0) {
        return "(deleted)".to_owned();
    }
    let mut said = one_line(str_of(message, "body"));
    for file in message["attachments"].as_array().into_iter().flatten() {
        if !said.is_empty() {
            said.push(' ');
        }
        said.push_str(&format!("[file: {}]", one_line(str_of(file, "name"))));
    }
    said
}

/// `chat admin reports`: each report, what was reported and what was done.
pub fn admin_reports(list: &Value, status: &str) -> String {
    let reports = list["reports"].as_array().map(Vec::as_slice).unwrap_or_default();
    if reports.is_empty() {
        return if status == "all" { "no reports".to_owned() } else { format!("no {status} reports") };
    }
    let mut lines = Vec::new();
    for r in reports {
        lines.push(format!(
            "{}  {}  {}  reason: {}",
            str_of(r, "report_id"),
            one_line(str_of(r, "status")),
            short_time(str_of(r, "created_at")),
            one_line(str_of(r, "reason"))
        ));
        lines.push(format!(
            "    message {} in {}, sent by {}, reported by {}",
            str_of(r, "message_id"),
            str_of(r, "conversation_id"),
            str_of(r, "sender_id"),
            str_of(r, "reporter_id")
        ));
        lines.push(format!("    > {}", reported_text(r)));
        if r["status"] == "resolved" {
            lines.push(format!("    {}", resolution(r)));
        }
    }
    lines.join("\n")
}

/// `resolved 2026-11-23 15:04 by alice: removed`.
fn resolution(report: &Value) -> String {
    format!(
        "resolved {} by {}: {}",
        short_time(str_of(report, "resolved_at")),
        one_line(str_of(report, "resolved_by")),
        one_line(str_of(report, "resolution"))
    )
}

/// `chat admin resolve`: done now, or (another resolution kept) earlier.
pub fn admin_resolved(report: &Value, asked: &str, remove_message: bool) -> String {
    let id = str_of(report, "report_id");
    if str_of(report, "resolution") != asked {
        return format!("report {id} was resolved already, and stays so: {}", resolution(report));
    }
    let removed = if remove_message { " (the message removed)" } else { "" };
    format!("report {id}{removed}: {}", resolution(report))
}

/// `chat admin audit`: an entry a line, newest first, its details under it.
pub fn admin_audit(log: &Value) -> String {
    let entries = log["entries"].as_array().map(Vec::as_slice).unwrap_or_default();
    if entries.is_empty() {
        return "the audit log is empty".to_owned();
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                seconds(&e["at"]),
                one_line(str_of(e, "operator")),
                one_line(str_of(e, "action")),
                one_line(str_of(e, "target")),
                one_line(str_of(e, "outcome")),
            ]
        })
        .collect();
    let mut lines = Vec::new();
    for (line, entry) in table(&rows).lines().zip(entries) {
        lines.push(line.to_owned());
        let details: Vec<String> = match &entry["details"] {
            Value::Object(details) => details
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), one_line)))
                .collect(),
            Value::Null => Vec::new(),
            other => vec![one_line(&other.to_string())],
        };
        if !details.is_empty() {
            lines.push(format!("    {}", one_line(&details.join(", "))));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(extra: Value) -> Value {
        let mut m = json!({
            "conversation_id": "c", "message_id": "m", "seq": 3, "sender_id": "u1", "sender_username": "alice",
            "body": "hello", "sent_at": "2026-11-23T15:04:05.123Z",
        });
        m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        m
    }

    #[test]
    fn messages_read_as_seq_time_sender_and_body() {
        assert_eq!(message_line(&message(json!({}))), "#3 2026-11-23 15:04 alice: hello");
        let hidden = message(json!({ "hidden": true, "body": "" }));
        assert_eq!(message_line(&hidden), format!("#3 2026-11-23 15:04 alice: {HIDDEN}"));
        let deleted = message(json!({ "deleted_at": "2026-11-23T15:05:00.000Z", "body": "" }));
        assert_eq!(message_line(&deleted), "#3 2026-11-23 15:04 alice: (deleted)");
        let edited = message(json!({ "edited_at": "2026-11-23T15:05:00.000Z", "attachments": [{ "name": "a.pdf" }] }));
        assert_eq!(message_line(&edited), "#3 2026-11-23 15:04 alice: hello [file: a.pdf] (edited)");
        let system = message(json!({ "system": { "event": "created" }, "body": "created the group" }));
        assert_eq!(message_line(&system), "#3 2026-11-23 15:04 * alice created the group");
    }

    #[test]
    fn other_peoples_text_cannot_drive_the_terminal() {
        let sneaky = message(json!({ "body": "hi\u{1b}[2J\u{9b}31m\nthere", "sender_username": "a\u{7}b" }));
        let line = message_line(&sneaky);
        assert!(!line.chars().any(|c| c.is_control() && c != '\n'), "{line:?}");
        assert!(line.ends_with("\n    there"), "{line:?}");
    }

    #[test]
    fn the_conversation_list_lines_up_and_marks_unread_and_muted() {
        let list = json!({ "conversations": [
            { "conversation_id": "c1", "kind": "direct", "name": "bob", "unread_count": 2, "muted": true,
              "last_message": message(json!({ "body": "x".repeat(100) })) },
            { "conversation_id": "c2", "kind": "group", "name": "book club", "unread_count": 0, "muted": false },
        ]});
        let text = conversations(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("c1  direct  bob        2 unread  muted  alice: xxx"), "{text}");
        assert!(lines[0].ends_with('…'), "{text}");
        assert_eq!(lines[1], "c2  group   book club");
        assert_eq!(conversations(&json!({ "conversations": [] })), "no conversations yet");
    }

    #[test]
    fn a_page_with_more_says_how_to_go_further_back() {
        let page = json!({ "messages": [message(json!({}))], "has_more": true });
        assert!(history(&page, "c").ends_with("(older messages: chat history c --before 3)"));
    }
}
