//! Media configuration from the environment: the variables in [`SETTINGS`].

use chat_common::config::{self, ConfigError, Env, Peer, Setting, shared};

/// Media's configuration; each field is read from the [`Setting`] named
/// beside it, which holds the variable's name and default.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`GRPC_ADDR`].
    pub grpc_addr: String,
    /// [`METRICS_ADDR`]: Prometheus `/metrics`.
    pub metrics_addr: String,
    /// [`DATABASE_URL`]: a `sqlite:` file or a `postgres://` URL.
    pub database_url: String,
    /// [`DATABASE_MAX_CONNECTIONS`].
    pub database_max_connections: u32,
    /// [`shared::NATS_URL`].
    pub nats_url: String,
    /// [`shared::HISTORY_GRPC_URL`]: which files stored messages carry.
    pub history_url: String,
    /// Where the bytes are kept: [`STORE`] and the S3 settings.
    pub store: Store,
    /// [`MAX_FILE_BYTES`]: the largest file.
    pub max_file_bytes: u64,
    /// [`QUOTA_BYTES`]: what one user's files may take together.
    pub quota_bytes: u64,
    /// [`UPLOAD_IDLE_SECS`]: an upload that brings no byte for this long is abandoned.
    pub upload_idle: std::time::Duration,
    /// [`UPLOAD_MAX_SECS`]: the longest an upload may take; one left
    /// `uploading` longer (its instance stopped) is swept.
    pub upload_max: std::time::Duration,
    /// [`UNATTACHED_TTL_SECS`]: an upload no message attached this long is removed.
    pub unattached_ttl: std::time::Duration,
    /// [`CLEAN_EVERY_SECS`]: how often files nothing refers to are looked for.
    pub clean_every: std::time::Duration,
    /// [`MAX_IMAGE_BYTES`]: the largest image (held whole while checked).
    pub max_image_bytes: u64,
    /// [`MAX_IMAGE_PIXELS`]: a larger image is refused from its header.
    pub max_image_pixels: u64,
    /// [`IMAGE_WORKERS`]: images held and decoded at once.
    pub image_workers: usize,
    /// [`SEND_WINDOW_SECS`]: longer than a send takes from attaching its
    /// files to publishing its message (the gateway gives up after 2 s).
    pub send_window: std::time::Duration,
}

/// Where attachment bytes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// A directory of this machine (the embedded default).
    Directory(std::path::PathBuf),
    /// A bucket of an S3-compatible store.
    S3(S3),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3 {
    pub bucket: String,
    /// [`S3_ENDPOINT`]: empty for AWS itself.
    pub endpoint: String,
    /// [`S3_REGION`].
    pub region: String,
    /// [`S3_ACCESS_KEY_ID`].
    pub access_key_id: String,
    /// [`S3_SECRET_ACCESS_KEY`]: never printed.
    pub secret_access_key: Secret,
}

/// A value kept out of logs and debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

pub const GRPC_ADDR: Setting = Setting::listen("MEDIA_GRPC_ADDR", "127.0.0.1:50055");
pub const METRICS_ADDR: Setting = Setting::metrics("MEDIA_METRICS_ADDR", "127.0.0.1:9105");
pub const DATABASE_URL: Setting = Setting::peer("MEDIA_DATABASE_URL", "sqlite://data/media.db", Peer::Database);
pub const DATABASE_MAX_CONNECTIONS: Setting = Setting::value("MEDIA_DATABASE_MAX_CONNECTIONS", "8");
/// A directory (`data/media`, `/var/lib/chat/media`) or `s3://<bucket>`.
pub const STORE: Setting = Setting::value("MEDIA_STORE", "data/media");
/// The S3 API's address; empty for AWS.
pub const S3_ENDPOINT: Setting = Setting::value("MEDIA_S3_ENDPOINT", "");
pub const S3_REGION: Setting = Setting::value("MEDIA_S3_REGION", "us-east-1");
pub const S3_ACCESS_KEY_ID: Setting = Setting::value("MEDIA_S3_ACCESS_KEY_ID", "");
pub const S3_SECRET_ACCESS_KEY: Setting = Setting::value("MEDIA_S3_SECRET_ACCESS_KEY", "");
/// 100 MiB.
pub const MAX_FILE_BYTES: Setting = Setting::value("MEDIA_MAX_FILE_BYTES", "104857600");
/// 1 GiB.
pub const QUOTA_BYTES: Setting = Setting::value("MEDIA_QUOTA_BYTES", "1073741824");
pub const UPLOAD_IDLE_SECS: Setting = Setting::value("MEDIA_UPLOAD_IDLE_SECS", "30");
pub const UPLOAD_MAX_SECS: Setting = Setting::value("MEDIA_UPLOAD_MAX_SECS", "3600");
/// A day.
pub const UNATTACHED_TTL_SECS: Setting = Setting::value("MEDIA_UNATTACHED_TTL_SECS", "86400");
pub const CLEAN_EVERY_SECS: Setting = Setting::value("MEDIA_CLEAN_EVERY_SECS", "600");
/// 32 MiB.
pub const MAX_IMAGE_BYTES: Setting = Setting::value("MEDIA_MAX_IMAGE_BYTES", "33554432");
/// 40 megapixels: a camera's largest photos.
pub const MAX_IMAGE_PIXELS: Setting = Setting::value("MEDIA_MAX_IMAGE_PIXELS", "40000000");
pub const IMAGE_WORKERS: Setting = Setting::value("MEDIA_IMAGE_WORKERS", "2");
pub const SEND_WINDOW_SECS: Setting = Setting::value("MEDIA_SEND_WINDOW_SECS", "30");

