use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::records::Compression;
use strata_tiering::store::ObjectStoreBackend;
use strata_tiering::{ManifestStore, RemoteStore};
use uuid::Uuid;

use super::build::{RunBytes, build_segment};
use super::*;
use crate::cluster::manifests::EmbeddedManifests;
use crate::diskless::state::Head;
use crate::diskless::store::{AppendWrite, EmbeddedDisklessStore};
use crate::log::format;
use crate::log::tests::batch;

mod rounds;
mod txn;

const TOPIC: &str = "orders";

fn key() -> PartitionKey {
    PartitionKey {
        topic_id: Uuid::from_u128(7),
        partition: 0,
    }
}

/// A shared object as an appender writes it: batches with base offset 0, of `counts`
/// records each, timestamps from `first_ts`; and the (pos, len, records) of each.
fn shared_object(counts: &[usize], first_ts: i64) -> (Vec<u8>, Vec<(u64, u64, i64)>) {
    let mut bytes = Vec::new();
    let mut spans = Vec::new();
    for (i, count) in counts.iter().enumerate() {
        let b = batch(*count, first_ts + i as i64 * 100, Compression::None);
        spans.push((bytes.len() as u64, b.len() as u64, *count as i64));
        bytes.extend_from_slice(&b);
    }
    (bytes, spans)
}

struct Fixture {
    _dir: tempfile::TempDir,
    backend: ObjectStoreBackend,
    manifests: Arc<EmbeddedManifests>,
    store: Arc<EmbeddedDisklessStore>,
    config: Config,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.remote_cache_disk_bytes = 0;
        Fixture {
            backend: ObjectStoreBackend::in_memory(),
            manifests: Arc::new(EmbeddedManifests::new(&dir.path().join("meta"))),
            store: Arc::new(EmbeddedDisklessStore::new(&dir.path().join("meta"))),
            config,
            _dir: dir,
        }
    }

    /// A merger with its own tiering (own segment cache and manifest copies) and its own
    /// staging directory, as on another broker, over the same bucket and metadata. The
    /// staging path of a segment is the same for every merger of it (partition, base
    /// offset): a broker merges a partition one round at a time, but two mergers of one
    /// fixture may run at once, and a shared directory would let one remove the file the
    /// other just wrote (`Staging`, not found).
    async fn merger(&self) -> Merger {
        let tiering = Tiering::open_with_backend(
            &self.config,
            self.manifests.clone() as Arc<dyn ManifestStore>,
            &crate::telemetry::Metrics::new().expect("metrics"),
            self.backend.clone(),
        )
        .await
        .expect("tiering");
        Merger {
            store: self.store.clone(),
            tiering: Arc::new(tiering),
            staging: self
                .config
                .data_dir
                .join(format!("diskless-merge-{}", Uuid::new_v4().simple())),
            part_bytes: 16 << 20,
            write_cache: None,
        }
    }

    /// Appends one run per entry of `objects` (each a shared object of batches), as the
    /// appender commits them, at `at` ms.
    async fn append(&self, objects: &[&[usize]], at: i64) -> Vec<Run> {
        self.append_to(key(), objects, at).await
    }

    async fn append_to(&self, key: PartitionKey, objects: &[&[usize]], at: i64) -> Vec<Run> {
        let objects: Vec<_> = objects.iter().map(|c| (*c, &[][..])).collect();
        self.append_runs(key, &objects, None, at).await
    }

    /// Appends one run per entry of `objects` (a shared object of batches, and the
    /// aborted entries the run holds, as the commit of an abort marker stores them);
    /// with `open`, the head's open transactions become it.
    async fn append_runs(
        &self,
        key: PartitionKey,
        objects: &[(&[usize], &[crate::diskless::state::AbortedEntry])],
        open: Option<&BTreeMap<i64, i64>>,
        at: i64,
    ) -> Vec<Run> {
        let mut runs = Vec::new();
        for (n, (counts, aborted)) in objects.iter().enumerate() {
            let (bytes, spans) = shared_object(counts, at);
            let object_key = format!("diskless/2026120716/1-{}.batches", Uuid::new_v4());
            self.backend
                .put(&object_key, bytes.clone().into())
                .await
                .expect("put");
            let state = self
                .store
                .load(&key)
                .await
                .expect("load")
                .unwrap_or_default();
            let records: i64 = spans.iter().map(|s| s.2).sum();
            let run = Run {
                key: object_key,
                size: bytes.len() as u64,
                pos: 0,
                len: bytes.len() as u64,
                base: state.head.next,
                end: state.head.next + records,
                max_ts: at + 1000,
                at: at + n as i64,
                broker: 1,
                batches: spans.len() as u32,
                aborted: aborted.to_vec(),
            };
            let head = Head {
                next: run.end,
                runs: state.head.runs + 1,
                run_bytes: state.head.run_bytes + run.len,
                open: open.cloned().unwrap_or_else(|| state.head.open.clone()),
                ..state.head.clone()
            };
            let conflicts = self
                .store
                .append(&[AppendWrite {
                    key,
                    expected: state.head_version,
                    head,
                    runs: vec![run.clone()],
                    producers: Vec::new(),
                    expire: Vec::new(),
                }])
                .await
                .expect("append");
            assert!(conflicts.is_empty());
            runs.push(run);
        }
        runs
    }

    async fn segment_objects(&self) -> usize {
        self.backend
            .list("topics/")
            .await
            .expect("list")
            .iter()
            .filter(|o| o.key.ends_with(".segment"))
            .count()
    }
}

