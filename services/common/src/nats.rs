//! NATS names and set-up shared by every service: the subjects, the CHAT stream
//! that is the durable record of every conversation, and trace propagation in
//! message headers.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{ConfigError, Env, Setting};

/// The stream holding every conversation event, one subject family per conversation.
pub const CHAT_STREAM: &str = "CHAT";
/// Subjects captured by [`CHAT_STREAM`].
pub const CHAT_SUBJECTS: &str = "chat.conv.>";
/// History's durable consumer of the CHAT stream: its ack floor is how far
/// history has stored the stream (media reads it before removing files).
pub const HISTORY_CONSUMER: &str = "history";
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

impl<'a> ChatSubject<'a> {
    /// The conversation whose subject it is.
    pub fn conversation_id(self) -> &'a str {
        match self {
            Self::Message { conversation_id }
            | Self::Membership { conversation_id }
            | Self::Read { conversation_id }
            | Self::Edit { conversation_id } => conversation_id,
        }
    }
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
    /// How long JetStream remembers a `Nats-Msg-Id` for de-duplication: it
    /// covers a re-send until history has stored the original, so it must
    /// comfortably exceed history's ingest lag.
    pub duplicate_window: Duration,
    /// How long events stay in the stream (zero: forever). History keeps them
    /// after that; a conversation's newest message must outlive the time history
    /// needs to persist it.
    pub max_age: Duration,
    pub replicas: usize,
}

impl Default for StreamSettings {
    /// The settings' defaults.
    fn default() -> Self {
        Self::from_lookup(&|_| None).expect("the stream settings' defaults are valid")
    }
}

impl StreamSettings {
    pub const DUPLICATE_WINDOW_SECS: Setting = Setting::value("CHAT_STREAM_DUPLICATE_WINDOW_SECS", "600");
    /// Zero: forever.
    pub const MAX_AGE_SECS: Setting = Setting::value("CHAT_STREAM_MAX_AGE_SECS", "0");
    /// Replicas of the stream and of every bucket (3 in a NATS cluster).
    pub const REPLICAS: Setting = Setting::value("CHAT_STREAM_REPLICAS", "1");
    /// Everything [`StreamSettings::from_lookup`] reads.
    pub const SETTINGS: &[Setting] = &[Self::DUPLICATE_WINDOW_SECS, Self::MAX_AGE_SECS, Self::REPLICAS];

    /// Reads [`StreamSettings::SETTINGS`] from `env`.
    ///
    /// # Errors
    /// When a variable is set but not a number.
    pub fn from_lookup(env: Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            duplicate_window: Duration::from_secs(Self::DUPLICATE_WINDOW_SECS.parse(env)?),
            max_age: Duration::from_secs(Self::MAX_AGE_SECS.parse(env)?),
            replicas: Self::REPLICAS.parse(env)?,
        })
    }
}

/// Counts a client's connections: it changes each time the client has
/// connected again after losing its server (see [`connect_following`]).
pub type Reconnections = tokio::sync::watch::Receiver<u64>;

/// The longest pause between two attempts to reach a lost server: a server
/// back from a restart is found within this (the client's own default grows
/// to 4 s).
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// How often the client pings its server. A third ping while two are still
/// unanswered counts as a lost connection, so a server cut off by the network
/// (which closes nothing) is noticed within about 6 s, not minutes (the
/// default interval is 60 s).
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Connects to NATS with the service's name (visible in `nats-server`
/// monitoring). Losing and regaining the server is logged.
///
/// # Errors
/// When the server cannot be reached.
pub async fn connect(url: &str, service: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    Ok(connect_following(url, service).await?.0)
}

/// Like [`connect`], with [`Reconnections`]: long-lived readers that the
/// server forgets when it restarts (ordered consumers) start over as soon as
/// the connection is back, instead of after their missed heartbeats.
///
/// # Errors
/// When the server cannot be reached.
pub async fn connect_following(
    url: &str,
    service: &str,
) -> Result<(async_nats::Client, Reconnections), async_nats::ConnectError> {
    let (connections, reconnections) = tokio::sync::watch::channel(0_u64);
    let client = async_nats::ConnectOptions::new()
        .name(service)
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(PING_INTERVAL)
        .reconnect_delay_callback(|attempts| {
            let doubling = Duration::from_millis(25).saturating_mul(1 << attempts.min(10));
            if attempts <= 1 { Duration::ZERO } else { doubling.min(MAX_RECONNECT_DELAY) }
        })
        .event_callback(move |event| {
            match &event {
                async_nats::Event::Connected => {
                    connections.send_modify(|n| *n += 1);
                    tracing::info!("connected to NATS");
                }
                async_nats::Event::Disconnected => tracing::warn!("lost the connection to NATS; reconnecting"),
                // Each failed reconnection attempt: the disconnection above said it.
                async_nats::Event::ClientError(e) => tracing::debug!(error = %e, "NATS client error"),
                async_nats::Event::Closed => tracing::info!("NATS connection closed"),
                other => tracing::warn!(event = %other, "NATS connection event"),
            }
            std::future::ready(())
        })
        .connect(servers(url)?)
        .await?;
    Ok((client, reconnections))
}

/// `NATS_URL` may name several servers of one cluster, comma-separated: the
/// client connects to one of them and fails over to the others (and to any
/// the cluster announces). An empty entry is refused, not skipped.
fn servers(urls: &str) -> std::io::Result<Vec<async_nats::ServerAddr>> {
    urls.split(',')
        .map(str::trim)
        .map(|url| {
            if url.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an empty entry in the NATS URL list",
                ));
            }
            url.parse()
        })
        .collect()
}

