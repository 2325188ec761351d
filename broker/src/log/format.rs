//! The on-disk format of a partition log, byte by byte. Layout version 1.
//!
//! Everything a partition persists lives in one directory,
//! `<data_dir>/logs/<topic>.<topic_id>/<partition>/`:
//!
//! | file | content |
//! |---|---|
//! | `<base_offset:020>.log` | record batches exactly as clients sent them (offsets patched) |
//! | `<base_offset:020>.index` | sparse offset index for that segment |
//! | `<base_offset:020>.timeindex` | sparse time index for that segment |
//! | `partition.checkpoint` | log start offset and recovery point |
//!
//! All integers are big-endian, like the Kafka protocol.
//!
//! ## `.log`: Kafka RecordBatch v2, concatenated, no file header
//!
//! The segment file has no header of its own so that a byte range of it is a valid
//! `records` field of a FetchResponse and can be served (or uploaded) without rewriting.
//! Each batch is the client's batch byte for byte, except the two fields the CRC does not
//! cover, which the broker overwrites on append (a topic with LogAppendTime also has the
//! timestamp attribute and max timestamp set, and one whose compression.type names a codec
//! has a batch in another codec recompressed: records, length, codec bits; both recompute
//! the CRC):
//!
//! | offset | size | field | written by |
//! |---|---|---|---|
//! | 0 | 8 | base offset | broker (patched on append) |
//! | 8 | 4 | batch length (bytes after this field) | client |
//! | 12 | 4 | partition leader epoch | broker (patched on append) |
//! | 16 | 1 | magic, always 2 | client |
//! | 17 | 4 | CRC-32C of bytes 21..end | client |
//! | 21 | 2 | attributes: bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control | client |
//! | 23 | 4 | last offset delta | client |
//! | 27 | 8 | base timestamp | client |
//! | 35 | 8 | max timestamp | client |
//! | 43 | 8 | producer id | client |
//! | 51 | 2 | producer epoch | client |
//! | 53 | 4 | base sequence | client |
//! | 57 | 4 | record count | client |
//! | 61 | .. | records (possibly compressed) | client |
//!
//! ## `.index` and `.timeindex`
//!
//! Both start with the same 8-byte header, followed by fixed-size entries in ascending
//! order. An entry is added before a batch is appended once at least `index.interval.bytes`
//! were appended since the previous entry (and for the first batch of a segment).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic: `SIDX` (offset index) or `STIX` (time index) |
//! | 4 | 1 | layout version, 1 |
//! | 5 | 3 | zero |
//!
//! Offset index entry (8 bytes): `relative_offset: u32` (batch base offset minus segment
//! base offset), `position: u32` (byte position of that batch in the `.log` file).
//!
//! Time index entry (12 bytes): `max_timestamp: i64` (largest batch max timestamp in the
//! segment up to and including the indexed batch), `relative_offset: u32` (base offset of
//! the batch that carries it). A sealed segment's last time entry holds the segment's
//! largest timestamp.
//!
//! ## `partition.checkpoint`
//!
//! Rewritten atomically (temporary file, fsync, rename) by the periodic flusher, by
//! DeleteRecords and at clean shutdown. Everything in the log before the recovery point
//! had been fsynced when the file was written, so start-up only scans what follows it.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SPCK` |
//! | 4 | 1 | layout version, 1 |
//! | 5 | 8 | log start offset |
//! | 13 | 8 | recovery point: base offset of the segment |
//! | 21 | 8 | recovery point: byte position in that segment |
//! | 29 | 8 | recovery point: next offset at that position |
//! | 37 | 8 | segment max timestamp up to the recovery point (-1 if none) |
//! | 45 | 8 | offset of that timestamp |
//! | 53 | 4 | CRC-32C of bytes 0..53 |

use bytes::{Buf, BufMut, BytesMut};

/// Layout version written by this code; see the module doc.
pub const LAYOUT_VERSION: u8 = 1;

pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes needed to learn a batch's offsets and length: up to and including last offset delta.
pub const BATCH_PREFIX_LEN: usize = 27;
/// Bytes before the batch-length field's payload: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

