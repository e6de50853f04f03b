//! All six services in one process, wired to one real nats-server and fresh
//! databases, each on port 0. Services can be stopped and started again, and
//! several gateways can run side by side (as behind a load balancer).

use std::time::Duration;

use base64::Engine;
use chat_common::shutdown::CancellationToken;
use sqlx::Row;
use tokio::task::JoinHandle;

use crate::database::{self, Db};
use crate::nats::NatsServer;
use crate::processes::ServiceProcess;

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

pub struct Gateway {
    pub addr: std::net::SocketAddr,
    pub metrics_addr: std::net::SocketAddr,
    running: Running,
}

/// How to start a system: how many gateways and presence instances, and
/// changes to the services' configuration.
/// For tests that send hundreds of messages as fast as their acks come back
/// and are about something else: lifts the gateway's send brakes (a burst of
/// 400, then 200 a second per socket), which abuse.rs tests on their own.
pub fn without_send_brakes(config: &mut chat_gateway::Config) {
    let unbounded = chat_common::rate_limit::Rate { burst: 100_000, refill: Duration::from_micros(1) };
    config.send_rate_per_socket = unbounded;
    config.send_rate_per_user = unbounded;
    config.frame_rate_per_socket = unbounded;
}

pub struct SystemBuilder {
    gateways: usize,
    presences: usize,
    auth: Box<dyn Fn(&mut chat_auth::Config) + Send + Sync>,
    gateway: Box<dyn Fn(&mut chat_gateway::Config) + Send + Sync>,
    presence: Box<dyn Fn(&mut chat_presence::Config) + Send + Sync>,
    notification: Box<dyn Fn(&mut chat_notification::Config) + Send + Sync>,
    history: Box<dyn Fn(&mut chat_history::Config) + Send + Sync>,
    media: Box<dyn Fn(&mut chat_media::Config) + Send + Sync>,
    admin: Box<dyn Fn(&mut chat_admin::Config) + Send + Sync>,
    stream: chat_common::nats::StreamSettings,
    auth_process_env: Option<Vec<(String, String)>>,
}

impl SystemBuilder {
    /// Runs auth as a process of its own (its binary, on the system's
    /// database and NATS, with `env` added), so a test can read its memory;
    /// everything else still runs in this process and calls it.
    pub fn auth_as_process(mut self, env: &[(&str, &str)]) -> Self {
        self.auth_process_env = Some(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        self
    }

    /// JetStream's de-duplication window of the CHAT stream.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.stream.duplicate_window = window;
        self
    }

    pub fn gateways(mut self, count: usize) -> Self {
        self.gateways = count;
        self
    }

    pub fn presence_instances(mut self, count: usize) -> Self {
        self.presences = count;
        self
    }

    pub fn presence_config(mut self, change: impl Fn(&mut chat_presence::Config) + Send + Sync + 'static) -> Self {
        self.presence = Box::new(change);
        self
    }

    /// Changes notification's configuration (after the test defaults: http
    /// endpoints and private addresses allowed, a 300 ms coalescing window).
    pub fn notification_config(
        mut self,
        change: impl Fn(&mut chat_notification::Config) + Send + Sync + 'static,
    ) -> Self {
        self.notification = Box::new(change);
        self
    }

    pub fn auth_config(mut self, change: impl Fn(&mut chat_auth::Config) + Send + Sync + 'static) -> Self {
        self.auth = Box::new(change);
        self
    }

    pub fn gateway_config(mut self, change: impl Fn(&mut chat_gateway::Config) + Send + Sync + 'static) -> Self {
        self.gateway = Box::new(change);
        self
    }

    /// Changes history's configuration, also when a test restarts it.
    pub fn history_config(mut self, change: impl Fn(&mut chat_history::Config) + Send + Sync + 'static) -> Self {
        self.history = Box::new(change);
        self
    }

    /// Changes media's configuration (its store: a directory of the test's
    /// own unless changed here), also when a test restarts it.
    pub fn media_config(mut self, change: impl Fn(&mut chat_media::Config) + Send + Sync + 'static) -> Self {
        self.media = Box::new(change);
        self
    }

