use std::fs::OpenOptions;
use std::io::Write;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;
use crate::log::records::MAX_INFLATED_BYTES;

/// A record batch as a client would send it: `count` records, timestamps from `first_ts`.
pub(crate) fn batch(count: usize, first_ts: i64, compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch unless offset - sequence stays constant.
            sequence: i as i32 - 1,
            timestamp: first_ts + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}-{}", "x".repeat(i % 17)))),
            headers: IndexMap::from([(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"v")),
            )]),
        })
        .collect();
    encode(&records, compression)
}

fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode a test batch");
    buf.to_vec()
}

fn append(
    log: &mut Log,
    records: &[u8],
    now_ms: i64,
) -> Result<(AppendInfo, Option<Arc<File>>), LogError> {
    let prepared = prepare(
        records,
        log.config().max_message_bytes,
        false,
        MAX_INFLATED_BYTES,
    )?;
    log.append(prepared, 0, now_ms)
}

pub(crate) fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 30,
        segment_ms: i64::MAX,
        index_interval_bytes: 4096,
        flush_messages: i64::MAX,
        flush_ms: i64::MAX,
        retention_ms: -1,
        retention_bytes: -1,
        max_message_bytes: 1 << 20,
        local_retention_ms: -2,
        local_retention_bytes: -2,
        remote_storage: false,
        log_append_time: false,
        recompression: None,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: i64::MAX,
        compact: false,
        delete_retention_ms: 86_400_000,
        min_cleanable_dirty_ratio: 0.5,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
    }
}

fn read_all(log: &Log, from: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut offset = from;
    while let Some(location) = log.locate(offset).expect("locate") {
        let bytes = read_batches(&location, offset, 1 << 20, i64::MAX).expect("read");
        assert!(!bytes.is_empty(), "no progress at {offset}");
        let mut buf = bytes;
        for set in RecordBatchDecoder::decode_all(&mut buf).expect("decode what the log returned") {
            for record in set.records {
                if record.offset >= offset {
                    out.push((record.offset, record.timestamp));
                }
            }
        }
        offset = out.last().map_or(offset, |(o, _)| o + 1);
    }
    out
}

#[test]
fn offsets_are_assigned_densely_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    for i in 0..10 {
        let (info, _) = append(&mut log, &batch(3, i * 10, Compression::None), 0).expect("append");
        assert_eq!(info.base_offset, i * 3);
        assert_eq!(info.last_offset, i * 3 + 2);
    }
    assert_eq!(log.log_end_offset(), 30);
    let records = read_all(&log, 0);
    assert_eq!(
        records.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..30).collect::<Vec<_>>()
    );
    // Reading from the middle of a batch returns that batch; the client skips ahead.
    let location = log.locate(4).expect("locate").expect("data");
    let bytes = read_batches(&location, 4, 1, i64::MAX).expect("read");
    let header = format::parse_validated_header(&bytes);
    assert_eq!(
        header.base_offset, 3,
        "the batch holding offset 4, whole, despite max_bytes 1"
    );
    assert!(matches!(
        log.locate(31),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(log.locate(30).expect("end").is_none());
}

#[test]
fn an_invalid_batch_appends_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let mut records = batch(2, 0, Compression::None);
    let mut bad = batch(2, 0, Compression::None);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    records.extend_from_slice(&bad);
    assert!(matches!(
        append(&mut log, &records, 0),
        Err(LogError::InvalidBatch(BatchError::Crc { .. }))
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..config()
    };
    let mut log = Log::open(dir.path(), config.clone(), 0).expect("open");
    for i in 0..200 {
        append(&mut log, &batch(4, i, Compression::Snappy), 0).expect("append");
    }
    assert!(
        log.segment_count() > 10,
        "rolled into {} segments",
        log.segment_count()
    );
    let records = read_all(&log, 0);
    assert_eq!(records.len(), 800);
    assert_eq!(read_all(&log, 777).first().map(|r| r.0), Some(777));
    drop(log);
    let log = Log::open(dir.path(), config, 0).expect("reopen");
    assert_eq!(log.log_end_offset(), 800);
    assert_eq!(read_all(&log, 0).len(), 800);
}

fn last_segment_path(dir: &Path) -> PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

#[test]
fn recovery_truncates_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    for i in 0..5 {
        append(&mut log, &batch(2, i, Compression::Gzip), 0).expect("append");
    }
    let good_size = log.size_bytes();
    drop(log);
    // A crash in the middle of writing a sixth batch: half of it reached the disk.
    let torn = batch(2, 9, Compression::Gzip);
    let path = last_segment_path(dir.path());
    let mut file = OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open segment");
    file.write_all(&torn[..torn.len() / 2]).expect("write");
    drop(file);
    let mut log = Log::open(dir.path(), config(), 0).expect("reopen");
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.size_bytes(), good_size);
    let (info, _) =
        append(&mut log, &batch(1, 20, Compression::None), 0).expect("append after recovery");
    assert_eq!(info.base_offset, 10);
    assert_eq!(read_all(&log, 0).len(), 11);
}