pub const INDEX_HEADER_LEN: u64 = 8;
pub const OFFSET_INDEX_MAGIC: &[u8; 4] = b"SIDX";
pub const TIME_INDEX_MAGIC: &[u8; 4] = b"STIX";
pub const OFFSET_ENTRY_LEN: u64 = 8;
pub const TIME_ENTRY_LEN: u64 = 12;

const ATTR_CODEC_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a record batch was refused. Each maps to one Kafka error code in the handlers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error(
        "record batch is truncated: {0} bytes left where a batch header needs {BATCH_HEADER_LEN}"
    )]
    Truncated(usize),
    #[error("record batch declares {declared} bytes but {available} are present")]
    LengthMismatch { declared: usize, available: usize },
    #[error("record batch magic {0} is not supported; only magic 2 is")]
    Magic(i8),
    #[error("record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("record batch uses unknown compression codec {0}")]
    Codec(i16),
    #[error("record batch holds {count} records but its last offset delta is {last_offset_delta}")]
    Count { count: i32, last_offset_delta: i32 },
    #[error("clients may not produce control batches")]
    Control,
    #[error("a transactional batch needs a producer id")]
    TransactionalWithoutProducer,
    #[error("record {index} of the batch is malformed: {reason}")]
    Record { index: i32, reason: &'static str },
    #[error(
        "timestamp {timestamp} of record {index} is out of range: it must be within [{low}, {high}] (message.timestamp.before.max.ms / after.max.ms)"
    )]
    Timestamp {
        index: i32,
        timestamp: i64,
        low: i64,
        high: i64,
    },
    #[error("the batch's records cannot be decompressed: {0}")]
    Decompress(String),
    #[error("the request's records inflate past {limit} bytes")]
    Inflated { limit: u64 },
    #[error(
        "the request's offsets {first}..{last} do not fit in one segment starting at {segment_base}"
    )]
    OffsetSpan {
        first: i64,
        last: i64,
        segment_base: i64,
    },
    #[error(
        "replicated batch has base offset {base_offset} and last offset delta {last_offset_delta}"
    )]
    Offsets {
        base_offset: i64,
        last_offset_delta: i32,
    },
}

/// The fields of a batch header the broker reads; a view over validated bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Whole batch size including the 12-byte offset/length prefix.
    pub size: usize,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub record_count: i32,
    /// -1 unless an idempotent producer wrote the batch.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// The partition leader epoch the leader wrote into the batch when it appended it.
    pub leader_epoch: i32,
    /// Bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control.
    pub attributes: i16,
}

