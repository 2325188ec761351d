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
    /// The cost ledger (`crate::cost`): per-topic requests, bytes and dollars.
    pub cost: std::sync::Arc<crate::cost::Ledger>,
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
    /// Reassignment catch-up bytes that went through the replication throttle, by side
    /// (leader, follower).
    pub replication_throttled_bytes: IntCounterVec,
    /// Time the replication throttle held reassignment catch-up back, by side.
    pub replication_throttled_ms: IntCounterVec,
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
    /// SASL authentications, by listener, mechanism and result (`ok`, `failed`).
    pub authentications: IntCounterVec,
    /// Requests (or parts of requests) the authorizer denied, by principal and API.
    pub authorization_denials: IntCounterVec,
    /// Throttle time given to clients over a quota, by principal and quota kind.
    pub throttle_time_ms: IntCounterVec,
    /// Open transactions this broker coordinates, and the age of the oldest.
    pub txn_open: IntGauge,
    pub txn_oldest_open_ms: IntGauge,
    /// Transactions ended by abort, by reason (client, timeout, new_producer, operator).
    pub txn_aborts: IntCounterVec,
    /// Per partition: high watermark minus last stable offset (records read_committed
    /// consumers cannot see yet).
    pub last_stable_offset_lag: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric family. The families are described by the constants
    /// below, grouped by area; docs/operations.md lists them for operators.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("strata".into()), None)?;
        // Process-wide (several brokers in one test process share them).
        registry.register(Box::new(crate::log::damage::FOUND.clone()))?;
        registry.register(Box::new(crate::log::damage::REPAIRS.clone()))?;
        let r = Registrar(&registry);
        Ok(Metrics {
            requests: r.counter(&REQUESTS)?,
            request_errors: r.counter(&REQUEST_ERRORS)?,
            request_latency: r.histogram(&REQUEST_LATENCY, REQUEST_LATENCY_BUCKETS)?,
            bytes_in: r.counter(&BYTES_IN)?,
            bytes_out: r.counter(&BYTES_OUT)?,
            records_in: r.counter(&RECORDS_IN)?,
            log_size: r.gauge_vec(&LOG_SIZE)?,
            log_segments: r.gauge_vec(&LOG_SEGMENTS)?,
            log_end_offset: r.gauge_vec(&LOG_END_OFFSET)?,
            log_start_offset: r.gauge_vec(&LOG_START_OFFSET)?,
            local_log_start_offset: r.gauge_vec(&LOCAL_LOG_START_OFFSET)?,
            remote_log_start_offset: r.gauge_vec(&REMOTE_LOG_START_OFFSET)?,
            remote_log_end_offset: r.gauge_vec(&REMOTE_LOG_END_OFFSET)?,
            remote_segments: r.gauge_vec(&REMOTE_SEGMENTS)?,
            remote_bytes: r.gauge_vec(&REMOTE_BYTES)?,
            upload_lag_bytes: r.gauge_vec(&UPLOAD_LAG_BYTES)?,
            upload_lag_seconds: r.gauge_vec(&UPLOAD_LAG_SECONDS)?,
            disk_used_percent: r.gauge(&DISK_USED_PERCENT)?,
            open_files: r.gauge(&OPEN_FILES)?,
            open_segment_files: r.gauge(&OPEN_SEGMENT_FILES)?,
            produce_refused_disk: r.counter(&PRODUCE_REFUSED_DISK)?,
            cost: std::sync::Arc::new(crate::cost::Ledger::new(
                &registry,
                std::sync::Arc::new(crate::sys::SystemClock),
            )?),
            cleaner_runs: r.counter(&CLEANER_RUNS)?,
            cleaner_bytes_removed: r.counter(&CLEANER_BYTES_REMOVED)?,
            cleaner_errors: r.counter(&CLEANER_ERRORS)?,
            groups: r.gauge_vec(&GROUPS)?,
            partitions: r.gauge_vec(&PARTITIONS)?,
            under_replicated: r.gauge_vec(&UNDER_REPLICATED)?,
            offline_partitions: r.gauge_vec(&OFFLINE_PARTITIONS)?,
            isr_changes: r.counter(&ISR_CHANGES)?,
            leader_elections: r.counter(&LEADER_ELECTIONS)?,
            replication_throttled_bytes: r.counter(&REPLICATION_THROTTLED_BYTES)?,
            replication_throttled_ms: r.counter(&REPLICATION_THROTTLED_MS)?,
            task_restarts: r.counter(&TASK_RESTARTS)?,
            connections: r.gauge(&CONNECTIONS)?,
            connections_rejected: r.counter(&CONNECTIONS_REJECTED)?,
            connections_closed: r.counter(&CONNECTIONS_CLOSED)?,
            queued_request_bytes: r.gauge(&QUEUED_REQUEST_BYTES)?,
            log_lines_suppressed: r.counter(&LOG_LINES_SUPPRESSED)?,
            authentications: r.counter(&AUTHENTICATIONS)?,
            authorization_denials: r.counter(&AUTHORIZATION_DENIALS)?,
            throttle_time_ms: r.counter(&THROTTLE_MS)?,
            txn_open: r.gauge(&TXN_OPEN)?,
            txn_oldest_open_ms: r.gauge(&TXN_OLDEST_OPEN_MS)?,
            txn_aborts: r.counter(&TXN_ABORTS)?,
            last_stable_offset_lag: r.gauge_vec(&LAST_STABLE_OFFSET_LAG)?,
            tiering_registry: Registry::new(),
            registry,
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
                &self.last_stable_offset_lag,
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

/// One metric family: its name (the registry adds the `strata_` prefix), its help text
/// and its labels.
struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

impl Family {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Family { name, help, labels }
    }
}

/// Creates families in one registry.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn counter(&self, family: &Family) -> Result<IntCounterVec, prometheus::Error> {
        let counter = IntCounterVec::new(Opts::new(family.name, family.help), family.labels)?;
        self.0.register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    fn gauge_vec(&self, family: &Family) -> Result<IntGaugeVec, prometheus::Error> {
        let gauge = IntGaugeVec::new(Opts::new(family.name, family.help), family.labels)?;
        self.0.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    /// A gauge without labels (`family.labels` is empty).
    fn gauge(&self, family: &Family) -> Result<IntGauge, prometheus::Error> {
        debug_assert!(family.labels.is_empty(), "{} has labels", family.name);
        let gauge = IntGauge::new(family.name, family.help)?;
        self.0.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    fn histogram(
        &self,
        family: &Family,
        buckets: &[f64],
    ) -> Result<HistogramVec, prometheus::Error> {
        let histogram = HistogramVec::new(
            HistogramOpts::new(family.name, family.help).buckets(buckets.to_vec()),
            family.labels,
        )?;
        self.0.register(Box::new(histogram.clone()))?;
        Ok(histogram)
    }
}

/// The labels of per-partition series.
const PARTITION: &[&str] = &["topic", "partition"];

// Requests and traffic.
const REQUESTS: Family = Family::new("requests_total", "Kafka requests handled, by API", &["api"]);
const REQUEST_ERRORS: Family = Family::new(
    "request_errors_total",
    "Kafka requests or partitions answered with an error, by API and error",
    &["api", "error"],
);
const REQUEST_LATENCY: Family = Family::new(
    "request_duration_seconds",
    "Time from a request's arrival to its response, by API",
    &["api"],
);
const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const BYTES_IN: Family = Family::new(
    "bytes_in_total",
    "Record batch bytes appended, by topic",
    &["topic"],
);
const BYTES_OUT: Family = Family::new(
    "bytes_out_total",
    "Record batch bytes returned by Fetch, by topic",
    &["topic"],
);
const RECORDS_IN: Family =
    Family::new("records_in_total", "Records appended, by topic", &["topic"]);

// Local logs, per partition.
const LOG_SIZE: Family = Family::new("log_size_bytes", "Bytes in local segments", PARTITION);
const LOG_SEGMENTS: Family = Family::new("log_segments", "Local segments", PARTITION);
const LOG_END_OFFSET: Family = Family::new("log_end_offset", "Log end offset", PARTITION);
const LOG_START_OFFSET: Family = Family::new("log_start_offset", "Log start offset", PARTITION);
const LOCAL_LOG_START_OFFSET: Family = Family::new(
    "local_log_start_offset",
    "First offset held on local disk (tiered topics keep older ones remotely)",
    PARTITION,
);

// The remote tier, per partition.
const REMOTE_LOG_START_OFFSET: Family = Family::new(
    "remote_log_start_offset",
    "First offset the remote tier holds (records below were deleted by retention)",
    PARTITION,
);
const REMOTE_LOG_END_OFFSET: Family = Family::new(
    "remote_log_end_offset",
    "One past the last offset uploaded and committed to the manifest",
    PARTITION,
);
const REMOTE_SEGMENTS: Family = Family::new(
    "remote_segments",
    "Live segments in the remote tier",
    PARTITION,
);
const REMOTE_BYTES: Family = Family::new(
    "remote_bytes",
    "Record bytes of live segments in the remote tier",
    PARTITION,
);
const UPLOAD_LAG_BYTES: Family = Family::new(
    "remote_upload_lag_bytes",
    "Bytes of sealed segments not yet uploaded",
    PARTITION,
);
const UPLOAD_LAG_SECONDS: Family = Family::new(
    "remote_upload_lag_seconds",
    "Age of the oldest sealed segment not yet uploaded (0 when none waits)",
    PARTITION,
);

// Disk and file descriptors.
const DISK_USED_PERCENT: Family = Family::new(
    "disk_used_percent",
    "Used space on the data directory's file system",
    &[],
);
const OPEN_FILES: Family = Family::new(
    "open_files",
    "File descriptors the broker process holds (sockets included)",
    &[],
);
const OPEN_SEGMENT_FILES: Family = Family::new(
    "open_segment_files",
    "Sealed-segment files open in the cache bounded by log_max_open_segment_files",
    &[],
);
const PRODUCE_REFUSED_DISK: Family = Family::new(
    "produce_refused_disk_full_total",
    "Produce requests refused because the data disk passed disk_high_watermark_percent",
    &["topic"],
);

// Compaction.
const CLEANER_RUNS: Family = Family::new(
    "log_cleaner_runs_total",
    "Compaction passes that cleaned something, by topic",
    &["topic"],
);
const CLEANER_BYTES_REMOVED: Family = Family::new(
    "log_cleaner_bytes_removed_total",
    "Bytes compaction removed from local segments, by topic",
    &["topic"],
);
const CLEANER_ERRORS: Family = Family::new(
    "log_cleaner_errors_total",
    "Compaction passes that failed, by topic",
    &["topic"],
);

// Groups, replication and leadership.
const GROUPS: Family = Family::new("consumer_groups", "Consumer groups, by state", &["state"]);
const PARTITIONS: Family = Family::new(
    "partitions",
    "Partitions by this broker's role in them (leader, follower, none)",
    &["role"],
);
const UNDER_REPLICATED: Family = Family::new(
    "under_replicated_partitions",
    "Partitions led here whose ISR is below their replica count (kind=replicas) or below min.insync.replicas (kind=min_isr)",
    &["kind"],
);
const OFFLINE_PARTITIONS: Family = Family::new(
    "offline_partitions",
    "Partitions without a live in-sync leader, as the controller sees them (0 on other brokers)",
    &[],
);
const ISR_CHANGES: Family = Family::new(
    "isr_changes_total",
    "ISR changes this broker stored as a leader, by change (expand, shrink)",
    &["change"],
);
const LEADER_ELECTIONS: Family = Family::new(
    "leader_elections_total",
    "Leader changes this broker made as the controller, by cause (failover, drain, preferred)",
    &["cause"],
);
const REPLICATION_THROTTLED_BYTES: Family = Family::new(
    "replication_throttled_bytes_total",
    "Bytes sent (side=leader) or fetched (side=follower) for replicas a reassignment is adding, while a replication throttle is set",
    &["side"],
);
const REPLICATION_THROTTLED_MS: Family = Family::new(
    "replication_throttled_time_ms_total",
    "Milliseconds the replication throttle held back the catch-up of replicas a reassignment is adding, by side (leader, follower)",
    &["side"],
);

// Background loops.
const TASK_RESTARTS: Family = Family::new(
    "task_restarts_total",
    "Background loops restarted after a panic or an error, by task (see /readyz)",
    &["task"],
);

// Connections.
const CONNECTIONS: Family = Family::new("connections", "Open client connections", &[]);
const CONNECTIONS_REJECTED: Family = Family::new(
    "connections_rejected_total",
    "Connections accepted and closed at once because a limit was reached, by limit (max_connections, max_connections_per_ip)",
    &["reason"],
);
const CONNECTIONS_CLOSED: Family = Family::new(
    "connections_closed_total",
    "Connections the broker closed, by reason (idle, request_read_timeout, write_timeout, tls_handshake_failed, tls_handshake_timeout, tls_principal_refused, authentication_failed, unauthenticated_request, illegal_sasl_state, session_expired, reauthentication_changed_principal)",
    &["reason"],
);
// Security. Principals are label values: they are the users an operator created, never a
// secret.
const AUTHENTICATIONS: Family = Family::new(
    "authentications_total",
    "SASL authentications, by listener, mechanism and result (ok, failed)",
    &["listener", "mechanism", "result"],
);
const AUTHORIZATION_DENIALS: Family = Family::new(
    "authorization_denials_total",
    "Requests, or topics and groups within requests, the ACL authorizer denied, by principal and API",
    &["principal", "api"],
);
const THROTTLE_MS: Family = Family::new(
    "throttle_time_ms_total",
    "Throttle time given to clients over a quota, in milliseconds, by principal and quota (produce, fetch, request)",
    &["principal", "quota"],
);
// Transactions.
const TXN_OPEN: Family = Family::new(
    "transactions_open",
    "Open transactions this broker coordinates",
    &[],
);
const TXN_OLDEST_OPEN_MS: Family = Family::new(
    "transactions_oldest_open_ms",
    "Age of the oldest open transaction this broker coordinates, in milliseconds (0 if none)",
    &[],
);
const TXN_ABORTS: Family = Family::new(
    "transaction_aborts_total",
    "Transactions this broker's coordinator aborted, by reason (client, timeout, new_producer, operator)",
    &["reason"],
);
const LAST_STABLE_OFFSET_LAG: Family = Family::new(
    "last_stable_offset_lag",
    "High watermark minus last stable offset, per partition this broker leads: records an open transaction holds back from read_committed consumers",
    &["topic", "partition"],
);
const QUEUED_REQUEST_BYTES: Family = Family::new(
    "queued_request_bytes",
    "Bytes of requests being read or handled and of responses not yet written (bounded by queued_max_request_bytes)",
    &[],
);
const LOG_LINES_SUPPRESSED: Family = Family::new(
    "log_lines_suppressed_total",
    "Log lines provoked by clients that rate limiting dropped, by event",
    &["event"],
);

/// What the HTTP endpoints look at.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once logs are recovered and the Kafka listener accepts; cleared at shutdown.
    pub ready: AtomicBool,
    /// The background loops; one waiting to be restarted makes the broker not ready.
    pub tasks: Arc<Supervisor>,
    /// The broker, once it has joined the cluster (its first metadata round done):
    /// answers `/safe-to-stop` and `/readyz/in-sync`.
    pub roll: std::sync::OnceLock<Arc<dyn RollGate>>,
    /// Set the first time `/readyz/in-sync` found the broker back in every ISR it can
    /// rejoin, and never cleared: a follower that lags later does not leave the client
    /// Service or count against the PodDisruptionBudget.
    pub rejoined: AtomicBool,
}

/// What a rolling restart asks a broker (`broker/roll.rs`): each answer is a list of
/// sentences, one per partition that holds the roll back; empty means go ahead.
pub trait RollGate: Send + Sync {
    /// Partitions that would fall below min.insync.replicas if this broker stopped now.
    fn stop_blockers(&self) -> Vec<String>;
    /// Partitions whose ISR this broker, started again, has not rejoined yet.
    fn rejoin_pending(&self) -> Vec<String>;
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

/// Why the broker is not ready, one line per reason; `None` when it is.
fn not_ready(health: &Health) -> Option<String> {
    let unhealthy = health.tasks.unhealthy();
    if health.ready.load(Ordering::Relaxed) && unhealthy.is_empty() {
        return None;
    }
    let mut body = "not ready\n".to_string();
    for task in unhealthy {
        body.push_str(&format!("{task}\n"));
    }
    Some(body)
}

/// 503 until start-up is done and while any background loop waits to be restarted
/// (one line per such task, so an operator sees which).
async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match not_ready(&health) {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(body) => (StatusCode::SERVICE_UNAVAILABLE, body),
    }
}

/// `/readyz`, and until the broker has once been back in every ISR it can rejoin, 503
/// naming the partitions it is catching up on. The chart's readiness probe: a rolling
/// restart moves to the next broker only when this one serves every replica again.
async fn readyz_in_sync(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if let Some(body) = not_ready(&health) {
        return (StatusCode::SERVICE_UNAVAILABLE, body);
    }
    if health.rejoined.load(Ordering::Relaxed) {
        return (StatusCode::OK, "ready, in sync\n".to_string());
    }
    let pending = match health.roll.get() {
        Some(broker) => broker.rejoin_pending(),
        None => vec!["the broker has not joined the cluster yet".to_string()],
    };
    if pending.is_empty() {
        health.rejoined.store(true, Ordering::Relaxed);
        return (StatusCode::OK, "ready, in sync\n".to_string());
    }
    let mut body = "not in sync yet\n".to_string();
    for line in pending {
        body.push_str(&format!("{line}\n"));
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// 200 when stopping this broker leaves every partition it is in sync for at or above
/// min.insync.replicas; else 503 naming those that would fall below (the chart's preStop
/// hook waits for 200).
async fn safe_to_stop(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let Some(broker) = health.roll.get() else {
        // Not joined the cluster yet: it serves no replica (replication and Kafka
        // listeners start after the join) and has stepped down, or is about to, from
        // any leadership its previous incarnation held.
        return (
            StatusCode::OK,
            "safe to stop: not joined the cluster yet\n".to_string(),
        );
    };
    let blockers = broker.stop_blockers();
    if blockers.is_empty() {
        return (StatusCode::OK, "safe to stop\n".to_string());
    }
    let mut text = "not safe to stop\n".to_string();
    for line in blockers {
        text.push_str(&format!("{line}\n"));
    }
    (StatusCode::SERVICE_UNAVAILABLE, text)
}

/// Serves /metrics, /healthz, /readyz, /readyz/in-sync and /safe-to-stop until `cancel`
/// fires.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/readyz/in-sync", get(readyz_in_sync))
        .route("/safe-to-stop", get(safe_to_stop))
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}
