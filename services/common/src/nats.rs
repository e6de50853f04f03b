//! NATS names and set-up shared by every service: the subjects, the CHAT stream
//! that is the durable record of every conversation, and trace propagation in
//! message headers.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The stream holding every conversation event, one subject family per conversation.
pub const CHAT_STREAM: &str = "CHAT";
/// Subjects captured by [`CHAT_STREAM`].
pub const CHAT_SUBJECTS: &str = "chat.conv.>";
/// Device connect/disconnect events from gateways (core NATS).
pub const PRESENCE_DEVICE_SUBJECT: &str = "chat.presence.device";
/// Typing indicators (core NATS, never stored), one subject per conversation.
pub fn typing_subject(conversation_id: &str) -> String {
    format!("chat.typing.{conversation_id}")
}

/// Every typing subject, for gateways.
pub const TYPING_SUBJECTS: &str = "chat.typing.*";

/// Published (empty) by auth whenever signing keys are rotated or retired:
/// verifiers refetch the JWKS, other auth instances reload their keys.
pub const KEYS_CHANGED_SUBJECT: &str = "chat.auth.keys";
/// Key-value bucket of revoked devices (key: device id, value: user id). An
/// entry only needs to outlive the device's last access token.
pub const REVOKED_DEVICES_BUCKET: &str = "auth_revoked_devices";
/// Key-value bucket indexing every sent message by (sender, `client_msg_id`)
/// (key: the idempotency hash, value: the message's CHAT stream position), so a
/// re-send is recognised however late it comes.
pub const CLIENT_MSG_IDS_BUCKET: &str = "chat_client_msg_ids";
/// The header carrying a message's per-conversation seq, so readers can learn it
/// without decoding the payload.
pub const SEQ_HEADER: &str = "Chat-Seq";

/// Messages of one conversation; JetStream's per-subject sequence makes this the
/// compare-and-set point for the conversation's `seq`.
pub fn message_subject(conversation_id: &str) -> String {
    format!("chat.conv.{conversation_id}.msg")
}

/// Edits and deletions of one conversation's messages.
pub fn edit_subject(conversation_id: &str) -> String {
    format!("chat.conv.{conversation_id}.edit")
}

/// Read-marker moves of one conversation.
pub fn read_subject(conversation_id: &str) -> String {
    format!("chat.conv.{conversation_id}.read")
}

/// Membership snapshots of one conversation.
pub fn membership_subject(conversation_id: &str) -> String {
    format!("chat.conv.{conversation_id}.members")
}

/// What a subject of the CHAT stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatSubject<'a> {
    Message { conversation_id: &'a str },
    Membership { conversation_id: &'a str },
    Read { conversation_id: &'a str },
    Edit { conversation_id: &'a str },
}

/// Parses a CHAT stream subject without allocating.
pub fn parse_chat_subject(subject: &str) -> Option<ChatSubject<'_>> {
    let rest = subject.strip_prefix("chat.conv.")?;
    let (conversation_id, kind) = rest.rsplit_once('.')?;
    match kind {
        "msg" => Some(ChatSubject::Message { conversation_id }),
        "members" => Some(ChatSubject::Membership { conversation_id }),
        "read" => Some(ChatSubject::Read { conversation_id }),
        "edit" => Some(ChatSubject::Edit { conversation_id }),
        _ => None,
    }
}

/// Settings of the CHAT stream that operators may change.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How long JetStream remembers a `Nats-Msg-Id` for de-duplication.
    pub duplicate_window: Duration,
    /// How long events stay in the stream (zero: forever). History keeps them
    /// after that; a conversation's newest message must outlive the time history
    /// needs to persist it.
    pub max_age: Duration,
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self { duplicate_window: Duration::from_secs(10 * 60), max_age: Duration::ZERO, replicas: 1 }
    }
}

impl StreamSettings {
    /// Reads `CHAT_STREAM_DUPLICATE_WINDOW_SECS`, `CHAT_STREAM_MAX_AGE_SECS`, `CHAT_STREAM_REPLICAS`.
    ///
    /// # Errors
    /// When a variable is set but not a number.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        let d = Self::default();
        Ok(Self {
            duplicate_window: Duration::from_secs(crate::config::parse(
                "CHAT_STREAM_DUPLICATE_WINDOW_SECS",
                d.duplicate_window.as_secs(),
            )?),
            max_age: Duration::from_secs(crate::config::parse("CHAT_STREAM_MAX_AGE_SECS", d.max_age.as_secs())?),
            replicas: crate::config::parse("CHAT_STREAM_REPLICAS", d.replicas)?,
        })
    }
}

/// Connects to NATS with the service's name (visible in `nats-server` monitoring).
///
/// # Errors
/// When the server cannot be reached.
pub async fn connect(url: &str, service: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new().name(service).connection_timeout(Duration::from_secs(5)).connect(url).await
}

/// Creates the CHAT stream, or returns it when it exists already.
///
/// # Errors
/// When JetStream is unavailable or refuses the configuration.
pub async fn chat_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream::Config {
        name: CHAT_STREAM.to_owned(),
        subjects: vec![CHAT_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: settings.duplicate_window,
        max_age: settings.max_age,
        num_replicas: settings.replicas,
        allow_direct: true,
        ..Default::default()
    })
    .await
}

/// The revoked-devices bucket, created when missing. Entries expire after the
/// access-token lifetime plus a margin: by then every token of the device has
/// expired anyway.
///
/// # Errors
/// When JetStream is unavailable.
pub async fn revoked_devices(
    js: &jetstream::Context,
    access_token_ttl: Duration,
    replicas: usize,
) -> Result<jetstream::kv::Store, jetstream::context::CreateKeyValueError> {
    if let Ok(store) = js.get_key_value(REVOKED_DEVICES_BUCKET).await {
        return Ok(store);
    }
    js.create_key_value(jetstream::kv::Config {
        bucket: REVOKED_DEVICES_BUCKET.to_owned(),
        history: 1,
        max_age: access_token_ttl + Duration::from_secs(60),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
}

/// The client-message-id index, created when missing. It keeps every key
/// (idempotency is permanent); only the newest value per key is stored.
///
/// # Errors
/// When JetStream is unavailable.
pub async fn client_msg_ids(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<jetstream::kv::Store, jetstream::context::CreateKeyValueError> {
    if let Ok(store) = js.get_key_value(CLIENT_MSG_IDS_BUCKET).await {
        return Ok(store);
    }
    js.create_key_value(jetstream::kv::Config {
        bucket: CLIENT_MSG_IDS_BUCKET.to_owned(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the current span's trace context (`traceparent`) into NATS headers.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// Makes `span` a child of the trace context found in NATS headers, if any.
pub fn follow_trace_context(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if let Some(headers) = headers {
        let parent =
            opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_subjects_round_trip() {
        let id = "0190c3f4-0000-7000-8000-000000000000";
        assert_eq!(parse_chat_subject(&message_subject(id)), Some(ChatSubject::Message { conversation_id: id }));
        assert_eq!(parse_chat_subject(&membership_subject(id)), Some(ChatSubject::Membership { conversation_id: id }));
        assert_eq!(parse_chat_subject(&read_subject(id)), Some(ChatSubject::Read { conversation_id: id }));
        assert_eq!(parse_chat_subject("chat.presence.device"), None);
    }
}
