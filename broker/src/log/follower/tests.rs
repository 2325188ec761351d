//! Tests of what replication needs from the log: the leader-epoch cache, a follower's
//! appends of batches its leader placed, truncation to where a new leader's log agrees,
//! and restarting an empty log at an offset.
//!
//! Truncation and restart rebuild the log by reopening it, so every test that changes the
//! log also reopens it from disk and expects the same log, found through its indexes.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::super::tests::{batch, config};
use super::*;
use crate::log::producers::Verdict;
use crate::log::records::MAX_INFLATED_BYTES;
use crate::log::{LogConfig, prepare, read_batches};

/// The clock of every test: no segment rolls on time, nothing expires.
const NOW: i64 = 1_000;
/// The idempotent producer of these tests (producer epoch 0).
const PRODUCER: i64 = 42;

// ---------------------------------------------------------------------------------------
// Helpers (the log tests' `read_all` and `idempotent_batch` are private there)
// ---------------------------------------------------------------------------------------

/// Segments of a few batches and a dense offset index, so logs roll and lookups start
/// from index entries rather than from the segment's first byte.
fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 128,
        ..config()
    }
}

fn encode(records: &[Record]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode a test batch");
    buf.to_vec()
}

fn plain_record(offset: i64, sequence: i32, key: String, value: String) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence,
        timestamp: NOW + offset,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: IndexMap::new(),
    }
}

/// One batch as a leader stores it: a record at each of `offsets` (increasing; gaps are
/// what compaction leaves), stamped with `leader_epoch`.
fn stored_batch(offsets: &[i64], leader_epoch: i32) -> Vec<u8> {
    let first = offsets[0];
    let records: Vec<Record> = offsets
        .iter()
        .map(|&offset| Record {
            partition_leader_epoch: leader_epoch,
            // The encoder keeps records in one batch while offset - sequence is constant;
            // the batch's base sequence is then -1, as a non-idempotent producer's.
            ..plain_record(
                offset,
                (offset - first) as i32 - 1,
                format!("key-{offset}"),
                format!("epoch-{leader_epoch}-offset-{offset}"),
            )
        })
        .collect();
    encode(&records)
}

/// `count` contiguous records from `base` in `leader_epoch`, as a leader sends them.
fn leader_batch(base: i64, count: i64, leader_epoch: i32) -> Vec<u8> {
    stored_batch(&(base..base + count).collect::<Vec<_>>(), leader_epoch)
}

/// A client's batch of `PRODUCER`, epoch 0, sequences `first_sequence..+count`.
fn idempotent_batch(first_sequence: i32, count: i32) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            producer_id: PRODUCER,
            producer_epoch: 0,
            ..plain_record(
                i64::from(i),
                first_sequence + i,
                format!("p-{}", first_sequence + i),
                format!("seq-{}", first_sequence + i),
            )
        })
        .collect();
    encode(&records)
}

/// A client's batch with one record per key (value "v"), for compaction.
fn keyed_batch(keys: &[&str]) -> Vec<u8> {
    let records: Vec<Record> = (0..keys.len())
        .map(|i| plain_record(i as i64, i as i32 - 1, keys[i].to_string(), "v".into()))
        .collect();
    encode(&records)
}

/// A leader's append in `leader_epoch`.
fn lead(log: &mut Log, records: &[u8], leader_epoch: i32) -> AppendInfo {
    let prepared = prepare(
        records,
        log.config().max_message_bytes,
        false,
        MAX_INFLATED_BYTES,
    )
    .expect("a valid batch");
    log.append(prepared, leader_epoch, NOW)
        .expect("leader append")
        .0
}

/// A follower's append of what its leader read from its segment `leader_segment_base`.
fn follow(log: &mut Log, records: &[u8], leader_segment_base: i64) -> Result<AppendInfo, LogError> {
    let prepared = prepare_replica(records)?;
    log.append_replica(prepared, leader_segment_base, NOW)
        .map(|(info, _)| info)
}

