//! Writing `partition.checkpoint` and `producers.snapshot`, under the log lock or after
//! it is released.
//!
//! Each write is an fsync of a temporary file, a rename and an fsync of the directory:
//! milliseconds on a busy disk. Retention, DeleteRecords, dropping damaged local
//! segments and opening the log write the checkpoint under the log lock, as before (a
//! roll only moves the recovery point in memory). The periodic flush (flush.ms) prepares
//! its write under the lock and carries it out on the blocking pool without it, so
//! appends no longer wait behind the flush's own fsyncs (they showed as multi-millisecond
//! produce stalls once per flush.ms). Appends can still wait behind one: a write under
//! the lock waits for a background write in progress, holding the lock meanwhile.
//!
//! Rules that keep this as safe as writing under the lock:
//! - Checkpoints land in the order they were prepared: each carries a sequence number
//!   taken under the log lock, and a write older than the last one written is dropped
//!   (the newer one holds a recovery point and log start offset at least as far on).
//! - The producer snapshot is written before any checkpoint prepared after it, so it is
//!   never older than the recovery point a checkpoint records: a prepared snapshot
//!   waits in one pending slot, and whichever checkpoint write runs first writes it
//!   (after fsyncing the active `.txnindex`, as before) ahead of the checkpoint. A newer
//!   snapshot replaces a pending older one; a failed snapshot write is put back.
//! - Writes never interleave: one mutex, held only by the writer, across the I/O.
//! - One writer per log for its whole life: truncation and reset reopen the log but keep
//!   the writer and its sequence. Before they change any file they fence it
//!   ([`CheckpointWriter::fence`]): a write in progress finishes, the pending snapshot
//!   (of records about to be removed) is dropped, and every write prepared earlier is
//!   dropped too, so nothing from before the truncation lands after it.
//! - Deleting the log, or the partition going offline after a failed fsync, closes the
//!   writer first (waiting for a write in progress): no write recreates a file in a
//!   directory being removed, and none records a point that can no longer be trusted.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{CHECKPOINT_FILE, PRODUCERS_FILE, format, write_atomically};

/// A producer snapshot waiting to be written.
struct PendingSnapshot {
    bytes: Vec<u8>,
    /// The active segment's `.txnindex`, fsynced before the snapshot: a snapshot that
    /// records a marker makes recovery skip it, so the index entry must be durable first.
    txnindex: Option<File>,
}

/// What the writer mutex guards.
#[derive(Default)]
struct Written {
    /// Sequence number of the last checkpoint written.
    sequence: u64,
    /// Set when the log's directory is being deleted or its partition went offline:
    /// later writes do nothing.
    closed: bool,
}

