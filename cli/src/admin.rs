//! `chat admin …`: the operators' API, `chat.admin.v1.AdminService` over
//! plaintext gRPC (docs/operations.md, "Administration"), and nothing of the
//! user's: no stored login, no gateway. Each command is one call (an export,
//! one stream), and each call carries `authorization: Bearer <operator
//! token>`.
//!
//! The service is at `--admin-url`, else `$CHAT_ADMIN_URL`, else
//! `http://127.0.0.1:50056`. The operator token comes from
//! `--admin-token-file` (a file only its owner may read: mode 0600 or
//! stricter, else it is refused, since a token others can read has leaked),
//! else `$CHAT_ADMIN_TOKEN`. The token is never printed, never put in an
//! error, and marked sensitive in the call's metadata.
//!
//! A refusal is the service's gRPC status as one line, its code in
//! snake_case (`admin: not_found: user not found`); no answer at all is
//! "cannot reach the admin service at <url>: <cause>". Both exit 1.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_proto::admin::v1::admin_service_client::AdminServiceClient;
use chat_proto::admin::v1::{
    AuditEntry, DeactivateUserRequest, EraseUserRequest, ExportRecord, ExportUserRequest, ListAuditLogRequest,
    RemoveMemberRequest, RemoveMessageRequest, ResolveReportRequest,
};
use chat_proto::auth::v1::{FindUsersRequest, UserRecord};
use chat_proto::history::v1::{ListReportsRequest, Report};
use serde::Serialize;
use serde_json::{Value, json};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::args::{AdminAction, AdminConnection, admin_url};
use crate::error::{Error, io_cause, root_cause};
use crate::output::{self, Output};

/// Where admin listens when nothing says otherwise (`scripts/run.sh`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:50056";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A call's answer, at the latest.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Erasing or exporting a user with years of messages takes a while.
const LONG_CALL_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// A token file is a token and a line break; anything much larger is not one.
const TOKEN_FILE_MAX_BYTES: u64 = 4096;

/// The export record kinds and the archive's array for each.
const KINDS: &[(&str, &str)] = &[
    ("device", "devices"),
    ("conversation", "conversations"),
    ("message", "messages"),
    ("block", "blocks"),
    ("push_subscription", "push_subscriptions"),
];

