//! The leader-epoch cache: where each leader epoch starts in the log (KIP-101, KIP-279).
//!
//! A follower asks "where does my last epoch end in your log?" and truncates to the answer,
//! so replicas never keep records a deposed leader wrote past what the new leader has.
//! Entries are `(epoch, start_offset)` in increasing order of both; an epoch ends where the
//! next one starts, and the last one at the log end.
//!
//! File `leader-epoch.checkpoint`, rewritten atomically on every change (leadership
//! changes are rare, so this costs one small write per change):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SLEP` |
//! | 2 | version (1), big-endian |
//! | 4 | entry count n, big-endian |
//! | 12 × n | entries: epoch (i32) then start offset (i64), big-endian |
//! | 4 | CRC32C of everything before it |

use std::io;
use std::path::Path;

use bytes::{Buf, BufMut};

pub const EPOCHS_FILE: &str = "leader-epoch.checkpoint";
const MAGIC: &[u8; 4] = b"SLEP";
const VERSION: u16 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochs {
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The epoch of the last batch in the log, -1 for a log no leader ever wrote to.
    pub fn latest_epoch(&self) -> i32 {
        self.entries.last().map_or(-1, |e| e.0)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether anything changed: an
    /// epoch not newer than the latest one is ignored.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.entries.last().is_some_and(|&(e, _)| e >= epoch) {
            return false;
        }
        self.entries.push((epoch, start_offset));
        true
    }

    /// The largest epoch not after `epoch`, and where it ends in a log ending at
    /// `log_end_offset`. When every epoch in the log is newer, `epoch` itself "ends"
    /// where the first one starts (as Kafka answers OffsetForLeaderEpoch): a follower
    /// whose records are all older than the leader's first epoch agrees with it up to
    /// there. `None` only if the log has no epochs.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return self.entries.first().map(|&(_, start)| (epoch, start));
        }
        let found = self.entries[i - 1].0;
        let end = self.entries.get(i).map_or(log_end_offset, |&(_, s)| s);
        Some((found, end))
    }

    /// Drops epochs that start at or after `end` (the log was truncated to `end`).
    pub fn truncate_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < end);
        self.entries.len() != before
    }

    /// Forgets everything (the log restarts empty at a new offset).
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + 12 * self.entries.len());
        out.put_slice(MAGIC);
        out.put_u16(VERSION);
        out.put_u32(self.entries.len() as u32);
        for &(epoch, start) in &self.entries {
            out.put_i32(epoch);
            out.put_i64(start);
        }
        let crc = crc32c::crc32c(&out);
        out.put_u32(crc);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<LeaderEpochs> {
        if bytes.len() < 14 || &bytes[..4] != MAGIC {
            return None;
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut b = &body[4..];
        if b.get_u16() != VERSION {
            return None;
        }
        let count = b.get_u32() as usize;
        if b.remaining() != count.checked_mul(12)? {
            return None;
        }
        let entries = (0..count).map(|_| (b.get_i32(), b.get_i64())).collect();
        Some(LeaderEpochs { entries })
    }

    /// Reads the file in `dir`; `Ok(None)` if it does not exist or is damaged (the caller
    /// rebuilds it from the batches' headers).
    pub fn load(dir: &Path) -> io::Result<Option<LeaderEpochs>> {
        match std::fs::read(dir.join(EPOCHS_FILE)) {
            Ok(bytes) => Ok(LeaderEpochs::decode(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, dir: &Path) -> io::Result<()> {
        super::write_atomically(&dir.join(EPOCHS_FILE), &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochs {
        LeaderEpochs {
            entries: entries.to_vec(),
        }
    }

    #[test]
    fn an_epoch_ends_where_the_next_starts_and_the_last_at_the_log_end() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        // Older than every epoch here: it ends where the first one starts.
        assert_eq!(c.end_offset_for(0, 30), Some((0, 0)));
        assert_eq!(cache(&[(5, 40)]).end_offset_for(2, 60), Some((2, 40)));
        assert_eq!(cache(&[]).end_offset_for(2, 60), None);
        assert_eq!(c.end_offset_for(1, 30), Some((1, 10)));
        // Epoch 2 never wrote here: the answer is epoch 1's end.
        assert_eq!(c.end_offset_for(2, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 30), Some((3, 25)));
        assert_eq!(c.end_offset_for(4, 30), Some((4, 30)));
        assert_eq!(c.end_offset_for(9, 30), Some((4, 30)));
    }

    #[test]
    fn only_newer_epochs_are_assigned_and_truncation_drops_later_starts() {
        let mut c = LeaderEpochs::default();
        assert!(c.assign(2, 0));
        assert!(!c.assign(2, 5));
        assert!(!c.assign(1, 5));
        assert!(c.assign(5, 7));
        assert_eq!(c.latest_epoch(), 5);
        assert!(c.truncate_end(7));
        assert_eq!(c.entries(), &[(2, 0)]);
        assert!(!c.truncate_end(7));
    }

    #[test]
    fn the_file_layout_is_stable_and_damage_is_detected() {
        let c = cache(&[(1, 0), (3, 0x0102)]);
        let bytes = c.encode();
        let mut expected = b"SLEP\x00\x01\x00\x00\x00\x02".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&bytes[..bytes.len() - 4], &expected[..]);
        assert_eq!(LeaderEpochs::decode(&bytes), Some(c));
        let mut torn = bytes.clone();
        torn[12] ^= 1;
        assert_eq!(LeaderEpochs::decode(&torn), None);
        assert_eq!(LeaderEpochs::decode(&bytes[..10]), None);
    }
}
