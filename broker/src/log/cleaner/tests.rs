//! Tests of log compaction: the plan, the staged copies, the swap, crash recovery, and
//! reads over the gaps cleaning leaves.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{Compression, Record, TimestampType};

use super::*;
use crate::log::records::{MAX_INFLATED_BYTES, for_each_timestamp};
use crate::log::{BatchError, Log, LogConfig, LogError, prepare, read_batches, write_atomically};

/// A stored batch's records, read by the broker's own bounded decoder.
struct Decoded {
    records: Vec<Record>,
    compression: Compression,
}

fn decode_batch(batch: Bytes) -> io::Result<Decoded> {
    let (records, compression) = decode_records(&batch, &mut Budget::new(MAX_INFLATED_BYTES))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(Decoded {
        records,
        compression,
    })
}

fn record_timestamps(batch: Vec<u8>) -> io::Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    for_each_timestamp(
        &batch,
        &mut Budget::new(MAX_INFLATED_BYTES),
        |offset, ts| {
            out.push((offset, ts));
            true
        },
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(out)
}
use crate::partition::Partition;

#[test]
fn checkpoint_v1_bytes() {
    let bytes = encode_checkpoint(42);
    assert_eq!(&bytes[..5], b"SCLN\x01");
    assert_eq!(&bytes[5..13], &42i64.to_be_bytes());
    assert_eq!(decode_checkpoint(&bytes), Some(42));
    let mut bad = bytes.clone();
    bad[7] ^= 1;
    assert_eq!(decode_checkpoint(&bad), None);
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Enough room in the offset map for every key of these tests.
const MAX_KEYS: usize = 1 << 20;
/// delete.retention.ms that keeps every tombstone of a test.
const DAY_MS: i64 = 86_400_000;

/// A (key, value) pair; `None` is a keyless record or a tombstone.
pub(crate) type Rec = (Option<String>, Option<String>);

fn kv(key: impl Into<String>, value: impl Into<String>) -> Rec {
    (Some(key.into()), Some(value.into()))
}

fn tombstone(key: impl Into<String>) -> Rec {
    (Some(key.into()), None)
}

fn keyless(value: impl Into<String>) -> Rec {
    (None, Some(value.into()))
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
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
        compact: true,
        delete_retention_ms: DAY_MS,
        min_cleanable_dirty_ratio: 0.5,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

fn bytes_of(s: &Option<String>) -> Option<Bytes> {
    s.as_ref().map(|s| Bytes::copy_from_slice(s.as_bytes()))
}

/// A client's record at relative `offset`: no producer id, sequence `offset - 1` (the
/// encoder keeps records in one batch while offset - sequence stays constant).
pub(crate) fn record(offset: i64, (key, value): &Rec, timestamp: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset as i32 - 1,
        timestamp,
        key: bytes_of(key),
        value: bytes_of(value),
        headers: IndexMap::new(),
    }
}

pub(crate) fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
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

/// One batch of `entries`, record `i` with timestamp `ts + i`.
fn batch_of(entries: &[Rec], ts: i64, compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| record(i as i64, e, ts + i as i64))
        .collect();
    encode(&records, compression)
}

/// A batch of producer 7, epoch 3, from sequence `first_seq`.
fn idempotent_batch(entries: &[Rec], first_seq: i32, compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| Record {
            producer_id: 7,
            producer_epoch: 3,
            sequence: first_seq + i as i32,
            ..record(i as i64, e, 1000 + i as i64)
        })
        .collect();
    encode(&records, compression)
}

/// Appends raw batches as the produce path does (without the key check); returns the
/// base offset.
fn append_raw(log: &mut Log, bytes: &[u8], now_ms: i64) -> i64 {
    let prepared = prepare(
        bytes,
        log.config().max_message_bytes,
        false,
        MAX_INFLATED_BYTES,
    )
    .expect("valid batch");
    let (info, _) = log.append(prepared, 0, now_ms).expect("append");
    info.base_offset
}

/// Everything ever appended, by offset: what compaction results are checked against.
#[derive(Debug, Default, Clone)]
struct Model(BTreeMap<i64, Rec>);

impl Model {
    fn put(&mut self, log: &mut Log, entries: &[Rec], ts: i64) -> i64 {
        self.put_with(log, entries, ts, Compression::None)
    }

    fn put_with(
        &mut self,
        log: &mut Log,
        entries: &[Rec],
        ts: i64,
        compression: Compression,
    ) -> i64 {
        let base = append_raw(log, &batch_of(entries, ts, compression), ts);
        for (i, e) in entries.iter().enumerate() {
            self.0.insert(base + i as i64, e.clone());
        }
        base
    }

    fn all(&self) -> Vec<(i64, Rec)> {
        self.0.iter().map(|(o, r)| (*o, r.clone())).collect()
    }

    /// What a pass whose offset map covers `[0, map_end)` leaves: in the offsets for which
    /// `cleaned` holds, the last record of each key (keyless records all), and tombstones
    /// only if `keep_tombstones`; everything else untouched.
    fn compacted_in(
        &self,
        map_end: i64,
        cleaned: impl Fn(i64) -> bool,
        keep_tombstones: bool,
    ) -> Vec<(i64, Rec)> {
        let mut last: HashMap<&str, i64> = HashMap::new();
        for (&offset, (key, _)) in self.0.range(..map_end) {
            if let Some(key) = key {
                last.insert(key, offset);
            }
        }
        self.0
            .iter()
            .filter(|&(&offset, (key, value))| {
                if !cleaned(offset) {
                    return true;
                }
                match key {
                    None => true,
                    Some(key) => {
                        let latest = last.get(key.as_str()).is_none_or(|&l| l == offset);
                        latest && (keep_tombstones || value.is_some())
                    }
                }
            })
            .map(|(o, r)| (*o, r.clone()))
            .collect()
    }

    /// A pass over every sealed segment below `end`.
    fn compacted(&self, end: i64, keep_tombstones: bool) -> Vec<(i64, Rec)> {
        self.compacted_in(end, |o| o < end, keep_tombstones)
    }
}

/// Splits raw bytes into whole batches.
fn split_batches(bytes: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut position = 0;
    while let Some((_, size, _)) = format::read_batch_prefix(&bytes[position..]) {
        out.push(Bytes::copy_from_slice(&bytes[position..position + size]));
        position += size;
    }
    assert_eq!(position, bytes.len(), "only whole batches");
    out
}

fn records_of(batch: &Bytes) -> Vec<(i64, Rec)> {
    decode_batch(batch.clone())
        .expect("decode a stored batch")
        .records
        .into_iter()
        .map(|r| {
            let s = |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).expect("utf-8"));
            (r.offset, (s(r.key), s(r.value)))
        })
        .collect()
}

/// Reads the whole log from its start as a consumer would: whole batches from the
/// offset on, going on to the next segment where cleaning left nothing.
fn read_all(log: &Log) -> Vec<(i64, Rec)> {
    let mut out: Vec<(i64, Rec)> = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(location) = log.locate(offset).expect("locate") {
        let bytes = read_batches(&location, offset, 1 << 20, i64::MAX).expect("read");
        if bytes.is_empty() {
            match log.next_segment_base(offset) {
                Some(next) => {
                    assert!(next > offset);
                    offset = next;
                    continue;
                }
                None => break,
            }
        }
        let before = out.len();
        for batch in split_batches(&bytes) {
            out.extend(records_of(&batch).into_iter().filter(|(o, _)| *o >= offset));
        }
        assert!(out.len() > before, "no progress at {offset}");
        offset = out.last().expect("records").0 + 1;
    }
    assert!(
        out.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets strictly increase: {out:?}"
    );
    out
}

/// Offsets of what a Partition::read from `offset` returns.
fn partition_read(partition: &Partition, offset: i64) -> Vec<i64> {
    let (bytes, _) = partition.read_local(offset, 1 << 20).expect("read");
    split_batches(&bytes)
        .iter()
        .flat_map(records_of)
        .map(|(o, _)| o)
        .collect()
}

fn seg_path(dir: &Path, base: i64, extension: &str) -> PathBuf {
    dir.join(format::segment_file_name(base, extension))
}

fn file_size(dir: &Path, base: i64) -> u64 {
    fs::metadata(seg_path(dir, base, "log"))
        .expect("segment file")
        .len()
}

fn segment_batches(dir: &Path, base: i64) -> Vec<Bytes> {
    split_batches(&fs::read(seg_path(dir, base, "log")).expect("read a segment"))
}

/// Bases of the `.log` files in the partition directory, sorted.
fn log_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn assert_no_leftovers(dir: &Path) {
    assert!(!dir.join(STAGING_DIR).exists(), "the staging dir is gone");
    let markers: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".swap") || n.ends_with(".tmp"))
        .collect();
    assert!(
        markers.is_empty(),
        "no swap markers or temp files: {markers:?}"
    );
}

fn set_mtime(path: &Path, ms: i64) {
    File::options()
        .write(true)
        .open(path)
        .expect("open to set mtime")
        .set_modified(system_time(ms))
        .expect("set mtime");
}