/// Runs one admin command.
///
/// # Errors
/// Whatever stopped it, as the one line the operator reads.
pub async fn run(connection: AdminConnection, action: AdminAction, out: Output) -> Result<(), Error> {
    let url = match connection.url {
        Some(url) => url,
        None => url_from_env()?,
    };
    let authorization = authorization(connection.token_file.as_deref())?;
    if let AdminAction::Export { out: Some(path), .. } = &action {
        // Before the export is made (and audited), not after.
        writable_dir(path)?;
    }
    let admin = Admin::connect(url, authorization).await?;
    match action {
        AdminAction::Users { query, limit } => {
            let request = FindUsersRequest { query, limit: limit.unwrap_or(0) };
            let found = admin.call(CALL_TIMEOUT, admin.client().find_users(admin.request(request))).await?;
            let users: Vec<Value> = found.users.iter().map(user_json).collect();
            out.show(&json!({ "users": users }), output::admin_users)
        }
        AdminAction::Deactivate { user, reason } => {
            let request = DeactivateUserRequest { user_id: user.to_string(), reason };
            let done = admin.call(CALL_TIMEOUT, admin.client().deactivate_user(admin.request(request))).await?;
            let shown = json!({
                "user_id": user.to_string(), "devices_revoked": done.devices_revoked,
                "deactivated_now": done.deactivated_now,
            });
            out.show(&shown, |_| match done.deactivated_now {
                true => format!("deactivated user {user}: {} revoked", plural(done.devices_revoked.into(), "device")),
                false => format!(
                    "user {user} was deactivated already ({} revoked now)",
                    plural(done.devices_revoked.into(), "device")
                ),
            })
        }
        AdminAction::Erase { user, reason } => {
            let request = EraseUserRequest { user_id: user.to_string(), reason };
            let erased = admin.call(LONG_CALL_TIMEOUT, admin.client().erase_user(admin.request(request))).await?;
            let shown = json!({
                "user_id": user.to_string(), "devices_removed": erased.devices_removed,
                "messages_erased": erased.messages_erased, "files_removed": erased.files_removed,
                "blocks_removed": erased.blocks_removed,
            });
            out.show(&shown, |_| {
                let removed = [
                    plural(erased.devices_removed.into(), "device"),
                    plural(erased.messages_erased, "message"),
                    plural(erased.files_removed.into(), "file"),
                    plural(erased.blocks_removed.into(), "block"),
                ];
                format!("erased user {user}: removed {}", removed.join(", "))
            })
        }
        AdminAction::Export { user, reason, out: file } => export(&admin, user, reason, file.as_deref(), out).await,
        AdminAction::Reports { status, limit } => {
            let request = ListReportsRequest { status: status.clone(), limit: limit.unwrap_or(0), before_ms: 0 };
            let listed = admin.call(CALL_TIMEOUT, admin.client().list_reports(admin.request(request))).await?;
            let reports: Vec<Value> = listed.reports.iter().map(report_json).collect();
            out.show(&json!({ "reports": reports }), |r| output::admin_reports(r, &status))
        }
        AdminAction::Resolve { report, resolution, remove_message } => {
            let request =
                ResolveReportRequest { report_id: report.to_string(), resolution: resolution.clone(), remove_message };
            let resolved = admin.call(CALL_TIMEOUT, admin.client().resolve_report(admin.request(request))).await?;
            let shown = report_json(&resolved);
            out.show(&shown, |r| output::admin_resolved(r, &resolution, remove_message))
        }
        AdminAction::RemoveMessage { conversation, message, reason } => {
            let request = RemoveMessageRequest {
                conversation_id: conversation.to_string(),
                message_id: message.to_string(),
                reason,
            };
            let removed = admin.call(CALL_TIMEOUT, admin.client().remove_message(admin.request(request))).await?;
            let shown = json!({
                "conversation_id": removed.conversation_id, "message_id": removed.message_id, "seq": removed.seq,
                "sender_id": removed.sender_id, "sent_at": time(removed.sent_at_ms),
                "deleted_at": time(removed.deleted_at_ms),
            });
            out.show(&shown, |m| format!("removed message {message} (#{}) from conversation {conversation}", m["seq"]))
        }
        AdminAction::RemoveMember { conversation, user, reason } => {
            let request =
                RemoveMemberRequest { conversation_id: conversation.to_string(), user_id: user.to_string(), reason };
            let group = admin.call(CALL_TIMEOUT, admin.client().remove_member(admin.request(request))).await?;
            let shown = json!({
                "conversation_id": group.conversation_id, "title": group.title, "removed_user_id": user.to_string(),
                "member_ids": group.member_ids,
            });
            out.show(&shown, |_| {
                let left = plural(group.member_ids.len() as u64, "member");
                format!("removed user {user} from \"{}\" ({conversation}); {left} left", output::clean(&group.title))
            })
        }
        AdminAction::Audit { limit } => {
            let request = ListAuditLogRequest { limit: limit.unwrap_or(0), before_ms: 0 };
            let log = admin.call(CALL_TIMEOUT, admin.client().list_audit_log(admin.request(request))).await?;
            let entries: Vec<Value> = log.entries.iter().map(audit_json).collect();
            out.show(&json!({ "entries": entries }), output::admin_audit)
        }
    }
}

/// A connection to admin with the operator's credentials.
struct Admin {
    client: AdminServiceClient<Channel>,
    url: String,
    /// `Bearer <token>`, marked sensitive. Never shown.
    authorization: AsciiMetadataValue,
}

