//! Reading whole batches from a segment without holding the log lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::format;
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
/// but always at least one whole batch (KIP-74) so a consumer can make progress.
pub fn read_batches(location: &Location, offset: i64, max_bytes: usize) -> io::Result<Bytes> {
    let Some((position, first_size)) = seek_batch(location, offset)? else {
        return Ok(Bytes::new());
    };
    let available = (location.end - position) as usize;
    let want = available.min(max_bytes.max(first_size));
    let mut buf = vec![0u8; want];
    location.file.read_exact_at(&mut buf, position)?;
    // Trim a partial batch at the end.
    let mut whole = 0;
    while let Some((_, size, _)) = format::read_batch_prefix(&buf[whole..]) {
        if whole + size > buf.len() {
            break;
        }
        whole += size;
    }
    buf.truncate(whole);
    Ok(Bytes::from(buf))
}

/// Finds the first record with timestamp >= `timestamp` at or after `min_offset`,
/// decoding only the batch that holds it. Returns (offset, timestamp).
pub fn find_timestamp(
    location: &Location,
    timestamp: i64,
    min_offset: i64,
) -> io::Result<Option<(i64, i64)>> {
    let mut position = location.start;
    while let Some((base, size, last_delta)) =
        read_prefix_at(&location.file, position, location.end)?
    {
        if base + i64::from(last_delta) >= min_offset {
            let mut batch = vec![0u8; size];
            location.file.read_exact_at(&mut batch, position)?;
            let header = format::parse_validated_header(&batch);
            if header.max_timestamp >= timestamp {
                let found = decode(batch)?
                    .into_iter()
                    .find(|(offset, ts)| *ts >= timestamp && *offset >= min_offset);
                if found.is_some() {
                    return Ok(found);
                }
            }
        }
        position += size as u64;
    }
    Ok(None)
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
    let records = decode(batch)?;
    let best = records
        .iter()
        .copied()
        .fold(None, |best: Option<(i64, i64)>, (offset, ts)| match best {
            Some((_, best_ts)) if best_ts >= ts => best,
            _ => Some((offset, ts)),
        });
    Ok(best)
}

fn decode(batch: Vec<u8>) -> io::Result<Vec<(i64, i64)>> {
    let mut bytes = Bytes::from(batch);
    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decode stored batch: {e}"),
        )
    })?;
    Ok(set
        .records
        .iter()
        .map(|r| (r.offset, r.timestamp))
        .collect())
}