fn mtime_ms(path: &Path) -> i64 {
    fs::metadata(path)
        .expect("metadata")
        .modified()
        .expect("mtime")
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

fn stored_first_dirty(dir: &Path) -> Option<i64> {
    decode_checkpoint(&fs::read(dir.join(CHECKPOINT_FILE)).ok()?)
}

/// What one whole pass did.
#[derive(Debug)]
struct Pass {
    groups: Vec<(i64, i64)>,
    records_removed: u64,
    first_dirty: i64,
    bytes_removed: u64,
}

fn clean(log: &mut Log, now_ms: i64) -> Option<Pass> {
    clean_with(log, now_ms, MAX_KEYS)
}

/// plan → stage → swap, as Partition::clean does.
fn clean_with(log: &mut Log, now_ms: i64, max_keys: usize) -> Option<Pass> {
    let plan = log.clean_plan(now_ms)?;
    let staged = stage(&plan, now_ms, max_keys).expect("stage");
    drop(plan);
    let groups = staged.groups.iter().map(|g| (g.base, g.end)).collect();
    let records_removed = staged.records_removed;
    let first_dirty = staged.first_dirty;
    let bytes_removed = log.finish_clean(staged, now_ms).expect("finish_clean");
    assert_no_leftovers(log.dir());
    Some(Pass {
        groups,
        records_removed,
        first_dirty,
        bytes_removed,
    })
}

fn with_segment_bytes(log: &mut Log, segment_bytes: u64) {
    let mut config = log.config().clone();
    config.segment_bytes = segment_bytes;
    log.set_config(config);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One segment of five keys nobody overwrites, then three versions of `KEYS` keys, each
/// version in a different key order, in segments of ten records (two batches of five);
/// then an active segment with a fourth version of key-00 and a new key. Sealed segments
/// end at 65.
const KEYS: usize = 20;
const SEALED_END: i64 = 65;

fn three_versions(log: &mut Log) -> Model {
    let mut model = Model::default();
    let solo: Vec<Rec> = (0..5).map(|i| kv(format!("solo-{i}"), "s")).collect();
    model.put(log, &solo, 100);
    log.roll(0).expect("roll");
    for round in 0..3usize {
        // 7 is coprime with 20: a permutation of the keys, different in every round.
        let order: Vec<usize> = (0..KEYS).map(|i| (i * 7 + round * 3) % KEYS).collect();
        for (n, chunk) in order.chunks(5).enumerate() {
            let entries: Vec<Rec> = chunk
                .iter()
                .map(|k| kv(format!("key-{k:02}"), format!("v{round}-{k:02}")))
                .collect();
            model.put(log, &entries, 1000 * (round as i64 + 1) + 10 * n as i64);
            if n % 2 == 1 {
                log.roll(0).expect("roll");
            }
        }
    }
    assert_eq!(log.log_end_offset(), SEALED_END);
    model.put(log, &[kv("key-00", "v3-00"), kv("tail", "t")], 5000);
    model
}

// ---------------------------------------------------------------------------------------
// 1. The last version of each key, at its original offset, in merged segments
// ---------------------------------------------------------------------------------------

#[test]
fn a_pass_keeps_the_last_version_of_each_key_at_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let model = three_versions(&mut log);
    assert_eq!(log.segment_count(), 8, "7 sealed + the active one");
    let active = fs::read(seg_path(dir.path(), SEALED_END, "log")).expect("active");
    let solo_batch = segment_batches(dir.path(), 0)[0].clone();
    let size_before = log.size_bytes();
    let end_before = log.log_end_offset();
    assert_eq!(read_all(&log), model.all());

    let pass = clean(&mut log, 10_000).expect("a pass is due");
    assert_eq!(
        pass.groups,
        vec![(0, SEALED_END)],
        "everything merged into one"
    );
    assert_eq!(pass.first_dirty, SEALED_END);
    assert_eq!(pass.records_removed, 2 * KEYS as u64);
    assert_eq!(log.size_bytes(), size_before - pass.bytes_removed);
    assert!(pass.bytes_removed > 0);

    // Exactly the last version of each key at its original offset; the active segment
    // (which holds a newer key-00) is not part of the pass.
    let read = read_all(&log);
    assert_eq!(read, model.compacted(SEALED_END, true));
    let sealed: Vec<&(i64, Rec)> = read.iter().filter(|(o, _)| *o < SEALED_END).collect();
    assert_eq!(sealed.len(), 5 + KEYS);
    for k in 0..KEYS {
        let key = format!("key-{k:02}");
        let found: Vec<_> = sealed
            .iter()
            .filter(|(_, (rk, _))| rk.as_deref() == Some(key.as_str()))
            .collect();
        assert_eq!(found.len(), 1, "one record of {key}");
        assert_eq!(found[0].1.1.as_deref(), Some(format!("v2-{k:02}").as_str()));
        assert_eq!(model.0[&found[0].0], found[0].1, "at its original offset");
    }

    // Merged: one cleaned segment and the untouched active one.
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log_bases(dir.path()), vec![0, SEALED_END]);
    assert_eq!(
        fs::read(seg_path(dir.path(), SEALED_END, "log")).expect("active"),
        active,
        "the active segment is untouched"
    );
    assert_eq!(log.log_end_offset(), end_before);
    assert_eq!(log.log_start_offset(), 0);
    // A batch with nothing removed is copied byte for byte.
    assert_eq!(segment_batches(dir.path(), 0)[0], solo_batch);
    assert_eq!(stored_first_dirty(dir.path()), Some(SEALED_END));
    // Nothing new is dirty.
    assert!(log.clean_plan(20_000).is_none());

    // The active segment is appended to as before, and a later pass picks it up.
    let mut config = log.config().clone();
    config.min_cleanable_dirty_ratio = 0.0;
    log.set_config(config);
    append_raw(
        &mut log,
        &batch_of(&[kv("key-05", "v4-05")], 6000, Compression::None),
        0,
    );
    log.roll(0).expect("roll");
    let pass = clean(&mut log, 20_000).expect("the rolled segment is dirty");
    assert_eq!(pass.first_dirty, end_before + 1);
    let read = read_all(&log);
    let keys: Vec<&str> = read
        .iter()
        .filter_map(|(_, (k, _))| k.as_deref())
        .filter(|k| *k == "key-00" || *k == "key-05")
        .collect();
    assert_eq!(
        keys,
        vec!["key-00", "key-05"],
        "older versions are gone now"
    );
}

#[test]
fn cleaned_batches_keep_compression_and_producer_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let idempotent =
        |entries: &[Rec], first_seq| idempotent_batch(entries, first_seq, Compression::Gzip);
    let first: Vec<Rec> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|k| kv(*k, format!("{k}1")))
        .collect();
    append_raw(&mut log, &idempotent(&first, 0), 0);
    let second_batch = idempotent(&[kv("a", "a2"), kv("c", "c2")], 6);
    append_raw(&mut log, &second_batch, 0);
    log.roll(0).expect("roll");
    append_raw(
        &mut log,
        &batch_of(&[kv("z", "z")], 2000, Compression::None),
        0,
    );

    let pass = clean(&mut log, 10_000).expect("due");
    assert_eq!(pass.records_removed, 2);
    let batches = segment_batches(dir.path(), 0);
    assert_eq!(batches.len(), 2);
    let set = decode_batch(batches[0].clone()).expect("decode");
    assert_eq!(set.compression, Compression::Gzip, "the codec is kept");
    let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        vec![1, 3, 4, 5],
        "original offsets, a and c dropped"
    );
    for r in &set.records {
        assert_eq!((r.producer_id, r.producer_epoch), (7, 3));
        assert_eq!(
            r.sequence, r.offset as i32,
            "the original sequence of each record"
        );
    }
    let header = format::parse_validated_header(&batches[0]);
    assert_eq!(header.base_offset, 1);
    assert_eq!(header.producer_id, 7);
    assert_eq!(header.base_sequence, 1);
    // The second batch lost nothing: byte for byte (offsets 6 and 7 patched in).
    let mut expected = second_batch.clone();
    format::patch_batch(&mut expected, 6, 0);
    assert_eq!(batches[1].as_ref(), expected.as_slice());
}

/// A merged copy ends where the group's last segment ended, so it takes that segment's
/// `<base>.producers` (the idempotent producers' state uploaded with it).
#[test]
fn a_merged_copy_takes_the_producer_state_of_its_last_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let mut seq = 0;
    for keys in [&["a", "b", "c"][..], &["a", "b", "d"], &["a", "e"]] {
        let entries: Vec<Rec> = keys.iter().map(|k| kv(*k, format!("{seq}"))).collect();
        append_raw(
            &mut log,
            &idempotent_batch(&entries, seq, Compression::None),
            0,
        );
        seq += entries.len() as i32;
        log.roll(0).expect("roll");
    }
    let tail = idempotent_batch(&[kv("z", "z")], seq, Compression::None);
    append_raw(&mut log, &tail, 0);
    let producers = |base| seg_path(dir.path(), base, "producers");
    for base in [0, 3, 6] {
        assert!(producers(base).exists(), "written when {base} was sealed");
    }
    let last_state = fs::read(producers(6)).expect("read");

    let pass = clean(&mut log, 10_000).expect("due");
    assert_eq!(pass.groups, vec![(0, 8)]);
    assert_eq!(fs::read(producers(0)).expect("read"), last_state);
    assert!(!producers(3).exists() && !producers(6).exists());
    assert_eq!(log_bases(dir.path()), vec![0, 8]);
    let candidates = log.upload_candidates(None, i64::MAX, 10);
    assert_eq!(candidates.len(), 1);
    assert_eq!(
        candidates[0].producers.as_deref(),
        Some(producers(0).as_path())
    );
    // A retry of the last batch is still recognised.
    let prepared = prepare(&tail, 1 << 20, false, MAX_INFLATED_BYTES).expect("valid");
    let (info, _) = log.append(prepared, 0, 0).expect("retry");
    assert_eq!((info.base_offset, info.records), (8, 0), "a duplicate");
}

/// LogAppendTime topics: consumers see the batch's append time, so a re-encoded batch
/// must keep the timestamp type and the max timestamp.
#[test]
fn cleaning_keeps_log_append_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.log_append_time = true;
    let mut log = Log::open(dir.path(), config, 0).expect("open");
    let append_time = 50_000;
    append_raw(
        &mut log,
        &batch_of(&[kv("a", "a1"), kv("b", "b1")], 1000, Compression::None),
        append_time,
    );
    append_raw(
        &mut log,
        &batch_of(&[kv("a", "a2")], 1000, Compression::None),
        append_time,
    );
    log.roll(append_time).expect("roll");
    append_raw(
        &mut log,
        &batch_of(&[kv("z", "z")], 1000, Compression::None),
        append_time,
    );
    let before = segment_batches(dir.path(), 0);
    assert!(format::is_log_append_time(&before[0]));
    assert_eq!(
        record_timestamps(before[0].to_vec()).expect("timestamps"),
        vec![(0, append_time), (1, append_time)]
    );

    clean(&mut log, 60_000).expect("due");
    let after = segment_batches(dir.path(), 0);
    assert_eq!(records_of(&after[0]), vec![(1, kv("b", "b1"))]);
    assert!(
        format::is_log_append_time(&after[0]),
        "the re-encoded batch is still LogAppendTime"
    );
    assert_eq!(
        format::parse_validated_header(&after[0]).max_timestamp,
        append_time
    );
    assert_eq!(
        record_timestamps(after[0].to_vec()).expect("timestamps"),
        vec![(1, append_time)],
        "consumers still see the append time"
    );
}

#[test]
fn the_offset_map_limit_splits_the_work_into_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.min_cleanable_dirty_ratio = 0.0;
    let mut log = Log::open(dir.path(), config, 0).expect("open");
    let mut model = Model::default();
    for segment in 0..3 {
        // Ten keys of its own and one shared key.
        let mut entries: Vec<Rec> = (0..10)
            .map(|k| kv(format!("s{segment}-{k}"), "x"))
            .collect();
        entries.push(kv("shared", format!("{segment}")));
        model.put(&mut log, &entries, 1000);
        log.roll(0).expect("roll");
    }
    model.put(&mut log, &[kv("tail", "t")], 2000);

    // Room for 15 keys: the first segment (11) fits, the second would make 21.
    let pass = clean_with(&mut log, 10_000, 15).expect("due");
    assert_eq!(pass.first_dirty, 11);
    assert_eq!(
        pass.groups,
        Vec::<(i64, i64)>::new(),
        "nothing to remove yet"
    );
    assert_eq!(read_all(&log), model.all());
    assert_eq!(stored_first_dirty(dir.path()), Some(11));

    // The next pass starts there; the first segment's `shared` goes once the map holds
    // a later one.
    let plan = log.clean_plan(10_000).expect("due");
    assert_eq!(plan.first_dirty, 11);
    drop(plan);
    let pass = clean_with(&mut log, 10_000, 15).expect("due");
    assert_eq!(pass.first_dirty, 22);
    assert_eq!(pass.records_removed, 1);
    assert_eq!(read_all(&log), model.compacted_in(22, |o| o < 22, true));

    let pass = clean_with(&mut log, 10_000, 15).expect("due");
    assert_eq!(pass.first_dirty, 33);
    assert_eq!(read_all(&log), model.compacted(33, true));
    assert!(log.clean_plan(10_000).is_none());
}

// ---------------------------------------------------------------------------------------
// 2. Tombstones
// ---------------------------------------------------------------------------------------

