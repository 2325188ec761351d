//! Reading whole batches from a segment without holding the log lock.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::compression::{Decompressor, Snappy};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

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
/// below `limit`, decoding only the batch that holds it. Returns (offset, timestamp).
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
            let header = format::parse_validated_header(&batch);
            if header.max_timestamp >= timestamp {
                let found = record_timestamps(batch)?.into_iter().find(|(offset, ts)| {
                    *ts >= timestamp && *offset >= min_offset && *offset < limit
                });
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
    let records = record_timestamps(batch)?;
    let best = records
        .iter()
        .copied()
        .fold(None, |best: Option<(i64, i64)>, (offset, ts)| match best {
            Some((_, best_ts)) if best_ts >= ts => best,
            _ => Some((offset, ts)),
        });
    Ok(best)
}

/// Largest decompressed batch this module will look inside. A batch that inflates past
/// it (a decompression bomb) is treated as unreadable instead of exhausting memory.
const MAX_DECOMPRESSED_BYTES: u64 = 256 * 1024 * 1024;

fn bounded(reader: impl Read, codec: &str) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        anyhow::bail!("{codec} batch inflates past {MAX_DECOMPRESSED_BYTES} bytes");
    }
    Ok(Bytes::from(out))
}

fn decompress(compressed: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    let input = compressed.split_to(compressed.len());
    match compression {
        Compression::None => Ok(input),
        Compression::Gzip => bounded(flate2::read::GzDecoder::new(input.reader()), "gzip"),
        Compression::Zstd => bounded(zstd::stream::read::Decoder::new(input.reader())?, "zstd"),
        Compression::Lz4 => bounded(lz4::Decoder::new(input.reader())?, "lz4"),
        // Snappy cannot inflate more than about 21:1, so its output is bounded already.
        Compression::Snappy => {
            Snappy::decompress(&mut input.clone(), |b: &mut Bytes| Ok(b.split_to(b.len())))
        }
    }
}

/// Decodes one whole batch (CRC already checked), inflating compressed records within a
/// bound (a decompression bomb is an error, not an allocation).
pub fn decode_batch(batch: Bytes) -> io::Result<kafka_protocol::records::RecordSet> {
    let mut bytes = batch;
    RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(decompress))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("decode a batch: {e}")))
}

/// (offset, timestamp) of every record in a stored batch. For LogAppendTime batches the
/// timestamp is the batch's max timestamp, as consumers see it.
pub fn record_timestamps(batch: Vec<u8>) -> io::Result<Vec<(i64, i64)>> {
    let header = format::parse_validated_header(&batch);
    let log_append_time = format::is_log_append_time(&batch);
    let mut bytes = Bytes::from(batch);
    let set = RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(decompress))
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("decode stored batch: {e}"),
            )
        })?;
    Ok(set
        .records
        .iter()
        .map(|r| {
            (
                r.offset,
                if log_append_time {
                    header.max_timestamp
                } else {
                    r.timestamp
                },
            )
        })
        .collect())
}
