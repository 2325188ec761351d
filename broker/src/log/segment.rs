//! One segment of a partition log: the `.log` file and its two sparse indexes.
//! Byte layouts are in [`super::format`].
//!
//! The active segment holds its three files open while it is written; a sealed one holds
//! none and opens them through the bounded cache in [`super::files`] when it is read. An
//! idle active segment whose writes are all fsynced lets go of its files too
//! ([`Segment::release`]); its next write opens them again ([`Segment::pin`]), so
//! descriptors follow the partitions being written, not the partitions that exist.
//!
//! The empty segment a log starts with (a new partition, or a log emptied down to its
//! start offset) is *deferred*: its files are created by its first write
//! ([`Segment::deferred`], [`Segment::pin`]), so creating a partition costs a directory,
//! not a directory and three files. Until then it is empty and nothing reads its files
//! (reads skip empty segments; flushes skip files not held open). Only a log's first
//! segment is deferred: a rolled segment's files exist before anything is appended after
//! the roll, so the `.log` files on disk always say where every later segment starts.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::SegmentFile;

use super::format::{
    self, BATCH_PREFIX_LEN, INDEX_HEADER_LEN, OFFSET_ENTRY_LEN, OFFSET_INDEX_MAGIC, TIME_ENTRY_LEN,
    TIME_INDEX_MAGIC, offset_entry, time_entry,
};

/// A fixed-entry-size index file: header, then entries appended in order.
#[derive(Debug)]
pub struct IndexFile {
    file: SegmentFile,
    entry_len: u64,
    entries: u64,
}

impl IndexFile {
    /// Opens the index, creating it if absent. Returns `rebuilt = true` when the file was
    /// missing or its header unreadable, in which case it is empty and must be refilled.
    fn open(path: PathBuf, magic: &[u8; 4], entry_len: u64) -> io::Result<(IndexFile, bool)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        let mut header = [0u8; INDEX_HEADER_LEN as usize];
        let header_ok = len >= INDEX_HEADER_LEN
            && file.read_exact_at(&mut header, 0).is_ok()
            && format::index_header_ok(&header, magic);
        if !header_ok {
            file.set_len(0)?;
            file.write_all_at(&format::index_header(magic), 0)?;
        }
        let mut index = IndexFile {
            file: SegmentFile::pinned(path, file),
            entry_len,
            entries: 0,
        };
        if !header_ok {
            return Ok((index, true));
        }
        // A torn trailing entry (crash mid-write) is dropped.
        index.entries = (len - INDEX_HEADER_LEN) / entry_len;
        Ok((index, false))
    }

    fn read_entry(&self, n: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file
            .open()?
            .read_exact_at(buf, INDEX_HEADER_LEN + n * self.entry_len)
    }

    fn append(&mut self, entry: &[u8]) -> io::Result<()> {
        writable(&self.file)?
            .write_all_at(entry, INDEX_HEADER_LEN + self.entries * self.entry_len)?;
        self.entries += 1;
        Ok(())
    }

    fn truncate_entries(&mut self, entries: u64) -> io::Result<()> {
        self.entries = entries.min(self.entries);
        writable(&self.file)?.set_len(INDEX_HEADER_LEN + self.entries * self.entry_len)
    }

    /// Binary search for the last entry whose key (decoded by `key`) is <= `target`.
    fn floor(&self, target: i64, key: impl Fn(&[u8]) -> i64) -> io::Result<Option<u64>> {
        let mut buf = vec![0u8; self.entry_len as usize];
        let (mut lo, mut hi) = (0u64, self.entries);
        if hi == 0 {
            return Ok(None);
        }
        // One handle for the whole search: a cache lookup per probe would cost more than
        // the read.
        let file = self.file.open()?;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            file.read_exact_at(&mut buf, INDEX_HEADER_LEN + mid * self.entry_len)?;
            if key(&buf) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo.checked_sub(1))
    }
}

