//! Reading whole batches from a segment without holding the log lock.
//!
//! Every read checks what it walks: each batch's framing (a length that fits the segment,
//! base offsets that only increase) and, for the batches it returns or decodes, the CRC.
//! Damage is never skipped over: a read that meets it first returns a [`Damaged`] error
//! (the caller reports it and, where the remote tier holds the range, reads from there);
//! a read that meets it after some good batches returns those, so the next read starts at
//! the damage. An offset-index entry that points at anything but a batch covering the
//! wanted offset is not trusted: the read scans the segment from its start and flags the
//! index ([`Location::index_damaged`]) so the partition rebuilds it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::format;
use super::format::BATCH_PREFIX_LEN;
use super::records::{self, Budget, MAX_INFLATED_BYTES};
use super::segment::read_prefix_at;

/// A segment file and the byte range in it a read may look at. `start` is an index
/// position at or before the wanted offset; `end` is the segment's valid size.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: Arc<File>,
    pub start: u64,
    /// The base offset of the batch at `start`, as the index says (the segment's base
    /// when `start` is 0).
    pub start_offset: i64,
    pub end: u64,
    /// The segment's base offset: no batch in it may start below.
    pub base_offset: i64,
    /// The offset after the segment's last batch: none may end past it.
    pub end_offset: i64,
    /// Set by a read that found the index entry behind `start` wrong (and scanned from
    /// the segment's start instead).
    pub index_damaged: Arc<AtomicBool>,
}

/// A batch in a local segment that fails its checks: its framing (length, offsets) or its
/// CRC. Carried inside an `io::Error` of kind `InvalidData`; [`damage_of`] finds it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("damaged batch at byte {position} of the segment based at {segment_base}: {reason}")]
pub struct Damaged {
    pub segment_base: i64,
    pub position: u64,
    pub reason: &'static str,
}

/// The [`Damaged`] an I/O error from a read carries, if it is one.
pub fn damage_of(error: &io::Error) -> Option<&Damaged> {
    error.get_ref()?.downcast_ref::<Damaged>()
}

fn damaged(location: &Location, position: u64, reason: &'static str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        Damaged {
            segment_base: location.base_offset,
            position,
            reason,
        },
    )
}

/// Walks batch prefixes from `from` (0, or `location.start` whose batch must start at
/// `location.start_offset` exactly), checking framing: each batch must fit the segment,
/// start at or past the end of the one before (compaction leaves gaps, never overlap) and
/// end within the segment's offsets. Calls `visit(position, base, size, last_delta)` until
/// it returns false.
fn walk(
    location: &Location,
    from: u64,
    mut visit: impl FnMut(u64, i64, usize, i32) -> io::Result<bool>,
) -> io::Result<()> {
    let mut position = from;
    let mut next_offset = location.base_offset;
    // The batch before, for a gap check: (position, size).
    let mut previous: Option<(u64, usize)> = None;
    while position < location.end {
        let Some((base, size, last_delta)) =
            read_prefix_at(&location.file, position, location.end)?
        else {
            return Err(damaged(location, position, "unreadable batch header"));
        };
        let first_from_index = position == from && from > 0;
        if position + size as u64 > location.end {
            return Err(damaged(
                location,
                position,
                "batch runs past the segment's end",
            ));
        }
        if !offsets_fit(location.end_offset, base, last_delta, next_offset)
            || (first_from_index && base != location.start_offset)
        {
            return Err(damaged(location, position, "batch offsets out of order"));
        }
        // A gap is real only in a compacted log; a damaged last-offset delta (inside the
        // CRC, which a walk does not otherwise read) would also make one, and the read
        // would skip the records in it. The batch before a gap is checked whole.
        if base > next_offset
            && let Some((before, before_size)) = previous
        {
            read_checked(location, before, before_size)?;
        }
        if !visit(position, base, size, last_delta)? {
            return Ok(());
        }
        next_offset = base + i64::from(last_delta) + 1;
        previous = Some((position, size));
        position += size as u64;
    }
    // Likewise a gap at the segment's end, before the next segment's offsets.
    if next_offset < location.end_offset
        && let Some((before, before_size)) = previous
    {
        read_checked(location, before, before_size)?;
    }
    Ok(())
}

/// Whether a batch's offsets follow `next_offset` (the end of the batch before it) and
/// stay within the segment. Offsets come from disk: no arithmetic on them may overflow.
pub fn offsets_fit(end_offset: i64, base: i64, last_delta: i32, next_offset: i64) -> bool {
    last_delta >= 0
        && base >= next_offset
        && base
            .checked_add(i64::from(last_delta))
            .is_some_and(|last| last < end_offset)
}