/// seg 0: a b c d; seg 4: a=null b c=null; seg 7: c (revived) a=null e=null; active: f.
fn tombstone_log(dir: &Path, delete_retention_ms: i64) -> (Log, Model) {
    let mut config = config();
    config.delete_retention_ms = delete_retention_ms;
    let mut log = Log::open(dir, config, 0).expect("open");
    let mut model = Model::default();
    model.put(
        &mut log,
        &[kv("a", "a1"), kv("b", "b1"), kv("c", "c1"), kv("d", "d1")],
        1000,
    );
    log.roll(0).expect("roll");
    model.put(
        &mut log,
        &[tombstone("a"), kv("b", "b2"), tombstone("c")],
        2000,
    );
    log.roll(0).expect("roll");
    model.put(
        &mut log,
        &[kv("c", "c3"), tombstone("a"), tombstone("e")],
        3000,
    );
    log.roll(0).expect("roll");
    model.put(&mut log, &[kv("f", "f1")], 4000);
    (log, model)
}

#[test]
fn tombstones_within_delete_retention_stay_latest_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = tombstone_log(dir.path(), DAY_MS);
    clean(&mut log, wall_ms()).expect("due");
    let read = read_all(&log);
    assert_eq!(read, model.compacted(10, true));
    assert_eq!(
        read,
        vec![
            (3, kv("d", "d1")),
            (5, kv("b", "b2")),
            (7, kv("c", "c3")),
            (8, tombstone("a")),
            (9, tombstone("e")),
            (10, kv("f", "f1")),
        ],
        "one tombstone of a (the latest), none of c (revived)"
    );
}

#[test]
fn tombstones_past_delete_retention_are_removed() {
    // The segments were last written an hour ago; delete.retention.ms is 0.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = tombstone_log(dir.path(), 0);
    let now = wall_ms();
    for base in [0, 4, 7] {
        set_mtime(&seg_path(dir.path(), base, "log"), now - 3_600_000);
    }
    clean(&mut log, now).expect("due");
    let read = read_all(&log);
    assert_eq!(read, model.compacted(10, false));
    assert!(
        read.iter().all(|(_, (_, v))| v.is_some()),
        "no tombstones: {read:?}"
    );
    assert_eq!(
        read.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        vec![3, 5, 7, 10]
    );

    // The same with fresh files and a clock a day ahead of them.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = tombstone_log(dir.path(), 60_000);
    clean(&mut log, wall_ms() + DAY_MS).expect("due");
    assert_eq!(read_all(&log), model.compacted(10, false));
}

#[test]
fn a_cleaned_copy_keeps_the_write_time_of_what_it_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = tombstone_log(dir.path(), DAY_MS);
    let mut config = log.config().clone();
    config.min_cleanable_dirty_ratio = 0.0;
    log.set_config(config);
    let now = wall_ms();
    let newest = now - 10 * 3_600_000;
    set_mtime(&seg_path(dir.path(), 0, "log"), newest - 2 * 3_600_000);
    set_mtime(&seg_path(dir.path(), 4, "log"), newest);
    set_mtime(&seg_path(dir.path(), 7, "log"), newest - 3_600_000);

    // Ten hours old: within delete.retention.ms, the tombstones stay.
    clean(&mut log, now).expect("due");
    assert_eq!(read_all(&log), model.compacted(10, true));
    assert_eq!(log_bases(dir.path()), vec![0, 10]);
    assert_eq!(
        mtime_ms(&seg_path(dir.path(), 0, "log")),
        newest,
        "the newest write time of the replaced segments, not the time of the pass"
    );

    // A day after that write time the next pass drops them, though the copy is new.
    append_raw(
        &mut log,
        &batch_of(&[kv("g", "g1")], 5000, Compression::None),
        0,
    );
    log.roll(0).expect("roll");
    clean(&mut log, newest + DAY_MS + 60_000).expect("due");
    let read = read_all(&log);
    assert!(
        read.iter().all(|(_, (_, v))| v.is_some()),
        "no tombstones: {read:?}"
    );
    assert_eq!(
        read.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        vec![3, 5, 7, 10, 11]
    );
}

#[test]
fn a_segment_of_expired_tombstones_becomes_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.delete_retention_ms = 0;
    config.segment_bytes = 1; // no merging
    let mut log = Log::open(dir.path(), config, 0).expect("open");
    append_raw(
        &mut log,
        &batch_of(&[kv("a", "1")], 1000, Compression::None),
        0,
    );
    log.roll(0).expect("roll");
    append_raw(
        &mut log,
        &batch_of(&[tombstone("a"), tombstone("b")], 1000, Compression::None),
        0,
    );
    log.roll(0).expect("roll");
    append_raw(
        &mut log,
        &batch_of(&[kv("c", "1")], 1000, Compression::None),
        0,
    );

    let pass = clean(&mut log, wall_ms() + DAY_MS).expect("due");
    assert_eq!(pass.groups, vec![(0, 1), (1, 3)]);
    assert_eq!(pass.records_removed, 3);
    assert_eq!(file_size(dir.path(), 0), 0);
    assert_eq!(file_size(dir.path(), 1), 0);
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log), vec![(3, kv("c", "1"))]);
}

// ---------------------------------------------------------------------------------------
// 3. Keyless records
// ---------------------------------------------------------------------------------------

#[test]
fn keyless_records_are_kept_by_the_cleaner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let mut model = Model::default();
    model.put(
        &mut log,
        &[keyless("x0"), kv("a", "1"), keyless("x1"), kv("a", "2")],
        1000,
    );
    log.roll(0).expect("roll");
    model.put(&mut log, &[kv("a", "3"), keyless("x2")], 2000);
    log.roll(0).expect("roll");
    model.put(&mut log, &[keyless("x3")], 3000);

    let pass = clean(&mut log, 10_000).expect("due");
    assert_eq!(pass.records_removed, 2);
    let read = read_all(&log);
    assert_eq!(read, model.compacted(6, true));
    assert_eq!(
        read,
        vec![
            (0, keyless("x0")),
            (2, keyless("x1")),
            (4, kv("a", "3")),
            (5, keyless("x2")),
            (6, keyless("x3")),
        ]
    );
}

#[test]
fn require_keys_refuses_keyless_records() {
    let keyed = batch_of(&[kv("a", "1"), kv("b", "2")], 0, Compression::None);
    assert_eq!(require_keys(&keyed), Ok(()));
    let compressed = batch_of(&[kv("a", "1"), kv("b", "2")], 0, Compression::Lz4);
    assert_eq!(require_keys(&compressed), Ok(()));
    let tombstones = batch_of(&[tombstone("a")], 0, Compression::None);
    assert_eq!(require_keys(&tombstones), Ok(()), "a tombstone has a key");

    let mixed = batch_of(
        &[kv("a", "1"), kv("b", "2"), keyless("x")],
        0,
        Compression::Snappy,
    );
    assert!(matches!(
        require_keys(&mixed),
        Err(BatchError::Record { index: 2, .. })
    ));
    // The keyless record may be in any batch of the request.
    let mut two = keyed.clone();
    two.extend_from_slice(&batch_of(&[keyless("x")], 0, Compression::None));
    assert!(matches!(
        require_keys(&two),
        Err(BatchError::Record { index: 0, .. })
    ));
    let mut both_keyed = keyed.clone();
    both_keyed.extend_from_slice(&compressed);
    assert_eq!(require_keys(&both_keyed), Ok(()));
}

#[test]
fn a_compacted_partition_refuses_keyless_produce() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(&dir.path().join("compact"), config(), 0).expect("open");
    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    let keyless_batch = Bytes::from(batch_of(&[keyless("x")], 0, Compression::None));
    let refused = rt.block_on(partition.append(&keyless_batch, 0, 1, 1, 1000));
    assert!(matches!(
        refused,
        Err(crate::partition::PartitionError::Log(
            LogError::InvalidBatch(BatchError::Record { index: 0, .. })
        ))
    ));
    assert_eq!(partition.high_watermark(), 0, "nothing appended");
    let keyed = Bytes::from(batch_of(&[kv("a", "1")], 0, Compression::None));
    rt.block_on(partition.append(&keyed, 0, 1, 1, 1000))
        .expect("a keyed batch is accepted");
    assert_eq!(partition.high_watermark(), 1);

    // A topic without compaction takes keyless records.
    let mut config = config();
    config.compact = false;
    let log = Log::open(&dir.path().join("delete"), config, 0).expect("open");
    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    rt.block_on(partition.append(&keyless_batch, 0, 1, 1, 1000))
        .expect("keyless is fine without compaction");
}

// ---------------------------------------------------------------------------------------
// 4. When a pass is due
// ---------------------------------------------------------------------------------------

#[test]
fn min_compaction_lag_keeps_young_segments_out_of_the_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.min_compaction_lag_ms = 3000;
    let mut log = Log::open(dir.path(), config, 0).expect("open");
    let mut model = Model::default();
    // Versions 0, 1, 2 of five keys, written at 1000, 5000 and 9000.
    for round in 0..3 {
        let entries: Vec<Rec> = (0..5)
            .map(|k| kv(format!("k{k}"), format!("v{round}")))
            .collect();
        model.put(&mut log, &entries, 1000 + 4000 * round);
        log.roll(0).expect("roll");
    }
    model.put(&mut log, &[kv("tail", "t")], 9500);

    let bases = |log: &Log, now| {
        log.clean_plan(now)
            .map(|p| p.segments.iter().map(|s| s.base_offset).collect::<Vec<_>>())
    };
    // The lag ends the range at the first segment whose newest record is younger.
    assert_eq!(
        bases(&log, 3000),
        None,
        "every segment is younger than the lag"
    );
    assert_eq!(bases(&log, 6000), Some(vec![0]));
    assert_eq!(bases(&log, 10_000), Some(vec![0, 5]));
    assert_eq!(bases(&log, 20_000), Some(vec![0, 5, 10]));

    // A pass at 10 000 leaves the third segment (and so the second version) alone.
    let pass = clean(&mut log, 10_000).expect("due");
    assert_eq!(pass.groups, vec![(0, 10)]);
    assert_eq!(pass.first_dirty, 10);
    assert_eq!(read_all(&log), model.compacted(10, true));
    assert_eq!(log_bases(dir.path()), vec![0, 10, 15]);
    let read: Vec<i64> = read_all(&log).iter().map(|(o, _)| *o).collect();
    assert_eq!(read, (5..16).collect::<Vec<_>>());
}

