//! Telemetry start-up: structured logs always, OpenTelemetry traces to an OTLP
//! collector (Jaeger) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. W3C trace
//! context is the propagation format everywhere. Sampling and export batching
//! follow the standard `OTEL_TRACES_SAMPLER`(`_ARG`) and `OTEL_BSP_*`
//! variables, read by the SDK. A log line written inside a traced span
//! carries its `trace_id` and `span_id`, so logs and traces meet.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::fmt;

use crate::config::{Peer, Setting};

use opentelemetry::trace::TraceContextExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The log filter (`tracing_subscriber`'s `EnvFilter` syntax).
pub const RUST_LOG: Setting = Setting::value("RUST_LOG", "info");
/// `json` for JSON lines; anything else is text.
pub const LOG_FORMAT: Setting = Setting::value("LOG_FORMAT", "text");
/// Where traces go (OTLP over gRPC); unset, none are exported.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: Setting = Setting::peer("OTEL_EXPORTER_OTLP_ENDPOINT", "", Peer::TraceCollector);
/// Read by the OpenTelemetry SDK (standard sampler names); its default.
pub const OTEL_TRACES_SAMPLER: Setting = Setting::value("OTEL_TRACES_SAMPLER", "parentbased_always_on");
/// Read by the OpenTelemetry SDK: the sampler's argument (a ratio).
pub const OTEL_TRACES_SAMPLER_ARG: Setting = Setting::value("OTEL_TRACES_SAMPLER_ARG", "1.0");
/// Everything telemetry start-up reads, itself or through the SDK, in every service.
pub const SETTINGS: &[Setting] =
    &[RUST_LOG, LOG_FORMAT, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG];

/// Flushes pending spans when dropped; keep it alive for the life of `main`.
#[must_use = "dropping the guard flushes and stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans. Without an exporter there is no trace
/// to continue, so propagation skips reading and writing headers on every message.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global subscriber. [`RUST_LOG`] filters; `LOG_FORMAT=json`
/// switches to JSON lines.
///
/// # Errors
/// When the OTLP exporter cannot be built from its configuration.
pub fn init(service_name: &'static str) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let env = &crate::config::process_env;
    let filter = EnvFilter::try_new(RUST_LOG.string(env)).unwrap_or_else(|_| EnvFilter::new(RUST_LOG.default));
    let json = LOG_FORMAT.string(env) == "json";
    let endpoint = OTEL_EXPORTER_OTLP_ENDPOINT.get(env);

    let provider = match endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service_name).build())
                    .build(),
            )
        }
        None => None,
    };
    // Spans are exported at `info` whatever `RUST_LOG` says: quieter logs must
    // not cut the traces.
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service_name))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let fmt_layer = if json {
        let format = tracing_subscriber::fmt::format().json();
        tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithTraceId { inner: format, json: true })
            .boxed()
    } else {
        let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let format = tracing_subscriber::fmt::format().with_target(true).with_ansi(colour);
        tracing_subscriber::fmt::layer().event_format(WithTraceId { inner: format, json: false }).boxed()
    };
    tracing_subscriber::registry().with(fmt_layer.with_filter(filter)).with(otel_layer).try_init()?;
    EXPORTING.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    Ok(TelemetryGuard { provider })
}

/// Adds the active trace's ids to each line an inner formatter writes: as the
/// first JSON fields, or in front of a text line.
struct WithTraceId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let context = opentelemetry::Context::current();
        let span = context.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.inner.format_event(ctx, writer, event);
        }
        let (trace_id, span_id) = (ids.trace_id(), ids.span_id());
        if !self.json {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}