#[test]
fn recovery_stops_at_a_corrupt_batch_after_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    append(&mut log, &batch(3, 0, Compression::None), 0).expect("append");
    let plan = log.plan_flush(0, true).expect("plan").expect("dirty");
    plan.sync().expect("sync");
    log.finish_flush(plan)
        .expect("prepare")
        .write()
        .expect("checkpoint");
    append(&mut log, &batch(3, 0, Compression::None), 0).expect("append");
    append(&mut log, &batch(3, 0, Compression::None), 0).expect("append");
    drop(log);
    // Corrupt a byte inside the second batch (after the checkpoint): it and everything
    // after it are dropped; the first batch, covered by the checkpoint, stays.
    let path = last_segment_path(dir.path());
    let mut bytes = fs::read(&path).expect("read");
    let first = batch(3, 0, Compression::None).len();
    bytes[first + 70] ^= 0xff;
    fs::write(&path, &bytes).expect("write");
    let log = Log::open(dir.path(), config(), 0).expect("reopen");
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 128,
        ..config()
    };
    let mut log = Log::open(dir.path(), config.clone(), 0).expect("open");
    for i in 0..100 {
        append(&mut log, &batch(3, i * 100, Compression::None), 0).expect("append");
    }
    drop(log);
    for entry in fs::read_dir(dir.path()).expect("list") {
        let path = entry.expect("entry").path();
        if path
            .extension()
            .is_some_and(|e| e == "index" || e == "timeindex")
        {
            fs::remove_file(path).expect("remove index");
        }
    }
    let log = Log::open(dir.path(), config, 0).expect("reopen");
    assert_eq!(log.log_end_offset(), 300);
    assert_eq!(read_all(&log, 150).first().map(|r| r.0), Some(150));
    let location = log.locate_timestamp(5000).expect("lookup").expect("found");
    assert_eq!(
        find_timestamp(&location, 5000, 0, i64::MAX).expect("scan"),
        Some((150, 5000))
    );
}

#[test]
fn timestamps_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 200,
        ..config()
    };
    let mut log = Log::open(dir.path(), config, 0).expect("open");
    for i in 0..100 {
        append(&mut log, &batch(5, 1_000 + i * 10, Compression::Zstd), 0).expect("append");
    }
    // Batch i holds offsets 5i..5i+4 with timestamps 1000+10i .. 1000+10i+4.
    for (ts, want) in [
        (0, Some((0, 1000))),
        (1000, Some((0, 1000))),
        (1013, Some((8, 1013))),
        (1992, Some((497, 1992))),
        (5000, None),
    ] {
        let found = match log.locate_timestamp(ts).expect("lookup") {
            Some(location) => find_timestamp(&location, ts, 0, i64::MAX).expect("scan"),
            None => None,
        };
        assert_eq!(found, want, "timestamp {ts}");
    }
    let (location, batch_offset) = log.locate_max_timestamp().expect("max").expect("some");
    assert_eq!(
        max_timestamp_record(&location, batch_offset).expect("decode"),
        Some((499, 1994))
    );
}