impl Admin {
    async fn connect(url: String, authorization: AsciiMetadataValue) -> Result<Self, Error> {
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| Error::usage(format!("'{url}' is not the admin service's address")))?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(Error::AdminUnreachable { url, cause: root_cause(&e) }),
            Err(_) => return Err(Error::AdminUnreachable { url, cause: "timed out".into() }),
        };
        Ok(Self { client: AdminServiceClient::new(channel), url, authorization })
    }

    /// A client for one call (a clone shares the connection).
    fn client(&self) -> AdminServiceClient<Channel> {
        self.client.clone()
    }

    /// `message` with the operator's credentials.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization.clone());
        request
    }

    /// The answer to `call`, or what stopped it.
    async fn call<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.refused(&status)),
            Err(_) => Err(self.timed_out(limit)),
        }
    }

    /// A status the service sent, or (with an error under it) one the
    /// connection made up: then the service was not reached, or was lost.
    fn refused(&self, status: &Status) -> Error {
        if std::error::Error::source(status).is_some() {
            return Error::AdminUnreachable { url: self.url.clone(), cause: root_cause(status) };
        }
        let message = if status.message().is_empty() { "(no message)" } else { status.message() };
        Error::Admin { code: code_name(status.code()), message: message.to_owned() }
    }

    fn timed_out(&self, limit: Duration) -> Error {
        Error::AdminUnreachable { url: self.url.clone(), cause: format!("no answer within {} s", limit.as_secs()) }
    }
}

