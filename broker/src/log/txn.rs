//! Transactions in the partition log: control batches (commit and abort markers) and the
//! aborted-transaction index, byte by byte.
//!
//! A transactional producer's batches carry the transactional attribute (bit 4). The
//! partition knows a transaction is open from its first such batch until the
//! transaction's marker: a control batch (bit 5) holding one control record, written by
//! the transaction coordinator. The first offset of the oldest open transaction bounds
//! the **last stable offset** (LSO): read_committed consumers read below
//! `min(LSO, high watermark)` only. Open transactions live in the producer state
//! ([`super::producers`]), so they survive a restart with its snapshot.
//!
//! An abort marker adds an entry to the **aborted-transaction index** of the segment that
//! holds the marker: the producer, the first and last offset of the aborted transaction
//! and the LSO when it was aborted. A read_committed Fetch returns the entries that
//! overlap the records it returns, and clients drop those producers' records between
//! the first offset and the marker. The index is in memory for the whole local log and
//! on disk per segment; start-up loads the files and rebuilds the entries of the tail it
//! scans, so an index file that missed its last fsync loses nothing.
//!
//! ## Control batch (Kafka's RecordBatch v2 with the control attribute)
//!
//! One uncompressed record, offset delta 0, whose key is 4 bytes and value 6:
//!
//! | part | offset | size | field |
//! |---|---|---|---|
//! | key | 0 | 2 | version, 0 |
//! | key | 2 | 2 | type: 0 abort, 1 commit |
//! | value | 0 | 2 | version, 0 |
//! | value | 2 | 4 | coordinator epoch |
//!
//! The batch carries the producer id and epoch of the transaction, base sequence -1.
//!
//! ## `<base_offset:020>.txnindex` (layout version 1)
//!
//! An 8-byte header, then fixed-size entries in the order the markers were appended.
//! All integers big-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `STXI` |
//! | 4 | 1 | layout version, 1 |
//! | 5 | 3 | zero |
//!
//! Entry (32 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | producer id |
//! | 8 | 8 | first offset of the aborted transaction in this partition |
//! | 16 | 8 | last offset: the abort marker's offset |
//! | 24 | 8 | last stable offset when the marker was written |
//!
//! A file is appended when an abort marker lands in its segment, fsynced with the
//! segment's data (the periodic flush and the roll), and deleted with the segment. A
//! damaged or unknown file is ignored with a warning and rebuilt by the next full scan;
//! entries past the log end (a truncated tail) are dropped at start-up.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::records;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::format::{self, BatchHeader};

const MAGIC: &[u8; 4] = b"STXI";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
const ENTRY_LEN: usize = 32;
pub const EXTENSION: &str = "txnindex";

/// A transaction marker's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// A marker a coordinator asks a partition's leader to write.
#[derive(Debug, Clone, Copy)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub marker: Marker,
    /// The leader epoch of the coordinator's partition of the transaction topic.
    pub coordinator_epoch: i32,
}

/// A partition leader's question to a coordinator: is this partition in the producer's
/// open transaction?
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub topic: String,
    pub partition: i32,
    /// KIP-890 part 2: add the partition to the transaction (opening it if needed)
    /// rather than only check that it is in it.
    pub add: bool,
}