#[test]
fn retention_by_bytes_and_time_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1024,
        ..config()
    };
    let mut log = Log::open(dir.path(), config.clone(), 0).expect("open");
    for i in 0..100 {
        append(&mut log, &batch(2, i * 1000, Compression::None), 0).expect("append");
    }
    let segments = log.segment_count();
    log.set_config(LogConfig {
        retention_bytes: 4096,
        ..config.clone()
    });
    let outcome = log.apply_retention(0, None).expect("retention");
    assert!(
        outcome.segments > 0 && log.size_bytes() <= 4096 + 1024,
        "size {}",
        log.size_bytes()
    );
    assert!(log.segment_count() < segments);
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(read_all(&log, start).first().map(|r| r.0), Some(start));
    assert!(matches!(
        log.locate(start - 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    // Time: everything but the active segment is older than 10 s at t = 200 s.
    log.set_config(LogConfig {
        retention_ms: 10_000,
        ..config
    });
    log.apply_retention(200_000, None).expect("retention");
    assert_eq!(log.segment_count(), 1);
    drop(log);
    let log = Log::open(
        dir.path(),
        LogConfig {
            segment_bytes: 1024,
            ..self::config()
        },
        0,
    )
    .expect("reopen");
    assert_eq!(log.log_end_offset(), 200);
}

#[test]
fn delete_records_moves_the_start_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1024,
        ..config()
    };
    let mut log = Log::open(dir.path(), config.clone(), 0).expect("open");
    for i in 0..50 {
        append(&mut log, &batch(2, i, Compression::None), 0).expect("append");
    }
    assert_eq!(log.delete_records_before(37).expect("delete"), 37);
    assert!(matches!(
        log.locate(36),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.delete_records_before(101),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = Log::open(dir.path(), config, 0).expect("reopen");
    assert_eq!(log.log_start_offset(), 37);
    assert_eq!(read_all(&log, 37).first().map(|r| r.0), Some(37));
}

#[test]
fn flush_messages_asks_for_an_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            flush_messages: 5,
            ..config()
        },
        0,
    )
    .expect("open");
    let (_, sync) = append(&mut log, &batch(3, 0, Compression::None), 0).expect("append");
    assert!(sync.is_none());
    let (_, sync) = append(&mut log, &batch(3, 0, Compression::None), 0).expect("append");
    assert!(sync.is_some(), "6 unflushed messages >= flush.messages 5");
}

/// Found in review: opening a new log writes nothing, so no fsync covered its
/// directory's entries (or the directory's own entry in its parent) before records in it
/// were acked. The first fsync that makes records durable now covers them.
#[test]
fn a_new_logs_directories_are_fsynced_by_its_first_fsync() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("t-0");
    let new_dirs = [dir.clone(), root.path().to_path_buf()];
    let acked = LogConfig {
        flush_messages: 1,
        ..config()
    };
    let mut log = Log::open(&dir, acked.clone(), 0).expect("open");
    // The segment's files are created by the first append, which queues their directory.
    assert_eq!(log.unsynced_dirs, new_dirs[1..]);
    let (_, sync) = append(&mut log, &batch(1, 0, Compression::None), 0).expect("append");
    assert!(sync.is_some());
    assert!(log.unsynced_dirs.is_empty(), "the ack's fsync covers them");

    // The periodic flush carries them when no ack came first.
    let dir = root.path().join("t-1");
    let mut log = Log::open(&dir, config(), 0).expect("open");
    append(&mut log, &batch(1, 0, Compression::None), 0).expect("append");
    let plan = log.plan_flush(0, true).expect("plan").expect("dirty");
    assert_eq!(plan.dirs, vec![dir.clone(), root.path().to_path_buf()]);
    assert!(log.unsynced_dirs.is_empty());
    plan.sync().expect("fsync");

    // A log reopened from disk has nothing pending.
    drop(log);
    let log = Log::open(&dir, config(), 0).expect("reopen");
    assert!(log.unsynced_dirs.is_empty());
}

