//! Notification's Prometheus metrics (served on `NOTIFICATION_METRICS_ADDR`).

use std::sync::{Arc, OnceLock};

use chat_common::metrics::{ConsumerLag, Counter, CounterFamily, Registry};

pub struct Metrics {
    pub registry: Arc<Registry>,
    /// Deliveries queued for users with no device connected.
    pub queued: Counter,
    /// Push attempts by outcome: `delivered`, `gone`, `failed`, `dead_letter`,
    /// `refused` (the endpoint policy refused the address: nothing sent),
    /// `revoked` (a subscription of a revoked device, removed unsent),
    /// `not_member` (a conversation the user left: its deliveries dropped unsent).
    pub pushes: CounterFamily,
    /// Events of the CHAT stream set aside (see `intake`).
    pub dead_events: Counter,
    pub lag: ConsumerLag,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let (queued, pushes, lag) = (Counter::default(), CounterFamily::default(), ConsumerLag::default());
        let dead_events = Counter::default();
        registry.register("notification_queued", "Deliveries queued for offline users", queued.clone());
        registry.register("notification_pushes", "Push attempts by outcome", pushes.clone());
        registry.register(
            "notification_dead_events",
            "Events of the CHAT stream set aside after failing (in the notify_dead_events bucket)",
            dead_events.clone(),
        );
        lag.register(&mut registry);
        Metrics { registry: Arc::new(registry), queued, pushes, dead_events, lag }
    })
}