/// Every variable media reads: its own and telemetry's.
pub const SETTINGS: &[&[Setting]] = &[
    &[
        GRPC_ADDR,
        METRICS_ADDR,
        DATABASE_URL,
        DATABASE_MAX_CONNECTIONS,
        shared::NATS_URL,
        shared::HISTORY_GRPC_URL,
        STORE,
        S3_ENDPOINT,
        S3_REGION,
        S3_ACCESS_KEY_ID,
        S3_SECRET_ACCESS_KEY,
        MAX_FILE_BYTES,
        QUOTA_BYTES,
        UPLOAD_IDLE_SECS,
        UPLOAD_MAX_SECS,
        UNATTACHED_TTL_SECS,
        CLEAN_EVERY_SECS,
        SEND_WINDOW_SECS,
        MAX_IMAGE_BYTES,
        MAX_IMAGE_PIXELS,
        IMAGE_WORKERS,
    ],
    chat_common::telemetry::SETTINGS,
];

impl Config {
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&config::process_env)
    }

    /// Reads [`SETTINGS`] from `env`.
    ///
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_lookup(env: Env<'_>) -> Result<Self, ConfigError> {
        // Every setting is read whatever the store, so that none goes unnoticed.
        let s3 = S3 {
            bucket: String::new(),
            endpoint: S3_ENDPOINT.string(env),
            region: S3_REGION.string(env),
            access_key_id: S3_ACCESS_KEY_ID.string(env),
            secret_access_key: Secret(S3_SECRET_ACCESS_KEY.string(env)),
        };
        let store = STORE.string(env);
        let store = match store.strip_prefix("s3://") {
            Some(bucket) if bucket.is_empty() || bucket.contains('/') => {
                return Err(ConfigError::invalid(STORE.name, "s3:// must be followed by a bucket name"));
            }
            Some(bucket) => Store::S3(S3 { bucket: bucket.to_owned(), ..s3 }),
            None => Store::Directory(store.into()),
        };
        let config = Self {
            grpc_addr: GRPC_ADDR.string(env),
            metrics_addr: METRICS_ADDR.string(env),
            database_url: DATABASE_URL.string(env),
            database_max_connections: DATABASE_MAX_CONNECTIONS.parse(env)?,
            nats_url: shared::NATS_URL.string(env),
            history_url: shared::HISTORY_GRPC_URL.string(env),
            store,
            max_file_bytes: MAX_FILE_BYTES.parse(env)?,
            quota_bytes: QUOTA_BYTES.parse(env)?,
            upload_idle: std::time::Duration::from_secs(UPLOAD_IDLE_SECS.parse(env)?),
            upload_max: std::time::Duration::from_secs(UPLOAD_MAX_SECS.parse(env)?),
            unattached_ttl: std::time::Duration::from_secs(UNATTACHED_TTL_SECS.parse(env)?),
            clean_every: std::time::Duration::from_secs(CLEAN_EVERY_SECS.parse(env)?),
            send_window: std::time::Duration::from_secs(SEND_WINDOW_SECS.parse(env)?),
            max_image_bytes: MAX_IMAGE_BYTES.parse(env)?,
            max_image_pixels: MAX_IMAGE_PIXELS.parse(env)?,
            image_workers: IMAGE_WORKERS.parse(env)?,
        };
        if config.image_workers == 0 {
            return Err(ConfigError::invalid(IMAGE_WORKERS.name, "must be at least 1"));
        }
        if config.clean_every.is_zero() {
            return Err(ConfigError::invalid(CLEAN_EVERY_SECS.name, "must be at least 1"));
        }
        if config.max_file_bytes == 0 {
            return Err(ConfigError::invalid(MAX_FILE_BYTES.name, "must be at least 1"));
        }
        if config.upload_idle.is_zero() || config.upload_max < config.upload_idle {
            return Err(ConfigError::invalid(
                UPLOAD_IDLE_SECS.name,
                "must be at least 1 and at most MEDIA_UPLOAD_MAX_SECS",
            ));
        }
        Ok(config)
    }

    /// The defaults, on ports the system picks, storing in `store`, with a
    /// small pool (tests use this).
    pub fn local(database_url: &str, nats_url: &str, history_url: &str, store: Store) -> Self {
        let defaults = Self::from_lookup(&|_| None).expect("media's defaults are valid");
        Self {
            grpc_addr: "127.0.0.1:0".to_owned(),
            metrics_addr: "127.0.0.1:0".to_owned(),
            database_url: database_url.to_owned(),
            database_max_connections: 4,
            nats_url: nats_url.to_owned(),
            history_url: history_url.to_owned(),
            store,
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_default_store_is_a_directory() {
        let config = Config::from_lookup(&|_| None).unwrap();
        assert_eq!(config.store, Store::Directory("data/media".into()));
    }

    #[test]
    fn an_s3_store_takes_its_settings_and_never_prints_the_secret() {
        let env = with(&[
            ("MEDIA_STORE", "s3://chat-media"),
            ("MEDIA_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("MEDIA_S3_SECRET_ACCESS_KEY", "hunter2"),
        ]);
        let config = Config::from_lookup(&env).unwrap();
        let Store::S3(s3) = &config.store else { panic!("an S3 store") };
        assert_eq!((s3.bucket.as_str(), s3.endpoint.as_str()), ("chat-media", "http://127.0.0.1:9000"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn an_s3_store_without_a_bucket_is_refused() {
        for store in ["s3://", "s3://a/b"] {
            let env = move |name: &str| (name == "MEDIA_STORE").then(|| store.to_owned());
            assert_eq!(Config::from_lookup(&env).unwrap_err().name, "MEDIA_STORE");
        }
    }
}
