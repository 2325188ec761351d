//! What replication needs from the log: the leader-epoch cache, appends of batches a
//! leader already placed, truncation to where a new leader's log agrees, and restarting
//! an empty log at an offset (a replica that joins with nothing, or fell below the
//! leader's local log start).
//!
//! Truncation and restart rewrite the tail on disk and then reopen the log, so the
//! indexes, producer state and recovery point are rebuilt by the same code that recovers
//! a crashed broker rather than patched in memory.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use super::epochs::{EPOCHS_FILE, LeaderEpochs};
use super::format::{self, BatchError, BatchHeader};
use super::segment::Segment;
use super::{AppendInfo, CHECKPOINT_FILE, Log, LogError, PRODUCERS_FILE, Prepared, cleaner};

/// Validates batches a leader sent (CRC and framing only: see
/// [`format::validate_replica_batch`]) and copies them for [`Log::append_replica`].
pub fn prepare_replica(records: &[u8]) -> Result<Prepared, BatchError> {
    let mut headers = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let header = format::validate_replica_batch(&records[position..])?;
        position += header.size;
        headers.push(header);
    }
    let records_count = headers
        .iter()
        .map(|h| i64::from(h.last_offset_delta) + 1)
        .sum();
    Ok(Prepared {
        buf: records.to_vec(),
        headers,
        records: records_count,
        inflated: Vec::new(),
    })
}

/// Calls `f` with the byte position and header of every batch in `segment` from byte
/// `from`, until it returns false.
pub(super) fn for_each_header(
    segment: &Segment,
    from: u64,
    mut f: impl FnMut(u64, &BatchHeader) -> bool,
) -> io::Result<()> {
    let mut position = from;
    if position + format::BATCH_HEADER_LEN as u64 > segment.size {
        return Ok(());
    }
    let file = segment.log_file()?;
    while position + format::BATCH_HEADER_LEN as u64 <= segment.size {
        let mut header = [0u8; format::BATCH_HEADER_LEN];
        file.read_exact_at(&mut header, position)?;
        let h = format::parse_validated_header(&header);
        if h.size < format::BATCH_HEADER_LEN || !f(position, &h) {
            break;
        }
        position += h.size as u64;
    }
    Ok(())
}