/// The base of the segment holding `offset`.
fn segment_base(log: &Log, offset: i64) -> i64 {
    log.segments
        .range(..=offset)
        .next_back()
        .map_or(log.log_start_offset(), |(&base, _)| base)
}

fn active_base(log: &Log) -> i64 {
    *log.segments.keys().next_back().expect("an active segment")
}

/// One replication fetch: the leader's batches from the follower's log end (at most
/// `max_bytes`, from one leader segment, as the leader reads), appended by the follower.
/// Returns false once the follower has caught up.
fn fetch_once(leader: &Log, follower: &mut Log, max_bytes: usize) -> Result<bool, LogError> {
    let mut offset = follower.log_end_offset();
    loop {
        let Some(location) = leader.locate(offset)? else {
            return Ok(false);
        };
        let records = read_batches(&location, offset, max_bytes, i64::MAX).expect("read");
        if records.is_empty() {
            // Compaction emptied the rest of that segment: the leader reads on from the next.
            match leader.next_segment_base(offset) {
                Some(next) => offset = next,
                None => return Ok(false),
            }
            continue;
        }
        let first = format::parse_validated_header(&records).base_offset;
        follow(follower, &records, segment_base(leader, first))?;
        return Ok(true);
    }
}

fn replicate_all(leader: &Log, follower: &mut Log, max_bytes: usize) -> Result<(), LogError> {
    while fetch_once(leader, follower, max_bytes)? {}
    Ok(())
}

/// The offsets of every record a consumer reads from the log start.
fn read_offsets(log: &Log) -> Vec<i64> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(location) = log.locate(offset).expect("locate") {
        let mut bytes = read_batches(&location, offset, 1 << 20, i64::MAX).expect("read");
        if bytes.is_empty() {
            match log.next_segment_base(offset) {
                Some(next) => offset = next,
                None => break,
            }
            continue;
        }
        let from = offset;
        for set in RecordBatchDecoder::decode_all(&mut bytes).expect("decode") {
            for record in set.records.iter().filter(|r| r.offset >= from) {
                out.push(record.offset);
                offset = record.offset + 1;
            }
        }
        assert!(offset > from, "no progress reading at {from}");
    }
    out
}

/// The header of the batch a read of `offset` starts with.
fn batch_at(log: &Log, offset: i64) -> BatchHeader {
    let location = log.locate(offset).expect("locate").expect("data");
    let bytes = read_batches(&location, offset, 1, i64::MAX).expect("read");
    format::parse_validated_header(&bytes)
}

/// Every offset below the log end is found through the indexes, in the batch holding it.
fn assert_every_offset_is_found(log: &Log) {
    for offset in log.log_start_offset()..log.log_end_offset() {
        let header = batch_at(log, offset);
        assert!(
            header.base_offset <= offset && offset <= header.last_offset(),
            "offset {offset} read from the batch {}..={}",
            header.base_offset,
            header.last_offset()
        );
    }
    assert!(
        log.locate(log.log_end_offset())
            .expect("locate the end")
            .is_none()
    );
}

/// What a reopen of the log must reproduce.
#[derive(Debug, PartialEq)]
struct Shape {
    log_start_offset: i64,
    log_end_offset: i64,
    segment_bases: Vec<i64>,
    epochs: Vec<(i32, i64)>,
    offsets: Vec<i64>,
}

fn shape(log: &Log) -> Shape {
    Shape {
        log_start_offset: log.log_start_offset(),
        log_end_offset: log.log_end_offset(),
        segment_bases: log.segments.keys().copied().collect(),
        epochs: log.epochs.entries().to_vec(),
        offsets: read_offsets(log),
    }
}

/// Drops the log without a flush (a crash, as far as the log can tell) and opens it again:
/// the reopened log must have the same shape and find every offset through its indexes.
fn reopen(log: Log) -> Log {
    let before = shape(&log);
    let dir = log.dir().to_path_buf();
    let config = log.config().clone();
    drop(log);
    let reopened = Log::open(&dir, config, NOW).expect("reopen");
    assert_eq!(shape(&reopened), before, "the reopened log");
    assert_every_offset_is_found(&reopened);
    reopened
}

