//! The records inside a RecordBatch v2, read with bounded memory.
//!
//! Every byte here may come from a hostile client (produce) or from a disk or bucket that
//! holds what such a client once sent, so nothing is sized from a declared number:
//! - records are read one at a time from a stream; a declared record, key, value or header
//!   length is checked against the bytes its record still has before anything is read;
//! - a declared header count is checked against the record's remaining bytes (every
//!   header takes at least two), never used to pre-size a collection;
//! - compressed records are inflated as a stream, and every inflated byte is charged to a
//!   [`Budget`] shared by the whole request or pass: a decompression bomb ends in
//!   [`RecordError::Inflated`], not in an allocation;
//! - snappy's declared block length is checked against what the block can possibly
//!   produce (a snappy element of 3 bytes yields at most 64) and against the budget before
//!   the block is decoded.
//!
//! Records are laid out as Kafka defines them (all varints zigzag-encoded):
//!
//! | field | type |
//! |---|---|
//! | length (bytes after this field) | varint |
//! | attributes | int8 |
//! | timestamp delta | varlong |
//! | offset delta | varint |
//! | key length (-1: null) | varint |
//! | key | bytes |
//! | value length (-1: null) | varint |
//! | value | bytes |
//! | header count | varint |
//! | per header: key length, key, value length (-1: null), value | varint, bytes, varint, bytes |

use std::io::{self, BufRead, BufReader, Read};

use bytes::{Buf, Bytes};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, TimestampType};

use super::format::{self, BATCH_HEADER_LEN, BatchError, BatchHeader};

/// Inflated bytes one produce request, or one look into a stored batch, may cost. The
/// walk is a stream, so this bounds CPU time rather than memory: about 0.1-0.3 s of
/// decompression on one core.
pub const MAX_INFLATED_BYTES: u64 = 256 * 1024 * 1024;

/// Memory charged per record a caller keeps whole (struct and map overhead), on top of its
/// bytes, so that a batch of millions of empty records cannot be materialised cheaply.
pub const RECORD_OVERHEAD: u64 = 160;

/// Largest zstd window accepted: 2^27 (128 MiB), as Kafka's. Java producers at levels
/// 20-22 stream with windows of 2^25-2^27. The window is reserved, but only the bytes
/// inflated are touched, and the budget bounds those; heavy decodes run a few at a time
/// (`partition/mod.rs`), which bounds the sum.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Largest snappy block decoded (snappy decodes a block whole). librdkafka writes one raw
/// block per batch, so this caps the batch's uncompressed size for snappy.
const SNAPPY_MAX_BLOCK: u64 = 64 * 1024 * 1024;

/// Why the records of a batch cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record {index} of the batch is malformed: {reason}")]
    Malformed { index: i64, reason: &'static str },
    #[error("the {codec} records of the batch cannot be decompressed: {reason}")]
    Decompress { codec: &'static str, reason: String },
    #[error("the records inflate past the budget of {limit} bytes")]
    Inflated { limit: u64 },
}

/// Inflated (or kept) bytes still allowed; shared by every batch of a request or pass.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    limit: u64,
    left: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget { limit, left: limit }
    }

    /// Bytes still allowed.
    pub fn left(&self) -> u64 {
        self.left
    }

    pub(super) fn charge(&mut self, bytes: u64) -> Result<(), RecordError> {
        self.left = self
            .left
            .checked_sub(bytes)
            .ok_or(RecordError::Inflated { limit: self.limit })?;
        Ok(())
    }
}

/// Which parts of each record the caller needs; what is not needed is skipped unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Want {
    /// Offsets, timestamps and whether key and value are null.
    Framing,
    /// Also the key's bytes.
    Key,
    /// Everything, headers included.
    All,
}