/// One entry of the aborted-transaction index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// Encodes a control batch holding one marker (offsets are patched on append).
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
    now_ms: i64,
) -> Bytes {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(match marker {
        Marker::Abort => 0,
        Marker::Commit => 1,
    });
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(coordinator_epoch);
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    // Encoding one small uncompressed record into a growable buffer cannot fail.
    let _ = RecordBatchEncoder::encode(
        &mut buf,
        std::iter::once(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    );
    buf.freeze()
}

/// The marker a control batch holds, from its first record's key; `None` if the batch is
/// not a control batch or its key is not a marker's. `batch` is one whole batch.
pub fn marker_of(batch: &[u8], header: &BatchHeader) -> Option<Marker> {
    if !header.is_control() {
        return None;
    }
    let mut key = None;
    let mut budget = records::Budget::new(MAX_CONTROL_BATCH_LEN as u64);
    records::for_each_record(batch, records::Want::Key, &mut budget, |record| {
        key = record.key;
        false
    })
    .ok()?;
    match key?.as_ref() {
        [_, _, 0, 0] => Some(Marker::Abort),
        [_, _, 0, 1] => Some(Marker::Commit),
        _ => None,
    }
}

/// The marker a control batch holds and its coordinator epoch (the value's bytes 2..6),
/// or `None` for a batch that is no marker.
pub fn marker_info(batch: &[u8], header: &BatchHeader) -> Option<(Marker, i32)> {
    if !header.is_control() {
        return None;
    }
    let mut fields = None;
    let mut budget = records::Budget::new(MAX_CONTROL_BATCH_LEN as u64);
    records::for_each_record(batch, records::Want::All, &mut budget, |record| {
        fields = Some((record.key, record.value));
        false
    })
    .ok()?;
    let (key, value) = fields?;
    let marker = match key?.as_ref() {
        [_, _, 0, 0] => Marker::Abort,
        [_, _, 0, 1] => Marker::Commit,
        _ => return None,
    };
    let coordinator_epoch = match value.as_deref() {
        Some([_, _, a, b, c, d, ..]) => i32::from_be_bytes([*a, *b, *c, *d]),
        _ => -1,
    };
    Some((marker, coordinator_epoch))
}

/// The offset after the last whole batch of `records` (a read's answer), if any: a
/// read_committed response lists the aborted transactions up to there only.
pub fn records_end(records: &[u8]) -> Option<i64> {
    let mut position = 0;
    let mut end = None;
    while let Some((base, size, last_delta)) = format::read_batch_prefix(&records[position..]) {
        if position + size > records.len() {
            break;
        }
        end = Some(base + i64::from(last_delta) + 1);
        position += size;
    }
    end
}

/// Largest control batch recovery reads whole to learn its marker (a marker batch is
/// under a hundred bytes; a larger control batch is not a marker of ours).
pub const MAX_CONTROL_BATCH_LEN: usize = 4096;

/// The aborted transactions of a local log, in memory, and their per-segment files.
#[derive(Debug, Default)]
pub struct AbortedIndex {
    /// By (first offset, producer id).
    entries: BTreeMap<(i64, i64), AbortedTxn>,
    /// The longest transaction seen (last minus first offset): a query looks back this
    /// far for transactions that started before its range.
    max_span: i64,
}

impl AbortedIndex {
    pub fn path(dir: &Path, segment_base: i64) -> PathBuf {
        dir.join(format::segment_file_name(segment_base, EXTENSION))
    }

    pub fn insert(&mut self, entry: AbortedTxn) {
        self.max_span = self.max_span.max(entry.last_offset - entry.first_offset);
        self.entries
            .insert((entry.first_offset, entry.producer_id), entry);
    }

    pub fn contains(&self, entry: &AbortedTxn) -> bool {
        self.entries.get(&(entry.first_offset, entry.producer_id)) == Some(entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Aborted transactions with records in `[from, to)`: started before `to` and ended
    /// (their marker) at or after `from`, oldest first.
    pub fn overlapping(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        if to <= from {
            return Vec::new();
        }
        let lower = from.saturating_sub(self.max_span);
        self.entries
            .range((lower, i64::MIN)..(to, i64::MIN))
            .map(|(_, e)| *e)
            .filter(|e| e.last_offset >= from)
            .collect()
    }

    /// Forgets one transaction (compaction removed its marker).
    pub fn remove(&mut self, entry: &AbortedTxn) {
        if self.contains(entry) {
            self.entries
                .remove(&(entry.first_offset, entry.producer_id));
        }
    }

    /// Forgets transactions whose marker is below `offset` (retention removed them).
    pub fn drop_before(&mut self, offset: i64) {
        self.entries.retain(|_, e| e.last_offset >= offset);
    }

    /// Forgets transactions whose marker is at or past `offset` (a truncated tail).
    pub fn drop_from(&mut self, offset: i64) {
        self.entries.retain(|_, e| e.last_offset < offset);
    }

    /// Appends `entry` to the index file of the segment at `segment_base`.
    pub fn append_to_file(dir: &Path, segment_base: i64, entry: &AbortedTxn) -> io::Result<()> {
        let path = Self::path(dir, segment_base);
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut buf = BytesMut::with_capacity(HEADER_LEN + ENTRY_LEN);
        if file.metadata()?.len() == 0 {
            put_header(&mut buf);
        }
        put_entry(&mut buf, entry);
        file.write_all(&buf)
    }

    /// Rewrites the index file of the segment at `segment_base` with `entries` (or
    /// removes it when there are none).
    pub fn rewrite_file(dir: &Path, segment_base: i64, entries: &[AbortedTxn]) -> io::Result<()> {
        let path = Self::path(dir, segment_base);
        if entries.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        super::write_atomically(&path, &encode_file(entries))
    }
}

fn put_header(buf: &mut BytesMut) {
    buf.put_slice(MAGIC);
    buf.put_u8(VERSION);
    buf.put_bytes(0, 3);
}

fn put_entry(buf: &mut BytesMut, entry: &AbortedTxn) {
    buf.put_i64(entry.producer_id);
    buf.put_i64(entry.first_offset);
    buf.put_i64(entry.last_offset);
    buf.put_i64(entry.last_stable_offset);
}

/// The bytes of a `.txnindex` file holding `entries`.
pub fn encode_file(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + ENTRY_LEN * entries.len());
    put_header(&mut buf);
    for entry in entries {
        put_entry(&mut buf, entry);
    }
    buf.to_vec()
}

/// Parses a `.txnindex` file; `None` if its header is not ours. A torn last entry (a
/// crash during an append) is ignored: recovery rebuilds it from the log.
pub fn decode_file(bytes: &[u8]) -> Option<Vec<AbortedTxn>> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return None;
    }
    let mut body = &bytes[HEADER_LEN..];
    let mut entries = Vec::with_capacity(body.len() / ENTRY_LEN);
    while body.remaining() >= ENTRY_LEN {
        entries.push(AbortedTxn {
            producer_id: body.get_i64(),
            first_offset: body.get_i64(),
            last_offset: body.get_i64(),
            last_stable_offset: body.get_i64(),
        });
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txnindex_bytes_are_fixed() {
        let entry = AbortedTxn {
            producer_id: 0x0102,
            first_offset: 5,
            last_offset: 9,
            last_stable_offset: 3,
        };
        let bytes = encode_file(&[entry]);
        let mut expected = b"STXI\x01\x00\x00\x00".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(bytes, expected);
        assert_eq!(decode_file(&bytes), Some(vec![entry]));
        // A torn last entry is ignored; a foreign header is refused.
        assert_eq!(decode_file(&bytes[..bytes.len() - 3]), Some(vec![]));
        assert_eq!(decode_file(b"XXXX\x01\x00\x00\x00"), None);
    }

    #[test]
    fn marker_batches_round_trip() {
        for marker in [Marker::Abort, Marker::Commit] {
            let batch = encode_marker(42, 3, marker, 7, 1_000);
            let header = format::parse_validated_header(&batch);
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(header.record_count, 1);
            assert!(format::crc_matches(&batch));
            assert_eq!(marker_of(&batch, &header), Some(marker));
            assert_eq!(marker_info(&batch, &header), Some((marker, 7)));
            assert_eq!(header.max_timestamp, 1_000);
            assert!(batch.len() <= MAX_CONTROL_BATCH_LEN);
        }
    }

    #[test]
    fn overlapping_finds_transactions_that_started_before_the_range() {
        let mut index = AbortedIndex::default();
        let entry = |pid, first, last| AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: first,
        };
        index.insert(entry(1, 0, 100));
        index.insert(entry(2, 10, 20));
        index.insert(entry(3, 150, 160));
        let pids = |v: Vec<AbortedTxn>| v.iter().map(|e| e.producer_id).collect::<Vec<_>>();
        assert_eq!(pids(index.overlapping(50, 60)), vec![1]);
        assert_eq!(pids(index.overlapping(15, 151)), vec![1, 2, 3]);
        assert_eq!(pids(index.overlapping(101, 150)), Vec::<i64>::new());
        assert_eq!(pids(index.overlapping(160, 161)), vec![3]);
        index.drop_before(101);
        assert_eq!(pids(index.overlapping(0, 1000)), vec![3]);
        index.drop_from(160);
        assert_eq!(index.len(), 0);
    }
}
