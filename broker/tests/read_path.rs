//! The partition read path across the tiers, through the handlers: a tiered topic with
//! small segments is produced to, its sealed segments are uploaded by the real uploader
//! and removed from the local disk by local retention, and then Fetch (several versions)
//! and ListOffsets must answer from the remote tier what they answered from the local
//! log: the same offsets, timestamps and values, the same log start and high watermark,
//! and no gap or overlap where the remote tier ends and the local log begins. Every
//! scenario runs against both object stores (in memory and the local directory).

#[macro_use]
mod handler_support;

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, RequestKind, ResponseKind};
use strata_broker::broker::{Broker, SystemClock};
use strata_broker::partition::Partition;
use strata_broker::tier::TierHost;

use handler_support::{
    Bucket, Consumed, OFFSET_OUT_OF_RANGE, Store, batch_at, batches, broker_on, call, create_with,
    fetch_at, list_offsets, name, produce, wait_for,
};

on_every_store!(
    history_below_the_local_log_is_fetched_from_the_remote_tier,
    a_fetch_from_the_remote_tier_continues_at_the_local_log_without_a_gap,
    one_batch_at_a_time_through_both_tiers,
    list_offsets_answers_from_both_tiers,
    delete_records_moves_the_log_start_into_the_remote_tier,
    history_is_read_from_the_remote_tier_after_a_restart,
    max_timestamp_is_found_in_the_remote_tier,
);

const TOPIC: &str = "history";
const BATCHES: i64 = 30;
const RECORDS_PER_BATCH: i64 = 4;
const RECORDS: i64 = BATCHES * RECORDS_PER_BATCH;
/// Record `o` has timestamp `T0 + o * STEP_MS`: every record has its own timestamp, with
/// room between them for lookups that fall between two records.
const T0: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 10;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

fn value(offset: i64) -> String {
    // About 60 bytes a record, 300 a batch: three batches to a 1 KiB segment.
    format!("record-{offset:04}-{}", "x".repeat(44))
}

fn record(offset: i64) -> Consumed {
    Consumed {
        offset,
        timestamp: T0 + offset * STEP_MS,
        value: value(offset),
    }
}

/// Small segments, and background loops that do not keep a test waiting.
fn tune(config: &mut strata_broker::config::Config) {
    config.log_segment_bytes_min = 1024;
    config.remote_upload_interval_ms = 10;
}

/// A broker whose topic `history` has its older segments only in the remote tier.
struct Tiered {
    dir: tempfile::TempDir,
    store: Store,
    bucket: Bucket,
    broker: Arc<Broker>,
    uploader: tokio::task::JoinHandle<()>,
    /// Where the local log starts: everything below is read from the bucket.
    local_start: i64,
    /// Base offsets of the segments in the bucket, in order.
    remote_bases: Vec<i64>,
}

/// Record `o`'s timestamp in the standard data set.
fn timestamp_of(offset: i64) -> i64 {
    T0 + offset * STEP_MS
}

impl Tiered {
    async fn new(store: Store) -> Tiered {
        Tiered::with_timestamps(store, timestamp_of).await
    }