/// One record. Fields the caller did not [`Want`] are `None` / empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordView {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub has_key: bool,
    pub has_value: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// In wire order; duplicate keys are kept (Kafka allows them).
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Where record bytes come from: the batch itself (uncompressed, zero-copy) or an
/// inflating stream.
trait Source {
    fn byte(&mut self) -> io::Result<Option<u8>>;
    fn take(&mut self, len: usize) -> io::Result<Bytes>;
    fn skip(&mut self, len: usize) -> io::Result<()>;
    fn at_end(&mut self) -> io::Result<bool>;
}

struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    fn byte(&mut self) -> io::Result<Option<u8>> {
        let Some((&byte, rest)) = self.0.split_first() else {
            return Ok(None);
        };
        self.0 = rest;
        Ok(Some(byte))
    }

    fn take(&mut self, len: usize) -> io::Result<Bytes> {
        let taken = Bytes::copy_from_slice(self.0.get(..len).ok_or(io::ErrorKind::UnexpectedEof)?);
        self.0 = &self.0[len..];
        Ok(taken)
    }

    fn skip(&mut self, len: usize) -> io::Result<()> {
        self.0 = self.0.get(len..).ok_or(io::ErrorKind::UnexpectedEof)?;
        Ok(())
    }

    fn at_end(&mut self) -> io::Result<bool> {
        Ok(self.0.is_empty())
    }
}

/// An inflating stream that charges every byte it yields to a budget.
struct Charged<'b, R> {
    inner: R,
    budget: &'b mut Budget,
    exceeded: bool,
}

impl<R: Read> Read for Charged<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.budget.left.saturating_add(1)).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..want]).inspect_err(|e| {
            // A decoder that must allocate a whole block refuses one past the budget
            // with this kind (see `SnappyReader`).
            if e.kind() == io::ErrorKind::OutOfMemory {
                self.exceeded = true;
            }
        })?;
        if self.budget.charge(read as u64).is_err() {
            self.exceeded = true;
            return Err(io::Error::other("inflation budget exceeded"));
        }
        Ok(read)
    }
}

struct StreamSource<'b, R: Read>(BufReader<Charged<'b, R>>);

impl<R: Read> Source for StreamSource<'_, R> {
    fn byte(&mut self) -> io::Result<Option<u8>> {
        let buf = self.0.fill_buf()?;
        let Some(&byte) = buf.first() else {
            return Ok(None);
        };
        self.0.consume(1);
        Ok(Some(byte))
    }

    fn take(&mut self, len: usize) -> io::Result<Bytes> {
        // Grows only as bytes arrive: a lying length costs what is really there.
        let mut out = Vec::new();
        (&mut self.0).take(len as u64).read_to_end(&mut out)?;
        if out.len() != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::from(out))
    }

    fn skip(&mut self, len: usize) -> io::Result<()> {
        let skipped = io::copy(&mut (&mut self.0).take(len as u64), &mut io::sink())?;
        if skipped != len as u64 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn at_end(&mut self) -> io::Result<bool> {
        Ok(self.0.fill_buf()?.is_empty())
    }
}

/// Visits every record of one whole batch (CRC already checked) in order, reading only
/// what `want` asks for. `visit` returns `false` to stop early. Returns how many records
/// were visited. Trailing bytes after the last record are an error.
pub fn for_each_record(
    batch: &[u8],
    want: Want,
    budget: &mut Budget,
    mut visit: impl FnMut(RecordView) -> bool,
) -> Result<i64, RecordError> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(RecordError::Malformed {
            index: 0,
            reason: "the batch is shorter than its header",
        });
    }
    let records = &batch[BATCH_HEADER_LEN..];
    let codec = format::codec(batch).map_err(|codec| RecordError::Decompress {
        codec: "unknown",
        reason: format!("codec {codec} does not exist"),
    })?;
    if codec == format::Codec::None {
        return walk(&mut SliceSource(records), want, &mut visit);
    }
    let inflater = inflater(codec, records, budget.left)?;
    let limit = budget.limit;
    let mut source = StreamSource(BufReader::with_capacity(
        64 * 1024,
        Charged {
            inner: inflater,
            budget,
            exceeded: false,
        },
    ));
    let walked = walk(&mut source, want, &mut visit);
    let reader = source.0.get_ref();
    match walked {
        Err(_) if reader.exceeded => Err(RecordError::Inflated { limit }),
        Err(RecordError::Malformed {
            reason: IO_FAILED, ..
        }) => Err(RecordError::Decompress {
            codec: codec.name(),
            reason: "the compressed stream is corrupt or truncated".into(),
        }),
        other => other,
    }
}

