//! Runs to segment bytes: the pure half of a merge. The batches of a prefix of a
//! partition's runs, read from their shared objects, are concatenated with their base
//! offsets patched (from each run's `base`) and partitionLeaderEpoch 0, and the offset
//! and time indexes are built as `crate::log`'s segments build theirs (see
//! `crate::log::format`): an offset entry before the first batch and then once at least
//! `index.interval.bytes` were appended since the previous entry, a time entry with each
//! offset entry when the running max timestamp moved, and a last time entry for the
//! segment's largest timestamp (a sealed segment's). The remote reader
//! (`crate::partition::remote`) therefore reads a merged segment exactly as an uploaded
//! one.
//!
//! Nothing here trusts the shared object: every batch's framing, CRC-32C and offsets are
//! checked against its run before anything is built, so a damaged object stops the merge
//! (and is reported) instead of becoming a damaged segment.
//!
//! The transaction index ([`aborted_overlapping`]) comes from the runs' records in the
//! metadata store, not from the bytes: the aborted-transaction entries that the commits
//! of abort markers stored with their runs.

use crate::diskless::state::Run;
use crate::log::format::{
    self, BATCH_HEADER_LEN, OFFSET_ENTRY_LEN, OFFSET_INDEX_MAGIC, TIME_ENTRY_LEN, TIME_INDEX_MAGIC,
};
use crate::log::txn::AbortedTxn;

/// One run's bytes as read from its shared object: `[pos, pos + len)` of `key`.
pub struct RunBytes<'a> {
    pub key: &'a str,
    /// First offset of the run.
    pub base: i64,
    /// One past its last offset.
    pub end: i64,
    /// Batches the run holds.
    pub batches: u32,
    pub bytes: &'a [u8],
}

/// A merged segment: what `strata_tiering::SealedSegment` is built from.
#[derive(Debug)]
pub struct MergedSegment {
    pub base_offset: i64,
    pub end_offset: i64,
    pub log: Vec<u8>,
    pub offset_index: Vec<u8>,
    pub time_index: Vec<u8>,
    /// Largest batch max timestamp; -1 if no batch carries one.
    pub max_timestamp: i64,
}

/// A shared object whose bytes do not match the run that references them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "shared object {key}: the run at offset {base} is damaged at byte {position} of the run: {reason}"
)]
pub struct Damaged {
    pub key: String,
    pub base: i64,
    pub position: usize,
    pub reason: &'static str,
}

/// The aborted transactions a merged segment of offsets `[base, end)` lists in its
/// transaction index (`crate::log::txn::encode_file`): every entry of `runs` whose
/// records overlap the segment (first offset below `end`, abort marker at or after
/// `base`), in (first offset, producer id) order, once each. An entry lives with the run
/// holding its marker, which for an overlapping entry is at or after `base`: pass every
/// run from the first merged one on, including those past `end` (a transaction with
/// records below `end` may have its marker beyond it; its records are still listed,
/// since read_committed readers of this segment must skip them).
pub fn aborted_overlapping<'a>(
    runs: impl IntoIterator<Item = &'a Run>,
    base: i64,
    end: i64,
) -> Vec<AbortedTxn> {
    let mut aborted: Vec<AbortedTxn> = runs
        .into_iter()
        .flat_map(|run| run.aborted.iter())
        .filter(|e| e.1 < end && e.2 >= base)
        .map(|e| AbortedTxn::from(*e))
        .collect();
    aborted.sort_by_key(|a| (a.first_offset, a.producer_id, a.last_offset));
    aborted.dedup();
    aborted
}