/// fsyncs the log and writes its checkpoint and producer snapshot, as the flusher does.
fn flush(log: &mut Log) {
    let plan = log
        .plan_flush(NOW, true)
        .expect("plan a flush")
        .expect("something to flush");
    plan.sync().expect("fsync");
    log.finish_flush(plan)
        .expect("finish the flush")
        .write()
        .expect("checkpoint");
}

/// Every file of a partition directory, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("list the partition directory")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, fs::read(&path).expect("read a partition file"))
        })
        .collect()
}

fn segment_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = files(dir);
    all.retain(|name, _| name.ends_with(".log"));
    all
}

/// Compares file sets by name, then byte for byte (without printing megabytes).
fn assert_same_files(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in want {
        assert!(got[name] == *bytes, "{name} differs");
    }
}

fn stored_epochs(dir: &Path) -> Vec<(i32, i64)> {
    LeaderEpochs::load(dir)
        .expect("read the epoch file")
        .map_or_else(Vec::new, |e| e.entries().to_vec())
}

// ---------------------------------------------------------------------------------------
// The leader-epoch cache
// ---------------------------------------------------------------------------------------

#[test]
fn leader_epochs_are_recorded_persisted_and_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_segments(), NOW).expect("open");
    assert_eq!(log.latest_epoch(), -1);
    assert_eq!(log.epoch_end_offset(0), None);
    for _ in 0..3 {
        lead(&mut log, &batch(3, NOW, Compression::None), 0);
    }
    for _ in 0..6 {
        lead(&mut log, &batch(3, NOW, Compression::None), 3);
    }
    // Epoch 3 starts inside the first segment and goes on in later ones.
    assert!(segment_base(&log, 9) < 9 && segment_base(&log, 26) > 9);
    let expected = vec![(0, 0), (3, 9)];
    assert_eq!(log.epochs.entries(), &expected[..]);
    assert_eq!(stored_epochs(dir.path()), expected);
    assert_eq!(log.latest_epoch(), 3);
    assert_eq!(batch_at(&log, 8).leader_epoch, 0);
    assert_eq!(batch_at(&log, 9).leader_epoch, 3);
    assert_eq!(batch_at(&log, 26).leader_epoch, 3);
    assert_eq!(log.epoch_end_offset(0), Some((0, 9)));
    assert_eq!(
        log.epoch_end_offset(2),
        Some((0, 9)),
        "epoch 2 never wrote: where the epoch before it ends"
    );
    assert_eq!(log.epoch_end_offset(3), Some((3, 27)));
    assert_eq!(log.epoch_end_offset(7), Some((3, 27)));

    let log = reopen(log);
    assert_eq!(log.latest_epoch(), 3);

    // Without the file, the cache is rebuilt from the batch headers and written back.
    drop(log);
    let path = dir.path().join(EPOCHS_FILE);
    fs::remove_file(&path).expect("remove the epoch file");
    let log = Log::open(dir.path(), small_segments(), NOW).expect("reopen");
    assert_eq!(log.epochs.entries(), &expected[..]);
    assert_eq!(stored_epochs(dir.path()), expected);

    // A damaged file is not trusted: rebuilt the same way.
    drop(log);
    let mut bytes = fs::read(&path).expect("read the epoch file");
    bytes[12] ^= 0xff;
    fs::write(&path, &bytes).expect("damage the epoch file");
    let log = Log::open(dir.path(), small_segments(), NOW).expect("reopen");
    assert_eq!(log.epochs.entries(), &expected[..]);
    assert_eq!(stored_epochs(dir.path()), expected);
}

// ---------------------------------------------------------------------------------------
// Follower appends
// ---------------------------------------------------------------------------------------

