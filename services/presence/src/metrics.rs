//! Presence's Prometheus metrics (served on `PRESENCE_METRICS_ADDR`).

use std::sync::{Arc, OnceLock};

use chat_common::metrics::{CounterFamily, Registry};

pub struct Metrics {
    pub registry: Arc<Registry>,
    /// Changes this instance announced, by status.
    pub announced: CounterFamily,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let announced = CounterFamily::default();
        registry.register("presence_announced", "Presence changes this instance announced", announced.clone());
        Metrics { registry: Arc::new(registry), announced }
    })
}