#[test]
fn log_append_time_stamps_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            log_append_time: true,
            ..config()
        },
        0,
    )
    .expect("open");
    let (info, _) = append(&mut log, &batch(3, 5, Compression::None), 777_000).expect("append");
    assert_eq!(info.log_append_time, 777_000);
    let location = log.locate(0).expect("locate").expect("data");
    let bytes = read_batches(&location, 0, 1 << 20, i64::MAX).expect("read");
    assert_eq!(
        format::parse_validated_header(&bytes).max_timestamp,
        777_000
    );
    assert!(format::crc_matches(&bytes));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Whatever the batch sizes, segment size and crash point, a reopened log holds a
        /// dense prefix of what was appended, byte for byte.
        #[test]
        fn reopened_log_is_a_dense_prefix(
            sizes in proptest::collection::vec(1usize..30, 1..60),
            segment_bytes in 300u64..5000,
            cut in 0usize..200,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = LogConfig { segment_bytes, index_interval_bytes: 100, ..config() };
            let mut log = Log::open(dir.path(), config.clone(), 0).expect("open");
            let mut expected = 0i64;
            for (i, count) in sizes.iter().enumerate() {
                append(&mut log, &batch(*count, i as i64, Compression::None), 0).expect("append");
                expected += *count as i64;
            }
            drop(log);
            // Chop `cut` bytes off the last segment: a torn tail of unknown size.
            let path = last_segment_path(dir.path());
            let len = fs::metadata(&path).expect("stat").len();
            let file = OpenOptions::new().write(true).open(&path).expect("open");
            file.set_len(len.saturating_sub(cut as u64)).expect("truncate");
            drop(file);
            let log = Log::open(dir.path(), config, 0).expect("reopen");
            let end = log.log_end_offset();
            prop_assert!(end <= expected);
            let offsets: Vec<i64> = read_all(&log, 0).iter().map(|r| r.0).collect();
            prop_assert_eq!(offsets, (0..end).collect::<Vec<_>>());
            if cut == 0 {
                prop_assert_eq!(end, expected);
            }
        }
    }
}

#[test]
fn log_append_time_batches_are_found_by_their_broker_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            log_append_time: true,
            ..config()
        },
        0,
    )
    .expect("open");
    // Producer timestamps 5.. (long ago); the broker stamps 777 000.
    append(&mut log, &batch(3, 5, Compression::Zstd), 777_000).expect("append");
    let location = log
        .locate_timestamp(700_000)
        .expect("lookup")
        .expect("found by max timestamp");
    assert_eq!(
        find_timestamp(&location, 700_000, 0, i64::MAX).expect("scan"),
        Some((0, 777_000))
    );
    let (location, batch_offset) = log.locate_max_timestamp().expect("max").expect("some");
    assert_eq!(
        max_timestamp_record(&location, batch_offset).expect("decode"),
        Some((0, 777_000))
    );
}

#[test]
fn reads_stop_at_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    for i in 0..4 {
        append(&mut log, &batch(2, i, Compression::None), 0).expect("append");
    }
    let location = log.locate(0).expect("locate").expect("data");
    let bytes = read_batches(&location, 0, 1 << 20, 4).expect("read");
    let mut buf = bytes;
    let offsets: Vec<i64> = RecordBatchDecoder::decode_all(&mut buf)
        .expect("decode")
        .iter()
        .flat_map(|set| set.records.iter().map(|r| r.offset))
        .collect();
    assert_eq!(
        offsets,
        vec![0, 1, 2, 3],
        "batches at or past the high watermark stay hidden"
    );
}

#[test]
fn start_up_scans_only_the_unflushed_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1024,
        ..config()
    };
    let mut log = Log::open(dir.path(), config.clone(), 0).expect("open");
    for i in 0..300 {
        append(&mut log, &batch(2, i, Compression::None), 0).expect("append");
    }
    assert!(log.segment_count() > 20, "{} segments", log.segment_count());
    let plan = log.plan_flush(0, true).expect("plan").expect("dirty");
    plan.sync().expect("sync");
    log.finish_flush(plan)
        .expect("prepare")
        .write()
        .expect("checkpoint");
    // No roll during the tail, so all three batches land after the checkpoint.
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..config
    };
    log.set_config(config.clone());
    for i in 0..3 {
        append(&mut log, &batch(2, i, Compression::None), 0).expect("append");
    }
    drop(log);
    let log = Log::open(dir.path(), config.clone(), 0).expect("reopen after a crash");
    assert_eq!(
        log.recovered_batches(),
        3,
        "only the batches after the checkpoint are scanned"
    );
    assert_eq!(log.log_end_offset(), 606);
    drop(log);
    // The reopen above wrote a fresh checkpoint: nothing left to scan.
    let log = Log::open(dir.path(), config, 0).expect("reopen after a clean start");
    assert_eq!(log.recovered_batches(), 0);
}