impl BatchHeader {
    /// The sequence number of the batch's last record (sequences wrap at i32::MAX).
    pub fn last_sequence(&self) -> i32 {
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Written by a transactional producer (or a transaction marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// A control batch: a transaction marker (see [`super::txn`]).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// Reads base offset, size and last offset delta from the first 27 bytes of a batch.
/// Returns `None` if fewer bytes are given or the length field is impossible.
pub fn read_batch_prefix(bytes: &[u8]) -> Option<(i64, usize, i32)> {
    if bytes.len() < BATCH_PREFIX_LEN {
        return None;
    }
    let mut b = bytes;
    let base_offset = b.get_i64();
    let length = b.get_i32();
    if length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return None;
    }
    let last_offset_delta = i32::from_be_bytes([bytes[23], bytes[24], bytes[25], bytes[26]]);
    Some((
        base_offset,
        length as usize + LOG_OVERHEAD,
        last_offset_delta,
    ))
}

/// Parses and fully validates the batch at the start of `bytes` (magic, length, CRC,
/// codec, size limit). `bytes` may hold further batches after this one.
pub fn validate_batch(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Truncated(bytes.len()));
    }
    let declared = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    let size = usize::try_from(declared)
        .ok()
        .filter(|len| *len >= BATCH_HEADER_LEN - LOG_OVERHEAD)
        .map(|len| len + LOG_OVERHEAD)
        .ok_or(BatchError::LengthMismatch {
            declared: declared.max(0) as usize,
            available: bytes.len(),
        })?;
    if size > bytes.len() {
        return Err(BatchError::LengthMismatch {
            declared: size,
            available: bytes.len(),
        });
    }
    if size > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size,
            max: max_batch_bytes,
        });
    }
    let batch = &bytes[..size];
    let stored = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
    let computed = crc32c::crc32c(&batch[CRC_START..]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let header = parse_validated_header(batch);
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    let codec = attributes & ATTR_CODEC_MASK;
    if codec > 4 {
        return Err(BatchError::Codec(codec));
    }
    if attributes & ATTR_CONTROL != 0 {
        return Err(BatchError::Control);
    }
    if attributes & ATTR_TRANSACTIONAL != 0 && header.producer_id < 0 {
        return Err(BatchError::TransactionalWithoutProducer);
    }
    if header.record_count < 1
        || i64::from(header.record_count) != i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchError::Count {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    // The records themselves are checked by `records::check_produced`, with a budget.
    Ok(header)
}

/// Checks a batch a leader sent to this follower: whole, magic 2, CRC intact, offsets
/// that move forward. Leaders store compacted batches whose record count no longer
/// matches their offset range, so the produce path's record checks do not apply.
pub fn validate_replica_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Truncated(bytes.len()));
    }
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    let declared = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let size = usize::try_from(declared)
        .ok()
        .map(|len| len.saturating_add(LOG_OVERHEAD))
        .filter(|size| (BATCH_HEADER_LEN..=bytes.len()).contains(size))
        .ok_or(BatchError::LengthMismatch {
            declared: declared.max(0) as usize,
            available: bytes.len(),
        })?;
    let batch = &bytes[..size];
    let stored = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
    let computed = crc32c::crc32c(&batch[CRC_START..]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let header = parse_validated_header(batch);
    if header.base_offset < 0
        || header.last_offset_delta < 0
        || header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta))
            .is_none()
    {
        return Err(BatchError::Offsets {
            base_offset: header.base_offset,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// A batch's compression codec (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// The codec of a whole batch; `Err` carries an unknown codec number.
pub fn codec(batch: &[u8]) -> Result<Codec, i16> {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    match attributes & ATTR_CODEC_MASK {
        0 => Ok(Codec::None),
        1 => Ok(Codec::Gzip),
        2 => Ok(Codec::Snappy),
        3 => Ok(Codec::Lz4),
        4 => Ok(Codec::Zstd),
        other => Err(other),
    }
}

/// Reads the header of a batch already known to be whole (CRC not checked).
pub fn parse_validated_header(batch: &[u8]) -> BatchHeader {
    let mut b = batch;
    let base_offset = b.get_i64();
    let length = b.get_i32();
    let leader_epoch = b.get_i32();
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    let mut tail = &batch[23..BATCH_HEADER_LEN];
    let last_offset_delta = tail.get_i32();
    let _base_timestamp = tail.get_i64();
    let max_timestamp = tail.get_i64();
    let producer_id = tail.get_i64();
    let producer_epoch = tail.get_i16();
    let base_sequence = tail.get_i32();
    let record_count = tail.get_i32();
    BatchHeader {
        base_offset,
        size: length as usize + LOG_OVERHEAD,
        last_offset_delta,
        max_timestamp,
        record_count,
        producer_id,
        producer_epoch,
        base_sequence,
        leader_epoch,
        attributes,
    }
}

/// Checks the CRC of a stored batch; used by recovery to find a torn tail.
pub fn crc_matches(batch: &[u8]) -> bool {
    batch.len() >= BATCH_HEADER_LEN
        && batch[16] == 2
        && u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]])
            == crc32c::crc32c(&batch[CRC_START..])
}

/// Whether a stored batch carries LogAppendTime (attribute bit 3).
pub fn is_log_append_time(batch: &[u8]) -> bool {
    batch.len() >= BATCH_HEADER_LEN
        && i16::from_be_bytes([batch[21], batch[22]]) & ATTR_LOG_APPEND_TIME != 0
}

