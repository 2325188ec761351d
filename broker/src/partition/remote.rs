//! Reads from the remote tier, through the segment cache, with the same damage checks as
//! local reads: Fetch below the local log start ([`read_remote`]) and ListOffsets by
//! timestamp ([`remote_offset_for_timestamp`]). A partition reads its remote tier through
//! these; handlers ask the partition (`Partition::read`), never this module.

use std::sync::Arc;

use bytes::Bytes;
use strata_tiering::manifest::SegmentEntry;
use strata_tiering::{ObjectRef, RemoteLog, SegmentCache, TierError};

use crate::log::format::{
    self, BATCH_HEADER_LEN, BATCH_PREFIX_LEN, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN,
};

/// What reading a partition's remote tier needs besides its manifest: the broker's
/// segment cache (which also knows how far to read ahead). Shared by every partition.
#[derive(Clone)]
pub struct RemoteReader {
    pub cache: Arc<SegmentCache>,
}

/// A partition's remote tier: its manifest and the reader.
#[derive(Clone)]
pub struct RemoteTier {
    pub log: Arc<RemoteLog>,
    pub reader: RemoteReader,
}

/// Why a remote read failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteReadError {
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error("remote segment {key} (base offset {base_offset}) is damaged at byte {position}")]
    Corrupt {
        key: String,
        base_offset: i64,
        position: u64,
    },
    #[error("local staging for a remote rewrite failed: {0}")]
    Local(std::io::Error),
}

/// The last offset-index entry at or before `relative`: (its relative offset, its
/// position); (0, 0) if none.
///
/// A binary search: a fetch pays O(log n) for it, not a walk of the whole index (a 64 MiB
/// segment's index has thousands of entries). It does not prove the index sorted; the
/// caller checks that the entry names a batch with the offset it says, and walks from the
/// segment's start otherwise, so a damaged index costs a slower read, never wrong records.
pub fn index_floor(index: &[u8], relative: i64) -> (u32, u64) {
    let entry_len = OFFSET_ENTRY_LEN as usize;
    let entries = index
        .get(format::INDEX_HEADER_LEN as usize..)
        .unwrap_or_default();
    let entry = |i: usize| format::offset_entry(&entries[i * entry_len..(i + 1) * entry_len]);
    let count = entries.len() / entry_len;
    let mut low = 0;
    let mut high = count;
    while low < high {
        let middle = low + (high - low) / 2;
        if i64::from(entry(middle).0) <= relative {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    match low.checked_sub(1).map(entry) {
        Some((rel, position)) if i64::from(rel) <= relative => (rel, u64::from(position)),
        _ => (0, 0),
    }
}

/// At most this many segments ahead of a reader are warmed (the byte budget usually ends
/// first; this bounds the manifest lookups when segments are tiny).
const READ_AHEAD_MAX_SEGMENTS: usize = 64;

/// Reads whole batches from the remote tier starting with the one holding `offset`, up
/// to `max_bytes` but always at least one whole batch (KIP-74). One segment per call, as
/// for local reads; the consumer's next fetch continues in the next segment.
///
/// Returned batches are checked (framing and CRC-32C). A read that meets damage drops the
/// object's chunks from the segment cache and reads once more from the bucket (the cache's
/// disk may be what is damaged); damage that persists is a [`RemoteReadError::Corrupt`],
/// which `crate::tier::repair_remote` can mend from a local copy.
///
/// The trace span keeps its name from when this lived in `tier/` (dashboards use it).
#[tracing::instrument(target = "strata::trace", level = "trace", name = "tier.remote_read",
    skip_all, fields(partition = %remote.id, offset = offset, max_bytes = max_bytes))]
///
/// Also returns the segment the batches came from (its aborted-transaction list belongs
/// to them, whatever retention does to the manifest meanwhile).
pub async fn read_remote(
    tiering: &RemoteReader,
    remote: &Arc<RemoteLog>,
    offset: i64,
    max_bytes: usize,
) -> Result<(Bytes, Option<SegmentEntry>), RemoteReadError> {
    match read_remote_once(tiering, remote, offset, max_bytes).await {
        Err(RemoteReadError::Corrupt { base_offset, .. }) => {
            if let Some(entry) = remote.locate(base_offset).await? {
                tiering.cache.forget(&object_ref(remote, &entry));
            }
            read_remote_once(tiering, remote, offset, max_bytes).await
        }
        result => result,
    }
}