    /// The data set with record `o` at `timestamp(o)`.
    async fn with_timestamps(store: Store, timestamp: fn(i64) -> i64) -> Tiered {
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = store.bucket();
        let broker = broker_on(dir.path(), &bucket, Arc::new(SystemClock), tune).await;
        create_with(
            &broker,
            TOPIC,
            1,
            &[
                ("remote.storage.enable", "true"),
                ("segment.bytes", "1024"),
                ("index.interval.bytes", "512"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
                // Every uploaded segment leaves the disk at the next housekeeping pass.
                ("local.retention.bytes", "0"),
            ],
        )
        .await;
        for b in 0..BATCHES {
            let offsets: Vec<i64> = (b * RECORDS_PER_BATCH..(b + 1) * RECORDS_PER_BATCH).collect();
            let values: Vec<String> = offsets.iter().map(|&o| value(o)).collect();
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let timestamps: Vec<i64> = offsets.iter().map(|&o| timestamp(o)).collect();
            let produced = produce(&broker, TOPIC, 0, batch_at(&values, &timestamps)).await;
            assert_eq!(produced, (0, offsets[0]), "produce batch {b}");
        }
        let host: Arc<dyn TierHost> = broker.clone();
        let uploader = tokio::spawn(strata_broker::tier::run_uploader(host));
        let partition = partition(&broker);
        let remote_end = wait_for(
            "the uploader to upload every sealed segment",
            Duration::from_secs(30),
            || {
                let end = partition.remote_bounds()?.end;
                partition
                    .upload_candidates(usize::MAX)
                    .is_empty()
                    .then_some(end)
            },
        )
        .await;
        assert!(remote_end > 0, "nothing was uploaded");
        let (_, segments_before, _, _) = partition.stats();
        assert!(
            segments_before >= 4,
            "{segments_before} segments: segment.bytes did not roll the log"
        );
        broker.housekeeping(false).await;
        let local_start = partition.local_log_start_offset();
        let (_, segments, log_end, _) = partition.stats();
        assert_eq!(
            (local_start, segments, log_end),
            (remote_end, 1, RECORDS),
            "local retention keeps only the active segment, which starts at the remote end"
        );
        assert!(
            local_start < RECORDS - RECORDS_PER_BATCH,
            "the local log holds more than one batch"
        );
        let local_logs = std::fs::read_dir(partition.dir())
            .expect("list the partition directory")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .count();
        assert_eq!(local_logs, 1, "segment files left on the local disk");
        let mut tiered = Tiered {
            dir,
            store,
            bucket,
            broker,
            uploader,
            local_start,
            remote_bases: Vec::new(),
        };
        tiered.remote_bases = tiered.check_objects().await;
        tiered
    }

    /// The segments are objects in the chosen store, and only there. Returns their base
    /// offsets.
    async fn check_objects(&self) -> Vec<i64> {
        let tiering = self.broker.tiering.as_ref().expect("tiering");
        let partition = partition(&self.broker);
        let marks = partition.remote().expect("a remote log").marks();
        let mut bases: Vec<i64> = tiering
            .store
            .list("topics/")
            .await
            .expect("list the store")
            .iter()
            .filter_map(|o| o.key.strip_suffix(".segment"))
            .map(|k| {
                let file = k.rsplit('/').next().expect("a file name");
                file[..20].parse::<i64>().expect("a base offset")
            })
            .collect();
        bases.sort_unstable();
        assert_eq!(bases.first(), Some(&0), "{bases:?}");
        assert_eq!(bases.len() as u64, marks.live_segments, "{bases:?}");
        assert!(bases.windows(2).all(|w| w[0] < w[1]), "{bases:?}");
        assert!(bases.iter().all(|&b| b < self.local_start), "{bases:?}");
        let directory = self.broker.config.data_dir.join("objects");
        match self.store {
            Store::Memory => assert!(
                !directory.exists(),
                "the in-memory store wrote to {}",
                directory.display()
            ),
            Store::Directory => assert!(
                directory
                    .join(&self.broker.cluster_id)
                    .join("topics")
                    .is_dir(),
                "no objects under {}",
                directory.display()
            ),
        }
        bases
    }

    /// Stops the uploader the way shutdown does; it must end promptly.
    async fn stop(self) {
        stop_uploader(&self.broker, self.uploader).await;
    }

    /// Stops the broker and opens another on the same data directory and bucket, as a
    /// restarted process would (the data directory's lock makes the reopening fail if
    /// anything still holds the first broker).
    async fn restart(self) -> Tiered {
        let Tiered {
            dir,
            store,
            bucket,
            broker,
            uploader,
            local_start,
            remote_bases,
        } = self;
        stop_uploader(&broker, uploader).await;
        drop(broker);
        let broker = broker_on(dir.path(), &bucket, Arc::new(SystemClock), tune).await;
        let host: Arc<dyn TierHost> = broker.clone();
        let uploader = tokio::spawn(strata_broker::tier::run_uploader(host));
        Tiered {
            dir,
            store,
            bucket,
            broker,
            uploader,
            local_start,
            remote_bases,
        }
    }
}

async fn stop_uploader(broker: &Broker, uploader: tokio::task::JoinHandle<()>) {
    broker.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), uploader)
        .await
        .expect("the uploader stops at shutdown")
        .expect("the uploader task");
}