/// Removes `dir/name` if present and fsyncs `dir`, so a crash cannot bring it back.
fn remove_durably(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => fs::File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Log {
    /// The epoch of the last batch written, -1 if none.
    pub fn latest_epoch(&self) -> i32 {
        self.epochs.latest_epoch()
    }

    /// Where `epoch` (or the largest epoch before it) ends in this log; see
    /// [`LeaderEpochs::end_offset_for`].
    pub fn epoch_end_offset(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Records that `epoch` starts at `start_offset` (a leader taking over, or the first
    /// batch of a new epoch); persisted before it is relied on.
    pub fn assign_epoch(&mut self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        if self.epochs.assign(epoch, start_offset) {
            let no_records = self.segments.len() == 1 && self.active().size == 0;
            // Deferring is safe only with no file: a crash then rebuilds the cache from
            // the batches' headers. A file left from earlier epochs would be loaded
            // instead and credit this epoch's records to an older one.
            if no_records
                && self.epochs.entries().len() == 1
                && !self.dir.join(EPOCHS_FILE).exists()
            {
                // See `Log::epochs_unsaved`: written with the next checkpoint.
                self.epochs_unsaved = true;
            } else {
                self.epochs.save(&self.dir).map_err(|e| self.io_err(e))?;
                self.epochs_unsaved = false;
            }
        }
        Ok(())
    }

    /// Loads the epoch cache, or rebuilds it from the batches' headers when the file is
    /// missing or damaged, and drops epochs past the (recovered) log end.
    pub(super) fn recover_epochs(&mut self) -> io::Result<()> {
        let (mut epochs, mut changed) = match LeaderEpochs::load(&self.dir)? {
            Some(epochs) => (epochs, false),
            None => (self.scan_epochs()?, true),
        };
        changed |= epochs.truncate_end(self.log_end_offset());
        self.epochs = epochs;
        if changed && !self.epochs.entries().is_empty() {
            self.epochs.save(&self.dir)?;
        } else if changed {
            // Truncated to nothing: remove the file for good, so a first epoch's save
            // can be deferred (see `Log::epochs_unsaved`) and a crash rebuilds the
            // cache from the headers rather than loading these stale epochs.
            remove_durably(&self.dir, EPOCHS_FILE)?;
        }
        Ok(())
    }

    fn scan_epochs(&self) -> io::Result<LeaderEpochs> {
        let mut epochs = LeaderEpochs::default();
        for segment in self.segments.values() {
            for_each_header(segment, 0, |_, h| {
                epochs.assign(h.leader_epoch, h.base_offset);
                true
            })?;
        }
        if !epochs.entries().is_empty() {
            info!(dir = %self.dir.display(), epochs = epochs.entries().len(), "rebuilt the leader-epoch cache from the log");
        }
        Ok(epochs)
    }

    /// A follower's append: batches with the leader's offsets and epochs, which must start
    /// at this log's end. Sequences are not checked (the leader did that); producer state
    /// and the epoch cache follow the batches. A follower never rolls on its own (size or
    /// time): it rolls where the leader's segment `leader_segment_base` starts, so both
    /// logs have the same segment boundaries.
    pub fn append_replica(
        &mut self,
        prepared: Prepared,
        leader_segment_base: i64,
        now_ms: i64,
    ) -> Result<(AppendInfo, Option<Arc<File>>), LogError> {
        let Prepared {
            mut buf,
            mut headers,
            records,
            ..
        } = prepared;
        let Some(first) = headers.first() else {
            return Err(BatchError::Truncated(0).into());
        };
        let base_offset = first.base_offset;
        // A compacted leader log has gaps where the cleaner removed records.
        let gaps = self.config.compact;
        let mut expected = self.log_end_offset();
        for header in &headers {
            let fits = header.base_offset == expected || (gaps && header.base_offset > expected);
            if !fits {
                return Err(LogError::NotContiguous {
                    expected,
                    got: header.base_offset,
                });
            }
            expected = header.next_offset();
        }
        let active = self.active();
        if leader_segment_base > active.base_offset
            && leader_segment_base <= base_offset
            && active.size > 0
        {
            if gaps && leader_segment_base > self.log_end_offset() {
                // The leader's previous segment ends in a gap: ours ends there too.
                self.active_mut().next_offset = leader_segment_base;
            }
            self.roll(now_ms)?;
        }
        for header in &headers {
            self.assign_epoch(header.leader_epoch, header.base_offset)?;
        }
        let next_offset = self.write_batches(&mut buf, &mut headers, None, now_ms)?;
        let sync = self.after_append(&buf, &headers, records, now_ms)?;
        let info = AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            log_append_time: -1,
            records,
        };
        Ok((info, sync))
    }

    /// Removes every batch that ends at or after `offset` (whole batches: the log may end
    /// a little before `offset`). Returns the new log end. Truncating below the log start
    /// restarts the log empty at `offset`.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        if offset >= self.log_end_offset() {
            return Ok(self.log_end_offset());
        }
        self.fence_checkpoints();
        // Offsets from here on may be reused by other markers.
        self.markers_removable_since.retain(|&o, _| o < offset);
        if offset <= self.log_start_offset {
            self.reset_to(offset, None, now_ms)?;
            return Ok(offset);
        }
        self.discard_clean();
        let io_err = |log: &Log, e| log.io_err(e);
        let Some((&base, segment)) = self.segments.range(..=offset).next_back() else {
            self.reset_to(offset, None, now_ms)?;
            return Ok(offset);
        };
        // Whole batches: cut before the first batch that reaches `offset`.
        let mut cut = segment.size;
        let from = segment
            .lookup_position(offset)
            .map_err(|e| io_err(self, e))?;
        for_each_header(segment, from, |position, h| {
            if h.last_offset() >= offset {
                cut = position;
            }
            h.last_offset() < offset
        })
        .map_err(|e| io_err(self, e))?;
        let later: Vec<i64> = self.segments.range(base + 1..).map(|(&b, _)| b).collect();
        for b in later {
            if let Some(s) = self.segments.remove(&b) {
                s.delete_files().map_err(|e| io_err(self, e))?;
            }
        }
        // The removals are durable before the cut: a crash must not bring back later
        // segments after a hole.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(self, e))?;
        let active = self.segments.get(&base).expect("segment found above");
        // The segment may be sealed (its files are not held open for writing): the cut
        // goes through a handle of its own, and the reopen below starts from the disk.
        let cut_file = fs::OpenOptions::new()
            .write(true)
            .open(active.log_path())
            .map_err(|e| io_err(self, e))?;
        cut_file.set_len(cut).map_err(|e| io_err(self, e))?;
        cut_file.sync_all().map_err(|e| io_err(self, e))?;
        let _ = fs::remove_file(active.producers_path());
        warn!(dir = %self.dir.display(), offset, segment = base, "truncated the log to agree with the leader");
        self.reopen_from(base, now_ms)?;
        Ok(self.log_end_offset())
    }

    /// Drops the whole log and restarts it empty at `offset`, with `producers` (a
    /// producer snapshot as of `offset`, from the bucket) if given.
    pub fn reset_to(
        &mut self,
        offset: i64,
        producers: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), LogError> {
        self.fence_checkpoints();
        self.discard_clean();
        self.markers_removable_since.clear();
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            if let Some(s) = self.segments.remove(&base) {
                s.delete_files().map_err(|e| self.io_err(e))?;
            }
        }
        for file in [PRODUCERS_FILE, EPOCHS_FILE, cleaner::CHECKPOINT_FILE] {
            remove_durably(&self.dir, file).map_err(|e| self.io_err(e))?;
        }
        if let Some(snapshot) = producers {
            super::write_atomically(&self.dir.join(PRODUCERS_FILE), snapshot)
                .map_err(|e| self.io_err(e))?;
        }
        self.log_start_offset = offset;
        info!(dir = %self.dir.display(), offset, "restarted the log empty");
        self.reopen_from(offset, now_ms)
    }

    /// Points the checkpoint at the start of segment `base` (so start-up scans and
    /// re-indexes it) and reopens the log from disk.
    ///
    /// Producer state is replayed from the older of the checkpoint on disk (the point
    /// `producers.snapshot` covers) and `base`, so producers whose batches are only in
    /// earlier segments are not forgotten.
    ///
    /// The caller fenced the checkpoint writer first, so no earlier write can land among
    /// these files; the reopened log keeps that writer, its sequence and the generation.
    fn reopen_from(&mut self, base: i64, now_ms: i64) -> Result<(), LogError> {
        let stored = fs::read(self.dir.join(CHECKPOINT_FILE))
            .ok()
            .and_then(|bytes| format::Checkpoint::decode(&bytes));
        let on_disk = match stored {
            Some(c) => Some(c)
                .filter(|c| c.segment_base < base && self.segments.contains_key(&c.segment_base)),
            // No checkpoint yet (a new log is opened without writing one): no producer
            // snapshot covers anything, so the replay starts at the first segment.
            None => self
                .segments
                .keys()
                .next()
                .copied()
                .filter(|&first| first < base)
                .map(|first| format::Checkpoint {
                    log_start_offset: self.log_start_offset,
                    segment_base: first,
                    position: 0,
                    next_offset: first,
                    max_timestamp: -1,
                    offset_of_max_timestamp: first,
                }),
        };
        let checkpoint = if let Some(on_disk) = on_disk {
            format::Checkpoint {
                log_start_offset: self.log_start_offset,
                ..on_disk
            }
        } else {
            format::Checkpoint {
                log_start_offset: self.log_start_offset,
                segment_base: base,
                position: 0,
                next_offset: base,
                max_timestamp: -1,
                offset_of_max_timestamp: base,
            }
        };
        super::write_atomically(&self.dir.join(CHECKPOINT_FILE), &checkpoint.encode())
            .map_err(|e| self.io_err(e))?;
        let first_dirty = self.first_dirty_offset;
        let checkpoints = self.checkpoints.clone();
        let (sequence, generation) = (self.checkpoint_sequence, self.generation);
        let unsynced_dirs = std::mem::take(&mut self.unsynced_dirs);
        let reopened = Log::open_at(&self.dir, self.config.clone(), now_ms, base)?;
        *self = reopened;
        self.unsynced_dirs.extend(unsynced_dirs);
        self.first_dirty_offset = first_dirty.min(self.log_end_offset());
        self.checkpoints = checkpoints;
        self.checkpoint_sequence = sequence;
        self.generation = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
