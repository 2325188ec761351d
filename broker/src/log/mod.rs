//! The local partition log: an ordered list of segments, the last one active.
//!
//! Invariants:
//! - offsets are dense: each segment starts where the previous one ended;
//! - `log_start_offset <= first segment's base <= ... <= log_end_offset`, except that
//!   DeleteRecords may move `log_start_offset` into the middle of the first segment;
//! - a segment stops being active only after its data and indexes are fsynced, so at
//!   start-up every segment but the last is trusted and only the tail of the last one,
//!   after the checkpointed recovery point, is scanned. Start-up time follows the
//!   unflushed tail, not the size of the log;
//! - bytes past a segment's `size` are never shown to readers.
//!
//! The byte layout of every file is in [`format`].

mod checkpoint;
pub mod cleaner;
pub mod damage;
pub mod epochs;
pub mod files;
mod follower;
pub mod format;
pub mod producers;
mod read;
pub mod recompress;
pub mod records;
mod retention;
mod segment;
pub mod txn;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

pub use follower::prepare_replica;
pub use format::{BatchError, BatchHeader};
use producers::{BatchMeta, ProducerState, Verdict};
pub use read::{
    Damaged, Location, checked_prefix, damage_of, find_timestamp, first_at_or_after,
    max_timestamp_record, offsets_fit, read_batches, verify,
};
pub use recompress::Recompression;
use segment::Segment;

pub use checkpoint::{CheckpointWrite, CheckpointWriter};

/// Per-log settings, derived from the topic's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u64,
    /// fsync after this many messages; `i64::MAX` leaves it to `flush_ms`.
    pub flush_messages: i64,
    pub flush_ms: i64,
    /// -1: unlimited.
    pub retention_ms: i64,
    /// -1: unlimited.
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    /// Tiered storage: local retention of uploaded segments; -2 means `retention_ms`.
    pub local_retention_ms: i64,
    /// Tiered storage: -2 means `retention_bytes`.
    pub local_retention_bytes: i64,
    /// Tiered storage is on: segments leave the local disk only once uploaded, and
    /// retention.ms / retention.bytes are applied by the remote tier.
    pub remote_storage: bool,
    pub log_append_time: bool,
    /// compression.type names a codec: produced batches in another are recompressed.
    pub recompression: Option<Recompression>,
    /// CreateTime topics: how far before and after the broker's clock a produced
    /// record's timestamp may be (message.timestamp.before.max.ms / after.max.ms).
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// cleanup.policy includes `compact`: the cleaner keeps the last record per key.
    pub compact: bool,
    /// Compaction: how long tombstones stay readable after their segment was sealed.
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
}

impl LogConfig {
    fn effective_local_retention(&self) -> (i64, i64) {
        let ms = if self.local_retention_ms == -2 {
            self.retention_ms
        } else {
            self.local_retention_ms
        };
        let bytes = if self.local_retention_bytes == -2 {
            self.retention_bytes
        } else {
            self.local_retention_bytes
        };
        (ms, bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("log I/O failed in {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("stored data is damaged in {dir}: {damage}")]
    Damaged { dir: PathBuf, damage: Damaged },
    #[error(transparent)]
    Producer(#[from] producers::ProducerError),
    #[error("replicated batch at offset {got} does not follow the log end {expected}")]
    NotContiguous { expected: i64, got: i64 },
}

/// A transaction verified with its coordinator, for [`Log::append_verified`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnGuard {
    pub producer_id: i64,
    /// The producer's marker position when the verification started.
    pub marker_position: i64,
}

/// What an append did, for the produce response.
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time: i64,
    pub records: i64,
}

/// What the remote tier holds, for local retention: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteBounds {
    pub start: i64,
    pub end: i64,
}

/// A sealed segment to upload. It names its files rather than holding them open, so a
/// backlog of thousands of segments costs no descriptors; the uploader opens the `.log`
/// when it starts the upload, and that handle keeps the data readable to the end even if
/// retention removes the segment meanwhile.
#[derive(Debug, Clone)]
pub struct SealedInfo {
    pub base_offset: i64,
    pub end_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
    pub sealed_ms: i64,
    pub log_path: PathBuf,
    pub offset_index: PathBuf,
    pub time_index: PathBuf,
    /// `<base>.producers`, if idempotent producers had written by the time it was sealed.
    pub producers: Option<PathBuf>,
    /// The aborted transactions overlapping the segment (`.txnindex` format; empty if
    /// none): uploaded with it, so read_committed reads of the bucket need nothing else.
    /// Every transaction with records in a sealed segment below the last stable offset
    /// has its marker in the log, so the list is complete when the segment is uploaded.
    pub txn_index: Vec<u8>,
}

/// What retention removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct RetentionOutcome {
    pub segments: usize,
    pub bytes: u64,
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    unflushed_messages: i64,
    /// Directories whose new entries are not yet fsynced: a new log's directory (its
    /// first segment's files) and the directory holding it. Opening a log writes nothing,
    /// so the first fsync that makes records durable (the periodic flush, or the one
    /// before an ack under flush.messages) fsyncs these too; until then a power loss
    /// could drop the files with the records in them.
    unsynced_dirs: Vec<PathBuf>,
    /// Set when data was appended since the last periodic flush.
    dirty: bool,
    /// When data was last appended (or the log opened): an active segment idle for
    /// long enough lets go of its files (see [`Log::release_idle_files`]).
    last_append_ms: i64,
    /// Batches start-up had to scan (CRC-check and re-index): the unflushed tail.
    recovered_batches: u64,
    last_flush_ms: i64,
    /// Writes `partition.checkpoint` and `producers.snapshot` in order (see [`checkpoint`]).
    checkpoints: Arc<CheckpointWriter>,
    /// Sequence number of the last checkpoint prepared.
    checkpoint_sequence: u64,
    /// Counts truncations and resets: a [`FlushPlan`] made before one describes files
    /// that no longer exist.
    generation: u64,
    /// The latest point known to be fsynced (its `log_start_offset` is unused): what
    /// every checkpoint write records, whoever writes it.
    recovery_point: format::Checkpoint,
    /// Idempotent producers seen in this log; see [`producers`].
    producers: ProducerState,
    /// Compaction: where the part not yet cleaned starts (see [`cleaner`]).
    first_dirty_offset: i64,
    /// Where each leader epoch starts (see [`epochs`]).
    epochs: epochs::LeaderEpochs,
    /// The first epoch of a log without records and without an epochs file, not yet
    /// written to its file: it is written with the next checkpoint. Until then a crash
    /// loses nothing, since with no file recovery rebuilds the cache from the batches'
    /// headers (there are none, or
    /// they carry the epoch), and the leader assigns its epoch again when it takes over.
    epochs_unsaved: bool,
    /// Aborted transactions of the local log (see [`txn`]).
    aborted: txn::AbortedIndex,
    /// Markers a compaction pass found removable, and when (see [`cleaner`]).
    markers_removable_since: std::collections::HashMap<i64, i64>,
}