/// The reason an I/O error of the source is reported with (mapped to `Decompress` for
/// compressed batches).
const IO_FAILED: &str = "the records end before the batch says";

fn walk(
    source: &mut impl Source,
    want: Want,
    visit: &mut impl FnMut(RecordView) -> bool,
) -> Result<i64, RecordError> {
    let mut index: i64 = 0;
    loop {
        if source.at_end().map_err(|_| malformed(index, IO_FAILED))? {
            return Ok(index);
        }
        let record = read_record(source, want, index)?;
        index += 1;
        if !visit(record) {
            return Ok(index);
        }
    }
}

fn malformed(index: i64, reason: &'static str) -> RecordError {
    RecordError::Malformed { index, reason }
}

/// Reads one record; `left` tracks the bytes its length field still allows.
fn read_record(
    source: &mut impl Source,
    want: Want,
    index: i64,
) -> Result<RecordView, RecordError> {
    let bad = |reason| malformed(index, reason);
    let length = read_varint(source, &mut { u64::MAX }, index)?;
    let mut left = u64::try_from(length).map_err(|_| bad("negative record length"))?;
    let attributes = read_byte(source, &mut left, index)? as i8;
    let timestamp_delta = read_varint(source, &mut left, index)?;
    let offset_delta = i32::try_from(read_varint(source, &mut left, index)?)
        .map_err(|_| bad("offset delta out of range"))?;
    let mut view = RecordView {
        attributes,
        timestamp_delta,
        offset_delta,
        ..RecordView::default()
    };
    let key = read_field(source, &mut left, index, want >= Want::Key)?;
    view.has_key = key.is_some();
    view.key = key.flatten();
    let value = read_field(source, &mut left, index, want == Want::All)?;
    view.has_value = value.is_some();
    view.value = value.flatten();
    let count = read_varint(source, &mut left, index)?;
    let count = u64::try_from(count).map_err(|_| bad("negative header count"))?;
    if count > left / 2 {
        return Err(bad("more headers than the record has bytes for"));
    }
    for _ in 0..count {
        let key = read_field(source, &mut left, index, want == Want::All)?
            .ok_or(bad("null header key"))?;
        let value = read_field(source, &mut left, index, want == Want::All)?;
        if let Some(key) = key {
            view.headers.push((key, value.flatten()));
        }
    }
    if left != 0 {
        return Err(bad("the record's length does not match its fields"));
    }
    Ok(view)
}

fn read_byte(source: &mut impl Source, left: &mut u64, index: i64) -> Result<u8, RecordError> {
    *left = left
        .checked_sub(1)
        .ok_or(malformed(index, "a field runs past the record's length"))?;
    source
        .byte()
        .map_err(|_| malformed(index, IO_FAILED))?
        .ok_or(malformed(index, IO_FAILED))
}

/// A zigzag varint of at most 10 bytes.
fn read_varint(source: &mut impl Source, left: &mut u64, index: i64) -> Result<i64, RecordError> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = read_byte(source, left, index)?;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(malformed(index, "a varint is longer than 10 bytes"))
}

/// A length-prefixed byte field: `None` if null, `Some(None)` if present but not wanted.
fn read_field(
    source: &mut impl Source,
    left: &mut u64,
    index: i64,
    keep: bool,
) -> Result<Option<Option<Bytes>>, RecordError> {
    let length = read_varint(source, left, index)?;
    if length == -1 {
        return Ok(None);
    }
    let length = u64::try_from(length)
        .ok()
        .filter(|length| *length <= *left)
        .ok_or(malformed(index, "a field's length runs past the record"))?;
    *left -= length;
    let length = length as usize;
    let io = |_| malformed(index, IO_FAILED);
    if keep {
        Ok(Some(Some(source.take(length).map_err(io)?)))
    } else {
        source.skip(length).map_err(io)?;
        Ok(Some(None))
    }
}

