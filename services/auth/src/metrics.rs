//! Auth's Prometheus metrics (served on `AUTH_METRICS_ADDR`).

use std::sync::{Arc, OnceLock};

use chat_common::metrics::{CounterFamily, Registry};

pub struct Metrics {
    pub registry: Arc<Registry>,
    /// Logins by outcome: `ok`, `refused` (wrong credentials), `rate_limited`.
    pub logins: CounterFamily,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let logins = CounterFamily::default();
        registry.register("auth_logins", "Logins by outcome", logins.clone());
        Metrics { registry: Arc::new(registry), logins }
    })
}