#[test]
fn a_follower_copies_its_leader_byte_for_byte() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = Log::open(leader_dir.path(), small_segments(), NOW).expect("open");
    lead(&mut leader, &batch(3, NOW, Compression::None), 0);
    lead(&mut leader, &idempotent_batch(0, 4), 0);
    for count in 2..6 {
        lead(&mut leader, &batch(count, NOW, Compression::Gzip), 0);
    }
    for _ in 0..4 {
        lead(&mut leader, &batch(4, NOW, Compression::None), 2);
    }
    let retried = idempotent_batch(4, 2);
    let original = lead(&mut leader, &retried, 2);
    lead(&mut leader, &batch(2, NOW, Compression::Snappy), 5);
    assert!(leader.segment_count() >= 3, "the leader rolled");

    let mut follower = Log::open(follower_dir.path(), small_segments(), NOW).expect("open");
    replicate_all(&leader, &mut follower, 256).expect("replicate");
    assert_same_files(
        &segment_files(follower_dir.path()),
        &segment_files(leader_dir.path()),
    );
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(follower.latest_epoch(), 5);
    assert_eq!(follower.epochs.entries(), leader.epochs.entries());
    assert_eq!(follower.epoch_end_offset(0), leader.epoch_end_offset(0));

    // The follower becomes the leader: a producer's retry is recognised, not written.
    let end = follower.log_end_offset();
    let retry = lead(&mut follower, &retried, 6);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (original.base_offset, original.last_offset)
    );
    assert_eq!(follower.log_end_offset(), end);
    let mut follower = reopen(follower);
    let retry = lead(&mut follower, &retried, 6);
    assert_eq!(retry.base_offset, original.base_offset, "after a restart");
    assert_eq!(follower.log_end_offset(), end);
}

#[test]
fn a_follower_refuses_batches_that_do_not_start_at_its_log_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), NOW).expect("open");
    follow(&mut log, &leader_batch(0, 3, 1), 0).expect("first batch");
    follow(&mut log, &leader_batch(3, 2, 1), 0).expect("second batch");
    let before = files(dir.path());

    let gap = follow(&mut log, &leader_batch(7, 2, 2), 0);
    assert!(
        matches!(
            gap,
            Err(LogError::NotContiguous {
                expected: 5,
                got: 7
            })
        ),
        "{gap:?}"
    );
    let overlap = follow(&mut log, &leader_batch(3, 2, 2), 0);
    assert!(
        matches!(
            overlap,
            Err(LogError::NotContiguous {
                expected: 5,
                got: 3
            })
        ),
        "{overlap:?}"
    );
    // All or nothing: the first batch follows, the second leaves a gap.
    let mut request = leader_batch(5, 3, 2);
    request.extend_from_slice(&leader_batch(9, 1, 2));
    let partial = follow(&mut log, &request, 0);
    assert!(
        matches!(
            partial,
            Err(LogError::NotContiguous {
                expected: 8,
                got: 9
            })
        ),
        "{partial:?}"
    );
    // Damage is caught before the log is touched.
    let mut corrupt = leader_batch(5, 3, 2);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        follow(&mut log, &corrupt, 0),
        Err(LogError::InvalidBatch(BatchError::Crc { .. }))
    ));
    let whole = leader_batch(5, 3, 2);
    assert!(matches!(
        follow(&mut log, &whole[..whole.len() - 1], 0),
        Err(LogError::InvalidBatch(BatchError::LengthMismatch { .. }))
    ));
    assert!(matches!(
        follow(&mut log, &[], 0),
        Err(LogError::InvalidBatch(BatchError::Truncated(0)))
    ));
    // Offsets that go backwards, under a valid CRC (a buggy or hostile peer).
    let mut backwards = leader_batch(5, 3, 2);
    backwards[23..27].copy_from_slice(&(-2i32).to_be_bytes());
    let crc = crc32c::crc32c(&backwards[21..]);
    backwards[17..21].copy_from_slice(&crc.to_be_bytes());
    let refused = follow(&mut log, &backwards, 0);
    assert!(
        matches!(
            refused,
            Err(LogError::InvalidBatch(BatchError::Offsets {
                base_offset: 5,
                last_offset_delta: -2
            }))
        ),
        "{refused:?}"
    );

    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.epochs.entries(), &[(1, 0)], "epoch 2 was never written");
    assert_same_files(&files(dir.path()), &before);
    follow(&mut log, &whole, 0).expect("the batch at the log end");
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(log.epochs.entries(), &[(1, 0), (2, 5)]);
    reopen(log);
}

