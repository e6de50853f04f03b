//! Prometheus metrics: every service registers its own in a `Registry` and
//! serves them as text at `GET /metrics` on its metrics listener
//! (`<SERVICE>_METRICS_ADDR`). Helpers for what several services measure
//! alike: the lag of a JetStream consumer.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// The one label of a metric family's series. Static strings, so counting
/// a frame or an error allocates nothing.
pub type Labels = [(&'static str, &'static str); 1];
pub type CounterFamily = Family<Labels, Counter>;

pub fn label(name: &'static str, value: &'static str) -> Labels {
    [(name, value)]
}

/// A latency histogram in seconds, from 100 µs to about 13 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// A size histogram, from 1 to 4096.
pub fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// A bound metrics listener (bound in `build`, so port 0 works and is known).
pub struct Endpoint {
    listener: TcpListener,
    pub addr: std::net::SocketAddr,
}

impl Endpoint {
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: &str) -> std::io::Result<Self> {
        let (listener, addr) = crate::grpc::bind(addr).await?;
        Ok(Self { listener, addr })
    }

    /// Serves `registry` until `shutdown`.
    pub async fn serve(self, registry: Arc<Registry>, shutdown: CancellationToken) {
        serve(self.listener, registry, shutdown).await;
    }
}

/// Serves `registry` at `GET /metrics` on `listener` until `shutdown`.
async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => {
                        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
                    }
                    Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::warn!(error = %e, "the metrics listener failed");
    }
}

/// How far durable consumers are behind: messages not yet delivered,
/// delivered but not acknowledged, and being redelivered; labelled by consumer.
#[derive(Clone, Default)]
pub struct ConsumerLag {
    pending: Family<Labels, Gauge>,
    ack_pending: Family<Labels, Gauge>,
    redelivered: Family<Labels, Gauge>,
}

impl ConsumerLag {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "jetstream_consumer_pending",
            "Messages not yet delivered to the consumer",
            self.pending.clone(),
        );
        registry.register(
            "jetstream_consumer_ack_pending",
            "Messages delivered, not yet acknowledged",
            self.ack_pending.clone(),
        );
        registry.register("jetstream_consumer_redelivered", "Messages being redelivered", self.redelivered.clone());
    }

    /// Reads `consumer`'s state every few seconds until `shutdown`.
    pub async fn watch(&self, name: &'static str, mut consumer: PullConsumer, shutdown: CancellationToken) {
        let labels = label("consumer", name);
        let mut every = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Ok(info) = consumer.info().await {
                self.pending.get_or_create(&labels).set(info.num_pending as i64);
                self.ack_pending.get_or_create(&labels).set(info.num_ack_pending as i64);
                self.redelivered.get_or_create(&labels).set(info.num_redelivered as i64);
            }
        }
    }
}