/// The handle a write needs: only an active segment's files are written.
fn writable(file: &SegmentFile) -> io::Result<&Arc<File>> {
    file.writable().ok_or_else(|| {
        io::Error::other(format!(
            "{} belongs to a sealed segment and is not written",
            file.path().display()
        ))
    })
}

/// A segment of the log. Only the last segment of a log is appended to.
#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    /// The `.log` file. Readers get an `Arc<File>` of it so a fetch can read without
    /// holding the log lock; an unlinked or evicted file stays readable while they hold it.
    log: SegmentFile,
    /// Bytes of whole, valid batches. Readers never look past it.
    pub size: u64,
    /// Offset after the last batch in the segment.
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// When the segment started, for segment.ms: the wall clock at creation, or the first
    /// batch's timestamp when reopened.
    pub created_ms: i64,
    /// When the segment stopped being active (or, for segments found sealed at start-up,
    /// when the broker started): the age of an upload backlog is measured from it.
    pub sealed_ms: i64,
    offset_index: IndexFile,
    time_index: IndexFile,
    bytes_since_index_entry: u64,
    /// True when the last time-index entry holds `max_timestamp`.
    time_index_current: bool,
    /// Whether the three files exist: false only for a deferred segment not yet written.
    on_disk: bool,
}

/// What [`Segment::rollback`] restores.
pub struct AppendSnapshot {
    size: u64,
    next_offset: i64,
    offset_entries: u64,
    time_entries: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    bytes_since_index_entry: u64,
    time_index_current: bool,
}

/// Result of scanning a segment's bytes during recovery.
pub struct ScanOutcome {
    pub valid_size: u64,
    pub truncated_bytes: u64,
    pub batches: u64,
}

