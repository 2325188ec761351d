//! Open files of sealed segments, bounded.
//!
//! A sealed segment holds no file descriptor of its own: a read, an index lookup, an
//! upload or a cleaner pass opens its files through this cache, which keeps at most
//! `capacity` of them open and closes the least recently used beyond that. Without it
//! descriptors grew with the number of segments, and a client that made many tiny
//! segments took every descriptor the process had (and again after each restart).
//!
//! The cache is process-wide because the limit it enforces, RLIMIT_NOFILE, is.
//!
//! Invariants:
//! - a handle is keyed by the [`SegmentFile`] that opened it, not by its path: a segment
//!   whose files are replaced on disk (a compaction swap, a truncation) is a new
//!   `SegmentFile`, so nobody is served a descriptor of the file that was there before;
//! - dropping a `SegmentFile` removes its handle, so the descriptor of a deleted segment
//!   is closed at once and its disk space freed;
//! - eviction only drops the cache's reference: a read in progress holds its own
//!   `Arc<File>` and finishes on it. Descriptors open at a time are therefore bounded by
//!   `capacity` plus the reads in flight.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// The capacity until [`set_capacity`] is called (unit tests, tools).
const DEFAULT_CAPACITY: usize = 1024;

static CACHE: LazyLock<OpenFiles> = LazyLock::new(|| OpenFiles::new(DEFAULT_CAPACITY));
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Sets how many sealed-segment files may be open at once (`log_max_open_segment_files`).
pub fn set_capacity(capacity: usize) {
    CACHE.set_capacity(capacity);
}

/// Sealed-segment files open in the cache now (a gauge for /metrics and tests).
pub fn open_count() -> usize {
    CACHE.len()
}

/// How many times a sealed-segment file had to be opened (cache misses).
pub fn opens_total() -> u64 {
    CACHE.opens.load(Ordering::Relaxed)
}

/// A least-recently-used map from a file's id to its open handle.
pub struct OpenFiles {
    capacity: AtomicUsize,
    opens: AtomicU64,
    /// A std mutex: it is never held across an await, and an open(2) under it is short.
    lru: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    by_id: HashMap<u64, (Arc<File>, u64)>,
    by_tick: BTreeMap<u64, u64>,
}

impl OpenFiles {
    pub fn new(capacity: usize) -> OpenFiles {
        OpenFiles {
            capacity: AtomicUsize::new(capacity.max(1)),
            opens: AtomicU64::new(0),
            lru: Mutex::new(Lru::default()),
        }
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
        let mut lru = self.lock();
        lru.evict_to(capacity.max(1));
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The map holds no invariant a panicking holder could break half-way that would
        // matter: at worst a handle is missing and is opened again.
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open handle of file `id` at `path`, opening it read-only on a miss.
    pub fn get(&self, id: u64, path: &Path) -> io::Result<Arc<File>> {
        {
            let mut lru = self.lock();
            lru.tick += 1;
            let tick = lru.tick;
            if let Some((file, used)) = lru.by_id.get_mut(&id) {
                let file = file.clone();
                let old = std::mem::replace(used, tick);
                lru.by_tick.remove(&old);
                lru.by_tick.insert(tick, id);
                return Ok(file);
            }
        }
        // Opened outside the lock: a slow disk must not stall every other reader.
        let file = Arc::new(File::open(path)?);
        self.opens.fetch_add(1, Ordering::Relaxed);
        let capacity = self.capacity.load(Ordering::Relaxed);
        let mut lru = self.lock();
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((existing, used)) = lru.by_id.get_mut(&id) {
            // Another reader opened it meanwhile: keep one handle.
            let existing = existing.clone();
            let old = std::mem::replace(used, tick);
            lru.by_tick.remove(&old);
            lru.by_tick.insert(tick, id);
            return Ok(existing);
        }
        lru.by_id.insert(id, (file.clone(), tick));
        lru.by_tick.insert(tick, id);
        lru.evict_to(capacity);
        Ok(file)
    }

    /// Closes file `id`'s handle, if the cache holds one.
    pub fn forget(&self, id: u64) {
        let mut lru = self.lock();
        if let Some((_, tick)) = lru.by_id.remove(&id) {
            lru.by_tick.remove(&tick);
        }
    }
}

impl Lru {
    fn evict_to(&mut self, capacity: usize) {
        while self.by_id.len() > capacity {
            let Some((_, id)) = self.by_tick.pop_first() else {
                break;
            };
            self.by_id.remove(&id);
        }
    }
}

/// One file of a segment: held open while the segment is active (it is written, and an
/// fsync error must be seen on the descriptor that wrote), opened through the cache once
/// the segment is sealed.
#[derive(Debug)]
pub struct SegmentFile {
    id: u64,
    path: PathBuf,
    pinned: Option<Arc<File>>,
}

impl SegmentFile {
    /// A file held open by `file`.
    pub fn pinned(path: PathBuf, file: File) -> SegmentFile {
        SegmentFile {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path,
            pinned: Some(Arc::new(file)),
        }
    }