#[test]
fn the_dirty_ratio_and_max_compaction_lag_decide_when_a_pass_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    assert!(log.clean_plan(0).is_none(), "an empty log");
    for round in 0..2 {
        let entries: Vec<Rec> = (0..KEYS)
            .map(|k| kv(format!("key-{k:02}"), format!("v{round}")))
            .collect();
        append_raw(&mut log, &batch_of(&entries, 1000, Compression::None), 0);
    }
    assert!(
        log.clean_plan(0).is_none(),
        "only the active segment: nothing to clean"
    );
    log.roll(0).expect("roll");
    append_raw(
        &mut log,
        &batch_of(&[kv("t", "t")], 1000, Compression::None),
        0,
    );
    clean(&mut log, 2000).expect("all dirty: ratio 1");
    assert!(log.clean_plan(2000).is_none(), "nothing dirty");

    // A small dirty segment after the big clean one.
    append_raw(
        &mut log,
        &batch_of(&[kv("key-00", "v2")], 5000, Compression::None),
        0,
    );
    log.roll(0).expect("roll");
    let clean_bytes = file_size(dir.path(), 0);
    let dirty_bytes = file_size(dir.path(), 40);
    let ratio = dirty_bytes as f64 / (clean_bytes + dirty_bytes) as f64;
    assert!(ratio < 0.5);
    let with = |log: &mut Log, f: &dyn Fn(&mut LogConfig)| {
        let mut config = log.config().clone();
        f(&mut config);
        log.set_config(config);
    };
    assert!(log.clean_plan(6000).is_none(), "below the default 0.5");
    with(&mut log, &|c| c.min_cleanable_dirty_ratio = ratio + 0.001);
    assert!(log.clean_plan(6000).is_none(), "just below the ratio");
    with(&mut log, &|c| c.min_cleanable_dirty_ratio = ratio - 0.001);
    let plan = log.clean_plan(6000).expect("just above the ratio");
    assert_eq!(plan.first_dirty, 40);
    assert_eq!(
        plan.segments
            .iter()
            .map(|s| (s.base_offset, s.next_offset))
            .collect::<Vec<_>>(),
        vec![(0, 40), (40, 42)]
    );
    drop(plan);

    // max.compaction.lag.ms: the dirty segment's newest record (5000) is overdue after 1000.
    with(&mut log, &|c| {
        c.min_cleanable_dirty_ratio = 0.99;
        c.max_compaction_lag_ms = 1000;
    });
    assert!(
        log.clean_plan(6000).is_none(),
        "exactly the lag: not overdue"
    );
    let plan = log.clean_plan(6001).expect("overdue");
    assert_eq!(plan.first_dirty, 40);
    drop(plan);
    let pass = clean(&mut log, 6001).expect("overdue");
    assert_eq!(pass.records_removed, 1);

    // Without cleanup.policy=compact there is never a plan.
    with(&mut log, &|c| {
        c.compact = false;
        c.min_cleanable_dirty_ratio = 0.0;
    });
    append_raw(
        &mut log,
        &batch_of(&[kv("key-00", "v3")], 7000, Compression::None),
        0,
    );
    log.roll(0).expect("roll");
    assert!(log.clean_plan(i64::MAX / 2).is_none());
}

#[test]
fn a_tiered_compacted_segment_waiting_for_upload_forces_a_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.remote_storage = true;
    config.min_cleanable_dirty_ratio = 1.0;
    let mut log = Log::open(dir.path(), config, 0).expect("open");
    append_raw(
        &mut log,
        &batch_of(&[kv("a", "1")], 1000, Compression::None),
        0,
    );
    log.roll(10_000).expect("roll");
    clean(&mut log, 10_000).expect("all dirty: ratio 1");
    // One small dirty segment after the clean one: far below the ratio.
    append_raw(
        &mut log,
        &batch_of(&[kv("a", "2")], 2000, Compression::None),
        0,
    );
    log.roll(20_000).expect("roll");
    assert!(
        log.clean_plan(20_000 + UPLOAD_WAIT_MS).is_none(),
        "sealed exactly UPLOAD_WAIT_MS ago"
    );
    assert!(
        log.upload_candidates(None, i64::MAX, 10)
            .iter()
            .all(|s| s.base_offset == 0),
        "the dirty segment is not uploaded before a pass"
    );
    let plan = log
        .clean_plan(20_001 + UPLOAD_WAIT_MS)
        .expect("its upload waited long enough");
    drop(plan);
    clean(&mut log, 20_001 + UPLOAD_WAIT_MS).expect("a pass");
    assert_eq!(
        log.upload_candidates(None, i64::MAX, 10).len(),
        1,
        "after the pass, the cleaned range is one uploadable segment"
    );
}

/// Segments of ten one-record batches each: [0,10) uploaded, [10,20) cleaned but not
/// uploaded (the uploader may hold it), [20,30) and [30,40) dirty.
fn tiered_fixture(dir: &Path) -> Log {
    let mut config = config();
    config.remote_storage = true;
    let mut log = Log::open(dir, config, 0).expect("open");
    let write = |log: &mut Log, round: usize| {
        for k in 0..10 {
            append_raw(
                log,
                &batch_of(
                    &[kv(format!("k{k}"), format!("v{round}"))],
                    1,
                    Compression::None,
                ),
                0,
            );
        }
        log.roll(0).expect("roll");
    };
    let pass = |log: &mut Log, upload_end: Option<i64>| {
        let mut plan = log.clean_plan(10).expect("due");
        plan.upload_end = upload_end;
        let staged = stage(&plan, 10, MAX_KEYS).expect("stage");
        drop(plan);
        log.finish_clean_within(staged, 10, upload_end)
            .expect("swap");
    };
    write(&mut log, 0);
    pass(&mut log, None);
    // [0,10) is uploaded now; the next pass must not merge [10,20) into it.
    write(&mut log, 1);
    pass(&mut log, Some(10));
    assert_eq!(
        log_bases(dir),
        vec![0, 10, 20],
        "the pass kept the remote end a segment boundary"
    );
    write(&mut log, 2);
    write(&mut log, 3);
    log
}

#[test]
fn a_tiered_pass_never_merges_across_the_remote_end_or_an_uploadable_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = tiered_fixture(dir.path());
    let mut plan = log.clean_plan(20).expect("due");
    assert_eq!(plan.first_dirty, 20);
    plan.upload_end = Some(10);
    let staged = stage(&plan, 20, MAX_KEYS).expect("stage");
    drop(plan);
    let ranges: Vec<(i64, i64)> = staged.groups.iter().map(|g| (g.base, g.end)).collect();
    for (base, end) in &ranges {
        assert!(
            !(*base < 10 && 10 < *end),
            "a group straddles the remote end: {ranges:?}"
        );
    }
    assert!(
        ranges.iter().all(|&(b, e)| !(b <= 10 && e > 20)),
        "the uploadable [10,20) kept its range: {ranges:?}"
    );
    log.finish_clean_within(staged, 20, Some(10)).expect("swap");
    let candidates: Vec<(i64, i64)> = log
        .upload_candidates(Some(10), i64::MAX, 10)
        .iter()
        .map(|s| (s.base_offset, s.end_offset))
        .collect();
    assert_eq!(
        candidates.first().map(|c| c.0),
        Some(10),
        "the next upload follows the remote end: {candidates:?}"
    );
}

#[test]
fn a_pass_is_dropped_when_an_upload_moved_the_remote_end_into_a_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = tiered_fixture(dir.path());
    let mut plan = log.clean_plan(20).expect("due");
    plan.upload_end = Some(10);
    let staged = stage(&plan, 20, MAX_KEYS).expect("stage");
    drop(plan);
    // The dirty [20,30) and [30,40) are merged into one group; an upload ending at 30
    // (impossible in the broker, where they are not uploadable yet, but the guard is
    // what keeps a racing upload from splitting a group) makes the swap unsafe.
    assert!(
        staged.groups.iter().any(|g| g.base == 20 && g.end == 40),
        "{:?}",
        staged.groups
    );
    let before = log_bases(dir.path());
    assert_eq!(
        log.finish_clean_within(staged, 20, Some(30))
            .expect("finish"),
        0
    );
    assert_eq!(log_bases(dir.path()), before, "nothing was swapped");
    assert!(!dir.path().join(STAGING_DIR).exists());
}

// ---------------------------------------------------------------------------------------
// 5. Restart
// ---------------------------------------------------------------------------------------

#[test]
fn a_restart_after_cleaning_keeps_records_segments_and_first_dirty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let model = three_versions(&mut log);
    clean(&mut log, 10_000).expect("due");
    let read = read_all(&log);
    let segments = log.segment_count();
    let end = log.log_end_offset();
    let bases = log_bases(dir.path());
    drop(log);

    // Any dirty byte would be enough for a pass now.
    let mut eager = config();
    eager.min_cleanable_dirty_ratio = 0.0;
    let mut log = Log::open(dir.path(), eager, 20_000).expect("reopen");
    assert_eq!(read_all(&log), read);
    assert_eq!(read, model.compacted(SEALED_END, true));
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log_bases(dir.path()), bases);
    assert!(
        log.clean_plan(20_000).is_none(),
        "the first dirty offset was persisted: nothing to clean"
    );
    // Appends go on at the log end.
    let base = append_raw(
        &mut log,
        &batch_of(&[kv("key-01", "v9")], 6000, Compression::None),
        0,
    );
    assert_eq!(base, end);
    log.roll(0).expect("roll");
    let plan = log.clean_plan(20_000).expect("the new segment is dirty");
    assert_eq!(plan.first_dirty, SEALED_END);
    drop(plan);
    drop(log);

    // Without the checkpoint the whole log is dirty again (so it is what kept it clean).
    fs::remove_file(dir.path().join(CHECKPOINT_FILE)).expect("remove");
    let log = Log::open(dir.path(), config(), 20_000).expect("reopen");
    let plan = log.clean_plan(20_000).expect("everything dirty");
    assert_eq!(plan.first_dirty, 0);
}

/// A sealed segment whose indexes are lost is scanned and re-indexed at start-up (see
/// `Segment::open_sealed`). A cleaned segment has offset gaps (its first batch need not
/// start at its base, and batches need not follow each other densely).
#[test]
fn a_cleaned_segment_with_lost_indexes_is_reindexed_at_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let model = three_versions(&mut log);
    clean(&mut log, 10_000).expect("due");
    let read = read_all(&log);
    let end = log.log_end_offset();
    drop(log);
    // The cleaned segment [0, 65) starts at offset 0 but has gaps after the solo batch.
    for extension in ["index", "timeindex"] {
        fs::remove_file(seg_path(dir.path(), 0, extension)).expect("remove index");
    }
    let log = Log::open(dir.path(), config(), 20_000).expect("reopen");
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log), read);
    assert_eq!(read, model.compacted(SEALED_END, true));
}

// ---------------------------------------------------------------------------------------
// 6. Crashes around the swap
// ---------------------------------------------------------------------------------------

/// Four sealed segments of 11 records (k0..k9 in each, plus a key of its own), and an
/// active segment with one record. segment.bytes makes a pass stage two groups,
/// [0, 22) and [22, 44).
fn crash_fixture(dir: &Path) -> (Log, Model) {
    let mut log = Log::open(dir, config(), 0).expect("open");
    let mut model = Model::default();
    for round in 0..4i64 {
        let mut entries: Vec<Rec> = (0..10)
            .map(|k| kv(format!("k{k}"), format!("v{round}-{k}")))
            .collect();
        entries.push(kv(format!("u{round}"), format!("v{round}-u")));
        model.put(&mut log, &entries, 1000 * (round + 1));
        log.roll(0).expect("roll");
    }
    model.put(&mut log, &[kv("tail", "t")], 9000);
    let biggest = (0..4).map(|i| file_size(dir, i * 11)).max().expect("sizes");
    with_segment_bytes(&mut log, 2 * biggest + 1);
    (log, model)
}

/// Plans and stages a pass, then "crashes": the log is dropped without the swap.
fn staged_then_crash(dir: &Path) -> (Model, Staged, Vec<(i64, Rec)>) {
    let (log, model) = crash_fixture(dir);
    let original = read_all(&log);
    assert_eq!(original, model.all());
    let plan = log.clean_plan(10_000).expect("due");
    let staged = stage(&plan, 10_000, MAX_KEYS).expect("stage");
    assert_eq!(
        staged
            .groups
            .iter()
            .map(|g| (g.base, g.end))
            .collect::<Vec<_>>(),
        vec![(0, 22), (22, 44)]
    );
    assert!(
        dir.join(STAGING_DIR)
            .join(format::segment_file_name(0, "log"))
            .exists()
    );
    (model, staged, original)
}