    /// Changes admin's configuration.
    pub fn admin_config(mut self, change: impl Fn(&mut chat_admin::Config) + Send + Sync + 'static) -> Self {
        self.admin = Box::new(change);
        self
    }

    /// `None` only for PostgreSQL outside CI when no server is reachable.
    pub async fn start(self, db: Db) -> Option<System> {
        System::start_from(self, db).await
    }
}

pub struct System {
    /// Each service's Prometheus listener (of the first instance where there are several).
    pub metrics_addrs: std::collections::BTreeMap<&'static str, std::net::SocketAddr>,
    pub nats: NatsServer,
    pub db: Db,
    pub auth_addr: String,
    pub history_addr: String,
    /// Of each presence instance; gateways use the first.
    pub presence_addrs: Vec<String>,
    pub notification_addr: String,
    pub media_addr: String,
    /// The operators' API; [`crate::OPERATOR_TOKEN`] is its one operator's token.
    pub admin_addr: String,
    pub auth_db_url: String,
    pub history_db_url: String,
    pub media_db_url: String,
    pub admin_db_url: String,
    /// Media's directory store (unused when the test moved it to S3).
    pub media_dir: std::path::PathBuf,
    postgres_names: Vec<String>,
    stream: chat_common::nats::StreamSettings,
    auth_settings: Box<dyn Fn(&mut chat_auth::Config) + Send + Sync>,
    gateway_settings: Box<dyn Fn(&mut chat_gateway::Config) + Send + Sync>,
    presence_settings: Box<dyn Fn(&mut chat_presence::Config) + Send + Sync>,
    history_settings: Box<dyn Fn(&mut chat_history::Config) + Send + Sync>,
    notification_settings: Box<dyn Fn(&mut chat_notification::Config) + Send + Sync>,
    media_settings: Box<dyn Fn(&mut chat_media::Config) + Send + Sync>,
    admin_settings: Box<dyn Fn(&mut chat_admin::Config) + Send + Sync>,
    auth: Option<Running>,
    auth_process: Option<ServiceProcess>,
    notification: Option<Running>,
    more_notifications: Vec<Running>,
    presences: Vec<Option<Running>>,
    history: Option<Running>,
    media: Option<Running>,
    admin: Option<Running>,
    gateways: Vec<Option<Gateway>>,
    _dir: tempfile::TempDir,
}

// Every service is built and run through `Box::pin`: a service's futures in
// a debug build are large, and held by value in a test's futures, or moved
// through `tokio::spawn`, they could outgrow a test thread's stack.
fn spawn<F, E>(run: impl FnOnce(CancellationToken) -> F) -> Running
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let shutdown = CancellationToken::new();
    let future = Box::pin(run(shutdown.clone()));
    let task = tokio::spawn(async move {
        if let Err(e) = future.await {
            eprintln!("service stopped with an error: {e}");
        }
    });
    Running { shutdown, task }
}

async fn start_auth_process(database_url: &str, nats_url: &str, extra: &[(String, String)]) -> ServiceProcess {
    let addr = crate::processes::free_addr();
    let env = [
        ("AUTH_GRPC_ADDR", addr.to_string()),
        ("AUTH_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("AUTH_DATABASE_URL", database_url.to_owned()),
        ("NATS_URL", nats_url.to_owned()),
    ];
    let env: Vec<(String, String)> =
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).chain(extra.iter().cloned()).collect();
    ServiceProcess::start("auth", addr, &env, None).await
}

async fn launch_gateway(config: chat_gateway::Config) -> Gateway {
    let shutdown = CancellationToken::new();
    let app = Box::pin(chat_gateway::App::build(config, shutdown.clone())).await.expect("gateway starts");
    let addr = app.http_addr();
    let metrics_addr = app.metrics_addr();
    let task = tokio::spawn(async move {
        if let Err(e) = app.run().await {
            eprintln!("gateway stopped with an error: {e}");
        }
    });
    Gateway { addr, metrics_addr, running: Running { shutdown, task } }
}

impl System {
    pub fn builder() -> SystemBuilder {
        SystemBuilder {
            gateways: 1,
            presences: 1,
            auth: Box::new(|_| {}),
            gateway: Box::new(|_| {}),
            presence: Box::new(|_| {}),
            notification: Box::new(|_| {}),
            history: Box::new(|_| {}),
            media: Box::new(|_| {}),
            admin: Box::new(|_| {}),
            stream: Default::default(),
            auth_process_env: None,
        }
    }

