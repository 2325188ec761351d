//! `s3-get`: raw ranged-GET throughput of an S3 endpoint, with no broker in the way.
//!
//! Lists the objects whose keys start with `--prefix`, contain `--contains` and end with
//! `--suffix` (the segment objects tiered storage uploaded), cuts them into `--range-bytes` ranges (the
//! broker's `remote_chunk_bytes`), and GETs the ranges with `--concurrency` requests in
//! flight, through the same `object_store` crate and S3 client the broker uses. The
//! ranges go in key order, each object front to back: what a sequential replay reads.
//! Reports MiB/s over all the bytes received and the latency of each GET.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};

use crate::common::{self, MIB};

#[derive(clap::Args, Debug, Clone)]
pub struct S3GetArgs {
    /// S3 endpoint URL (MinIO, moto); default: AWS_ENDPOINT_URL, else AWS.
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// Bucket to read.
    #[arg(long)]
    pub bucket: String,
    /// Region; default: AWS_REGION, else us-east-1.
    #[arg(long, default_value = "")]
    pub region: String,
    /// Path-style requests (ENDPOINT/BUCKET/KEY), as MinIO and moto want.
    #[arg(long)]
    pub path_style: bool,
    /// Allow a plain-HTTP endpoint.
    #[arg(long)]
    pub allow_http: bool,
    /// Read the objects whose keys start with this (a plain string prefix, e.g.
    /// `topics/my-topic.`); default: the whole bucket.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// ... contain this (e.g. `topics/my-topic.`, wherever the broker puts `topics/`) ...
    #[arg(long, default_value = "")]
    pub contains: String,
    /// ... and end with this.
    #[arg(long, default_value = ".segment")]
    pub suffix: String,
    /// Bytes per ranged GET.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub range_bytes: u64,
    /// GETs in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Stop after this many bytes [default: every byte of every object listed].
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// Keep going for this many seconds, starting over from the first range after the
    /// last one (as background load); no new GET starts after that.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Label for this run in the JSON line.
    #[arg(long, default_value = "")]
    pub name: String,
}

pub struct S3GetOutcome {
    pub objects: usize,
    pub object_bytes: u64,
    pub requests: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl S3GetOutcome {
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / MIB / self.elapsed.as_secs_f64()
    }

    pub fn json(&self) -> Value {
        json!({
            "objects": self.objects,
            "object_bytes": self.object_bytes,
            "requests": self.requests,
            "bytes": self.bytes,
            "seconds": common::round3(self.elapsed.as_secs_f64()),
            "mib_per_s": common::round3(self.mib_per_sec()),
            "requests_per_s": common::round3(self.requests as f64 / self.elapsed.as_secs_f64()),
            "get_latency_ms": common::latency_json(&self.latency),
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "      received: {:.1} MiB in {} ranged GETs over {} objects ({:.1} MiB) in {:.2} s\n    throughput: {:.2} MiB/s, {:.1} GETs/s\n{}",
            self.bytes as f64 / MIB,
            self.requests,
            self.objects,
            self.object_bytes as f64 / MIB,
            self.elapsed.as_secs_f64(),
            self.mib_per_sec(),
            self.requests as f64 / self.elapsed.as_secs_f64(),
            common::latency_line("GET latency", &self.latency),
        )
    }
}

fn open(args: &S3GetArgs) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&args.bucket);
    if !args.endpoint.is_empty() {
        builder = builder.with_endpoint(&args.endpoint);
    }
    if !args.region.is_empty() {
        builder = builder.with_region(&args.region);
    }
    if args.path_style {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    if args.allow_http {
        builder = builder.with_allow_http(true);
    }
    let store = builder
        .build()
        .with_context(|| format!("configure S3 bucket {}", args.bucket))?;
    Ok(Arc::new(store))
}

pub fn run(args: &S3GetArgs) -> anyhow::Result<S3GetOutcome> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.range_bytes == 0 {
        bail!("--range-bytes must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start a runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &S3GetArgs) -> anyhow::Result<S3GetOutcome> {
    let store = open(args)?;
    // object_store lists by path segments: list the prefix's directory, filter by string.
    let dir = args.prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
    let dir_path = ObjectPath::from(dir);
    let mut objects: Vec<(ObjectPath, u64)> = store
        .list((!dir.is_empty()).then_some(&dir_path))
        .try_filter_map(|meta| async move {
            let key = meta.location.to_string();
            Ok((key.starts_with(&args.prefix)
                && key.contains(&args.contains)
                && key.ends_with(&args.suffix))
            .then_some((meta.location, meta.size)))
        })
        .try_collect()
        .await
        .with_context(|| format!("list s3://{}/{dir}", args.bucket))?;
    objects.sort();
    if objects.is_empty() {
        bail!(
            "no object in s3://{} starts with {:?}, contains {:?} and ends with {:?}",
            args.bucket,
            args.prefix,
            args.contains,
            args.suffix
        );
    }
    let object_bytes = objects.iter().map(|(_, size)| size).sum();
    let mut ranges: Vec<(ObjectPath, Range<u64>)> = Vec::new();
    let mut planned: u64 = 0;
    'plan: for (path, size) in &objects {
        let mut start = 0;
        while start < *size {
            if args.max_bytes.is_some_and(|max| planned >= max) {
                break 'plan;
            }
            let end = (start + args.range_bytes).min(*size);
            ranges.push((path.clone(), start..end));
            planned += end - start;
            start = end;
        }
    }
    let ranges_len = ranges.len();
    println!(
        "s3-get: {} objects ({:.1} MiB) in s3://{}/{}*{}*{}; {} GETs of up to {} bytes, {} in flight",
        objects.len(),
        object_bytes as f64 / MIB,
        args.bucket,
        args.prefix,
        args.contains,
        args.suffix,
        ranges.len(),
        args.range_bytes,
        args.concurrency
    );
    let deadline = match args.duration {
        Some(seconds) => Some(
            Duration::try_from_secs_f64(seconds)
                .map_err(|_| anyhow::anyhow!("--duration {seconds}: not a number of seconds"))?,
        ),
        None => None,
    };
    let passes = if deadline.is_some() { usize::MAX } else { 1 };
    let started = Instant::now();
    let results: Vec<(u64, Duration)> = futures::stream::iter(ranges)
        .cycle()
        .take(ranges_len.saturating_mul(passes))
        .take_while(|_| std::future::ready(deadline.is_none_or(|d| started.elapsed() < d)))
        .map(|(path, range)| {
            let store = store.clone();
            async move {
                let sent = Instant::now();
                let bytes = store
                    .get_range(&path, range.clone())
                    .await
                    .with_context(|| format!("GET {path} bytes {range:?}"))?;
                if bytes.len() as u64 != range.end - range.start {
                    bail!(
                        "GET {path} bytes {range:?}: {} bytes came back",
                        bytes.len()
                    );
                }
                Ok::<_, anyhow::Error>((bytes.len() as u64, sent.elapsed()))
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect()
        .await?;
    let elapsed = started.elapsed();
    let mut latency = common::new_histogram();
    for (_, took) in &results {
        common::record_latency(
            &mut latency,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }
    Ok(S3GetOutcome {
        objects: objects.len(),
        object_bytes,
        requests: results.len() as u64,
        bytes: results.iter().map(|(n, _)| n).sum(),
        elapsed,
        latency,
    })
}
