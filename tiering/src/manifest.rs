//! Partition manifests: what exists in the remote tier, byte by byte. Format version 3
//! (version 1 and 2 documents still parse: see the segment entry).
//!
//! A partition's manifest is a tree whose root lives in the metadata store (etcd or the
//! embedded store) and whose older parts are immutable objects in the bucket:
//!
//! - the **root** holds the remote log start offset, the epoch of the last leader that
//!   committed, byte and segment totals, the newest segment entries (the *tail*, at most
//!   `tail_entries`) and references to *spill objects* for everything older;
//! - a **level-0 spill object** holds segment entries; a **level-L spill object** (L ≥ 1)
//!   holds references to `fanout` level-(L-1) objects.
//!
//! When the tail outgrows `tail_entries`, its older half is written as a level-0 object
//! and replaced by a reference; when the root holds more than `fanout` references of one
//! level, the oldest `fanout` of them are written as one object a level up. References in
//! the root are ordered oldest first with non-increasing levels, so what the metadata store
//! holds per partition is at most `tail_entries + fanout × levels`, and levels grow with
//! the logarithm of history: with the defaults (100, 16) a 1 GiB-segment partition holding
//! an exabyte of history has 5 levels and a root of at most about 10 KiB.
//!
//! Reads find an offset by binary search in the tail, then by descending references,
//! one GET per level (spill objects are cached by id, and immutable). Nothing ever LISTs.
//!
//! All integers are big-endian. Every document starts with the same header and ends with
//! a CRC-32C of everything before it:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SMAN` |
//! | 4 | 1 | format version: 3 (1 and 2 are still read) |
//! | 5 | 1 | kind: 0 root, 1 segment list (level-0 spill), 2 reference list (level ≥ 1) |
//! | 6 | .. | body, by kind |
//! | end-4 | 4 | CRC-32C of bytes 0..end-4 |
//!
//! Root body:
//!
//! | size | field |
//! |---|---|
//! | 4 | leader epoch of the last commit (i32) |
//! | 8 | remote log start offset: records below it are deleted (i64) |
//! | 8 | bytes of record batches in live segments (u64) |
//! | 8 | live segments (u64) |
//! | 4 | reference count R (u32), then R references |
//! | 4 | tail entry count T (u32), then T segment entries |
//!
//! Segment-list body: `count: u32`, then segment entries. Reference-list body: `level: u8`
//! (of the referenced objects), `count: u32`, then references.
//!
//! Segment entry (76 bytes; 72 in version 2, which has no transaction index field; 68 in
//! version 1, which has no producer snapshot field either). The object is `log_bytes` of
//! record batches exactly as the local `.log` file holds them, then the offset index,
//! then the time index (both in the local index formats, header included), then the
//! idempotent producers' state as of the segment's end (the broker's `producers.snapshot`
//! format; empty when no idempotent producer wrote before it), then the aborted
//! transactions whose records overlap the segment (the broker's `.txnindex` format; empty
//! when none did), so a read_committed read of the segment needs nothing else:
//!
//! | size | field |
//! |---|---|
//! | 8 | base offset |
//! | 8 | end offset (one past the last record) |
//! | 8 | log bytes |
//! | 4 | offset index bytes |
//! | 4 | time index bytes |
//! | 8 | max timestamp (-1 if none) |
//! | 4 | leader epoch that uploaded it |
//! | 16 | object id (UUID; the key is derived from it, see [`crate::keys`]) |
//! | 8 | upload time, ms since the epoch |
//! | 4 | producer snapshot bytes (version 2 and later) |
//! | 4 | transaction index bytes (version 3 and later) |
//!
//! Reference (69 bytes):
//!
//! | size | field |
//! |---|---|
//! | 1 | level of the referenced object |
//! | 8 | first offset covered (base offset of its first segment) |
//! | 8 | end offset covered |
//! | 8 | segments under it |
//! | 8 | log bytes under it |
//! | 8 | max timestamp under it |
//! | 16 | object id |
//! | 12 | zero (reserved) |

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

pub const FORMAT_VERSION: u8 = 3;
/// The oldest format version this broker reads.
const OLDEST_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"SMAN";
const KIND_ROOT: u8 = 0;
const KIND_SEGMENTS: u8 = 1;
const KIND_REFS: u8 = 2;
const SEGMENT_ENTRY_LEN: usize = 76;
const SEGMENT_ENTRY_LEN_V2: usize = 72;
const SEGMENT_ENTRY_LEN_V1: usize = 68;