/// Whether a compare-and-set write (a publish with an expected last subject
/// sequence, a key-value `update` or `create`) was refused because another
/// writer came first. A single server answers error code 10071, which
/// async-nats turns into `WrongLastSequence`/`WrongLastRevision`; a clustered
/// stream's leader answers 10164, the same refusal, which async-nats leaves
/// as "other". So the error's chain of sources is searched for either code.
pub fn lost_a_race(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::ErrorCode;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return matches!(
                api.error_code(),
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            );
        }
        next = e.source();
    }
    false
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
    key_value(js, REVOKED_DEVICES_BUCKET, access_token_ttl + Duration::from_secs(60), replicas).await
}

/// How long purge markers stay in the key-value buckets, so every watcher sees them.
pub const MARKER_TTL: Duration = Duration::from_secs(60);

/// A key-value bucket, created when missing: file storage, the newest value of
/// each key only, entries dropped after `max_age` (zero: kept), per-key TTLs
/// allowed (purges leave markers that expire after [`MARKER_TTL`]).
///
/// # Errors
/// When JetStream is unavailable.
pub async fn key_value(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<jetstream::kv::Store, jetstream::context::CreateKeyValueError> {
    use jetstream::context::CreateKeyValueErrorKind::{BucketCreate, JetStream, TimedOut};
    let config = jetstream::kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        limit_markers: Some(MARKER_TTL),
        ..Default::default()
    };
    // A cluster that has just formed (or lost a node) may take a few seconds
    // to answer or to place a new bucket ("no suitable peers for placement"):
    // wait for it rather than fail start-up.
    let mut attempts = 0;
    loop {
        if let Ok(store) = js.get_key_value(name).await {
            return Ok(store);
        }
        match js.create_key_value(config.clone()).await {
            Err(e) if matches!(e.kind(), TimedOut | JetStream | BucketCreate) && attempts < BUCKET_ATTEMPTS => {
                attempts += 1;
                tracing::warn!(bucket = name, error = %e, attempts, "JetStream cannot make the bucket yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// How many times start-up tries again to open or make a bucket (a second apart).
const BUCKET_ATTEMPTS: u32 = 10;

/// Calls `on_entry` with the current value of every key of a bucket, then
/// with every change, until `shutdown` or until `on_entry` returns `false`. A
/// broken watch resumes after the last revision seen, so nothing is skipped.
pub async fn follow_bucket<F, Fut>(
    bucket: &jetstream::kv::Store,
    shutdown: &crate::shutdown::CancellationToken,
    mut on_entry: F,
) where
    F: FnMut(jetstream::kv::Entry) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use futures::StreamExt;
    let mut last_revision = 0;
    while !shutdown.is_cancelled() {
        // `watch_with_history` starts with the newest entry of every key
        // (`watch_all` would only see changes from now on).
        let watch = if last_revision == 0 {
            bucket.watch_with_history(">").await
        } else {
            bucket.watch_all_from_revision(last_revision + 1).await
        };
        match watch {
            Ok(mut watch) => loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = watch.next() => next,
                };
                match next {
                    Some(Ok(entry)) => {
                        last_revision = entry.revision;
                        if !on_entry(entry).await {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, bucket = bucket.name, "bucket watch broke; resuming");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => tracing::warn!(error = %e, bucket = bucket.name, "cannot watch a bucket; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Presence state, in three key-value buckets (see docs/architecture.md, "Presence").
pub mod presence {
    use async_nats::jetstream::{self, kv};

    pub use super::MARKER_TTL;
    use super::key_value;

    /// Open sockets: key `<gateway_id>.<connection_id>`, value a `presence.v1.Connection`.
    pub const CONNECTIONS_BUCKET: &str = "presence_connections";
    /// Live gateways: key `<gateway_id>`, refreshed by the gateway with a
    /// per-message TTL. When a gateway stops refreshing, the server replaces
    /// the key with a purge marker, and its sockets stop counting.
    pub const GATEWAYS_BUCKET: &str = "presence_gateways";
    /// Announced presence: key `<user_id>`, value a `presence.v1.PresenceState`.
    pub const USERS_BUCKET: &str = "presence_users";
    /// Presence is shared through conversations of at most this many members
    /// (the default group limit). Past it a group, which an operator may let
    /// grow to thousands, would make every connect and disconnect a frame to
    /// every member: work that grows with the square of the group's size.
    pub const SHARED_UP_TO_MEMBERS: usize = 256;

    pub struct Buckets {
        pub connections: kv::Store,
        pub gateways: kv::Store,
        pub users: kv::Store,
    }

    /// The three buckets, created when missing.
    ///
    /// # Errors
    /// When JetStream is unavailable.
    pub async fn buckets(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<Buckets, jetstream::context::CreateKeyValueError> {
        let forever = std::time::Duration::ZERO;
        Ok(Buckets {
            connections: key_value(js, CONNECTIONS_BUCKET, forever, replicas).await?,
            gateways: key_value(js, GATEWAYS_BUCKET, forever, replicas).await?,
            users: key_value(js, USERS_BUCKET, forever, replicas).await?,
        })
    }

    /// The subject a bucket stores `key` under, for publishing with headers
    /// the key-value API does not offer (a TTL on a plain put).
    pub fn key_subject(bucket: &str, key: &str) -> String {
        format!("$KV.{bucket}.{key}")
    }
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
    if !crate::telemetry::exporting() {
        return;
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// Makes `span` a child of the trace context found in NATS headers, if any.
pub fn follow_trace_context(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if !crate::telemetry::exporting() {
        return;
    }
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