/// `$CHAT_ADMIN_URL`, else the default.
fn url_from_env() -> Result<String, Error> {
    match std::env::var("CHAT_ADMIN_URL") {
        Ok(url) if !url.trim().is_empty() => admin_url(url.trim()).map_err(|e| match e {
            Error::Usage(why) => Error::Usage(format!("CHAT_ADMIN_URL: {why}")),
            e => e,
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::usage("CHAT_ADMIN_URL is not UTF-8")),
        _ => Ok(DEFAULT_URL.to_owned()),
    }
}

/// The `authorization` metadata for the operator's token: from the file
/// when one is named, else from `$CHAT_ADMIN_TOKEN`.
fn authorization(token_file: Option<&Path>) -> Result<AsciiMetadataValue, Error> {
    let token = match token_file {
        Some(path) => read_token_file(path)?,
        None => match std::env::var("CHAT_ADMIN_TOKEN") {
            Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
            Err(std::env::VarError::NotUnicode(_)) => return Err(Error::local("CHAT_ADMIN_TOKEN is not UTF-8")),
            _ => return Err(Error::local("no operator token: set CHAT_ADMIN_TOKEN or --admin-token-file")),
        },
    };
    let mut value: AsciiMetadataValue = format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::local("the operator token has characters a gRPC header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The token in `path`, a file only its owner may read (checked on the
/// file as opened, not on the name).
fn read_token_file(path: &Path) -> Result<String, Error> {
    let shown = path.display();
    let cannot =
        |e: &std::io::Error| Error::local(format!("cannot read the operator token file {shown}: {}", io_cause(e)));
    let mut file = File::open(path).map_err(|e| cannot(&e))?;
    let metadata = file.metadata().map_err(|e| cannot(&e))?;
    if !metadata.is_file() {
        return Err(Error::local(format!("the operator token file {shown} is not a file")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::local(format!(
                "refusing the operator token file {shown}: its mode {mode:04o} lets others read it, and a \
                 world-readable token file is a leak (chmod 600 it)"
            )));
        }
    }
    if metadata.len() > TOKEN_FILE_MAX_BYTES {
        return Err(Error::local(format!("the operator token file {shown} is too large to be a token")));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| cannot(&e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::local(format!("the operator token file {shown} is empty")));
    }
    Ok(token.to_owned())
}

/// A gRPC code as the one line shows it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `1 device`, `2 devices`.
fn plural(count: u64, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds, as protocol v1
/// writes times; `null` for 0 (never).
fn time(ms: i64) -> Value {
    if ms <= 0 {
        return Value::Null;
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_or(Value::Null, |t| rfc3339(t).into())
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC).format(format).unwrap_or_default()
}

/// A JSON text the service sent, parsed (or kept as the text if it is not JSON).
fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn non_empty(text: &str) -> Value {
    if text.is_empty() { Value::Null } else { text.into() }
}

fn user_json(record: &UserRecord) -> Value {
    let user = record.user.clone().unwrap_or_default();
    json!({
        "user_id": user.user_id, "username": user.username, "display_name": user.display_name,
        "created_at": time(record.created_at_ms), "deactivated": record.deactivated_at_ms > 0,
        "deactivated_at": time(record.deactivated_at_ms), "active_devices": record.active_devices,
    })
}

fn report_json(report: &Report) -> Value {
    json!({
        "report_id": report.report_id, "status": report.status, "created_at": time(report.created_at_ms),
        "reporter_id": report.reporter_id, "conversation_id": report.conversation_id,
        "message_id": report.message_id, "sender_id": report.sender_id, "reason": report.reason,
        "context": parsed(&report.context_json), "resolved_by": non_empty(&report.resolved_by),
        "resolution": non_empty(&report.resolution), "resolved_at": time(report.resolved_at_ms),
    })
}

fn audit_json(entry: &AuditEntry) -> Value {
    json!({
        "entry_id": entry.entry_id, "at": time(entry.at_ms), "operator": entry.operator, "action": entry.action,
        "target": entry.target, "details": parsed(&entry.details_json), "outcome": entry.outcome,
    })
}

/// A user's data in one document: `chat admin export`.
#[derive(Debug, Default, Serialize)]
struct Archive {
    exported_at: String,
    user_id: String,
    profile: Value,
    devices: Vec<Value>,
    conversations: Vec<Value>,
    messages: Vec<Value>,
    blocks: Vec<Value>,
    push_subscriptions: Vec<Value>,
    /// Records of a kind this client does not know, as `{"kind", "record"}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other: Vec<Value>,
}

impl Archive {
    fn new(user: Uuid) -> Self {
        Self { exported_at: rfc3339(time::OffsetDateTime::now_utc()), user_id: user.to_string(), ..Self::default() }
    }

    /// Adds one streamed record; `Err` says what is wrong with it.
    fn add(&mut self, record: ExportRecord) -> Result<(), String> {
        let value: Value = serde_json::from_str(&record.json)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| format!("an export record of kind {:?} that is not a JSON object", record.kind))?;
        if record.kind == "profile" && self.profile.is_null() {
            self.profile = value;
            return Ok(());
        }
        let list = match KINDS.iter().find(|(kind, _)| *kind == record.kind).map(|(_, list)| *list) {
            Some("devices") => &mut self.devices,
            Some("conversations") => &mut self.conversations,
            Some("messages") => &mut self.messages,
            Some("blocks") => &mut self.blocks,
            Some("push_subscriptions") => &mut self.push_subscriptions,
            _ => {
                self.other.push(json!({ "kind": record.kind, "record": value }));
                return Ok(());
            }
        };
        list.push(value);
        Ok(())
    }

    /// How many records of each kind, for the line that says where it went.
    fn counts(&self) -> Value {
        json!({
            "devices": self.devices.len(), "conversations": self.conversations.len(),
            "messages": self.messages.len(), "blocks": self.blocks.len(),
            "push_subscriptions": self.push_subscriptions.len(), "other": self.other.len(),
        })
    }
}

/// Streams the user's records into one archive, then writes it whole:
/// to `file` (created 0600) or standard output. A stream that breaks off
/// leaves nothing behind.
async fn export(admin: &Admin, user: Uuid, reason: String, file: Option<&Path>, out: Output) -> Result<(), Error> {
    let request = ExportUserRequest { user_id: user.to_string(), reason };
    let collect = async {
        let mut stream = admin.client().export_user(admin.request(request)).await?.into_inner();
        let mut records = Vec::new();
        while let Some(record) = stream.message().await? {
            records.push(record);
        }
        Ok::<_, Status>(records)
    };
    let records = match tokio::time::timeout(LONG_CALL_TIMEOUT, collect).await {
        Ok(Ok(records)) => records,
        Ok(Err(status)) => return Err(admin.refused(&status)),
        Err(_) => return Err(admin.timed_out(LONG_CALL_TIMEOUT)),
    };
    let mut archive = Archive::new(user);
    for record in records {
        archive.add(record).map_err(|what| Error::Unexpected { server: admin.url.clone(), what })?;
    }
    let Some(path) = file else {
        let text = if out.is_json() { serde_json::to_string(&archive) } else { serde_json::to_string_pretty(&archive) };
        return output::line(&text.expect("an archive serializes"));
    };
    let mut text = serde_json::to_vec_pretty(&archive).expect("an archive serializes");
    text.push(b'\n');
    write_private(path, &text)?;
    let shown = json!({
        "user_id": archive.user_id, "out": path.display().to_string(), "exported_at": archive.exported_at,
        "profile": !archive.profile.is_null(), "counts": archive.counts(),
    });
    out.show(&shown, |s| {
        let counts = &s["counts"];
        let mut said: Vec<String> = KINDS
            .iter()
            .map(|(kind, list)| plural(counts[list].as_u64().unwrap_or_default(), &kind.replace('_', " ")))
            .collect();
        if !archive.other.is_empty() {
            said.push(plural(archive.other.len() as u64, "other record"));
        }
        let profile = if archive.profile.is_null() { "no profile" } else { "the profile" };
        format!("exported user {user} to {}: {profile}, {}", path.display(), said.join(", "))
    })
}

/// The directory `path` goes in, which must exist.
fn writable_dir(path: &Path) -> Result<PathBuf, Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::local(format!("cannot write {}: {} is not a directory", path.display(), dir.display())));
    }
    Ok(dir)
}