fn settings(target_bytes: u64) -> MergeSettings {
    MergeSettings {
        target_bytes,
        max_age_ms: 60_000,
        max_pending_runs: 2000,
        index_interval_bytes: 1,
    }
}

/// Every record of `remote` from its start, read as a consumer would: (offset of each
/// batch, its record count); checks offsets are dense.
async fn read_all(merger: &Merger, remote: &Arc<RemoteLog>) -> Vec<(i64, i32)> {
    let reader = merger.tiering.reader();
    let mut offset = remote.marks().log_start_offset;
    let end = remote.marks().end_offset.unwrap_or(offset);
    let mut batches = Vec::new();
    while offset < end {
        let (bytes, _) = crate::partition::remote::read_remote(&reader, remote, offset, 1 << 20)
            .await
            .expect("remote read");
        assert!(!bytes.is_empty(), "nothing at offset {offset}");
        let mut at = 0;
        while at < bytes.len() {
            let header = format::parse_validated_header(&bytes[at..]);
            assert!(format::crc_matches(&bytes[at..at + header.size]));
            assert_eq!(header.base_offset, offset, "offsets are dense");
            assert_eq!(header.leader_epoch, 0);
            batches.push((header.base_offset, header.record_count));
            offset = header.next_offset();
            at += header.size;
        }
    }
    batches
}

#[test]
fn build_patches_offsets_and_indexes_like_a_local_segment() {
    let (a, a_spans) = shared_object(&[3, 2], 1_000);
    let (b, b_spans) = shared_object(&[4], 5_000);
    let runs = [
        RunBytes {
            key: "a",
            base: 10,
            end: 15,
            batches: 2,
            bytes: &a,
        },
        RunBytes {
            key: "b",
            base: 15,
            end: 19,
            batches: 1,
            bytes: &b,
        },
    ];
    let segment = build_segment(&runs, 1).expect("build");
    assert_eq!((segment.base_offset, segment.end_offset), (10, 19));
    assert_eq!(segment.log.len(), a.len() + b.len());
    // Offsets patched per batch; CRC still valid (it does not cover them).
    let mut at = 0;
    let mut bases = Vec::new();
    while at < segment.log.len() {
        let header = format::parse_validated_header(&segment.log[at..]);
        assert!(format::crc_matches(&segment.log[at..at + header.size]));
        bases.push((header.base_offset, at as u32));
        at += header.size;
    }
    assert_eq!(
        bases.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![10, 13, 15]
    );
    // index.interval.bytes 1: an entry per batch, relative offsets and positions.
    let entries: Vec<(u32, u32)> = segment.offset_index[format::INDEX_HEADER_LEN as usize..]
        .chunks_exact(format::OFFSET_ENTRY_LEN as usize)
        .map(format::offset_entry)
        .collect();
    let expected: Vec<(u32, u32)> = bases.iter().map(|(o, p)| ((o - 10) as u32, *p)).collect();
    assert_eq!(entries, expected);
    assert!(format::index_header_ok(
        &segment.offset_index,
        format::OFFSET_INDEX_MAGIC
    ));
    // The time index's last entry holds the largest timestamp (the 4-record batch).
    let last_time = segment.time_index[segment.time_index.len() - 12..].to_vec();
    assert_eq!(format::time_entry(&last_time), (5_003, 15 - 10));
    assert_eq!(segment.max_timestamp, 5_003);
    let _ = (a_spans, b_spans);
}