/// The aborted transactions listed with a remote segment (the one a remote read's
/// records came from): every aborted transaction overlapping that segment, for a
/// read_committed reader. One ranged read of the object's last section, through the
/// segment cache.
pub async fn aborted_in_remote(
    tiering: &RemoteReader,
    remote: &RemoteLog,
    entry: &SegmentEntry,
) -> Result<Vec<crate::log::txn::AbortedTxn>, RemoteReadError> {
    if entry.txn_index_bytes == 0 {
        return Ok(Vec::new());
    }
    let object = object_ref(remote, entry);
    let bytes = tiering.cache.read(&object, entry.txn_index_range()).await?;
    crate::log::txn::decode_file(&bytes).ok_or(RemoteReadError::Corrupt {
        key: object.key.clone(),
        base_offset: entry.base_offset,
        position: entry.txn_index_range().start,
    })
}

pub fn object_ref(remote: &RemoteLog, entry: &SegmentEntry) -> ObjectRef {
    ObjectRef {
        key: remote.segment_key(entry),
        id: entry.object_id,
        size: entry.object_size(),
    }
}

async fn read_remote_once(
    tiering: &RemoteReader,
    remote: &Arc<RemoteLog>,
    offset: i64,
    max_bytes: usize,
) -> Result<(Bytes, Option<SegmentEntry>), RemoteReadError> {
    let mut offset = offset;
    let cache = &tiering.cache;
    let (entry, object, position, first_size) = loop {
        let Some(entry) = remote.locate(offset).await? else {
            return Ok((Bytes::new(), None));
        };
        let object = object_ref(remote, &entry);
        match seek_remote(cache, &entry, &object, offset).await? {
            Some((position, size)) => break (entry, object, position, size as u64),
            // Nothing at or after `offset` in this segment: compaction removed the
            // records at its end (or all of them). Go on with the next one.
            None => offset = entry.end_offset,
        }
    };
    let available = entry.log_bytes - position;
    let mut want = available.min((max_bytes as u64).max(first_size));
    // Also the next batch's prefix, to check the last batch returned against it.
    let mut end = position + available.min(want + BATCH_PREFIX_LEN as u64);
    // A read within one cached chunk is a slice of it; one across chunks a copy. So stop
    // at the chunk's end when the first batch (and the prefix after it) fits before it:
    // the consumer's next fetch starts in the next chunk.
    let prefix = BATCH_PREFIX_LEN as u64;
    let chunk_end = (position / cache.chunk_bytes() + 1) * cache.chunk_bytes();
    if end > chunk_end && position + first_size + prefix <= chunk_end {
        want = chunk_end - prefix - position;
        end = chunk_end;
    }
    let bytes = cache.read(&object, position..end).await?;
    let whole = crate::log::checked_prefix(
        &bytes,
        want as usize,
        i64::MAX,
        (entry.base_offset, entry.end_offset),
    )
    .map_err(|_| RemoteReadError::Corrupt {
        key: object.key.clone(),
        base_offset: entry.base_offset,
        position,
    })?;
    read_ahead_segments(tiering, remote, &entry, &object, end);
    Ok((bytes.slice(..whole), Some(entry)))
}

/// Carries the read-ahead window past the end of the segment just read into the segments
/// that follow: a sequential reader of small segments then keeps as many GETs in flight
/// as one of large segments. `read_end` is where the read stopped in `object`; the cache
/// already reads ahead inside `object` from there.
///
/// Runs detached on the remote-read runtime: finding the next segments may GET manifest
/// spill objects, which the reader's response should not wait for. A failure there only
/// ends the read-ahead (the reader meets it, if it persists, when it reads on).
fn read_ahead_segments(
    tiering: &RemoteReader,
    remote: &Arc<RemoteLog>,
    entry: &SegmentEntry,
    object: &ObjectRef,
    read_end: u64,
) {
    let cache = tiering.cache.clone();
    let chunk = cache.chunk_bytes();
    let budget = cache.read_ahead_bytes();
    let read_to = read_end.div_ceil(chunk) * chunk;
    let mut left = budget.saturating_sub(object.size.saturating_sub(read_to));
    if left == 0 {
        return;
    }
    let remote = remote.clone();
    let mut next_offset = entry.end_offset;
    tiering.cache.spawn_background(async move {
        for _ in 0..READ_AHEAD_MAX_SEGMENTS {
            let next = match remote.locate(next_offset).await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(partition = %remote.id, offset = next_offset,
                        "read-ahead stopped: {e}");
                    break;
                }
            };
            left = cache.read_ahead(&object_ref(&remote, &next), 0, left);
            if left == 0 {
                break;
            }
            next_offset = next.end_offset;
        }
    });
}