fn entry_len(version: u8) -> usize {
    match version {
        1 => SEGMENT_ENTRY_LEN_V1,
        2 => SEGMENT_ENTRY_LEN_V2,
        _ => SEGMENT_ENTRY_LEN,
    }
}
const REF_LEN: usize = 69;

/// One uploaded segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentEntry {
    pub base_offset: i64,
    pub end_offset: i64,
    pub log_bytes: u64,
    pub offset_index_bytes: u32,
    pub time_index_bytes: u32,
    pub max_timestamp: i64,
    pub leader_epoch: i32,
    pub object_id: Uuid,
    pub uploaded_ms: i64,
    /// Bytes of the producer snapshot after the time index (0: none).
    pub producer_snapshot_bytes: u32,
    /// Bytes of the aborted-transaction index at the end of the object (0: none).
    pub txn_index_bytes: u32,
}

impl SegmentEntry {
    pub fn object_size(&self) -> u64 {
        self.log_bytes
            + u64::from(self.offset_index_bytes)
            + u64::from(self.time_index_bytes)
            + u64::from(self.producer_snapshot_bytes)
            + u64::from(self.txn_index_bytes)
    }

    pub fn offset_index_range(&self) -> std::ops::Range<u64> {
        self.log_bytes..self.log_bytes + u64::from(self.offset_index_bytes)
    }

    pub fn time_index_range(&self) -> std::ops::Range<u64> {
        let start = self.offset_index_range().end;
        start..start + u64::from(self.time_index_bytes)
    }

    pub fn producer_snapshot_range(&self) -> std::ops::Range<u64> {
        let start = self.time_index_range().end;
        start..start + u64::from(self.producer_snapshot_bytes)
    }

    pub fn txn_index_range(&self) -> std::ops::Range<u64> {
        let start = self.producer_snapshot_range().end;
        start..start + u64::from(self.txn_index_bytes)
    }
}

/// A spill object and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpillRef {
    pub level: u8,
    pub first_offset: i64,
    pub end_offset: i64,
    pub segments: u64,
    pub log_bytes: u64,
    pub max_timestamp: i64,
    pub object_id: Uuid,
}

/// The root, as the metadata store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Root {
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    pub live_bytes: u64,
    pub live_segments: u64,
    pub refs: Vec<SpillRef>,
    pub tail: Vec<SegmentEntry>,
}

impl Root {
    /// One past the last remote offset; `None` when nothing was ever uploaded.
    pub fn end_offset(&self) -> Option<i64> {
        self.tail
            .last()
            .map(|e| e.end_offset)
            .or_else(|| self.refs.last().map(|r| r.end_offset))
    }

    /// Whether any record at or past the start is held remotely.
    pub fn is_empty(&self) -> bool {
        self.end_offset()
            .is_none_or(|end| end <= self.log_start_offset)
    }
}

/// A decoded spill object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spill {
    Segments(Vec<SegmentEntry>),
    Refs { level: u8, refs: Vec<SpillRef> },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("manifest is truncated")]
    Truncated,
    #[error("manifest has bad magic")]
    Magic,
    #[error("manifest format version {0} is not one this broker understands (1, 2 or 3)")]
    Version(u8),
    #[error("manifest checksum mismatch")]
    Crc,
    #[error("manifest kind {0} is not what was expected here")]
    Kind(u8),
}

fn put_entry(buf: &mut BytesMut, e: &SegmentEntry) {
    buf.put_i64(e.base_offset);
    buf.put_i64(e.end_offset);
    buf.put_u64(e.log_bytes);
    buf.put_u32(e.offset_index_bytes);
    buf.put_u32(e.time_index_bytes);
    buf.put_i64(e.max_timestamp);
    buf.put_i32(e.leader_epoch);
    buf.put_slice(e.object_id.as_bytes());
    buf.put_i64(e.uploaded_ms);
    buf.put_u32(e.producer_snapshot_bytes);
    buf.put_u32(e.txn_index_bytes);
}

fn get_uuid(buf: &mut &[u8]) -> Uuid {
    let mut id = [0u8; 16];
    buf.copy_to_slice(&mut id);
    Uuid::from_bytes(id)
}