/// Overwrites the fields the broker owns. Neither is covered by the CRC.
pub fn patch_batch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Rewrites a batch for `message.timestamp.type=LogAppendTime`: sets the timestamp-type
/// attribute and the max timestamp, then recomputes the CRC (both fields are covered).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | ATTR_LOG_APPEND_TIME;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Sets a batch's max timestamp to `max_timestamp` and recomputes the CRC (the field is
/// covered). For a produced CreateTime batch whose header disagrees with its records.
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp: i64) {
    batch[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

pub fn index_header(magic: &[u8; 4]) -> [u8; INDEX_HEADER_LEN as usize] {
    let mut header = [0u8; INDEX_HEADER_LEN as usize];
    header[..4].copy_from_slice(magic);
    header[4] = LAYOUT_VERSION;
    header
}

/// Whether an index file header is one this code reads.
pub fn index_header_ok(header: &[u8], magic: &[u8; 4]) -> bool {
    header.len() >= INDEX_HEADER_LEN as usize && &header[..4] == magic && header[4] == 1
}

/// The content of `partition.checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub log_start_offset: i64,
    pub segment_base: i64,
    pub position: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
}

const CHECKPOINT_MAGIC: &[u8; 4] = b"SPCK";
pub const CHECKPOINT_LEN: usize = 57;

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = BytesMut::with_capacity(CHECKPOINT_LEN);
        buf.put_slice(CHECKPOINT_MAGIC);
        buf.put_u8(LAYOUT_VERSION);
        buf.put_i64(self.log_start_offset);
        buf.put_i64(self.segment_base);
        buf.put_u64(self.position);
        buf.put_i64(self.next_offset);
        buf.put_i64(self.max_timestamp);
        buf.put_i64(self.offset_of_max_timestamp);
        let crc = crc32c::crc32c(&buf);
        buf.put_u32(crc);
        buf.to_vec()
    }

    /// Parses a checkpoint; `None` if it is damaged or of an unknown version, in which case
    /// recovery falls back to scanning the last segment entirely.
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        if bytes.len() != CHECKPOINT_LEN || &bytes[..4] != CHECKPOINT_MAGIC || bytes[4] != 1 {
            return None;
        }
        let stored = u32::from_be_bytes([bytes[53], bytes[54], bytes[55], bytes[56]]);
        if crc32c::crc32c(&bytes[..53]) != stored {
            return None;
        }
        let mut b = &bytes[5..53];
        Some(Checkpoint {
            log_start_offset: b.get_i64(),
            segment_base: b.get_i64(),
            position: b.get_u64(),
            next_offset: b.get_i64(),
            max_timestamp: b.get_i64(),
            offset_of_max_timestamp: b.get_i64(),
        })
    }
}

/// An offset-index entry: (offset relative to the segment's base, byte position).
pub fn offset_entry(buf: &[u8]) -> (u32, u32) {
    (
        u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
        u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
    )
}

/// A time-index entry: (running max timestamp, offset relative to the segment's base).
pub fn time_entry(buf: &[u8]) -> (i64, u32) {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&buf[..8]);
    (
        i64::from_be_bytes(ts),
        u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    )
}

/// In a whole index file's bytes (header first, as uploaded), the last entry whose key
/// (decoded by `key`) is <= `target`; `None` if there is none or if the keys are not in
/// order (a damaged index: the caller then starts at the segment's start, since a floor
/// taken over damaged keys could land past the answer). One pass, which checks the order
/// as it goes. A torn trailing entry is ignored.
pub fn index_floor(
    index: &[u8],
    entry_len: u64,
    target: i64,
    key: impl Fn(&[u8]) -> i64,
) -> Option<&[u8]> {
    let entries = index.get(INDEX_HEADER_LEN as usize..).unwrap_or_default();
    let mut found = None;
    let mut previous = i64::MIN;
    for entry in entries.chunks_exact(entry_len as usize) {
        let k = key(entry);
        if k < previous {
            return None;
        }
        previous = k;
        if k <= target {
            found = Some(entry);
        }
    }
    found
}

pub fn segment_file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

#[cfg(test)]
mod tests;