impl From<RecordError> for BatchError {
    fn from(error: RecordError) -> BatchError {
        match error {
            RecordError::Malformed { index, reason } => BatchError::Record {
                index: i32::try_from(index).unwrap_or(i32::MAX),
                reason,
            },
            RecordError::Decompress { codec, reason } => {
                BatchError::Decompress(format!("{codec}: {reason}"))
            }
            RecordError::Inflated { limit } => BatchError::Inflated { limit },
        }
    }
}

/// Checks the records of a batch a client produced (header already validated): exactly
/// the records its header counts, with offset deltas 0, 1, 2, ..., nothing after them,
/// and, for a compacted topic, a key on each. This keeps offsets dense whatever the
/// header claims; the walk stops at the first record past the count.
pub fn check_produced(
    batch: &[u8],
    header: &BatchHeader,
    require_keys: bool,
    budget: &mut Budget,
) -> Result<(), BatchError> {
    check_produced_within(batch, header, require_keys, None, budget).map(|_| ())
}

/// [`check_produced`], and, with `timestamps = Some((low, high))` (a CreateTime topic),
/// every record's timestamp (unless it is -1, "none") within `[low, high]`, as the
/// topic's message.timestamp.before.max.ms / after.max.ms ask. A CreateTime topic keeps
/// the producer's timestamps, so a batch there may not claim LogAppendTime (consumers
/// would read every record's timestamp as the header's unchecked max).
///
/// Returns the largest record timestamp (-1 if none has one): the batch header's max
/// timestamp, which the time index and retention trust, must be this one.
pub fn check_produced_within(
    batch: &[u8],
    header: &BatchHeader,
    require_keys: bool,
    timestamps: Option<(i64, i64)>,
    budget: &mut Budget,
) -> Result<i64, BatchError> {
    if timestamps.is_some() && format::is_log_append_time(batch) {
        return Err(BatchError::Record {
            index: 0,
            reason: "a producer cannot set LogAppendTime on a CreateTime topic's batch",
        });
    }
    let base_timestamp = base_timestamp(batch);
    let mut failure = None;
    let mut index: i32 = 0;
    let mut max_timestamp = -1;
    let walked = for_each_record(batch, Want::Framing, budget, |record| {
        let timestamp = base_timestamp.wrapping_add(record.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        let reason = if index >= header.record_count {
            Some("the batch holds more records than its header counts")
        } else if record.offset_delta != index {
            Some("offset deltas are not 0, 1, 2, ...")
        } else if require_keys && !record.has_key {
            Some("a compacted topic needs a key on every record")
        } else {
            None
        };
        if let Some(reason) = reason {
            failure = Some(BatchError::Record { index, reason });
            return false;
        }
        if let Some((low, high)) = timestamps
            && timestamp != -1
            && !(low..=high).contains(&timestamp)
        {
            failure = Some(BatchError::Timestamp {
                index,
                timestamp,
                low,
                high,
            });
            return false;
        }
        index += 1;
        true
    })?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    if walked != i64::from(header.record_count) {
        return Err(BatchError::Record {
            index,
            reason: "the batch holds fewer records than its header counts",
        });
    }
    Ok(max_timestamp)
}

/// Writes the records of one whole batch (CRC already checked), inflated, to `out`:
/// the bytes a batch of the same records holds uncompressed. Every inflated byte is
/// charged to `budget`. Returns the bytes written.
pub fn inflate_into(
    batch: &[u8],
    budget: &mut Budget,
    out: &mut impl io::Write,
) -> Result<u64, RecordError> {
    let records = batch.get(BATCH_HEADER_LEN..).unwrap_or_default();
    let codec = format::codec(batch).map_err(|codec| RecordError::Decompress {
        codec: "unknown",
        reason: format!("codec {codec} does not exist"),
    })?;
    let write_failed = |e: io::Error| RecordError::Decompress {
        codec: codec.name(),
        reason: format!("writing the inflated records failed: {e}"),
    };
    if codec == format::Codec::None {
        budget.charge(records.len() as u64)?;
        out.write_all(records).map_err(write_failed)?;
        return Ok(records.len() as u64);
    }
    let limit = budget.limit;
    let inflater = inflater(codec, records, budget.left)?;
    let mut charged = Charged {
        inner: inflater,
        budget,
        exceeded: false,
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let read = match charged.read(&mut chunk) {
            Ok(0) => return Ok(total),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) if charged.exceeded => return Err(RecordError::Inflated { limit }),
            Err(_) => {
                return Err(RecordError::Decompress {
                    codec: codec.name(),
                    reason: "the compressed stream is corrupt or truncated".into(),
                });
            }
        };
        out.write_all(&chunk[..read]).map_err(write_failed)?;
        total += read as u64;
    }
}

