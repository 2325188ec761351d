//! `strata-bench`: a load generator for Strata (or any Kafka broker) on librdkafka.
//!
//! Modes: `produce` (throughput and acknowledgement latency), `consume` (read what is
//! there, from the beginning, without a consumer group), `e2e` (steady-rate end-to-end
//! latency), `s3-get` (raw ranged-GET throughput of an S3 endpoint, for comparison with
//! replays from tiered storage), `floor-server` (a Kafka responder that stores nothing:
//! the latency floor) and `table` (Markdown from result lines). Each run prints
//! a human summary and, last, one JSON line for scripts. Method and results:
//! docs/benchmarks.md.

mod common;
mod consume;
mod e2e;
mod floor;
mod produce;
mod report;
mod s3get;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};

use crate::common::{ClientArgs, MIB};
use crate::produce::{Limits, ProducerArgs};

#[derive(Parser)]
#[command(
    name = "strata-bench",
    version,
    about = "Kafka load generator for Strata (librdkafka)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write records as fast as the broker takes them, or at --rate; report throughput
    /// and acknowledgement latency.
    Produce(ProduceCommand),
    /// Read records from the start of every partition of a topic (assign, no group);
    /// report throughput and check offsets for gaps and duplicates.
    Consume(ConsumeCommand),
    /// Produce at a steady rate while consuming; report end-to-end latency.
    E2e(E2eCommand),
    /// GET objects from S3 in ranges, N requests in flight (no broker involved); report
    /// throughput and per-GET latency.
    S3Get(s3get::S3GetArgs),
    /// Answer ApiVersions, Metadata and Produce from memory, storing nothing, until
    /// killed: the floor a broker's produce latency is compared with.
    FloorServer(floor::FloorArgs),
    /// Delete topics (between runs, to keep disk and page cache use flat).
    DeleteTopics {
        #[command(flatten)]
        client: ClientArgs,
        /// Topics to delete.
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Print result JSON lines (from the other modes) as a Markdown table: one row per
    /// scenario name, with the median of repeated runs.
    Table {
        /// One row per run instead of one per scenario.
        #[arg(long)]
        runs: bool,
        /// Files holding result lines; other lines are ignored.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ProduceCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    /// Records to send [default: 1000000 unless --duration is given].
    #[arg(long)]
    records: Option<u64>,
    /// Seconds to send for; with --records, whichever comes first.
    #[arg(long)]
    duration: Option<f64>,
    /// Target payload rate in MiB/s (2^20 bytes); default: as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Leading seconds left out of the latency histogram.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Produce to librdkafka's in-memory mock broker (started in this process, one
    /// broker; the topic is created there) instead of --bootstrap.
    #[arg(long)]
    mock: bool,
}

#[derive(clap::Args)]
struct ConsumeCommand {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Records to read [default: everything below the high watermarks at start].
    #[arg(long)]
    records: Option<u64>,
    /// Seconds without a record before giving up.
    #[arg(long, default_value_t = 30.0)]
    idle_timeout: f64,
    /// A compacted topic: read until every partition reports its end (offsets have gaps,
    /// so no record count is known), and do not count gaps as failures.
    #[arg(long)]
    compacted: bool,
}

#[derive(clap::Args)]
struct E2eCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    /// Payload rate in MiB/s (2^20 bytes).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds to produce for.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Leading seconds left out of the latency histograms.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Write the Unix time to this file when the warm-up ends (measuring starts).
    #[arg(long)]
    window_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mode, name) = match &cli.command {
        Command::Produce(c) => ("produce", c.client.name.clone()),
        Command::Consume(c) => ("consume", c.client.name.clone()),
        Command::E2e(c) => ("e2e", c.client.name.clone()),
        Command::S3Get(c) => ("s3-get", c.name.clone()),
        Command::FloorServer(_) => ("floor-server", String::new()),
        Command::DeleteTopics { .. } => ("delete-topics", String::new()),
        Command::Table { .. } => ("table", String::new()),
    };
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("strata-bench {mode}: {error:#}");
            if matches!(mode, "produce" | "consume" | "e2e" | "s3-get") {
                println!(
                    "{}",
                    json!({ "mode": mode, "name": name, "ok": false, "error": format!("{error:#}") })
                );
            }
            ExitCode::from(2)
        }
    }
}

/// Runs one mode; Ok(false) means it ran but saw failures (already reported).
fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Produce(c) => produce(c),
        Command::Consume(c) => consume(c),
        Command::E2e(c) => e2e(c),
        Command::S3Get(c) => s3_get(&c),
        Command::FloorServer(c) => floor::run(&c).map(|()| true),
        Command::DeleteTopics { client, topics } => {
            common::delete_topics(&client, &topics)?;
            Ok(true)
        }
        Command::Table { runs, files } => {
            print!("{}", report::table(&files, runs)?);
            Ok(true)
        }
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} {value}: not a number of seconds"))
}

fn rate_bytes(rate: f64) -> anyhow::Result<f64> {
    if !(rate > 0.0 && rate.is_finite()) {
        bail!("--rate {rate}: must be a positive number of MiB/s");
    }
    Ok(rate * MIB)
}

