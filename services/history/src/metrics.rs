//! History's Prometheus metrics (served on `HISTORY_METRICS_ADDR`).

use std::sync::{Arc, OnceLock};

use chat_common::metrics::{ConsumerLag, Counter, Histogram, Registry, latency_histogram, size_histogram};

pub struct Metrics {
    pub registry: Arc<Registry>,
    /// Stream entries per database transaction.
    pub batch_size: Histogram,
    /// Time to store one batch.
    pub batch_seconds: Histogram,
    pub lag: ConsumerLag,
    /// Stream entries set aside as dead letters.
    pub dead_letters: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let (batch_size, batch_seconds, lag) = (size_histogram(), latency_histogram(), ConsumerLag::default());
        registry.register("history_ingest_batch_size", "Stream entries per insert transaction", batch_size.clone());
        registry.register("history_ingest_batch_seconds", "Time to store one batch", batch_seconds.clone());
        lag.register(&mut registry);
        let dead_letters = Counter::default();
        registry.register(
            "history_dead_letters",
            "Stream entries history could not store, set aside (table dead_letters)",
            dead_letters.clone(),
        );
        Metrics { registry: Arc::new(registry), batch_size, batch_seconds, lag, dead_letters }
    })
}