fn get_entry(buf: &mut &[u8], version: u8) -> Result<SegmentEntry, FormatError> {
    if buf.remaining() < entry_len(version) {
        return Err(FormatError::Truncated);
    }
    let mut entry = SegmentEntry {
        base_offset: buf.get_i64(),
        end_offset: buf.get_i64(),
        log_bytes: buf.get_u64(),
        offset_index_bytes: buf.get_u32(),
        time_index_bytes: buf.get_u32(),
        max_timestamp: buf.get_i64(),
        leader_epoch: buf.get_i32(),
        object_id: get_uuid(buf),
        uploaded_ms: buf.get_i64(),
        producer_snapshot_bytes: 0,
        txn_index_bytes: 0,
    };
    if version >= 2 {
        entry.producer_snapshot_bytes = buf.get_u32();
    }
    if version >= 3 {
        entry.txn_index_bytes = buf.get_u32();
    }
    Ok(entry)
}

fn put_ref(buf: &mut BytesMut, r: &SpillRef) {
    buf.put_u8(r.level);
    buf.put_i64(r.first_offset);
    buf.put_i64(r.end_offset);
    buf.put_u64(r.segments);
    buf.put_u64(r.log_bytes);
    buf.put_i64(r.max_timestamp);
    buf.put_slice(r.object_id.as_bytes());
    buf.put_bytes(0, 12);
}

fn get_ref(buf: &mut &[u8]) -> Result<SpillRef, FormatError> {
    if buf.remaining() < REF_LEN {
        return Err(FormatError::Truncated);
    }
    let r = SpillRef {
        level: buf.get_u8(),
        first_offset: buf.get_i64(),
        end_offset: buf.get_i64(),
        segments: buf.get_u64(),
        log_bytes: buf.get_u64(),
        max_timestamp: buf.get_i64(),
        object_id: get_uuid(buf),
    };
    buf.advance(12);
    Ok(r)
}

fn get_count(buf: &mut &[u8], item_len: usize) -> Result<usize, FormatError> {
    if buf.remaining() < 4 {
        return Err(FormatError::Truncated);
    }
    let count = buf.get_u32() as usize;
    // Checked before allocating: a corrupt count cannot ask for more than the bytes hold.
    if count.saturating_mul(item_len) > buf.remaining() {
        return Err(FormatError::Truncated);
    }
    Ok(count)
}

fn header(kind: u8) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_slice(MAGIC);
    buf.put_u8(FORMAT_VERSION);
    buf.put_u8(kind);
    buf
}

fn seal(mut buf: BytesMut) -> Bytes {
    let crc = crc32c::crc32c(&buf);
    buf.put_u32(crc);
    buf.freeze()
}

/// Checks header and CRC; returns (version, kind, body).
fn open(bytes: &[u8]) -> Result<(u8, u8, &[u8]), FormatError> {
    if bytes.len() < 10 {
        return Err(FormatError::Truncated);
    }
    if &bytes[..4] != MAGIC {
        return Err(FormatError::Magic);
    }
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&bytes[4]) {
        return Err(FormatError::Version(bytes[4]));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(FormatError::Crc);
    }
    Ok((bytes[4], bytes[5], &body[6..]))
}

impl Root {
    pub fn encode(&self) -> Bytes {
        let mut buf = header(KIND_ROOT);
        buf.put_i32(self.leader_epoch);
        buf.put_i64(self.log_start_offset);
        buf.put_u64(self.live_bytes);
        buf.put_u64(self.live_segments);
        buf.put_u32(self.refs.len() as u32);
        self.refs.iter().for_each(|r| put_ref(&mut buf, r));
        buf.put_u32(self.tail.len() as u32);
        self.tail.iter().for_each(|e| put_entry(&mut buf, e));
        seal(buf)
    }

    pub fn decode(bytes: &[u8]) -> Result<Root, FormatError> {
        let (version, kind, mut body) = open(bytes)?;
        if kind != KIND_ROOT {
            return Err(FormatError::Kind(kind));
        }
        if body.remaining() < 28 {
            return Err(FormatError::Truncated);
        }
        let leader_epoch = body.get_i32();
        let log_start_offset = body.get_i64();
        let live_bytes = body.get_u64();
        let live_segments = body.get_u64();
        let n = get_count(&mut body, REF_LEN)?;
        let refs = (0..n)
            .map(|_| get_ref(&mut body))
            .collect::<Result<_, _>>()?;
        let n = get_count(&mut body, entry_len(version))?;
        let tail = (0..n)
            .map(|_| get_entry(&mut body, version))
            .collect::<Result<_, _>>()?;
        Ok(Root {
            leader_epoch,
            log_start_offset,
            live_bytes,
            live_segments,
            refs,
            tail,
        })
    }
}