/// A batch from idempotent producer `producer_id`/`epoch`, sequences from `first_seq`.
pub(crate) fn idempotent_batch(
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
    count: usize,
) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: 1_000 + i as i64,
            key: None,
            value: Some(Bytes::from(format!(
                "p{producer_id}-s{}",
                first_seq + i as i32
            ))),
            headers: IndexMap::new(),
        })
        .collect();
    encode(&records, Compression::None)
}

#[test]
fn idempotent_retries_are_acknowledged_not_appended_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let first = append(&mut log, &idempotent_batch(42, 0, 0, 5), 0)
        .expect("first")
        .0;
    assert_eq!((first.base_offset, first.last_offset), (0, 4));
    let second = append(&mut log, &idempotent_batch(42, 0, 5, 3), 0)
        .expect("second")
        .0;
    assert_eq!(second.base_offset, 5);
    // A retry of the first batch: same offsets, nothing appended.
    let retry = append(&mut log, &idempotent_batch(42, 0, 0, 5), 0)
        .expect("retry")
        .0;
    assert_eq!((retry.base_offset, retry.last_offset), (0, 4));
    assert_eq!(log.log_end_offset(), 8);
    // A gap and an old epoch are refused.
    assert!(matches!(
        append(&mut log, &idempotent_batch(42, 0, 10, 1), 0),
        Err(LogError::Producer(
            producers::ProducerError::OutOfOrder { .. }
        ))
    ));
    append(&mut log, &idempotent_batch(42, 1, 0, 1), 0).expect("new epoch from 0");
    assert!(matches!(
        append(&mut log, &idempotent_batch(42, 0, 8, 1), 0),
        Err(LogError::Producer(producers::ProducerError::Fenced { .. }))
    ));
    // The state survives a restart: from the snapshot (written with the checkpoint by
    // a flush) and from the tail recovery scans after it.
    let plan = log.plan_flush(0, true).expect("plan").expect("dirty");
    plan.sync().expect("sync");
    log.finish_flush(plan)
        .expect("prepare")
        .write()
        .expect("finish");
    append(&mut log, &idempotent_batch(7, 0, 0, 2), 0).expect("after the checkpoint");
    drop(log);
    let mut log = Log::open(dir.path(), config(), 0).expect("reopen");
    assert!(dir.path().join("producers.snapshot").exists());
    let retry = append(&mut log, &idempotent_batch(42, 1, 0, 1), 0)
        .expect("retry")
        .0;
    assert_eq!(
        retry.base_offset, 8,
        "a retry from before the snapshot is still a duplicate"
    );
    let retry = append(&mut log, &idempotent_batch(7, 0, 0, 2), 0)
        .expect("retry")
        .0;
    assert_eq!(
        retry.base_offset, 9,
        "a retry from the scanned tail is still a duplicate"
    );
    assert_eq!(log.log_end_offset(), 11);
    assert!(matches!(
        append(&mut log, &idempotent_batch(42, 0, 8, 1), 0),
        Err(LogError::Producer(producers::ProducerError::Fenced { .. }))
    ));
}