/// Visits (offset, timestamp) of every record of a stored batch, as consumers see them
/// (LogAppendTime batches: the batch's max timestamp). `visit` returns `false` to stop.
pub fn for_each_timestamp(
    batch: &[u8],
    budget: &mut Budget,
    mut visit: impl FnMut(i64, i64) -> bool,
) -> Result<(), RecordError> {
    let header = format::parse_validated_header(batch);
    let base_timestamp = base_timestamp(batch);
    let log_append_time = format::is_log_append_time(batch);
    for_each_record(batch, Want::Framing, budget, |record| {
        let offset = header.base_offset + i64::from(record.offset_delta);
        let timestamp = if log_append_time {
            header.max_timestamp
        } else {
            base_timestamp.wrapping_add(record.timestamp_delta)
        };
        visit(offset, timestamp)
    })?;
    Ok(())
}

fn base_timestamp(batch: &[u8]) -> i64 {
    i64::from_be_bytes(batch[27..35].try_into().unwrap_or_default())
}

/// Every record of a stored batch, whole, for re-encoding (the cleaner) or for reading
/// internal topics. Each record is charged its bytes plus [`RECORD_OVERHEAD`] to
/// `budget`, so a batch of millions of tiny records ends in `Inflated`, not in memory.
/// Records are filled in as kafka-protocol's decoder fills them.
pub fn decode_records(
    batch: &[u8],
    budget: &mut Budget,
) -> Result<(Vec<Record>, Compression), RecordError> {
    let header = format::parse_validated_header(batch);
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    let base_timestamp = base_timestamp(batch);
    let compression = match format::codec(batch) {
        Ok(format::Codec::Gzip) => Compression::Gzip,
        Ok(format::Codec::Snappy) => Compression::Snappy,
        Ok(format::Codec::Lz4) => Compression::Lz4,
        Ok(format::Codec::Zstd) => Compression::Zstd,
        _ => Compression::None,
    };
    let timestamp_type = if format::is_log_append_time(batch) {
        TimestampType::LogAppend
    } else {
        TimestampType::Creation
    };
    // Kept records are charged to a second budget of the same size: inflating and
    // keeping are separate costs.
    let mut kept = Budget::new(budget.limit);
    let mut records = Vec::new();
    let mut failure = None;
    for_each_record(batch, Want::All, budget, |view| {
        let size = view.key.as_ref().map_or(0, Bytes::len)
            + view.value.as_ref().map_or(0, Bytes::len)
            + view
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>();
        if let Err(e) = kept.charge(RECORD_OVERHEAD + size as u64) {
            failure = Some(e);
            return false;
        }
        let mut headers = IndexMap::new();
        for (key, value) in view.headers {
            match StrBytes::try_from(key) {
                Ok(key) => {
                    headers.insert(key, value);
                }
                Err(_) => {
                    failure = Some(malformed(records.len() as i64, "a header key is not UTF-8"));
                    return false;
                }
            }
        }
        records.push(Record {
            transactional: attributes & 0x10 != 0,
            control: attributes & 0x20 != 0,
            delete_horizon: attributes & 0x40 != 0,
            partition_leader_epoch: header.leader_epoch,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            timestamp_type,
            offset: header.base_offset + i64::from(view.offset_delta),
            sequence: header.base_sequence.wrapping_add(view.offset_delta),
            timestamp: base_timestamp.wrapping_add(view.timestamp_delta),
            key: view.key,
            value: view.value,
            headers,
        });
        true
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok((records, compression)),
    }
}

fn decompress_error(codec: format::Codec, e: impl std::fmt::Display) -> RecordError {
    RecordError::Decompress {
        codec: codec.name(),
        reason: e.to_string(),
    }
}

fn inflater(
    codec: format::Codec,
    input: &[u8],
    budget_left: u64,
) -> Result<Box<dyn Read + '_>, RecordError> {
    Ok(match codec {
        format::Codec::None => Box::new(input),
        format::Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        format::Codec::Snappy => Box::new(SnappyReader::new(input, budget_left)),
        format::Codec::Lz4 => {
            Box::new(lz4::Decoder::new(input).map_err(|e| decompress_error(codec, e))?)
        }
        format::Codec::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| decompress_error(codec, e))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| decompress_error(codec, e))?;
            Box::new(decoder)
        }
    })
}