/// A periodic flush prepared under the lock and carried out without it.
pub struct FlushPlan {
    files: Vec<File>,
    /// Directories with entries not yet fsynced (see `Log::unsynced_dirs`).
    dirs: Vec<PathBuf>,
    checkpoint: format::Checkpoint,
    /// The log's [`Log::generation`] when the plan was made.
    generation: u64,
}

impl FlushPlan {
    /// fsyncs the active segment and its indexes, and directories with new entries.
    /// Runs without the log lock.
    pub fn sync(&self) -> io::Result<()> {
        self.files.iter().try_for_each(File::sync_data)?;
        self.dirs
            .iter()
            .try_for_each(|dir| File::open(dir)?.sync_all())
    }
}

impl Log {
    /// Opens the log in `dir`, creating it if needed, and recovers its tail.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log, LogError> {
        Log::open_at(dir, config, now_ms, 0)
    }

    /// Like [`Log::open`], but a log with no segments starts at `start_offset` (where the
    /// remote tier ends, after an empty-disk restart).
    pub fn open_at(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
        start_offset: i64,
    ) -> Result<Log, LogError> {
        let io_err = |source| LogError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let new_dir = !dir.exists();
        fs::create_dir_all(dir).map_err(io_err)?;
        cleaner::recover(dir).map_err(io_err)?;
        let first_dirty_offset = match fs::read(dir.join(cleaner::CHECKPOINT_FILE)) {
            Ok(bytes) => cleaner::decode_checkpoint(&bytes).unwrap_or(0),
            Err(_) => 0,
        };
        let checkpoint = match fs::read(dir.join(CHECKPOINT_FILE)) {
            Ok(bytes) => {
                let parsed = format::Checkpoint::decode(&bytes);
                if parsed.is_none() {
                    warn!(dir = %dir.display(), "partition checkpoint is damaged; scanning the last segment");
                }
                parsed
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let name = entry.map_err(io_err)?.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log")
                && let Ok(base) = stem.parse::<i64>()
            {
                bases.push(base);
            }
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(dir.join(name.as_ref()));
            }
        }
        bases.sort_unstable();

        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments: BTreeMap::new(),
            log_start_offset: checkpoint.map_or(0, |c| c.log_start_offset),
            unflushed_messages: 0,
            unsynced_dirs: Vec::new(),
            dirty: false,
            last_append_ms: now_ms,
            recovered_batches: 0,
            last_flush_ms: now_ms,
            checkpoints: Arc::default(),
            checkpoint_sequence: 0,
            generation: 0,
            recovery_point: format::Checkpoint {
                log_start_offset: 0,
                segment_base: 0,
                position: 0,
                next_offset: 0,
                max_timestamp: -1,
                offset_of_max_timestamp: 0,
            },
            producers: ProducerState::default(),
            first_dirty_offset,
            epochs: epochs::LeaderEpochs::default(),
            epochs_unsaved: false,
            aborted: txn::AbortedIndex::default(),
            markers_removable_since: std::collections::HashMap::new(),
        };
        let interval = log.config.index_interval_bytes;
        let compacted = log.config.compact;
        // Whether recovery changed anything on disk that must be made durable before the
        // checkpoint records it: a truncated tail, dropped segments.
        let mut repaired = false;
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let (segment, outcome) = match next_base {
                Some(next) => Segment::open_sealed(dir, base, next, interval, now_ms, compacted),
                None => {
                    let trusted = checkpoint.filter(|c| c.segment_base == base).map(|c| {
                        (
                            c.position,
                            c.next_offset,
                            c.max_timestamp,
                            c.offset_of_max_timestamp,
                        )
                    });
                    Segment::open(dir, base, trusted, interval, now_ms, compacted)
                }
            }
            .map_err(io_err)?;
            if outcome.truncated_bytes > 0 {
                repaired = true;
                warn!(dir = %dir.display(), segment = base, bytes = outcome.truncated_bytes,
                    valid_bytes = outcome.valid_size, "truncated a torn or corrupt tail");
            }
            log.recovered_batches += outcome.batches;
            if outcome.batches > 0 {
                info!(dir = %dir.display(), segment = base, batches = outcome.batches, "recovered segment tail");
            }
            let end = segment.next_offset;
            log.segments.insert(base, segment);
            if let Some(next) = next_base
                && end < next
                && outcome.truncated_bytes == 0
            {
                // Compaction removed the segment's last records: the gap is legitimate.
                if let Some(s) = log.segments.get_mut(&base) {
                    s.next_offset = next;
                }
            } else if let Some(next) = next_base
                && end != next
            {
                // A sealed segment is fsynced before its successor exists, so this means
                // the disk lost data. Offsets must stay dense: drop what follows the hole.
                warn!(dir = %dir.display(), segment = base, end, next, "gap after a sealed segment; dropping later segments");
                repaired = true;
                for &later in &bases[i + 1..] {
                    segment::delete_files(dir, later).map_err(io_err)?;
                }
                break;
            }
        }
        // After a hole the last segment kept was opened as a sealed one, yet it is active.
        if let Some(last) = log.segments.values_mut().next_back() {
            last.pin().map_err(io_err)?;
        }
        if log.segments.is_empty() {
            // Nothing on disk says where an empty log starts but the checkpoint (or, with
            // none, `start_offset`), as before its first segment's files existed: they are
            // created by its first append, which also queues the directory's fsync.
            log.log_start_offset = log.log_start_offset.max(start_offset);
            let segment = Segment::deferred(dir, log.log_start_offset, now_ms);
            log.segments.insert(log.log_start_offset, segment);
        }
        if new_dir && let Some(parent) = dir.parent() {
            log.unsynced_dirs.push(parent.to_path_buf());
        }
        let first_base = *log.segments.keys().next().unwrap_or(&0);
        log.log_start_offset = log
            .log_start_offset
            .max(first_base)
            .min(log.log_end_offset());
        log.load_aborted().map_err(io_err)?;
        log.recover_producers(checkpoint, now_ms).map_err(io_err)?;
        log.recover_epochs().map_err(io_err)?;
        // What recovery kept is made durable before it is recorded as the recovery point.
        // Nothing to do when the checkpoint already says exactly that (a clean restart:
        // no tail scanned, nothing repaired), or for a log that holds nothing and has no
        // checkpoint (a crash before its first flush leaves an empty log either way).
        // Skipping these fsyncs is what keeps creating and reopening thousands of idle
        // partitions from costing five fsyncs each.
        let live = log.live_position();
        let unchanged = checkpoint == Some(live)
            && log.recovered_batches == 0
            && !repaired
            && !log.producers.is_dirty();
        // An empty log never flushed (created, then restarted before anything was
        // written) is in the same case whether or not it was just created.
        let empty_and_new = checkpoint.is_none()
            && log.segments.len() == 1
            && live.position == 0
            && log.recovered_batches == 0
            && !repaired
            && !log.producers.is_dirty();
        log.recovery_point = live;
        if !(unchanged || empty_and_new) {
            log.active().flush().map_err(io_err)?;
            log.write_checkpoint(log.checkpoint()).map_err(io_err)?;
        }
        // Everything in the active segment is fsynced: it holds no descriptors until it is
        // written.
        log.active_mut().release();
        Ok(log)
    }

    /// How many batches start-up scanned; bounded by what was written since the last
    /// checkpoint, not by the size of the log.
    pub fn recovered_batches(&self) -> u64 {
        self.recovered_batches
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// The base offset of the segment holding `offset`.
    pub fn segment_base_of(&self, offset: i64) -> i64 {
        self.segments
            .range(..=offset)
            .next_back()
            .map_or(self.log_start_offset, |(&base, _)| base)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn io_err(&self, source: io::Error) -> LogError {
        LogError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Appends batches checked by [`prepare`], all or nothing: the request goes into one
    /// segment (rolling first if it would not fit) and a failure part-way undoes the
    /// batches already written. Returns the append info and, if the flush policy asks for
    /// an fsync before the acknowledgement, the file to sync (outside the lock).
    pub fn append(
        &mut self,
        prepared: Prepared,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(AppendInfo, Option<Arc<File>>), LogError> {
        self.append_verified(prepared, leader_epoch, now_ms, None)
    }

    /// [`Log::append`] of a client's request that may hold transactional batches. A
    /// transactional batch of a producer with no open transaction here is appended only
    /// with a `guard` for that producer: its transaction was verified with the
    /// coordinator (KIP-890) while the producer's marker position was what the guard
    /// says. A marker written since (the transaction ended) voids it, so a late batch
    /// cannot open a transaction that no marker will ever end.
    pub fn append_verified(
        &mut self,
        prepared: Prepared,
        leader_epoch: i32,
        now_ms: i64,
        guard: Option<TxnGuard>,
    ) -> Result<(AppendInfo, Option<Arc<File>>), LogError> {
        let Prepared {
            mut buf,
            mut headers,
            records,
            ..
        } = prepared;
        let mut verdicts = Vec::with_capacity(headers.len());
        for header in &headers {
            if header.is_control() || header.producer_id >= 0 && header.base_sequence < 0 {
                // Markers, and the broker's own transactional batches (TxnOffsetCommit)
                // carry no sequences: only the epoch is checked, and the guard of a
                // batch that would open a transaction.
                self.producers
                    .check_marker(header.producer_id, header.producer_epoch)?;
                if !header.is_control() && header.is_transactional() {
                    self.check_transaction(header, guard)?;
                }
            } else if header.producer_id >= 0 {
                self.check_transaction(header, guard)?;
                verdicts.push(self.producers.check(
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                    header.last_sequence(),
                )?);
            }
        }
        if let Some(&Verdict::Duplicate {
            base_offset,
            last_offset,
        }) = verdicts.first()
        {
            if headers.len() == 1 {
                // A retry of a batch already in the log: acknowledge it again.
                let info = AppendInfo {
                    base_offset,
                    last_offset,
                    log_append_time: -1,
                    records: 0,
                };
                return Ok((info, None));
            }
            return Err(producers::ProducerError::OutOfOrder {
                producer_id: headers[0].producer_id,
                last: headers[0].base_sequence,
                got: headers[0].base_sequence,
            }
            .into());
        }
        let base_offset = self.log_end_offset();
        self.maybe_roll(buf.len() as u64, base_offset + records, now_ms)?;
        let segment_base = self.active().base_offset;
        if base_offset + records - segment_base > MAX_SEGMENT_OFFSET_SPAN {
            // Only a request that alone exceeds a segment's offset range gets here (the
            // roll above made room otherwise); the inflation budget makes it impossible
            // for produced batches, and it is refused rather than written past the index.
            return Err(BatchError::OffsetSpan {
                first: base_offset,
                last: base_offset + records - 1,
                segment_base,
            }
            .into());
        }
        self.assign_epoch(leader_epoch, base_offset)?;
        let log_append_time = if self.config.log_append_time {
            now_ms
        } else {
            -1
        };
        let next_offset = self.write_batches(&mut buf, &mut headers, Some(leader_epoch), now_ms)?;
        let sync = self.after_append(&buf, &headers, records, now_ms)?;
        let info = AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            log_append_time,
            records,
        };
        Ok((info, sync))
    }

    /// Writes validated batches to the active segment, all or nothing. The leader
    /// (`assign = Some(epoch)`) gives them offsets from the log end and its epoch; a
    /// follower (`None`) keeps the leader's. Returns the next offset.
    fn write_batches(
        &mut self,
        buf: &mut [u8],
        headers: &mut [BatchHeader],
        assign: Option<i32>,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        let interval = self.config.index_interval_bytes;
        if !self.active().on_disk() && !self.unsynced_dirs.contains(&self.dir) {
            // The append creates the deferred segment's files: their directory entries
            // are fsynced with the records (see `unsynced_dirs`).
            self.unsynced_dirs.insert(0, self.dir.clone());
        }
        let snapshot = self.active().snapshot();
        let mut next_offset = self.log_end_offset();
        let mut position = 0;
        let segment_base = self.active().base_offset;
        for header in headers.iter_mut() {
            let batch = &mut buf[position..position + header.size];
            let first = if assign.is_some() {
                next_offset
            } else {
                header.base_offset
            };
            let last = first + i64::from(header.last_offset_delta);
            if first < segment_base || last - segment_base > MAX_SEGMENT_OFFSET_SPAN {
                // The index could not address it: refuse rather than wrap.
                self.active_mut().rollback(&snapshot);
                return Err(BatchError::OffsetSpan {
                    first,
                    last,
                    segment_base,
                }
                .into());
            }
            if let Some(leader_epoch) = assign {
                format::patch_batch(batch, next_offset, leader_epoch);
                if self.config.log_append_time {
                    format::set_log_append_time(batch, now_ms);
                    header.max_timestamp = now_ms;
                }
                header.base_offset = next_offset;
            }
            if let Err(e) = self.active_mut().append(batch, header, interval) {
                self.active_mut().rollback(&snapshot);
                return Err(self.io_err(e));
            }
            next_offset = header.next_offset();
            position += header.size;
        }
        Ok(next_offset)
    }

    /// Producer state and flush accounting after an append; returns the file to fsync
    /// before acknowledging, if the flush policy asks for one.
    fn after_append(
        &mut self,
        buf: &[u8],
        headers: &[BatchHeader],
        records: i64,
        now_ms: i64,
    ) -> Result<Option<Arc<File>>, LogError> {
        let mut position = 0;
        for header in headers {
            let batch = &buf[position..position + header.size];
            position += header.size;
            if header.producer_id < 0 {
                continue;
            }
            let marker = txn::marker_info(batch, header);
            self.record_producer(header, marker, now_ms)
                .map_err(|e| self.io_err(e))?;
        }
        self.unflushed_messages += records;
        self.dirty = true;
        self.last_append_ms = now_ms;
        if self.unflushed_messages >= self.config.flush_messages {
            self.unflushed_messages = 0;
            // Rare (once for a new log) and small: done here, under the lock.
            self.sync_new_dirs().map_err(|e| self.io_err(e))?;
            Ok(self.active().log_file().ok())
        } else {
            Ok(None)
        }
    }

    /// Producer state after a batch of `header` was written or, at recovery, scanned: a
    /// data batch extends the producer's sequences (and opens its transaction here if it
    /// is transactional); a marker ends the transaction, and an abort marker adds the
    /// transaction to the aborted index (memory and the segment's file) unless it is
    /// there already.
    fn record_producer(
        &mut self,
        header: &BatchHeader,
        marker: Option<(txn::Marker, i32)>,
        now_ms: i64,
    ) -> io::Result<()> {
        let offset = header.base_offset;
        if !header.is_control() && header.base_sequence < 0 {
            if header.is_transactional() {
                self.producers.begin_transaction(
                    header.producer_id,
                    header.producer_epoch,
                    offset,
                    header.max_timestamp,
                    now_ms,
                );
            }
            return Ok(());
        }
        if !header.is_control() {
            let meta = BatchMeta {
                first_sequence: header.base_sequence,
                last_sequence: header.last_sequence(),
                base_offset: offset,
                last_offset: header.last_offset(),
            };
            let transactional = header.is_transactional();
            self.producers.record(
                header.producer_id,
                header.producer_epoch,
                meta,
                header.max_timestamp,
                transactional,
                now_ms,
            );
            return Ok(());
        }
        let marker_meta = producers::MarkerMeta {
            timestamp: header.max_timestamp,
            coordinator_epoch: marker.map_or(-1, |(_, epoch)| epoch),
        };
        let first = self.producers.record_marker(
            header.producer_id,
            header.producer_epoch,
            offset,
            marker_meta,
            now_ms,
        );
        if let (Some(first_offset), Some((txn::Marker::Abort, _))) = (first, marker) {
            let entry = txn::AbortedTxn {
                producer_id: header.producer_id,
                first_offset,
                last_offset: offset,
                last_stable_offset: self.producers.first_unstable_offset().unwrap_or(offset + 1),
            };
            if !self.aborted.contains(&entry) {
                let segment_base = self.segment_base_of(offset);
                txn::AbortedIndex::append_to_file(&self.dir, segment_base, &entry)?;
                self.aborted.insert(entry);
            }
        }
        Ok(())
    }

    /// A client batch against the producer's transaction here. While a transaction is
    /// open, only transactional batches of its epoch go in (an older epoch is fenced; a
    /// newer one, or a plain batch, would leave the open transaction without the marker
    /// its coordinator writes at its epoch). With none open, a transactional batch needs
    /// a valid guard (see [`TxnGuard`]).
    fn check_transaction(
        &self,
        header: &BatchHeader,
        guard: Option<TxnGuard>,
    ) -> Result<(), producers::ProducerError> {
        use producers::ProducerError;
        let producer_id = header.producer_id;
        let epoch = header.producer_epoch;
        match self.producers.open_epoch(producer_id) {
            Some(open) if epoch < open => Err(ProducerError::Fenced {
                producer_id,
                epoch,
                current: open,
            }),
            Some(open) if !header.is_transactional() => Err(ProducerError::InvalidTxnState {
                producer_id,
                epoch,
                open,
            }),
            // The coordinator ended that transaction with a newer epoch (KIP-890 part 2
            // bumps it at every EndTxn) and its marker has not reached this partition yet:
            // the producer retries once it has.
            Some(open) if epoch > open => Err(ProducerError::MarkerPending {
                producer_id,
                epoch,
                open,
            }),
            Some(_) => Ok(()),
            None if header.is_transactional()
                && guard.is_none_or(|g| {
                    g.producer_id != producer_id
                        || g.marker_position != self.producers.marker_position(producer_id)
                }) =>
            {
                Err(ProducerError::NotInTransaction { producer_id })
            }
            None => Ok(()),
        }
    }

    /// Appends a transaction marker for `producer_id` as the leader (the coordinator
    /// ending a transaction). Markers are not checked for sequences, only for the epoch.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        marker: txn::Marker,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(AppendInfo, Option<Arc<File>>), LogError> {
        let batch = txn::encode_marker(
            producer_id,
            producer_epoch,
            marker,
            coordinator_epoch,
            now_ms,
        );
        let header = format::parse_validated_header(&batch);
        let prepared = Prepared {
            buf: batch.to_vec(),
            headers: vec![header],
            records: 1,
            inflated: Vec::new(),
        };
        self.append(prepared, leader_epoch, now_ms)
    }

    /// The first offset of the oldest open transaction, if any: read_committed
    /// consumers stop there.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.first_unstable_offset()
    }

    /// See [`TxnGuard`].
    pub fn marker_position(&self, producer_id: i64) -> i64 {
        self.producers.marker_position(producer_id)
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.producers.in_transaction(producer_id)
    }

    /// The transactions open here: (producer id, epoch, first offset), oldest first.
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.producers.open_transactions()
    }

    /// The producers this log remembers (DescribeProducers), or `None` if more than `limit`.
    pub fn active_producers(&self, limit: usize) -> Option<Vec<producers::ActiveProducer>> {
        self.producers.active_at_most(limit)
    }

    /// The epoch of `producer_id`'s open transaction here, if one is open.
    pub fn open_transaction_epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.open_epoch(producer_id)
    }

    /// Aborted transactions with records in `[from, to)`, for a read_committed Fetch.
    pub fn aborted_overlapping(&self, from: i64, to: i64) -> Vec<txn::AbortedTxn> {
        self.aborted.overlapping(from, to)
    }

    /// Retention removed segments: their aborted transactions go with them.
    fn forget_aborted_before_first_segment(&mut self) {
        let first = *self.segments.keys().next().unwrap_or(&0);
        self.aborted.drop_before(first);
    }

    /// Loads the aborted-transaction index files of every segment. Entries past the log
    /// end (a truncated tail) are dropped and their file rewritten, so they cannot come
    /// back once the log grows past them again.
    fn load_aborted(&mut self) -> io::Result<()> {
        let end = self.log_end_offset();
        self.aborted = txn::AbortedIndex::default();
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            let path = txn::AbortedIndex::path(&self.dir, base);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let Some(entries) = txn::decode_file(&bytes) else {
                warn!(file = %path.display(), "unreadable aborted-transaction index; ignored");
                continue;
            };
            let kept: Vec<_> = entries
                .iter()
                .copied()
                .filter(|e| e.last_offset < end)
                .collect();
            if kept.len() != entries.len() {
                txn::AbortedIndex::rewrite_file(&self.dir, base, &kept)?;
            }
            for entry in kept {
                self.aborted.insert(entry);
            }
        }
        Ok(())
    }

    /// Rolls before a request of `incoming` bytes that would end at `end_offset` if the
    /// active segment is full, old, or out of 32-bit relative offsets.
    fn maybe_roll(&mut self, incoming: u64, end_offset: i64, now_ms: i64) -> Result<(), LogError> {
        let config = &self.config;
        let active = self.active();
        let full = active.size + incoming > config.segment_bytes;
        let old = now_ms - active.created_ms >= config.segment_ms;
        let offsets_exhausted = end_offset - active.base_offset > MAX_SEGMENT_OFFSET_SPAN;
        if active.size > 0 && (full || old || offsets_exhausted) {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Seals the active segment (fsyncing it and its indexes) and starts a new one.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let next = self.log_end_offset();
        let active = self.active_mut();
        active.sealed_ms = now_ms;
        let sealed = active.seal().and_then(|()| active.flush());
        sealed.map_err(|e| self.io_err(e))?;
        let sealed_base = self.active().base_offset;
        if let Some(index) = self.open_txnindex(sealed_base) {
            index.sync_data().map_err(|e| self.io_err(e))?;
        }
        // The producers' state as of the sealed segment's end travels with it to the
        // remote tier, so a broker restored from the bucket still recognises retries.
        // Without idempotent producers there is nothing to write.
        if !self.producers.is_empty() {
            let path = self.active().producers_path();
            write_atomically(&path, &self.producers.encode()).map_err(|e| self.io_err(e))?;
        }
        let segment = Segment::create(&self.dir, next, now_ms).map_err(|e| self.io_err(e))?;
        self.segments.insert(next, segment);
        // The new segment's directory entries, before anything appended to it is acked.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.io_err(e))?;
        // Sealed, fsynced and no longer active: from now on its files are opened on demand,
        // so descriptors do not grow with the number of segments. Only now: if anything
        // above failed, it is still the active segment and must keep its handles.
        if sealed_base != next
            && let Some(sealed) = self.segments.get_mut(&sealed_base)
        {
            sealed.release();
        }
        // Everything before the new, empty segment is fsynced.
        self.recovery_point = self.live_position();
        Ok(())
    }

    /// The `.txnindex` of the segment at `base`, opened to be fsynced, if it exists.
    fn open_txnindex(&self, base: i64) -> Option<File> {
        File::open(txn::AbortedIndex::path(&self.dir, base)).ok()
    }

    /// Rolls an idle active segment that outlived segment.ms, so time-based retention
    /// applies to topics nobody writes to any more.
    pub fn roll_if_expired(&mut self, now_ms: i64) -> Result<bool, LogError> {
        let active = self.active();
        if active.size > 0 && now_ms - active.created_ms >= self.config.segment_ms {
            self.roll(now_ms)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Where a read of `offset` starts. `None` when `offset` is the log end (nothing yet).
    pub fn locate(&self, offset: i64) -> Result<Option<Location>, LogError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: end,
            });
        }
        if offset == end {
            return Ok(None);
        }
        let segment = self
            .segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| offset < s.next_offset)
            .or_else(|| {
                self.segments
                    .range(offset..)
                    .map(|(_, s)| s)
                    .find(|s| s.size > 0)
            });
        let Some(segment) = segment else {
            return Ok(None);
        };
        let start = if offset > segment.base_offset {
            segment.lookup(offset).map_err(|e| self.io_err(e))?
        } else {
            (0, segment.base_offset)
        };
        self.location(segment, start).map(Some)
    }

    /// A read's view of `segment` from `start`: (position, the base offset of the batch
    /// there, as the index says).
    fn location(&self, segment: &Segment, start: (u64, i64)) -> Result<Location, LogError> {
        Ok(Location {
            file: segment.log_file().map_err(|e| self.io_err(e))?,
            start: start.0,
            start_offset: start.1,
            end: segment.size,
            base_offset: segment.base_offset,
            end_offset: segment.next_offset,
            index_damaged: Default::default(),
        })
    }

    /// Rebuilds the indexes of the segment based at `segment_base` from its `.log` (a read
    /// found them wrong). Returns false if there is no such segment.
    pub fn rebuild_indexes(&mut self, segment_base: i64) -> Result<bool, LogError> {
        let interval = self.config.index_interval_bytes;
        let active = self.active().base_offset == segment_base;
        let Some(segment) = self.segments.get_mut(&segment_base) else {
            return Ok(false);
        };
        let result = segment.rebuild_indexes(interval, active);
        result.map(|()| true).map_err(|e| self.io_err(e))
    }

    /// Drops the local copy of a damaged sealed segment, and every segment before it, when
    /// the remote tier holds them all (`remote` covers up to its end): reads of that range
    /// go to the remote tier from then on. Returns false, dropping nothing, when it does not.
    pub fn drop_damaged_local(
        &mut self,
        segment_base: i64,
        remote: RemoteBounds,
    ) -> Result<bool, LogError> {
        let active_base = self.active().base_offset;
        let Some(segment) = self.segments.get(&segment_base) else {
            return Ok(false);
        };
        let end = segment.next_offset;
        // Segments below the remote start are past total retention: they go too.
        if segment_base == active_base || end > remote.end {
            return Ok(false);
        }
        // The start moves with each segment removed, so a failure part-way leaves no
        // range that neither the local log nor `remote_for` would serve.
        let mut result = Ok(true);
        while let Some((&base, first)) = self.segments.iter().next() {
            if base > segment_base {
                break;
            }
            let next_offset = first.next_offset;
            if let Err(e) = first.delete_files() {
                result = Err(self.io_err(e));
                break;
            }
            self.segments.remove(&base);
            self.log_start_offset = self.log_start_offset.max(next_offset);
        }
        self.write_checkpoint(self.checkpoint())
            .map_err(|e| self.io_err(e))?;
        result
    }

    /// The base of the first segment after the one holding `offset`: where a read goes on
    /// when compaction left nothing at or after `offset` in its segment.
    pub fn next_segment_base(&self, offset: i64) -> Option<i64> {
        self.segments
            .range(offset + 1..)
            .next()
            .map(|(&base, _)| base)
    }

    /// The first batch at or after the first segment whose max timestamp is `>= timestamp`,
    /// as a location to decode from. `None` if no batch has such a timestamp.
    pub fn locate_timestamp(&self, timestamp: i64) -> Result<Option<Location>, LogError> {
        for segment in self.segments.values() {
            if segment.max_timestamp >= timestamp && segment.next_offset > self.log_start_offset {
                let start = segment.lookup_time(timestamp).map_err(|e| self.io_err(e))?;
                return self.location(segment, start).map(Some);
            }
        }
        Ok(None)
    }

    /// The segment holding the largest timestamp, and that batch's base offset.
    pub fn locate_max_timestamp(&self) -> Result<Option<(Location, i64)>, LogError> {
        let best = self
            .segments
            .values()
            .filter(|s| s.size > 0 && s.max_timestamp >= 0)
            .max_by_key(|s| (s.max_timestamp, std::cmp::Reverse(s.base_offset)));
        let Some(segment) = best else { return Ok(None) };
        let offset = segment.offset_of_max_timestamp.max(self.log_start_offset);
        let start = segment.lookup(offset).map_err(|e| self.io_err(e))?;
        Ok(Some((self.location(segment, start)?, offset)))
    }

    /// Lets go of the active segment's files when nothing was appended for `idle_ms` and
    /// everything appended is fsynced (the recovery point reached the end; a flush that is planned but not
    /// finished does not count, nor one that failed). The next append opens them again.
    /// Returns whether it released them.
    pub fn release_idle_files(&mut self, now_ms: i64, idle_ms: i64) -> bool {
        let live = self.live_position();
        let synced = !self.dirty
            && self.recovery_point.segment_base == live.segment_base
            && self.recovery_point.position == live.position;
        if !synced || now_ms - self.last_append_ms < idle_ms || !self.active().is_pinned() {
            return false;
        }
        self.active_mut().release();
        true
    }

    /// fsyncs the directories in `unsynced_dirs`, forgetting each once it is done.
    fn sync_new_dirs(&mut self) -> io::Result<()> {
        while let Some(dir) = self.unsynced_dirs.first() {
            File::open(dir)?.sync_all()?;
            self.unsynced_dirs.remove(0);
        }
        Ok(())
    }

    /// Starts a periodic flush if flush.ms elapsed (or `force`) and data was appended.
    pub fn plan_flush(&mut self, now_ms: i64, force: bool) -> Result<Option<FlushPlan>, LogError> {
        if !self.dirty || (!force && now_ms - self.last_flush_ms < self.config.flush_ms) {
            return Ok(None);
        }
        let mut files = self.active().sync_handles().map_err(|e| self.io_err(e))?;
        if let Some(index) = self.open_txnindex(self.active().base_offset) {
            files.push(index);
        }
        self.dirty = false;
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        Ok(Some(FlushPlan {
            files,
            dirs: std::mem::take(&mut self.unsynced_dirs),
            checkpoint: self.live_position(),
            generation: self.generation,
        }))
    }

    /// Records the recovery point of a [`FlushPlan`] whose `sync` succeeded, and
    /// prepares the checkpoint that records it: under the lock, so checkpoints are
    /// ordered and carry the current log start offset. The caller writes it after
    /// releasing the lock (see [`checkpoint`]).
    pub fn finish_flush(&mut self, plan: FlushPlan) -> io::Result<CheckpointWrite> {
        // A plan overtaken by a roll (which fsyncs and moves the point itself) is older.
        // One overtaken by a truncation or reset describes bytes since cut or rewritten:
        // the reopen already set the recovery point at the new end.
        if plan.generation == self.generation
            && plan.checkpoint.next_offset >= self.recovery_point.next_offset
        {
            self.recovery_point = plan.checkpoint;
        }
        self.prepare_checkpoint(self.checkpoint())
    }

    /// Stops checkpoint writes before the log's directory is removed, waiting for one
    /// in progress.
    pub fn close_checkpoints(&self) {
        self.checkpoints.close();
    }

    /// The log's checkpoint writer, the same for the log's whole life (truncation and
    /// reset keep it), so a holder can close it without the log lock.
    pub fn checkpoint_writer(&self) -> Arc<CheckpointWriter> {
        self.checkpoints.clone()
    }

    /// Before a truncation or reset changes any file: no checkpoint, producer snapshot
    /// or flush plan prepared so far may take effect afterwards (see [`checkpoint`]).
    fn fence_checkpoints(&mut self) {
        self.checkpoint_sequence += 1;
        self.generation += 1;
        self.checkpoints.fence(self.checkpoint_sequence);
    }

    /// The active segment's current end: the recovery point once it is fsynced.
    fn live_position(&self) -> format::Checkpoint {
        let active = self.active();
        format::Checkpoint {
            log_start_offset: self.log_start_offset,
            segment_base: active.base_offset,
            position: active.size,
            next_offset: active.next_offset,
            max_timestamp: active.max_timestamp,
            offset_of_max_timestamp: active.offset_of_max_timestamp,
        }
    }

    /// What `partition.checkpoint` should say now: the last fsynced point and the
    /// current log start offset.
    fn checkpoint(&self) -> format::Checkpoint {
        format::Checkpoint {
            log_start_offset: self.log_start_offset,
            ..self.recovery_point
        }
    }

    /// Writes `partition.checkpoint`, and first `producers.snapshot` if producer state
    /// changed, so the snapshot is never older than the checkpoint's recovery point.
    fn write_checkpoint(&mut self, checkpoint: format::Checkpoint) -> io::Result<()> {
        self.prepare_checkpoint(checkpoint)?.write()
    }

    /// Prepares a checkpoint write (and queues a producer snapshot if producer state
    /// changed) to run now or after the lock is released; see [`checkpoint`]. A first
    /// leader epoch not yet on disk (`epochs_unsaved`) is saved here, before any
    /// checkpoint that could make recovery trust the log without it.
    fn prepare_checkpoint(
        &mut self,
        checkpoint: format::Checkpoint,
    ) -> io::Result<CheckpointWrite> {
        if self.epochs_unsaved {
            self.epochs.save(&self.dir)?;
            self.epochs_unsaved = false;
        }
        if self.producers.take_dirty() {
            let txnindex = self.open_txnindex(self.active().base_offset);
            self.checkpoints
                .set_snapshot(self.producers.encode(), txnindex);
        }
        self.checkpoint_sequence += 1;
        Ok(CheckpointWrite {
            writer: self.checkpoints.clone(),
            sequence: self.checkpoint_sequence,
            dir: self.dir.clone(),
            checkpoint,
        })
    }

    /// Loads `producers.snapshot`, drops what recovery truncated, and replays the
    /// idempotent batches after the checkpoint's recovery point (the tail recovery
    /// scanned; the whole last segment if there was no checkpoint).
    fn recover_producers(
        &mut self,
        checkpoint: Option<format::Checkpoint>,
        now_ms: i64,
    ) -> io::Result<()> {
        self.producers = match fs::read(self.dir.join(PRODUCERS_FILE)) {
            Ok(bytes) => ProducerState::decode(&bytes).unwrap_or_else(|| {
                warn!(dir = %self.dir.display(), "producer snapshot is damaged; idempotent producers start over");
                ProducerState::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => ProducerState::default(),
            Err(e) => return Err(e),
        };
        self.producers.truncate(self.log_end_offset());
        let (from_base, from_position) = match checkpoint {
            // A byte position holds only in the active segment: a sealed one may have been
            // rewritten by a compaction pass (or merged into an earlier one) since the
            // checkpoint was written. Then the segment holding its base is replayed whole
            // (batches and markers already known are skipped).
            Some(c) if c.segment_base == self.active().base_offset => (c.segment_base, c.position),
            Some(c) => (
                self.segments
                    .range(..=c.segment_base)
                    .next_back()
                    .map_or(c.segment_base, |(&base, _)| base),
                0,
            ),
            None => (self.active().base_offset, 0),
        };
        let mut scanned = Vec::new();
        for segment in self.segments.range(from_base..).map(|(_, s)| s) {
            let from = if segment.base_offset == from_base {
                from_position
            } else {
                0
            };
            let mut error = None;
            follower::for_each_header(segment, from, |position, h| {
                if h.producer_id < 0 {
                    return true;
                }
                let marker = if h.is_control() && h.size <= txn::MAX_CONTROL_BATCH_LEN {
                    match segment.read_at(position, h.size) {
                        Ok(bytes) => txn::marker_info(&bytes, h),
                        Err(e) => {
                            error = Some(e);
                            return false;
                        }
                    }
                } else {
                    None
                };
                scanned.push((*h, marker));
                true
            })?;
            if let Some(e) = error {
                return Err(e);
            }
        }
        for (header, marker) in scanned {
            self.record_producer(&header, marker, now_ms)?;
        }
        Ok(())
    }

    /// Forgets idempotent producers idle for longer than `max_idle_ms`.
    pub fn expire_producers(&mut self, now_ms: i64, max_idle_ms: i64) {
        self.producers.expire(now_ms, max_idle_ms);
    }
}

const CHECKPOINT_FILE: &str = "partition.checkpoint";
/// The producers' state file of a partition directory; a restore from the bucket writes
/// the remote tier's snapshot here before opening the log.
pub const PRODUCERS_FILE: &str = "producers.snapshot";

/// A produce request's records for one partition, validated and copied, ready to append.
pub struct Prepared {
    buf: Vec<u8>,
    headers: Vec<BatchHeader>,
    records: i64,
    /// Each batch's records section inflated, in bytes, as [`prepare_with`]'s walk
    /// measured it; empty where nothing measured it (replica and marker batches).
    /// Recompression pledges it to the compressor.
    inflated: Vec<u64>,
}

impl Prepared {
    /// The bytes of each batch, in order.
    pub fn batches(&self) -> impl Iterator<Item = &[u8]> {
        let mut position = 0;
        self.headers.iter().map(move |header| {
            let batch = &self.buf[position..position + header.size];
            position += header.size;
            batch
        })
    }

    /// Bytes [`prepare_with`] inflated to check these batches.
    pub fn inflated_total(&self) -> u64 {
        self.inflated.iter().sum()
    }
}

/// What a topic asks of the batches a client produces, besides their format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceRules {
    pub max_message_bytes: usize,
    /// Compacted topics: every record needs a key.
    pub require_keys: bool,
    /// CreateTime topics: `[low, high]` every record's timestamp must fall in.
    pub timestamps: Option<(i64, i64)>,
}

