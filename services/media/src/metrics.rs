//! Media's Prometheus metrics (served on `MEDIA_METRICS_ADDR`).

use std::sync::{Arc, OnceLock};

use chat_common::metrics::{Counter, CounterFamily, Registry, label};

pub struct Metrics {
    pub registry: Arc<Registry>,
    /// Uploads by outcome: `stored`, `invalid`, `too_large`, `stalled`, `failed`.
    pub uploads: CounterFamily,
    pub uploaded_bytes: Counter,
    pub downloaded_bytes: Counter,
    /// Attachments removed, by why: `erased` (their owner was erased by an
    /// operator), and by the clean-up: `unfinished` (left by a
    /// stopped instance), `unattached`, `unreferenced`, `cut_short` (a removal
    /// finished).
    pub removed: CounterFamily,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let metrics = Metrics {
            registry: Arc::default(),
            uploads: CounterFamily::default(),
            uploaded_bytes: Counter::default(),
            downloaded_bytes: Counter::default(),
            removed: CounterFamily::default(),
        };
        registry.register("media_uploads", "Uploads, by outcome", metrics.uploads.clone());
        registry.register("media_uploaded_bytes", "Bytes of uploads stored", metrics.uploaded_bytes.clone());
        registry.register("media_downloaded_bytes", "Bytes of attachments sent", metrics.downloaded_bytes.clone());
        registry.register("media_removed", "Attachments removed by the clean-up, by why", metrics.removed.clone());
        Metrics { registry: Arc::new(registry), ..metrics }
    })
}

pub fn count_upload(outcome: &'static str) {
    get().uploads.get_or_create(&label("outcome", outcome)).inc();
}

pub fn count_removed(why: &'static str) {
    get().removed.get_or_create(&label("why", why)).inc();
}
