//! Log compaction (cleanup.policy=compact): keep the last record of every key.
//!
//! A pass over one partition has three steps:
//!
//! 1. **Plan** (log lock held, no I/O): the sealed segments that may be cleaned, oldest
//!    first. The active segment is never touched; with min.compaction.lag.ms a segment
//!    whose newest record is younger than the lag ends the cleanable range. The pass runs
//!    when the *dirty* part (sealed bytes written since the last pass, from the first
//!    dirty offset on) is at least min.cleanable.dirty.ratio of the cleanable bytes, or
//!    its oldest segment is older than max.compaction.lag.ms.
//! 2. **Stage** (no lock; blocking file I/O): read the dirty segments and map every key
//!    (a 128-bit hash of it) to its last offset, up to `log_cleaner_dedupe_buffer_bytes`;
//!    the pass then covers the offsets up to the batch where the map stopped (possibly
//!    inside a segment, whose records past that offset are copied untouched). Every segment of that
//!    range is copied without the records a later record of the same key supersedes, and
//!    without tombstones (null values) whose segment was last written more than
//!    delete.retention.ms ago. Unchanged batches are copied byte for byte; others are
//!    re-encoded with their records' original offsets (the batch keeps its producer id,
//!    epoch and sequences), so offsets never change and gaps appear. Adjacent segments
//!    are merged while their original sizes fit in segment.bytes, so the segment count
//!    (and open files) shrinks with the data. The copies go to `cleaning/` in the
//!    partition directory and are fsynced.
//! 3. **Swap** (log lock held): if the planned segments are all still there (retention or
//!    DeleteRecords did not remove any meanwhile), each group of old segments is replaced
//!    by its copy, crash-safely (below), and the first dirty offset moves on.
//!
//! **Transactions.** A pass never reaches the last stable offset (nor the high
//! watermark): every transaction it sees has its outcome, read from the partition's
//! aborted-transaction index, the same index read_committed readers trust. Then, as
//! Kafka's cleaner does:
//!
//! - the batches of aborted transactions are removed whole, at once, and their keys never
//!   enter the map (an aborted record supersedes nothing);
//! - records of committed transactions are compacted as any record: their keys enter the
//!   map, and a later record of the same key supersedes them;
//! - a marker (commit or abort) goes in two steps, as Kafka's delete horizon: a pass that
//!   walks no batch of its transaction (they went in an earlier pass, or there were none)
//!   finds it removable and remembers when (in memory: a restart starts the clock
//!   again, which only delays); a pass delete.retention.ms later removes it, an abort
//!   marker with its aborted-index entry. The horizon gives a follower or a reader that
//!   met the transaction's records time to meet its marker too (a replica that kept
//!   the records without the marker would hold the transaction open for good);
//! - tiered logs keep every marker (a transaction's records may be in the bucket only,
//!   where its marker is needed), and so does the remote tier;
//! - each producer's last data batch and last marker stay whole, so a replica rebuilding
//!   producer state from the log learns its last sequence and epoch.
//!
//! A read_committed read takes the aborted entries under the lock it locates its segment
//! with, so a swap never leaves it records whose entry is gone.
//!
//! The `.txnindex` files of merged segments are merged into the copy, without
//! the entries of removed markers. The remote tier's segments ([`RemoteRewrite`]) lose
//! their aborted records the same way (from the aborted list each segment object
//! carries) but keep their markers and lists.
//!
//! A segment whose records are all removed stays as an empty segment (merged into a
//! neighbour by the next pass), so segments stay contiguous. Readers skip gaps: a read
//! that finds nothing at or after its offset in a segment goes on to the next one.
//!
//! ## The swap and crashes
//!
//! For a group replacing segments with bases in `[b, e)`:
//!
//! 1. the staged copy is complete and fsynced in `cleaning/`;
//! 2. `<b>.swap` is written atomically, holding `e` as decimal text: from here on the swap
//!    is committed and start-up finishes it;
//! 3. the old segments' files in `[b, e)` are deleted, the staged files are renamed into
//!    the partition directory, the directory is fsynced;
//! 4. `<b>.swap` is deleted.
//!
//! At start-up, for each `<b>.swap`: if staged files for `b` are still in `cleaning/`,
//! segment files with bases in `[b, e)` are deleted and the staged ones moved in; if they
//! were already moved, only files with bases in `(b, e)` are deleted. Anything else left
//! in `cleaning/` is an unfinished pass and is deleted: the old segments are intact.
//!
//! A swap that fails (an I/O error) after its marker is written is committed but
//! unfinished, exactly as after a crash: the partition goes offline (reads and writes
//! answer KAFKA_STORAGE_ERROR) and nothing but start-up recovery may touch `cleaning/`
//! while a marker is on disk: a pass refuses to stage ([`SwapPending`]) and discarding a
//! staged pass keeps the copies. Recovery refuses a marker whose copy is gone rather
//! than delete `(b, e)` with nothing to replace it.
//!
//! ## `cleaner.checkpoint` (layout version 1)
//!
//! The first dirty offset, so a restart does not re-clean the whole log. Written
//! atomically after each pass. All integers big-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SCLN` |
//! | 4 | 1 | layout version, 1 |
//! | 5 | 8 | first dirty offset |
//! | 13 | 4 | CRC-32C of bytes 0..13 |

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
use tracing::warn;

#[cfg(test)]
use super::BatchError;
use super::format;
use super::records::{
    Budget, MAX_INFLATED_BYTES, RecordError, Want, decode_records, for_each_record,
};
use super::segment::{Segment, read_prefix_at};
use super::{Log, LogError, txn, write_atomically};

pub const STAGING_DIR: &str = "cleaning";
/// Memory one batch's records may take while the cleaner rewrites it (bytes plus
/// per-record overhead). A larger batch is kept whole.
const MAX_KEPT_BYTES: u64 = 64 * 1024 * 1024;
/// Keys one batch may bring to the offset map even past the map's budget (a pass always
/// takes its first batch whole). A batch of 1 MiB holds at most about 150,000 records.
const MAX_BATCH_KEYS: usize = 1_000_000;
pub const CHECKPOINT_FILE: &str = "cleaner.checkpoint";
const MAGIC: &[u8; 4] = b"SCLN";
const VERSION: u8 = 1;
const CHECKPOINT_LEN: usize = 17;
/// How long a sealed segment of a tiered compacted topic waits for a pass (its upload
/// waits for it) before one runs regardless of min.cleanable.dirty.ratio.
pub const UPLOAD_WAIT_MS: i64 = 60_000;
/// Bytes of memory per key in the offset map (hash, offset, table overhead).
pub const BYTES_PER_KEY: usize = 48;