    /// Everything with one gateway. `None` only for PostgreSQL outside CI when
    /// no server is reachable.
    pub async fn start(db: Db) -> Option<Self> {
        Self::builder().start(db).await
    }

    /// Everything with one gateway on SQLite, for tests where the database
    /// plays no part.
    pub async fn start_sqlite() -> Self {
        Self::start(Db::Sqlite).await.expect("sqlite needs no server")
    }

    pub async fn start_with_gateways(db: Db, gateways: usize) -> Option<Self> {
        Self::builder().gateways(gateways).start(db).await
    }

    async fn start_from(builder: SystemBuilder, db: Db) -> Option<Self> {
        let gateways = builder.gateways;
        crate::init_test_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut postgres_names = Vec::new();
        let (auth_db_url, history_db_url, media_db_url, admin_db_url) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("auth.db").display()),
                format!("sqlite://{}", dir.path().join("history.db").display()),
                format!("sqlite://{}", dir.path().join("media.db").display()),
                format!("sqlite://{}", dir.path().join("admin.db").display()),
            ),
            Db::Postgres => {
                let base = format!("chat_test_{}", uuid::Uuid::new_v4().simple());
                let mut create = async |service: &str| {
                    let name = format!("{base}_{service}");
                    let url = database::create_postgres(&name).await;
                    postgres_names.push(name);
                    url
                };
                (create("auth").await?, create("history").await?, create("media").await?, create("admin").await?)
            }
        };
        let nats = NatsServer::start().await;

        let mut metrics_addrs = std::collections::BTreeMap::new();
        let (auth, auth_process, auth_addr) = match &builder.auth_process_env {
            None => {
                let mut auth_config = chat_auth::Config::local(&auth_db_url, &nats.url());
                (builder.auth)(&mut auth_config);
                let auth = Box::pin(chat_auth::App::build(auth_config)).await.expect("auth starts");
                metrics_addrs.insert("auth", auth.metrics_addr());
                let auth_addr = auth.grpc_addr().to_string();
                (Some(spawn(|t| auth.run(t))), None, auth_addr)
            }
            Some(extra) => {
                let process = start_auth_process(&auth_db_url, &nats.url(), extra).await;
                let auth_addr = process.addr.to_string();
                (None, Some(process), auth_addr)
            }
        };
        let mut history_config = chat_history::Config::local(&history_db_url, &nats.url());
        history_config.stream = builder.stream.clone();
        (builder.history)(&mut history_config);
        let history = Box::pin(chat_history::App::build(history_config)).await.expect("history starts");
        let history_addr = history.grpc_addr().to_string();
        metrics_addrs.insert("history", history.metrics_addr());
        let history = Some(spawn(|t| history.run(t)));
        let mut system = Self {
            metrics_addrs,
            nats,
            db,
            auth_addr,
            history_addr,
            presence_addrs: Vec::new(),
            notification_addr: String::new(),
            media_addr: String::new(),
            admin_addr: String::new(),
            auth_db_url,
            history_db_url,
            media_db_url,
            admin_db_url,
            media_dir: dir.path().join("media"),
            postgres_names,
            stream: builder.stream,
            auth_settings: builder.auth,
            gateway_settings: builder.gateway,
            presence_settings: builder.presence,
            history_settings: builder.history,
            notification_settings: builder.notification,
            media_settings: builder.media,
            admin_settings: builder.admin,
            auth,
            auth_process,
            notification: None,
            more_notifications: Vec::new(),
            presences: Vec::new(),
            history,
            media: None,
            admin: None,
            gateways: Vec::new(),
            _dir: dir,
        };
        system.start_notification().await;
        system.start_media().await;
        system.start_admin().await;
        for _ in 0..builder.presences {
            let config = system.presence_config("127.0.0.1:0");
            let presence = Box::pin(chat_presence::App::build(config)).await.expect("presence starts");
            system.presence_addrs.push(presence.grpc_addr().to_string());
            system.metrics_addrs.entry("presence").or_insert(presence.metrics_addr());
            system.presences.push(Some(spawn(|t| presence.run(t))));
        }
        for _ in 0..gateways {
            system.start_gateway().await;
        }
        if let Some(Some(first)) = system.gateways.first() {
            system.metrics_addrs.insert("gateway", first.metrics_addr);
        }
        Some(system)
    }

    /// The auth process's id, when auth runs as a process of its own.
    pub fn auth_pid(&self) -> Option<u32> {
        self.auth_process.as_ref().and_then(ServiceProcess::pid)
    }

    /// Stops auth and starts a new instance on the same address and database.
    pub async fn restart_auth(&mut self) {
        assert!(self.auth_process.is_none(), "auth runs as a process");
        if let Some(auth) = self.auth.take() {
            auth.stop().await;
        }
        let mut config = chat_auth::Config::local(&self.auth_db_url, &self.nats.url());
        (self.auth_settings)(&mut config);
        config.grpc_addr = self.auth_addr.clone();
        let auth = Box::pin(chat_auth::App::build(config)).await.expect("auth restarts");
        self.auth = Some(spawn(|t| auth.run(t)));
    }

    /// Kills history abruptly (its task is dropped mid-work, as in a crash):
    /// an open insert transaction rolls back and unacknowledged messages are
    /// redelivered to the next instance.
    pub async fn kill_history(&mut self) {
        if let Some(history) = self.history.take() {
            history.task.abort();
            let _ = history.task.await;
        }
    }

    /// Starts history again on the same address and database.
    pub async fn start_history(&mut self) {
        self.start_history_with(true).await;
    }

    /// Starts history serving reads without storing the stream (`HISTORY_CONSUME=false`).
    pub async fn start_history_read_only(&mut self) {
        self.start_history_with(false).await;
    }

    async fn start_history_with(&mut self, consume: bool) {
        assert!(self.history.is_none(), "history is running");
        let mut config = chat_history::Config::local(&self.history_db_url, &self.nats.url());
        config.grpc_addr = self.history_addr.clone();
        config.stream = self.stream.clone();
        config.consume = consume;
        (self.history_settings)(&mut config);
        let history = Box::pin(chat_history::App::build(config)).await.expect("history restarts");
        self.history = Some(spawn(|t| history.run(t)));
    }

    fn presence_config(&self, grpc_addr: &str) -> chat_presence::Config {
        let mut config = chat_presence::Config::local(&self.nats.url(), &self.history_addr);
        (self.presence_settings)(&mut config);
        config.grpc_addr = grpc_addr.to_owned();
        config
    }

    /// Kills presence instance `index` abruptly (its task is dropped, as in a crash).
    pub async fn kill_presence(&mut self, index: usize) {
        if let Some(presence) = self.presences[index].take() {
            presence.task.abort();
            let _ = presence.task.await;
        }
    }

    /// Starts presence instance `index` again on its address.
    pub async fn start_presence(&mut self, index: usize) {
        assert!(self.presences[index].is_none(), "presence {index} is running");
        let config = self.presence_config(&self.presence_addrs[index]);
        let presence = Box::pin(chat_presence::App::build(config)).await.expect("presence restarts");
        self.presences[index] = Some(spawn(|t| presence.run(t)));
    }

    fn notification_config(&self) -> chat_notification::Config {
        let mut config = chat_notification::Config::local(&self.nats.url(), &self.auth_addr, &self.history_addr);
        config.allow_http_endpoints = true;
        // The tests' push endpoints listen on 127.0.0.1.
        config.allow_private_endpoints = true;
        config.coalesce = Duration::from_millis(300);
        config.stream = self.stream.clone();
        (self.notification_settings)(&mut config);
        config
    }

    /// Starts another notification instance beside the first (on its own port).
    pub async fn start_another_notification(&mut self) {
        let built = Box::pin(chat_notification::App::build(self.notification_config())).await;
        let notification = built.expect("notification starts");
        self.more_notifications.push(spawn(|t| notification.run(t)));
    }

    /// Starts notification (again, on the same address after the first time).
    pub async fn start_notification(&mut self) {
        assert!(self.notification.is_none(), "notification is running");
        let mut config = self.notification_config();
        if !self.notification_addr.is_empty() {
            config.grpc_addr = self.notification_addr.clone();
        }
        let notification = Box::pin(chat_notification::App::build(config)).await.expect("notification starts");
        self.notification_addr = notification.grpc_addr().to_string();
        self.metrics_addrs.insert("notification", notification.metrics_addr());
        self.notification = Some(spawn(|t| notification.run(t)));
    }

    /// Changes notification's configuration for its next start (after the
    /// test defaults), replacing the builder's change.
    pub fn set_notification_config(&mut self, change: impl Fn(&mut chat_notification::Config) + Send + Sync + 'static) {
        self.notification_settings = Box::new(change);
    }

    /// Kills notification abruptly (its task is dropped mid-work, as in a crash).
    pub async fn kill_notification(&mut self) {
        if let Some(notification) = self.notification.take() {
            notification.task.abort();
            let _ = notification.task.await;
        }
    }

    /// Starts admin, with one operator: `test-operator`, whose token is [`crate::OPERATOR_TOKEN`].
    async fn start_admin(&mut self) {
        let operators = chat_admin::Operators::with_token("test-operator", crate::OPERATOR_TOKEN);
        let peers = [
            self.auth_addr.as_str(),
            self.history_addr.as_str(),
            self.media_addr.as_str(),
            self.notification_addr.as_str(),
        ];
        let mut config = chat_admin::Config::local(&self.admin_db_url, &self.nats.url(), peers, operators);
        (self.admin_settings)(&mut config);
        let admin = Box::pin(chat_admin::App::build(config)).await.expect("admin starts");
        self.admin_addr = admin.grpc_addr().to_string();
        self.metrics_addrs.insert("admin", admin.metrics_addr());
        self.admin = Some(spawn(|t| admin.run(t)));
    }

    /// Starts media (again, on the same address after the first time).
    pub async fn start_media(&mut self) {
        assert!(self.media.is_none(), "media is running");
        let store = chat_media::Store::Directory(self.media_dir.clone());
        let mut config = chat_media::Config::local(&self.media_db_url, &self.nats.url(), &self.history_addr, store);
        (self.media_settings)(&mut config);
        if !self.media_addr.is_empty() {
            config.grpc_addr = self.media_addr.clone();
        }
        let media = Box::pin(chat_media::App::build(config)).await.expect("media starts");
        self.media_addr = media.grpc_addr().to_string();
        self.metrics_addrs.insert("media", media.metrics_addr());
        self.media = Some(spawn(|t| media.run(t)));
    }

    /// Kills media abruptly (its task is dropped mid-work, as in a crash).
    pub async fn kill_media(&mut self) {
        if let Some(media) = self.media.take() {
            media.task.abort();
            let _ = media.task.await;
        }
    }

    fn gateway_config(&self) -> chat_gateway::Config {
        let services =
            [&*self.auth_addr, &self.history_addr, &self.presence_addrs[0], &self.notification_addr, &self.media_addr];
        let mut config = chat_gateway::Config::local(services, &self.nats.url());
        config.stream = self.stream.clone();
        (self.gateway_settings)(&mut config);
        config
    }

    /// Starts a gateway as a process of its own, so a test can kill it with SIGKILL.
    pub async fn spawn_gateway_process(&self) -> ServiceProcess {
        let addr = crate::processes::free_addr();
        let config = self.gateway_config();
        let env = [
            ("GATEWAY_HTTP_ADDR", addr.to_string()),
            ("GATEWAY_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("AUTH_GRPC_URL", config.auth_url),
            ("HISTORY_GRPC_URL", config.history_url),
            ("PRESENCE_GRPC_URL", config.presence_url),
            ("NOTIFICATION_GRPC_URL", config.notification_url),
            ("MEDIA_GRPC_URL", config.media_url),
            ("NATS_URL", config.nats_url),
            ("GATEWAY_PRESENCE_TTL_SECS", config.presence_ttl.as_secs().to_string()),
        ];
        let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        ServiceProcess::start("gateway", addr, &env, None).await
    }

    /// Starts one more gateway; returns its index.
    pub async fn start_gateway(&mut self) -> usize {
        let gateway = launch_gateway(self.gateway_config()).await;
        self.gateways.push(Some(gateway));
        self.gateways.len() - 1
    }

    /// Starts gateway `index` again on its old address, after `stop_gateway`.
    pub async fn restart_gateway(&mut self, index: usize, addr: std::net::SocketAddr) {
        assert!(self.gateways[index].is_none(), "gateway {index} is running");
        let mut config = self.gateway_config();
        config.http_addr = addr.to_string();
        self.gateways[index] = Some(launch_gateway(config).await);
    }

    /// Gracefully stops gateway `index` (its sockets get 1001).
    pub async fn stop_gateway(&mut self, index: usize) {
        if let Some(gateway) = self.gateways.get_mut(index).and_then(Option::take) {
            gateway.running.stop().await;
        }
    }

    fn gateway(&self, index: usize) -> &Gateway {
        self.gateways[index].as_ref().expect("gateway is running")
    }

    pub fn gateway_addr(&self, index: usize) -> std::net::SocketAddr {
        self.gateway(index).addr
    }

    /// `http://127.0.0.1:port` of gateway `index`.
    pub fn http(&self, index: usize) -> String {
        format!("http://{}", self.gateway(index).addr)
    }

    /// `ws://127.0.0.1:port/v1/ws` of gateway `index`.
    pub fn ws(&self, index: usize) -> String {
        format!("ws://{}/v1/ws", self.gateway(index).addr)
    }

    pub fn api(&self) -> crate::client::Api {
        crate::client::Api::new(&self.http(0))
    }

    /// Signs arbitrary claims with auth's current private key, read from its
    /// database: for tokens the API would never issue (expired, odd claims).
    pub async fn sign_with_auth_key(&self, header_kid: Option<&str>, claims: &serde_json::Value) -> String {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.auth_db_url).await.expect("auth database");
        let row = sqlx::query(
            "SELECT kid, private_key_pkcs8 FROM signing_keys WHERE retired_at_ms IS NULL ORDER BY created_at_ms DESC LIMIT 1",
        )
        .fetch_one(&pool)
        .await
        .expect("a signing key");
        let kid: String = row.get("kid");
        let der = base64::engine::general_purpose::STANDARD
            .decode(row.get::<String, _>("private_key_pkcs8"))
            .expect("stored key is base64");
        pool.close().await;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(header_kid.map_or(kid, str::to_owned));
        jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(&der)).expect("signs")
    }

    /// Rows in history's `messages` table (to prove what was, or was not, stored).
    pub async fn stored_message_count(&self) -> i64 {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.history_db_url).await.expect("history database");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&pool).await.expect("count");
        pool.close().await;
        count
    }

    /// History's dead letters: the stream position and reason of each entry it set aside.
    pub async fn dead_letters(&self) -> Vec<(i64, String)> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.history_db_url).await.expect("history database");
        let rows = sqlx::query("SELECT stream_seq, reason FROM dead_letters ORDER BY stream_seq")
            .fetch_all(&pool)
            .await
            .expect("dead letters");
        pool.close().await;
        rows.iter().map(|row| (row.get("stream_seq"), row.get("reason"))).collect()
    }

    /// Writes `payload` straight into the CHAT stream under `subject`, as no
    /// service would: for entries the services must survive. Returns its position.
    pub async fn publish_raw(&self, subject: String, payload: Vec<u8>) -> u64 {
        let client = async_nats::connect(self.nats.url()).await.expect("nats");
        let js = async_nats::jetstream::new(client);
        js.publish(subject, payload.into()).await.expect("publish").await.expect("stored").sequence
    }

    /// Stops every service and removes PostgreSQL databases.
    pub async fn stop(mut self) {
        for index in 0..self.gateways.len() {
            self.stop_gateway(index).await;
        }
        let presences: Vec<Running> = self.presences.iter_mut().filter_map(Option::take).collect();
        let notifications: Vec<Running> =
            self.notification.take().into_iter().chain(self.more_notifications.drain(..)).collect();
        let rest = notifications
            .into_iter()
            .chain(self.admin.take())
            .chain(self.media.take())
            .chain(self.auth.take())
            .chain(self.history.take());
        for service in presences.into_iter().chain(rest) {
            service.stop().await;
        }
        self.nats.kill().await;
        for name in &self.postgres_names {
            database::drop_postgres(name).await;
        }
    }
}