#[test]
fn a_compacted_batch_is_accepted_from_the_leader() {
    // The cleaner re-encodes a batch without its superseded records at their original
    // offsets: 0 and 2 are left of 0..=2, two records spanning three offsets.
    let compacted = stored_batch(&[0, 2], 1);
    let header = format::parse_validated_header(&compacted);
    assert_eq!((header.record_count, header.last_offset_delta), (2, 2));
    assert!(
        matches!(
            prepare(&compacted, 1 << 20, false, MAX_INFLATED_BYTES),
            Err(BatchError::Count { .. })
        ),
        "a client may not send it"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let compact = LogConfig {
        compact: true,
        ..config()
    };
    let mut log = Log::open(dir.path(), compact, NOW).expect("open");
    let info = follow(&mut log, &compacted, 0).expect("a leader may");
    assert_eq!((info.base_offset, info.last_offset), (0, 2));
    assert_eq!(log.log_end_offset(), 3);
    follow(&mut log, &leader_batch(3, 2, 1), 0).expect("the batch after it");
    assert_eq!(read_offsets(&log), vec![0, 2, 3, 4]);
    reopen(log);
}

/// A follower of a compacted partition replicates its gaps. The cleaner keeps records at
/// their offsets, so a cleaned leader log has gaps between batches (here a@0 and the
/// whole batch c@2 d@3 are gone, so the first batch starts at 1). A leader's read from
/// the follower's end returns the next batch, which starts past that end; as in Kafka,
/// a compacted follower accepts batches at or after its log end. (Found as a bug: every
/// fetch was refused with NotContiguous.)
#[test]
fn a_follower_of_a_compacted_leader_accepts_the_gaps_cleaning_leaves() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let compact = LogConfig {
        compact: true,
        ..config()
    };
    let mut leader = Log::open(leader_dir.path(), compact.clone(), NOW).expect("open");
    for keys in [&["a", "b"][..], &["c", "d"], &["e", "a", "f"], &["c", "d"]] {
        lead(&mut leader, &keyed_batch(keys), 0);
    }
    leader.roll(NOW).expect("roll");
    lead(&mut leader, &keyed_batch(&["tail"]), 0);
    let plan = leader.clean_plan(NOW).expect("a pass is due");
    let staged = cleaner::stage(&plan, NOW, 1 << 20).expect("stage");
    drop(plan);
    leader.finish_clean(staged, NOW).expect("swap");
    assert_eq!(read_offsets(&leader), vec![1, 4, 5, 6, 7, 8, 9]);

    let mut follower = Log::open(follower_dir.path(), compact, NOW).expect("open");
    let replicated = replicate_all(&leader, &mut follower, 1 << 20);
    assert!(
        replicated.is_ok(),
        "a follower must take its compacted leader's batches: {replicated:?}"
    );
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(read_offsets(&follower), read_offsets(&leader));
    assert_same_files(
        &segment_files(follower_dir.path()),
        &segment_files(leader_dir.path()),
    );
}

// ---------------------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------------------

/// Four batches of three records: 0..=2 and 3..=5 in epoch 0, 6..=8 in epoch 2, 9..=11 in
/// epoch 4.
fn three_epochs(dir: &Path, config: LogConfig) -> Log {
    let mut log = Log::open(dir, config, NOW).expect("open");
    for epoch in [0, 0, 2, 4] {
        lead(&mut log, &batch(3, NOW, Compression::None), epoch);
    }
    assert_eq!(log.epochs.entries(), &[(0, 0), (2, 6), (4, 9)]);
    log
}