impl LogConfig {
    /// The rules for a batch produced at `now_ms`.
    pub fn produce_rules(&self, now_ms: i64) -> ProduceRules {
        let timestamps = (!self.log_append_time).then(|| {
            (
                now_ms.saturating_sub(self.timestamp_before_max_ms),
                now_ms.saturating_add(self.timestamp_after_max_ms),
            )
        });
        ProduceRules {
            max_message_bytes: self.max_message_bytes,
            require_keys: self.compact,
            timestamps,
        }
    }
}

/// Offsets one segment may span. Relative offsets in the index are u32; staying within
/// half of that leaves every relative offset a non-negative i32 as well, as Kafka's are.
pub const MAX_SEGMENT_OFFSET_SPAN: i64 = (u32::MAX / 2) as i64;

/// Validates every batch of a produce request (without any lock held) and copies the
/// bytes so the broker can patch offsets. All batches are valid or none is appended.
///
/// Records are walked (compressed ones inflated as a stream) so that each batch holds
/// exactly the records its header counts: offsets stay dense whatever a client claims.
/// `inflate_limit` bounds the bytes inflated for the whole request
/// ([`BatchError::Inflated`] past it); `require_keys` is set for compacted topics.
pub fn prepare(
    records: &[u8],
    max_message_bytes: usize,
    require_keys: bool,
    inflate_limit: u64,
) -> Result<Prepared, BatchError> {
    let rules = ProduceRules {
        max_message_bytes,
        require_keys,
        timestamps: None,
    };
    prepare_with(records, &rules, inflate_limit)
}