pub fn encode_checkpoint(first_dirty: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&first_dirty.to_be_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub fn decode_checkpoint(bytes: &[u8]) -> Option<i64> {
    if bytes.len() != CHECKPOINT_LEN || &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return None;
    }
    let crc = u32::from_be_bytes(bytes[13..17].try_into().ok()?);
    if crc32c::crc32c(&bytes[..13]) != crc {
        return None;
    }
    Some(i64::from_be_bytes(bytes[5..13].try_into().ok()?))
}

/// A sealed segment a pass may clean, as planned under the lock.
#[derive(Debug, Clone)]
pub struct PlannedSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    /// The `.log` file, opened while the pass reads it: a plan over thousands of sealed
    /// segments holds no descriptors.
    pub log_path: PathBuf,
    pub max_timestamp: i64,
}

/// What a pass works on.
#[derive(Debug)]
pub struct CleanPlan {
    pub dir: PathBuf,
    /// Cleanable sealed segments, oldest first.
    pub segments: Vec<PlannedSegment>,
    pub first_dirty: i64,
    pub segment_bytes: u64,
    pub delete_retention_ms: i64,
    pub index_interval_bytes: u64,
    /// Tiered topics: where the remote tier ends. No group may straddle it (a merged
    /// segment reaching from uploaded into not-yet-uploaded offsets could never follow
    /// the remote end, and uploads would stop), and a segment that may be uploading
    /// right now is never merged.
    pub upload_end: Option<i64>,
    /// Where the pass must stop: the last stable offset, capped by the high watermark.
    /// Every transaction below it has its marker.
    pub stable_end: i64,
    /// The aborted transactions with records in the planned segments.
    pub aborted: Vec<txn::AbortedTxn>,
    /// Base offsets of batches kept whole: each producer's last data batch and marker.
    pub keep: Arc<HashSet<i64>>,
    /// Markers found removable by earlier passes: offset → when (ms).
    pub removable_since: Arc<HashMap<i64, i64>>,
    /// Whether markers may go at all (not in a tiered log).
    pub remove_markers: bool,
}

/// Whether the range `[base, end)` straddles `boundary`.
fn straddles(base: i64, end: i64, boundary: Option<i64>) -> bool {
    boundary.is_some_and(|b| base < b && b < end)
}

/// One staged replacement of the segments with bases in `[base, end)`.
#[derive(Debug)]
pub struct StagedGroup {
    pub base: i64,
    pub end: i64,
    /// (base, size) of each replaced segment, to check nothing changed before the swap.
    pub replaced: Vec<(i64, u64)>,
    pub bytes_after: u64,
}

#[derive(Debug, Default)]
pub struct Staged {
    pub groups: Vec<StagedGroup>,
    /// Where the dirty part starts after this pass.
    pub first_dirty: i64,
    pub records_removed: u64,
    /// The pass's key map, for the remote tier's segments (tiered compacted topics).
    pub map: Arc<OffsetMap>,
    /// Aborted transactions whose abort marker the pass removed: their index entries go.
    pub removed_aborts: Vec<txn::AbortedTxn>,
    /// Markers this pass found removable for the first time.
    pub newly_removable: Vec<i64>,
    /// Markers this pass removed.
    pub removed_markers: Vec<i64>,
}

fn key_hash(key: &[u8]) -> u128 {
    let mut high = std::hash::DefaultHasher::new();
    0u8.hash(&mut high);
    key.hash(&mut high);
    let mut low = std::hash::DefaultHasher::new();
    1u8.hash(&mut low);
    key.hash(&mut low);
    (u128::from(high.finish()) << 64) | u128::from(low.finish())
}

/// A segment's bytes that are not a whole batch where one must start. A pass that met one
/// fails: treating the rest of the segment as absent would drop its records from the copy.
#[derive(Debug, thiserror::Error)]
#[error(
    "segment {segment} has no whole batch at byte {position} ({reason}); compaction stops rather than drop the rest"
)]
pub struct UnparsableBatch {
    /// The segment's base offset.
    pub segment: i64,
    pub position: u64,
    pub reason: &'static str,
}

impl UnparsableBatch {
    fn at(segment: i64, position: u64, reason: &'static str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            UnparsableBatch {
                segment,
                position,
                reason,
            },
        )
    }
}

/// Calls `f` with every whole batch of a segment, and the batch's base offset.
fn for_each_batch(
    segment: &PlannedSegment,
    mut f: impl FnMut(i64, Bytes) -> io::Result<()>,
) -> io::Result<()> {
    let mut position = 0;
    let mut next_offset = segment.base_offset;
    let file = File::open(&segment.log_path)?;
    while position < segment.size {
        let Some((base_offset, size, last_delta)) = read_prefix_at(&file, position, segment.size)?
        else {
            let reason = "a batch header that is cut short or declares an impossible length";
            return Err(UnparsableBatch::at(segment.base_offset, position, reason));
        };
        if position + size as u64 > segment.size {
            let reason = "a batch that runs past the segment's end";
            return Err(UnparsableBatch::at(segment.base_offset, position, reason));
        }
        let mut batch = vec![0u8; size];
        file.read_exact_at(&mut batch, position)?;
        // Damage must fail the pass: a rewrite would give it a valid CRC, and a damaged
        // base offset would put wrong offsets in the key map.
        check_stored(
            &batch,
            (next_offset, segment.next_offset),
            segment.base_offset,
            position,
        )?;
        next_offset = base_offset + i64::from(last_delta) + 1;
        f(base_offset, Bytes::from(batch))?;
        position += size as u64;
    }
    Ok(())
}

/// Fails on a stored batch that is damaged: CRC-32C, or offsets not after `range.0` (the
/// end of the batch before) and below `range.1` (the segment's end offset).
fn check_stored(
    batch: &[u8],
    range: (i64, i64),
    segment_base: i64,
    position: u64,
) -> io::Result<()> {
    let Some((base, _, last_delta)) = format::read_batch_prefix(batch) else {
        let reason = "a batch header that declares an impossible length";
        return Err(UnparsableBatch::at(segment_base, position, reason));
    };
    if !super::offsets_fit(range.1, base, last_delta, range.0) {
        let reason = "a batch whose offsets are out of order (damaged)";
        return Err(UnparsableBatch::at(segment_base, position, reason));
    }
    if !format::crc_matches(batch) {
        let reason = "a batch whose CRC-32C does not match (damaged)";
        return Err(UnparsableBatch::at(segment_base, position, reason));
    }
    Ok(())
}