/// After a truncation to `end`: the log ends there and holds everything from its start,
/// its epoch cache (in memory and on disk) is `epochs`, every offset is found, a reopen
/// sees the same log, and a new leader's batch lands at `end`.
fn check_truncated(log: Log, end: i64, epochs: &[(i32, i64)]) -> Log {
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        read_offsets(&log),
        (log.log_start_offset()..end).collect::<Vec<_>>()
    );
    assert_eq!(log.epochs.entries(), epochs);
    assert_eq!(stored_epochs(log.dir()), epochs, "the epoch file");
    assert_every_offset_is_found(&log);
    let mut log = reopen(log);
    let base = active_base(&log);
    let info = follow(&mut log, &leader_batch(end, 2, 9), base).expect("append at the new end");
    assert_eq!((info.base_offset, log.log_end_offset()), (end, end + 2));
    assert_eq!(log.epochs.entries().last(), Some(&(9, end)));
    reopen(log)
}

#[test]
fn truncating_at_a_batch_boundary_keeps_everything_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = three_epochs(dir.path(), config());
    assert_eq!(log.truncate_to(6, NOW).expect("truncate"), 6);
    assert_eq!(log.latest_epoch(), 0);
    assert_eq!(log.epoch_end_offset(4), Some((0, 6)));
    check_truncated(log, 6, &[(0, 0)]);
}

#[test]
fn truncating_inside_a_batch_removes_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = three_epochs(dir.path(), config());
    assert_eq!(log.truncate_to(10, NOW).expect("truncate"), 9);
    let mut log = check_truncated(log, 9, &[(0, 0), (2, 6)]);
    // Now 9..=10 in epoch 9; cut inside 6..=8.
    assert_eq!(log.truncate_to(7, NOW).expect("truncate"), 6);
    check_truncated(log, 6, &[(0, 0)]);
}

#[test]
fn truncating_into_earlier_segments_deletes_the_later_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_segments(), NOW).expect("open");
    for i in 0..30 {
        lead(&mut log, &batch(3, NOW, Compression::None), i / 10 * 2);
    }
    let bases: Vec<i64> = log.segments.keys().copied().collect();
    assert!(bases.len() >= 5, "{bases:?}");
    assert!(
        bases.iter().all(|b| b % 3 == 0),
        "segments start at batches"
    );
    let mut epochs = vec![(0, 0), (2, 30), (4, 60)];
    assert_eq!(log.epochs.entries(), &epochs[..]);

    // At a segment's base: that segment stays, empty; the later ones go.
    let target = bases[3];
    assert_eq!(log.truncate_to(target, NOW).expect("truncate"), target);
    assert_eq!(log.segments.keys().copied().collect::<Vec<_>>(), bases[..4]);
    epochs.retain(|&(_, start)| start < target);
    let mut log = check_truncated(log, target, &epochs);

    // Inside a batch of the second segment.
    let target = bases[1] + 4;
    assert_eq!(log.truncate_to(target, NOW).expect("truncate"), target - 1);
    assert_eq!(log.segments.keys().copied().collect::<Vec<_>>(), bases[..2]);
    epochs.retain(|&(_, start)| start < target - 1);
    let mut log = check_truncated(log, target - 1, &epochs);

    // Inside the first segment: nothing of the later ones is left on disk.
    assert_eq!(log.truncate_to(4, NOW).expect("truncate"), 3);
    let names: Vec<String> = files(dir.path()).into_keys().collect();
    let first = format::segment_file_name(0, "");
    assert!(
        names
            .iter()
            .filter(|n| n.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .all(|n| n.starts_with(&first)),
        "{names:?}"
    );
    check_truncated(log, 3, &[(0, 0)]);
}

#[test]
fn truncating_to_or_below_the_log_start_restarts_the_log_empty_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = three_epochs(dir.path(), config());
    log.delete_records_before(4).expect("delete records");
    assert_eq!(log.truncate_to(4, NOW).expect("truncate"), 4);
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(log.latest_epoch(), -1);
    let mut log = check_truncated(log, 4, &[]);
    assert_eq!(log.truncate_to(2, NOW).expect("truncate"), 2);
    assert_eq!(log.log_start_offset(), 2);
    let log = check_truncated(log, 2, &[]);
    assert_eq!(log.log_start_offset(), 2);
}