fn partition(broker: &Broker) -> Arc<Partition> {
    broker.topics.partition(TOPIC, 0).expect("the partition")
}

/// Fetches from `from` to the high watermark, each fetch continuing after the last record
/// the one before returned, as a consumer does. Returns the records at or after `from`
/// and the batches of each response.
async fn consume(
    broker: &Arc<Broker>,
    version: i16,
    from: i64,
    max_bytes: i32,
    log_start: i64,
) -> (Vec<Consumed>, Vec<Vec<Vec<Consumed>>>) {
    let mut offset = from;
    let mut records = Vec::new();
    let mut responses = Vec::new();
    while offset < RECORDS {
        assert!(
            responses.len() <= (RECORDS - from) as usize,
            "v{version}: no progress at offset {offset}"
        );
        let data = fetch_at(broker, version, TOPIC, 0, offset, max_bytes).await;
        assert_eq!(data.error_code, 0, "v{version} fetch at {offset}: {data:?}");
        assert_eq!(data.high_watermark, RECORDS, "v{version} at {offset}");
        // The log start offset is in the response from v5.
        let expected_start = if version >= 5 { log_start } else { -1 };
        assert_eq!(
            data.log_start_offset, expected_start,
            "v{version} at {offset}"
        );
        let got = batches(&data);
        let first_base = got.first().and_then(|b| b.first()).map(|r| r.offset);
        assert!(
            first_base.is_some_and(|base| base <= offset),
            "v{version} at {offset}: the first batch returned starts at {first_base:?}"
        );
        let new: Vec<Consumed> = got
            .iter()
            .flatten()
            .filter(|r| r.offset >= offset)
            .cloned()
            .collect();
        let last = new
            .last()
            .unwrap_or_else(|| panic!("v{version}: nothing at {offset}"));
        offset = last.offset + 1;
        records.extend(new);
        responses.push(got);
    }
    (records, responses)
}

async fn history_below_the_local_log_is_fetched_from_the_remote_tier(store: Store) {
    let tiered = Tiered::new(store).await;
    let broker = &tiered.broker;
    let expected: Vec<Consumed> = (0..RECORDS).map(record).collect();
    // v4 is the oldest Fetch served, v12 the last naming topics, v16 the newest (by id).
    for version in [4, 12, 16] {
        let (records, responses) = consume(broker, version, 0, 1 << 20, 0).await;
        assert_eq!(records, expected, "v{version}");
        // One segment per response, whole, as local reads do: each ends where a segment
        // (remote, or the local one) ends.
        let ends: Vec<i64> = responses
            .iter()
            .map(|r| r.last().and_then(|b| b.last()).map_or(-1, |r| r.offset + 1))
            .collect();
        let mut segment_ends: Vec<i64> = tiered.remote_bases[1..].to_vec();
        segment_ends.extend([tiered.local_start, RECORDS]);
        assert_eq!(ends, segment_ends, "v{version}: where each response ends");
        // Each whole batch in every response is contiguous in itself.
        for batch in responses.iter().flatten() {
            let offsets: Vec<i64> = batch.iter().map(|r| r.offset).collect();
            let first = offsets[0];
            assert_eq!(
                offsets,
                (first..first + offsets.len() as i64).collect::<Vec<_>>()
            );
        }
    }
    // From the middle of a remote batch: the batch comes whole, the records are the right
    // ones.
    let middle = RECORDS_PER_BATCH * 2 + 2;
    assert!(middle < tiered.local_start);
    let data = fetch_at(broker, 12, TOPIC, 0, middle, 1 << 20).await;
    assert_eq!(data.error_code, 0, "{data:?}");
    let got = batches(&data);
    assert_eq!(got[0][0].offset, RECORDS_PER_BATCH * 2, "whole batches");
    let after: Vec<Consumed> = got
        .into_iter()
        .flatten()
        .filter(|r| r.offset >= middle)
        .collect();
    assert_eq!(after[..2], [record(middle), record(middle + 1)]);
    tiered.stop().await;
}