    /// A file not held open: opened through the cache when read (a deferred segment's
    /// file, not yet created, is never read: see `Segment::deferred`).
    pub fn closed(path: PathBuf) -> SegmentFile {
        SegmentFile {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path,
            pinned: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file: the pinned handle, or one from the cache (opened read-only).
    pub fn open(&self) -> io::Result<Arc<File>> {
        match &self.pinned {
            Some(file) => Ok(file.clone()),
            None => CACHE.get(self.id, &self.path),
        }
    }

    /// The pinned handle, for writes; `None` once sealed.
    pub fn writable(&self) -> Option<&Arc<File>> {
        self.pinned.as_ref()
    }

    /// Stops holding the file open: from now on it is opened through the cache.
    pub fn release(&mut self) {
        self.pinned = None;
    }

    /// Holds `file` (this file, opened for writing) open again.
    pub fn pin(&mut self, file: File) {
        CACHE.forget(self.id);
        self.pinned = Some(Arc::new(file));
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        if self.pinned.is_none() {
            CACHE.forget(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.log"));
                std::fs::write(&path, format!("file {i}")).expect("write");
                path
            })
            .collect()
    }

    #[test]
    fn holds_at_most_capacity_and_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = files(dir.path(), 5);
        let cache = OpenFiles::new(3);
        for (i, path) in paths.iter().enumerate() {
            cache.get(i as u64, path).expect("open");
            // 0 stays recently used, so it survives the others.
            cache.get(0, &paths[0]).expect("hit");
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.opens.load(Ordering::Relaxed), 5);
        cache.get(0, &paths[0]).expect("still cached");
        assert_eq!(cache.opens.load(Ordering::Relaxed), 5, "0 was a hit");
        cache.get(1, &paths[1]).expect("reopened");
        assert_eq!(cache.opens.load(Ordering::Relaxed), 6, "1 was evicted");
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn an_evicted_handle_stays_readable_by_its_holder() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = files(dir.path(), 3);
        let cache = OpenFiles::new(1);
        let held = cache.get(0, &paths[0]).expect("open");
        cache.get(1, &paths[1]).expect("evicts 0");
        std::fs::remove_file(&paths[0]).expect("unlink");
        let mut buf = [0u8; 6];
        held.read_exact_at(&mut buf, 0)
            .expect("read after eviction and unlink");
        assert_eq!(&buf, b"file 0");
    }

    #[test]
    fn forget_closes_and_a_new_id_never_gets_an_old_handle() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"old").expect("write");
        let cache = OpenFiles::new(4);
        cache.get(7, &path).expect("open");
        // The file is replaced on disk (a compaction swap renames a copy over it).
        let copy = dir.path().join("copy");
        std::fs::write(&copy, b"new").expect("write");
        std::fs::rename(&copy, &path).expect("rename");
        let mut buf = [0u8; 3];
        cache
            .get(8, &path)
            .expect("open new")
            .read_exact_at(&mut buf, 0)
            .expect("read");
        assert_eq!(&buf, b"new");
        cache.forget(7);
        assert_eq!(cache.len(), 1);
    }
}