#[test]
fn truncating_at_or_past_the_log_end_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = three_epochs(dir.path(), config());
    let before = files(dir.path());
    for offset in [12, 13, i64::MAX] {
        assert_eq!(log.truncate_to(offset, NOW).expect("truncate"), 12);
    }
    // Not even the checkpoint was rewritten: the log was not reopened.
    assert_same_files(&files(dir.path()), &before);
    assert_eq!(log.epochs.entries(), &[(0, 0), (2, 6), (4, 9)]);
    reopen(log);
}

// ---------------------------------------------------------------------------------------
// Restarting empty at an offset
// ---------------------------------------------------------------------------------------

#[test]
fn reset_restarts_the_log_empty_at_the_offset_with_the_given_producers() {
    // The producers' state as of offset 10, as the remote tier would hold it.
    let source_dir = tempfile::tempdir().expect("tempdir");
    let mut source = Log::open(source_dir.path(), config(), NOW).expect("open");
    lead(&mut source, &idempotent_batch(0, 5), 0);
    lead(&mut source, &idempotent_batch(5, 5), 0);
    let snapshot = source.producers.encode();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = three_epochs(dir.path(), small_segments());
    log.reset_to(10, Some(&snapshot), NOW).expect("reset");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
    assert_eq!(log.segments.keys().copied().collect::<Vec<_>>(), vec![10]);
    assert_eq!(log.epochs.entries(), &[]);
    assert_eq!(log.latest_epoch(), -1);
    assert_eq!(log.epoch_end_offset(4), None);
    assert!(!dir.path().join(EPOCHS_FILE).exists());
    assert!(
        matches!(log.locate(9), Err(LogError::OffsetOutOfRange { .. })),
        "nothing below the new start"
    );
    let mut log = reopen(log);

    let info = follow(&mut log, &leader_batch(10, 3, 6), 10).expect("append at the offset");
    assert_eq!(info.base_offset, 10);
    assert_eq!(log.epochs.entries(), &[(6, 10)]);
    let mut log = reopen(log);
    assert_eq!(log.log_start_offset(), 10);
    assert_eq!(read_offsets(&log), vec![10, 11, 12]);
    // The snapshot's producer is known: its last batch is a retry, a gap is refused.
    let retry = lead(&mut log, &idempotent_batch(5, 5), 6);
    assert_eq!((retry.base_offset, retry.last_offset), (5, 9));
    assert_eq!(
        log.producers.check(PRODUCER, 0, 11, 11),
        Err(crate::log::producers::ProducerError::OutOfOrder {
            producer_id: PRODUCER,
            last: 9,
            got: 11
        })
    );
    let next = lead(&mut log, &idempotent_batch(10, 2), 6);
    assert_eq!(next.base_offset, 13);

    // Without a snapshot, producers start over.
    log.reset_to(20, None, NOW).expect("reset");
    assert!(log.producers.is_empty());
    let log = reopen(log);
    assert!(log.producers.is_empty());
    assert_eq!(log.log_start_offset(), 20);
}

// ---------------------------------------------------------------------------------------
// Crashes around truncation
// ---------------------------------------------------------------------------------------

#[test]
fn a_crash_after_truncation_brings_nothing_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = three_epochs(dir.path(), config());
    // Checkpointed past the truncation point: recovery would trust those bytes.
    flush(&mut log);
    assert_eq!(log.truncate_to(6, NOW).expect("truncate"), 6);
    let base = active_base(&log);
    follow(&mut log, &leader_batch(6, 5, 7), base).expect("the new leader's batch");
    drop(log);
    let log = Log::open(dir.path(), config(), NOW).expect("reopen after a crash");
    assert_eq!(log.log_end_offset(), 11);
    assert_eq!(log.epochs.entries(), &[(0, 0), (7, 6)]);
    let header = batch_at(&log, 6);
    assert_eq!(
        (header.leader_epoch, header.last_offset()),
        (7, 10),
        "the new leader's batch, not the old one"
    );
    assert_eq!(read_offsets(&log), (0..11).collect::<Vec<_>>());
    assert_every_offset_is_found(&log);
}

