//! What every mode shares: client configuration, topic creation, the timestamp that
//! travels in each payload, and latency summaries.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use serde_json::{Value, json};

/// Bytes in a MiB: every "MiB/s" figure and `--rate` use 2^20 bytes.
pub const MIB: f64 = 1024.0 * 1024.0;

/// Bytes at the start of each payload that carry the send time.
pub const STAMP_LEN: usize = 8;

/// Options every client gets.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Kafka bootstrap address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Extra librdkafka property for every client, KEY=VALUE; may repeat.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Label for this run in the JSON line and the results table.
    #[arg(long, default_value = "")]
    pub name: String,
}

impl ClientArgs {
    /// A librdkafka configuration with the bootstrap address, then `overrides`, then -X.
    pub fn config(&self, overrides: &[(&str, String)]) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        // `localhost` may resolve to ::1 first; the broker listens on IPv4 loopback.
        config.set("broker.address.family", "v4");
        for (key, value) in overrides {
            config.set(*key, value);
        }
        // Without a `log` logger the crate would ask librdkafka for errors only; warnings
        // (disconnects, timeouts) matter here, and debug lines when -X debug=... asks.
        config.set_log_level(RDKafkaLogLevel::Warning);
        for pair in &self.extra {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("read -X {pair}: expected KEY=VALUE"))?;
            config.set(key, value);
            if key == "debug" {
                config.set_log_level(RDKafkaLogLevel::Debug);
            }
        }
        Ok(config)
    }
}

/// Nanoseconds since a process-wide monotonic origin. Producer and consumer of an
/// end-to-end run live in one process, so their stamps compare directly.
pub fn now_nanos() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A payload template of `size` bytes: pseudo-random lower-case letters, so compression,
/// when asked for, has less to gain than on zeros (about 40%, not 99%).
pub fn payload_template(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect()
}

pub fn stamp(payload: &mut [u8], nanos: u64) {
    payload[..STAMP_LEN].copy_from_slice(&nanos.to_le_bytes());
}

pub fn read_stamp(payload: Option<&[u8]>) -> Option<u64> {
    let bytes: [u8; STAMP_LEN] = payload?.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Latencies in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

pub fn record_latency(histogram: &mut Histogram<u64>, nanos: u64) {
    histogram.saturating_record((nanos / 1_000).max(1));
}

/// p50/p99/p999/max in milliseconds, or null when nothing was recorded.
pub fn latency_json(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return Value::Null;
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    json!({
        "count": histogram.len(),
        "p50": ms(histogram.value_at_quantile(0.50)),
        "p99": ms(histogram.value_at_quantile(0.99)),
        "p999": ms(histogram.value_at_quantile(0.999)),
        "max": ms(histogram.max()),
    })
}

pub fn latency_line(label: &str, histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return format!("{label:>14}: no samples");
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    format!(
        "{label:>14}: p50 {:.3} ms  p99 {:.3} ms  p999 {:.3} ms  max {:.3} ms  ({} samples)",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
        histogram.len()
    )
}

/// A topic name no earlier run used.
pub fn fresh_topic(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}-{millis}-{}", std::process::id())
}

/// Creates `topic` with `partitions` partitions (replication factor 1) and the topic
/// `configs` given, then waits until the broker's metadata shows them all.
pub fn create_topic(
    client: &ClientArgs,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client
        .config(&[])?
        .create()
        .context("create the admin client")?;
    let mut new_topic = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a runtime for the admin client")?;
    let results = runtime
        .block_on(admin.create_topics([&new_topic], &options))
        .with_context(|| format!("create topic {topic}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("create topic {name}: the broker answered {code}");
        }
    }
    wait_for_partitions(client, topic, partitions)
}

/// Deletes `topics`, so a long series of runs does not fill the disk and the page cache.
pub fn delete_topics(client: &ClientArgs, topics: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client
        .config(&[])?
        .create()
        .context("create the admin client")?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a runtime for the admin client")?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = runtime
        .block_on(admin.delete_topics(&names, &options))
        .with_context(|| format!("delete topics {}", names.join(", ")))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("delete topic {name}: the broker answered {code}");
        }
    }
    Ok(())
}

/// Waits until every bootstrap broker reports the topic's partitions: in a cluster the
/// other brokers learn of a new topic from the metadata store a moment later.
fn wait_for_partitions(client: &ClientArgs, topic: &str, partitions: i32) -> anyhow::Result<()> {
    for broker in client.bootstrap.split(',') {
        wait_for_partitions_at(client, broker, topic, partitions)?;
    }
    Ok(())
}

fn wait_for_partitions_at(
    client: &ClientArgs,
    broker: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client
        .config(&[])?
        .set("bootstrap.servers", broker)
        .create()
        .context("create a metadata client")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = topic_partitions(&consumer, topic).unwrap_or_default().len();
        if seen == partitions as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "topic {topic}: metadata shows {seen} partitions 15 s after creation, expected {partitions}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partition ids of `topic`, from a Metadata request.
pub fn topic_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("fetch metadata for topic {topic}"))?;
    let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} is missing from the Metadata response");
    };
    if let Some(error) = entry.error() {
        bail!("topic {topic}: Metadata answered error {error:?}");
    }
    let mut ids: Vec<i32> = entry.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
