//! Auth's Prometheus metrics (served on `AUTH_METRICS_ADDR`).

use std::sync::{Arc, OnceLock};

use chat_common::metrics::{Counter, CounterFamily, Registry};

pub struct Metrics {
    pub registry: Arc<Registry>,
    /// Logins by outcome: `ok`, `refused` (wrong credentials), `rate_limited`.
    pub logins: CounterFamily,
    /// Registrations and logins refused because every hashing thread and
    /// queue place was taken.
    pub hashes_refused: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let logins = CounterFamily::default();
        registry.register("auth_logins", "Logins by outcome", logins.clone());
        let hashes_refused = Counter::default();
        registry.register(
            "auth_password_hashes_refused",
            "Password hashes refused because the hashing queue was full",
            hashes_refused.clone(),
        );
        Metrics { registry: Arc::new(registry), logins, hashes_refused }
    })
}
