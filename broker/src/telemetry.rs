//! Logs (tracing), Prometheus metrics and the HTTP endpoints /metrics, /healthz, /readyz.
//!
//! Metric names (all prefixed `strata_`) are listed in docs/operations.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::supervise::Supervisor;

/// The target of spans meant for trace export (OTLP). They are TRACE-level spans that
/// only the export layer enables, so with export off they cost a disabled callsite check,
/// and they never show in the logs unless `log_filter` asks for this target.
pub const TRACE: &str = "strata::trace";

/// The trace export pipeline, when `otlp_endpoint` is set; [`Tracing::shutdown`] sends
/// what is still buffered.
pub struct Tracing {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Tracing {
    /// Flushes buffered spans. Call outside async code, while the runtime that built the
    /// exporter is still alive.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("strata: flushing traces at shutdown failed: {e}");
        }
    }
}

/// Installs the global tracing subscriber: logs on stderr (RUST_LOG wins over the
/// `log_filter` setting) and, with `otlp_endpoint`, span export over OTLP/gRPC. With
/// export on it must run inside a tokio runtime (the gRPC client lives there).
pub fn init_tracing(config: &Config) -> anyhow::Result<Tracing> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if config.log_format == "json" {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let mut provider = None;
    let export = if config.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("strata")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.instance.id",
                config.node_id.to_string(),
            ))
            .build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.otlp_sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = tracer_provider.tracer("strata");
        provider = Some(tracer_provider);
        let targets =
            tracing_subscriber::filter::Targets::new().with_target(TRACE, tracing::Level::TRACE);
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(targets),
        )
    };
    if let Err(e) = tracing_subscriber::registry()
        .with(logs)
        .with(export)
        .try_init()
    {
        eprintln!("tracing was already initialised: {e}");
    }
    Ok(Tracing { provider })
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_latency: HistogramVec,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub records_in: IntCounterVec,
    pub log_size: IntGaugeVec,
    pub log_segments: IntGaugeVec,
    pub log_end_offset: IntGaugeVec,
    pub log_start_offset: IntGaugeVec,
    pub local_log_start_offset: IntGaugeVec,
    pub remote_log_start_offset: IntGaugeVec,
    pub remote_log_end_offset: IntGaugeVec,
    pub remote_segments: IntGaugeVec,
    pub remote_bytes: IntGaugeVec,
    pub upload_lag_bytes: IntGaugeVec,
    pub upload_lag_seconds: IntGaugeVec,
    pub disk_used_percent: IntGauge,
    /// Descriptors the process holds, against the open-files limit.
    pub open_files: IntGauge,
    /// Sealed-segment files held by the bounded cache (`log_max_open_segment_files`).
    pub open_segment_files: IntGauge,
    pub produce_refused_disk: IntCounterVec,
    /// Tiering's own metrics (object store, segment cache). Its names carry the `strata_`
    /// prefix themselves, since the tiering crate does not know this registry's namespace.
    pub tiering_registry: Registry,
    pub connections: IntGauge,
    pub cleaner_runs: IntCounterVec,
    pub cleaner_bytes_removed: IntCounterVec,
    pub cleaner_errors: IntCounterVec,
    pub groups: IntGaugeVec,
    /// Partitions by this broker's role in them: leader, follower, none.
    pub partitions: IntGaugeVec,
    /// Partitions this broker leads whose ISR is smaller than their replica list, or than
    /// min.insync.replicas.
    pub under_replicated: IntGaugeVec,
    /// Partitions without a leader (reported by the controller only).
    pub offline_partitions: IntGaugeVec,
    pub isr_changes: IntCounterVec,
    pub leader_elections: IntCounterVec,
    /// Connections accepted and closed at once, by the limit they were over.
    pub connections_rejected: IntCounterVec,
    /// Connections the broker closed on a timeout, by reason.
    pub connections_closed: IntCounterVec,
    /// Bytes of requests and responses in flight, counted against
    /// `queued_max_request_bytes`.
    pub queued_request_bytes: IntGauge,
    /// Log lines a client provoked that the rate limiter dropped, by event.
    pub log_lines_suppressed: IntCounterVec,
    /// Restarts of supervised background loops after a panic or an error, by task.
    pub task_restarts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("strata".into()), None)?;
        // Process-wide (several brokers in one test process share them).
        registry.register(Box::new(crate::log::damage::FOUND.clone()))?;
        registry.register(Box::new(crate::log::damage::REPAIRS.clone()))?;
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let requests = counter("requests_total", "Kafka requests handled, by API", &["api"])?;
        let request_errors = counter(
            "request_errors_total",
            "Kafka requests or partitions answered with an error, by API and error",
            &["api", "error"],
        )?;
        let request_latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from a request's arrival to its response, by API",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["api"],
        )?;
        registry.register(Box::new(request_latency.clone()))?;
        let bytes_in = counter(
            "bytes_in_total",
            "Record batch bytes appended, by topic",
            &["topic"],
        )?;
        let bytes_out = counter(
            "bytes_out_total",
            "Record batch bytes returned by Fetch, by topic",
            &["topic"],
        )?;
        let records_in = counter("records_in_total", "Records appended, by topic", &["topic"])?;
        let log_size = gauge(
            "log_size_bytes",
            "Bytes in local segments",
            &["topic", "partition"],
        )?;
        let log_segments = gauge("log_segments", "Local segments", &["topic", "partition"])?;
        let log_end_offset = gauge("log_end_offset", "Log end offset", &["topic", "partition"])?;
        let log_start_offset = gauge(
            "log_start_offset",
            "Log start offset",
            &["topic", "partition"],
        )?;
        let pair = ["topic", "partition"];
        let local_log_start_offset = gauge(
            "local_log_start_offset",
            "First offset held on local disk (tiered topics keep older ones remotely)",
            &pair,
        )?;
        let remote_log_start_offset = gauge(
            "remote_log_start_offset",
            "First offset the remote tier holds (records below were deleted by retention)",
            &pair,
        )?;
        let remote_log_end_offset = gauge(
            "remote_log_end_offset",
            "One past the last offset uploaded and committed to the manifest",
            &pair,
        )?;
        let remote_segments = gauge("remote_segments", "Live segments in the remote tier", &pair)?;
        let remote_bytes = gauge(
            "remote_bytes",
            "Record bytes of live segments in the remote tier",
            &pair,
        )?;
        let upload_lag_bytes = gauge(
            "remote_upload_lag_bytes",
            "Bytes of sealed segments not yet uploaded",
            &pair,
        )?;
        let upload_lag_seconds = gauge(
            "remote_upload_lag_seconds",
            "Age of the oldest sealed segment not yet uploaded (0 when none waits)",
            &pair,
        )?;
        let disk_used_percent = IntGauge::new(
            "disk_used_percent",
            "Used space on the data directory's file system",
        )?;
        registry.register(Box::new(disk_used_percent.clone()))?;
        let open_files = IntGauge::new(
            "open_files",
            "File descriptors the broker process holds (sockets included)",
        )?;
        registry.register(Box::new(open_files.clone()))?;
        let open_segment_files = IntGauge::new(
            "open_segment_files",
            "Sealed-segment files open in the cache bounded by log_max_open_segment_files",
        )?;
        registry.register(Box::new(open_segment_files.clone()))?;
        let produce_refused_disk = counter(
            "produce_refused_disk_full_total",
            "Produce requests refused because the data disk passed disk_high_watermark_percent",
            &["topic"],
        )?;
        let cleaner_runs = counter(
            "log_cleaner_runs_total",
            "Compaction passes that cleaned something, by topic",
            &["topic"],
        )?;
        let cleaner_bytes_removed = counter(
            "log_cleaner_bytes_removed_total",
            "Bytes compaction removed from local segments, by topic",
            &["topic"],
        )?;
        let cleaner_errors = counter(
            "log_cleaner_errors_total",
            "Compaction passes that failed, by topic",
            &["topic"],
        )?;
        let groups = gauge("consumer_groups", "Consumer groups, by state", &["state"])?;
        let partitions = gauge(
            "partitions",
            "Partitions by this broker's role in them (leader, follower, none)",
            &["role"],
        )?;
        let under_replicated = gauge(
            "under_replicated_partitions",
            "Partitions led here whose ISR is below their replica count (kind=replicas) or below min.insync.replicas (kind=min_isr)",
            &["kind"],
        )?;
        let offline_partitions = gauge(
            "offline_partitions",
            "Partitions without a live in-sync leader, as the controller sees them (0 on other brokers)",
            &[],
        )?;
        let isr_changes = counter(
            "isr_changes_total",
            "ISR changes this broker stored as a leader, by change (expand, shrink)",
            &["change"],
        )?;
        let leader_elections = counter(
            "leader_elections_total",
            "Leader changes this broker made as the controller, by cause (failover, drain, preferred)",
            &["cause"],
        )?;
        let task_restarts = counter(
            "task_restarts_total",
            "Background loops restarted after a panic or an error, by task (see /readyz)",
            &["task"],
        )?;
        let connections = IntGauge::new("connections", "Open client connections")?;
        registry.register(Box::new(connections.clone()))?;
        let connections_rejected = counter(
            "connections_rejected_total",
            "Connections accepted and closed at once because a limit was reached, by limit (max_connections, max_connections_per_ip)",
            &["reason"],
        )?;
        let connections_closed = counter(
            "connections_closed_total",
            "Connections the broker closed on a timeout, by reason (idle, request_read_timeout, write_timeout)",
            &["reason"],
        )?;
        let queued_request_bytes = IntGauge::new(
            "queued_request_bytes",
            "Bytes of requests being read or handled and of responses not yet written (bounded by queued_max_request_bytes)",
        )?;
        registry.register(Box::new(queued_request_bytes.clone()))?;
        let log_lines_suppressed = counter(
            "log_lines_suppressed_total",
            "Log lines provoked by clients that rate limiting dropped, by event",
            &["event"],
        )?;
        Ok(Metrics {
            registry,
            requests,
            request_errors,
            request_latency,
            bytes_in,
            bytes_out,
            records_in,
            log_size,
            log_segments,
            open_files,
            open_segment_files,
            log_end_offset,
            log_start_offset,
            local_log_start_offset,
            remote_log_start_offset,
            remote_log_end_offset,
            remote_segments,
            remote_bytes,
            upload_lag_bytes,
            upload_lag_seconds,
            disk_used_percent,
            produce_refused_disk,
            tiering_registry: Registry::new(),
            connections,
            cleaner_runs,
            cleaner_bytes_removed,
            cleaner_errors,
            groups,
            partitions,
            under_replicated,
            offline_partitions,
            isr_changes,
            leader_elections,
            connections_rejected,
            connections_closed,
            queued_request_bytes,
            log_lines_suppressed,
            task_restarts,
        })
    }

    pub fn error(&self, api: &str, error: kafka_protocol::ResponseError) {
        self.request_errors
            .with_label_values(&[api, &format!("{error:?}")])
            .inc();
    }

    /// Drops the per-partition series of a deleted topic.
    pub fn forget_topic(&self, topic: &str, partitions: i32) {
        for p in 0..partitions {
            let labels = [topic, &p.to_string()];
            for gauge in [
                &self.log_size,
                &self.log_segments,
                &self.log_end_offset,
                &self.log_start_offset,
                &self.local_log_start_offset,
                &self.remote_log_start_offset,
                &self.remote_log_end_offset,
                &self.remote_segments,
                &self.remote_bytes,
                &self.upload_lag_bytes,
                &self.upload_lag_seconds,
            ] {
                let _ = gauge.remove_label_values(&labels);
            }
        }
        for counter in [&self.bytes_in, &self.bytes_out, &self.records_in] {
            let _ = counter.remove_label_values(&[topic]);
        }
    }

    fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.tiering_registry.gather());
        TextEncoder::new().encode(&families, &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

/// What the HTTP endpoints look at.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once logs are recovered and the Kafka listener accepts; cleared at shutdown.
    pub ready: AtomicBool,
    /// The background loops; one waiting to be restarted makes the broker not ready.
    pub tasks: Arc<Supervisor>,
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("render metrics: {e}"),
        )
            .into_response(),
    }
}

/// 503 until start-up is done and while any background loop waits to be restarted
/// (one line per such task, so an operator sees which).
async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let unhealthy = health.tasks.unhealthy();
    if health.ready.load(Ordering::Relaxed) && unhealthy.is_empty() {
        return (StatusCode::OK, "ready\n".to_string());
    }
    let mut body = "not ready\n".to_string();
    for task in unhealthy {
        body.push_str(&format!("{task}\n"));
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Serves /metrics, /healthz and /readyz until `cancel` fires.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}