#[test]
fn build_refuses_bytes_that_disagree_with_the_run() {
    let (a, _) = shared_object(&[3, 2], 1_000);
    let run = |end, batches, bytes| RunBytes {
        key: "a",
        base: 0,
        end,
        batches,
        bytes,
    };
    // One record more than the bytes hold; one batch fewer; a cut batch; a flipped byte.
    assert!(build_segment(&[run(6, 2, &a)], 1).is_err());
    assert!(build_segment(&[run(5, 1, &a)], 1).is_err());
    assert!(build_segment(&[run(5, 2, &a[..a.len() - 1])], 1).is_err());
    let mut flipped = a.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let err = build_segment(&[run(5, 2, &flipped)], 1).expect_err("damaged");
    assert_eq!(err.reason, "CRC-32C mismatch");
    // And the untouched bytes build.
    assert!(build_segment(&[run(5, 2, &a)], 1).is_ok());
}

#[test]
fn plan_waits_for_size_age_or_pending_runs_and_takes_a_prefix() {
    let run = |base: i64, end: i64, len: u64, at: i64| Run {
        key: format!("k{base}"),
        size: len,
        pos: 0,
        len,
        base,
        end,
        max_ts: 0,
        at,
        broker: 1,
        batches: 1,
        aborted: Vec::new(),
    };
    let mut state = PartitionState {
        head: Head {
            next: 30,
            runs: 3,
            run_bytes: 300,
            ..Head::default()
        },
        head_version: 1,
        runs: BTreeMap::new(),
        producers: BTreeMap::new(),
    };
    for (base, end) in [(0, 10), (10, 20), (20, 30)] {
        state.runs.insert(base, run(base, end, 100, 1_000));
    }
    // Small and young: nothing.
    assert_eq!(plan(&state, None, &settings(1_000), 2_000), Plan::Nothing);
    // Old enough: all that fits the target.
    assert_eq!(
        plan(&state, None, &settings(1_000), 61_000),
        Plan::Merge(vec![0, 10, 20])
    );
    // Big enough: a prefix of target size.
    assert_eq!(
        plan(&state, None, &settings(200), 2_000),
        Plan::Merge(vec![0, 10])
    );
    // A run larger than the target still goes, alone.
    assert_eq!(
        plan(&state, None, &settings(50), 2_000),
        Plan::Merge(vec![0])
    );
    // Half of diskless_max_pending_runs waiting.
    let crowded = MergeSettings {
        max_pending_runs: 6,
        ..settings(1_000)
    };
    assert_eq!(
        plan(&state, None, &crowded, 2_000),
        Plan::Merge(vec![0, 10, 20])
    );
    // The manifest already covers the first two runs: trim, and what trimming does.
    assert_eq!(plan(&state, Some(20), &settings(1_000), 2_000), Plan::Trim);
    let (head, doomed) = trimmed(&state, Some(20)).expect("trim");
    assert_eq!(doomed, vec![0, 10]);
    assert_eq!((head.merged, head.runs, head.run_bytes), (20, 1, 100));
    // The manifest's start moved inside a run (DeleteRecords): runs below it go, the
    // run holding it stays to be merged.
    let (head, doomed) = trimmed(&state, Some(15)).expect("trim");
    assert_eq!((doomed, head.merged), (vec![0], 10));
    let mut after = state.clone();
    after.runs.remove(&0);
    after.head = head;
    assert_eq!(trimmed(&after, Some(15)), None);
    assert_eq!(
        plan(&after, Some(15), &settings(1_000), 61_000),
        Plan::Merge(vec![10, 20])
    );
}

#[test]
fn ownership_is_stable_and_spread() {
    let live = [3, 1, 2];
    let mut owners = HashSet::new();
    for partition in 0..64 {
        let key = PartitionKey {
            topic_id: Uuid::from_u128(99),
            partition,
        };
        let first = owner(&live, &key).expect("an owner");
        assert_eq!(
            owner(&[2, 3, 1], &key),
            Some(first),
            "order of the view does not matter"
        );
        owners.insert(first);
    }
    assert_eq!(owners.len(), 3, "64 partitions spread over every broker");
    assert_eq!(owner(&[], &key()), None);
    assert_eq!(owner(&[5], &key()), Some(5));
}