impl Segment {
    /// A new, empty segment with its files created (and held open).
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        let mut segment = Segment::deferred(dir, base_offset, now_ms);
        segment.pin()?;
        Ok(segment)
    }

    /// A new, empty segment whose files are created by its first write (see the module
    /// docs). It holds no descriptors and touches nothing on disk.
    pub fn deferred(dir: &Path, base_offset: i64, now_ms: i64) -> Segment {
        let index = |extension, entry_len| IndexFile {
            file: SegmentFile::closed(dir.join(format::segment_file_name(base_offset, extension))),
            entry_len,
            entries: 0,
        };
        Segment {
            base_offset,
            log: SegmentFile::closed(dir.join(format::segment_file_name(base_offset, "log"))),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            created_ms: now_ms,
            sealed_ms: now_ms,
            offset_index: index("index", OFFSET_ENTRY_LEN),
            time_index: index("timeindex", TIME_ENTRY_LEN),
            bytes_since_index_entry: 0,
            time_index_current: true,
            on_disk: false,
        }
    }

    /// Whether the segment's files exist (false: a deferred segment not yet written).
    pub fn on_disk(&self) -> bool {
        self.on_disk
    }

    /// Creates an empty segment's three files and holds them open.
    fn create_files(&mut self) -> io::Result<()> {
        let log_path = self.log.path().to_path_buf();
        let dir = log_path.parent().unwrap_or(Path::new("."));
        let base_offset = self.base_offset;
        // The new segment starts at the log end offset, so any file already at this base is
        // the leftover of a creation that failed half-way (or of an interrupted delete):
        // start all three files empty.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)?;
        file.set_len(0)?;
        for extension in ["index", "timeindex", "producers"] {
            match std::fs::remove_file(dir.join(format::segment_file_name(base_offset, extension)))
            {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let (offset_index, _) = IndexFile::open(
            dir.join(format::segment_file_name(base_offset, "index")),
            OFFSET_INDEX_MAGIC,
            OFFSET_ENTRY_LEN,
        )?;
        let (time_index, _) = IndexFile::open(
            dir.join(format::segment_file_name(base_offset, "timeindex")),
            TIME_INDEX_MAGIC,
            TIME_ENTRY_LEN,
        )?;
        self.log = SegmentFile::pinned(log_path, file);
        self.offset_index = offset_index;
        self.time_index = time_index;
        self.on_disk = true;
        Ok(())
    }

    /// Opens a segment written before. With `trusted_until = Some((position, next_offset,
    /// max_ts, max_ts_offset))` the bytes before `position` are taken as valid (they were
    /// fsynced when the checkpoint was written) and only what follows is scanned; with
    /// `None` the whole file is scanned. Sealed segments below the checkpoint are opened
    /// with their full size trusted. Invalid or torn bytes at the tail are truncated.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        trusted_until: Option<(u64, i64, i64, i64)>,
        index_interval_bytes: u64,
        now_ms: i64,
        compacted: bool,
    ) -> io::Result<(Segment, ScanOutcome)> {
        let log_path = dir.join(format::segment_file_name(base_offset, "log"));
        let file = OpenOptions::new().read(true).append(true).open(&log_path)?;
        let file_len = file.metadata()?.len();
        let (offset_index, offset_rebuilt) = IndexFile::open(
            dir.join(format::segment_file_name(base_offset, "index")),
            OFFSET_INDEX_MAGIC,
            OFFSET_ENTRY_LEN,
        )?;
        let (time_index, time_rebuilt) = IndexFile::open(
            dir.join(format::segment_file_name(base_offset, "timeindex")),
            TIME_INDEX_MAGIC,
            TIME_ENTRY_LEN,
        )?;
        let mut segment = Segment {
            base_offset,
            log: SegmentFile::pinned(log_path, file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            created_ms: now_ms,
            sealed_ms: now_ms,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
            time_index_current: true,
            on_disk: true,
        };
        let indexes_rebuilt = offset_rebuilt || time_rebuilt;
        let start = match trusted_until {
            Some((position, next_offset, max_ts, max_ts_offset))
                if position <= file_len && !indexes_rebuilt =>
            {
                segment.size = position;
                segment.next_offset = next_offset;
                segment.max_timestamp = max_ts;
                segment.offset_of_max_timestamp = max_ts_offset;
                // The checkpoint may know a larger timestamp than the last time entry.
                segment.time_index_current = max_ts < 0;
                position
            }
            _ => {
                if indexes_rebuilt {
                    segment.offset_index.truncate_entries(0)?;
                    segment.time_index.truncate_entries(0)?;
                }
                0
            }
        };
        segment.drop_index_entries_from(start)?;
        segment.bytes_since_index_entry = segment.bytes_since_last_entry()?;
        let outcome = segment.scan_from(start, file_len, index_interval_bytes, compacted)?;
        // segment.ms counts from the first batch's timestamp (as in Kafka), so restarts do
        // not keep an idle segment from rolling; producer clocks ahead of ours are capped.
        if segment.size >= format::BATCH_HEADER_LEN as u64 {
            let mut header = [0u8; format::BATCH_HEADER_LEN];
            segment.log.open()?.read_exact_at(&mut header, 0)?;
            let first = format::parse_validated_header(&header).max_timestamp;
            if first > 0 {
                segment.created_ms = first.min(now_ms);
            }
        }
        Ok((segment, outcome))
    }

    /// Opens a sealed segment whose bytes are all trusted: only its size and the last
    /// entries of its indexes are read, so start-up does not grow with the log's length.
    /// A segment whose indexes are missing is scanned and its indexes rebuilt. Its files
    /// are closed again before it returns: a sealed segment holds no descriptors.
    pub fn open_sealed(
        dir: &Path,
        base_offset: i64,
        next_segment_base: i64,
        index_interval_bytes: u64,
        now_ms: i64,
        compacted: bool,
    ) -> io::Result<(Segment, ScanOutcome)> {
        let log_path = dir.join(format::segment_file_name(base_offset, "log"));
        let file_len = std::fs::metadata(&log_path)?.len();
        let mut last_time = [0u8; TIME_ENTRY_LEN as usize];
        let (time_index, time_rebuilt) = IndexFile::open(
            dir.join(format::segment_file_name(base_offset, "timeindex")),
            TIME_INDEX_MAGIC,
            TIME_ENTRY_LEN,
        )?;
        let trusted = if !time_rebuilt && time_index.entries > 0 {
            time_index.read_entry(time_index.entries - 1, &mut last_time)?;
            let (ts, rel) = time_entry(&last_time);
            Some((
                file_len,
                next_segment_base,
                ts,
                base_offset + i64::from(rel),
            ))
        } else {
            None
        };
        drop(time_index);
        let (mut segment, outcome) = Segment::open(
            dir,
            base_offset,
            trusted,
            index_interval_bytes,
            now_ms,
            compacted,
        )?;
        segment.release();
        Ok((segment, outcome))
    }

    /// Stops holding this segment's files open; reads open them through the bounded cache
    /// from now on, and a write opens them again ([`Segment::pin`]). Only for a sealed
    /// segment, or an active one whose writes are all fsynced: an error writing back data
    /// is reported on the descriptors open when it happens, so a descriptor that wrote
    /// unsynced data must stay open until its fsync.
    pub fn release(&mut self) {
        self.log.release();
        self.offset_index.file.release();
        self.time_index.file.release();
    }

    /// Holds this segment's files open for writing again: the active segment about to be
    /// written after it was released while idle, or a sealed segment that becomes the
    /// active one (recovery dropped the segments after a hole). A deferred segment's
    /// files are created here.
    pub fn pin(&mut self) -> io::Result<()> {
        if !self.on_disk {
            return self.create_files();
        }
        if self.log.writable().is_none() {
            let log = OpenOptions::new()
                .read(true)
                .append(true)
                .open(self.log.path())?;
            self.log.pin(log);
        }
        for index in [&mut self.offset_index, &mut self.time_index] {
            if index.file.writable().is_none() {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(index.file.path())?;
                index.file.pin(file);
            }
        }
        Ok(())
    }

    /// The `.log` file, open: the active segment's own handle, or a sealed segment's from
    /// the cache.
    /// `len` bytes of the `.log` at `position` (a control batch's first record).
    pub fn read_at(&self, position: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.log_file()?.read_exact_at(&mut buf, position)?;
        Ok(buf)
    }

    pub fn log_file(&self) -> io::Result<Arc<File>> {
        self.log.open()
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// Validates batches from `start` to `end`, rebuilding index entries as it goes, and
    /// truncates the file at the first invalid batch.
    fn scan_from(
        &mut self,
        start: u64,
        end: u64,
        index_interval_bytes: u64,
        compacted: bool,
    ) -> io::Result<ScanOutcome> {
        let mut position = start;
        let mut batches = 0;
        let mut header = [0u8; BATCH_PREFIX_LEN];
        let file = self.log.open()?;
        while position < end {
            if end - position < BATCH_PREFIX_LEN as u64 {
                break;
            }
            file.read_exact_at(&mut header, position)?;
            let Some((base_offset, size, _)) = format::read_batch_prefix(&header) else {
                break;
            };
            // The base offset is outside the CRC: a batch that does not continue the
            // offsets exactly is damage, not data. Compaction leaves gaps, so in a
            // compacted log offsets need only increase.
            let follows = if compacted {
                base_offset >= self.next_offset
            } else {
                base_offset == self.next_offset
            };
            if position + size as u64 > end || !follows {
                break;
            }
            let mut batch = vec![0u8; size];
            file.read_exact_at(&mut batch, position)?;
            if !format::crc_matches(&batch) {
                break;
            }
            let parsed = format::parse_validated_header(&batch);
            self.index_batch(&parsed, position, index_interval_bytes)?;
            position += size as u64;
            self.size = position;
            self.next_offset = parsed.next_offset();
            batches += 1;
        }
        let truncated_bytes = end - self.size;
        if truncated_bytes > 0 {
            writable(&self.log)?.set_len(self.size)?;
        }
        Ok(ScanOutcome {
            valid_size: self.size,
            truncated_bytes,
            batches,
        })
    }

    fn drop_index_entries_from(&mut self, position: u64) -> io::Result<()> {
        let keep = self
            .offset_index
            .floor(position as i64 - 1, |b| i64::from(offset_entry(b).1))?;
        let keep_entries = keep.map_or(0, |n| n + 1);
        self.offset_index.truncate_entries(keep_entries)?;
        // Keep time entries whose batch lies before `position`.
        let mut buf = [0u8; OFFSET_ENTRY_LEN as usize];
        let last_kept_rel = if keep_entries > 0 {
            self.offset_index.read_entry(keep_entries - 1, &mut buf)?;
            Some(offset_entry(&buf).0)
        } else {
            None
        };
        let mut tbuf = [0u8; TIME_ENTRY_LEN as usize];
        let mut time_keep = self.time_index.entries;
        while time_keep > 0 {
            self.time_index.read_entry(time_keep - 1, &mut tbuf)?;
            let (_, rel) = time_entry(&tbuf);
            if last_kept_rel.is_some_and(|last| rel <= last) {
                break;
            }
            time_keep -= 1;
        }
        self.time_index.truncate_entries(time_keep)
    }

    fn bytes_since_last_entry(&self) -> io::Result<u64> {
        if self.offset_index.entries == 0 {
            return Ok(u64::MAX);
        }
        let mut buf = [0u8; OFFSET_ENTRY_LEN as usize];
        self.offset_index
            .read_entry(self.offset_index.entries - 1, &mut buf)?;
        Ok(self.size.saturating_sub(u64::from(offset_entry(&buf).1)))
    }

    fn index_batch(
        &mut self,
        batch: &format::BatchHeader,
        position: u64,
        index_interval_bytes: u64,
    ) -> io::Result<()> {
        if batch.max_timestamp > self.max_timestamp {
            self.max_timestamp = batch.max_timestamp;
            self.offset_of_max_timestamp = batch.base_offset;
            self.time_index_current = false;
        }
        if self.bytes_since_index_entry >= index_interval_bytes {
            let relative = (batch.base_offset - self.base_offset) as u32;
            let mut entry = [0u8; OFFSET_ENTRY_LEN as usize];
            entry[..4].copy_from_slice(&relative.to_be_bytes());
            entry[4..].copy_from_slice(&(position as u32).to_be_bytes());
            self.offset_index.append(&entry)?;
            if !self.time_index_current {
                self.append_time_entry()?;
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry = self
            .bytes_since_index_entry
            .saturating_add(batch.size as u64);
        Ok(())
    }

    fn append_time_entry(&mut self) -> io::Result<()> {
        let relative = (self.offset_of_max_timestamp - self.base_offset) as u32;
        let mut entry = [0u8; TIME_ENTRY_LEN as usize];
        entry[..8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&relative.to_be_bytes());
        self.time_index.append(&entry)?;
        self.time_index_current = true;
        Ok(())
    }

    /// The state an append can change, to undo a failed one.
    pub fn snapshot(&self) -> AppendSnapshot {
        AppendSnapshot {
            size: self.size,
            next_offset: self.next_offset,
            offset_entries: self.offset_index.entries,
            time_entries: self.time_index.entries,
            max_timestamp: self.max_timestamp,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
            bytes_since_index_entry: self.bytes_since_index_entry,
            time_index_current: self.time_index_current,
        }
    }

    /// Undoes appends made since `snapshot`: the file is opened for append, so bytes past
    /// the snapshot must go for the next append to land at `size`, and index entries for
    /// batches that are not there must go too. Best effort: if truncation fails as well
    /// (the disk is gone), the error that caused the rollback stands and recovery cleans
    /// up at the next start.
    pub fn rollback(&mut self, snapshot: &AppendSnapshot) {
        if let Some(file) = self.log.writable() {
            let _ = file.set_len(snapshot.size);
        }
        let _ = self.offset_index.truncate_entries(snapshot.offset_entries);
        let _ = self.time_index.truncate_entries(snapshot.time_entries);
        self.size = snapshot.size;
        self.next_offset = snapshot.next_offset;
        self.max_timestamp = snapshot.max_timestamp;
        self.offset_of_max_timestamp = snapshot.offset_of_max_timestamp;
        self.bytes_since_index_entry = snapshot.bytes_since_index_entry;
        self.time_index_current = snapshot.time_index_current;
    }

    /// Appends one validated, patched batch. On error nothing of it remains.
    pub fn append(
        &mut self,
        batch: &[u8],
        header: &format::BatchHeader,
        index_interval_bytes: u64,
    ) -> io::Result<()> {
        self.pin()?;
        let snapshot = self.snapshot();
        if self.size == 0 {
            self.bytes_since_index_entry = u64::MAX;
        }
        let position = self.size;
        let written = writable(&self.log)
            .and_then(|file| (&**file).write_all(batch))
            .and_then(|()| self.index_batch(header, position, index_interval_bytes));
        if let Err(e) = written {
            self.rollback(&snapshot);
            return Err(e);
        }
        self.size += batch.len() as u64;
        self.next_offset = header.next_offset();
        Ok(())
    }

    /// Called when the segment stops being the active one: the time index gets an entry for
    /// the segment's largest timestamp, so it can be found without a scan after restart.
    pub fn seal(&mut self) -> io::Result<()> {
        if !self.time_index_current && self.max_timestamp >= 0 {
            self.pin()?;
            self.append_time_entry()?;
        }
        Ok(())
    }

    /// Rewrites a sealed segment's two indexes from its `.log` (a read found an entry
    /// that does not lead to its batch). Batch headers are read, not whole batches; the
    /// indexes stop at the first batch whose framing is damaged, so reads past it walk
    /// into the damage and report it. The segment's size and offsets are not changed.
    /// `active`: whether this is the log's active segment, which is not sealed after the
    /// rebuild (an idle active segment may have released its files, so whether they are
    /// open says nothing). Files not open are opened for the rebuild and released after.
    pub fn rebuild_indexes(&mut self, index_interval_bytes: u64, active: bool) -> io::Result<()> {
        let sealed = !active;
        let was_open = self.log.writable().is_some();
        self.pin()?;
        let result = (|| {
            self.offset_index.truncate_entries(0)?;
            self.time_index.truncate_entries(0)?;
            let (max_timestamp, offset_of_max) = (self.max_timestamp, self.offset_of_max_timestamp);
            self.max_timestamp = -1;
            self.time_index_current = true;
            self.bytes_since_index_entry = u64::MAX;
            let file = self.log.open()?;
            let mut header = [0u8; format::BATCH_HEADER_LEN];
            let mut position = 0u64;
            while position + format::BATCH_HEADER_LEN as u64 <= self.size {
                file.read_exact_at(&mut header, position)?;
                let Some((base, size, _)) = format::read_batch_prefix(&header) else {
                    break;
                };
                let relative = base.checked_sub(self.base_offset).unwrap_or(-1);
                if position + size as u64 > self.size
                    || !(0..=i64::from(u32::MAX)).contains(&relative)
                {
                    break;
                }
                let parsed = format::parse_validated_header(&header);
                self.index_batch(&parsed, position, index_interval_bytes)?;
                position += size as u64;
            }
            if sealed {
                self.seal()?;
            }
            // What the log knew stays: the scan stops at damage.
            if max_timestamp > self.max_timestamp {
                self.max_timestamp = max_timestamp;
                self.offset_of_max_timestamp = offset_of_max;
            }
            self.offset_index
                .file
                .writable()
                .map(|f| f.sync_data())
                .transpose()?;
            self.time_index
                .file
                .writable()
                .map(|f| f.sync_data())
                .transpose()?;
            Ok(())
        })();
        if sealed || !was_open {
            self.release();
        }
        result
    }

    /// fsyncs the active segment's files (a sealed segment's were fsynced when it rolled).
    /// Files not held open are skipped: they were fsynced before they were released.
    pub fn flush(&self) -> io::Result<()> {
        for file in [&self.log, &self.offset_index.file, &self.time_index.file] {
            if let Some(file) = file.writable() {
                file.sync_data()?;
            }
        }
        Ok(())
    }

    /// Handles to fsync this segment's files without holding the log lock (none for files
    /// not held open: see [`Segment::flush`]).
    pub fn sync_handles(&self) -> io::Result<Vec<File>> {
        [&self.log, &self.offset_index.file, &self.time_index.file]
            .into_iter()
            .filter_map(|file| file.writable().map(|f| f.try_clone()))
            .collect()
    }

    /// Whether this segment holds its files open for writing.
    pub fn is_pinned(&self) -> bool {
        self.log.writable().is_some()
    }

    /// Paths of the offset and time index files (uploads read them whole).
    pub fn index_paths(&self) -> (&Path, &Path) {
        (self.offset_index.file.path(), self.time_index.file.path())
    }

    /// `<base>.producers`: the idempotent producers' state as of this segment's end,
    /// written when it was sealed (see [`super::producers`]); uploaded with it.
    pub fn producers_path(&self) -> PathBuf {
        self.log.path().with_extension("producers")
    }

    pub fn delete_files(&self) -> io::Result<()> {
        let dir = self.log.path().parent().unwrap_or(Path::new("."));
        delete_files(dir, self.base_offset)
    }

    /// Byte position from which to scan for `offset`: the floor entry of the offset index.
    pub fn lookup_position(&self, offset: i64) -> io::Result<u64> {
        self.lookup(offset).map(|(position, _)| position)
    }

    /// The floor entry of the offset index for `offset`: the position of an indexed batch
    /// and that batch's base offset; (0, segment base) if none.
    pub fn lookup(&self, offset: i64) -> io::Result<(u64, i64)> {
        let relative = offset - self.base_offset;
        let found = self
            .offset_index
            .floor(relative, |b| i64::from(offset_entry(b).0))?;
        let mut buf = [0u8; OFFSET_ENTRY_LEN as usize];
        match found {
            Some(n) => {
                self.offset_index.read_entry(n, &mut buf)?;
                let (relative, position) = offset_entry(&buf);
                Ok((u64::from(position), self.base_offset + i64::from(relative)))
            }
            None => Ok((0, self.base_offset)),
        }
    }

    /// Byte position from which to scan for the first batch whose max timestamp is at least
    /// `timestamp` (and that batch's base offset, as [`Segment::lookup`]): the position of
    /// the last indexed batch whose running max is below it.
    pub fn lookup_time(&self, timestamp: i64) -> io::Result<(u64, i64)> {
        let found = self.time_index.floor(timestamp - 1, |b| time_entry(b).0)?;
        let Some(n) = found else {
            return Ok((0, self.base_offset));
        };
        let mut buf = [0u8; TIME_ENTRY_LEN as usize];
        self.time_index.read_entry(n, &mut buf)?;
        let (_, relative) = time_entry(&buf);
        self.lookup(self.base_offset + i64::from(relative))
    }
}

/// Deletes the files of the segment at `base_offset` in `dir`, without opening them.
pub fn delete_files(dir: &Path, base_offset: i64) -> io::Result<()> {
    // Indexes first: a crash part-way leaves a .log without indexes (rebuilt at
    // start-up), never indexes without their .log.
    for extension in [
        "producers",
        super::txn::EXTENSION,
        "index",
        "timeindex",
        "log",
    ] {
        match std::fs::remove_file(dir.join(format::segment_file_name(base_offset, extension))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

pub fn read_prefix_at(
    file: &File,
    position: u64,
    size: u64,
) -> io::Result<Option<(i64, usize, i32)>> {
    if position + BATCH_PREFIX_LEN as u64 > size {
        return Ok(None);
    }
    let mut header = [0u8; BATCH_PREFIX_LEN];
    file.read_exact_at(&mut header, position)?;
    Ok(format::read_batch_prefix(&header))
}
