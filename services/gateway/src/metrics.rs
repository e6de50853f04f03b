//! The gateway's Prometheus metrics (served on `GATEWAY_METRICS_ADDR`). One
//! set per process, reachable from anywhere in the crate with `get()`.

use std::sync::{Arc, OnceLock};

use chat_common::metrics::{Counter, CounterFamily, Gauge, Histogram, Registry, latency_histogram};

pub struct Metrics {
    pub registry: Arc<Registry>,
    /// Open, authenticated WebSockets.
    pub connections: Gauge,
    /// Client frames by type.
    pub frames_in: CounterFamily,
    /// Frames written to sockets.
    pub frames_out: Counter,
    /// From a `send` frame to its `ack` (stored in JetStream).
    pub send_to_ack: Histogram,
    /// From a message's `sent_at` to its hand-over to this gateway's sockets.
    pub fan_out: Histogram,
    /// Errors answered, by protocol code (HTTP and WebSocket).
    pub errors: CounterFamily,
    /// Requests and frames refused by a brake (rate or count), by brake.
    pub brakes: CounterFamily,
    /// Stream entries live delivery passed over because they do not decode.
    pub skipped_entries: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let connections = Gauge::default();
        let (frames_in, frames_out, errors) = (CounterFamily::default(), Counter::default(), CounterFamily::default());
        let (send_to_ack, fan_out) = (latency_histogram(), latency_histogram());
        registry.register("gateway_connections", "Open authenticated WebSockets", connections.clone());
        registry.register("gateway_frames_in", "Client frames received, by type", frames_in.clone());
        registry.register("gateway_frames_out", "Frames sent to sockets", frames_out.clone());
        registry.register("gateway_send_to_ack_seconds", "From a send frame to its ack", send_to_ack.clone());
        registry.register(
            "gateway_fan_out_seconds",
            "From a message's sent_at to its hand-over to local sockets",
            fan_out.clone(),
        );
        registry.register("gateway_errors", "Errors answered, by code", errors.clone());
        let brakes = CounterFamily::default();
        registry.register("gateway_brakes", "Requests and frames refused by a brake, by brake", brakes.clone());
        let skipped_entries = Counter::default();
        registry.register(
            "gateway_skipped_entries",
            "Stream entries live delivery passed over (undecodable)",
            skipped_entries.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            connections,
            frames_in,
            frames_out,
            send_to_ack,
            fan_out,
            errors,
            brakes,
            skipped_entries,
        }
    })
}