#[tokio::test]
async fn merged_segment_reads_back_and_runs_are_trimmed() {
    let fx = Fixture::new();
    let runs = fx.append(&[&[3, 2], &[4], &[1, 1, 1]], 1_000).await;
    let merger = fx.merger().await;
    // Target large, runs young: nothing yet.
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 2_000)
        .await
        .expect("round");
    assert_eq!(merged, Merged::default());
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 100_000)
        .await
        .expect("round");
    assert_eq!(
        merged,
        Merged {
            uploaded: true,
            trimmed: 3
        }
    );
    let state = stored(&fx).await;
    assert!(state.runs.is_empty());
    assert_eq!((state.head.merged, state.head.next), (12, 12));
    assert_eq!((state.head.runs, state.head.run_bytes), (0, 0));
    let remote = merger
        .remote_log(TOPIC, &key())
        .await
        .expect("the call succeeds");
    assert_eq!(remote.marks().end_offset, Some(12));
    let batches = read_all(&merger, &remote).await;
    assert_eq!(
        batches,
        vec![(0, 3), (3, 2), (5, 4), (9, 1), (10, 1), (11, 1)]
    );
    // A read from the middle finds its batch through the index.
    let (bytes, _) = crate::partition::remote::read_remote(&merger.tiering.reader(), &remote, 7, 1)
        .await
        .expect("the call succeeds");
    assert_eq!(format::parse_validated_header(&bytes).base_offset, 5);
    assert_eq!(fx.segment_objects().await, 1);
    let _ = runs;
}

#[tokio::test]
async fn a_crash_after_the_manifest_commit_is_trimmed_without_another_upload() {
    let fx = Fixture::new();
    let runs = fx.append(&[&[2], &[3]], 1_000).await;
    let merger = fx.merger().await;
    let remote = merger
        .remote_log(TOPIC, &key())
        .await
        .expect("the call succeeds");
    // The first half of a merge: upload and manifest commit, then "crash" (no trim).
    assert!(
        merger
            .upload(&remote, &runs, &[], 0, &settings(1 << 20), 5_000)
            .await
            .expect("the call succeeds")
    );
    let state = stored(&fx).await;
    assert_eq!((state.head.merged, state.runs.len()), (0, 2));
    // Another broker's next round: it only trims.
    let other = fx.merger().await;
    let merged = other
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 100_000)
        .await
        .expect("the call succeeds");
    assert_eq!(
        merged,
        Merged {
            uploaded: false,
            trimmed: 2
        }
    );
    assert_eq!(fx.segment_objects().await, 1, "no second upload");
    let state = stored(&fx).await;
    assert_eq!((state.head.merged, state.runs.len()), (5, 0));
    // Later runs merge after it.
    let more = fx.append(&[&[4]], 2_000).await;
    let remote = other
        .remote_log(TOPIC, &key())
        .await
        .expect("the call succeeds");
    let merged = other
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 100_000)
        .await
        .expect("the call succeeds");
    assert!(merged.uploaded);
    assert_eq!(fx.segment_objects().await, 2);
    remote.reload().await.expect("the call succeeds");
    assert_eq!(remote.marks().end_offset, Some(more[0].end));
    assert_eq!(
        read_all(&other, &remote).await,
        vec![(0, 2), (2, 3), (5, 4)]
    );
}