fn produce(mut c: ProduceCommand) -> anyhow::Result<bool> {
    c.producer.validate()?;
    let duration = c.duration.map(|d| seconds("--duration", d)).transpose()?;
    let warmup = seconds("--warmup", c.warmup)?;
    let limits = Limits {
        records: c.records.or(if duration.is_none() {
            Some(1_000_000)
        } else {
            None
        }),
        duration,
        rate_bytes_per_sec: c.rate.map(rate_bytes).transpose()?,
        warmup,
    };
    // The mock cluster lives as long as this run; its broker runs on librdkafka threads
    // in this process.
    let mock = c
        .mock
        .then(|| MockCluster::new(1))
        .transpose()
        .context("start the mock cluster")?;
    let topic = match &mock {
        Some(mock) => {
            let topic = c
                .producer
                .topic
                .clone()
                .unwrap_or_else(|| common::fresh_topic("bench-produce"));
            mock.create_topic(&topic, c.producer.partitions, 1)
                .with_context(|| format!("create topic {topic} in the mock cluster"))?;
            c.client.bootstrap = mock.bootstrap_servers();
            topic
        }
        None => c.producer.prepare_topic(&c.client, "bench-produce")?,
    };
    println!(
        "produce: topic {topic}, {} partitions, {} B records, acks={}",
        c.producer.partitions, c.producer.record_size, c.producer.acks
    );
    let outcome = produce::run_producer(&c.client, &c.producer, &topic, &limits)?;
    println!("{}", outcome.summary());
    let mut result = json!({ "mode": "produce", "name": c.client.name, "topic": topic, "ok": outcome.ok(), "target_rate_mib_s": c.rate, "mock": c.mock, "warmup_s": c.warmup });
    merge(&mut result, c.producer.describe());
    merge(&mut result, outcome.json());
    println!("{result}");
    Ok(outcome.ok())
}

fn consume(c: ConsumeCommand) -> anyhow::Result<bool> {
    let idle_timeout = seconds("--idle-timeout", c.idle_timeout)?;
    println!("consume: topic {}", c.topic);
    let (outcome, report) =
        consume::consume_command(&c.client, &c.topic, c.records, idle_timeout, c.compacted)?;
    println!("{}", outcome.summary());
    let ok = outcome.ok();
    let mut result =
        json!({ "mode": "consume", "name": c.client.name, "topic": c.topic, "ok": ok });
    if let Some(average) = outcome.bytes.checked_div(outcome.records) {
        merge(&mut result, json!({ "record_size": average }));
    }
    merge(&mut result, report);
    println!("{result}");
    Ok(ok)
}

fn e2e(c: E2eCommand) -> anyhow::Result<bool> {
    c.producer.validate()?;
    let duration = seconds("--duration", c.duration)?;
    let warmup = seconds("--warmup", c.warmup)?;
    let topic = c.producer.prepare_topic(&c.client, "bench-e2e")?;
    println!(
        "e2e: topic {topic}, {} partitions, {} B records, acks={}, {} MiB/s for {} s ({} s warm-up)",
        c.producer.partitions,
        c.producer.record_size,
        c.producer.acks,
        c.rate,
        c.duration,
        c.warmup
    );
    let outcome = e2e::run(
        &c.client,
        &c.producer,
        &topic,
        rate_bytes(c.rate)?,
        duration,
        warmup,
        c.window_file.as_deref(),
    )?;
    let produced = &outcome.produced;
    let consumed = &outcome.consumed;
    println!("{}", produced.summary());
    println!("{}", consumed.summary());
    println!(
        "{}",
        common::latency_line("e2e latency", &consumed.e2e_latency)
    );
    let complete = consumed.records == produced.acked;
    if !complete {
        println!(
            "         FAILED: {} records acknowledged, {} consumed",
            produced.acked, consumed.records
        );
    }
    let ok = produced.ok() && consumed.ok() && complete;
    let mut result = json!({
        "mode": "e2e",
        "name": c.client.name,
        "topic": topic,
        "ok": ok,
        "target_rate_mib_s": c.rate,
        "duration_s": c.duration,
        "warmup_s": c.warmup,
        "produce": produced.json(),
        "consume": consumed.json(),
        "e2e_latency_ms": common::latency_json(&consumed.e2e_latency),
        "window_unix": [
            common::round3(outcome.window_unix.0),
            common::round3(outcome.window_unix.1),
        ],
    });
    if !complete {
        merge(
            &mut result,
            json!({ "error": format!("{} records acknowledged, {} consumed", produced.acked, consumed.records) }),
        );
    }
    merge(&mut result, c.producer.describe());
    println!("{result}");
    Ok(ok)
}

fn s3_get(args: &s3get::S3GetArgs) -> anyhow::Result<bool> {
    let outcome = s3get::run(args)?;
    println!("{}", outcome.summary());
    let mut result = json!({
        "mode": "s3-get",
        "name": args.name,
        "ok": true,
        "bucket": args.bucket,
        "prefix": args.prefix,
        "contains": args.contains,
        "range_bytes": args.range_bytes,
        "concurrency": args.concurrency,
    });
    merge(&mut result, outcome.json());
    println!("{result}");
    Ok(true)
}

/// Adds `extra`'s fields to `into` (both JSON objects).
fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}
