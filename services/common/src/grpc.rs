//! Serving and calling gRPC the same way in every service: a listener bound
//! up front (so port 0 works and the bound port is known), `grpc.health.v1`,
//! reflection for `grpcurl`, shutdown on a token, and W3C trace context in the
//! metadata of every call both ways (a server span continues the caller's trace).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Binds `addr` and returns the listener with the address it really got.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// What a service needs to do its work; its gRPC health follows them.
pub struct Dependencies {
    nats: async_nats::Client,
    db: Option<sqlx::AnyPool>,
    database_up: DatabaseGate,
}

impl Dependencies {
    pub fn new(nats: async_nats::Client, db: Option<sqlx::AnyPool>) -> Self {
        Self { nats, db, database_up: DatabaseGate::default() }
    }

    /// The gate that refuses calls while the database does not answer.
    pub fn database_gate(&self) -> DatabaseGate {
        self.database_up.clone()
    }

    /// Whether the database (if any) answers within the probe's timeout.
    async fn database_answers(&self) -> bool {
        match &self.db {
            None => true,
            Some(pool) => matches!(
                tokio::time::timeout(HEALTH_PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await,
                Ok(Ok(_))
            ),
        }
    }
}

/// Refuses gRPC calls with `UNAVAILABLE` at once while the service's
/// database does not answer, instead of letting each call hang until the
/// database is back (a partition closes nothing, so a query on an open
/// connection would wait for TCP to give up). Open until the health watcher
/// ([`Health::watch`]) finds the database gone; a tonic interceptor.
#[derive(Clone, Debug)]
pub struct DatabaseGate(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Default for DatabaseGate {
    fn default() -> Self {
        Self(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)))
    }
}

impl DatabaseGate {
    fn set(&self, up: bool) {
        self.0.store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

impl tonic::service::Interceptor for DatabaseGate {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.0.load(std::sync::atomic::Ordering::Relaxed) {
            Ok(request)
        } else {
            Err(tonic::Status::unavailable("the database does not answer; retry shortly"))
        }
    }
}

const HEALTH_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Probes that must fail in a row before the database counts as gone: one
/// slow answer under load is not an outage.
const FAILED_PROBES_FOR_DOWN: u32 = 2;

/// A server's `grpc.health.v1` status: SERVING while its dependencies answer,
/// NOT_SERVING otherwise, for each of its services and for the server (`""`).
pub struct Health {
    reporter: tonic_health::server::HealthReporter,
    names: Vec<String>,
    dependencies: Dependencies,
}

impl Health {
    async fn set(&self, up: bool) {
        let status = if up { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
        for name in self.names.iter().map(String::as_str).chain([""]) {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Checks the dependencies every second until `shutdown`, reporting
    /// changes: NOT_SERVING while NATS is disconnected or after the database
    /// failed [`FAILED_PROBES_FOR_DOWN`] probes in a row (which also closes
    /// the [`DatabaseGate`]); SERVING again at the first good probe.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(HEALTH_EVERY);
        let mut last = true;
        let mut failed_probes = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            failed_probes = if self.dependencies.database_answers().await { 0 } else { failed_probes + 1 };
            let database_up = failed_probes < FAILED_PROBES_FOR_DOWN;
            self.dependencies.database_up.set(database_up);
            let nats_up = self.dependencies.nats.connection_state() == async_nats::connection::State::Connected;
            let up = database_up && nats_up;
            if up != last {
                tracing::warn!(up, nats_up, database_up, "dependencies changed; health follows");
                self.set(up).await;
                last = up;
            }
        }
    }
}

/// Adds health (SERVING at first, then following `dependencies`; see
/// [`Health::watch`]) and reflection to `routes`.
pub fn with_health_and_reflection(
    mut routes: Routes,
    service_names: &[&str],
    dependencies: Dependencies,
) -> (Routes, Health) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health { reporter, names: service_names.iter().map(|n| (*n).to_owned()).collect(), dependencies };
    // Built with its dependencies just connected: serving from the start.
    for name in health.names.iter().cloned().chain([String::new()]) {
        let reporter = health.reporter.clone();
        tokio::spawn(async move { reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await });
    }
    routes = routes.add_service(health_service);
    // Only the services this server really has are advertised; the shared
    // descriptor set describes every service of the system.
    let reflection = || {
        service_names.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(chat_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health"),
            |builder, name| builder.with_service_name(*name),
        )
    };
    // Both reflection versions: grpcurl releases before 1.9 speak only v1alpha.
    let routes = routes
        .add_service(reflection().build_v1().expect("the compiled descriptor sets are valid"))
        .add_service(reflection().build_v1alpha().expect("the compiled descriptor sets are valid"));
    (routes, health)
}

/// How long calls in progress get to finish once shutdown begins. A
/// connection that stays open past it (a client that never lets go) is
/// closed rather than hold the process up.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `routes` on `listener` until `shutdown` is cancelled, then drains
/// for up to [`DRAIN_LIMIT`].
///
/// # Errors
/// When the server fails.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let serving = tonic::transport::Server::builder()
        .trace_fn(request_span)
        .add_routes(routes)
        .serve_with_incoming_shutdown(accepting(listener), shutdown.clone().cancelled_owned());
    let drain_ended = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        served = serving => served,
        () = drain_ended => {
            tracing::warn!(limit = ?DRAIN_LIMIT, "connections still open after shutdown; closing them");
            Ok(())
        }
    }
}