#[tokio::test]
async fn concurrent_mergers_of_the_same_runs_commit_once() {
    let fx = Fixture::new();
    fx.append(&[&[2, 2], &[3], &[1]], 1_000).await;
    let (a, b) = (fx.merger().await, fx.merger().await);
    let (s, k) = (settings(1 << 20), key());
    let (ra, rb) = tokio::join!(
        a.merge_partition(TOPIC, &k, &s, 100_000),
        b.merge_partition(TOPIC, &k, &s, 100_000)
    );
    let (ra, rb) = (ra.expect("merger a"), rb.expect("merger b"));
    assert_eq!(
        u8::from(ra.uploaded) + u8::from(rb.uploaded),
        1,
        "exactly one commit: {ra:?} {rb:?}"
    );
    assert_eq!(ra.trimmed + rb.trimmed, 3, "the runs are trimmed once");
    assert_eq!(
        fx.segment_objects().await,
        1,
        "the loser removed its object"
    );
    let state = stored(&fx).await;
    assert_eq!(
        (state.head.merged, state.head.runs, state.runs.len()),
        (8, 0, 0)
    );
    let remote = a
        .remote_log(TOPIC, &key())
        .await
        .expect("the call succeeds");
    assert_eq!(remote.marks().live_segments, 1);
    assert_eq!(
        read_all(&a, &remote).await,
        vec![(0, 2), (2, 2), (4, 3), (7, 1)]
    );
}

fn topic(retention_bytes: i64) -> DisklessTopic {
    DisklessTopic {
        name: TOPIC.to_string(),
        id: key().topic_id,
        partitions: 1,
        config: LogConfig {
            retention_ms: -1,
            retention_bytes,
            ..crate::log::tests::config()
        },
    }
}

/// Merges everything that is there, as one segment.
async fn merge_now(merger: &Merger) {
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), i64::MAX / 2)
        .await
        .expect("merge");
    assert!(merged.uploaded);
}

#[tokio::test]
async fn delete_records_moves_the_head_then_the_manifest() {
    use crate::diskless::retention::{DeleteRecordsError, advance_manifest, delete_records};
    let fx = Fixture::new();
    let merger = fx.merger().await;
    fx.append(&[&[2, 3]], 1_000).await;
    merge_now(&merger).await;
    fx.append(&[&[4], &[3]], 2_000).await;
    merge_now(&merger).await;
    fx.append(&[&[2]], 3_000).await;
    assert_eq!(fx.segment_objects().await, 2);
    let store: &dyn DisklessStore = &*fx.store;
    let tiering = &merger.tiering;
    // Past the high watermark (14): refused, nothing moved.
    assert!(matches!(
        delete_records(store, &key(), 15).await,
        Err(DeleteRecordsError::OutOfRange { .. })
    ));
    assert_eq!(stored(&fx).await.head.log_start, 0);
    // Into the second segment: the head moves; no object is deleted before the answer.
    assert_eq!(
        delete_records(store, &key(), 7)
            .await
            .expect("the call succeeds"),
        7
    );
    let state = stored(&fx).await;
    assert_eq!(state.head.log_start, 7);
    assert_eq!(fx.segment_objects().await, 2);
    // Then the manifest: the first segment's object goes, the second stays.
    advance_manifest(tiering, TOPIC, &key(), 7).await;
    assert_eq!(fx.segment_objects().await, 1);
    let remote = merger
        .remote_log(TOPIC, &key())
        .await
        .expect("the call succeeds");
    assert_eq!(remote.marks().log_start_offset, 7);
    // Backwards is a no-op answering the current low watermark.
    assert_eq!(
        delete_records(store, &key(), 3)
            .await
            .expect("the call succeeds"),
        7
    );
    // -1 is the high watermark, past `merged` (12): the unmerged run (12..14) is covered
    // and the next round trims it instead of merging deleted records.
    assert_eq!(
        delete_records(store, &key(), -1)
            .await
            .expect("the call succeeds"),
        14
    );
    advance_manifest(tiering, TOPIC, &key(), 14).await;
    assert_eq!(fx.segment_objects().await, 0);
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), i64::MAX / 2)
        .await
        .expect("the call succeeds");
    assert_eq!(
        merged,
        Merged {
            uploaded: false,
            trimmed: 1
        }
    );
    let state = stored(&fx).await;
    assert_eq!(
        (state.head.log_start, state.head.merged, state.runs.len()),
        (14, 14, 0)
    );
}