/// Writes `path` whole and only its owner's (0600): a new file beside it,
/// then a rename over it, so no earlier file's mode carries over and no
/// reader sees half an archive.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = writable_dir(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::local(format!("cannot write {}: it names no file", path.display())));
    }
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&temporary);
    let written = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&temporary);
        Error::local(format!("cannot write {}: {}", path.display(), io_cause(&e)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, json: &str) -> ExportRecord {
        ExportRecord { kind: kind.into(), json: json.into() }
    }

    #[test]
    fn records_go_to_the_archive_by_kind() {
        let user = Uuid::new_v4();
        let mut archive = Archive::new(user);
        for r in [
            record("profile", r#"{"username": "bob"}"#),
            record("device", r#"{"device_id": "d1"}"#),
            record("message", r#"{"body": "one"}"#),
            record("message", r#"{"body": "two"}"#),
            record("push_subscription", r#"{"type": "webhook"}"#),
            record("sticker", r#"{"id": "s"}"#),
        ] {
            archive.add(r).unwrap();
        }
        let value = serde_json::to_value(&archive).unwrap();
        assert_eq!(value["user_id"], user.to_string());
        assert_eq!(value["profile"], json!({ "username": "bob" }));
        assert_eq!(value["messages"], json!([{ "body": "one" }, { "body": "two" }]));
        assert_eq!((value["devices"].as_array().unwrap().len(), value["blocks"].clone()), (1, json!([])));
        assert_eq!(value["push_subscriptions"][0]["type"], "webhook");
        assert_eq!(value["other"], json!([{ "kind": "sticker", "record": { "id": "s" } }]));
        let at = value["exported_at"].as_str().unwrap();
        assert!(at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
        assert!(archive.add(record("message", "not json")).is_err());
        assert!(archive.add(record("message", "[1]")).is_err());
        let empty = serde_json::to_value(Archive::new(user)).unwrap();
        assert!(empty.get("other").is_none() && empty["profile"].is_null(), "{empty}");
    }

    #[test]
    fn times_read_as_protocol_v1_writes_them() {
        assert_eq!(time(1_796_675_282_494), json!("2026-12-07T20:28:02.494Z"));
        assert_eq!(time(0), Value::Null);
    }

    #[test]
    fn codes_read_in_snake_case() {
        assert_eq!(code_name(Code::NotFound), "not_found");
        assert_eq!(code_name(Code::FailedPrecondition), "failed_precondition");
        assert_eq!(code_name(Code::Unauthenticated), "unauthenticated");
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_others_can_read_is_refused_without_being_read_out() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("chat-cli-admin-{}", Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        fs::write(&path, "s3cret-token\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let refused = read_token_file(&path).unwrap_err().to_string();
        assert!(
            refused.contains("0644") && refused.contains("world-readable") && !refused.contains("s3cret"),
            "{refused}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "s3cret-token");
        let out = dir.join("archive.json");
        write_private(&out, b"{}").unwrap();
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