impl Spill {
    pub fn encode(&self) -> Bytes {
        match self {
            Spill::Segments(entries) => {
                let mut buf = header(KIND_SEGMENTS);
                buf.put_u32(entries.len() as u32);
                entries.iter().for_each(|e| put_entry(&mut buf, e));
                seal(buf)
            }
            Spill::Refs { level, refs } => {
                let mut buf = header(KIND_REFS);
                buf.put_u8(*level);
                buf.put_u32(refs.len() as u32);
                refs.iter().for_each(|r| put_ref(&mut buf, r));
                seal(buf)
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Spill, FormatError> {
        let (version, kind, mut body) = open(bytes)?;
        match kind {
            KIND_SEGMENTS => {
                let n = get_count(&mut body, entry_len(version))?;
                let entries = (0..n)
                    .map(|_| get_entry(&mut body, version))
                    .collect::<Result<_, _>>()?;
                Ok(Spill::Segments(entries))
            }
            KIND_REFS => {
                if body.remaining() < 1 {
                    return Err(FormatError::Truncated);
                }
                let level = body.get_u8();
                let n = get_count(&mut body, REF_LEN)?;
                let refs = (0..n)
                    .map(|_| get_ref(&mut body))
                    .collect::<Result<_, _>>()?;
                Ok(Spill::Refs { level, refs })
            }
            other => Err(FormatError::Kind(other)),
        }
    }
}

/// Summarizes `entries` (non-empty, in order) as a level-0 reference.
pub fn ref_for_segments(entries: &[SegmentEntry], object_id: Uuid) -> SpillRef {
    SpillRef {
        level: 0,
        first_offset: entries.first().map_or(0, |e| e.base_offset),
        end_offset: entries.last().map_or(0, |e| e.end_offset),
        segments: entries.len() as u64,
        log_bytes: entries.iter().map(|e| e.log_bytes).sum(),
        max_timestamp: entries.iter().map(|e| e.max_timestamp).max().unwrap_or(-1),
        object_id,
    }
}

/// Summarizes `refs` (non-empty, one level, in order) as a reference one level up.
pub fn ref_for_refs(refs: &[SpillRef], object_id: Uuid) -> SpillRef {
    SpillRef {
        level: refs.first().map_or(0, |r| r.level) + 1,
        first_offset: refs.first().map_or(0, |r| r.first_offset),
        end_offset: refs.last().map_or(0, |r| r.end_offset),
        segments: refs.iter().map(|r| r.segments).sum(),
        log_bytes: refs.iter().map(|r| r.log_bytes).sum(),
        max_timestamp: refs.iter().map(|r| r.max_timestamp).max().unwrap_or(-1),
        object_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(base: i64, end: i64) -> SegmentEntry {
        SegmentEntry {
            base_offset: base,
            end_offset: end,
            log_bytes: 1000,
            offset_index_bytes: 16,
            time_index_bytes: 20,
            max_timestamp: base.wrapping_mul(10),
            leader_epoch: 3,
            object_id: Uuid::from_u128(base as u128),
            uploaded_ms: 1_700_000_000_000,
            producer_snapshot_bytes: 0,
            txn_index_bytes: 0,
        }
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// A root and a spill object as format version 1 wrote them (68-byte entries, no
    /// producer snapshot): they must always parse.
    #[test]
    fn v1_documents_are_parsed() {
        let root = Root {
            leader_epoch: 2,
            log_start_offset: 5,
            live_bytes: 2000,
            live_segments: 2,
            refs: vec![ref_for_segments(&[entry(0, 10)], Uuid::from_u128(99))],
            tail: vec![entry(10, 20)],
        };
        let v1 = unhex(V1_ROOT);
        assert_eq!(&v1[..6], b"SMAN\x01\x00");
        assert_eq!(Root::decode(&v1), Ok(root));
        let v1 = unhex(V1_SPILL);
        assert_eq!(Spill::decode(&v1), Ok(Spill::Segments(vec![entry(0, 10)])));
    }

    const V1_ROOT: &str = "534d414e010000000002000000000000000500000000000007d0000000000000000200000001000000000000000000000000000000000a000000000000000100000000000003e800000000000000000000000000000000000000000000006300000000000000000000000000000001000000000000000a000000000000001400000000000003e800000010000000140000000000000064000000030000000000000000000000000000000a0000018bcfe56800f71f078d";
    const V1_SPILL: &str = "534d414e0101000000010000000000000000000000000000000a00000000000003e80000001000000014000000000000000000000003000000000000000000000000000000000000018bcfe568007f21243f";

    /// A root and a spill object as format version 2 wrote them (72-byte entries, no
    /// transaction index): they must always parse.
    #[test]
    fn v2_documents_are_parsed() {
        let root = Root {
            leader_epoch: 2,
            log_start_offset: 5,
            live_bytes: 2000,
            live_segments: 2,
            refs: vec![ref_for_segments(&[entry(0, 10)], Uuid::from_u128(99))],
            tail: vec![entry(10, 20)],
        };
        let v2 = unhex(V2_ROOT);
        assert_eq!(&v2[..6], b"SMAN\x02\x00");
        assert_eq!(Root::decode(&v2), Ok(root));
        let v2 = unhex(V2_SPILL);
        assert_eq!(Spill::decode(&v2), Ok(Spill::Segments(vec![entry(0, 10)])));
    }

    const V2_ROOT: &str = "534d414e020000000002000000000000000500000000000007d0000000000000000200000001000000000000000000000000000000000a000000000000000100000000000003e800000000000000000000000000000000000000000000006300000000000000000000000000000001000000000000000a000000000000001400000000000003e800000010000000140000000000000064000000030000000000000000000000000000000a0000018bcfe5680000000000782a9d3d";
    const V2_SPILL: &str = "534d414e0201000000010000000000000000000000000000000a00000000000003e80000001000000014000000000000000000000003000000000000000000000000000000000000018bcfe56800000000006719a760";

    /// Bytes written by format version 3; they must always parse to the same root.
    #[test]
    fn v3_root_is_parsed() {
        let root = Root {
            leader_epoch: 2,
            log_start_offset: 5,
            live_bytes: 2000,
            live_segments: 2,
            refs: vec![ref_for_segments(&[entry(0, 10)], Uuid::from_u128(99))],
            tail: vec![entry(10, 20)],
        };
        let bytes = root.encode();
        assert_eq!(&bytes[..6], b"SMAN\x03\x00");
        assert_eq!(
            bytes.len(),
            6 + 28 + 4 + REF_LEN + 4 + SEGMENT_ENTRY_LEN + 4
        );
        let v3: &[u8] = &[
            b'S', b'M', b'A', b'N', 3, 0, // header
            0, 0, 0, 2, // leader epoch
            0, 0, 0, 0, 0, 0, 0, 5, // log start
            0, 0, 0, 0, 0, 0, 0x07, 0xd0, // live bytes
            0, 0, 0, 0, 0, 0, 0, 2, // live segments
        ];
        assert_eq!(&bytes[..v3.len()], v3);
        assert_eq!(Root::decode(&bytes), Ok(root));
    }

    #[test]
    fn damage_is_detected() {
        let bytes = Root::default().encode();
        let mut bad = bytes.to_vec();
        bad[8] ^= 1;
        assert_eq!(Root::decode(&bad), Err(FormatError::Crc));
        let mut newer = bytes.to_vec();
        newer[4] = 4;
        assert_eq!(Root::decode(&newer), Err(FormatError::Version(4)));
        assert_eq!(Root::decode(&bytes[..5]), Err(FormatError::Truncated));
        let spill = Spill::Segments(vec![entry(0, 1)]).encode();
        assert_eq!(Root::decode(&spill), Err(FormatError::Kind(KIND_SEGMENTS)));
    }

    proptest! {
        #[test]
        fn spills_round_trip(n in 0usize..50, level in 0u8..4, seed in any::<i64>()) {
            let entries: Vec<_> = (0..n as i64).map(|i| entry(seed.wrapping_add(i * 10), seed.wrapping_add(i * 10 + 10))).collect();
            let spill = Spill::Segments(entries.clone());
            prop_assert_eq!(Spill::decode(&spill.encode()), Ok(spill));
            let refs: Vec<_> = entries.chunks(3).map(|c| SpillRef { level, ..ref_for_segments(c, Uuid::from_u128(7)) }).collect();
            let spill = Spill::Refs { level, refs };
            prop_assert_eq!(Spill::decode(&spill.encode()), Ok(spill));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Root::decode(&bytes);
            let _ = Spill::decode(&bytes);
        }
    }
}
