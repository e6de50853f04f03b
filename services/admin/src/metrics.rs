//! Admin's Prometheus metrics (served on `ADMIN_METRICS_ADDR`).

use std::sync::{Arc, OnceLock};

use chat_common::metrics::{CounterFamily, Registry, label};

pub struct Metrics {
    pub registry: Arc<Registry>,
    /// Operator actions, by outcome: `ok`, `refused` (bad input or not
    /// allowed), `failed`, `unauthenticated`.
    pub actions: CounterFamily,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let actions = CounterFamily::default();
        registry.register("admin_actions", "Operator actions, by outcome", actions.clone());
        Metrics { registry: Arc::new(registry), actions }
    })
}

pub fn count(outcome: &'static str) {
    get().actions.get_or_create(&label("outcome", outcome)).inc();
}
