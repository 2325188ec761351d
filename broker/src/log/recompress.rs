//! Recompression of produced batches, for topics whose `compression.type` names a codec
//! (Kafka's LogValidator does the same): a batch the producer compressed with another
//! codec is stored in the topic's.
//!
//! Only the records section changes. In RecordBatch v2 the records are the same bytes
//! whatever the codec, so the batch keeps its header (base offset, producer id, epoch,
//! base sequence, timestamps, transactional flag, record count) and only its length,
//! codec bits and CRC are rewritten. Idempotent producers see no difference: the
//! sequences the broker checks are the header's.
//!
//! Bounds, since the input is a client's:
//! - inflating is charged to the [`Budget`] the caller passes (a fresh one of
//!   [`records::MAX_INFLATED_BYTES`] per partition and request, as [`super::prepare`]'s
//!   walk has), so a decompression bomb ends in [`BatchError::Inflated`];
//! - the inflated records are streamed into the compressor, never held whole; what is
//!   held is the output, and that stops growing past `max.message.bytes`: a batch that
//!   recompresses larger is refused with [`BatchError::TooLarge`] (MESSAGE_TOO_LARGE), as
//!   Kafka refuses it;
//! - so a request's output is at most what it inflates (plus codec framing), within the
//!   budget, and the caller runs it under the heavy-decode permit (a few at a time);
//! - setting up a compressor costs time and memory whatever the batch's size, so each
//!   batch rewritten is also charged [`BATCH_SETUP_COST`] bytes of the budget: a request
//!   of many tiny batches stops in [`BatchError::Inflated`] after at most
//!   `budget / BATCH_SETUP_COST` compressor setups;
//! - zstd sizes its window and tables for the level unless told the input's size (level
//!   22: hundreds of MiB and most of a second for a 60-byte batch). Each batch's
//!   inflated size, measured by the prepare walk, is pledged to it, which shrinks both
//!   to the batch (and writes the size into the frame header); one compression context
//!   serves all the batches of a request.

use std::cell::Cell;
use std::io::{self, Write};

use super::Prepared;
use super::format::{self, BATCH_HEADER_LEN, BatchError, Codec, LOG_OVERHEAD};
use super::records::{self, Budget, RecordError};

/// Budget bytes charged per batch rewritten, for the compressor's setup: 64 KiB, so the
/// full produce budget (256 MiB) allows 4096 rewritten batches per partition and request.
pub const BATCH_SETUP_COST: u64 = 64 * 1024;

/// The codec (and level) a topic stores produced batches in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recompression {
    pub codec: Codec,
    /// compression.gzip.level, .lz4.level or .zstd.level; -1 for gzip is its default.
    /// Unused for `uncompressed` and snappy.
    pub level: i32,
}

impl Recompression {
    /// Whether any batch of `prepared` is in another codec.
    pub fn needed_for(&self, prepared: &Prepared) -> bool {
        prepared
            .batches()
            .any(|batch| format::codec(batch) != Ok(self.codec))
    }
}

/// Rewrites every batch of `prepared` in another codec into `target`'s; batches already
/// in it are copied as they are.
pub fn recompress(
    prepared: Prepared,
    target: Recompression,
    max_message_bytes: usize,
    budget: &mut Budget,
) -> Result<Prepared, BatchError> {
    let mut buf = Vec::with_capacity(prepared.buf.len());
    let mut headers = Vec::with_capacity(prepared.headers.len());
    let mut zstd = None;
    for (index, (batch, header)) in prepared.batches().zip(&prepared.headers).enumerate() {
        let mut header = *header;
        if format::codec(batch) == Ok(target.codec) {
            buf.extend_from_slice(batch);
        } else {
            budget.charge(BATCH_SETUP_COST)?;
            let compressor = Compressor {
                target,
                inflated: prepared.inflated.get(index).copied(),
                zstd: &mut zstd,
            };
            let start = buf.len();
            rewrite(batch, compressor, max_message_bytes, budget, &mut buf)?;
            header.size = buf.len() - start;
            header.attributes = i16::from_be_bytes([buf[start + 21], buf[start + 22]]);
        }
        headers.push(header);
    }
    Ok(Prepared {
        buf,
        headers,
        records: prepared.records,
        inflated: prepared.inflated,
    })
}

/// What compresses one batch.
struct Compressor<'a> {
    target: Recompression,
    /// The batch's records inflated, when the prepare walk measured them.
    inflated: Option<u64>,
    /// The request's zstd context, made at the first zstd batch.
    zstd: &'a mut Option<zstd::zstd_safe::CCtx<'static>>,
}

