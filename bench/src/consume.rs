//! The consumer loop, shared by `consume` and `e2e`.
//!
//! No consumer group: the broker has no group coordinator yet. The consumer assign()s
//! every partition at an explicit offset and never commits. Each record's offset is
//! checked against the one before it on its partition, so lost or repeated records show
//! up as gaps and duplicates.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::common::{self, ClientArgs, MIB};
use crate::produce::log_client;

/// Consumer-side librdkafka errors are returned from poll(); only logs go here.
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_client(level, fac, message);
    }

    fn error(&self, _: KafkaError, _: &str) {}
}

impl ConsumerContext for QuietContext {}

/// When to stop reading.
pub struct ConsumeSpec<'a> {
    pub topic: &'a str,
    /// Stop after this many records. The end-to-end mode lowers it from u64::MAX once the
    /// producer knows how many were acknowledged.
    pub target: &'a AtomicU64,
    /// Give up after this long without a record.
    pub idle_timeout: Duration,
    /// Record end-to-end latency for stamps at or above this value (`common::now_nanos`);
    /// None: no latency, just throughput.
    pub latency_from_nanos: Option<&'a AtomicU64>,
    /// Set once every partition has reported end-of-partition, i.e. fetching is live.
    pub ready: Option<&'a AtomicBool>,
    /// A compacted topic: stop once every partition reported its end; gaps are expected.
    pub until_eof: bool,
}

pub struct ConsumeOutcome {
    pub partitions: usize,
    pub records: u64,
    pub bytes: u64,
    /// From assign() to the last record.
    pub elapsed: Duration,
    /// Records whose offset skipped ahead of the previous one on the partition + 1.
    pub gaps: u64,
    /// Records whose offset was at or below one already seen on the partition.
    pub duplicates: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub timed_out: bool,
    /// Reading a compacted topic: gaps are the cleaner's, not lost records.
    pub gaps_expected: bool,
    pub e2e_latency: Histogram<u64>,
}

impl ConsumeOutcome {
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / MIB / self.elapsed.as_secs_f64()
    }

    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    pub fn ok(&self) -> bool {
        (self.gaps == 0 || self.gaps_expected)
            && self.duplicates == 0
            && self.errors == 0
            && !self.timed_out
    }

    pub fn json(&self) -> Value {
        json!({
            "records": self.records,
            "bytes": self.bytes,
            "seconds": common::round3(self.elapsed.as_secs_f64()),
            "mib_per_s": common::round3(self.mib_per_sec()),
            "records_per_s": self.records_per_sec().round(),
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "first_error": self.first_error,
            "timed_out": self.timed_out,
        })
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "      consumed: {} records, {:.1} MiB in {:.2} s from {} partitions\n    throughput: {:.2} MiB/s, {:.0} records/s",
            self.records,
            self.bytes as f64 / MIB,
            self.elapsed.as_secs_f64(),
            self.partitions,
            self.mib_per_sec(),
            self.records_per_sec(),
        );
        if !self.ok() {
            text.push_str(&format!(
                "\n         FAILED: {} gaps, {} duplicates, {} errors (first: {}){}",
                self.gaps,
                self.duplicates,
                self.errors,
                self.first_error.as_deref().unwrap_or("none"),
                if self.timed_out {
                    ", stopped: no record within the idle timeout"
                } else {
                    ""
                },
            ));
        }
        text
    }
}

