//! ListOffsets by timestamp over the remote tier.

use strata_tiering::RemoteLog;
use strata_tiering::manifest::SegmentEntry;

use super::read::{index_floor, object_ref};
use super::{RemoteReadError, Tiering};
use crate::log::format::{self, BATCH_HEADER_LEN, TIME_ENTRY_LEN};

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
/// Segments are skipped by their max timestamp (from the manifest), then the segment's
/// time index narrows the scan, and only the batch holding the answer is decoded.
pub async fn remote_offset_for_timestamp(
    tiering: &Tiering,
    remote: &RemoteLog,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, RemoteReadError> {
    let marks = remote.marks();
    let Some(end) = marks.end_offset else {
        return Ok(None);
    };
    let root = remote.root();
    let remote_max = root
        .tail
        .iter()
        .map(|e| e.max_timestamp)
        .chain(root.refs.iter().map(|r| r.max_timestamp))
        .max()
        .unwrap_or(-1);
    if remote_max < timestamp {
        return Ok(None);
    }
    let start = marks.log_start_offset;
    let mut offset = start;
    while offset < end {
        let Some(entry) = remote.locate(offset).await? else {
            return Ok(None);
        };
        offset = entry.end_offset;
        if entry.max_timestamp < timestamp {
            continue;
        }
        let found = scan_segment_for_timestamp(tiering, remote, &entry, timestamp, start).await?;
        if found.is_some() {
            return Ok(found);
        }
        // Every match in this segment was below the log start: look further on.
    }
    Ok(None)
}

/// The first record of `entry` at or after `min_offset` with a timestamp >= `timestamp`.
async fn scan_segment_for_timestamp(
    tiering: &Tiering,
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
    let mut position = time_index_floor(&time_index, timestamp).map_or(0, |relative| {
        index_floor(&offset_index, i64::from(relative)).1
    });
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
