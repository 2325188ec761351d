//! The partition read path across the tiers, through the handlers: a tiered topic with
//! small segments is produced to, its sealed segments are uploaded by the real uploader
//! and removed from the local disk by local retention, and then Fetch (several versions)
//! and ListOffsets must answer from the remote tier what they answered from the local
//! log: the same offsets, timestamps and values, the same log start and high watermark,
//! and no gap or overlap where the remote tier ends and the local log begins. A Fetch of
//! several partitions reads their remote tiers in one request within the handler's
//! budgets, and a damaged remote segment is a storage error for the reads that meet it
//! and for no other. Every scenario runs against both object stores (in memory and the
//! local directory).

#[macro_use]
mod handler_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, RequestKind, ResponseKind};
use strata_broker::broker::{Broker, SystemClock};
use strata_broker::partition::Partition;
use strata_broker::partition::remote::object_ref;
use strata_broker::tier::TierHost;
use strata_tiering::keys::{self, ObjectName, PartitionId};

use handler_support::{
    Bucket, Consumed, KAFKA_STORAGE_ERROR, OFFSET_OUT_OF_RANGE, Store, batch_at, batches,
    broker_on, call, create_with, fetch_at, fetch_partitions, list_offsets, name, produce,
    wait_for,
};

on_every_store!(
    history_below_the_local_log_is_fetched_from_the_remote_tier,
    a_fetch_from_the_remote_tier_continues_at_the_local_log_without_a_gap,
    one_batch_at_a_time_through_both_tiers,
    list_offsets_answers_from_both_tiers,
    delete_records_moves_the_log_start_into_the_remote_tier,
    history_is_read_from_the_remote_tier_after_a_restart,
    max_timestamp_is_found_in_the_remote_tier,
    max_timestamp_ties_go_to_the_earliest_record,
    a_damaged_remote_segment_is_a_storage_error,
    a_damaged_remote_offset_index_does_not_mislead_list_offsets,
    a_fetch_of_several_partitions_reads_their_remote_tiers_together,
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

/// Record `offset`'s value in `partition`. Every partition gets values of the same length
/// (so the same segments) but its own, so a record served from the wrong partition shows.
fn value_in(partition: i32, offset: i64) -> String {
    // About 60 bytes a record, 300 a batch: three batches to a 1 KiB segment.
    format!("record-{partition}-{offset:04}-{}", "x".repeat(42))
}

fn record_in(partition: i32, offset: i64) -> Consumed {
    Consumed {
        offset,
        timestamp: T0 + offset * STEP_MS,
        value: value_in(partition, offset),
    }
}

/// Record `offset` of partition 0.
fn record(offset: i64) -> Consumed {
    record_in(0, offset)
}

/// Small segments, and background loops that do not keep a test waiting.
fn tune(config: &mut strata_broker::config::Config) {
    config.log_segment_bytes_min = 1024;
    // An index entry for every batch after a segment's first: remote reads and
    // ListOffsets then start from the indexes, not from the segment's start.
    config.log_index_interval_bytes = 1;
    config.remote_upload_interval_ms = 10;
}

/// A broker whose topic `history` has its older segments only in the remote tier. Every
/// partition holds the same offsets, timestamps and segments (values differ by partition).
struct Tiered {
    dir: tempfile::TempDir,
    store: Store,
    bucket: Bucket,
    broker: Arc<Broker>,
    uploader: tokio::task::JoinHandle<()>,
    partitions: i32,
    /// Where the local log starts (in every partition): everything below is read from the
    /// bucket.
    local_start: i64,
    /// Base offsets of the segments in the bucket, in order (in every partition).
    remote_bases: Vec<i64>,
}

/// Record `o`'s timestamp in the standard data set.
fn timestamp_of(offset: i64) -> i64 {
    T0 + offset * STEP_MS
}

impl Tiered {
    async fn new(store: Store) -> Tiered {
        Tiered::build(store, 1, timestamp_of).await
    }

    /// The data set with record `o` at `timestamp(o)`.
    async fn with_timestamps(store: Store, timestamp: fn(i64) -> i64) -> Tiered {
        Tiered::build(store, 1, timestamp).await
    }

    /// The data set in each of `partitions` partitions.
    async fn with_partitions(store: Store, partitions: i32) -> Tiered {
        Tiered::build(store, partitions, timestamp_of).await
    }

    async fn build(store: Store, partitions: i32, timestamp: fn(i64) -> i64) -> Tiered {
        assert!(
            (1..10).contains(&partitions),
            "one digit in the values, for one length"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = store.bucket();
        let broker = broker_on(dir.path(), &bucket, Arc::new(SystemClock), tune).await;
        create_with(
            &broker,
            TOPIC,
            partitions,
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
        for p in 0..partitions {
            for b in 0..BATCHES {
                let offsets: Vec<i64> =
                    (b * RECORDS_PER_BATCH..(b + 1) * RECORDS_PER_BATCH).collect();
                let values: Vec<String> = offsets.iter().map(|&o| value_in(p, o)).collect();
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                let timestamps: Vec<i64> = offsets.iter().map(|&o| timestamp(o)).collect();
                let produced = produce(&broker, TOPIC, p, batch_at(&values, &timestamps)).await;
                assert_eq!(
                    produced,
                    (0, offsets[0]),
                    "produce batch {b} to partition {p}"
                );
            }
        }
        let host: Arc<dyn TierHost> = broker.clone();
        let uploader = tokio::spawn(strata_broker::tier::run_uploader(host));
        let mut remote_ends = Vec::new();
        for p in 0..partitions {
            let partition = partition_of(&broker, p);
            let remote_end = wait_for(
                &format!("the uploader to upload every sealed segment of partition {p}"),
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
            assert!(remote_end > 0, "nothing was uploaded from partition {p}");
            let (_, segments_before, _, _) = partition.stats();
            assert!(
                segments_before >= 4,
                "partition {p}: {segments_before} segments: segment.bytes did not roll the log"
            );
            remote_ends.push(remote_end);
        }
        broker.housekeeping(false).await;
        for (p, &remote_end) in (0..partitions).zip(&remote_ends) {
            let partition = partition_of(&broker, p);
            let local_start = partition.local_log_start_offset();
            let (_, segments, log_end, _) = partition.stats();
            assert_eq!(
                (local_start, segments, log_end),
                (remote_end, 1, RECORDS),
                "partition {p}: local retention keeps only the active segment, which starts at \
                 the remote end"
            );
            assert!(
                local_start < RECORDS - RECORDS_PER_BATCH,
                "partition {p}: the local log holds more than one batch"
            );
            let local_logs = std::fs::read_dir(partition.dir())
                .expect("list the partition directory")
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .count();
            assert_eq!(
                local_logs, 1,
                "partition {p}: segment files left on the local disk"
            );
        }
        assert!(
            remote_ends.iter().all(|&end| end == remote_ends[0]),
            "the same data rolled into the same segments in every partition: {remote_ends:?}"
        );
        let mut tiered = Tiered {
            dir,
            store,
            bucket,
            broker,
            uploader,
            partitions,
            local_start: remote_ends[0],
            remote_bases: Vec::new(),
        };
        tiered.remote_bases = tiered.check_objects().await;
        tiered
    }

    /// The segments are objects in the chosen store, and only there, the same in every
    /// partition. Returns their base offsets.
    async fn check_objects(&self) -> Vec<i64> {
        let tiering = self.broker.tiering.as_ref().expect("tiering");
        let topic_id = self.broker.topics.get(TOPIC).expect("the topic").id;
        let mut every_partition = Vec::new();
        for p in 0..self.partitions {
            let marks = partition_of(&self.broker, p)
                .remote()
                .expect("a remote log")
                .marks();
            let prefix = keys::partition_prefix(&PartitionId {
                topic: TOPIC.to_string(),
                topic_id,
                partition: p,
            });
            let mut bases: Vec<i64> = tiering
                .store
                .list(&prefix)
                .await
                .expect("list the store")
                .iter()
                .filter_map(|o| match keys::parse_object_name(&o.key) {
                    Some(ObjectName::Segment { base_offset, .. }) => Some(base_offset),
                    _ => None,
                })
                .collect();
            bases.sort_unstable();
            assert_eq!(bases.first(), Some(&0), "partition {p}: {bases:?}");
            assert_eq!(
                bases.len() as u64,
                marks.live_segments,
                "partition {p}: {bases:?}"
            );
            assert!(
                bases.windows(2).all(|w| w[0] < w[1]),
                "partition {p}: {bases:?}"
            );
            assert!(
                bases.iter().all(|&b| b < self.local_start),
                "partition {p}: {bases:?}"
            );
            every_partition.push(bases);
        }
        let bases = every_partition[0].clone();
        assert!(
            every_partition.iter().all(|b| *b == bases),
            "the same segments in every partition: {every_partition:?}"
        );
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
            partitions,
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
            partitions,
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
    partition_of(broker, 0)
}

fn partition_of(broker: &Broker, index: i32) -> Arc<Partition> {
    broker
        .topics
        .partition(TOPIC, index)
        .unwrap_or_else(|| panic!("partition {index}"))
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

/// Flips one byte of the first record's value in the remote segment at `base_offset`, in
/// the bucket, behind the broker's back: the batch still frames, only its CRC-32C is
/// wrong. Returns the object's id. The segment cache must not hold any of the object yet,
/// or reads would be served the good copy and never see the damage.
async fn damage_first_batch_in_the_bucket(broker: &Broker, base_offset: i64) -> uuid::Uuid {
    let tiering = broker.tiering.as_ref().expect("tiering");
    let remote = partition(broker).remote().expect("a remote log").clone();
    let entry = remote
        .locate(base_offset)
        .await
        .expect("read the manifest")
        .unwrap_or_else(|| panic!("no remote segment holds {base_offset}"));
    assert_eq!(entry.base_offset, base_offset, "{entry:?}");
    let object = object_ref(&remote, &entry);
    let chunk = tiering.cache.chunk_bytes();
    for at in (0..object.size).step_by(chunk as usize) {
        assert!(
            !tiering.cache.is_cached(&object, at),
            "the segment cache already holds byte {at} of {}",
            object.key
        );
    }
    let good = tiering
        .store
        .get(&object.key)
        .await
        .unwrap_or_else(|e| panic!("get {}: {e}", object.key));
    assert_eq!(good.len() as u64, entry.object_size(), "{}", object.key);
    let needle = value_in(0, base_offset);
    let log_bytes = entry.log_bytes as usize;
    let at = good[..log_bytes]
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("record {base_offset}'s value is not in {}", object.key));
    let mut damaged = good.to_vec();
    // A filler byte at the value's end: inside the first batch's records, covered by its
    // CRC and by nothing else.
    damaged[at + needle.len() - 1] ^= 0x01;
    tiering
        .store
        .put(&object.key, Bytes::from(damaged.clone()))
        .await
        .unwrap_or_else(|e| panic!("put {}: {e}", object.key));
    let stored = tiering.store.get(&object.key).await.expect("get it back");
    assert_eq!(stored, damaged, "the bucket holds the damaged copy");
    entry.object_id
}

/// A remote segment whose offset index points every entry at the segment's last batch (a
/// batch boundary, but not the one each entry names), as a damaged disk cache could: the
/// index is not proven sorted or true, so ListOffsets checks the batch an entry points at
/// and scans from the segment's start when it is not the one named. It answers each
/// record's own offset, never a later one.
async fn a_damaged_remote_offset_index_does_not_mislead_list_offsets(store: Store) {
    let tiered = Tiered::new(store).await;
    let broker = &tiered.broker;
    let bases = &tiered.remote_bases;
    assert!(bases.len() >= 2, "two remote segments: {bases:?}");
    let (base, end) = (bases[0], bases[1]);
    let tiering = broker.tiering.as_ref().expect("tiering");
    let remote = partition(broker).remote().expect("a remote log").clone();
    let entry = remote
        .locate(base)
        .await
        .expect("read the manifest")
        .expect("the first remote segment");
    let object = object_ref(&remote, &entry);
    for at in (0..object.size).step_by(tiering.cache.chunk_bytes() as usize) {
        assert!(
            !tiering.cache.is_cached(&object, at),
            "the segment cache already holds byte {at} of {}",
            object.key
        );
    }
    let mut bytes = tiering.store.get(&object.key).await.expect("get").to_vec();
    // The last batch's position: walk the batches by their length field.
    let log = &bytes[..entry.log_bytes as usize];
    let (mut position, mut last) = (0usize, 0usize);
    while position < log.len() {
        last = position;
        let length = i32::from_be_bytes(
            log[position + 8..position + 12]
                .try_into()
                .expect("4 bytes"),
        );
        position += 12 + length as usize;
    }
    assert!(last > 0, "the segment holds more than one batch");
    let index = entry.offset_index_range();
    let entries = (index.start + 8) as usize..index.end as usize;
    assert!(
        entries.len() >= 8,
        "the segment's offset index has entries (index interval 1)"
    );
    for entry_at in entries.step_by(8) {
        bytes[entry_at + 4..entry_at + 8].copy_from_slice(&(last as u32).to_be_bytes());
    }
    tiering
        .store
        .put(&object.key, Bytes::from(bytes))
        .await
        .expect("put the damaged object");
    for offset in base..end {
        assert_eq!(
            list_offsets(broker, 9, TOPIC, 0, timestamp_of(offset)).await,
            (0, offset, timestamp_of(offset)),
            "record {offset} by its timestamp, with a damaged offset index"
        );
    }
    // Fetch checks the entry too.
    let (records, _) = consume(broker, 12, base, 1 << 20, 0).await;
    assert_eq!(
        records[..(end - base) as usize].to_vec(),
        (base..end).map(record).collect::<Vec<_>>()
    );
    tiered.stop().await;
}

/// A remote segment whose bytes no longer match their CRC, and no local copy to repair it
/// from: a Fetch that reads the damaged batch answers KAFKA_STORAGE_ERROR (after the read
/// path's one retry from the bucket), counted in the Fetch error metric, and keeps doing so;
/// every other read, from the bucket or the local log, is unaffected.
async fn a_damaged_remote_segment_is_a_storage_error(store: Store) {
    let tiered = Tiered::new(store).await;
    let broker = &tiered.broker;
    let bases = &tiered.remote_bases;
    assert!(
        bases.len() >= 3,
        "a remote segment on each side of the damaged one: {bases:?}"
    );
    let (damaged, damaged_end) = (bases[1], bases[2]);
    assert!(
        damaged + RECORDS_PER_BATCH < damaged_end,
        "the damaged segment holds more than the damaged batch: {bases:?}"
    );
    // Before any read: nothing of the segment is cached (checked inside).
    let object_id = damage_first_batch_in_the_bucket(broker, damaged).await;
    let storage_errors = || {
        broker
            .metrics
            .request_errors
            .with_label_values(&["Fetch", "KafkaStorageError"])
            .get()
    };
    assert_eq!(storage_errors(), 0, "storage errors before any fetch");

    // From the damaged batch's first offset, and from inside it.
    let fails = |offset: i64, data: &PartitionData| {
        assert_eq!(
            data.error_code, KAFKA_STORAGE_ERROR,
            "fetch at {offset}: {data:?}"
        );
        assert!(
            batches(data).is_empty(),
            "fetch at {offset}: records with an error: {data:?}"
        );
        assert_eq!(
            (data.high_watermark, data.log_start_offset),
            (RECORDS, 0),
            "fetch at {offset}: the partition's offsets come with the error"
        );
    };
    for offset in [damaged, damaged + 2] {
        fails(
            offset,
            &fetch_at(broker, 12, TOPIC, 0, offset, 1 << 20).await,
        );
    }
    assert_eq!(
        storage_errors(),
        2,
        "one storage error counted per failed fetch"
    );

    // The rest of the damaged segment: a read that starts after the damaged batch never
    // reads it.
    let rest = fetch_at(broker, 12, TOPIC, 0, damaged + RECORDS_PER_BATCH, 1 << 20).await;
    assert_eq!(rest.error_code, 0, "{rest:?}");
    assert_eq!(
        batches(&rest).concat(),
        ((damaged + RECORDS_PER_BATCH)..damaged_end)
            .map(record)
            .collect::<Vec<_>>(),
        "the damaged segment after its damaged batch"
    );
    // The remote segment before it, whole.
    let before = fetch_at(broker, 12, TOPIC, 0, 0, 1 << 20).await;
    assert_eq!(before.error_code, 0, "{before:?}");
    assert_eq!(
        batches(&before).concat(),
        (0..damaged).map(record).collect::<Vec<_>>(),
        "the first remote segment"
    );
    // The remote segments after it and then the local log, as a consumer reads them.
    assert!(damaged_end < tiered.local_start);
    let (records, _) = consume(broker, 12, damaged_end, 1 << 20, 0).await;
    assert_eq!(
        records,
        (damaged_end..RECORDS).map(record).collect::<Vec<_>>(),
        "the remote tier after the damaged segment, and the local log"
    );

    // With no local copy nothing repairs it: the manifest still names the damaged object,
    // and reading it still fails.
    let entry = partition(broker)
        .remote()
        .expect("a remote log")
        .locate(damaged)
        .await
        .expect("read the manifest")
        .expect("the damaged segment");
    assert_eq!(
        entry.object_id, object_id,
        "the damaged object was replaced without a local copy"
    );
    fails(
        damaged,
        &fetch_at(broker, 16, TOPIC, 0, damaged, 1 << 20).await,
    );
    assert_eq!(
        storage_errors(),
        3,
        "one storage error counted per failed fetch"
    );
    tiered.stop().await;
}

/// One Fetch asking for several partitions whose offsets are only in the bucket: every
/// partition is answered from its own remote tier, in request order, within the budgets
/// the handler applies: KIP-74's first batch found is always whole, a local read spends
/// what it read, and a remote read (planned in the same pass, run after it, all of them
/// concurrently) spends its whole budget.
///
/// That last rule is a known limitation, pinned here so a change to it is deliberate: a
/// remote read that returns 1 KiB still spends its partition's whole budget, so when
/// fetch.max.bytes is no larger than max.partition.fetch.bytes only one remote partition
/// gets records per Fetch.
async fn a_fetch_of_several_partitions_reads_their_remote_tiers_together(store: Store) {
    const PARTITIONS: i32 = 3;
    const PARTITION_MAX: i32 = 1 << 20;
    let tiered = Tiered::with_partitions(store, PARTITIONS).await;
    let broker = &tiered.broker;
    let bases = &tiered.remote_bases;
    assert!(bases.len() >= 3, "{bases:?}");
    let records = |p: i32, offsets: std::ops::Range<i64>| -> Vec<Consumed> {
        offsets.map(|o| record_in(p, o)).collect()
    };
    let answered = |p: i32, data: &PartitionData, expected: Vec<Consumed>| {
        assert_eq!(data.error_code, 0, "partition {p}: {data:?}");
        assert_eq!(
            (data.high_watermark, data.log_start_offset),
            (RECORDS, 0),
            "partition {p}"
        );
        assert_eq!(batches(data).concat(), expected, "partition {p}");
    };
    let first_batch = |p: i32| vec![records(p, 0..RECORDS_PER_BATCH)];
    // The first remote segment, whole.
    let first_segment = |p: i32| records(p, 0..bases[1]);

    // Room for every partition's budget: each gets its first segment, whole, from its own
    // objects in the bucket (the values name the partition).
    for version in [4, 12, 16] {
        let wanted: Vec<(i32, i64, i32)> = (0..PARTITIONS).map(|p| (p, 0, PARTITION_MAX)).collect();
        let data =
            fetch_partitions(broker, version, TOPIC, &wanted, PARTITIONS * PARTITION_MAX).await;
        // The log start offset is in the response from v5.
        let log_start = if version >= 5 { 0 } else { -1 };
        for (p, data) in (0..PARTITIONS).zip(&data) {
            assert_eq!(data.error_code, 0, "v{version} partition {p}: {data:?}");
            assert_eq!(
                (data.high_watermark, data.log_start_offset),
                (RECORDS, log_start),
                "v{version} partition {p}"
            );
            assert_eq!(
                batches(data).concat(),
                first_segment(p),
                "v{version} partition {p}: its first remote segment"
            );
        }
    }

    // Different segments and tiers in one request: each answer lands in its own slot.
    let wanted = [
        (1, bases[2], PARTITION_MAX),
        (0, tiered.local_start, PARTITION_MAX),
        (2, bases[1] + 1, PARTITION_MAX),
    ];
    let data = fetch_partitions(broker, 12, TOPIC, &wanted, PARTITIONS * PARTITION_MAX).await;
    let third_end = bases.get(3).copied().unwrap_or(tiered.local_start);
    answered(1, &data[0], records(1, bases[2]..third_end));
    answered(0, &data[1], records(0, tiered.local_start..RECORDS));
    answered(2, &data[2], records(2, bases[1]..bases[2]));

    // A response budget of one partition's: the first remote read spends all of it
    // (though it reads about 1 KiB), so the partitions after it get no records...
    let order = [2, 0, 1];
    let wanted: Vec<(i32, i64, i32)> = order.iter().map(|&p| (p, 0, PARTITION_MAX)).collect();
    let data = fetch_partitions(broker, 12, TOPIC, &wanted, PARTITION_MAX).await;
    answered(2, &data[0], first_segment(2));
    answered(0, &data[1], Vec::new());
    answered(1, &data[2], Vec::new());
    // ... while a local read first spends only what it read, and leaves the rest.
    let wanted = [
        (0, tiered.local_start, PARTITION_MAX),
        (1, 0, PARTITION_MAX),
    ];
    let data = fetch_partitions(broker, 12, TOPIC, &wanted, PARTITION_MAX).await;
    answered(0, &data[0], records(0, tiered.local_start..RECORDS));
    answered(1, &data[1], first_segment(1));

    // A response budget of one byte: the first partition asked still gets one whole batch.
    let wanted: Vec<(i32, i64, i32)> = order.iter().map(|&p| (p, 0, PARTITION_MAX)).collect();
    let data = fetch_partitions(broker, 12, TOPIC, &wanted, 1).await;
    assert_eq!(
        batches(&data[0]),
        first_batch(2),
        "the first partition asked"
    );
    answered(2, &data[0], first_batch(2).concat());
    answered(0, &data[1], Vec::new());
    answered(1, &data[2], Vec::new());
    // The guarantee goes to the first batch found: a partition with nothing to return (at
    // the high watermark) does not use it up.
    let wanted = [
        (0, RECORDS, PARTITION_MAX),
        (1, 0, PARTITION_MAX),
        (2, 0, PARTITION_MAX),
    ];
    let data = fetch_partitions(broker, 12, TOPIC, &wanted, 1).await;
    answered(0, &data[0], Vec::new());
    assert_eq!(batches(&data[1]), first_batch(1), "the first batch found");
    answered(1, &data[1], first_batch(1).concat());
    answered(2, &data[2], Vec::new());

    // partition_max_bytes of one byte with room in the response: one whole batch each.
    let wanted: Vec<(i32, i64, i32)> = (0..PARTITIONS).map(|p| (p, 0, 1)).collect();
    let data = fetch_partitions(broker, 12, TOPIC, &wanted, PARTITION_MAX).await;
    for (p, data) in (0..PARTITIONS).zip(&data) {
        assert_eq!(
            batches(data),
            first_batch(p),
            "partition {p}: one whole batch"
        );
        answered(p, data, first_batch(p).concat());
    }
    tiered.stop().await;
}

/// Records 5 and 50 (both only in the bucket, in different segments) and the last record
/// (local) share the largest timestamp: MAX_TIMESTAMP answers with the earliest.
async fn max_timestamp_ties_go_to_the_earliest_record(store: Store) {
    const LATE: i64 = T0 + 10 * RECORDS * STEP_MS;
    fn three_late(offset: i64) -> i64 {
        if offset == 5 || offset == 50 || offset == RECORDS - 1 {
            LATE
        } else {
            timestamp_of(offset)
        }
    }
    let tiered = Tiered::with_timestamps(store, three_late).await;
    assert!(tiered.local_start > 50, "records 5 and 50 are remote");
    assert!(
        tiered.remote_bases.iter().any(|&b| b > 5 && b <= 50),
        "records 5 and 50 are in different segments: {:?}",
        tiered.remote_bases
    );
    let broker = &tiered.broker;
    assert_eq!(
        list_offsets(broker, 9, TOPIC, 0, MAX_TIMESTAMP).await,
        (0, 5, LATE)
    );
    tiered.stop().await;
}