async fn a_fetch_from_the_remote_tier_continues_at_the_local_log_without_a_gap(store: Store) {
    let tiered = Tiered::new(store).await;
    let broker = &tiered.broker;
    let boundary = tiered.local_start;
    // The last remote batch holds boundary - RECORDS_PER_BATCH .. boundary - 1.
    let below = boundary - 3;
    let remote = fetch_at(broker, 12, TOPIC, 0, below, 1 << 20).await;
    assert_eq!(remote.error_code, 0, "{remote:?}");
    let remote_records: Vec<Consumed> = batches(&remote).into_iter().flatten().collect();
    assert_eq!(
        remote_records.first().map(|r| r.offset),
        Some(boundary - RECORDS_PER_BATCH),
        "the batch holding {below}, whole"
    );
    assert_eq!(
        remote_records.last().map(|r| r.offset),
        Some(boundary - 1),
        "a remote read ends where the remote tier does"
    );
    // The last offset in the remote tier, alone.
    let last_remote = fetch_at(broker, 12, TOPIC, 0, boundary - 1, 1 << 20).await;
    assert_eq!(last_remote.error_code, 0, "{last_remote:?}");
    assert_eq!(
        batches(&last_remote),
        vec![
            ((boundary - RECORDS_PER_BATCH)..boundary)
                .map(record)
                .collect::<Vec<_>>()
        ],
        "the last remote batch, whole"
    );
    let local = fetch_at(broker, 12, TOPIC, 0, boundary, 1 << 20).await;
    assert_eq!(local.error_code, 0, "{local:?}");
    let local_records: Vec<Consumed> = batches(&local).into_iter().flatten().collect();
    assert_eq!(local_records.first().map(|r| r.offset), Some(boundary));
    assert_eq!(local_records.last().map(|r| r.offset), Some(RECORDS - 1));
    // A consumer crossing the boundary sees every offset once.
    let (records, _) = consume(broker, 12, below, 1 << 20, 0).await;
    assert_eq!(records, (below..RECORDS).map(record).collect::<Vec<_>>());
    tiered.stop().await;
}

async fn one_batch_at_a_time_through_both_tiers(store: Store) {
    let tiered = Tiered::new(store).await;
    // partition_max_bytes 1: each response is the one whole batch KIP-74 guarantees, from
    // the remote tier and the local log alike.
    let (records, responses) = consume(&tiered.broker, 12, 0, 1, 0).await;
    assert_eq!(records, (0..RECORDS).map(record).collect::<Vec<_>>());
    let bases: Vec<i64> = responses
        .iter()
        .map(|batches| {
            assert_eq!(batches.len(), 1, "one batch per response: {batches:?}");
            batches[0][0].offset
        })
        .collect();
    assert_eq!(
        bases,
        (0..BATCHES)
            .map(|b| b * RECORDS_PER_BATCH)
            .collect::<Vec<_>>()
    );
    tiered.stop().await;
}

async fn list_offsets_answers_from_both_tiers(store: Store) {
    let tiered = Tiered::new(store).await;
    let broker = &tiered.broker;
    let last = RECORDS - 1;
    for version in [1, 5, 9] {
        let query = |timestamp| list_offsets(broker, version, TOPIC, 0, timestamp);
        assert_eq!(query(EARLIEST).await, (0, 0, -1), "v{version} earliest");
        assert_eq!(query(LATEST).await, (0, RECORDS, -1), "v{version} latest");
        assert_eq!(
            query(T0 + RECORDS * STEP_MS).await,
            (0, -1, -1),
            "v{version}: a timestamp after every record"
        );
    }
    let query = |timestamp| list_offsets(broker, 9, TOPIC, 0, timestamp);
    assert_eq!(query(MAX_TIMESTAMP).await, (0, last, T0 + last * STEP_MS));
    assert_eq!(query(EARLIEST_LOCAL).await, (0, tiered.local_start, -1));
    assert_eq!(query(LATEST_TIERED).await, (0, tiered.local_start - 1, -1));
    assert_eq!(query(0).await, (0, 0, T0), "timestamp 0: the first record");
    // Every record by its own timestamp and by one just before it, in both tiers.
    for offset in 0..RECORDS {
        let timestamp = T0 + offset * STEP_MS;
        let tier = if offset < tiered.local_start {
            "remote"
        } else {
            "local"
        };
        assert_eq!(
            query(timestamp).await,
            (0, offset, timestamp),
            "{tier} record {offset} by its timestamp"
        );
        assert_eq!(
            query(timestamp - STEP_MS / 2).await,
            (0, offset, timestamp),
            "{tier} record {offset} by a timestamp just before it"
        );
    }
    tiered.stop().await;
}