/// One per log, shared with the writes it prepared.
#[derive(Default)]
pub struct CheckpointWriter {
    /// The newest snapshot not yet written. A std mutex never held across I/O, so the
    /// log lock's holder only ever waits for a swap.
    pending_snapshot: Mutex<Option<PendingSnapshot>>,
    /// Held across every write (std mutex: writes run on blocking threads or under the
    /// log lock, never across an `.await`).
    written: Mutex<Written>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl CheckpointWriter {
    /// Queues `bytes` as the next producer snapshot, replacing one not yet written.
    pub(super) fn set_snapshot(&self, bytes: Vec<u8>, txnindex: Option<File>) {
        *lock(&self.pending_snapshot) = Some(PendingSnapshot { bytes, txnindex });
    }

    /// Stops every later write, waiting for one in progress.
    pub fn close(&self) {
        lock(&self.written).closed = true;
    }

    /// Drops every write prepared before `sequence` and the pending snapshot, waiting for
    /// a write in progress. Truncation and reset call it before changing any file, so no
    /// checkpoint or snapshot of the log before them lands after them.
    pub(super) fn fence(&self, sequence: u64) {
        let mut written = lock(&self.written);
        written.sequence = written.sequence.max(sequence);
        *lock(&self.pending_snapshot) = None;
    }
}

/// A checkpoint prepared under the log lock; [`CheckpointWrite::write`] may run after
/// the lock is released, on any thread.
#[must_use = "a prepared checkpoint does nothing until written"]
pub struct CheckpointWrite {
    pub(super) writer: Arc<CheckpointWriter>,
    pub(super) sequence: u64,
    pub(super) dir: PathBuf,
    pub(super) checkpoint: format::Checkpoint,
}

impl CheckpointWrite {
    /// Writes the pending producer snapshot, if any, then the checkpoint unless a newer
    /// one was written first.
    pub fn write(self) -> io::Result<()> {
        let mut written = lock(&self.writer.written);
        if written.closed {
            return Ok(());
        }
        let snapshot = lock(&self.writer.pending_snapshot).take();
        if let Some(snapshot) = snapshot {
            let result = snapshot
                .txnindex
                .as_ref()
                .map_or(Ok(()), File::sync_data)
                .and_then(|()| write_atomically(&self.dir.join(PRODUCERS_FILE), &snapshot.bytes));
            if let Err(e) = result {
                let mut pending = lock(&self.writer.pending_snapshot);
                if pending.is_none() {
                    *pending = Some(snapshot);
                }
                return Err(e);
            }
        }
        if self.sequence > written.sequence {
            write_atomically(&self.dir.join(CHECKPOINT_FILE), &self.checkpoint.encode())?;
            written.sequence = self.sequence;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(next_offset: i64) -> format::Checkpoint {
        format::Checkpoint {
            log_start_offset: 0,
            segment_base: 0,
            position: 0,
            next_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: 0,
        }
    }

    fn prepared(
        writer: &Arc<CheckpointWriter>,
        dir: &std::path::Path,
        sequence: u64,
    ) -> CheckpointWrite {
        CheckpointWrite {
            writer: writer.clone(),
            sequence,
            dir: dir.to_path_buf(),
            checkpoint: checkpoint(i64::try_from(sequence).expect("small") * 10),
        }
    }

    fn on_disk(dir: &std::path::Path) -> Option<i64> {
        let bytes = std::fs::read(dir.join(CHECKPOINT_FILE)).ok()?;
        format::Checkpoint::decode(&bytes).map(|c| c.next_offset)
    }

    #[test]
    fn an_older_checkpoint_written_late_does_not_replace_a_newer_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(CheckpointWriter::default());
        let older = prepared(&writer, dir.path(), 1);
        let newer = prepared(&writer, dir.path(), 2);
        newer.write().expect("newer");
        older.write().expect("older");
        assert_eq!(on_disk(dir.path()), Some(20));
    }

    #[test]
    fn a_pending_snapshot_is_written_before_whichever_checkpoint_runs_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(CheckpointWriter::default());
        // A flush prepared its checkpoint with a snapshot, then a roll prepared another
        // (producer state unchanged, so no snapshot of its own) and wrote it first.
        writer.set_snapshot(b"snapshot".to_vec(), None);
        let flush = prepared(&writer, dir.path(), 1);
        let roll = prepared(&writer, dir.path(), 2);
        roll.write().expect("roll");
        assert_eq!(
            std::fs::read(dir.path().join(PRODUCERS_FILE)).expect("snapshot written"),
            b"snapshot"
        );
        std::fs::remove_file(dir.path().join(PRODUCERS_FILE)).expect("remove");
        flush.write().expect("flush");
        assert!(!dir.path().join(PRODUCERS_FILE).exists(), "written once");
        assert_eq!(on_disk(dir.path()), Some(20));
    }

    #[test]
    fn a_failed_snapshot_write_is_retried_by_the_next_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("gone");
        let writer = Arc::new(CheckpointWriter::default());
        writer.set_snapshot(b"snapshot".to_vec(), None);
        prepared(&writer, &missing, 1)
            .write()
            .expect_err("the directory is missing");
        assert_eq!(
            on_disk(&missing),
            None,
            "no checkpoint without its snapshot"
        );
        std::fs::create_dir(&missing).expect("create");
        prepared(&writer, &missing, 2).write().expect("retry");
        assert!(missing.join(PRODUCERS_FILE).exists());
        assert_eq!(on_disk(&missing), Some(20));
    }

    #[test]
    fn a_fence_drops_earlier_writes_and_the_pending_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(CheckpointWriter::default());
        writer.set_snapshot(b"before the truncation".to_vec(), None);
        let stale = prepared(&writer, dir.path(), 1);
        writer.fence(2);
        stale.write().expect("a no-op");
        assert_eq!(on_disk(dir.path()), None);
        assert!(!dir.path().join(PRODUCERS_FILE).exists());
        prepared(&writer, dir.path(), 3)
            .write()
            .expect("after the fence");
        assert_eq!(on_disk(dir.path()), Some(30));
    }

    #[test]
    fn nothing_is_written_once_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(CheckpointWriter::default());
        let write = prepared(&writer, dir.path(), 1);
        writer.close();
        write.write().expect("a no-op");
        assert_eq!(on_disk(dir.path()), None);
    }
}