fn write_marker(dir: &Path, base: i64, end: i64) {
    write_atomically(
        &dir.join(format::segment_file_name(base, "swap")),
        end.to_string().as_bytes(),
    )
    .expect("write the swap marker");
}

fn delete_files(dir: &Path, base: i64, extensions: &[&str]) {
    for extension in extensions {
        fs::remove_file(seg_path(dir, base, extension)).expect("delete a segment file");
    }
}

fn move_in(dir: &Path, base: i64, extensions: &[&str]) {
    for extension in extensions {
        let name = format::segment_file_name(base, extension);
        fs::rename(dir.join(STAGING_DIR).join(&name), dir.join(&name)).expect("move in");
    }
}

const ALL: [&str; 3] = ["index", "timeindex", "log"];

/// After recovery: the expected records, no leftovers, and a later pass finishes the job.
fn check_recovered(dir: &Path, model: &Model, expected: &[(i64, Rec)], bases: &[i64]) {
    let mut log = Log::open(dir, config(), 20_000).expect("reopen after the crash");
    assert_no_leftovers(dir);
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.log_end_offset(), 45);
    assert_eq!(log.segment_count(), bases.len());
    assert_eq!(log_bases(dir), bases);
    // The pass did not finish, so its first dirty offset was not recorded: run it again.
    assert_eq!(stored_first_dirty(dir), None);
    with_segment_bytes(&mut log, 1 << 20);
    clean(&mut log, 20_000).expect("the pass runs again");
    assert_eq!(read_all(&log), model.compacted(44, true));
    drop(log);
    let log = Log::open(dir, config(), 30_000).expect("reopen");
    assert_eq!(read_all(&log), model.compacted(44, true));
}

#[test]
fn a_crash_before_the_swap_marker_leaves_the_log_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, _staged, original) = staged_then_crash(dir.path());
    let bases = log_bases(dir.path());
    assert_eq!(bases, vec![0, 11, 22, 33, 44]);
    recover(dir.path()).expect("recover");
    assert!(
        !dir.path().join(STAGING_DIR).exists(),
        "the unfinished pass is discarded"
    );
    check_recovered(dir.path(), &model, &original, &bases);
}

#[test]
fn a_crash_between_two_group_swaps_keeps_the_first_and_discards_the_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, staged, _) = staged_then_crash(dir.path());
    swap_files(dir.path(), &staged.groups[0]).expect("swap the first group");
    let expected = model.compacted_in(44, |o| o < 22, true);
    check_recovered(dir.path(), &model, &expected, &[0, 22, 33, 44]);
}

#[test]
fn a_crash_right_after_the_marker_finishes_the_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, _staged, _) = staged_then_crash(dir.path());
    // The first group committed, nothing deleted yet; the second never got its marker.
    write_marker(dir.path(), 0, 22);
    recover(dir.path()).expect("recover");
    assert!(
        !dir.path()
            .join(format::segment_file_name(0, "swap"))
            .exists()
    );
    let expected = model.compacted_in(44, |o| o < 22, true);
    assert_eq!(
        expected.iter().filter(|(o, _)| *o < 22).count(),
        2,
        "u0 and u1"
    );
    check_recovered(dir.path(), &model, &expected, &[0, 22, 33, 44]);
}

#[test]
fn a_crash_while_deleting_the_old_segments_finishes_the_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, staged, _) = staged_then_crash(dir.path());
    swap_files(dir.path(), &staged.groups[0]).expect("swap the first group");
    // The second group committed; its first segment is gone, the second half deleted.
    write_marker(dir.path(), 22, 44);
    delete_files(dir.path(), 22, &ALL);
    delete_files(dir.path(), 33, &["index"]);
    check_recovered(dir.path(), &model, &model.compacted(44, true), &[0, 22, 44]);
}

#[test]
fn a_crash_after_moving_the_copies_in_finishes_the_swap() {
    for leave_old_files in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (model, staged, _) = staged_then_crash(dir.path());
        swap_files(dir.path(), &staged.groups[0]).expect("swap the first group");
        write_marker(dir.path(), 22, 44);
        delete_files(dir.path(), 22, &ALL);
        if !leave_old_files {
            delete_files(dir.path(), 33, &ALL);
        }
        move_in(dir.path(), 22, &ALL);
        // Only the marker is left (and, in the second case, old files inside the range).
        check_recovered(dir.path(), &model, &model.compacted(44, true), &[0, 22, 44]);
    }
}

#[test]
fn a_crash_part_way_through_moving_the_copies_in_finishes_the_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, staged, _) = staged_then_crash(dir.path());
    swap_files(dir.path(), &staged.groups[0]).expect("swap the first group");
    write_marker(dir.path(), 22, 44);
    delete_files(dir.path(), 22, &ALL);
    delete_files(dir.path(), 33, &ALL);
    // The crash hits between the renames: the index moved, the time index and log not.
    move_in(dir.path(), 22, &["index"]);
    recover(dir.path()).expect("recover");
    check_recovered(dir.path(), &model, &model.compacted(44, true), &[0, 22, 44]);
}

// ---------------------------------------------------------------------------------------
// 7, 8. Reads over what cleaning removed
// ---------------------------------------------------------------------------------------

/// Three sealed segments with versions 0, 1, 2 of ten keys, an active one with a record;
/// segment.bytes too small to merge any two of them.
fn emptied_fixture(dir: &Path) -> (Log, Model) {
    let mut log = Log::open(dir, config(), 0).expect("open");
    let mut model = Model::default();
    for round in 0..3 {
        let entries: Vec<Rec> = (0..10)
            .map(|k| kv(format!("k{k}"), format!("v{round}")))
            .collect();
        model.put(&mut log, &entries, 1000 + round);
        log.roll(0).expect("roll");
    }
    model.put(&mut log, &[kv("tail", "t")], 2000);
    let biggest = (0..3).map(|i| file_size(dir, i * 10)).max().expect("sizes");
    with_segment_bytes(&mut log, biggest + 1);
    (log, model)
}

#[test]
fn a_segment_emptied_by_cleaning_stays_and_reads_skip_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = emptied_fixture(dir.path());
    let pass = clean(&mut log, 10_000).expect("due");
    assert_eq!(
        pass.groups,
        vec![(0, 10), (10, 20)],
        "the third is unchanged"
    );
    assert_eq!(pass.records_removed, 20);
    assert_eq!(log.segment_count(), 4, "empty segments stay");
    assert_eq!(log_bases(dir.path()), vec![0, 10, 20, 30]);
    assert_eq!(file_size(dir.path(), 0), 0);
    assert_eq!(file_size(dir.path(), 10), 0);
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(read_all(&log), model.compacted(30, true));

    // The log: a read of an offset in an empty segment finds nothing there, and the
    // next segment is where to go on.
    let location = log.locate(5).expect("locate").expect("a segment");
    assert_eq!(location.end, 0);
    assert!(
        read_batches(&location, 5, 1 << 20, i64::MAX)
            .expect("read")
            .is_empty()
    );
    assert_eq!(log.next_segment_base(5), Some(10));
    assert_eq!(log.next_segment_base(0), Some(10));
    assert_eq!(log.next_segment_base(10), Some(20));
    assert_eq!(log.next_segment_base(30), None);

    // A partition read goes on past both empty segments.
    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    // Whole batches of one segment: [20, 30).
    let all: Vec<i64> = (20..30).collect();
    for offset in [0, 5, 9, 10, 19] {
        assert_eq!(partition_read(&partition, offset), all, "from {offset}");
    }
    assert_eq!(
        partition_read(&partition, 25),
        all,
        "the whole batch holding 25"
    );
    assert_eq!(
        partition_read(&partition, 30),
        vec![30],
        "the active segment"
    );
    assert!(partition_read(&partition, 31).is_empty(), "the log end");
    drop(partition);

    // A restart keeps the empty segments (the gaps are legitimate, not lost data).
    let mut log = Log::open(dir.path(), log_config_of(dir.path()), 20_000).expect("reopen");
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.log_end_offset(), 31);
    assert_eq!(log_bases(dir.path()), vec![0, 10, 20, 30]);
    assert_eq!(read_all(&log), model.compacted(30, true));

    // The next pass merges the empty segments into their neighbour.
    append_raw(
        &mut log,
        &batch_of(&[kv("k0", "v3")], 3000, Compression::None),
        0,
    );
    log.roll(0).expect("roll");
    let mut config = log.config().clone();
    config.min_cleanable_dirty_ratio = 0.0;
    log.set_config(config);
    let pass = clean(&mut log, 20_000).expect("due");
    assert_eq!(pass.groups.first(), Some(&(0, 30)), "{pass:?}");
    assert_eq!(log_bases(dir.path())[..2], [0, 30]);
    let mut expected = model.clone();
    expected.0.insert(31, kv("k0", "v3"));
    assert_eq!(read_all(&log), expected.compacted(32, true));
}

/// The configuration the emptied fixture ends with.
fn log_config_of(dir: &Path) -> LogConfig {
    let mut config = config();
    config.segment_bytes = file_size(dir, 20) + 1;
    config
}

#[test]
fn partition_clean_runs_a_whole_pass() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = emptied_fixture(dir.path());
    let before = log.size_bytes();
    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    let seen = std::sync::Mutex::new(None);
    let removed = rt
        .block_on(partition.clean(10_000, MAX_KEYS, async |map| {
            *seen.lock().expect("lock") = Some(map);
            true
        }))
        .expect("clean")
        .expect("a pass was due");
    let map = seen
        .lock()
        .expect("lock")
        .take()
        .expect("the remote part saw the map");
    let (size, segments, end, start) = partition.stats();
    assert_eq!(before - size, removed);
    // The pass's map: the ten keys of the sealed segments, at their last offsets.
    let mut last: Vec<i64> = map.values().copied().collect();
    last.sort_unstable();
    assert_eq!(last, (20..30).collect::<Vec<_>>());
    assert_eq!((segments, end, start), (4, 31, 0));
    assert_eq!(partition_read(&partition, 0), (20..30).collect::<Vec<_>>());
    assert_eq!(
        rt.block_on(partition.clean(10_000, MAX_KEYS, async |_| true))
            .expect("clean"),
        None,
        "nothing left to do"
    );
}

#[test]
fn a_failed_remote_part_puts_the_local_pass_off() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = emptied_fixture(dir.path());
    let before = log.size_bytes();
    let bases = log_bases(dir.path());
    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    let outcome = rt
        .block_on(partition.clean(10_000, MAX_KEYS, async |_| false))
        .expect("clean");
    assert_eq!(outcome, None, "the pass was put off");
    assert_eq!(partition.stats().0, before, "nothing was swapped");
    assert_eq!(log_bases(dir.path()), bases);
    assert!(!dir.path().join(STAGING_DIR).exists());
    // The next pass rebuilds the same map and goes through.
    let removed = rt
        .block_on(partition.clean(10_000, MAX_KEYS, async |_| true))
        .expect("clean")
        .expect("due again: the first dirty offset did not move");
    assert!(removed > 0);
}