pub fn create_consumer(client: &ClientArgs) -> anyhow::Result<BaseConsumer<QuietContext>> {
    let config = client.config(&[
        // librdkafka's assign() needs a group.id, though without subscribe() it joins no
        // group; with auto commit off nothing is ever committed to it.
        ("group.id", "strata-bench".into()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("enable.partition.eof", "true".into()),
        ("auto.offset.reset", "earliest".into()),
        // librdkafka stops fetching a partition for fetch.queue.backoff.ms (1 s by default)
        // once its local queue passes queued.min.messages (100 000) or
        // queued.max.messages.kbytes (64 MiB). A consumer that drains 100 000 records in a
        // tenth of a second would then idle 90% of the time, measuring the client's
        // back-off instead of the broker: poll again after 10 ms instead.
        ("fetch.queue.backoff.ms", "10".into()),
    ])?;
    config
        .create_with_context(QuietContext)
        .context("create the consumer")
}

/// Reads `spec.topic` from `start_offsets` (partition → offset).
pub fn run_consumer(
    consumer: &BaseConsumer<QuietContext>,
    spec: &ConsumeSpec<'_>,
    start_offsets: &[(i32, i64)],
) -> anyhow::Result<ConsumeOutcome> {
    let mut assignment = TopicPartitionList::new();
    for &(partition, offset) in start_offsets {
        assignment
            .add_partition_offset(spec.topic, partition, Offset::Offset(offset))
            .with_context(|| format!("assign partition {partition} at offset {offset}"))?;
    }
    let mut next_offset: HashMap<i32, i64> = start_offsets.iter().copied().collect();
    let mut at_eof: BTreeSet<i32> = BTreeSet::new();
    let mut outcome = ConsumeOutcome {
        partitions: start_offsets.len(),
        records: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        gaps: 0,
        duplicates: 0,
        errors: 0,
        first_error: None,
        timed_out: false,
        gaps_expected: spec.until_eof,
        e2e_latency: common::new_histogram(),
    };
    let start = Instant::now();
    consumer.assign(&assignment).context("assign partitions")?;
    let mut last_progress = Instant::now();
    while outcome.records < spec.target.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let received = common::now_nanos();
                outcome.records += 1;
                outcome.bytes += message.payload_len() as u64;
                let partition = message.partition();
                let offset = message.offset();
                let expected = next_offset.entry(partition).or_insert(offset);
                if offset > *expected {
                    outcome.gaps += 1;
                } else if offset < *expected {
                    outcome.duplicates += 1;
                }
                *expected = (*expected).max(offset + 1);
                if let Some(from) = spec.latency_from_nanos
                    && let Some(sent) = common::read_stamp(message.payload())
                    && sent >= from.load(Ordering::Relaxed)
                {
                    common::record_latency(&mut outcome.e2e_latency, received.saturating_sub(sent));
                }
                last_progress = Instant::now();
                outcome.elapsed = start.elapsed();
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_eof.insert(partition);
                if spec.until_eof && at_eof.len() == start_offsets.len() {
                    break;
                }
                if let Some(ready) = spec.ready
                    && at_eof.len() == start_offsets.len()
                {
                    ready.store(true, Ordering::Release);
                }
            }
            Some(Err(error)) => {
                outcome.errors += 1;
                if outcome.first_error.is_none() {
                    eprintln!("strata-bench: consumer error: {error}");
                    outcome.first_error = Some(error.to_string());
                }
            }
            None => {}
        }
        if last_progress.elapsed() > spec.idle_timeout {
            outcome.timed_out = true;
            break;
        }
    }
    if outcome.records == 0 {
        outcome.elapsed = start.elapsed();
    }
    Ok(outcome)
}

/// `consume`: reads N records (default: all of them) from the start of every partition.
pub fn consume_command(
    client: &ClientArgs,
    topic: &str,
    records: Option<u64>,
    idle_timeout: Duration,
    compacted: bool,
) -> anyhow::Result<(ConsumeOutcome, Value)> {
    let consumer = create_consumer(client)?;
    let partitions = common::topic_partitions(&consumer, topic)?;
    let mut start_offsets = Vec::new();
    let mut available: u64 = 0;
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("list offsets of {topic}/{partition}"))?;
        start_offsets.push((partition, low));
        available += u64::try_from(high - low).unwrap_or(0);
    }
    let default_target = if compacted { u64::MAX } else { available };
    let target = AtomicU64::new(records.unwrap_or(default_target));
    let spec = ConsumeSpec {
        topic,
        target: &target,
        idle_timeout,
        latency_from_nanos: None,
        ready: None,
        until_eof: compacted,
    };
    let outcome = run_consumer(&consumer, &spec, &start_offsets)?;
    let mut report = outcome.json();
    if let Value::Object(fields) = &mut report {
        fields.insert("partitions".into(), json!(partitions.len()));
        fields.insert("expected".into(), json!(target.load(Ordering::Relaxed)));
        fields.insert("available".into(), json!(available));
    }
    Ok((outcome, report))
}