/// [`prepare`] under a topic's [`ProduceRules`], record timestamps included.
pub fn prepare_with(
    records: &[u8],
    rules: &ProduceRules,
    inflate_limit: u64,
) -> Result<Prepared, BatchError> {
    let ProduceRules {
        max_message_bytes,
        require_keys,
        timestamps,
    } = *rules;
    let mut headers = Vec::new();
    let mut inflated = Vec::new();
    // Batches whose header max timestamp is not their records' max: (position, size,
    // max).
    let mut wrong_max = Vec::new();
    let mut position = 0;
    let mut budget = records::Budget::new(inflate_limit);
    while position < records.len() {
        let rest = &records[position..];
        let mut header = format::validate_batch(rest, max_message_bytes)?;
        let batch = &rest[..header.size];
        let left = budget.left();
        let max_timestamp =
            records::check_produced_within(batch, &header, require_keys, timestamps, &mut budget)?;
        // The time index, time retention and ListOffsets trust the header's max, so it
        // is the records' (as Kafka's LogValidator rewrites it). A LogAppendTime batch
        // is stamped at append instead.
        if header.max_timestamp != max_timestamp && !format::is_log_append_time(batch) {
            header.max_timestamp = max_timestamp;
            wrong_max.push((position, header.size, max_timestamp));
        }
        // The walk charges every inflated byte of a compressed batch; an uncompressed
        // batch's records are its bytes.
        inflated.push(if format::codec(batch) == Ok(format::Codec::None) {
            (header.size - format::BATCH_HEADER_LEN) as u64
        } else {
            left - budget.left()
        });
        position += header.size;
        headers.push(header);
    }
    if headers.is_empty() {
        return Err(BatchError::Truncated(0));
    }
    let records_count = headers.iter().map(|h| i64::from(h.record_count)).sum();
    let mut buf = records.to_vec();
    for (position, size, max_timestamp) in wrong_max {
        format::set_max_timestamp(&mut buf[position..position + size], max_timestamp);
    }
    Ok(Prepared {
        buf,
        headers,
        records: records_count,
        inflated,
    })
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod damage_tests;

#[cfg(test)]
mod txn_tests;