/// Runs `read` from the index position. If the walk fails at that very position (no
/// batch starts there with the offset the entry names, or the entry points past the end),
/// the entry is suspect: `read` runs again from the segment's start. The index is flagged
/// damaged only when that read succeeds: an entry that points at damaged data is the
/// data's fault, and a rebuild would only lose the entries past the damage.
fn from_index<T>(location: &Location, read: impl Fn(u64) -> io::Result<T>) -> io::Result<T> {
    if location.start == 0 {
        return read(0);
    }
    if location.start < location.end {
        match read(location.start) {
            Err(e) if damage_of(&e).is_some_and(|d| d.position == location.start) => {}
            result => return result,
        }
    }
    let result = read(0)?;
    location.index_damaged.store(true, Ordering::Relaxed);
    Ok(result)
}

/// Skips to the batch containing `offset` and returns its position, or `None` if the
/// segment ends first. Starts at the index position (see [`from_index`]).
fn seek_batch(location: &Location, offset: i64) -> io::Result<Option<(u64, usize)>> {
    from_index(location, |from| seek_from(location, from, offset))
}

/// The batch holding `offset` (position and size), walking from `from`.
fn seek_from(location: &Location, from: u64, offset: i64) -> io::Result<Option<(u64, usize)>> {
    let mut found = None;
    walk(location, from, |position, base, size, last_delta| {
        if base + i64::from(last_delta) >= offset {
            found = Some((position, size));
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`,
/// but always at least one whole batch (KIP-74) so a consumer can make progress. Batches
/// at or past `limit` (the high watermark) are left out.
///
/// A batch is returned only if its CRC matches and the batch after it (or the segment's
/// end offset) agrees with its offsets: the base offset is outside the CRC, and a damaged
/// one would hand the consumer wrong offsets.
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
    // Also the next batch's prefix, to check the last batch returned against it.
    let mut buf = vec![0u8; available.min(want + BATCH_PREFIX_LEN)];
    location.file.read_exact_at(&mut buf, position)?;
    let range = (location.base_offset, location.end_offset);
    let whole = checked_prefix(&buf, want, limit, range)
        .map_err(|reason| damaged(location, position, reason))?;
    buf.truncate(whole);
    Ok(Bytes::from(buf))
}

/// The length of the longest run of whole batches at the start of `buf` (at most `want`
/// bytes, none at or past `limit`) that pass every check: CRC-32C, offsets within
/// `range` = (segment base, segment end offset) and after the batch before, and not
/// overlapped by the batch after (whose prefix `buf` holds past `want` when there is one).
/// An error (the reason) when the first batch fails; a shorter run when a later one does
/// (the next read starts at it). Shared by the local and the remote tier.
pub fn checked_prefix(
    buf: &[u8],
    want: usize,
    limit: i64,
    range: (i64, i64),
) -> Result<usize, &'static str> {
    let (base_offset, end_offset) = range;
    let mut whole = 0;
    let mut next_offset = base_offset;
    while let Some((base, size, last_delta)) = format::read_batch_prefix(&buf[whole..]) {
        if whole + size > want || base >= limit {
            break;
        }
        let fits = offsets_fit(end_offset, base, last_delta, next_offset);
        // With `fits`, the end is below the segment's end offset: no overflow.
        let end = if fits {
            base + i64::from(last_delta) + 1
        } else {
            0
        };
        let followed = match format::read_batch_prefix(&buf[whole + size..]) {
            Some((next_base, ..)) => next_base >= end,
            None => true,
        };
        let reason = if !fits || !followed {
            Some("batch offsets out of order")
        } else if !format::crc_matches(&buf[whole..whole + size]) {
            Some("CRC-32C mismatch")
        } else {
            None
        };
        if let Some(reason) = reason {
            if whole == 0 {
                return Err(reason);
            }
            break;
        }
        next_offset = end;
        whole += size;
    }
    Ok(whole)
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
    let scan = |from: u64| {
        let mut found = None;
        walk(location, from, |position, base, size, last_delta| {
            if base >= limit {
                return Ok(false);
            }
            if base + i64::from(last_delta) >= min_offset {
                let batch = read_checked(location, position, size)?;
                found = first_at_or_after(&batch, timestamp, min_offset, limit)?;
            }
            Ok(found.is_none())
        })?;
        Ok(found)
    };
    from_index(location, scan)
}

/// Checks every batch of a segment (framing and CRC-32C), as an upload does before the
/// bytes leave the broker: damage found here must not become the only copy.
pub fn verify(location: &Location) -> io::Result<()> {
    walk(location, 0, |position, _, size, _| {
        read_checked(location, position, size).map(|_| true)
    })
}

/// Reads the whole batch at `position` and checks its CRC.
fn read_checked(location: &Location, position: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut batch = vec![0u8; size];
    location.file.read_exact_at(&mut batch, position)?;
    if !format::crc_matches(&batch) {
        return Err(damaged(location, position, "CRC-32C mismatch"));
    }
    Ok(batch)
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
    let batch = read_checked(location, position, size)?;
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