#[test]
fn a_read_in_a_gap_at_the_end_of_a_segment_moves_to_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let mut model = Model::default();
    // [0, 10): a0..a7, then k8 k9 (superseded); [10, 20): k8 k9 b0..b7, two batches.
    let mut first: Vec<Rec> = (0..8).map(|i| kv(format!("a{i}"), "1")).collect();
    first.extend([kv("k8", "1"), kv("k9", "1")]);
    model.put(&mut log, &first, 1000);
    log.roll(0).expect("roll");
    model.put(&mut log, &[kv("k8", "2"), kv("k9", "2")], 2000);
    let second: Vec<Rec> = (0..8).map(|i| kv(format!("b{i}"), "1")).collect();
    model.put(&mut log, &second, 2000);
    log.roll(0).expect("roll");
    model.put(&mut log, &[kv("tail", "t")], 3000);
    let biggest = file_size(dir.path(), 0).max(file_size(dir.path(), 10));
    with_segment_bytes(&mut log, biggest + 1);

    let pass = clean(&mut log, 10_000).expect("due");
    assert_eq!(pass.groups, vec![(0, 10)]);
    assert_eq!(log_bases(dir.path()), vec![0, 10, 20]);
    assert_eq!(read_all(&log), model.compacted(20, true));

    // The log alone: nothing at or after 8 in the first segment.
    let location = log.locate(8).expect("locate").expect("segment");
    assert!(
        read_batches(&location, 8, 1 << 20, i64::MAX)
            .expect("read")
            .is_empty()
    );
    assert_eq!(log.next_segment_base(8), Some(10));

    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    assert_eq!(
        partition_read(&partition, 7),
        (0..8).collect::<Vec<_>>(),
        "the batch holding 7"
    );
    for offset in [8, 9] {
        assert_eq!(
            partition_read(&partition, offset),
            (10..20).collect::<Vec<_>>(),
            "from {offset}"
        );
    }
}

#[test]
fn a_read_in_a_gap_inside_a_segment_gets_the_next_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let mut model = Model::default();
    model.put(&mut log, &[kv("a", "1"), kv("b", "1")], 1000);
    model.put(&mut log, &[kv("c", "1"), kv("d", "1")], 1000);
    model.put(&mut log, &[kv("e", "1"), kv("a", "2"), kv("f", "1")], 1000);
    model.put(&mut log, &[kv("c", "2"), kv("d", "2")], 1000);
    log.roll(0).expect("roll");
    model.put(&mut log, &[kv("tail", "t")], 2000);
    clean(&mut log, 10_000).expect("due");
    // Left: b@1, e@4, a@5, f@6, c@7, d@8; offsets 2 and 3 lost their whole batch.
    assert_eq!(read_all(&log), model.compacted(9, true));
    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    assert_eq!(partition_read(&partition, 0), vec![1, 4, 5, 6, 7, 8]);
    assert_eq!(partition_read(&partition, 2), vec![4, 5, 6, 7, 8]);
    assert_eq!(partition_read(&partition, 3), vec![4, 5, 6, 7, 8]);
    assert_eq!(partition_read(&partition, 9), vec![9]);
}

#[test]
fn a_read_in_a_gap_just_below_the_high_watermark_returns_nothing() {
    // The last sealed segment ends with an expired tombstone and the active segment is
    // empty: the gap reaches the high watermark, and a read there must end.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.delete_retention_ms = 0;
    let mut log = Log::open(dir.path(), config, 0).expect("open");
    append_raw(
        &mut log,
        &batch_of(&[kv("a", "1"), kv("b", "1")], 1000, Compression::None),
        0,
    );
    append_raw(
        &mut log,
        &batch_of(&[tombstone("z")], 1000, Compression::None),
        0,
    );
    log.roll(0).expect("roll");
    clean(&mut log, wall_ms() + DAY_MS).expect("due");
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(read_all(&log), vec![(0, kv("a", "1")), (1, kv("b", "1"))]);
    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    assert_eq!(partition.high_watermark(), 3);
    assert!(partition_read(&partition, 2).is_empty());
    assert!(partition_read(&partition, 3).is_empty());
    assert_eq!(
        partition_read(&partition, 1),
        vec![0, 1],
        "the batch holding 1"
    );
}

// ---------------------------------------------------------------------------------------
// 9. The log changed between stage and swap
// ---------------------------------------------------------------------------------------

#[test]
fn delete_records_between_stage_and_swap_cancels_the_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = crash_fixture(dir.path());
    let plan = log.clean_plan(10_000).expect("due");
    let staged = stage(&plan, 10_000, MAX_KEYS).expect("stage");
    drop(plan);
    assert!(!staged.groups.is_empty());
    assert!(dir.path().join(STAGING_DIR).exists());

    // DeleteRecords removes the first segment meanwhile.
    assert_eq!(log.delete_records_before(11).expect("delete records"), 11);
    let bases = log_bases(dir.path());
    assert_eq!(bases, vec![11, 22, 33, 44]);
    assert_eq!(log.finish_clean(staged, 10_000).expect("finish"), 0);
    assert_no_leftovers(dir.path());
    assert_eq!(log_bases(dir.path()), bases, "no segment changed");
    assert_eq!(
        stored_first_dirty(dir.path()),
        None,
        "first dirty did not move"
    );
    let expected: Vec<(i64, Rec)> = model.all().into_iter().filter(|(o, _)| *o >= 11).collect();
    assert_eq!(read_all(&log), expected);

    // The next pass plans from the new start and works.
    let plan = log.clean_plan(10_000).expect("due");
    assert_eq!(plan.first_dirty, 11);
    drop(plan);
    clean(&mut log, 10_000).expect("due");
    let rest = Model(model.0.range(11..).map(|(o, r)| (*o, r.clone())).collect());
    assert_eq!(read_all(&log), rest.compacted(44, true));
}

#[test]
fn retention_between_stage_and_swap_cancels_the_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = crash_fixture(dir.path());
    let plan = log.clean_plan(10_000).expect("due");
    let staged = stage(&plan, 10_000, MAX_KEYS).expect("stage");
    drop(plan);

    // retention.ms removes the segments whose records are older than an hour.
    let mut config = log.config().clone();
    config.retention_ms = 3_600_000;
    log.set_config(config);
    let outcome = log
        .apply_retention(2010 + 3_600_001, None)
        .expect("retention");
    assert_eq!(outcome.segments, 2, "the first two segments");
    assert_eq!(log.finish_clean(staged, 10_000).expect("finish"), 0);
    assert_no_leftovers(dir.path());
    assert_eq!(log_bases(dir.path()), vec![22, 33, 44]);
    let expected: Vec<(i64, Rec)> = model.all().into_iter().filter(|(o, _)| *o >= 22).collect();
    assert_eq!(read_all(&log), expected);
}

#[test]
fn delete_records_inside_the_first_segment_does_not_cancel_the_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = crash_fixture(dir.path());
    let plan = log.clean_plan(10_000).expect("due");
    let staged = stage(&plan, 10_000, MAX_KEYS).expect("stage");
    drop(plan);
    // The start moves into the first segment, which stays.
    assert_eq!(log.delete_records_before(5).expect("delete records"), 5);
    assert!(log.finish_clean(staged, 10_000).expect("finish") > 0);
    assert_eq!(log.log_start_offset(), 5);
    let expected: Vec<(i64, Rec)> = model
        .compacted(44, true)
        .into_iter()
        .filter(|(o, _)| *o >= 5)
        .collect();
    assert_eq!(read_all(&log), expected);
    drop(log);
    let log = Log::open(dir.path(), config(), 20_000).expect("reopen");
    assert_eq!(log.log_start_offset(), 5);
    assert_eq!(read_all(&log), expected);
}

/// cleanup.policy=compact,delete: retention.ms still applies to a log whose oldest
/// segment cleaning emptied.
#[test]
fn time_retention_goes_past_an_empty_cleaned_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _model) = emptied_fixture(dir.path());
    clean(&mut log, 10_000).expect("due");
    assert_eq!(file_size(dir.path(), 0), 0);
    let mut config = log.config().clone();
    config.retention_ms = 3_600_000;
    log.set_config(config);
    // Every record of the sealed segments is days old; the emptied segment's file was
    // last written now, so it expires (by its file time, as in Kafka) an hour from now.
    let outcome = log
        .apply_retention(wall_ms() + 2 * 3_600_000, None)
        .expect("retention");
    assert_eq!(outcome.segments, 3);
    assert_eq!(log.log_start_offset(), 30);
    assert_eq!(log_bases(dir.path()), vec![30]);
}

// ---------------------------------------------------------------------------------------
// 7. Failures the pass must not hide
// ---------------------------------------------------------------------------------------

/// Makes deleting segment `base`'s files fail with an I/O error, as a failing disk would:
/// a directory stands where its offset index was (unlink refuses directories; the log
/// keeps the index it has open).
fn block_deletion(dir: &Path, base: i64) -> PathBuf {
    let path = seg_path(dir, base, "index");
    fs::remove_file(&path).expect("remove the index");
    fs::create_dir(&path).expect("create the obstacle");
    path
}

fn staged_copy_exists(dir: &Path, base: i64) -> bool {
    dir.join(STAGING_DIR)
        .join(format::segment_file_name(base, "log"))
        .exists()
}

#[test]
fn a_swap_failing_after_its_marker_keeps_the_staged_copy_for_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, model) = crash_fixture(dir.path());
    let obstacle = block_deletion(dir.path(), 11);
    let plan = log.clean_plan(10_000).expect("due");
    let staged = stage(&plan, 10_000, MAX_KEYS).expect("stage");
    drop(plan);
    let error = log
        .finish_clean(staged, 10_000)
        .expect_err("deleting the old segments fails");
    assert!(matches!(error, LogError::Io { .. }), "{error}");
    assert!(
        seg_path(dir.path(), 0, "swap").exists(),
        "the swap committed"
    );

    // Nothing may discard the copy the marker needs: not a put-off pass, not a new one.
    log.discard_clean();
    assert!(staged_copy_exists(dir.path(), 0));
    let plan = log.clean_plan(10_000).expect("still due");
    let refused = stage(&plan, 10_000, MAX_KEYS).expect_err("no pass while a swap is pending");
    assert!(
        refused
            .to_string()
            .contains("swap of segment 0 did not finish"),
        "{refused}"
    );
    drop(plan);
    assert!(staged_copy_exists(dir.path(), 0));

    // Once the disk works again, start-up finishes the swap from the copy.
    fs::remove_dir(&obstacle).expect("remove the obstacle");
    drop(log);
    let expected = model.compacted_in(44, |o| o < 22, true);
    check_recovered(dir.path(), &model, &expected, &[0, 22, 33, 44]);
}