#[tokio::test]
async fn retention_bytes_deletes_merged_segments_and_raises_the_head() {
    use crate::diskless::retention::apply_retention;
    let fx = Fixture::new();
    let merger = fx.merger().await;
    fx.append(&[&[2, 3]], 1_000).await;
    merge_now(&merger).await;
    let remote = merger
        .remote_log(TOPIC, &key())
        .await
        .expect("the call succeeds");
    let first = remote.marks().live_bytes;
    fx.append(&[&[4]], 2_000).await;
    merge_now(&merger).await;
    remote.reload().await.expect("the call succeeds");
    let second = remote.marks().live_bytes - first;
    // Unlimited: nothing goes.
    apply_retention(&merger, &topic(-1), &key(), 10_000)
        .await
        .expect("the call succeeds");
    assert_eq!(fx.segment_objects().await, 2);
    // Room for about one segment: the oldest goes, then the head follows the manifest.
    apply_retention(&merger, &topic(second as i64), &key(), 10_000)
        .await
        .expect("the call succeeds");
    assert_eq!(fx.segment_objects().await, 1);
    let state = stored(&fx).await;
    assert_eq!(state.head.log_start, 5);
    remote.reload().await.expect("the call succeeds");
    assert_eq!(remote.marks().log_start_offset, 5);
    assert_eq!(read_all(&merger, &remote).await, vec![(5, 4)]);
}

#[tokio::test]
async fn scrubber_deletes_only_old_unreferenced_shared_objects() {
    use crate::diskless::scrub::{scrub_shared, unreferenced};
    let fx = Fixture::new();
    let runs = fx.append(&[&[2], &[3]], 1_000).await;
    let orphan = "diskless/2026120716/2-00000000-0000-0000-0000-000000000001.batches";
    fx.backend
        .put(orphan, vec![1, 2, 3].into())
        .await
        .expect("the call succeeds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the call succeeds")
        .as_millis() as i64;
    let grace = 600_000;
    let shared = |fx: &Fixture| {
        let backend = fx.backend.clone();
        async move {
            let listed = backend.list("diskless/").await.expect("the call succeeds");
            listed.into_iter().map(|o| o.key).collect::<HashSet<_>>()
        }
    };
    // Young: nothing goes, referenced or not.
    assert_eq!(
        scrub_shared(&fx.backend, &*fx.store, now, grace)
            .await
            .expect("the call succeeds")
            .0,
        0
    );
    assert_eq!(shared(&fx).await.len(), 3);
    // Past the grace period: the orphan goes, the referenced objects stay.
    let later = now + grace + 1_000;
    assert_eq!(
        scrub_shared(&fx.backend, &*fx.store, later, grace)
            .await
            .expect("the call succeeds")
            .0,
        1
    );
    let left = shared(&fx).await;
    assert!(!left.contains(orphan));
    assert!(runs.iter().all(|r| left.contains(&r.key)));
    // After the merge trimmed their runs, they go too; the merged segment stays.
    merge_now(&fx.merger().await).await;
    assert_eq!(
        scrub_shared(&fx.backend, &*fx.store, later, grace)
            .await
            .expect("the call succeeds")
            .0,
        2
    );
    assert!(shared(&fx).await.is_empty());
    assert_eq!(fx.segment_objects().await, 1);
    // The decision itself: outside the prefix never, referenced never, young never.
    let info = |key: &str, at| strata_tiering::store::ObjectInfo {
        key: key.to_string(),
        size: 1,
        last_modified_ms: at,
    };
    let listed = [
        info("diskless/a.batches", 0),
        info("diskless/b.batches", 0),
        info("diskless/c.batches", 950),
        info("topics/t.x/0/00000000000000000000-x.segment", 0),
    ];
    let referenced = HashSet::from(["diskless/b.batches".to_string()]);
    let chosen: Vec<&str> = unreferenced(&listed, &referenced, 1_000, 100)
        .iter()
        .map(|o| o.key.as_str())
        .collect();
    assert_eq!(chosen, vec!["diskless/a.batches"]);
}

async fn stored(fx: &Fixture) -> PartitionState {
    fx.store
        .load(&key())
        .await
        .expect("load the partition")
        .expect("the partition is stored")
}

/// A broker as the merger loop sees it, over the fixture's stores.
struct FakeHost {
    config: Config,
    tiering: Arc<Tiering>,
    store: Arc<dyn DisklessStore>,
    /// The broker's view of each partition, if this host keeps one (`None`: no view,
    /// the merger asks the store).
    views: Option<std::sync::Mutex<std::collections::HashMap<PartitionKey, Arc<PartitionState>>>>,
    node_id: i32,
    live: Vec<i32>,
    partitions: i32,
    /// The topic's retention.bytes (-1: none).
    retention_bytes: i64,
    shutdown: tokio_util::sync::CancellationToken,
    registry: prometheus::Registry,
}

