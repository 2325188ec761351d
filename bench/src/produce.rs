//! The producer loop, shared by `produce` and `e2e`.
//!
//! Each payload starts with the send time (see `common::stamp`); the delivery report
//! reads it back, so the acknowledgement latency is "send() called" to "delivery report
//! handled", which includes time queued inside librdkafka. The reports are handled on
//! librdkafka's polling thread (`ThreadedProducer`) so a busy send loop does not delay them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use serde_json::{Value, json};

use crate::common::{self, ClientArgs, MIB, STAMP_LEN};

/// What shapes the produced records and batches.
#[derive(clap::Args, Debug, Clone)]
pub struct ProducerArgs {
    /// Topic to write; default: a fresh name, created before the run.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the topic created for the run.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Replication factor of the topic created for the run (a cluster's brokers).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
    /// How records are spread over partitions: `sticky` (librdkafka's default for keyless
    /// records: fill one partition's batch, then move on) or `round-robin` (record by
    /// record, like keyed traffic; costs the client about twice the CPU).
    #[arg(long, default_value = "sticky", value_parser = ["sticky", "round-robin"])]
    pub partitioner: String,
    /// Bytes of value per record (no key). At least 8: the send time rides in front.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// acks: all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// compression.type: none, gzip, snappy or lz4.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// linger.ms: how long librdkafka waits to fill a batch.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u32,
    /// batch.size: largest record batch in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: u32,
    /// Write to an existing --topic instead of creating it.
    #[arg(long)]
    pub no_create: bool,
    /// Topic config for the topic this run creates, KEY=VALUE (e.g.
    /// `segment.bytes=67108864`); may repeat.
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    pub topic_configs: Vec<String>,
    /// Give records keys, cycling through this many distinct ones (`key-00000000`, ...):
    /// every pass over the key space writes a new version of each key (for compacted
    /// topics). Default: no keys.
    #[arg(long)]
    pub keys: Option<u64>,
    /// Produce in transactions (a fresh transactional.id), committing every this many
    /// milliseconds; the commit waits for every record of the transaction. Default: no
    /// transactions.
    #[arg(long, value_name = "MS")]
    pub transaction_interval_ms: Option<u64>,
}

impl ProducerArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.record_size < STAMP_LEN {
            bail!(
                "--record-size {} is too small: the send time needs {STAMP_LEN} bytes",
                self.record_size
            );
        }
        if self.partitions < 1 {
            bail!("--partitions must be at least 1");
        }
        if self.no_create && self.topic.is_none() {
            bail!("--no-create needs --topic");
        }
        if self.no_create && !self.topic_configs.is_empty() {
            bail!("--topic-config applies to a topic this run creates, not with --no-create");
        }
        self.parsed_topic_configs()?;
        Ok(())
    }

    fn parsed_topic_configs(&self) -> anyhow::Result<Vec<(&str, &str)>> {
        self.topic_configs
            .iter()
            .map(|pair| {
                pair.split_once('=')
                    .with_context(|| format!("--topic-config {pair}: expected KEY=VALUE"))
            })
            .collect()
    }

    /// The topic for this run, created unless --no-create.
    pub fn prepare_topic(&self, client: &ClientArgs, prefix: &str) -> anyhow::Result<String> {
        let topic = self
            .topic
            .clone()
            .unwrap_or_else(|| common::fresh_topic(prefix));
        if !self.no_create {
            common::create_topic(
                client,
                &topic,
                self.partitions,
                self.replication_factor,
                &self.parsed_topic_configs()?,
            )?;
        }
        Ok(topic)
    }

    pub fn describe(&self) -> Value {
        json!({
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "partitioner": self.partitioner,
            "record_size": self.record_size,
            "acks": self.acks,
            "compression": self.compression,
            "linger_ms": self.linger_ms,
            "batch_size": self.batch_size,
            "topic_configs": self.topic_configs,
            "transaction_interval_ms": self.transaction_interval_ms,
        })
    }
}

/// When the send loop stops and how fast it goes.
pub struct Limits {
    pub records: Option<u64>,
    pub duration: Option<Duration>,
    /// Payload bytes per second; None sends as fast as librdkafka accepts.
    pub rate_bytes_per_sec: Option<f64>,
    /// Records sent before this much time has passed are left out of latency histograms.
    pub warmup: Duration,
}