/// Kafka's snappy: snappy-java's framing (a 16-byte magic header, then blocks of a 4-byte
/// big-endian length and a raw snappy block), or, without the magic, one raw block.
struct SnappyReader<'a> {
    /// Compressed bytes not yet decoded.
    input: &'a [u8],
    /// Whether `input` is framed blocks (else one raw block).
    framed: bool,
    /// Decoded bytes not yet read.
    block: Bytes,
    /// The budget left when the stream began: no block may declare more.
    limit: u64,
}

const SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const SNAPPY_HEADER_LEN: usize = 16;
/// The most a raw snappy element can expand: a 3-byte copy yields 64 bytes.
const SNAPPY_MAX_RATIO: usize = 22;

impl SnappyReader<'_> {
    fn new(mut input: &[u8], limit: u64) -> SnappyReader<'_> {
        let framed = input.len() >= SNAPPY_HEADER_LEN && input.starts_with(SNAPPY_MAGIC);
        if framed {
            input = &input[SNAPPY_HEADER_LEN..];
        }
        SnappyReader {
            input,
            framed,
            block: Bytes::new(),
            limit,
        }
    }

    fn next_block(&mut self) -> io::Result<Option<Bytes>> {
        if self.input.is_empty() {
            return Ok(None);
        }
        let raw = if self.framed {
            if self.input.len() < 4 {
                return Err(io::Error::other("truncated snappy block length"));
            }
            let length = self.input.get_u32() as usize;
            if length > self.input.len() {
                return Err(io::Error::other("snappy block runs past the batch"));
            }
            let (block, rest) = self.input.split_at(length);
            self.input = rest;
            block
        } else {
            std::mem::take(&mut self.input)
        };
        // The declared length is checked before the decoder allocates it.
        let declared = snap::raw::decompress_len(raw).map_err(io::Error::other)?;
        if declared
            > raw
                .len()
                .saturating_mul(SNAPPY_MAX_RATIO)
                .saturating_add(64)
            || declared as u64 > SNAPPY_MAX_BLOCK
        {
            return Err(io::Error::other(
                "snappy block declares more bytes than it can hold",
            ));
        }
        if declared as u64 > self.limit {
            // Reported as the budget running out, so a caller with a larger one may retry.
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "snappy block past the budget",
            ));
        }
        let out = snap::raw::Decoder::new()
            .decompress_vec(raw)
            .map_err(io::Error::other)?;
        Ok(Some(Bytes::from(out)))
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.block.is_empty() {
            match self.next_block()? {
                Some(block) => self.block = block,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len());
        buf[..n].copy_from_slice(&self.block[..n]);
        self.block.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