#[async_trait::async_trait]
impl DisklessHost for FakeHost {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
    fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        &self.shutdown
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn tiering(&self) -> Option<&Arc<Tiering>> {
        Some(&self.tiering)
    }
    fn diskless_store(&self) -> Option<Arc<dyn DisklessStore>> {
        Some(self.store.clone())
    }
    fn write_cache(&self) -> Option<Arc<crate::diskless::read::WriteCache>> {
        None
    }
    fn diskless_topics(&self) -> Vec<DisklessTopic> {
        vec![DisklessTopic {
            partitions: self.partitions,
            ..topic(self.retention_bytes)
        }]
    }
    fn diskless_state(&self, key: &PartitionKey) -> Option<Arc<PartitionState>> {
        let views = self.views.as_ref()?.lock().expect("views");
        Some(views.get(key).cloned().unwrap_or_default())
    }
    async fn refresh_view(&self, key: &PartitionKey) {
        if let Some(views) = &self.views {
            let state = self
                .store
                .load(key)
                .await
                .expect("load")
                .unwrap_or_default();
            views.lock().expect("views").insert(*key, Arc::new(state));
        }
    }
    async fn stored_topic_ids(&self) -> Result<HashSet<Uuid>, crate::cluster::StoreError> {
        Ok(HashSet::from([key().topic_id]))
    }
    fn live_brokers(&self) -> Vec<i32> {
        self.live.clone()
    }
    fn node_id(&self) -> i32 {
        self.node_id
    }
    fn is_controller(&self) -> bool {
        self.node_id == 1
    }
    fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }
}

#[tokio::test]
async fn the_loop_merges_only_the_partitions_this_broker_owns() {
    const PARTITIONS: i32 = 6;
    let mut fx = Fixture::new();
    fx.config.diskless_merge_interval_ms = 100;
    fx.config.diskless_merge_max_age_ms = 0;
    let part = |partition| PartitionKey {
        topic_id: key().topic_id,
        partition,
    };
    for p in 0..PARTITIONS {
        fx.append_to(part(p), &[&[2], &[3]], 1_000).await;
    }
    let live = vec![1, 2];
    let mine: Vec<i32> = (0..PARTITIONS)
        .filter(|p| owner(&live, &part(*p)) == Some(1))
        .collect();
    assert!(
        !mine.is_empty() && mine.len() < PARTITIONS as usize,
        "{mine:?}"
    );
    let host = |node_id| {
        let fx = &fx;
        let live = live.clone();
        async move {
            Arc::new(FakeHost {
                config: fx.config.clone(),
                tiering: fx.merger().await.tiering,
                store: fx.store.clone(),
                views: None,
                node_id,
                live,
                partitions: PARTITIONS,
                retention_bytes: -1,
                shutdown: tokio_util::sync::CancellationToken::new(),
                registry: prometheus::Registry::new(),
            })
        }
    };
    let merged = |fx: &Fixture| {
        let store = fx.store.clone();
        async move {
            let mut done = Vec::new();
            for p in 0..PARTITIONS {
                let state = store.load(&part(p)).await.expect("load").expect("stored");
                if state.runs.is_empty() && state.head.merged == 5 {
                    done.push(p);
                }
            }
            done
        }
    };
    let one = host(1).await;
    let running = tokio::spawn(run_merger(one.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while merged(&fx).await != mine {
        assert!(
            std::time::Instant::now() < deadline,
            "broker 1 merged {:?}, owns {mine:?}",
            merged(&fx).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A few more rounds: broker 1 still leaves broker 2's partitions alone.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(merged(&fx).await, mine);
    // Broker 2 takes its share.
    let two = host(2).await;
    let second = tokio::spawn(run_merger(two.clone()));
    while merged(&fx).await.len() != PARTITIONS as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "merged {:?}",
            merged(&fx).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    one.shutdown.cancel();
    two.shutdown.cancel();
    running.await.expect("loop of broker 1");
    second.await.expect("loop of broker 2");
    // One segment per partition: nobody merged a partition twice.
    assert_eq!(fx.segment_objects().await, PARTITIONS as usize);
    // The gauges were registered and set for the topic.
    let families = one.registry.gather();
    assert!(
        families
            .iter()
            .any(|f| f.name() == "diskless_unmerged_bytes")
    );
}