/// The batch of a remote segment holding `offset` (position, size), or `None` if the
/// segment has nothing at or after it. Checks what it walks as a local read does: the
/// index entry must name a batch with the offset it says (else the walk starts at the
/// segment's start), every batch must fit the segment and follow the one before, and the
/// batch before a gap in the offsets is checked whole (a damaged last-offset delta would
/// make one, and the read would skip the records in it).
async fn seek_remote(
    cache: &Arc<SegmentCache>,
    entry: &SegmentEntry,
    object: &ObjectRef,
    offset: i64,
) -> Result<Option<(u64, usize)>, RemoteReadError> {
    let corrupt = |position| RemoteReadError::Corrupt {
        key: object.key.clone(),
        base_offset: entry.base_offset,
        position,
    };
    let prefix_at = |position: u64| async move {
        if position + BATCH_PREFIX_LEN as u64 > entry.log_bytes {
            return Ok::<_, RemoteReadError>(None);
        }
        let prefix = cache
            .read(object, position..position + BATCH_PREFIX_LEN as u64)
            .await?;
        Ok(format::read_batch_prefix(&prefix)
            .filter(|(_, size, _)| position + *size as u64 <= entry.log_bytes))
    };
    let check_whole = |position: u64, size: usize| async move {
        let batch = cache.read(object, position..position + size as u64).await?;
        Ok::<_, RemoteReadError>(format::crc_matches(&batch))
    };
    let index = cache.read(object, entry.offset_index_range()).await?;
    let (relative, mut position) = index_floor(&index, offset - entry.base_offset);
    if position > 0
        && !matches!(prefix_at(position).await?,
            Some((base, ..)) if base == entry.base_offset + i64::from(relative))
    {
        position = 0;
    }
    let mut next_offset = entry.base_offset;
    let mut previous: Option<(u64, usize)> = None;
    while position < entry.log_bytes {
        let Some((base, size, last_delta)) = prefix_at(position).await? else {
            return Err(corrupt(position));
        };
        if !crate::log::offsets_fit(entry.end_offset, base, last_delta, next_offset) {
            return Err(corrupt(position));
        }
        if base > next_offset
            && let Some((before, before_size)) = previous
            && !check_whole(before, before_size).await?
        {
            return Err(corrupt(before));
        }
        if base + i64::from(last_delta) >= offset {
            return Ok(Some((position, size)));
        }
        next_offset = base + i64::from(last_delta) + 1;
        previous = Some((position, size));
        position += size as u64;
    }
    if next_offset < entry.end_offset
        && let Some((before, before_size)) = previous
        && !check_whole(before, before_size).await?
    {
        return Err(corrupt(before));
    }
    Ok(None)
}

/// The relative offset of the last time-index entry whose running max timestamp is below
/// `timestamp` (where a scan for `timestamp` can start), if any.
fn time_index_floor(index: &[u8], timestamp: i64) -> Option<u32> {
    format::index_floor(index, TIME_ENTRY_LEN, timestamp.saturating_sub(1), |e| {
        format::time_entry(e).0
    })
    .map(|e| format::time_entry(e).1)
}