/// Accepted connections with Nagle's algorithm off: a reply that hyper
/// writes in more than one piece (headers, then data) is otherwise held until
/// the caller acknowledges the first, and a caller delaying its ACK makes
/// that 40 ms.
fn accepting(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The span a served call runs in: a child of the caller's `traceparent`,
/// named after the method. Health checks and reflection are not traced.
fn request_span(request: &http::Request<()>) -> tracing::Span {
    let method = request.uri().path();
    if method.starts_with("/grpc.") || !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("grpc.server", otel.name = method, otel.kind = "server");
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpHeaders(request.headers())));
    let _ = span.set_parent(parent);
    span
}

/// Largest reply a client of history accepts (tonic's default is 4 MiB). A
/// catch-up page is up to 500 messages of up to 16 KB of body each, about
/// 8 MB; a conversation list carries each conversation's last message.
const HISTORY_REPLY_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A client of history that accepts its largest replies.
pub fn history_client(
    channel: Channel,
) -> chat_proto::history::v1::history_service_client::HistoryServiceClient<Channel> {
    chat_proto::history::v1::history_service_client::HistoryServiceClient::new(channel)
        .max_decoding_message_size(HISTORY_REPLY_MAX_BYTES)
}

/// The longest a call to another service may take: past it the caller gets
/// `DEADLINE_EXCEEDED` (the gateway answers 503) rather than waiting on a
/// service that is stuck or cut off.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A channel to another service: `peers` is one `host:port` (or `http://`
/// URL) or a comma-separated list of them (see [`crate::peers`]). One IP
/// address is called directly; anything else goes through a balancer over
/// the instances that report serving. Connects lazily; every call bounded by
/// [`CALL_TIMEOUT`].
///
/// # Errors
/// When the list or one of its entries is malformed.
pub fn channel(peers: &str) -> Result<Channel, crate::peers::PeerListError> {
    let list = crate::peers::parse_list(peers)?;
    let endpoint = |addr: SocketAddr| {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("an address makes a valid URI")
            .connect_timeout(std::time::Duration::from_secs(3))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
    };
    if let [single] = list.as_slice()
        && let Some(addr) = single.socket_addr()
    {
        return Ok(Channel(endpoint(addr).connect_lazy()));
    }
    let (channel, balancer) = tonic::transport::Channel::balance_channel(list.len().max(16));
    tokio::spawn(crate::peers::watch(list, endpoint, balancer));
    Ok(Channel(channel))
}

/// A client channel that sends the current span's trace context
/// (`traceparent`) with every call, so the callee's spans join the trace.
/// A call that finds no instance to go to within [`CALL_TIMEOUT`] (a
/// balancer whose names do not resolve yet) ends with `DEADLINE_EXCEEDED`.
#[derive(Clone, Debug)]
pub struct Channel(tonic::transport::Channel);

type Request = http::Request<tonic::body::Body>;
type Response = <tonic::transport::Channel as tower::Service<Request>>::Response;

impl tower::Service<Request> for Channel {
    type Response = Response;
    type Error = tower::BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if crate::telemetry::exporting() {
            let context = tracing::Span::current().context();
            opentelemetry::global::get_text_map_propagator(|p| {
                p.inject_context(&context, &mut HttpHeadersMut(request.headers_mut()));
            });
        }
        let call = self.0.call(request);
        Box::pin(async move {
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(answer) => answer.map_err(Into::into),
                // tonic hands a `Status` error to the caller as it is.
                Err(_) => {
                    Err(Box::new(tonic::Status::deadline_exceeded("no instance of the service answered in time"))
                        as tower::BoxError)
                }
            }
        })
    }
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HttpHeadersMut<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HttpHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}