#[test]
fn a_failed_swap_takes_the_partition_offline_until_restart() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, model) = crash_fixture(dir.path());
    let obstacle = block_deletion(dir.path(), 11);
    let partition = Partition::new(
        "t".into(),
        0,
        log,
        crate::partition::isr::ReplicaState::solo(0, 0, 0),
        None,
    );
    let error = rt
        .block_on(partition.clean(10_000, MAX_KEYS, async |_| true))
        .expect_err("the swap fails");
    assert_eq!(
        crate::handlers::partition_error_code(&error),
        kafka_protocol::ResponseError::KafkaStorageError
    );
    assert!(partition.is_offline());
    let read = partition
        .read_local(0, 1 << 20)
        .expect_err("reads are refused");
    assert!(
        matches!(read, crate::partition::PartitionError::Offline),
        "{read}"
    );
    let produce = Bytes::from(batch_of(&[kv("k1", "late")], 9500, Compression::None));
    let append = rt
        .block_on(partition.append(&produce, 9500, 1, 1, 1000))
        .expect_err("appends are refused");
    assert!(
        matches!(append, crate::partition::PartitionError::Offline),
        "{append}"
    );
    assert_eq!(
        crate::handlers::partition_error_code(&append),
        kafka_protocol::ResponseError::KafkaStorageError
    );
    let later = rt
        .block_on(partition.clean(10_000, MAX_KEYS, async |_| true))
        .expect("a later round");
    assert_eq!(later, None, "no pass runs on an offline partition");
    assert!(staged_copy_exists(dir.path(), 0));

    drop(partition);
    fs::remove_dir(&obstacle).expect("remove the obstacle");
    let expected = model.compacted_in(44, |o| o < 22, true);
    check_recovered(dir.path(), &model, &expected, &[0, 22, 33, 44]);
}

#[test]
fn recovery_refuses_a_marker_whose_copy_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_model, _staged, _) = staged_then_crash(dir.path());
    write_marker(dir.path(), 0, 22);
    delete_files(dir.path(), 0, &ALL);
    fs::remove_dir_all(dir.path().join(STAGING_DIR)).expect("lose the copy");
    let error = recover(dir.path()).expect_err("nothing to finish the swap with");
    assert!(
        error.to_string().contains("lost its staged copy"),
        "{error}"
    );
    assert!(
        seg_path(dir.path(), 11, "log").exists(),
        "segment 11 is kept"
    );
}

/// Segment 0: a=1 b=1; segment 2: a=2 (batch at 2), b=2 (batch at 3); active: tail.
fn two_batch_segment(dir: &Path) -> (Log, Model) {
    let mut config = config();
    config.min_cleanable_dirty_ratio = 0.0;
    let mut log = Log::open(dir, config, 0).expect("open");
    let mut model = Model::default();
    model.put(&mut log, &[kv("a", "1"), kv("b", "1")], 1000);
    log.roll(0).expect("roll");
    model.put(&mut log, &[kv("a", "2")], 1000);
    model.put(&mut log, &[kv("b", "2")], 1000);
    log.roll(0).expect("roll");
    model.put(&mut log, &[kv("tail", "t")], 2000);
    (log, model)
}

#[test]
fn an_unparsable_batch_fails_the_pass_naming_segment_and_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, model) = two_batch_segment(dir.path());
    let first = segment_batches(dir.path(), 2)[0].len() as u64;
    // The second batch of segment 2 declares a length no batch can have.
    File::options()
        .write(true)
        .open(seg_path(dir.path(), 2, "log"))
        .expect("open the segment")
        .write_all_at(&3i32.to_be_bytes(), first + 8)
        .expect("corrupt the length");
    let plan = log.clean_plan(10_000).expect("due");
    let error = stage(&plan, 10_000, MAX_KEYS).expect_err("the pass fails");
    drop(plan);
    let unparsable = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<UnparsableBatch>())
        .expect("an UnparsableBatch");
    assert_eq!((unparsable.segment, unparsable.position), (2, first));
    assert!(
        error
            .to_string()
            .contains(&format!("segment 2 has no whole batch at byte {first}")),
        "{error}"
    );
    // Nothing was swapped: the first segment keeps both of its records.
    assert_eq!(log_bases(dir.path()), vec![0, 2, 4]);
    assert_eq!(
        records_of(&segment_batches(dir.path(), 0)[0]),
        model.all()[..2]
    );
}

/// A remote segment's bytes: a then a again (offsets 0, 1), then b (offset 2).
fn remote_segment_bytes() -> (Vec<u8>, usize) {
    let mut bytes = batch_of(&[kv("a", "1"), kv("a", "2")], 1000, Compression::None);
    let first = bytes.len();
    let mut second = batch_of(&[kv("b", "1")], 1000, Compression::None);
    second[..8].copy_from_slice(&2i64.to_be_bytes());
    bytes.extend_from_slice(&second);
    (bytes, first)
}

fn remote_rewrite(dir: &Path, log_bytes: u64) -> RemoteRewrite {
    let mut map = OffsetMap::new();
    map.insert(key_hash(b"a"), 1);
    map.insert(key_hash(b"b"), 2);
    RemoteRewrite::new(
        dir,
        (0, i64::MAX),
        log_bytes,
        Arc::new(map),
        &[],
        false,
        4096,
        0,
    )
    .expect("rewrite")
}

#[test]
fn a_remote_rewrite_fed_in_small_pieces_keeps_every_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bytes, _) = remote_segment_bytes();
    let mut rewrite = remote_rewrite(dir.path(), bytes.len() as u64);
    for piece in bytes.chunks(7) {
        rewrite
            .feed(Bytes::copy_from_slice(piece))
            .expect("whole batches");
    }
    let done = rewrite.finish().expect("finish").expect("a record went");
    assert_eq!(done.records_removed, 1);
    let mut copy = vec![0u8; done.log_bytes as usize];
    done.log.read_exact_at(&mut copy, 0).expect("read the copy");
    let records: Vec<(i64, Rec)> = split_batches(&copy).iter().flat_map(records_of).collect();
    assert_eq!(records, vec![(1, kv("a", "2")), (2, kv("b", "1"))]);
}

#[test]
fn a_remote_rewrite_fails_on_a_batch_with_an_impossible_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut bytes, first) = remote_segment_bytes();
    bytes[first + 8..first + 12].copy_from_slice(&3i32.to_be_bytes());
    let mut rewrite = remote_rewrite(dir.path(), bytes.len() as u64);
    // The first piece ends inside the bad batch's header: it waits for more.
    rewrite
        .feed(Bytes::copy_from_slice(&bytes[..first + 5]))
        .expect("a whole batch and the start of the next");
    let error = rewrite
        .feed(Bytes::copy_from_slice(&bytes[first + 5..]))
        .expect_err("the second batch cannot be parsed");
    assert!(
        error
            .to_string()
            .contains(&format!("segment 0 has no whole batch at byte {first}")),
        "{error}"
    );
}

#[test]
fn a_remote_rewrite_fails_on_a_segment_cut_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bytes, first) = remote_segment_bytes();
    // The object holds fewer bytes than its last batch declares.
    let cut = &bytes[..bytes.len() - 4];
    let mut rewrite = remote_rewrite(dir.path(), cut.len() as u64);
    let error = rewrite
        .feed(Bytes::copy_from_slice(cut))
        .expect_err("the last batch runs past the end");
    assert!(
        error.to_string().contains(&format!("at byte {first}")),
        "{error}"
    );

    // Fed less than the segment holds: finishing is an error, not a shorter copy.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rewrite = remote_rewrite(dir.path(), bytes.len() as u64);
    rewrite
        .feed(Bytes::copy_from_slice(&bytes[..first + 30]))
        .expect("a whole batch and part of the next");
    let error = rewrite
        .finish()
        .err()
        .expect("the segment ends inside a batch");
    assert!(error.to_string().contains("ends inside a batch"), "{error}");
    assert!(
        !seg_path(dir.path(), 0, "log").exists(),
        "the unfinished copy is removed"
    );
}

#[test]
fn the_offset_map_limit_applies_within_a_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = config();
    settings.min_cleanable_dirty_ratio = 0.0;
    let mut log = Log::open(dir.path(), settings, 0).expect("open");
    let mut model = Model::default();
    // One segment of four batches of five keys: k0-k4, k5-k9, k0-k4, k5-k9.
    for version in 0..2 {
        for half in 0..2 {
            let entries: Vec<Rec> = (0..5)
                .map(|k| kv(format!("k{}", half * 5 + k), format!("v{version}")))
                .collect();
            model.put(&mut log, &entries, 1000);
        }
    }
    log.roll(0).expect("roll");
    model.put(&mut log, &[kv("tail", "t")], 2000);

    // Room for 7 keys: one batch per pass, although the segment has 10 keys.
    let pass = clean_with(&mut log, 10_000, 7).expect("due");
    assert_eq!(pass.first_dirty, 5, "the map stopped inside the segment");
    assert_eq!(pass.records_removed, 0);
    assert_eq!(read_all(&log), model.all());
    assert_eq!(stored_first_dirty(dir.path()), Some(5));

    let pass = clean_with(&mut log, 10_000, 7).expect("due");
    assert_eq!((pass.first_dirty, pass.records_removed), (10, 0));

    // k0-k4 at 10..15 supersede 0..5; the records past the map (15..20) are untouched.
    let pass = clean_with(&mut log, 10_000, 7).expect("due");
    assert_eq!((pass.first_dirty, pass.records_removed), (15, 5));
    assert_eq!(read_all(&log), model.compacted_in(15, |o| o < 15, true));

    let pass = clean_with(&mut log, 10_000, 7).expect("due");
    assert_eq!((pass.first_dirty, pass.records_removed), (20, 5));
    assert_eq!(read_all(&log), model.compacted(20, true));
    assert!(log.clean_plan(10_000).is_none());

    let log = Log::open(dir.path(), config(), 20_000).expect("reopen");
    assert_eq!(read_all(&log), model.compacted(20, true));
}

#[test]
fn a_remote_rewrite_fails_on_a_damaged_batch_instead_of_laundering_it() {
    // A rewrite gives the batches it keeps a new, valid CRC: damage it passed on would
    // never be seen again.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut bytes, first) = remote_segment_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let mut rewrite = remote_rewrite(dir.path(), bytes.len() as u64);
    let error = rewrite
        .feed(Bytes::copy_from_slice(&bytes))
        .expect_err("the damaged batch fails the rewrite");
    assert!(error.to_string().contains("CRC-32C"), "{error}");
    // A base offset (outside the CRC) that goes backwards fails it too.
    let (mut bytes, _) = remote_segment_bytes();
    bytes[first..first + 8].copy_from_slice(&1i64.to_be_bytes());
    let mut rewrite = remote_rewrite(dir.path(), bytes.len() as u64);
    let error = rewrite
        .feed(Bytes::copy_from_slice(&bytes))
        .expect_err("the overlapping batch fails the rewrite");
    assert!(error.to_string().contains("out of order"), "{error}");
}

/// A transactional producer's batch of `entries` (sequences from `first_seq`).
fn transactional_batch(producer_id: i64, entries: &[Rec], first_seq: i32, ts: i64) -> Vec<u8> {
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| Record {
            transactional: true,
            producer_id,
            producer_epoch: 0,
            sequence: first_seq + i as i32,
            ..record(i as i64, e, ts)
        })
        .collect();
    encode(&records, Compression::None)
}

fn append_transactional(log: &mut Log, producer_id: i64, entries: &[Rec], ts: i64) -> i64 {
    append_transactional_from(log, producer_id, entries, 0, ts)
}

/// [`append_transactional`] with sequences from `first_seq`.
fn append_transactional_from(
    log: &mut Log,
    producer_id: i64,
    entries: &[Rec],
    first_seq: i32,
    ts: i64,
) -> i64 {
    let prepared = prepare(
        &transactional_batch(producer_id, entries, first_seq, ts),
        1 << 20,
        false,
        MAX_INFLATED_BYTES,
    )
    .expect("valid batch");
    let guard = crate::log::TxnGuard {
        producer_id,
        marker_position: log.marker_position(producer_id),
    };
    let (info, _) = log
        .append_verified(prepared, 0, ts, Some(guard))
        .expect("append");
    info.base_offset
}

