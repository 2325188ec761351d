//! End-to-end latency: one producer at a steady rate, one consumer on every partition,
//! both in this process. Latency is "consumer poll() returned the record" minus "producer
//! called send()", both read from the same monotonic clock.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rdkafka::consumer::Consumer;

use crate::common::{self, ClientArgs};
use crate::consume::{self, ConsumeOutcome, ConsumeSpec};
use crate::produce::{self, Limits, ProduceOutcome, ProducerArgs};

pub struct E2eOutcome {
    pub produced: ProduceOutcome,
    pub consumed: ConsumeOutcome,
    /// The measured window (after the warm-up, until the producer stops sending), in
    /// seconds since the Unix epoch: for lining it up with other runs on the machine.
    pub window_unix: (f64, f64),
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs the producer for `duration` at `rate_bytes_per_sec` while a consumer reads the
/// topic from offset 0; the first `warmup` of records is left out of both histograms.
/// When the warm-up ends, the current Unix time is written to `window_file`, if given,
/// so that a script can start other load exactly when measuring starts.
pub fn run(
    client: &ClientArgs,
    args: &ProducerArgs,
    topic: &str,
    rate_bytes_per_sec: f64,
    duration: Duration,
    warmup: Duration,
    window_file: Option<&Path>,
) -> anyhow::Result<E2eOutcome> {
    let consumer = consume::create_consumer(client)?;
    let partitions = common::topic_partitions(&consumer, topic)?;
    let mut start_offsets = Vec::new();
    for &partition in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("list offsets of {topic}/{partition}"))?;
        start_offsets.push((partition, high));
    }
    let target = AtomicU64::new(u64::MAX);
    let latency_from = AtomicU64::new(u64::MAX);
    let ready = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let spec = ConsumeSpec {
                topic,
                target: &target,
                idle_timeout: Duration::from_secs(30),
                latency_from_nanos: Some(&latency_from),
                ready: Some(&ready),
                until_eof: false,
            };
            consume::run_consumer(&consumer, &spec, &start_offsets)
        });
        // Start producing once every partition's fetcher has reached the end, so the
        // consumer's connection set-up is not measured.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.load(Ordering::Acquire) && Instant::now() < deadline && !reader.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !ready.load(Ordering::Acquire) {
            eprintln!(
                "strata-bench: the consumer did not reach the end of every partition in 10 s; producing anyway"
            );
        }
        let warmup_nanos = u64::try_from(warmup.as_nanos()).unwrap_or(u64::MAX);
        let started = SystemTime::now();
        latency_from.store(
            common::now_nanos().saturating_add(warmup_nanos),
            Ordering::Relaxed,
        );
        let window_unix = (
            unix_seconds(started + warmup),
            unix_seconds(started + duration),
        );
        if let Some(path) = window_file {
            scope.spawn(move || {
                std::thread::sleep(warmup);
                let now = unix_seconds(SystemTime::now());
                if let Err(error) = std::fs::write(path, format!("{now:.3}\n")) {
                    eprintln!("strata-bench: cannot write {}: {error}", path.display());
                }
            });
        }
        let limits = Limits {
            records: None,
            duration: Some(duration),
            rate_bytes_per_sec: Some(rate_bytes_per_sec),
            warmup,
        };
        let produced = produce::run_producer(client, args, topic, &limits);
        // Whatever happened, tell the consumer how many records to wait for.
        let expected = produced.as_ref().map(|p| p.acked).unwrap_or(0);
        target.store(expected, Ordering::Release);
        let consumed = match reader.join() {
            Ok(result) => result?,
            Err(_) => bail!("the consumer thread panicked"),
        };
        Ok(E2eOutcome {
            produced: produced?,
            consumed,
            window_unix,
        })
    })
}