#[derive(Default)]
struct Deliveries {
    acked: u64,
    failed: u64,
    first_error: Option<String>,
    ack_latency: Option<Histogram<u64>>,
}

/// Counts delivery reports and records acknowledgement latency.
struct BenchContext {
    deliveries: Mutex<Deliveries>,
    /// Stamps below this (nanos, `common::now_nanos`) are warm-up: counted, not timed.
    warmup_end_nanos: AtomicU64,
}

impl ClientContext for BenchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_client(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("strata-bench: producer client error: {error}: {reason}");
    }
}

impl ProducerContext for BenchContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let received = common::now_nanos();
        let Ok(mut deliveries) = self.deliveries.lock() else {
            return;
        };
        match result {
            Ok(message) => {
                deliveries.acked += 1;
                if let Some(sent) = common::read_stamp(message.payload())
                    && sent >= self.warmup_end_nanos.load(Ordering::Relaxed)
                    && let Some(histogram) = deliveries.ack_latency.as_mut()
                {
                    common::record_latency(histogram, received.saturating_sub(sent));
                }
            }
            Err((error, message)) => {
                deliveries.failed += 1;
                if deliveries.first_error.is_none() {
                    deliveries.first_error =
                        Some(format!("partition {}: {error}", message.partition()));
                }
            }
        }
    }
}

/// librdkafka's log lines go to stderr: warnings and errors are how a misbehaving broker
/// shows up (disconnects, request timeouts, protocol errors), and debug lines appear only
/// when asked for with -X debug=....
pub fn log_client(level: RDKafkaLogLevel, fac: &str, message: &str) {
    eprintln!("strata-bench: librdkafka {level:?} {fac}: {message}");
}

pub struct ProduceOutcome {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub record_size: usize,
    /// From the first send to the last delivery report.
    pub elapsed: Duration,
    /// From the first send to the last send() call.
    pub send_elapsed: Duration,
    /// How far behind its schedule the rate-limited loop fell at worst.
    pub max_schedule_lag: Duration,
    pub ack_latency: Histogram<u64>,
}

impl ProduceOutcome {
    pub fn bytes(&self) -> u64 {
        self.acked * self.record_size as u64
    }

    pub fn mib_per_sec(&self) -> f64 {
        self.bytes() as f64 / MIB / self.elapsed.as_secs_f64()
    }

    pub fn records_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64()
    }

    pub fn ok(&self) -> bool {
        self.failed == 0 && self.acked == self.sent
    }

    pub fn json(&self) -> Value {
        json!({
            "sent": self.sent,
            "records": self.acked,
            "failed": self.failed,
            "first_error": self.first_error,
            "bytes": self.bytes(),
            "seconds": common::round3(self.elapsed.as_secs_f64()),
            "send_seconds": common::round3(self.send_elapsed.as_secs_f64()),
            "mib_per_s": common::round3(self.mib_per_sec()),
            "records_per_s": self.records_per_sec().round(),
            "max_schedule_lag_ms": common::round3(self.max_schedule_lag.as_secs_f64() * 1000.0),
            "ack_latency_ms": common::latency_json(&self.ack_latency),
        })
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "      produced: {} records, {:.1} MiB in {:.2} s ({:.2} s sending)\n    throughput: {:.2} MiB/s, {:.0} records/s\n{}",
            self.acked,
            self.bytes() as f64 / MIB,
            self.elapsed.as_secs_f64(),
            self.send_elapsed.as_secs_f64(),
            self.mib_per_sec(),
            self.records_per_sec(),
            common::latency_line("ack latency", &self.ack_latency),
        );
        if self.max_schedule_lag > Duration::from_millis(50) {
            text.push_str(&format!(
                "\n       warning: the sender fell {:.0} ms behind its rate schedule",
                self.max_schedule_lag.as_secs_f64() * 1000.0
            ));
        }
        if !self.ok() {
            text.push_str(&format!(
                "\n         FAILED: {} sent, {} acknowledged, {} failed; first error: {}",
                self.sent,
                self.acked,
                self.failed,
                self.first_error
                    .as_deref()
                    .unwrap_or("none (reports missing)")
            ));
        }
        text
    }
}