#[test]
fn a_roll_that_fails_leaves_the_active_segment_writable() {
    // The new segment cannot be created (a directory sits where its file goes): the roll
    // fails, and the segment it was sealing must keep taking appends and rolls after.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    append(&mut log, &batch(3, 0, Compression::None), 0).expect("append");
    let blocker = dir.path().join(format::segment_file_name(3, "log"));
    std::fs::create_dir(&blocker).expect("block the next segment's file");
    assert!(log.roll(0).is_err(), "the roll cannot create its segment");
    let (info, _) = append(&mut log, &batch(2, 10, Compression::None), 0)
        .expect("the active segment still takes appends");
    assert_eq!(info.base_offset, 3);
    std::fs::remove_dir(&blocker).expect("unblock");
    log.roll(0).expect("a later roll succeeds");
    append(&mut log, &batch(1, 20, Compression::None), 0).expect("append after the roll");
    assert_eq!(
        read_all(&log, 0).iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
}

#[test]
fn a_request_past_a_segments_offset_range_is_refused() {
    // Follower batches carry the leader's offsets: one whose last offset lies past what
    // the segment's 32-bit index can address is refused, not wrapped.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let mut far = batch(1, 0, Compression::None);
    far[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&far[21..]);
    far[17..21].copy_from_slice(&crc.to_be_bytes());
    // The first batch ends exactly at the range's edge (allowed); the next one starts
    // past it in the same segment.
    let prepared = super::follower::prepare_replica(&far).expect("a well-formed replica batch");
    log.append_replica(prepared, 0, 0)
        .expect("up to 2^31 - 1 offsets from the base fit");
    let mut next = batch(1, 0, Compression::None);
    next[..8].copy_from_slice(&(i64::from(i32::MAX) + 1).to_be_bytes());
    let prepared = super::follower::prepare_replica(&next).expect("a well-formed replica batch");
    let end = log.log_end_offset();
    let refused = log.append_replica(prepared, 0, 0);
    assert!(
        matches!(
            refused,
            Err(LogError::InvalidBatch(BatchError::OffsetSpan { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(log.log_end_offset(), end, "nothing appended");
}

#[test]
fn create_time_records_outside_the_timestamp_bounds_are_refused() {
    let now = 1_700_000_000_000;
    let config = LogConfig {
        timestamp_before_max_ms: 60_000,
        timestamp_after_max_ms: 1_000,
        ..config()
    };
    let rules = config.produce_rules(now);
    assert_eq!(rules.timestamps, Some((now - 60_000, now + 1_000)));
    // Records at now - 60 s .. now + 1 s are in range, compressed or not.
    for compression in [Compression::None, Compression::Zstd] {
        let fits = batch(3, now - 60_000, compression);
        assert!(prepare_with(&fits, &rules, MAX_INFLATED_BYTES).is_ok());
        let edge = batch(2, now + 999, compression);
        assert!(prepare_with(&edge, &rules, MAX_INFLATED_BYTES).is_ok());
        // The third record is 1 ms too late.
        let late = batch(3, now + 999, compression);
        let refused = prepare_with(&late, &rules, MAX_INFLATED_BYTES).err();
        assert_eq!(
            refused,
            Some(BatchError::Timestamp {
                index: 2,
                timestamp: now + 1_001,
                low: now - 60_000,
                high: now + 1_000,
            })
        );
        let early = batch(1, now - 60_001, compression);
        assert!(matches!(
            prepare_with(&early, &rules, MAX_INFLATED_BYTES),
            Err(BatchError::Timestamp { index: 0, .. })
        ));
    }
}

/// Sets a batch's max timestamp and attributes as a client may, with a valid CRC.
fn forge_header(batch: &mut [u8], max_timestamp: i64, log_append_time: bool) {
    batch[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    if log_append_time {
        batch[22] |= 0x08;
    }
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn a_produced_header_max_timestamp_is_the_records_max() {
    let now = 1_700_000_000_000;
    let config = LogConfig {
        timestamp_after_max_ms: 1_000,
        ..config()
    };
    let rules = config.produce_rules(now);
    for compression in [Compression::None, Compression::Lz4] {
        // Records at now - 3 .. now - 1; the header claims a year ahead (which would keep
        // the segment from ever expiring) or the distant past.
        for claimed in [now + 365 * 86_400_000, 0, -1] {
            let mut forged = batch(3, now - 3, compression);
            let untouched = batch(3, now - 3, compression);
            forge_header(&mut forged, claimed, false);
            let forged = [untouched.clone(), forged].concat();
            let prepared = prepare_with(&forged, &rules, MAX_INFLATED_BYTES).expect("in range");
            let batches: Vec<&[u8]> = prepared.batches().collect();
            assert_eq!(
                batches[0],
                &untouched[..],
                "an honest header is kept as it is"
            );
            for (batch, header) in batches.iter().zip(&prepared.headers) {
                assert_eq!(header.max_timestamp, now - 1, "{compression:?} {claimed}");
                let stored = format::validate_batch(batch, 1 << 20).expect("CRC recomputed");
                assert_eq!(stored.max_timestamp, now - 1);
            }
        }
    }
    // A LogAppendTime bit would have consumers read every record's timestamp as the
    // header's max, which no bound checked: refused on a CreateTime topic.
    let mut stamped = batch(2, now, Compression::None);
    forge_header(&mut stamped, now + 365 * 86_400_000, true);
    assert!(matches!(
        prepare_with(&stamped, &rules, MAX_INFLATED_BYTES),
        Err(BatchError::Record { index: 0, .. })
    ));
    // A LogAppendTime topic stamps the batch at append anyway.
    let log_append_time = LogConfig {
        log_append_time: true,
        ..config
    };
    let rules = log_append_time.produce_rules(now);
    assert!(prepare_with(&stamped, &rules, MAX_INFLATED_BYTES).is_ok());
}

#[test]
fn log_append_time_topics_do_not_check_producer_timestamps() {
    let now = 1_700_000_000_000;
    let config = LogConfig {
        timestamp_before_max_ms: 60_000,
        timestamp_after_max_ms: 1_000,
        ..config()
    };
    // LogAppendTime topics stamp batches themselves: producer timestamps are not checked.
    let stamped = LogConfig {
        log_append_time: true,
        ..config
    };
    let rules = stamped.produce_rules(now);
    assert_eq!(rules.timestamps, None);
    assert!(prepare_with(&batch(1, 0, Compression::None), &rules, MAX_INFLATED_BYTES).is_ok());
}

/// Descriptors this process holds on files under `dir` (the other tests' files are
/// elsewhere, so the count is this test's own).
fn open_files_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(dir))
        })
        .count()
}

/// Runs a periodic flush the way the partition's housekeeping does.
fn flush_now(log: &mut Log, now_ms: i64) {
    if let Some(plan) = log.plan_flush(now_ms, true).expect("plan flush") {
        plan.sync().expect("fsync");
        log.finish_flush(plan)
            .expect("prepare")
            .write()
            .expect("finish flush");
    }
}

#[test]
fn an_idle_active_segment_releases_its_files_and_reads_and_appends_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    append(&mut log, &batch(5, 0, Compression::None), 0).expect("append");
    let before = read_all(&log, 0);
    assert!(
        !log.release_idle_files(100_000, 10_000),
        "unflushed data keeps the files open"
    );
    flush_now(&mut log, 1);
    assert!(
        !log.release_idle_files(5_000, 10_000),
        "appended to 5 s ago: not idle yet"
    );
    assert!(log.release_idle_files(10_000, 10_000));
    // Released files are read through the cache: opened again, read-only.
    assert_eq!(
        read_all(&log, 0),
        before,
        "the same bytes after the files were closed"
    );
    append(&mut log, &batch(3, 0, Compression::None), 20_000).expect("append reopens");
    assert_eq!(log.log_end_offset(), 8);
    flush_now(&mut log, 20_001);
    drop(log);
    let log = Log::open(dir.path(), config(), 30_000).expect("reopen");
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(&read_all(&log, 0)[..before.len()], &before[..]);
}

#[test]
fn many_idle_logs_hold_no_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut logs: Vec<Log> = (0..200)
        .map(|i| Log::open(&dir.path().join(i.to_string()), config(), 0).expect("open"))
        .collect();
    assert_eq!(
        open_files_under(dir.path()),
        0,
        "new logs hold no descriptors"
    );
    for log in logs.iter_mut().take(10) {
        append(log, &batch(2, 0, Compression::None), 0).expect("append");
    }
    assert_eq!(
        open_files_under(dir.path()),
        30,
        "a written partition holds its three files"
    );
    for log in &mut logs {
        flush_now(log, 1);
        log.release_idle_files(60_000, 30_000);
    }
    assert_eq!(open_files_under(dir.path()), 0, "idle again: released");
    drop(logs);
    let reopened: Vec<Log> = (0..200)
        .map(|i| Log::open(&dir.path().join(i.to_string()), config(), 0).expect("reopen"))
        .collect();
    assert_eq!(
        open_files_under(dir.path()),
        0,
        "a restart opens none for good"
    );
    assert_eq!(reopened[3].log_end_offset(), 2);
}

#[test]
fn a_clean_reopen_and_a_new_log_write_no_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join(CHECKPOINT_FILE);
    let log = Log::open(dir.path(), config(), 0).expect("open");
    assert!(!checkpoint.exists(), "a new, empty log needs no checkpoint");
    drop(log);
    let mut log = Log::open(dir.path(), config(), 0).expect("reopen empty");
    assert!(
        !checkpoint.exists(),
        "nor does it when reopened still empty"
    );
    append(&mut log, &batch(4, 0, Compression::None), 0).expect("append");
    flush_now(&mut log, 1);
    drop(log);
    let stamp = std::fs::read(&checkpoint).expect("read");
    std::fs::remove_file(&checkpoint).expect("remove");
    std::fs::write(&checkpoint, &stamp).expect("put back");
    let replaced = std::fs::metadata(&checkpoint).expect("checkpoint");
    let log = Log::open(dir.path(), config(), 10).expect("reopen");
    assert_eq!(log.log_end_offset(), 4);
    drop(log);
    let after = std::fs::metadata(&checkpoint).expect("checkpoint");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        after.ino(),
        replaced.ino(),
        "a clean reopen leaves the checkpoint file as it was (no rewrite by rename)"
    );
}