/// ListOffsets by timestamp over the remote tier: the first record at or after the remote
/// log start with a timestamp >= `timestamp`, or `None` if no remote segment has one.
/// Segments (and whole spill objects) are skipped by their max timestamp from the
/// manifest ([`RemoteLog::by_offset_reaching`]), then the segment's time index narrows
/// the scan, and only the batch holding the answer is decoded.
pub async fn remote_offset_for_timestamp(
    tiering: &RemoteReader,
    remote: &RemoteLog,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, RemoteReadError> {
    remote_offset_for_timestamp_from(tiering, remote, timestamp, i64::MIN).await
}

/// [`remote_offset_for_timestamp`] considering only records at or after `min_offset`
/// too (a diskless partition's log start, which can be ahead of its manifest's).
pub async fn remote_offset_for_timestamp_from(
    tiering: &RemoteReader,
    remote: &RemoteLog,
    timestamp: i64,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, RemoteReadError> {
    let mut walk = remote.by_offset_reaching(timestamp);
    let start = walk.log_start().max(min_offset);
    while let Some(entry) = walk.next().await? {
        let found = scan_segment_for_timestamp(tiering, remote, &entry, timestamp, start).await?;
        if found.is_some() {
            return Ok(found);
        }
        // Every match in this segment was below the log start: look further on.
    }
    Ok(None)
}

/// ListOffsets MAX_TIMESTAMP over the remote tier: the first record at or after the
/// remote log start with the largest timestamp the remote tier holds, if that timestamp is
/// at least `at_least` (the local log's largest); `None` otherwise. Segments are tried by
/// their largest timestamp, largest first (the earlier segment of a tie first), loading
/// only the spill objects on the way ([`RemoteLog::by_max_timestamp`]). A segment whose
/// largest timestamp belongs to a record below the log start (DeleteRecords inside it) is
/// passed over for the next one; its other records are then not considered, so in that
/// one case the answer can be a record with a smaller timestamp than theirs.
pub async fn remote_max_timestamp(
    tiering: &RemoteReader,
    remote: &RemoteLog,
    at_least: i64,
) -> Result<Option<(i64, i64)>, RemoteReadError> {
    remote_max_timestamp_from(tiering, remote, at_least, i64::MIN).await
}

/// [`remote_max_timestamp`] considering only records at or after `min_offset` too.
pub async fn remote_max_timestamp_from(
    tiering: &RemoteReader,
    remote: &RemoteLog,
    at_least: i64,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, RemoteReadError> {
    let mut walk = remote.by_max_timestamp(at_least);
    let start = walk.log_start().max(min_offset);
    while let Some(entry) = walk.next().await? {
        let found =
            scan_segment_for_timestamp(tiering, remote, &entry, entry.max_timestamp, start).await?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The first record of `entry` at or after `min_offset` with a timestamp >= `timestamp`.
async fn scan_segment_for_timestamp(
    tiering: &RemoteReader,
    remote: &RemoteLog,
    entry: &SegmentEntry,
    timestamp: i64,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, RemoteReadError> {
    let object = object_ref(remote, entry);
    let corrupt = |position| RemoteReadError::Corrupt {
        key: object.key.clone(),
        base_offset: entry.base_offset,
        position,
    };
    let cache = &tiering.cache;
    let time_index = cache.read(&object, entry.time_index_range()).await?;
    let offset_index = cache.read(&object, entry.offset_index_range()).await?;
    // The offset index is not proven sorted (see [`index_floor`]): use its entry only if
    // a batch with the offset it names starts there, else scan from the segment's start.
    let mut position = 0;
    if let Some(relative) = time_index_floor(&time_index, timestamp) {
        let (found, at) = index_floor(&offset_index, i64::from(relative));
        if at > 0 && at + BATCH_PREFIX_LEN as u64 <= entry.log_bytes {
            let prefix = cache
                .read(&object, at..at + BATCH_PREFIX_LEN as u64)
                .await?;
            if matches!(format::read_batch_prefix(&prefix),
                Some((base, ..)) if base == entry.base_offset + i64::from(found))
            {
                position = at;
            }
        }
    }
    while position + BATCH_HEADER_LEN as u64 <= entry.log_bytes {
        let header = cache
            .read(&object, position..position + BATCH_HEADER_LEN as u64)
            .await?;
        let Some((base, size, last_delta)) = format::read_batch_prefix(&header) else {
            return Err(corrupt(position));
        };
        if size < BATCH_HEADER_LEN || position + size as u64 > entry.log_bytes {
            return Err(corrupt(position));
        }
        let batch_max = format::parse_validated_header(&header).max_timestamp;
        if base + i64::from(last_delta) >= min_offset && batch_max >= timestamp {
            let batch = cache
                .read(&object, position..position + size as u64)
                .await?;
            if !format::crc_matches(&batch) {
                return Err(corrupt(position));
            }
            let found = crate::partition::heavy_decode(move || {
                crate::log::first_at_or_after(&batch, timestamp, min_offset, i64::MAX)
            })
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| corrupt(position))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        position += size as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_floor_finds_the_last_entry_at_or_before() {
        let mut index = format::index_header(format::OFFSET_INDEX_MAGIC).to_vec();
        for (rel, pos) in [(0u32, 0u32), (10, 4000), (20, 8000)] {
            index.extend_from_slice(&rel.to_be_bytes());
            index.extend_from_slice(&pos.to_be_bytes());
        }
        assert_eq!(index_floor(&index, 0).1, 0);
        assert_eq!(index_floor(&index, 9).1, 0);
        assert_eq!(index_floor(&index, 10), (10, 4000));
        assert_eq!(index_floor(&index, 25).1, 8000);
        assert_eq!(index_floor(&index[..8], 25), (0, 0));
    }
}