/// Sends records to `topic` until `limits` say stop, then waits for every delivery report.
pub fn run_producer(
    client: &ClientArgs,
    args: &ProducerArgs,
    topic: &str,
    limits: &Limits,
) -> anyhow::Result<ProduceOutcome> {
    let mut settings = vec![
        ("acks", args.acks.clone()),
        ("compression.type", args.compression.clone()),
        ("linger.ms", args.linger_ms.to_string()),
        ("batch.size", args.batch_size.to_string()),
        // Kept off so results compare with the runs before InitProducerId existed
        // (`-X enable.idempotence=true` turns it on).
        ("enable.idempotence", "false".into()),
        ("message.timeout.ms", "120000".into()),
    ];
    if args.transaction_interval_ms.is_some() {
        settings.push(("transactional.id", common::fresh_topic("strata-bench-txn")));
        settings.push(("enable.idempotence", "true".into()));
        // librdkafka wants message.timeout.ms (120 s above) within it.
        settings.push(("transaction.timeout.ms", "120000".into()));
    }
    let config = client.config(&settings)?;
    let context = BenchContext {
        deliveries: Mutex::new(Deliveries {
            ack_latency: Some(common::new_histogram()),
            ..Default::default()
        }),
        warmup_end_nanos: AtomicU64::new(u64::MAX),
    };
    let producer: ThreadedProducer<BenchContext> = config
        .create_with_context(context)
        .context("create the producer")?;
    let transactions = args.transaction_interval_ms.map(Duration::from_millis);
    if transactions.is_some() {
        producer
            .init_transactions(Duration::from_secs(30))
            .context("init_transactions")?;
        producer.begin_transaction().context("begin_transaction")?;
    }
    let mut last_commit = Instant::now();
    let mut commits: u64 = 0;

    let mut payload = common::payload_template(args.record_size);
    let interval = limits
        .rate_bytes_per_sec
        .map(|rate| Duration::from_secs_f64(args.record_size as f64 / rate));
    let partitions = args.partitions as u64;
    let round_robin = args.partitioner == "round-robin";
    let start = Instant::now();
    let start_nanos = common::now_nanos();
    producer.context().warmup_end_nanos.store(
        start_nanos + u64::try_from(limits.warmup.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    let mut sent: u64 = 0;
    let mut max_schedule_lag = Duration::ZERO;
    loop {
        let now = Instant::now();
        if limits.records.is_some_and(|n| sent >= n)
            || limits.duration.is_some_and(|d| now - start >= d)
        {
            break;
        }
        if let Some(interval) = interval {
            let due = start + interval.mul_f64(sent as f64);
            if due > now {
                // Sleep rather than spin: the broker needs the other core.
                std::thread::sleep(due - now);
                continue;
            }
            max_schedule_lag = max_schedule_lag.max(now - due);
        }
        let partition = round_robin.then(|| i32::try_from(sent % partitions).unwrap_or(0));
        let key = args.keys.map(|n| format!("key-{:08}", sent % n.max(1)));
        loop {
            common::stamp(&mut payload, common::now_nanos());
            let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(&payload[..]);
            if let Some(key) = &key {
                record = record.key(key.as_str());
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    return Err(error).with_context(|| format!("send record {sent} to {topic}"));
                }
            }
        }
        sent += 1;
        if let Some(every) = transactions
            && last_commit.elapsed() >= every
        {
            producer
                .commit_transaction(Duration::from_secs(60))
                .context("commit_transaction")?;
            commits += 1;
            producer.begin_transaction().context("begin_transaction")?;
            last_commit = Instant::now();
        }
    }
    if transactions.is_some() {
        producer
            .commit_transaction(Duration::from_secs(60))
            .context("commit the last transaction")?;
        commits += 1;
    }
    if commits > 0 {
        eprintln!("strata-bench: {commits} transactions committed");
    }
    let send_elapsed = start.elapsed();
    if let Err(error) = producer.flush(Duration::from_secs(150)) {
        eprintln!(
            "strata-bench: flush did not finish within 150 s ({error}); {} records still in flight",
            producer.in_flight_count()
        );
    }
    let elapsed = start.elapsed();
    let mut deliveries = match producer.context().deliveries.lock() {
        Ok(mut guard) => std::mem::take(&mut *guard),
        Err(_) => bail!("the delivery report handler panicked"),
    };
    Ok(ProduceOutcome {
        sent,
        acked: deliveries.acked,
        failed: deliveries.failed,
        first_error: deliveries.first_error.take(),
        record_size: args.record_size,
        elapsed,
        send_elapsed,
        max_schedule_lag,
        ack_latency: deliveries
            .ack_latency
            .take()
            .unwrap_or_else(common::new_histogram),
    })
}