#[test]
fn a_crash_before_the_truncation_is_checkpointed_brings_nothing_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_segments(), NOW).expect("open");
    for i in 0..30 {
        lead(&mut log, &batch(3, NOW, Compression::None), i / 10 * 2);
    }
    flush(&mut log);
    let checkpoint = fs::read(dir.path().join(CHECKPOINT_FILE)).expect("checkpoint");
    let epochs = fs::read(dir.path().join(EPOCHS_FILE)).expect("epochs");
    assert_eq!(log.truncate_to(4, NOW).expect("truncate"), 3);
    drop(log);
    // The crash came after the cut segment was fsynced but before the new checkpoint and
    // epoch file replaced the old ones, which point past the cut (into deleted segments).
    fs::write(dir.path().join(CHECKPOINT_FILE), &checkpoint).expect("old checkpoint");
    fs::write(dir.path().join(EPOCHS_FILE), &epochs).expect("old epochs");
    let log = Log::open(dir.path(), small_segments(), NOW).expect("reopen after a crash");
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.epochs.entries(), &[(0, 0)]);
    assert_eq!(stored_epochs(dir.path()), vec![(0, 0)]);
    assert_eq!(read_offsets(&log), vec![0, 1, 2]);
    assert_every_offset_is_found(&log);
}

/// Producer batches that truncation removed stay removed after a restart: dropping them
/// marks the producer state dirty, so `producers.snapshot` is rewritten. (Found as a bug:
/// the stale snapshot came back, and a retry of the removed batch was acknowledged at
/// offsets that hold other records, so the retry was lost.)
#[test]
fn producer_batches_removed_by_truncation_stay_removed_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), NOW).expect("open");
    lead(&mut log, &idempotent_batch(0, 5), 0);
    lead(&mut log, &idempotent_batch(5, 5), 0); // 5..=9: the new leader never got it
    flush(&mut log);
    assert_eq!(log.truncate_to(5, NOW).expect("truncate"), 5);
    assert_eq!(
        log.producers.check(PRODUCER, 0, 5, 9),
        Ok(Verdict::Append),
        "right after the truncation the batch is gone"
    );
    // The new leader's own records take offsets 5..=9; then a clean restart.
    let base = active_base(&log);
    follow(&mut log, &leader_batch(5, 5, 1), base).expect("follow");
    flush(&mut log);
    let mut log = reopen(log);
    assert_eq!(
        log.producers.check(PRODUCER, 0, 5, 9),
        Ok(Verdict::Append),
        "after a restart the truncated batch is back in the producer state"
    );
    let retry = lead(&mut log, &idempotent_batch(5, 5), 2);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (10, 14),
        "the producer's retry must be written"
    );
}

/// Truncation keeps idempotent producers whose batches are in segments before the cut
/// one, even when no producer snapshot was written since (the flusher writes one at most
/// every flush.ms; a roll writes only `<base>.producers`): recovery replays from the
/// checkpoint on disk, which the snapshot matches. (Found as a bug: replay started at the
/// cut segment, and a retry of an earlier batch was appended a second time.)
#[test]
fn truncation_keeps_the_producer_state_of_earlier_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), NOW).expect("open");
    lead(&mut log, &idempotent_batch(0, 3), 0);
    log.roll(NOW).expect("roll");
    lead(&mut log, &batch(3, NOW, Compression::None), 0);
    lead(&mut log, &batch(3, NOW, Compression::None), 0);
    let duplicate = Ok(Verdict::Duplicate {
        base_offset: 0,
        last_offset: 2,
    });
    assert_eq!(log.producers.check(PRODUCER, 0, 0, 2), duplicate);
    assert_eq!(log.truncate_to(6, NOW).expect("truncate"), 6);
    assert_eq!(
        log.producers.check(PRODUCER, 0, 0, 2),
        duplicate,
        "the producer's batch at 0..=2 is still in the log"
    );
    let retry = lead(&mut log, &idempotent_batch(0, 3), 1);
    assert_eq!(
        (retry.base_offset, log.log_end_offset()),
        (0, 6),
        "a retry must not be written twice"
    );
}