/// A new partition is a directory: its first segment's files are created by the first
/// append. Reopened before that, it is the same empty log at the same start offset; a
/// read of it finds nothing instead of failing on the missing files.
#[test]
fn a_new_log_creates_its_segment_files_on_the_first_append() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("t-0");
    let files = |dir: &Path| std::fs::read_dir(dir).expect("list").count();
    let log = Log::open_at(&dir, config(), 0, 42).expect("open");
    assert_eq!(files(&dir), 0, "nothing but the directory");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (42, 42));
    assert!(log.locate(42).expect("locate").is_none());
    assert!(read_all(&log, 42).is_empty());
    drop(log);

    // Reopened untouched: still nothing on disk, same offsets (the start comes from the
    // caller, as it did when an empty `.log` file held it unfsynced).
    let mut log = Log::open_at(&dir, config(), 0, 42).expect("reopen");
    assert_eq!(files(&dir), 0);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (42, 42));

    append(&mut log, &batch(3, 0, Compression::None), 0).expect("append");
    assert!(dir.join(format::segment_file_name(42, "log")).exists());
    assert!(dir.join(format::segment_file_name(42, "index")).exists());
    assert!(
        dir.join(format::segment_file_name(42, "timeindex"))
            .exists()
    );
    flush_now(&mut log, 1);
    drop(log);

    // The records survive a reopen whatever start offset the caller passes now.
    let log = Log::open_at(&dir, config(), 0, 0).expect("reopen written");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (42, 45));
    assert_eq!(read_all(&log, 42).len(), 3);
}

/// A log reset to an offset (a follower truncated below its start) restarts empty there
/// with no segment files; the checkpoint the reset writes keeps that start across a
/// restart that passes no start offset.
#[test]
fn a_reset_log_keeps_its_start_offset_without_segment_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    append(&mut log, &batch(5, 0, Compression::None), 0).expect("append");
    flush_now(&mut log, 1);
    log.reset_to(100, None, 2).expect("reset");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
    drop(log);
    let log = Log::open(dir.path(), config(), 3).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
    assert!(
        !dir.path()
            .join(format::segment_file_name(100, "log"))
            .exists(),
        "the empty segment is still deferred"
    );
}