/// Segments are capped below 2 GiB and 2^31 offsets: index entries hold positions and
/// relative offsets as u32, and `segment.bytes` is an int in Kafka.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// Builds the segment of `runs` (contiguous, in offset order, each at most
/// [`MAX_SEGMENT_BYTES`] in all).
pub fn build_segment(
    runs: &[RunBytes<'_>],
    index_interval_bytes: u64,
) -> Result<MergedSegment, Damaged> {
    let base_offset = runs.first().map_or(0, |r| r.base);
    let end_offset = runs.last().map_or(base_offset, |r| r.end);
    let total: usize = runs.iter().map(|r| r.bytes.len()).sum();
    let mut segment = MergedSegment {
        base_offset,
        end_offset,
        log: Vec::with_capacity(total),
        offset_index: format::index_header(OFFSET_INDEX_MAGIC).to_vec(),
        time_index: format::index_header(TIME_INDEX_MAGIC).to_vec(),
        max_timestamp: -1,
    };
    let mut indexer = Indexer {
        base_offset,
        interval: index_interval_bytes,
        since_entry: u64::MAX,
        max_timestamp: -1,
        offset_of_max: base_offset,
        time_current: true,
    };
    let mut expected_base = base_offset;
    for run in runs {
        let damaged = |position: usize, reason| Damaged {
            key: run.key.to_string(),
            base: run.base,
            position,
            reason,
        };
        if run.base != expected_base || run.end <= run.base {
            return Err(damaged(0, "the run does not follow the one before"));
        }
        expected_base = run.end;
        let mut next = run.base;
        let mut at = 0;
        let mut batches = 0u32;
        while at < run.bytes.len() {
            let Some((_, size, last_delta)) = format::read_batch_prefix(&run.bytes[at..]) else {
                return Err(damaged(
                    at,
                    "a batch header that is cut short or impossible",
                ));
            };
            if size < BATCH_HEADER_LEN || at + size > run.bytes.len() {
                return Err(damaged(at, "a batch that runs past the run's end"));
            }
            if last_delta < 0 || next + i64::from(last_delta) >= run.end {
                return Err(damaged(at, "more records than the run's offsets"));
            }
            let batch = &run.bytes[at..at + size];
            if !format::crc_matches(batch) {
                return Err(damaged(at, "CRC-32C mismatch"));
            }
            let position = segment.log.len();
            segment.log.extend_from_slice(batch);
            format::patch_batch(&mut segment.log[position..], next, 0);
            let header = format::parse_validated_header(&segment.log[position..]);
            indexer.add(&mut segment, &header, position as u64);
            next = header.next_offset();
            at += size;
            batches += 1;
        }
        if next != run.end || batches != run.batches {
            return Err(damaged(
                at,
                "the run's offsets or batch count disagree with its bytes",
            ));
        }
    }
    indexer.seal(&mut segment);
    segment.max_timestamp = indexer.max_timestamp;
    Ok(segment)
}

/// The index state of `crate::log`'s segment, over in-memory indexes.
struct Indexer {
    base_offset: i64,
    interval: u64,
    since_entry: u64,
    max_timestamp: i64,
    offset_of_max: i64,
    /// Whether the time index's last entry holds `max_timestamp`.
    time_current: bool,
}

impl Indexer {
    fn add(&mut self, segment: &mut MergedSegment, batch: &format::BatchHeader, position: u64) {
        if batch.max_timestamp > self.max_timestamp {
            self.max_timestamp = batch.max_timestamp;
            self.offset_of_max = batch.base_offset;
            self.time_current = false;
        }
        if self.since_entry >= self.interval {
            let relative = (batch.base_offset - self.base_offset) as u32;
            segment
                .offset_index
                .extend_from_slice(&relative.to_be_bytes());
            segment
                .offset_index
                .extend_from_slice(&(position as u32).to_be_bytes());
            if !self.time_current {
                self.time_entry(segment);
            }
            self.since_entry = 0;
        }
        self.since_entry = self.since_entry.saturating_add(batch.size as u64);
    }

    fn time_entry(&mut self, segment: &mut MergedSegment) {
        let relative = (self.offset_of_max - self.base_offset) as u32;
        segment
            .time_index
            .extend_from_slice(&self.max_timestamp.to_be_bytes());
        segment
            .time_index
            .extend_from_slice(&relative.to_be_bytes());
        self.time_current = true;
    }

    fn seal(&mut self, segment: &mut MergedSegment) {
        if !self.time_current && self.max_timestamp >= 0 {
            self.time_entry(segment);
        }
        debug_assert_eq!(
            (segment.offset_index.len() as u64 - format::INDEX_HEADER_LEN) % OFFSET_ENTRY_LEN,
            0
        );
        debug_assert_eq!(
            (segment.time_index.len() as u64 - format::INDEX_HEADER_LEN) % TIME_ENTRY_LEN,
            0
        );
    }
}