/// The header of a stored batch (checked whole by [`check_stored`] before).
fn header_of(batch: &[u8]) -> Option<format::BatchHeader> {
    (batch.len() >= format::BATCH_HEADER_LEN)
        .then(|| format::parse_validated_header(&batch[..format::BATCH_HEADER_LEN]))
}

/// The aborted transactions of a pass's range, by producer: whether a transactional
/// batch belongs to one.
#[derive(Debug, Default)]
pub struct AbortedRanges(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedRanges {
    pub fn new(entries: &[txn::AbortedTxn]) -> AbortedRanges {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for e in entries {
            by_producer
                .entry(e.producer_id)
                .or_default()
                .push((e.first_offset, e.last_offset));
        }
        for ranges in by_producer.values_mut() {
            ranges.sort_unstable();
        }
        AbortedRanges(by_producer)
    }

    /// Whether the transactional batch of `producer_id` at `offset` was aborted (a
    /// producer has one transaction open at a time, so its ranges do not overlap).
    pub fn contains(&self, producer_id: i64, offset: i64) -> bool {
        let Some(ranges) = self.0.get(&producer_id) else {
            return false;
        };
        let after = ranges.partition_point(|&(first, _)| first <= offset);
        after > 0 && ranges[after - 1].1 >= offset
    }
}

/// The key → last offset map of a pass, over the dirty part it covers.
pub type OffsetMap = HashMap<u128, i64>;

/// At most this many markers per partition wait for their horizon in memory; more wait
/// for a later pass.
const MAX_REMOVABLE_MARKERS: usize = 100_000;

/// What a pass knows of transactions while it walks batches in offset order.
#[derive(Debug, Default)]
struct TxnWalk {
    aborted: AbortedRanges,
    /// The index entries of the range by (producer id, marker offset).
    entries: HashMap<(i64, i64), txn::AbortedTxn>,
    /// Producers with a transactional batch walked since their last marker: that marker
    /// stays this pass.
    walked: HashSet<i64>,
    keep: Arc<HashSet<i64>>,
    removable_since: Arc<HashMap<i64, i64>>,
    /// When a marker found removable now may go, or `None` if markers never go here.
    horizon: Option<(i64, i64)>,
    removed_aborts: Vec<txn::AbortedTxn>,
    newly_removable: Vec<i64>,
    removed_markers: Vec<i64>,
}

impl TxnWalk {
    /// `horizon`: (now, delete.retention.ms), or `None` to keep every marker.
    fn new(entries: &[txn::AbortedTxn], horizon: Option<(i64, i64)>) -> TxnWalk {
        TxnWalk {
            aborted: AbortedRanges::new(entries),
            entries: entries
                .iter()
                .map(|e| ((e.producer_id, e.last_offset), *e))
                .collect(),
            horizon,
            ..TxnWalk::default()
        }
    }

    /// One batch below the map's end: the batch to keep (`None`: it all went) and how
    /// many records went (see the module doc).
    fn clean(
        &mut self,
        batch: Bytes,
        map: &OffsetMap,
        map_end: i64,
        tombstones_expire: bool,
    ) -> io::Result<(Option<Bytes>, u64)> {
        let Some(header) = header_of(&batch) else {
            return Ok((Some(batch), 0));
        };
        let producer_id = header.producer_id;
        let offset = header.base_offset;
        if header.is_control() {
            let marker = txn::marker_of(&batch, &header);
            if marker.is_none() {
                return Ok((Some(batch), 0));
            }
            let walked = self.walked.remove(&producer_id);
            let Some((now, retention)) = self.horizon else {
                return Ok((Some(batch), 0));
            };
            if walked || self.keep.contains(&offset) {
                return Ok((Some(batch), 0));
            }
            match self.removable_since.get(&offset) {
                Some(&since) if since.saturating_add(retention) <= now => {
                    if marker == Some(txn::Marker::Abort)
                        && let Some(entry) = self.entries.get(&(producer_id, offset))
                    {
                        self.removed_aborts.push(*entry);
                    }
                    self.removed_markers.push(offset);
                    Ok((None, 1))
                }
                Some(_) => Ok((Some(batch), 0)),
                None => {
                    if self.removable_since.len() + self.newly_removable.len()
                        < MAX_REMOVABLE_MARKERS
                    {
                        self.newly_removable.push(offset);
                    }
                    Ok((Some(batch), 0))
                }
            }
        } else {
            if header.is_transactional() {
                self.walked.insert(producer_id);
            }
            let aborted = header.is_transactional() && self.aborted.contains(producer_id, offset);
            let (out, gone) = if aborted {
                (None, header.record_count.max(0) as u64)
            } else {
                filter_batch(batch.clone(), map, map_end, tombstones_expire)?
            };
            if !self.keep.contains(&offset) || gone == 0 {
                return Ok((out, gone));
            }
            // The producer's last batch: if its last offsets went, they stay as an empty
            // batch (a header without records, as Kafka's cleaner leaves it), so the
            // producer's last sequence and epoch survive.
            let kept_end = out.as_ref().map(|b| batches_end(b)).unwrap_or(offset);
            if kept_end > header.last_offset() {
                return Ok((out, gone));
            }
            let mut bytes = out.map(|b| b.to_vec()).unwrap_or_default();
            bytes.extend_from_slice(&empty_batch(&batch, kept_end));
            Ok((Some(Bytes::from(bytes)), gone))
        }
    }
}

/// The offset after the last batch of `batches` (whole, as the encoder wrote them).
fn batches_end(batches: &[u8]) -> i64 {
    let mut position = 0;
    let mut end = 0;
    while let Some((base, size, last_delta)) = format::read_batch_prefix(&batches[position..]) {
        end = base + i64::from(last_delta) + 1;
        position += size;
    }
    end
}

/// A batch with no records covering the offsets of `original` from `from` to its end, with
/// its producer, epoch, attributes (uncompressed) and the sequence of `from`: what stays of
/// a producer's last batch whose records compaction removed.
fn empty_batch(original: &[u8], from: i64) -> Vec<u8> {
    let header = format::parse_validated_header(&original[..format::BATCH_HEADER_LEN]);
    let mut out = original[..format::BATCH_HEADER_LEN].to_vec();
    let skipped = from - header.base_offset;
    out[0..8].copy_from_slice(&from.to_be_bytes());
    out[8..12].copy_from_slice(&((format::BATCH_HEADER_LEN - 12) as i32).to_be_bytes());
    let attributes = header.attributes & !0x07; // no codec: there is nothing to compress
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    // `from` lies within the batch, so this is at most its own last offset delta.
    let last_delta = i32::try_from(header.last_offset() - from).unwrap_or(header.last_offset_delta);
    out[23..27].copy_from_slice(&last_delta.to_be_bytes());
    if header.base_sequence >= 0 {
        let sequence = (i64::from(header.base_sequence) + skipped) % (i64::from(i32::MAX) + 1);
        out[53..57].copy_from_slice(&(sequence as i32).to_be_bytes());
    }
    out[57..61].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// One data batch without the records the map supersedes and, if `tombstones_expire`,
/// without tombstones. Records at or past `map_end` are kept as they are: the map has not
/// seen what follows them. Returns the batch to keep (the original bytes when nothing
/// went, `None` when everything did) and how many records went. A re-encoded batch keeps
/// its producer id, epoch, sequences and transactional attribute.
fn filter_batch(
    batch: Bytes,
    map: &OffsetMap,
    map_end: i64,
    tombstones_expire: bool,
) -> io::Result<(Option<Bytes>, u64)> {
    let (records, compression) = match decode_records(&batch, &mut Budget::new(MAX_KEPT_BYTES)) {
        Ok(decoded) => decoded,
        // Too large to rewrite within memory: kept whole (compaction is best effort; the
        // newer records of its keys stay readable either way).
        Err(RecordError::Inflated { limit }) => {
            warn!(
                limit,
                "a batch too large to compact within the budget is kept whole"
            );
            return Ok((Some(batch), 0));
        }
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    };
    let total = records.len();
    let kept: Vec<_> = records
        .into_iter()
        .filter(|r| {
            if r.offset >= map_end {
                return true;
            }
            let Some(key) = &r.key else { return true };
            let latest = map.get(&key_hash(key)).is_none_or(|&last| r.offset >= last);
            latest && !(r.value.is_none() && tombstones_expire)
        })
        .collect();
    let removed = (total - kept.len()) as u64;
    if kept.len() == total {
        return Ok((Some(batch), 0));
    }
    if kept.is_empty() {
        return Ok((None, removed));
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &kept,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| io::Error::other(format!("re-encode a cleaned batch: {e}")))?;
    // The encoder writes CreateTime: a LogAppendTime batch keeps the broker's time.
    if format::is_log_append_time(&batch) {
        let stamped = format::parse_validated_header(&batch).max_timestamp;
        let mut position = 0;
        while let Some((_, size, _)) = format::read_batch_prefix(&buf[position..]) {
            format::set_log_append_time(&mut buf[position..position + size], stamped);
            position += size;
        }
    }
    Ok((Some(buf.freeze()), removed))
}

/// Appends encoded batches (the encoder may split records into several) to a segment.
fn append_batches(
    segment: &mut Segment,
    batches: &[u8],
    index_interval_bytes: u64,
) -> io::Result<()> {
    let mut position = 0;
    while let Some((_, size, _)) = format::read_batch_prefix(&batches[position..]) {
        let one = &batches[position..position + size];
        let header = format::parse_validated_header(one);
        segment.append(one, &header, index_interval_bytes)?;
        position += size;
    }
    Ok(())
}

/// The whole batches of a segment's `.log` bytes fed in pieces (memory: one piece plus
/// one batch), each checked as [`for_each_batch`] checks them. Bytes that cannot be a
/// whole batch fail (naming the segment and position), and so does a segment whose last
/// batch is cut short ([`SegmentBatches::finish`]).
pub struct SegmentBatches {
    base_offset: i64,
    log_bytes: u64,
    /// The start of a batch the next piece completes.
    carry: Bytes,
    /// Where `carry` starts in the segment.
    position: u64,
    /// The end of the last batch fed, and the segment's end offset: a batch outside them
    /// is damage.
    next_offset: i64,
    end_offset: i64,
}

impl SegmentBatches {
    /// The segment `[offsets.0, offsets.1)` of `log_bytes` bytes.
    pub fn new(offsets: (i64, i64), log_bytes: u64) -> SegmentBatches {
        SegmentBatches {
            base_offset: offsets.0,
            log_bytes,
            carry: Bytes::new(),
            position: 0,
            next_offset: offsets.0,
            end_offset: offsets.1,
        }
    }

    /// Calls `f` with each whole batch that `piece` (the segment's next bytes) completes,
    /// and the batch's base offset.
    pub fn feed(
        &mut self,
        piece: Bytes,
        mut f: impl FnMut(i64, Bytes) -> io::Result<()>,
    ) -> io::Result<()> {
        let bytes = if self.carry.is_empty() {
            piece
        } else {
            let mut joined = BytesMut::with_capacity(self.carry.len() + piece.len());
            joined.extend_from_slice(&self.carry);
            joined.extend_from_slice(&piece);
            joined.freeze()
        };
        let mut at = 0;
        while bytes.len() - at >= format::BATCH_PREFIX_LEN {
            let position = self.position + at as u64;
            let Some((_, size, _)) = format::read_batch_prefix(&bytes[at..]) else {
                let reason = "a batch header that declares an impossible length";
                return Err(UnparsableBatch::at(self.base_offset, position, reason));
            };
            if position + size as u64 > self.log_bytes {
                let reason = "a batch that runs past the segment's end";
                return Err(UnparsableBatch::at(self.base_offset, position, reason));
            }
            if at + size > bytes.len() {
                break;
            }
            let batch = bytes.slice(at..at + size);
            check_stored(
                &batch,
                (self.next_offset, self.end_offset),
                self.base_offset,
                position,
            )?;
            // Checked above: the prefix parses and the sum stays below the end offset.
            let (base, _, last_delta) = format::read_batch_prefix(&batch).unwrap_or_default();
            self.next_offset = base + i64::from(last_delta) + 1;
            f(base, batch)?;
            at += size;
        }
        self.position += at as u64;
        self.carry = bytes.slice(at..);
        Ok(())
    }

    /// Fails unless every byte of the segment was fed and ended a batch.
    pub fn finish(&self) -> io::Result<()> {
        if !self.carry.is_empty() || self.position != self.log_bytes {
            let reason = "a segment that ends inside a batch";
            return Err(UnparsableBatch::at(self.base_offset, self.position, reason));
        }
        Ok(())
    }
}

/// A remote segment rewritten by compaction, as local files ready to upload.
pub struct Rewritten {
    pub log: Arc<File>,
    pub log_bytes: u64,
    pub offset_index: PathBuf,
    pub time_index: PathBuf,
    pub max_timestamp: i64,
    pub records_removed: u64,
}

/// Compaction of one remote segment with a pass's map, fed the segment's `.log` bytes in
/// pieces (so memory stays at one piece plus one batch), written as a new segment in a
/// staging directory. Bytes that cannot be a whole batch fail the rewrite (naming the
/// segment and position), and so does a segment whose last batch is cut short: the
/// rewritten copy never silently lacks the rest of the original.
pub struct RemoteRewrite {
    segment: Segment,
    batches: SegmentBatches,
    map: Arc<OffsetMap>,
    /// Records at or past it are kept as they are: the map has not seen what follows.
    map_end: i64,
    /// The aborted transactions the segment object lists: their records go (its markers
    /// and list stay).
    txns: TxnWalk,
    tombstones_expire: bool,
    index_interval_bytes: u64,
    removed: u64,
}

impl RemoteRewrite {
    /// A rewrite of the segment `[offsets.0, offsets.1)` of `log_bytes` bytes, which lists
    /// the aborted transactions `aborted`, with a map that covers every offset before it
    /// (see [`RemoteRewrite::map_ends_at`] for one that does not).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        staging: &Path,
        offsets: (i64, i64),
        log_bytes: u64,
        map: Arc<OffsetMap>,
        aborted: &[txn::AbortedTxn],
        tombstones_expire: bool,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<RemoteRewrite> {
        fs::create_dir_all(staging)?;
        Ok(RemoteRewrite {
            segment: Segment::create(staging, offsets.0, now_ms)?,
            batches: SegmentBatches::new(offsets, log_bytes),
            map,
            map_end: i64::MAX,
            txns: TxnWalk::new(aborted, None),
            tombstones_expire,
            index_interval_bytes,
            removed: 0,
        })
    }

    /// The map covers the offsets before `map_end` only: records at or past it stay as
    /// they are, tombstones included (an older value of their key may be before them).
    pub fn map_ends_at(mut self, map_end: i64) -> RemoteRewrite {
        self.map_end = map_end;
        self
    }

    /// Filters the whole batches that `piece` (the segment's next bytes) completes.
    pub fn feed(&mut self, piece: Bytes) -> io::Result<()> {
        let RemoteRewrite {
            segment,
            batches,
            map,
            map_end,
            txns,
            tombstones_expire,
            index_interval_bytes,
            removed,
        } = self;
        batches.feed(piece, |_, batch| {
            let (out, gone) = txns.clean(batch, map, *map_end, *tombstones_expire)?;
            *removed += gone;
            if let Some(out) = out {
                append_batches(segment, &out, *index_interval_bytes)?;
            }
            Ok(())
        })
    }

    /// The rewritten segment, or `None` (files removed) if no record went.
    pub fn finish(mut self) -> io::Result<Option<Rewritten>> {
        if let Err(e) = self.batches.finish() {
            let _ = self.segment.delete_files();
            return Err(e);
        }
        if self.removed == 0 {
            self.segment.delete_files()?;
            return Ok(None);
        }
        self.segment.seal()?;
        self.segment.flush()?;
        let (offset_index, time_index) = self.segment.index_paths();
        Ok(Some(Rewritten {
            log: self.segment.log_file()?,
            log_bytes: self.segment.size,
            offset_index: offset_index.to_path_buf(),
            time_index: time_index.to_path_buf(),
            max_timestamp: self.segment.max_timestamp,
            records_removed: self.removed,
        }))
    }
}

fn modified_ms(path: &Path) -> io::Result<i64> {
    let modified = fs::metadata(path)?.modified()?;
    Ok(modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

/// A swap whose marker is on disk but which did not finish: only start-up recovery may
/// touch the partition's segments and staged copies until it has run.
#[derive(Debug, thiserror::Error)]
#[error("the compaction swap of segment {base} did not finish; restart the broker to finish it")]
pub struct SwapPending {
    pub base: i64,
}

/// Fails if a swap marker is on disk (see [`SwapPending`]).
fn check_no_pending_swap(dir: &Path) -> io::Result<()> {
    match swap_markers(dir)?.first() {
        Some(&base) => Err(io::Error::other(SwapPending { base })),
        None => Ok(()),
    }
}

/// Removes the staged copies of a pass, unless a swap marker still needs them.
fn discard_staging(dir: &Path) {
    if let Err(e) = check_no_pending_swap(dir) {
        tracing::error!(dir = %dir.display(), error = %e, "keeping the staged compaction copies");
        return;
    }
    let _ = fs::remove_dir_all(dir.join(STAGING_DIR));
}

/// The key → last offset map of a pass, fed the batches from its first dirty offset on,
/// in offset order, while it has room: it stops before the first batch whose new keys
/// would pass `max_keys` (the first batch is always taken, so every pass moves on) and
/// before the first batch past the last stable offset. The pass covers the offsets up to
/// where it stopped ([`MapBuilder::finish`]).
pub struct MapBuilder {
    map: OffsetMap,
    first_dirty: i64,
    end: i64,
    stable_end: i64,
    max_keys: usize,
    full: bool,
}

impl MapBuilder {
    pub fn new(first_dirty: i64, stable_end: i64, max_keys: usize) -> MapBuilder {
        MapBuilder {
            map: OffsetMap::new(),
            first_dirty,
            end: first_dirty,
            stable_end,
            max_keys,
            full: false,
        }
    }

    /// One stored batch (checked whole), at `batch_base`, in a range whose aborted
    /// transactions are `aborted`.
    pub fn add(
        &mut self,
        batch_base: i64,
        batch: &Bytes,
        aborted: &AbortedRanges,
    ) -> io::Result<()> {
        let Some(header) = header_of(batch) else {
            return Ok(()); // only parsed batches are fed
        };
        let batch_end = header.next_offset();
        if self.full || batch_end <= self.first_dirty {
            return Ok(());
        }
        if batch_end > self.stable_end {
            self.full = true; // a transaction without its outcome yet: stop before it
            return Ok(());
        }
        if header.is_control()
            || (header.is_transactional() && aborted.contains(header.producer_id, batch_base))
        {
            // A marker or an aborted record supersedes nothing (see the module doc).
            self.end = batch_end;
            return Ok(());
        }
        let mut keys = Vec::new();
        let mut budget = Budget::new(MAX_INFLATED_BYTES);
        let most = self.max_keys.max(MAX_BATCH_KEYS);
        let walked = for_each_record(batch, Want::Key, &mut budget, |record| {
            if let Some(key) = &record.key {
                keys.push((key_hash(key), batch_base + i64::from(record.offset_delta)));
            }
            keys.len() <= most
        });
        // A batch whose keys cannot all be mapped fails the pass: copying it with its
        // keys unmapped would let its expired tombstones go while older values of
        // their keys stay, bringing deleted keys back. Only a hostile batch gets here
        // (a real one holds far fewer records than either bound).
        let unmappable = match walked {
            Err(RecordError::Inflated { limit }) => {
                Some(format!("its records inflate past {limit} bytes"))
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            Ok(_) if keys.len() > most => Some(format!("it holds more than {most} keyed records")),
            Ok(_) => None,
        };
        if let Some(reason) = unmappable {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the batch at offset {batch_base} cannot be compacted: {reason}"),
            ));
        }
        let new_keys = keys
            .iter()
            .filter(|(k, _)| !self.map.contains_key(k))
            .count();
        if self.map.len() + new_keys > self.max_keys && self.end > self.first_dirty {
            self.full = true; // the next pass carries on from here
            return Ok(());
        }
        self.map.extend(keys);
        self.end = batch_end;
        Ok(())
    }

    /// Every batch of a segment ending at `segment_end` was fed: unless the map stopped
    /// inside it, the offsets up to its end are covered (past its last batch too, which
    /// an earlier pass removed). Returns whether the next segment may be fed.
    pub fn covered_to(&mut self, segment_end: i64) -> bool {
        if self.full || segment_end > self.stable_end {
            return false;
        }
        self.end = self.end.max(segment_end);
        true
    }

    /// The map, and the offset it covers the batches up to (the first dirty offset: none).
    pub fn finish(self) -> (OffsetMap, i64) {
        (self.map, self.end)
    }
}

/// Step 2: builds the offset map and writes the cleaned copies into `cleaning/`.
///
/// The map is bounded by `max_keys` batch by batch: it stops before the first batch whose
/// new keys would not fit (the first batch is always taken, so every pass moves on), and
/// the pass covers the offsets up to there, possibly ending inside a segment. That segment
/// is copied whole, with the records past the map's end untouched, and the next pass
/// starts there.
pub fn stage(plan: &CleanPlan, now_ms: i64, max_keys: usize) -> io::Result<Staged> {
    check_no_pending_swap(&plan.dir)?;
    let staging = plan.dir.join(STAGING_DIR);
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(&staging)?;

    // The map: key → last offset, over the dirty batches while it has room, below the
    // last stable offset.
    let horizon = plan
        .remove_markers
        .then_some((now_ms, plan.delete_retention_ms));
    let mut txns = TxnWalk::new(&plan.aborted, horizon);
    txns.keep = plan.keep.clone(); // shared, not copied
    txns.removable_since = plan.removable_since.clone();
    let mut builder = MapBuilder::new(plan.first_dirty, plan.stable_end, max_keys);
    for segment in plan
        .segments
        .iter()
        .filter(|s| s.next_offset > plan.first_dirty)
    {
        for_each_batch(segment, |batch_base, batch| {
            builder.add(batch_base, &batch, &txns.aborted)
        })?;
        // Offsets past the last batch (removed by an earlier pass) are covered too.
        if !builder.covered_to(segment.next_offset) {
            break;
        }
    }
    let (map, map_end) = builder.finish();
    if map_end <= plan.first_dirty {
        return Ok(Staged {
            first_dirty: plan.first_dirty,
            ..Staged::default()
        });
    }

    let delete_horizon = now_ms.saturating_sub(plan.delete_retention_ms);
    let in_range: Vec<&PlannedSegment> = plan
        .segments
        .iter()
        .filter(|s| s.base_offset < map_end)
        .collect();
    let map = Arc::new(map);
    let mut staged = Staged {
        first_dirty: map_end,
        map: map.clone(),
        ..Staged::default()
    };
    let mut i = 0;
    while i < in_range.len() {
        // Group adjacent segments while their original sizes fit in one segment. In a
        // tiered log a segment the uploader may be uploading right now (cleaned, above
        // the remote end) is rewritten alone, keeping its range.
        let uploadable = |s: &PlannedSegment| {
            plan.upload_end
                .is_some_and(|end| s.next_offset > end && s.base_offset < plan.first_dirty)
        };
        let mut j = i + 1;
        let mut total = in_range[i].size;
        while j < in_range.len()
            && !uploadable(in_range[i])
            && !uploadable(in_range[j])
            && total + in_range[j].size <= plan.segment_bytes
            && in_range[j].next_offset - in_range[i].base_offset < i64::from(i32::MAX)
            && !straddles(
                in_range[i].base_offset,
                in_range[j].next_offset,
                plan.upload_end,
            )
        {
            total += in_range[j].size;
            j += 1;
        }
        let group = &in_range[i..j];
        let base = group[0].base_offset;
        let end = group[group.len() - 1].next_offset;
        let mut copy: Option<Segment> = None;
        let mut removed = 0u64;
        let mut newest_write = 0i64;
        for segment in group {
            let written_ms = modified_ms(&segment.log_path)?;
            newest_write = newest_write.max(written_ms);
            // Tombstones outlive their segment's last write by delete.retention.ms.
            let tombstones_expire = written_ms < delete_horizon;
            for_each_batch(segment, |batch_base, batch| {
                let (out, gone) = if batch_base >= map_end {
                    (Some(batch), 0) // past the map: copied as it is
                } else {
                    txns.clean(batch, &map, map_end, tombstones_expire)?
                };
                removed += gone;
                let Some(out) = out else { return Ok(()) };
                let seg = match &mut copy {
                    Some(seg) => seg,
                    None => copy.insert(Segment::create(&staging, base, now_ms)?),
                };
                append_batches(seg, &out, plan.index_interval_bytes)
            })?;
        }
        if removed == 0 && group.len() == 1 {
            // Nothing to gain from a copy of this segment.
            if let Some(seg) = copy.take() {
                seg.delete_files()?;
            }
            i = j;
            continue;
        }
        staged.records_removed += removed;
        // A group whose records all went still leaves an empty segment: segments stay
        // contiguous (the uploader and the manifest rely on it) and the log keeps its
        // start. The next pass merges it into a neighbour.
        let mut seg = match copy.take() {
            Some(seg) => seg,
            None => Segment::create(&staging, base, now_ms)?,
        };
        seg.seal()?;
        seg.flush()?;
        let bytes_after = seg.size;
        drop(seg);
        // The copy ends where the group's last segment ended: it takes that segment's
        // producer state.
        let last = group[group.len() - 1].base_offset;
        let producers = plan.dir.join(format::segment_file_name(last, "producers"));
        if producers.exists() {
            fs::copy(
                &producers,
                staging.join(format::segment_file_name(base, "producers")),
            )?;
        }
        // The copy lists the aborted transactions whose markers any of its segments held.
        let mut aborted = Vec::new();
        for segment in group {
            let path = txn::AbortedIndex::path(&plan.dir, segment.base_offset);
            match fs::read(&path) {
                Ok(bytes) => match txn::decode_file(&bytes) {
                    Some(entries) => aborted.extend(entries),
                    // The swap would delete it: the pass stops rather than lose entries.
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{} is not an aborted-transaction index", path.display()),
                        ));
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let removed: HashSet<(i64, i64)> = txns
            .removed_aborts
            .iter()
            .map(|e| (e.producer_id, e.last_offset))
            .collect();
        aborted.retain(|e| !removed.contains(&(e.producer_id, e.last_offset)));
        if !aborted.is_empty() {
            let staged_index = staging.join(format::segment_file_name(base, txn::EXTENSION));
            fs::write(&staged_index, txn::encode_file(&aborted))?;
            File::open(&staged_index)?.sync_all()?;
        }
        // The copy keeps the newest write time of what it replaces, so tombstones in it
        // do not live delete.retention.ms longer.
        let log = staging.join(format::segment_file_name(base, "log"));
        let when =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(newest_write.max(0) as u64);
        File::options().write(true).open(&log)?.set_modified(when)?;
        staged.groups.push(StagedGroup {
            base,
            end,
            replaced: group.iter().map(|s| (s.base_offset, s.size)).collect(),
            bytes_after,
        });
        i = j;
    }
    File::open(&staging)?.sync_all()?;
    staged.removed_aborts = txns.removed_aborts;
    staged.newly_removable = txns.newly_removable;
    staged.removed_markers = txns.removed_markers;
    Ok(staged)
}

fn swap_marker(dir: &Path, base: i64) -> PathBuf {
    dir.join(format::segment_file_name(base, "swap"))
}

/// A segment's files, in deletion order (the `.log` last: a crash part-way leaves a log
/// without indexes, rebuilt at start-up). `producers` and `txnindex` are optional.
const EXTENSIONS: [&str; 5] = ["producers", "txnindex", "index", "timeindex", "log"];

/// Files a segment may lack.
const OPTIONAL: [&str; 2] = ["producers", "txnindex"];

/// Deletes the files of segments with bases in `range` (indexes before logs).
fn delete_segment_files(dir: &Path, range: impl std::ops::RangeBounds<i64>) -> io::Result<()> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log")
            && let Ok(base) = stem.parse::<i64>()
            && range.contains(&base)
        {
            bases.push(base);
        }
    }
    for base in bases {
        for extension in EXTENSIONS {
            match fs::remove_file(dir.join(format::segment_file_name(base, extension))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

fn move_staged_in(dir: &Path, base: i64) -> io::Result<()> {
    let staging = dir.join(STAGING_DIR);
    for extension in EXTENSIONS {
        let name = format::segment_file_name(base, extension);
        match fs::rename(staging.join(&name), dir.join(&name)) {
            // The producers file is optional; any other file may already have moved
            // before a crash interrupted this (recovery runs it again).
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && (OPTIONAL.contains(&extension) || dir.join(&name).exists()) => {}
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Step 3 for one group, on disk (the caller updates the in-memory log).
pub fn swap_files(dir: &Path, group: &StagedGroup) -> io::Result<()> {
    let marker = swap_marker(dir, group.base);
    super::write_atomically(&marker, group.end.to_string().as_bytes())?;
    delete_segment_files(dir, group.base..group.end)?;
    move_staged_in(dir, group.base)?;
    File::open(dir)?.sync_all()?;
    fs::remove_file(&marker)?;
    File::open(dir)?.sync_all()
}

/// Bases of the swap markers in a partition directory, lowest first.
fn swap_markers(dir: &Path) -> io::Result<Vec<i64>> {
    let mut markers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".swap")
            && let Ok(base) = stem.parse::<i64>()
        {
            markers.push(base);
        }
    }
    markers.sort_unstable();
    Ok(markers)
}

/// Finishes swaps a crash (or a failed swap, which took the partition offline)
/// interrupted and discards unfinished passes (start-up).
pub fn recover(dir: &Path) -> io::Result<()> {
    let staging = dir.join(STAGING_DIR);
    for base in swap_markers(dir)? {
        let marker = swap_marker(dir, base);
        let end: i64 = fs::read_to_string(&marker)?
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "unreadable swap marker"))?;
        let staged_log = staging.join(format::segment_file_name(base, "log"));
        if staged_log.exists() {
            delete_segment_files(dir, base..end)?;
            move_staged_in(dir, base)?;
        } else if dir.join(format::segment_file_name(base, "log")).exists() {
            delete_segment_files(dir, base + 1..end)?;
        } else {
            // Neither the copy nor its moved-in log: finishing would lose [base, end).
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the compaction swap of segment {base} has lost its staged copy"),
            ));
        }
        File::open(dir)?.sync_all()?;
        fs::remove_file(&marker)?;
        tracing::info!(dir = %dir.display(), base, end, "finished a compaction swap interrupted by a crash");
    }
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    Ok(())
}

/// The dirty part of a log's cleanable range, which decides whether a pass is due.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dirt {
    /// Bytes of the cleanable segments (the active one and those within
    /// min.compaction.lag.ms excluded).
    pub total_bytes: u64,
    /// Bytes of those ending after the first dirty offset.
    pub dirty_bytes: u64,
    /// The newest record timestamp of the oldest dirty segment.
    pub oldest_dirty_timestamp: Option<i64>,
}

impl Dirt {
    /// Due when the dirty bytes are at least min.cleanable.dirty.ratio of the cleanable
    /// bytes, or the oldest dirty segment is older than max.compaction.lag.ms.
    pub fn due(&self, config: &super::LogConfig, now_ms: i64) -> bool {
        if self.dirty_bytes == 0 {
            return false;
        }
        let ratio = self.dirty_bytes as f64 / self.total_bytes.max(1) as f64;
        let overdue = self
            .oldest_dirty_timestamp
            .is_some_and(|ts| ts >= 0 && now_ms - ts > config.max_compaction_lag_ms);
        ratio >= config.min_cleanable_dirty_ratio || overdue
    }
}

impl Log {
    /// Compaction step 1 (see [`cleaner`]): what a pass would clean, if it is due.
    pub fn clean_plan(&self, now_ms: i64) -> Option<CleanPlan> {
        if !self.config.compact {
            return None;
        }
        let active_base = self.active().base_offset;
        let lag = self.config.min_compaction_lag_ms;
        let mut segments = Vec::new();
        for s in self.segments.values() {
            if s.base_offset == active_base || (lag > 0 && s.max_timestamp > now_ms - lag) {
                break;
            }
            segments.push(PlannedSegment {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size: s.size,
                log_path: s.log_path().to_path_buf(),
                max_timestamp: s.max_timestamp,
            });
        }
        // Segments ending after the first dirty offset are dirty (DeleteRecords may have
        // moved the log start into one that was never cleaned).
        let first_dirty = self.first_dirty_offset.max(self.log_start_offset);
        let total: u64 = segments.iter().map(|s| s.size).sum();
        let dirty: Vec<&PlannedSegment> = segments
            .iter()
            .filter(|s| s.next_offset > first_dirty)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
        if dirty_bytes == 0 {
            return None;
        }
        let dirt = Dirt {
            total_bytes: total,
            dirty_bytes,
            oldest_dirty_timestamp: dirty.first().map(|s| s.max_timestamp),
        };
        // A tiered compacted topic uploads only cleaned segments: one waiting longer than
        // UPLOAD_WAIT_MS forces a pass, so uploads (and local disk) never wait on the
        // dirty ratio.
        let upload_waiting = self.config.remote_storage
            && dirty.first().is_some_and(|s| {
                self.segments
                    .get(&s.base_offset)
                    .is_some_and(|seg| now_ms - seg.sealed_ms > UPLOAD_WAIT_MS)
            });
        if !dirt.due(&self.config, now_ms) && !upload_waiting {
            return None;
        }
        let stable_end = self
            .first_unstable_offset()
            .unwrap_or_else(|| self.log_end_offset());
        let start = segments.first().map_or(stable_end, |s| s.base_offset);
        Some(CleanPlan {
            dir: self.dir.clone(),
            segments,
            first_dirty,
            segment_bytes: self.config.segment_bytes,
            delete_retention_ms: self.config.delete_retention_ms,
            index_interval_bytes: self.config.index_interval_bytes,
            upload_end: None,
            stable_end,
            aborted: self.aborted.overlapping(start, stable_end),
            keep: Arc::new(self.producers.last_batches().into_iter().collect()),
            removable_since: Arc::new(self.markers_removable_since.clone()),
            remove_markers: !self.config.remote_storage,
        })
    }

    /// Drops a staged pass (its copies in `cleaning/`), unless a failed swap still needs
    /// them.
    pub fn discard_clean(&mut self) {
        discard_staging(&self.dir);
    }

    /// Compaction step 3: swaps staged groups in, if the segments they replace are all
    /// still there unchanged. Returns the bytes removed.
    pub fn finish_clean(&mut self, staged: Staged, now_ms: i64) -> Result<u64, LogError> {
        self.finish_clean_within(staged, now_ms, None)
    }

    /// [`Log::finish_clean`] for a tiered log whose remote tier now ends at `upload_end`:
    /// if an upload moved that end into a staged group meanwhile, the pass is dropped
    /// (the next one plans around it).
    pub fn finish_clean_within(
        &mut self,
        staged: Staged,
        now_ms: i64,
        upload_end: Option<i64>,
    ) -> Result<u64, LogError> {
        let unchanged = staged.groups.iter().all(|g| {
            g.replaced
                .iter()
                .all(|(base, size)| self.segments.get(base).is_some_and(|s| s.size == *size))
        });
        let unchanged = unchanged
            && !staged
                .groups
                .iter()
                .any(|g| straddles(g.base, g.end, upload_end));
        if !unchanged {
            discard_staging(&self.dir);
            return Ok(0);
        }
        let mut removed = 0u64;
        for group in &staged.groups {
            swap_files(&self.dir, group).map_err(|e| self.io_err(e))?;
            let before: u64 = group.replaced.iter().map(|(_, size)| size).sum();
            removed += before.saturating_sub(group.bytes_after);
            for (base, _) in &group.replaced {
                self.segments.remove(base);
            }
            let interval = self.config.index_interval_bytes;
            let (mut segment, _) =
                Segment::open_sealed(&self.dir, group.base, group.end, interval, now_ms, true)
                    .map_err(|e| self.io_err(e))?;
            segment.next_offset = group.end;
            self.segments.insert(group.base, segment);
        }
        discard_staging(&self.dir);
        for entry in &staged.removed_aborts {
            self.aborted.remove(entry);
        }
        for offset in &staged.removed_markers {
            self.markers_removable_since.remove(offset);
        }
        for offset in &staged.newly_removable {
            self.markers_removable_since.insert(*offset, now_ms);
        }
        let first = self.segments.keys().next().copied().unwrap_or(0);
        self.markers_removable_since
            .retain(|&offset, _| offset >= first);
        self.first_dirty_offset = staged.first_dirty;
        write_atomically(
            &self.dir.join(CHECKPOINT_FILE),
            &encode_checkpoint(staged.first_dirty),
        )
        .map_err(|e| self.io_err(e))?;
        Ok(removed)
    }
}

/// A compacted topic keeps the last record of each key, so every record needs one (as in
/// Kafka). Produce checks it in [`super::prepare`]; this is the same check on its own.
#[cfg(test)]
pub fn require_keys(records: &[u8]) -> Result<(), BatchError> {
    let mut position = 0;
    let mut budget = Budget::new(MAX_INFLATED_BYTES);
    while position < records.len() {
        let rest = &records[position..];
        let header = format::validate_replica_batch(rest)?;
        super::records::check_produced(&rest[..header.size], &header, true, &mut budget)?;
        position += header.size;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