/// A log of: a1 b1 | aborted(a) ABORT(7) | committed(b) COMMIT(8) | a2, then a committed
/// transaction of each producer (their last batches and markers, which compaction
/// keeps) | c1 (active), with the offsets of the aborted record and its marker.
fn transactional_log(dir: &Path, now: i64) -> (Log, i64, i64) {
    use crate::log::txn::Marker;
    let mut log = Log::open(dir, config(), now).expect("open");
    let mut model = Model::default();
    model.put(&mut log, &[kv("a", "a1"), kv("b", "b1")], now); // 0, 1
    let aborted_at = append_transactional(&mut log, 7, &[kv("a", "aborted")], now); // 2
    let abort = log
        .append_marker(7, 0, Marker::Abort, 0, 0, now)
        .expect("abort")
        .0
        .base_offset; // 3
    log.roll(now).expect("roll");
    append_transactional(&mut log, 8, &[kv("b", "committed")], now); // 4
    log.append_marker(8, 0, Marker::Commit, 0, 0, now)
        .expect("commit"); // 5
    log.roll(now).expect("roll");
    model.put(&mut log, &[kv("a", "a2")], now); // 6
    append_transactional_from(&mut log, 7, &[kv("x", "x7")], 1, now); // 7
    log.append_marker(7, 0, Marker::Commit, 0, 0, now)
        .expect("commit"); // 8
    append_transactional_from(&mut log, 8, &[kv("y", "y8")], 1, now); // 9
    log.append_marker(8, 0, Marker::Commit, 0, 0, now)
        .expect("commit"); // 10
    log.roll(now).expect("roll");
    model.put(&mut log, &[kv("c", "c1")], now); // 11, in the active segment
    (log, aborted_at, abort)
}

fn offsets(log: &Log) -> Vec<i64> {
    read_all(log).iter().map(|(o, _)| *o).collect()
}

/// A dirty sealed segment of one new record (so a pass is due), at `now`.
fn push(log: &mut Log, key: &str, now: i64) {
    Model::default().put(log, &[kv(key, "v")], now);
    log.roll(now).expect("roll");
}

#[test]
fn aborted_records_go_and_committed_ones_compact() {
    use crate::log::txn::AbortedTxn;
    let dir = tempfile::tempdir().expect("tempdir");
    let now = wall_ms();
    let (mut log, aborted_at, abort) = transactional_log(dir.path(), now);
    let pass = clean(&mut log, now).expect("a pass runs");
    // a1 (superseded by a2), b1 (superseded by the committed b) and the aborted record
    // go; every marker stays (this pass walked their transactions' records).
    assert_eq!(pass.records_removed, 3, "{pass:?}");
    assert_eq!(offsets(&log), vec![3, 4, 5, 6, 7, 8, 9, 10, 11]);
    let entry = AbortedTxn {
        producer_id: 7,
        first_offset: aborted_at,
        last_offset: abort,
        last_stable_offset: abort + 1,
    };
    assert_eq!(log.aborted_overlapping(0, 12), vec![entry]);
    // The merged segment carries the aborted transaction's index entry: a restart (which
    // reads the .txnindex files) still knows it.
    drop(log);
    let log = Log::open(dir.path(), config(), now).expect("reopen");
    assert_eq!(log.aborted_overlapping(0, 12), vec![entry]);
    assert_eq!(log.first_unstable_offset(), None);
}

#[test]
fn markers_go_a_delete_retention_after_their_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = wall_ms();
    let (mut log, _, abort) = transactional_log(dir.path(), t);
    let mut eager = log.config().clone();
    eager.min_cleanable_dirty_ratio = 0.0;
    log.set_config(eager);
    clean(&mut log, t).expect("pass 1");
    assert_eq!(offsets(&log), vec![3, 4, 5, 6, 7, 8, 9, 10, 11]);
    // Pass 2: no record of the aborted transaction is left, so its marker is found
    // removable (not removed: delete.retention.ms has not passed). A later b supersedes
    // the committed one, whose marker stays this pass.
    push(&mut log, "b", t); // 12
    clean(&mut log, t).expect("pass 2");
    assert_eq!(offsets(&log), vec![3, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(log.aborted_overlapping(0, 13).len(), 1);
    // Pass 3, a day later: the abort marker goes with its index entry; the commit marker
    // of the superseded transaction is found removable.
    push(&mut log, "z", t); // 13
    clean(&mut log, t + DAY_MS).expect("pass 3");
    assert_eq!(offsets(&log), vec![5, 6, 7, 8, 9, 10, 11, 12, 13]);
    assert!(
        log.aborted_overlapping(0, 14).is_empty(),
        "the entry of {abort} went"
    );
    // Pass 4, a day after that: it goes too. Each producer's last batch and marker stay.
    push(&mut log, "z", t); // 14
    clean(&mut log, t + 2 * DAY_MS + 1).expect("pass 4");
    assert_eq!(offsets(&log), vec![6, 7, 8, 9, 10, 11, 12, 14]);
    drop(log);
    let log = Log::open(dir.path(), config(), t).expect("reopen");
    assert!(log.aborted_overlapping(0, 15).is_empty());
    assert_eq!(log.first_unstable_offset(), None);
}

#[test]
fn an_open_transaction_ends_the_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = wall_ms();
    let mut log = Log::open(dir.path(), config(), now).expect("open");
    let mut model = Model::default();
    model.put(&mut log, &[kv("a", "a1")], now); // 0
    let open = append_transactional(&mut log, 7, &[kv("a", "open")], now); // 1
    model.put(&mut log, &[kv("b", "b1")], now); // 2
    log.roll(now).expect("roll");
    model.put(&mut log, &[kv("a", "a2"), kv("b", "b2")], now); // 3, 4
    log.roll(now).expect("roll");
    model.put(&mut log, &[kv("c", "c1")], now); // 5
    assert_eq!(log.first_unstable_offset(), Some(open));
    let pass = clean(&mut log, now).expect("a pass runs");
    // Only a1's batch is below the open transaction: the map covers it alone, so nothing
    // it could supersede goes, and the next pass starts at the open transaction.
    assert_eq!(pass.records_removed, 0, "{pass:?}");
    assert_eq!(pass.first_dirty, open);
    assert_eq!(offsets(&log), vec![0, 1, 2, 3, 4, 5]);
    // Once it commits, the pass goes on: a1 and b1 go, and so does the committed record
    // (a2 supersedes it). Its batch was its producer's last: what stays is a batch with no
    // records (producer, epoch and sequence), and the marker.
    log.append_marker(7, 0, crate::log::txn::Marker::Commit, 0, 0, now)
        .expect("commit"); // 6
    log.roll(now).expect("roll");
    clean(&mut log, now).expect("a pass runs");
    assert_eq!(offsets(&log), vec![3, 4, 5, 6]);
    let location = log.locate(1).expect("locate").expect("a segment");
    let bytes = read_batches(&location, 1, 1 << 20, i64::MAX).expect("read");
    let header = format::parse_validated_header(&bytes[..format::BATCH_HEADER_LEN]);
    assert_eq!(
        (header.base_offset, header.record_count, header.producer_id),
        (1, 0, 7)
    );
    assert!(header.is_transactional() && format::crc_matches(&bytes[..header.size]));
}

#[test]
fn a_producers_last_batch_keeps_its_last_offset() {
    use crate::log::txn::Marker;
    for (superseded, kept) in [(vec!["a", "b"], vec![2]), (vec!["c"], vec![0, 1])] {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = wall_ms();
        let mut log = Log::open(dir.path(), config(), now).expect("open");
        // The producer's last batch: a b c (0..=2), committed (3).
        append_transactional(
            &mut log,
            7,
            &[kv("a", "1"), kv("b", "1"), kv("c", "1")],
            now,
        );
        log.append_marker(7, 0, Marker::Commit, 0, 0, now)
            .expect("commit");
        log.roll(now).expect("roll");
        let newer: Vec<Rec> = superseded.iter().map(|k| kv(*k, "2")).collect();
        Model::default().put(&mut log, &newer, now);
        log.roll(now).expect("roll");
        Model::default().put(&mut log, &[kv("z", "1")], now);
        clean(&mut log, now).expect("a pass runs");
        let left: Vec<i64> = offsets(&log).into_iter().filter(|&o| o < 3).collect();
        assert_eq!(left, kept, "superseded {superseded:?}");
        // The batches below the marker still reach the producer's last offset (2), whole
        // and in order (a reopen and a second pass walk them too).
        let location = log.locate(0).expect("locate").expect("a segment");
        let bytes = read_batches(&location, 0, 1 << 20, i64::MAX).expect("read");
        let mut position = 0;
        let mut next = 0;
        while next < 3 {
            let header = format::parse_validated_header(&bytes[position..]);
            assert!(header.last_offset_delta >= 0, "{header:?}");
            assert!(format::crc_matches(
                &bytes[position..position + header.size]
            ));
            assert!(header.base_offset >= next, "{header:?}");
            next = header.next_offset();
            position += header.size;
        }
        assert_eq!(next, 3, "the producer's last offset (2) is still covered");
        drop(log);
        let mut log = Log::open(dir.path(), config(), now).expect("reopen");
        Model::default().put(&mut log, &[kv("y", "1")], now);
        log.roll(now).expect("roll");
        clean(&mut log, now);
    }
}

#[test]
fn a_remote_rewrite_drops_aborted_records_and_keeps_markers() {
    use crate::log::txn::{AbortedTxn, Marker, encode_marker};
    let dir = tempfile::tempdir().expect("tempdir");
    // a=1 (0), aborted a (1), ABORT (2), b=1 (3)
    let mut bytes = batch_of(&[kv("a", "1")], 1000, Compression::None);
    let mut aborted = transactional_batch(7, &[kv("a", "aborted")], 0, 1000);
    aborted[..8].copy_from_slice(&1i64.to_be_bytes());
    bytes.extend_from_slice(&aborted);
    let mut marker = encode_marker(7, 0, Marker::Abort, 0, 1000).to_vec();
    marker[..8].copy_from_slice(&2i64.to_be_bytes());
    bytes.extend_from_slice(&marker);
    let mut last = batch_of(&[kv("b", "1")], 1000, Compression::None);
    last[..8].copy_from_slice(&3i64.to_be_bytes());
    bytes.extend_from_slice(&last);
    let entry = AbortedTxn {
        producer_id: 7,
        first_offset: 1,
        last_offset: 2,
        last_stable_offset: 3,
    };
    let map = Arc::new(OffsetMap::new());
    let mut rewrite = RemoteRewrite::new(
        dir.path(),
        (0, 4),
        bytes.len() as u64,
        map,
        &[entry],
        true,
        4096,
        0,
    )
    .expect("rewrite");
    rewrite.feed(Bytes::from(bytes)).expect("whole batches");
    let done = rewrite.finish().expect("finish").expect("a record went");
    assert_eq!(done.records_removed, 1);
    let mut copy = vec![0u8; done.log_bytes as usize];
    done.log.read_exact_at(&mut copy, 0).expect("read the copy");
    let offsets: Vec<i64> = split_batches(&copy)
        .iter()
        .flat_map(records_of)
        .map(|(o, _)| o)
        .collect();
    assert_eq!(offsets, vec![0, 2, 3], "the marker stays");
}