/// Appends `batch` recompressed to `out`.
fn rewrite(
    batch: &[u8],
    compressor: Compressor<'_>,
    max_message_bytes: usize,
    budget: &mut Budget,
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let mut compressed = Vec::new();
    // Past max.message.bytes, the size the batch would have had when the output stopped.
    let overflow = Cell::new(None);
    let sink = Bounded {
        out: &mut compressed,
        room: max_message_bytes.saturating_sub(BATCH_HEADER_LEN),
        overflow: &overflow,
    };
    let target = compressor.target;
    let result = compress(batch, compressor, sink, budget);
    if let Some(size) = overflow.get() {
        return Err(BatchError::TooLarge {
            size: BATCH_HEADER_LEN + size,
            max: max_message_bytes,
        });
    }
    match result {
        Ok(()) => {}
        Err(Failure::Records(e)) => return Err(e.into()),
        Err(Failure::Output(e)) => {
            return Err(BatchError::Decompress(format!(
                "recompressing to {} failed: {e}",
                target.codec.name()
            )));
        }
    }
    let size = BATCH_HEADER_LEN + compressed.len();
    let length = i32::try_from(size - LOG_OVERHEAD).map_err(|_| BatchError::TooLarge {
        size,
        max: max_message_bytes,
    })?;
    let start = out.len();
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(&compressed);
    let rewritten = &mut out[start..];
    rewritten[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([rewritten[21], rewritten[22]]);
    let attributes = (attributes & !0x07) | codec_bits(target.codec);
    rewritten[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&rewritten[21..]);
    rewritten[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn codec_bits(codec: Codec) -> i16 {
    match codec {
        Codec::None => 0,
        Codec::Gzip => 1,
        Codec::Snappy => 2,
        Codec::Lz4 => 3,
        Codec::Zstd => 4,
    }
}

enum Failure {
    Records(RecordError),
    Output(io::Error),
}

/// Streams `batch`'s inflated records through `target`'s compressor into `sink`.
fn compress(
    batch: &[u8],
    compressor: Compressor<'_>,
    sink: Bounded<'_>,
    budget: &mut Budget,
) -> Result<(), Failure> {
    let target = compressor.target;
    match target.codec {
        Codec::None => {
            let mut sink = sink;
            records::inflate_into(batch, budget, &mut sink).map_err(Failure::Records)?;
        }
        Codec::Gzip => {
            // -1, gzip's default in Kafka, is level 6.
            let level = u32::try_from(target.level).unwrap_or(6);
            let mut encoder = flate2::write::GzEncoder::new(sink, flate2::Compression::new(level));
            records::inflate_into(batch, budget, &mut encoder).map_err(Failure::Records)?;
            encoder.finish().map_err(Failure::Output)?;
        }
        Codec::Snappy => {
            let mut encoder = SnappyFramed::new(sink).map_err(Failure::Output)?;
            records::inflate_into(batch, budget, &mut encoder).map_err(Failure::Records)?;
            encoder.finish().map_err(Failure::Output)?;
        }
        Codec::Lz4 => {
            // As Kafka's own lz4 writer: 64 KiB independent blocks, no checksums.
            let mut encoder = lz4::EncoderBuilder::new()
                .level(u32::try_from(target.level).unwrap_or(9))
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
                .build(sink)
                .map_err(Failure::Output)?;
            records::inflate_into(batch, budget, &mut encoder).map_err(Failure::Records)?;
            let (_, finished) = encoder.finish();
            finished.map_err(Failure::Output)?;
        }
        Codec::Zstd => {
            let context = match compressor.zstd {
                Some(context) => context,
                empty => {
                    let mut context = zstd::zstd_safe::CCtx::try_create().ok_or_else(|| {
                        Failure::Output(io::Error::other("no memory for a zstd context"))
                    })?;
                    context
                        .set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(target.level))
                        .map_err(|code| Failure::Output(zstd_error(code)))?;
                    empty.insert(context)
                }
            };
            // The context keeps its parameters; its previous frame, if unfinished, is
            // dropped by the session reset `with_context` does.
            let mut encoder = zstd::stream::write::Encoder::with_context(sink, context);
            encoder
                .set_pledged_src_size(compressor.inflated)
                .map_err(Failure::Output)?;
            records::inflate_into(batch, budget, &mut encoder).map_err(Failure::Records)?;
            encoder.finish().map_err(Failure::Output)?;
        }
    }
    Ok(())
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(zstd::zstd_safe::get_error_name(code))
}

/// A `Vec` that refuses to grow past `room` bytes, noting in `overflow` the size it
/// would have reached.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    room: usize,
    overflow: &'a Cell<Option<usize>>,
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > self.room {
            self.overflow.set(Some(self.out.len() + buf.len()));
            return Err(io::Error::other(
                "the recompressed batch exceeds max.message.bytes",
            ));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Kafka's snappy framing (snappy-java's, which every Kafka client reads): a 16-byte
/// header (magic, version 1, compatible version 1), then blocks of a 4-byte big-endian
/// length and a raw snappy block of at most 32 KiB of input.
struct SnappyFramed<'a> {
    out: Bounded<'a>,
    pending: Vec<u8>,
    encoder: snap::raw::Encoder,
}

const SNAPPY_BLOCK: usize = 32 * 1024;

impl<'a> SnappyFramed<'a> {
    fn new(mut out: Bounded<'a>) -> io::Result<SnappyFramed<'a>> {
        out.write_all(b"\x82SNAPPY\x00")?;
        out.write_all(&1i32.to_be_bytes())?;
        out.write_all(&1i32.to_be_bytes())?;
        Ok(SnappyFramed {
            out,
            pending: Vec::with_capacity(SNAPPY_BLOCK),
            encoder: snap::raw::Encoder::new(),
        })
    }

    fn block(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let block = self
            .encoder
            .compress_vec(&self.pending)
            .map_err(io::Error::other)?;
        self.pending.clear();
        let length = u32::try_from(block.len()).map_err(io::Error::other)?;
        self.out.write_all(&length.to_be_bytes())?;
        self.out.write_all(&block)
    }

    fn finish(mut self) -> io::Result<()> {
        self.block()
    }
}

impl Write for SnappyFramed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(SNAPPY_BLOCK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == SNAPPY_BLOCK {
            self.block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
