//! Reading whole batches from a segment without holding the log lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::format;
use super::records::{self, Budget, MAX_INFLATED_BYTES};
use super::segment::read_prefix_at;

/// A segment file and the byte range in it a read may look at. `start` is an index
/// position at or before the wanted offset; `end` is the segment's valid size.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: Arc<File>,
    pub start: u64,
    pub end: u64,
}

/// Skips to the batch containing `offset` and returns its position, or `None` if the
/// segment ends first.
fn seek_batch(location: &Location, offset: i64) -> io::Result<Option<(u64, usize)>> {
    let mut position = location.start;
    while let Some((base, size, last_delta)) =
        read_prefix_at(&location.file, position, location.end)?
    {
        if base + i64::from(last_delta) >= offset {
            return Ok(Some((position, size)));
        }
        position += size as u64;
    }
    Ok(None)
}

/// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`,
/// but always at least one whole batch (KIP-74) so a consumer can make progress. Batches
/// at or past `limit` (the high watermark) are left out.
pub fn read_batches(
    location: &Location,
    offset: i64,
    max_bytes: usize,
    limit: i64,
) -> io::Result<Bytes> {
    let Some((position, first_size)) = seek_batch(location, offset)? else {
        return Ok(Bytes::new());
    };
    let available = (location.end - position) as usize;
    let want = available.min(max_bytes.max(first_size));
    let mut buf = vec![0u8; want];
    location.file.read_exact_at(&mut buf, position)?;
    let mut whole = 0;
    while let Some((base, size, _)) = format::read_batch_prefix(&buf[whole..]) {
        if whole + size > buf.len() || base >= limit {
            break;
        }
        whole += size;
    }
    buf.truncate(whole);
    Ok(Bytes::from(buf))
}

/// Finds the first record with timestamp >= `timestamp`, at or after `min_offset` and
/// below `limit`, decoding only the batches whose max timestamp says they may hold it.
/// Returns (offset, timestamp).
pub fn find_timestamp(
    location: &Location,
    timestamp: i64,
    min_offset: i64,
    limit: i64,
) -> io::Result<Option<(i64, i64)>> {
    let mut position = location.start;
    while let Some((base, size, last_delta)) =
        read_prefix_at(&location.file, position, location.end)?
    {
        if base >= limit {
            break;
        }
        if base + i64::from(last_delta) >= min_offset {
            let mut batch = vec![0u8; size];
            location.file.read_exact_at(&mut batch, position)?;
            let found = first_at_or_after(&batch, timestamp, min_offset, limit)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        position += size as u64;
    }
    Ok(None)
}

/// The first record of a stored batch with timestamp >= `timestamp` and an offset in
/// `min_offset..limit`, if the batch's max timestamp allows one. Shared by the local and
/// the remote tier.
pub fn first_at_or_after(
    batch: &[u8],
    timestamp: i64,
    min_offset: i64,
    limit: i64,
) -> io::Result<Option<(i64, i64)>> {
    if batch.len() < format::BATCH_HEADER_LEN
        || format::parse_validated_header(batch).max_timestamp < timestamp
    {
        return Ok(None);
    }
    let mut found = None;
    records::for_each_timestamp(batch, &mut Budget::new(MAX_INFLATED_BYTES), |offset, ts| {
        if ts >= timestamp && offset >= min_offset && offset < limit {
            found = Some((offset, ts));
        }
        found.is_none()
    })
    .map_err(invalid_data)?;
    Ok(found)
}

/// The (offset, timestamp) of the record with the largest timestamp in the batch that
/// starts at or contains `batch_offset` (the first such record if several tie).
pub fn max_timestamp_record(
    location: &Location,
    batch_offset: i64,
) -> io::Result<Option<(i64, i64)>> {
    let Some((position, size)) = seek_batch(location, batch_offset)? else {
        return Ok(None);
    };
    let mut batch = vec![0u8; size];
    location.file.read_exact_at(&mut batch, position)?;
    let mut best: Option<(i64, i64)> = None;
    records::for_each_timestamp(
        &batch,
        &mut Budget::new(MAX_INFLATED_BYTES),
        |offset, ts| {
            if best.is_none_or(|(_, best_ts)| ts > best_ts) {
                best = Some((offset, ts));
            }
            true
        },
    )
    .map_err(invalid_data)?;
    Ok(best)
}

fn invalid_data(error: records::RecordError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("decode a stored batch: {error}"),
    )
}