async fn delete_records_moves_the_log_start_into_the_remote_tier(store: Store) {
    let tiered = Tiered::new(store).await;
    let broker = &tiered.broker;
    // Inside a remote batch, and not the first remote segment.
    let new_start = RECORDS_PER_BATCH * 7 + 2;
    assert!(new_start < tiered.local_start);
    let body = DeleteRecordsRequest::default()
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(new_start),
                ]),
        ])
        .with_timeout_ms(10_000);
    let ResponseKind::DeleteRecords(response) = call(
        broker,
        ApiKey::DeleteRecords,
        2,
        RequestKind::DeleteRecords(body),
    )
    .await
    else {
        panic!("not a DeleteRecords response");
    };
    let p = &response.topics[0].partitions[0];
    assert_eq!(
        (p.error_code, p.low_watermark),
        (0, new_start),
        "{response:?}"
    );

    assert_eq!(
        list_offsets(broker, 9, TOPIC, 0, EARLIEST).await,
        (0, new_start, -1)
    );
    assert_eq!(
        list_offsets(broker, 9, TOPIC, 0, T0).await,
        (0, new_start, T0 + new_start * STEP_MS),
        "by timestamp: the first record not deleted"
    );
    let below = fetch_at(broker, 12, TOPIC, 0, new_start - 1, 1 << 20).await;
    assert_eq!(below.error_code, OFFSET_OUT_OF_RANGE, "{below:?}");
    let (records, _) = consume(broker, 12, new_start, 1 << 20, new_start).await;
    assert_eq!(
        records,
        (new_start..RECORDS).map(record).collect::<Vec<_>>()
    );
    tiered.stop().await;
}

async fn history_is_read_from_the_remote_tier_after_a_restart(store: Store) {
    let tiered = Tiered::new(store).await.restart().await;
    let broker = &tiered.broker;
    let partition = partition(broker);
    assert_eq!(
        partition.local_log_start_offset(),
        tiered.local_start,
        "the local log after the restart"
    );
    let bounds = partition
        .remote_bounds()
        .expect("the manifest, loaded again");
    assert_eq!((bounds.start, bounds.end), (0, tiered.local_start));
    assert_eq!(tiered.check_objects().await, tiered.remote_bases);
    let (records, _) = consume(broker, 12, 0, 1 << 20, 0).await;
    assert_eq!(records, (0..RECORDS).map(record).collect::<Vec<_>>());
    let remote_record = tiered.local_start / 2;
    assert_eq!(
        list_offsets(broker, 9, TOPIC, 0, T0 + remote_record * STEP_MS).await,
        (0, remote_record, T0 + remote_record * STEP_MS)
    );
    assert_eq!(
        list_offsets(broker, 9, TOPIC, 0, EARLIEST).await,
        (0, 0, -1)
    );
    tiered.stop().await;
}

/// The largest timestamp belongs to a record only the bucket holds: MAX_TIMESTAMP answers
/// with it, not with the local log's largest.
async fn max_timestamp_is_found_in_the_remote_tier(store: Store) {
    const LATE: i64 = T0 + 10 * RECORDS * STEP_MS;
    fn late_fifth(offset: i64) -> i64 {
        if offset == 5 {
            LATE
        } else {
            timestamp_of(offset)
        }
    }
    let tiered = Tiered::with_timestamps(store, late_fifth).await;
    assert!(tiered.local_start > 5, "record 5 is remote");
    let broker = &tiered.broker;
    assert_eq!(
        list_offsets(broker, 9, TOPIC, 0, MAX_TIMESTAMP).await,
        (0, 5, LATE)
    );
    tiered.stop().await;
}
