//! Tests of the remote log over a real local-directory object store and an in-memory
//! manifest store with compare-and-swap semantics.

use super::*;

use std::collections::BTreeSet;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::manifest::ref_for_refs;
use crate::manifest::ref_for_segments;
use crate::store::{self, Faults, FaultyStore, Location, ObjectInfo, S3Settings};

const HOUR_MS: i64 = 3_600_000;
/// Offsets per test segment.
const SPAN: i64 = 10;
/// Record bytes per offset in test segments.
const BYTES_PER_OFFSET: i64 = 7;

/// Small bounds so a few dozen segments build a tree of several levels.
const SMALL: ManifestSettings = ManifestSettings {
    tail_entries: 4,
    fanout: 2,
};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The layer above the fake: one root per partition, replaced by compare-and-swap.
#[derive(Default)]
struct MemManifests {
    roots: Mutex<HashMap<PartitionId, (Bytes, u64)>>,
    /// The next save lands, but its caller hears `Unavailable` (a timed-out answer).
    lose_next_answer: AtomicBool,
    /// The next save lands, but its caller hears `Conflict` (a client-side retry of a
    /// request that had already been applied).
    conflict_after_next_landing: AtomicBool,
    /// The next save fails with `Unavailable` without landing.
    fail_next_save: AtomicBool,
    /// Every save fails with `Conflict` without landing.
    always_conflict: AtomicBool,
}

impl MemManifests {
    fn stored_root(&self, id: &PartitionId) -> Option<Root> {
        let roots = self.roots.lock().expect("lock");
        roots
            .get(id)
            .map(|(bytes, _)| Root::decode(bytes).expect("stored root decodes"))
    }

    fn version(&self, id: &PartitionId) -> Option<u64> {
        self.roots.lock().expect("lock").get(id).map(|(_, v)| *v)
    }
}

#[async_trait::async_trait]
impl ManifestStore for MemManifests {
    async fn load(&self, id: &PartitionId) -> Result<Option<(Bytes, u64)>, ManifestStoreError> {
        Ok(self.roots.lock().expect("lock").get(id).cloned())
    }

    async fn save(
        &self,
        id: &PartitionId,
        bytes: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, ManifestStoreError> {
        if self.fail_next_save.swap(false, Ordering::SeqCst) {
            return Err(ManifestStoreError::Unavailable("injected".into()));
        }
        if self.always_conflict.load(Ordering::SeqCst) {
            return Err(ManifestStoreError::Conflict);
        }
        let mut roots = self.roots.lock().expect("lock");
        let current = roots.get(id).map(|(_, v)| *v);
        if current != expected {
            return Err(ManifestStoreError::Conflict);
        }
        let version = current.map_or(1, |v| v + 1);
        roots.insert(id.clone(), (bytes, version));
        if self.lose_next_answer.swap(false, Ordering::SeqCst) {
            return Err(ManifestStoreError::Unavailable("timed out".into()));
        }
        if self
            .conflict_after_next_landing
            .swap(false, Ordering::SeqCst)
        {
            return Err(ManifestStoreError::Conflict);
        }
        Ok(version)
    }

    async fn delete(&self, id: &PartitionId) -> Result<(), ManifestStoreError> {
        self.roots.lock().expect("lock").remove(id);
        Ok(())
    }
}

/// Fails PUTs of keys containing a pattern (to fail one particular spill-object write).
struct FailPuts<S> {
    inner: S,
    containing: Mutex<Option<String>>,
}

impl<S> FailPuts<S> {
    fn check(&self, key: &str) -> Result<(), StoreError> {
        let pattern = self.containing.lock().expect("lock");
        match &*pattern {
            Some(p) if key.contains(p.as_str()) => Err(StoreError::Transient {
                op: "put",
                key: key.to_string(),
                message: "injected".into(),
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl<S: RemoteStore> RemoteStore for FailPuts<S> {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.put(key, bytes).await
    }
    async fn put_body(&self, key: &str, body: &Body, part_bytes: u64) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.put_body(key, body, part_bytes).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.inner.get_range(key, range).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }
}

type TestStore = FaultyStore<Arc<FailPuts<store::ObjectStoreBackend>>>;

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn RemoteStore>,
    faults: Arc<Faults>,
    fail_puts: Arc<FailPuts<store::ObjectStoreBackend>>,
    manifests: Arc<MemManifests>,
    id: PartitionId,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = store::open(
            &Location::Directory(dir.path().to_path_buf()),
            &S3Settings::default(),
        )
        .expect("open the local store");
        let fail_puts = Arc::new(FailPuts {
            inner: backend,
            containing: Mutex::new(None),
        });
        let faults = Arc::new(Faults::default());
        let store: TestStore = FaultyStore::new(fail_puts.clone(), faults.clone());
        Fixture {
            dir,
            store: Arc::new(store),
            faults,
            fail_puts,
            manifests: Arc::new(MemManifests::default()),
            id: PartitionId {
                topic: "orders".into(),
                topic_id: Uuid::new_v4(),
                partition: 1,
            },
        }
    }

    async fn open(&self, settings: ManifestSettings) -> RemoteLog {
        self.open_partition(self.id.clone(), settings).await
    }

    async fn open_partition(&self, id: PartitionId, settings: ManifestSettings) -> RemoteLog {
        RemoteLog::open(
            id,
            self.store.clone(),
            self.manifests.clone(),
            Arc::new(SpillCache::new(1024)),
            settings,
        )
        .await
        .expect("open the remote log")
    }

    fn set_unavailable(&self, on: bool) {
        self.faults.unavailable.store(on, Ordering::SeqCst);
    }

    /// Every file under the store's directory, as a key.
    fn objects(&self) -> BTreeSet<String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).expect("under the root");
                    out.insert(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }

    fn segment_objects(&self) -> BTreeSet<String> {
        self.objects()
            .into_iter()
            .filter(|k| k.ends_with(".segment"))
            .collect()
    }

    fn manifest_objects(&self) -> BTreeSet<String> {
        self.objects()
            .into_iter()
            .filter(|k| k.contains("/manifest-"))
            .collect()
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.path().join(key)
    }
}

/// The bytes of the `.log` file of the test segment at `base`.
fn log_bytes(base: i64, span: i64) -> Vec<u8> {
    (0..span * BYTES_PER_OFFSET)
        .map(|i| (base.wrapping_mul(31).wrapping_add(i) % 251) as u8)
        .collect()
}

/// A sealed segment `[base, base + span)` backed by a real (anonymous) file.
fn segment_with(base: i64, span: i64, max_timestamp: i64) -> SealedSegment {
    let data = log_bytes(base, span);
    let mut file = tempfile::tempfile().expect("tempfile");
    file.write_all(&data).expect("write the segment");
    file.flush().expect("flush");
    SealedSegment {
        base_offset: base,
        end_offset: base + span,
        log: Arc::new(file),
        log_bytes: data.len() as u64,
        offset_index: Bytes::from(format!("offset-index-{base}")),
        time_index: Bytes::from(format!("time-index-{base}")),
        producer_snapshot: Bytes::new(),
        txn_index: Bytes::new(),
        max_timestamp,
        log_start_offset: 0,
    }
}

fn segment(base: i64) -> SealedSegment {
    segment_with(base, SPAN, 1_000 + base)
}

fn seg_bytes() -> u64 {
    (SPAN * BYTES_PER_OFFSET) as u64
}

async fn upload(log: &RemoteLog, base: i64, epoch: i32) -> Result<bool, TierError> {
    log.upload(&segment(base), epoch, 1 << 20, now_ms(), None)
        .await
}

/// Uploads `count` contiguous segments of `SPAN` offsets starting at `from`.
async fn upload_range(log: &RemoteLog, from: i64, count: i64, epoch: i32) {
    for i in 0..count {
        let base = from + i * SPAN;
        assert!(
            upload(log, base, epoch).await.expect("upload"),
            "segment at {base} was new"
        );
    }
}

/// What the stored root references: (live segment keys, every reachable spill key).
/// Also checks that every spill object agrees with the reference that points at it.
async fn referenced(fx: &Fixture, id: &PartitionId) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut segments = BTreeSet::new();
    let mut spills = BTreeSet::new();
    let Some(root) = fx.manifests.stored_root(id) else {
        return (segments, spills);
    };
    let mut entries: Vec<SegmentEntry> = root.tail.clone();
    let mut stack = root.refs.clone();
    while let Some(r) = stack.pop() {
        let key = keys::manifest_key(id, r.level, r.first_offset, r.object_id);
        let bytes = fx.store.get(&key).await.expect("referenced spill exists");
        spills.insert(key);
        match Spill::decode(&bytes).expect("spill decodes") {
            Spill::Segments(list) => {
                assert_eq!(r.level, 0);
                assert_eq!(ref_for_segments(&list, r.object_id), r, "level-0 summary");
                entries.extend(list);
            }
            Spill::Refs { level, refs } => {
                assert_eq!(level + 1, r.level);
                assert!(refs.iter().all(|c| c.level == level));
                assert_eq!(ref_for_refs(&refs, r.object_id), r, "level-{level} summary");
                stack.extend(refs);
            }
        }
    }
    for e in entries {
        if e.end_offset > root.log_start_offset {
            segments.insert(keys::segment_key(id, e.base_offset, e.object_id));
        }
    }
    (segments, spills)
}

/// Shape invariants of a root: bounded tail and per-level references, levels oldest
/// first and non-increasing, references and tail contiguous.
fn assert_bounded(root: &Root, settings: ManifestSettings) {
    assert!(
        root.tail.len() <= settings.tail_entries,
        "tail has {} entries",
        root.tail.len()
    );
    for pair in root.refs.windows(2) {
        assert!(pair[0].level >= pair[1].level, "levels non-increasing");
        assert_eq!(pair[0].end_offset, pair[1].first_offset, "refs contiguous");
    }
    let max_level = root.refs.iter().map(|r| r.level).max().unwrap_or(0);
    for level in 0..=max_level {
        let count = root.refs.iter().filter(|r| r.level == level).count();
        assert!(count <= settings.fanout, "{count} refs at level {level}");
    }
    for pair in root.tail.windows(2) {
        assert_eq!(pair[0].end_offset, pair[1].base_offset, "tail contiguous");
    }
    if let (Some(r), Some(e)) = (root.refs.last(), root.tail.first()) {
        assert_eq!(r.end_offset, e.base_offset, "refs meet the tail");
    }
}

#[tokio::test]
async fn a_producer_snapshot_travels_at_the_end_of_the_object() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    let mut segment = segment(0);
    segment.producer_snapshot = Bytes::from_static(b"producer state");
    assert!(
        log.upload(&segment, 3, 1 << 20, 0, None)
            .await
            .expect("upload")
    );
    let entry = log.locate(0).await.expect("locate").expect("present");
    assert_eq!(entry.producer_snapshot_bytes, 14);
    let object = fx
        .store
        .get(&log.segment_key(&entry))
        .await
        .expect("object");
    assert_eq!(object.len() as u64, entry.object_size());
    let range = entry.producer_snapshot_range();
    assert_eq!(
        &object[range.start as usize..range.end as usize],
        b"producer state"
    );
    let range = entry.time_index_range();
    assert_eq!(
        &object[range.start as usize..range.end as usize],
        b"time-index-0"
    );
}

#[tokio::test]
async fn many_segments_spill_into_levels_and_every_offset_is_located() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    assert_eq!(
        log.marks(),
        RemoteMarks {
            log_start_offset: 0,
            end_offset: None,
            live_bytes: 0,
            live_segments: 0,
            leader_epoch: 0,
        }
    );
    let count = 60;
    let mut ids = Vec::new();
    for i in 0..count {
        let base = i * SPAN;
        assert!(upload(&log, base, 3).await.expect("upload"));
        let root = log.root();
        assert_bounded(&root, SMALL);
        let last = root.tail.last().expect("the new entry is in the tail");
        assert_eq!((last.base_offset, last.end_offset), (base, base + SPAN));
        assert_eq!(last.leader_epoch, 3);
        assert_eq!(
            last.offset_index_bytes as usize,
            format!("offset-index-{base}").len()
        );
        ids.push(last.object_id);
        assert_eq!(root.live_segments, (i + 1) as u64);
        assert_eq!(root.live_bytes, (i + 1) as u64 * seg_bytes());
    }
    let root = log.root();
    let max_level = root.refs.iter().map(|r| r.level).max().expect("spilled");
    assert!(
        max_level >= 3,
        "60 segments with (4, 2) reach level 3: {root:?}"
    );
    // The root stays small: at most tail_entries + fanout × levels items.
    assert!(root.tail.len() + root.refs.len() <= 4 + 2 * (usize::from(max_level) + 1));
    assert_eq!(
        log.marks(),
        RemoteMarks {
            log_start_offset: 0,
            end_offset: Some(count * SPAN),
            live_bytes: count as u64 * seg_bytes(),
            live_segments: count as u64,
            leader_epoch: 3,
        }
    );

    // Every offset, through the cached spill objects and through a cold cache.
    let cold = fx.open(SMALL).await;
    for reader in [&log, &cold] {
        for offset in 0..count * SPAN {
            let entry = reader
                .locate(offset)
                .await
                .expect("locate")
                .unwrap_or_else(|| panic!("offset {offset} is remote"));
            let i = offset / SPAN;
            assert_eq!(entry.base_offset, i * SPAN, "offset {offset}");
            assert_eq!(entry.end_offset, i * SPAN + SPAN);
            assert_eq!(entry.object_id, ids[i as usize]);
        }
        assert!(reader.locate(count * SPAN).await.expect("locate").is_none());
        assert!(reader.locate(i64::MAX).await.expect("locate").is_none());
        assert!(reader.locate(-1).await.expect("locate").is_none());
    }

    // Each object holds the log bytes, then the offset index, then the time index.
    for base in [0, 230, 590] {
        let entry = log.locate(base).await.expect("locate").expect("present");
        let object = fx
            .store
            .get(&log.segment_key(&entry))
            .await
            .expect("object");
        let mut expected = log_bytes(base, SPAN);
        expected.extend_from_slice(format!("offset-index-{base}").as_bytes());
        expected.extend_from_slice(format!("time-index-{base}").as_bytes());
        assert_eq!(&object[..], &expected[..]);
        assert_eq!(object.len() as u64, entry.object_size());
        assert_eq!(
            &object[entry.time_index_range().start as usize..],
            format!("time-index-{base}").as_bytes()
        );
    }

    // Nothing failed, so the bucket holds exactly what the manifest references.
    let (segments, spills) = referenced(&fx, &log.id).await;
    assert_eq!(segments.len(), count as usize);
    assert_eq!(fx.segment_objects(), segments);
    assert_eq!(fx.manifest_objects(), spills);
    assert!(log.in_flight.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn the_root_survives_reopening() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 100, 23, 2).await;
    log.advance_start(135, 2).await.expect("advance");
    let reopened = fx.open(SMALL).await;
    assert_eq!(*reopened.root(), *log.root());
    assert_eq!(reopened.marks(), log.marks());
    assert_eq!(
        fx.manifests.stored_root(&fx.id).as_ref(),
        Some(&*log.root())
    );
    // And the reopened log carries on where the first left off.
    assert!(upload(&reopened, 100 + 23 * SPAN, 2).await.expect("upload"));
    assert_eq!(reopened.marks().end_offset, Some(100 + 24 * SPAN));
    for offset in [135, 200, 339] {
        assert_eq!(
            reopened
                .locate(offset)
                .await
                .expect("locate")
                .map(|e| e.base_offset),
            Some(offset / SPAN * SPAN)
        );
    }
}

#[tokio::test]
async fn the_first_upload_may_start_anywhere_then_uploads_must_be_contiguous() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 500, 2, 1).await;
    let err = upload(&log, 530, 1).await.expect_err("gap");
    assert!(
        matches!(
            err,
            TierError::NotContiguous {
                base_offset: 530,
                end_offset: 520
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());
    // Overlapping the end is not contiguous either.
    let overlapping = segment_with(515, SPAN, 0);
    let err = log
        .upload(&overlapping, 1, 1 << 20, now_ms(), None)
        .await
        .expect_err("overlap");
    assert!(matches!(err, TierError::NotContiguous { .. }), "{err}");
    assert_eq!(
        fx.segment_objects().len(),
        2,
        "refused uploads write nothing"
    );
    assert_eq!(log.marks().live_segments, 2);
    assert!(log.in_flight.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn an_upload_the_manifest_already_covers_is_skipped() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 6, 1).await;
    let before = fx.objects();
    let version = fx.manifests.version(&fx.id);
    assert!(!upload(&log, 0, 1).await.expect("covered"));
    assert!(!upload(&log, 50, 1).await.expect("covered"));
    // Covered, even if from an older epoch: nothing to fence.
    assert!(!upload(&log, 20, 0).await.expect("covered"));
    assert_eq!(fx.objects(), before, "nothing written or deleted");
    assert_eq!(fx.manifests.version(&fx.id), version, "nothing committed");
}

#[tokio::test]
async fn commits_from_an_older_epoch_are_fenced() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 3, 5).await;
    let err = upload(&log, 30, 4).await.expect_err("fenced");
    assert!(
        matches!(
            err,
            TierError::Fenced {
                epoch: 4,
                current: 5
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());
    let err = log.advance_start(10, 4).await.expect_err("fenced");
    assert!(matches!(err, TierError::Fenced { .. }), "{err}");
    assert_eq!(log.marks().log_start_offset, 0);
    // A newer epoch takes over, and from then on the old one is fenced.
    assert!(upload(&log, 30, 6).await.expect("newer epoch"));
    assert_eq!(log.marks().leader_epoch, 6);
    assert!(matches!(
        upload(&log, 40, 5).await,
        Err(TierError::Fenced {
            epoch: 5,
            current: 6
        })
    ));
    assert_eq!(fx.segment_objects().len(), 4);
}

#[tokio::test]
async fn a_deposed_leader_learns_it_is_fenced_from_the_stored_root() {
    let fx = Fixture::new();
    let old_leader = fx.open(SMALL).await;
    let new_leader = fx.open(SMALL).await;
    upload_range(&old_leader, 0, 2, 1).await;
    // The new leader has not seen anything yet: its first commit conflicts, reloads and
    // finds the segment covered.
    assert!(
        !upload(&new_leader, 0, 2)
            .await
            .expect("covered after reload")
    );
    upload_range(&new_leader, 20, 1, 2).await;
    // The old leader's in-memory root is stale (epoch 1), so only the CAS tells it.
    let err = upload(&old_leader, 20, 1).await.expect_err("fenced");
    assert!(
        matches!(
            err,
            TierError::Fenced {
                epoch: 1,
                current: 2
            }
        ),
        "{err}"
    );
    let (referenced_segments, _) = referenced(&fx, &fx.id).await;
    assert_eq!(referenced_segments.len(), 3);
    assert_eq!(
        fx.segment_objects(),
        referenced_segments,
        "refused objects are removed"
    );
    assert_eq!(
        fx.manifests.stored_root(&fx.id).map(|r| r.leader_epoch),
        Some(2)
    );
}

#[tokio::test]
async fn a_conflicting_commit_reloads_and_redoes_the_edit() {
    let fx = Fixture::new();
    let a = fx.open(SMALL).await;
    let b = fx.open(SMALL).await;
    upload_range(&a, 0, 5, 1).await;
    // b still believes the log is empty; its commit of [50, 60) conflicts, reloads and
    // lands after a's five segments.
    assert!(upload(&b, 50, 1).await.expect("upload after a reload"));
    assert_eq!(b.marks().end_offset, Some(60));
    assert_eq!(b.marks().live_segments, 6);
    // a is stale now; its next commit reloads as well.
    assert!(!upload(&a, 50, 1).await.expect("covered after a reload"));
    assert_eq!(*a.root(), *b.root());
    upload_range(&a, 60, 5, 1).await;
    assert_eq!(fx.manifests.stored_root(&fx.id).as_ref(), Some(&*a.root()));
    let (segments, spills) = referenced(&fx, &fx.id).await;
    assert_eq!(segments.len(), 11);
    assert_eq!(fx.segment_objects(), segments);
    // Spill objects written for a commit that lost its CAS are orphans (for the scrubber).
    assert!(fx.manifest_objects().is_superset(&spills));
    for offset in 0..110 {
        let entry = a.locate(offset).await.expect("locate").expect("present");
        assert_eq!(entry.base_offset, offset / SPAN * SPAN);
    }
}

#[tokio::test]
async fn a_commit_that_keeps_conflicting_gives_up() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    fx.manifests.always_conflict.store(true, Ordering::SeqCst);
    let err = upload(&log, 0, 1).await.expect_err("contended");
    assert!(
        matches!(err, TierError::Contended(n) if n == COMMIT_ATTEMPTS),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(fx.objects().is_empty(), "the uncommitted object is removed");
    assert!(log.in_flight.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn retention_target_by_bytes() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 10, 1).await;
    let b = seg_bytes() as i64;
    // Nothing asked for.
    assert_eq!(
        log.retention_target(0, -1, -1, 0).await.expect("target"),
        None
    );
    // Everything fits.
    assert_eq!(
        log.retention_target(0, -1, 10 * b, 0)
            .await
            .expect("target"),
        None
    );
    // One segment too many: the oldest goes.
    assert_eq!(
        log.retention_target(0, -1, 9 * b, 0).await.expect("target"),
        Some(10)
    );
    assert_eq!(
        log.retention_target(0, -1, 9 * b + 1, 0)
            .await
            .expect("target"),
        None,
        "a segment goes only if the rest still reach retention.bytes"
    );
    // Local-only bytes count too: 10 segments + half a segment, limit 3.5 segments.
    assert_eq!(
        log.retention_target(0, -1, 3 * b + b / 2, (b / 2) as u64)
            .await
            .expect("target"),
        Some(70)
    );
    // Local data alone exceeds the limit: every remote segment may go.
    assert_eq!(
        log.retention_target(0, -1, b, 5 * b as u64)
            .await
            .expect("target"),
        Some(100)
    );
    // From a moved start, only what is left counts.
    log.advance_start(40, 1).await.expect("advance");
    assert_eq!(
        log.retention_target(0, -1, 5 * b, 0).await.expect("target"),
        Some(50)
    );
}

#[tokio::test]
async fn retention_target_by_time() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    // Segment i has max timestamp 1000 + 100 i, except 7 (no timestamp).
    for i in 0..10 {
        let ts = if i == 7 { -1 } else { 1_000 + 100 * i };
        let s = segment_with(i * SPAN, SPAN, ts);
        assert!(log.upload(&s, 1, 1 << 20, 0, None).await.expect("upload"));
    }
    assert_eq!(
        log.retention_target(1_300, 1_000, -1, 0)
            .await
            .expect("target"),
        None
    );
    // now - ts > 600 for ts < 1400: segments 0..=3, some of them in spill objects.
    assert_eq!(
        log.retention_target(2_000, 600, -1, 0)
            .await
            .expect("target"),
        Some(40)
    );
    // Exactly retention.ms old is not expired yet.
    assert_eq!(
        log.retention_target(2_000, 1_000, -1, 0)
            .await
            .expect("target"),
        None
    );
    // A segment without timestamps never expires by time, and stops the walk.
    assert_eq!(
        log.retention_target(1_000_000, 1, -1, 0)
            .await
            .expect("target"),
        Some(70)
    );
    // Either limit is enough.
    assert_eq!(
        log.retention_target(2_000, 600, 9 * seg_bytes() as i64, 0)
            .await
            .expect("target"),
        Some(40)
    );
    assert_eq!(
        log.retention_target(1_000_000, 1, 0, 0)
            .await
            .expect("target"),
        Some(100)
    );
}

#[tokio::test]
async fn advance_start_deletes_what_is_wholly_below_it() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 20, 1).await;
    let all_segments = fx.segment_objects();
    let spills_before = fx.manifest_objects();
    // With (4, 2), twenty segments put [0, 80) under one level-2 reference.
    let oldest = log.root().refs[0];
    assert_eq!((oldest.level, oldest.end_offset), (2, 80));

    // 85 falls inside [80, 90): segments 0..8 go, [80, 90) stays.
    let deleted = log.advance_start(85, 1).await.expect("advance");
    assert_eq!(deleted, 8 * seg_bytes());
    let marks = log.marks();
    assert_eq!(marks.log_start_offset, 85);
    assert_eq!(marks.live_segments, 12);
    assert_eq!(marks.live_bytes, 12 * seg_bytes());
    assert_eq!(marks.end_offset, Some(200));
    let left = fx.segment_objects();
    for key in &all_segments {
        let base = match keys::parse_object_name(key) {
            Some(ObjectName::Segment { base_offset, .. }) => base_offset,
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(left.contains(key), base >= 80, "{key}");
    }
    // The level-2 object and the 2 + 4 objects below it are gone; what is left is
    // exactly what the root reaches.
    let (segments, spills) = referenced(&fx, &fx.id).await;
    assert_eq!(left, segments);
    assert_eq!(fx.manifest_objects(), spills);
    assert_eq!(spills.len() + 7, spills_before.len());
    assert!(log.root().refs.iter().all(|r| r.first_offset >= 80));

    assert!(log.locate(84).await.expect("locate").is_none());
    assert!(log.locate(0).await.expect("locate").is_none());
    assert_eq!(
        log.locate(85).await.expect("locate").map(|e| e.base_offset),
        Some(80)
    );
    assert_eq!(
        log.locate(199)
            .await
            .expect("locate")
            .map(|e| e.base_offset),
        Some(190)
    );

    // Moving backwards or nowhere is a no-op.
    assert_eq!(log.advance_start(85, 1).await.expect("advance"), 0);
    assert_eq!(log.advance_start(10, 1).await.expect("advance"), 0);
    assert_eq!(log.marks().log_start_offset, 85);

    // Within one segment: the start moves, nothing is deleted.
    assert_eq!(log.advance_start(89, 1).await.expect("advance"), 0);
    assert_eq!(log.marks().live_segments, 12);
    assert_eq!(fx.segment_objects(), left);

    // A cold reader agrees.
    let cold = fx.open(SMALL).await;
    assert_eq!(*cold.root(), *log.root());
    assert!(cold.locate(88).await.expect("locate").is_none());
    assert_eq!(
        cold.locate(89)
            .await
            .expect("locate")
            .map(|e| e.base_offset),
        Some(80)
    );

    // Into the tail: every reference goes.
    let deleted = log.advance_start(170, 1).await.expect("advance");
    assert_eq!(deleted, 9 * seg_bytes());
    assert!(log.root().refs.is_empty());
    assert!(fx.manifest_objects().is_empty());
    assert_eq!(fx.segment_objects().len(), 3);
    assert_eq!(log.marks().live_segments, 3);
}

#[tokio::test]
async fn advancing_past_everything_keeps_the_end_and_uploads_continue_from_it() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 12, 1).await;
    assert_eq!(
        log.advance_start(120, 1).await.expect("advance"),
        12 * seg_bytes()
    );
    assert!(
        fx.objects().is_empty(),
        "every segment and spill object is gone"
    );
    let marks = log.marks();
    assert_eq!(marks.live_bytes, 0);
    assert_eq!(marks.live_segments, 0);
    assert_eq!(marks.log_start_offset, 120);
    // Retention deleted everything; the remote tier still ends where it ended.
    assert_eq!(marks.end_offset, Some(120));
    assert!(log.locate(119).await.expect("locate").is_none());
    assert_eq!(
        log.retention_target(i64::MAX, 0, 0, 0)
            .await
            .expect("target"),
        None
    );
    // Segments retention already deleted are not uploaded again.
    assert!(!upload(&log, 110, 1).await.expect("already deleted"));
    assert!(fx.objects().is_empty());
    assert_eq!(log.marks().live_segments, 0);
    // The next one is.
    assert!(upload(&log, 120, 1).await.expect("upload"));
    assert_eq!(log.marks().end_offset, Some(130));
    assert_eq!(log.marks().live_segments, 1);

    // DeleteRecords past the remote end: the next local segment straddles the new start.
    log.advance_start(135, 1).await.expect("advance");
    assert_eq!(log.marks().end_offset, Some(135));
    assert!(upload(&log, 130, 1).await.expect("straddling upload"));
    assert_eq!(log.marks().log_start_offset, 135);
    assert!(log.locate(134).await.expect("locate").is_none());
    assert_eq!(
        log.locate(135)
            .await
            .expect("locate")
            .map(|e| e.base_offset),
        Some(130)
    );
    assert!(upload(&log, 140, 1).await.expect("contiguous"));
}

#[tokio::test]
async fn advance_start_after_a_conflict_counts_each_segment_once() {
    let fx = Fixture::new();
    let a = fx.open(SMALL).await;
    upload_range(&a, 0, 6, 1).await;
    let b = fx.open(SMALL).await;
    b.advance_start(10, 1).await.expect("b advances");
    // a still believes the start is 0; its commit conflicts and is redone on b's root.
    let deleted = a.advance_start(30, 1).await.expect("a advances");
    let marks = a.marks();
    assert_eq!(marks.log_start_offset, 30);
    assert_eq!(marks.live_segments, 3, "{marks:?}");
    assert_eq!(marks.live_bytes, 3 * seg_bytes(), "{marks:?}");
    assert_eq!(deleted, 2 * seg_bytes());
    let (segments, _) = referenced(&fx, &fx.id).await;
    assert_eq!(fx.segment_objects(), segments);
    assert_eq!(segments.len(), 3);
}

#[tokio::test]
async fn scrub_deletes_orphans_after_the_grace_period_only() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 12, 1).await;
    let prefix = keys::partition_prefix(&fx.id);
    let orphan_segment = keys::segment_key(&fx.id, 50, Uuid::new_v4());
    let orphan_beyond = keys::segment_key(&fx.id, 990, Uuid::new_v4());
    let orphan_manifest = keys::manifest_key(&fx.id, 0, 0, Uuid::new_v4());
    let junk = format!("{prefix}notes.txt");
    for key in [&orphan_segment, &orphan_beyond, &orphan_manifest, &junk] {
        fx.store
            .put(key, Bytes::from_static(b"x"))
            .await
            .expect("put");
    }
    // A crash between a retention commit and its deletes, played by a store that is
    // down for the deletes: the objects below the new start stay behind.
    let below: BTreeSet<String> = {
        let mut below = BTreeSet::new();
        for offset in [0, 10, 20, 30] {
            let e = log.locate(offset).await.expect("locate").expect("present");
            below.insert(log.segment_key(&e));
        }
        below
    };
    fx.set_unavailable(true);
    log.advance_start(40, 1).await.expect("the commit works");
    fx.set_unavailable(false);
    assert!(fx.segment_objects().is_superset(&below));

    let (segments, spills) = referenced(&fx, &fx.id).await;
    let mut keep: BTreeSet<String> = segments.union(&spills).cloned().collect();
    keep.insert(junk.clone());
    let orphans: BTreeSet<String> = fx.objects().difference(&keep).cloned().collect();
    assert!(orphans.contains(&orphan_segment));
    assert!(orphans.contains(&orphan_beyond));
    assert!(orphans.contains(&orphan_manifest));
    assert!(orphans.is_superset(&below));
    assert!(
        orphans
            .iter()
            .any(|k| k.contains("/manifest-") && *k != orphan_manifest),
        "spill objects dropped by retention are orphans too"
    );

    // Within the grace period nothing goes.
    let now = now_ms();
    assert_eq!(log.scrub(now, HOUR_MS).await.expect("scrub"), 0);
    assert_eq!(fx.objects().len(), keep.len() + orphans.len());
    // After it, exactly the orphans go.
    let deleted = log.scrub(now + 2 * HOUR_MS, HOUR_MS).await.expect("scrub");
    assert_eq!(deleted, orphans.len());
    assert_eq!(fx.objects(), keep);
    assert_eq!(
        log.scrub(now + 2 * HOUR_MS, HOUR_MS).await.expect("scrub"),
        0
    );
    // Everything live is still readable, from a cold cache too.
    let cold = fx.open(SMALL).await;
    for offset in 40..120 {
        let e = cold.locate(offset).await.expect("locate").expect("present");
        fx.store.get(&cold.segment_key(&e)).await.expect("object");
    }
}

#[tokio::test]
async fn scrub_by_a_stale_instance_keeps_what_the_stored_root_references() {
    let fx = Fixture::new();
    // Opened before anything was uploaded, and never told since (a follower, or a
    // deposed leader).
    let stale = fx.open(SMALL).await;
    let leader = fx.open(SMALL).await;
    upload_range(&leader, 0, 9, 2).await;
    let before = fx.objects();
    assert_eq!(
        stale
            .scrub(now_ms() + 2 * HOUR_MS, HOUR_MS)
            .await
            .expect("scrub"),
        0
    );
    assert_eq!(fx.objects(), before);
    for offset in 0..90 {
        let e = leader
            .locate(offset)
            .await
            .expect("locate")
            .expect("present");
        fx.store.get(&leader.segment_key(&e)).await.expect("object");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_spares_an_upload_in_flight() {
    let fx = Arc::new(Fixture::new());
    let log = Arc::new(fx.open(SMALL).await);
    upload_range(&log, 0, 3, 1).await;
    let (uploaded_tx, uploaded_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let uploader = {
        let log = log.clone();
        tokio::spawn(async move {
            let hook = move |_: &PartitionId, _: &SealedSegment| {
                uploaded_tx.send(()).expect("send");
                // Holds the upload between its PUT and its commit.
                go_rx.lock().expect("lock").recv().expect("recv");
            };
            log.upload(&segment(30), 1, 1 << 20, now_ms(), Some(&hook))
                .await
        })
    };
    tokio::task::spawn_blocking(move || uploaded_rx.recv())
        .await
        .expect("join")
        .expect("the hook ran");
    let uncommitted: BTreeSet<String> = fx
        .segment_objects()
        .into_iter()
        .filter(|k| k.contains(&format!("{:020}-", 30)))
        .collect();
    assert_eq!(uncommitted.len(), 1);
    assert_eq!(
        log.scrub(now_ms() + 2 * HOUR_MS, HOUR_MS)
            .await
            .expect("scrub"),
        0
    );
    go_tx.send(()).expect("send");
    assert!(uploader.await.expect("join").expect("upload"));
    assert!(fx.segment_objects().is_superset(&uncommitted));
    let e = log.locate(35).await.expect("locate").expect("present");
    assert!(uncommitted.contains(&log.segment_key(&e)));
}

#[tokio::test]
async fn the_after_upload_hook_runs_between_the_put_and_the_commit() {
    let fx = Arc::new(Fixture::new());
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 2, 1).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook = {
        let fx = fx.clone();
        let seen = seen.clone();
        move |id: &PartitionId, s: &SealedSegment| {
            let objects = fx.segment_objects();
            let stored_end = fx.manifests.stored_root(id).and_then(|r| r.end_offset());
            seen.lock()
                .expect("lock")
                .push((s.base_offset, objects.len(), stored_end));
        }
    };
    assert!(
        log.upload(&segment(20), 1, 1 << 20, now_ms(), Some(&hook))
            .await
            .expect("upload")
    );
    // At the hook the object was in the bucket and the manifest did not have it yet.
    assert_eq!(*seen.lock().expect("lock"), vec![(20, 3, Some(20))]);
    assert_eq!(
        fx.manifests
            .stored_root(&fx.id)
            .and_then(|r| r.end_offset()),
        Some(30)
    );
    // A skipped upload does not reach the hook.
    assert!(
        !log.upload(&segment(0), 1, 1 << 20, now_ms(), Some(&hook))
            .await
            .expect("covered")
    );
    assert_eq!(seen.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn delete_everything_removes_the_partitions_objects_and_root() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 15, 1).await;
    // A neighbour whose prefix extends this one's as a string: partition 10 vs 1.
    let neighbour_id = PartitionId {
        partition: 10,
        ..fx.id.clone()
    };
    let neighbour = fx.open_partition(neighbour_id.clone(), SMALL).await;
    upload_range(&neighbour, 0, 6, 1).await;
    let neighbour_objects: BTreeSet<String> = fx
        .objects()
        .into_iter()
        .filter(|k| k.starts_with(&keys::partition_prefix(&neighbour_id)))
        .collect();
    assert!(!neighbour_objects.is_empty());

    log.delete_everything().await.expect("delete");
    assert_eq!(fx.objects(), neighbour_objects);
    assert!(fx.manifests.stored_root(&fx.id).is_none());
    assert!(fx.manifests.stored_root(&neighbour_id).is_some());
    let reopened = fx.open(SMALL).await;
    assert_eq!(*reopened.root(), Root::default());
    for offset in [0, 59] {
        assert!(neighbour.locate(offset).await.expect("locate").is_some());
    }
    // Deleting again is harmless.
    log.delete_everything().await.expect("delete again");
}

#[tokio::test]
async fn a_store_outage_fails_the_upload_transiently_and_commits_nothing() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 2, 1).await;
    let objects = fx.objects();
    let root = fx.manifests.stored_root(&fx.id);
    fx.set_unavailable(true);
    let err = upload(&log, 20, 1).await.expect_err("store down");
    assert!(err.is_transient(), "{err}");
    assert!(
        matches!(err, TierError::Store(StoreError::Transient { .. })),
        "{err}"
    );
    fx.set_unavailable(false);
    assert_eq!(fx.manifests.stored_root(&fx.id), root);
    assert_eq!(log.marks().end_offset, Some(20));
    assert_eq!(fx.objects(), objects);
    assert!(log.in_flight.lock().expect("lock").is_empty());
    // Once the store is back, the same segment goes up.
    assert!(upload(&log, 20, 1).await.expect("upload"));
}

#[tokio::test]
async fn a_failed_spill_write_commits_nothing_and_its_objects_are_scrubbed() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    // Upload until the next commit spills the tail and merges level 0 into level 1.
    let mut base = 0;
    loop {
        let root = log.root();
        let level0 = root.refs.iter().filter(|r| r.level == 0).count();
        if root.tail.len() == SMALL.tail_entries && level0 == SMALL.fanout {
            break;
        }
        assert!(upload(&log, base, 1).await.expect("upload"));
        base += SPAN;
    }
    let root = log.root();
    let objects = fx.objects();
    // The level-0 spill object is written, the level-1 one fails.
    *fx.fail_puts.containing.lock().expect("lock") = Some("/manifest-1-".into());
    let err = upload(&log, base, 1).await.expect_err("spill write fails");
    assert!(err.is_transient(), "{err}");
    *fx.fail_puts.containing.lock().expect("lock") = None;
    assert_eq!(*log.root(), *root);
    assert_eq!(fx.manifests.stored_root(&fx.id).as_ref(), Some(&*root));
    assert!(log.in_flight.lock().expect("lock").is_empty());
    let orphans: BTreeSet<String> = fx.objects().difference(&objects).cloned().collect();
    assert_eq!(orphans.len(), 1, "the level-0 spill object: {orphans:?}");
    assert_eq!(
        log.scrub(now_ms() + 2 * HOUR_MS, HOUR_MS)
            .await
            .expect("scrub"),
        1
    );
    assert_eq!(fx.objects(), objects);
    // And the upload goes through on the next try.
    assert!(upload(&log, base, 1).await.expect("upload"));
    assert!(log.root().refs.iter().any(|r| r.level == 1));
}

#[tokio::test]
async fn an_upload_whose_commit_answer_was_lost_keeps_its_object() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 4, 1).await;
    // The CAS lands but the answer times out: the uploader cannot know it landed.
    fx.manifests.lose_next_answer.store(true, Ordering::SeqCst);
    let err = upload(&log, 40, 1).await.expect_err("unknown outcome");
    assert!(err.is_transient(), "{err}");
    let stored = fx.manifests.stored_root(&fx.id).expect("root");
    assert_eq!(stored.end_offset(), Some(50), "the commit landed");
    let entry = *stored.tail.last().expect("entry");
    let key = keys::segment_key(&fx.id, 40, entry.object_id);
    assert!(
        fx.path_of(&key).exists(),
        "the manifest references the object, so it must stay"
    );
    // The retry finds it committed; the object it wrote for nothing is removed.
    assert!(!upload(&log, 40, 1).await.expect("covered"));
    assert_eq!(log.locate(45).await.expect("locate"), Some(entry));
    fx.store.get(&key).await.expect("readable");
    let (segments, spills) = referenced(&fx, &fx.id).await;
    assert_eq!(fx.segment_objects(), segments);
    // The scrubber keeps it too (it only removes the retry's conflicted spill object).
    log.scrub(now_ms() + 2 * HOUR_MS, HOUR_MS)
        .await
        .expect("scrub");
    assert_eq!(fx.segment_objects(), segments);
    assert_eq!(fx.manifest_objects(), spills);
}

#[tokio::test]
async fn an_upload_whose_commit_failed_for_sure_is_scrubbed() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 1, 1).await;
    fx.manifests.fail_next_save.store(true, Ordering::SeqCst);
    let err = upload(&log, 10, 1).await.expect_err("metadata store down");
    assert!(err.is_transient(), "{err}");
    assert_eq!(log.marks().end_offset, Some(10));
    // The uploader cannot tell this from a lost answer, so the object may stay; the
    // scrubber, which reads the stored root, removes it if it is not referenced.
    log.scrub(now_ms() + 2 * HOUR_MS, HOUR_MS)
        .await
        .expect("scrub");
    assert_eq!(fx.segment_objects().len(), 1);
    assert!(upload(&log, 10, 1).await.expect("upload"));
}

#[tokio::test]
async fn a_commit_reported_as_conflicting_that_landed_is_recognized() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 2, 1).await;
    fx.manifests
        .conflict_after_next_landing
        .store(true, Ordering::SeqCst);
    assert!(upload(&log, 20, 1).await.expect("ours after a reload"));
    let entry = log.locate(25).await.expect("locate").expect("present");
    fx.store
        .get(&log.segment_key(&entry))
        .await
        .expect("the object stays");
    assert_eq!(log.marks().live_segments, 3);
}

#[tokio::test]
async fn a_tiny_spill_cache_still_finds_everything() {
    let fx = Fixture::new();
    let writer = fx.open(SMALL).await;
    upload_range(&writer, 0, 30, 1).await;
    let reader = RemoteLog::open(
        fx.id.clone(),
        fx.store.clone(),
        fx.manifests.clone(),
        Arc::new(SpillCache::new(1)),
        SMALL,
    )
    .await
    .expect("open");
    for offset in (0..300).rev() {
        let e = reader
            .locate(offset)
            .await
            .expect("locate")
            .expect("present");
        assert_eq!(e.base_offset, offset / SPAN * SPAN);
    }
    assert!(reader.spills.entries.lock().expect("lock").len() <= 1);
}

#[tokio::test]
async fn damaged_manifests_are_reported() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 8, 1).await;
    // A damaged spill object, read through a cold cache.
    let r = log.root().refs[0];
    let key = keys::manifest_key(&fx.id, r.level, r.first_offset, r.object_id);
    std::fs::write(fx.path_of(&key), b"SMAN\x01\x01garbage").expect("damage");
    let cold = fx.open(SMALL).await;
    let err = cold.locate(0).await.expect_err("damaged");
    assert!(matches!(err, TierError::Format { .. }), "{err}");
    assert!(!err.is_transient());
    // A missing one is a store error, not "not found".
    std::fs::remove_file(fx.path_of(&key)).expect("remove");
    let cold = fx.open(SMALL).await;
    let err = cold.locate(0).await.expect_err("missing");
    assert!(
        matches!(err, TierError::Store(StoreError::NotFound(_))),
        "{err}"
    );
    // A damaged root fails the open.
    fx.manifests
        .roots
        .lock()
        .expect("lock")
        .insert(fx.id.clone(), (Bytes::from_static(b"nonsense"), 99));
    let err = RemoteLog::open(
        fx.id.clone(),
        fx.store.clone(),
        fx.manifests.clone(),
        Arc::new(SpillCache::new(8)),
        SMALL,
    )
    .await
    .err()
    .expect("damaged root");
    assert!(matches!(err, TierError::Format { .. }), "{err}");
}

#[tokio::test]
async fn multipart_uploads_round_trip() {
    let fx = Fixture::new();
    let log = fx.open(ManifestSettings::default()).await;
    let s = segment_with(0, 1000, 5);
    // 7000 log bytes plus the indexes, in parts of 1 KiB.
    assert!(
        log.upload(&s, 1, 1024, now_ms(), None)
            .await
            .expect("upload")
    );
    let e = log.locate(999).await.expect("locate").expect("present");
    let object = fx.store.get(&log.segment_key(&e)).await.expect("object");
    assert_eq!(&object[..7000], &log_bytes(0, 1000)[..]);
    assert_eq!(object.len() as u64, e.object_size());
}

#[test]
fn the_spill_cache_is_bounded() {
    let cache = SpillCache::new(3);
    for i in 0..10u128 {
        cache.insert(Uuid::from_u128(i), Arc::new(Spill::Segments(Vec::new())));
        assert!(cache.entries.lock().expect("lock").len() <= 3);
        assert!(cache.get(&Uuid::from_u128(i)).is_some());
    }
    assert!(SpillCache::new(0).capacity >= 1);
}

// ---------------------------------------------------------------------------------------
// replace_segment (tiered compaction)
// ---------------------------------------------------------------------------------------

/// A compacted copy of the test segment at `base`: the same `[base, base + SPAN)`, fewer
/// and different log bytes (`round` varies length and content, so successive rewrites
/// differ), its own indexes. Returns the segment and the object it should upload as.
fn compacted(base: i64, round: u8) -> (SealedSegment, Vec<u8>) {
    let len = (SPAN * BYTES_PER_OFFSET / 2) as usize - usize::from(round);
    let data: Vec<u8> = (0..len as i64)
        .map(|i| ((base * 13 + i * 3 + 200 + i64::from(round)) % 251) as u8)
        .collect();
    let mut file = tempfile::tempfile().expect("tempfile");
    file.write_all(&data).expect("write the segment");
    file.flush().expect("flush");
    let offset_index = format!("compacted-offset-index-{base}-{round}");
    let time_index = format!("compacted-time-index-{base}-{round}-x");
    let mut object = data.clone();
    object.extend_from_slice(offset_index.as_bytes());
    object.extend_from_slice(time_index.as_bytes());
    let segment = SealedSegment {
        base_offset: base,
        end_offset: base + SPAN,
        log: Arc::new(file),
        log_bytes: data.len() as u64,
        offset_index: Bytes::from(offset_index),
        time_index: Bytes::from(time_index),
        producer_snapshot: Bytes::new(),
        txn_index: Bytes::new(),
        // Compaction may drop the record with the largest timestamp.
        max_timestamp: 1_000 + base - 1,
        log_start_offset: 0,
    };
    (segment, object)
}

/// Replaces `old` by its compacted copy number `round`.
async fn replace(
    log: &RemoteLog,
    old: &SegmentEntry,
    round: u8,
    epoch: i32,
) -> Result<bool, TierError> {
    let (segment, _) = compacted(old.base_offset, round);
    log.replace_segment(old, &segment, epoch, 1 << 20).await
}

/// What `locate` says for every offset of `range`.
async fn every_offset(log: &RemoteLog, range: Range<i64>) -> Vec<Option<SegmentEntry>> {
    let mut out = Vec::new();
    for offset in range {
        out.push(log.locate(offset).await.expect("locate"));
    }
    out
}

/// Every live entry, walked from the log start through `locate`.
async fn live_entries(log: &RemoteLog) -> Vec<SegmentEntry> {
    let mut out = Vec::new();
    let mut offset = log.marks().log_start_offset;
    while let Some(e) = log.locate(offset).await.expect("locate") {
        out.push(e);
        offset = e.end_offset;
    }
    out
}

/// Keys of the spill objects on the path from `root` down to the level-0 object holding
/// `offset`, top first (empty if the tail holds it). Reads the store, not a cache.
async fn spill_path(fx: &Fixture, root: &Root, offset: i64) -> Vec<String> {
    let covers = |r: &SpillRef| r.first_offset <= offset && offset < r.end_offset;
    let mut out = Vec::new();
    let Some(mut r) = root.refs.iter().copied().find(covers) else {
        return out;
    };
    loop {
        let key = keys::manifest_key(&fx.id, r.level, r.first_offset, r.object_id);
        let bytes = fx.store.get(&key).await.expect("spill on the path exists");
        out.push(key);
        match Spill::decode(&bytes).expect("spill decodes") {
            Spill::Segments(entries) => {
                assert!(
                    entries
                        .iter()
                        .any(|e| e.base_offset <= offset && offset < e.end_offset)
                );
                return out;
            }
            Spill::Refs { refs, .. } => {
                r = refs
                    .iter()
                    .copied()
                    .find(covers)
                    .expect("a child covers it");
            }
        }
    }
}

/// The keys the store lists under the partition's prefix.
async fn listed(fx: &Fixture) -> BTreeSet<String> {
    fx.store
        .list(&keys::partition_prefix(&fx.id))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// Nothing failed: the bucket holds exactly what the stored root references (this also
/// checks every spill object against the reference to it), and the instance agrees with
/// the stored root.
async fn assert_exactly_referenced(fx: &Fixture, log: &RemoteLog) {
    let (segments, spills) = referenced(fx, &fx.id).await;
    assert_eq!(fx.segment_objects(), segments);
    assert_eq!(fx.manifest_objects(), spills);
    assert_eq!(
        fx.manifests.stored_root(&fx.id).as_ref(),
        Some(&*log.root())
    );
    assert!(log.in_flight.lock().expect("lock").is_empty());
}

/// The object of `entry` holds `expected`, read through the log's key for it.
async fn assert_object(fx: &Fixture, log: &RemoteLog, entry: &SegmentEntry, expected: &[u8]) {
    let object = fx
        .store
        .get(&log.segment_key(entry))
        .await
        .expect("the object exists");
    assert_eq!(&object[..], expected, "object of {entry:?}");
    assert_eq!(object.len() as u64, entry.object_size());
}

/// The object the original test segment at `base` was uploaded as.
fn original_object(base: i64) -> Vec<u8> {
    let mut expected = log_bytes(base, SPAN);
    expected.extend_from_slice(format!("offset-index-{base}").as_bytes());
    expected.extend_from_slice(format!("time-index-{base}").as_bytes());
    expected
}

#[tokio::test]
async fn replacing_a_tail_entry_swaps_its_object() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 3, 1).await;
    let before = log.root();
    assert!(before.refs.is_empty(), "three segments stay in the tail");
    let old = before.tail[1];
    let old_key = log.segment_key(&old);
    let version = fx.manifests.version(&fx.id).expect("version");

    let (segment, object) = compacted(10, 0);
    assert!(segment.log_bytes < old.log_bytes);
    assert!(
        log.replace_segment(&old, &segment, 2, 1 << 20)
            .await
            .expect("replace")
    );

    let root = log.root();
    assert_eq!(root.tail.len(), 3);
    assert_eq!(root.tail[0], before.tail[0]);
    assert_eq!(root.tail[2], before.tail[2]);
    assert!(root.refs.is_empty());
    let new = root.tail[1];
    assert_eq!((new.base_offset, new.end_offset), (10, 20));
    assert_ne!(new.object_id, old.object_id);
    assert_eq!(new.log_bytes, segment.log_bytes);
    assert_eq!(new.offset_index_bytes as usize, segment.offset_index.len());
    assert_eq!(new.time_index_bytes as usize, segment.time_index.len());
    assert_eq!(new.max_timestamp, segment.max_timestamp);
    assert_eq!(new.leader_epoch, 2);
    assert_eq!(new.uploaded_ms, old.uploaded_ms, "the data's age is kept");
    assert_eq!(
        log.marks(),
        RemoteMarks {
            log_start_offset: 0,
            end_offset: Some(30),
            live_bytes: 2 * seg_bytes() + segment.log_bytes,
            live_segments: 3,
            leader_epoch: 2,
        }
    );
    assert_eq!(
        fx.manifests.version(&fx.id),
        Some(version + 1),
        "one commit"
    );

    // The old object is gone, the new one holds the new bytes.
    assert!(!fx.path_of(&old_key).exists());
    let new_key = log.segment_key(&new);
    assert_eq!(
        std::fs::read(fx.path_of(&new_key)).expect("new object"),
        object
    );
    for offset in 10..20 {
        assert_eq!(log.locate(offset).await.expect("locate"), Some(new));
    }
    let located = log.locate(15).await.expect("locate").expect("present");
    assert_object(&fx, &log, &located, &object).await;
    assert_eq!(
        &fx.store
            .get_range(&log.segment_key(&located), located.time_index_range())
            .await
            .expect("time index")[..],
        segment.time_index.as_ref()
    );
    // Neighbours are untouched.
    for base in [0, 20] {
        let e = log.locate(base).await.expect("locate").expect("present");
        assert_object(&fx, &log, &e, &original_object(base)).await;
    }
    assert_exactly_referenced(&fx, &log).await;
    // A cold instance sees the same.
    let cold = fx.open(SMALL).await;
    assert_eq!(*cold.root(), *root);
    assert_eq!(cold.locate(19).await.expect("locate"), Some(new));
}

#[tokio::test]
async fn replacing_spilled_entries_rewrites_the_path_to_them() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 30, 1).await;
    let end = 30 * SPAN;
    let root = log.root();
    let top_level = root.refs.iter().map(|r| r.level).max().expect("spilled");
    assert!(top_level >= 2, "{root:?}");
    let level0 = root
        .refs
        .iter()
        .find(|r| r.level == 0)
        .copied()
        .unwrap_or_else(|| panic!("a level-0 reference in the root: {root:?}"));
    let deep = root.refs[0];
    assert_eq!(deep.level, top_level);
    // The second entry of the level-0 object the root references; one in the middle of
    // the deepest subtree; and the first entry of that subtree.
    let targets = [
        level0.first_offset + SPAN,
        (deep.first_offset + deep.end_offset) / 2 / SPAN * SPAN,
        deep.first_offset,
    ];

    let mut expected = every_offset(&log, 0..end).await;
    let mut objects: HashMap<i64, Vec<u8>> = (0..30)
        .map(|i| (i * SPAN, original_object(i * SPAN)))
        .collect();
    for (round, base) in targets.into_iter().enumerate() {
        let round = round as u8;
        let before = log.root();
        let old = log.locate(base).await.expect("locate").expect("present");
        assert_eq!(old.base_offset, base);
        let old_path = spill_path(&fx, &before, base).await;
        let top = before
            .refs
            .iter()
            .position(|r| r.first_offset <= base && base < r.end_offset)
            .expect("spilled");
        assert_eq!(
            old_path.len(),
            usize::from(before.refs[top].level) + 1,
            "one object per level"
        );
        let spills_before = fx.manifest_objects();

        let (segment, object) = compacted(base, round);
        assert!(
            log.replace_segment(&old, &segment, 1, 1 << 20)
                .await
                .expect("replace"),
            "replacing the entry at {base}"
        );

        let after = log.root();
        let new = log.locate(base).await.expect("locate").expect("present");
        assert_eq!(
            (new.base_offset, new.end_offset),
            (old.base_offset, old.end_offset)
        );
        assert_ne!(new.object_id, old.object_id);
        assert_eq!(new.log_bytes, segment.log_bytes);
        assert_eq!(new.uploaded_ms, old.uploaded_ms);
        for offset in base..base + SPAN {
            expected[offset as usize] = Some(new);
        }
        objects.insert(base, object);
        // Every other offset locates exactly as before.
        assert_eq!(every_offset(&log, 0..end).await, expected, "after {base}");
        assert!(log.locate(end).await.expect("locate").is_none());

        // The root: the same tail, the same references but the one above the entry,
        // which covers the same range with the new byte count.
        assert_eq!(after.tail, before.tail);
        assert_eq!(after.refs.len(), before.refs.len());
        for (i, (a, b)) in after.refs.iter().zip(&before.refs).enumerate() {
            if i == top {
                assert_ne!(a.object_id, b.object_id);
                assert_eq!(
                    (a.level, a.first_offset, a.end_offset, a.segments),
                    (b.level, b.first_offset, b.end_offset, b.segments)
                );
                assert_eq!(a.log_bytes + old.log_bytes, b.log_bytes + new.log_bytes);
            } else {
                assert_eq!(a, b);
            }
        }
        assert_eq!(after.live_segments, 30);
        assert_eq!(
            after.live_bytes + old.log_bytes,
            before.live_bytes + new.log_bytes
        );
        assert_eq!(after.log_start_offset, 0);

        // The replaced spill objects are gone, one new object per level replaces them.
        let new_path = spill_path(&fx, &after, base).await;
        assert_eq!(new_path.len(), old_path.len());
        for key in &old_path {
            assert!(!fx.path_of(key).exists(), "{key} was replaced");
            assert!(!new_path.contains(key));
        }
        let expected_spills: BTreeSet<String> = spills_before
            .difference(&old_path.iter().cloned().collect())
            .cloned()
            .chain(new_path.iter().cloned())
            .collect();
        assert_eq!(fx.manifest_objects(), expected_spills);
        assert!(!fx.path_of(&log.segment_key(&old)).exists());
        assert_object(&fx, &log, &new, &objects[&base]).await;
        assert_exactly_referenced(&fx, &log).await;
    }
    assert_eq!(
        log.marks().live_bytes,
        live_entries(&log)
            .await
            .iter()
            .map(|e| e.log_bytes)
            .sum::<u64>()
    );

    // A log opened on the stored root, with a fresh spill cache, sees the same.
    let cold = fx.open(SMALL).await;
    assert_eq!(*cold.root(), *log.root());
    assert_eq!(every_offset(&cold, 0..end).await, expected);
    let entries = live_entries(&cold).await;
    assert_eq!(entries.len(), 30);
    for e in &entries {
        assert_object(&fx, &cold, e, &objects[&e.base_offset]).await;
    }
}

#[tokio::test]
async fn a_replacement_with_a_different_range_is_refused_and_writes_nothing() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 12, 1).await;
    let objects = fx.objects();
    let version = fx.manifests.version(&fx.id);
    let root = log.root();
    let tail_entry = *root.tail.last().expect("tail");
    let spilled = log.locate(10).await.expect("locate").expect("present");
    assert!(root.tail.iter().all(|e| *e != spilled), "in a spill object");
    for old in [tail_entry, spilled] {
        let base = old.base_offset;
        for (b, span) in [
            (base, SPAN - 1),
            (base, SPAN + 1),
            (base + 1, SPAN - 1),
            (base - 1, SPAN + 1),
        ] {
            let segment = segment_with(b, span, 5);
            let err = log
                .replace_segment(&old, &segment, 1, 1 << 20)
                .await
                .expect_err("a different range");
            assert!(matches!(err, TierError::NotContiguous { .. }), "{err}");
            assert!(!err.is_transient());
        }
    }
    assert_eq!(fx.objects(), objects, "nothing written or deleted");
    assert_eq!(fx.manifests.version(&fx.id), version, "nothing committed");
    assert_eq!(*log.root(), *root);
    assert!(log.in_flight.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn replacing_an_entry_twice_finds_it_gone_and_leaves_nothing_behind() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 12, 1).await;
    let tail_entry = *log.root().tail.last().expect("tail");
    let spilled = log.locate(10).await.expect("locate").expect("present");
    for old in [tail_entry, spilled] {
        assert!(replace(&log, &old, 0, 1).await.expect("first"));
        let objects = listed(&fx).await;
        let version = fx.manifests.version(&fx.id);
        let root = log.root();
        // `old` is stale now: the second replacement is turned down.
        assert!(!replace(&log, &old, 1, 1).await.expect("second"));
        assert_eq!(listed(&fx).await, objects, "no new object left behind");
        assert_eq!(fx.manifests.version(&fx.id), version);
        assert_eq!(*log.root(), *root);
        // The current entry can be replaced again.
        let current = log
            .locate(old.base_offset)
            .await
            .expect("locate")
            .expect("present");
        assert_ne!(current, old);
        assert!(replace(&log, &current, 2, 1).await.expect("third"));
        assert_exactly_referenced(&fx, &log).await;
    }
}

#[tokio::test]
async fn replacing_an_entry_retention_deleted_finds_it_gone() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 20, 1).await;
    // [0, 80) sits under one level-2 reference, the tail holds [160, 200).
    let spilled = log.locate(0).await.expect("locate").expect("present");
    let tail_entry = log.root().tail[0];
    assert_eq!(tail_entry.base_offset, 160);
    log.advance_start(80, 1).await.expect("advance");
    assert!(log.root().refs.iter().all(|r| r.first_offset >= 80));
    let objects = listed(&fx).await;
    let version = fx.manifests.version(&fx.id);
    assert!(!replace(&log, &spilled, 0, 1).await.expect("deleted"));
    assert_eq!(listed(&fx).await, objects, "no new object left behind");
    assert_eq!(fx.manifests.version(&fx.id), version);

    // Into the tail, by another instance: this one's root is stale, so its commit
    // conflicts, reloads and finds the entry gone.
    let other = fx.open(SMALL).await;
    other.advance_start(175, 1).await.expect("advance");
    let objects = listed(&fx).await;
    let version = fx.manifests.version(&fx.id);
    assert!(log.root().tail.contains(&tail_entry), "stale");
    assert!(!replace(&log, &tail_entry, 0, 1).await.expect("deleted"));
    assert_eq!(listed(&fx).await, objects, "no new object left behind");
    assert_eq!(fx.manifests.version(&fx.id), version);
    assert_eq!(log.marks(), other.marks());
    assert_eq!(log.marks().live_segments, 3);
    assert_eq!(log.marks().live_bytes, 3 * seg_bytes());
    assert_exactly_referenced(&fx, &log).await;
}

#[tokio::test]
async fn replacing_an_entry_below_the_start_inside_a_live_spill_object_finds_it_gone() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 20, 1).await;
    let old = log.locate(0).await.expect("locate").expect("present");
    // [0, 10) is deleted; the spill objects holding it still cover [10, 80).
    assert_eq!(
        log.advance_start(15, 1).await.expect("advance"),
        seg_bytes()
    );
    assert_eq!(log.marks().live_bytes, 19 * seg_bytes());
    let objects = listed(&fx).await;
    let version = fx.manifests.version(&fx.id);
    let outcome = replace(&log, &old, 0, 1).await.expect("replace");
    let marks = log.marks();
    assert!(!outcome, "the entry is below the log start: {marks:?}");
    assert_eq!(marks.live_bytes, 19 * seg_bytes());
    assert_eq!(listed(&fx).await, objects, "no new object left behind");
    assert_eq!(fx.manifests.version(&fx.id), version);
}

#[tokio::test]
async fn a_stale_replacement_of_a_spilled_entry_leaves_nothing_behind() {
    let fx = Fixture::new();
    let stale = fx.open(SMALL).await;
    upload_range(&stale, 0, 8, 1).await;
    let old = stale.locate(0).await.expect("locate").expect("present");
    let top = stale
        .root()
        .refs
        .iter()
        .copied()
        .find(|r| r.first_offset == 0)
        .expect("spilled");
    // Another instance uploads until the reference above `old` is merged a level up.
    let other = fx.open(SMALL).await;
    let mut base = 80;
    while other.root().refs.contains(&top) {
        assert!(upload(&other, base, 1).await.expect("upload"));
        base += SPAN;
    }
    let objects = listed(&fx).await;
    let version = fx.manifests.version(&fx.id);
    // `stale` still sees `top`: it rewrites the path under it, its CAS conflicts, the
    // reloaded root no longer has `top`, and the replacement is turned down.
    assert!(!replace(&stale, &old, 0, 1).await.expect("turned down"));
    assert_eq!(fx.manifests.version(&fx.id), version);
    assert_eq!(*stale.root(), *other.root());
    let left: BTreeSet<String> = listed(&fx).await.difference(&objects).cloned().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_stale_replacement_retried_on_the_reloaded_root_succeeds() {
    let fx = Fixture::new();
    let stale = fx.open(SMALL).await;
    upload_range(&stale, 0, 3, 1).await;
    let old = stale.root().tail[2];
    // Another instance commits meanwhile, without moving `old`.
    let other = fx.open(SMALL).await;
    assert!(upload(&other, 30, 1).await.expect("upload"));
    assert!(
        replace(&stale, &old, 0, 1)
            .await
            .expect("redone after a reload")
    );
    let marks = stale.marks();
    assert_eq!(marks.end_offset, Some(40));
    assert_eq!(marks.live_segments, 4);
    assert_eq!(
        marks.live_bytes,
        3 * seg_bytes() + compacted(20, 0).0.log_bytes
    );
    let new = stale.locate(25).await.expect("locate").expect("present");
    assert_ne!(new.object_id, old.object_id);
    assert_object(&fx, &stale, &new, &compacted(20, 0).1).await;
    assert!(!fx.path_of(&stale.segment_key(&old)).exists());
    assert_exactly_referenced(&fx, &stale).await;
}

#[tokio::test]
async fn replacements_from_an_older_epoch_are_fenced() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 12, 5).await;
    let root = log.root();
    let version = fx.manifests.version(&fx.id);
    let tail_entry = *root.tail.last().expect("tail");
    let spilled = log.locate(0).await.expect("locate").expect("present");
    for old in [tail_entry, spilled] {
        let err = replace(&log, &old, 0, 4).await.expect_err("fenced");
        assert!(
            matches!(
                err,
                TierError::Fenced {
                    epoch: 4,
                    current: 5
                }
            ),
            "{err}"
        );
        assert!(!err.is_transient());
        assert_eq!(*log.root(), *root);
        assert_eq!(fx.manifests.version(&fx.id), version);
        assert_eq!(
            log.locate(old.base_offset).await.expect("locate"),
            Some(old)
        );
        assert_object(&fx, &log, &old, &original_object(old.base_offset)).await;
    }
    assert!(log.in_flight.lock().expect("lock").is_empty());

    // A newer epoch may replace; from then on the old one is fenced for uploads too.
    assert!(replace(&log, &tail_entry, 0, 6).await.expect("newer epoch"));
    assert_eq!(log.marks().leader_epoch, 6);
    assert!(matches!(
        upload(&log, 120, 5).await,
        Err(TierError::Fenced {
            epoch: 5,
            current: 6
        })
    ));

    // A deposed leader whose in-memory root is stale learns it from the CAS.
    let deposed = fx.open(SMALL).await;
    let leader = fx.open(SMALL).await;
    assert!(upload(&leader, 120, 7).await.expect("upload"));
    let old = deposed.locate(50).await.expect("locate").expect("present");
    let err = replace(&deposed, &old, 1, 6).await.expect_err("fenced");
    assert!(
        matches!(
            err,
            TierError::Fenced {
                epoch: 6,
                current: 7
            }
        ),
        "{err}"
    );
    assert_eq!(leader.locate(50).await.expect("locate"), Some(old));
    assert_object(&fx, &leader, &old, &original_object(50)).await;
}

#[tokio::test]
async fn a_fenced_replacement_leaves_nothing_behind() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 12, 5).await;
    let objects = listed(&fx).await;
    let tail_entry = *log.root().tail.last().expect("tail");
    let spilled = log.locate(0).await.expect("locate").expect("present");
    for old in [tail_entry, spilled] {
        replace(&log, &old, 0, 4).await.expect_err("fenced");
        let left: BTreeSet<String> = listed(&fx).await.difference(&objects).cloned().collect();
        assert!(left.is_empty(), "fenced, left behind: {left:?}");
    }
}

#[tokio::test]
async fn a_replacement_whose_spill_write_fails_leaves_nothing_behind() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 12, 1).await;
    let objects = listed(&fx).await;
    let root = log.root();
    let spilled = log.locate(0).await.expect("locate").expect("present");
    assert_eq!(
        spill_path(&fx, &root, 0).await.len(),
        2,
        "under a level-1 object"
    );
    // The level-0 copy is written, the level-1 copy fails for sure (not an unknown
    // outcome): upload() removes its object in that case; so should a replacement.
    *fx.fail_puts.containing.lock().expect("lock") = Some("/manifest-1-".into());
    let err = replace(&log, &spilled, 0, 1)
        .await
        .expect_err("spill write fails");
    *fx.fail_puts.containing.lock().expect("lock") = None;
    assert!(err.is_transient(), "{err}");
    assert_eq!(*log.root(), *root);
    assert!(log.in_flight.lock().expect("lock").is_empty());
    let left: BTreeSet<String> = listed(&fx).await.difference(&objects).cloned().collect();
    assert!(left.is_empty(), "failed, left behind: {left:?}");
}

#[tokio::test]
async fn a_replacement_whose_commit_answer_was_lost_keeps_its_object() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 3, 1).await;
    let old = log.root().tail[1];
    fx.manifests.lose_next_answer.store(true, Ordering::SeqCst);
    let err = replace(&log, &old, 0, 1)
        .await
        .expect_err("unknown outcome");
    assert!(err.is_transient(), "{err}");
    let stored = fx.manifests.stored_root(&fx.id).expect("root");
    let new = stored.tail[1];
    assert_ne!(new.object_id, old.object_id, "the commit landed");
    // The manifest references the new object, so it must stay.
    let new_key = keys::segment_key(&fx.id, new.base_offset, new.object_id);
    assert_eq!(
        std::fs::read(fx.path_of(&new_key)).expect("kept"),
        compacted(10, 0).1
    );
    // The retry reloads and finds `old` gone; what it wrote for nothing is removed.
    assert!(!replace(&log, &old, 1, 1).await.expect("already replaced"));
    assert_eq!(log.locate(15).await.expect("locate"), Some(new));
    // The old object is an orphan now: the scrubber removes it, and nothing else.
    let (segments, spills) = referenced(&fx, &fx.id).await;
    let orphans = fx.objects().len() - segments.len() - spills.len();
    assert_eq!(orphans, 1, "the old object");
    assert_eq!(
        log.scrub(now_ms() + 1_000, 0).await.expect("scrub"),
        orphans
    );
    assert_eq!(fx.segment_objects(), segments);
    assert_eq!(fx.manifest_objects(), spills);
    assert!(!fx.path_of(&log.segment_key(&old)).exists());
    assert_object(&fx, &log, &new, &compacted(10, 0).1).await;
}

#[tokio::test]
async fn the_scrubber_keeps_everything_replacements_reference() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    upload_range(&log, 0, 30, 1).await;
    let mut objects: HashMap<i64, Vec<u8>> = (0..30)
        .map(|i| (i * SPAN, original_object(i * SPAN)))
        .collect();
    let mut rewritten: HashMap<i64, u64> = HashMap::new();
    let tail_base = log.root().tail[0].base_offset;
    // The tail, level 0, deep levels, neighbours and the same entry more than once.
    for (round, base) in [tail_base, 0, 10, 150, 0, 230, tail_base, 150]
        .into_iter()
        .enumerate()
    {
        let old = log.locate(base).await.expect("locate").expect("present");
        let (segment, object) = compacted(base, round as u8);
        assert!(
            log.replace_segment(&old, &segment, 1, 1 << 20)
                .await
                .expect("replace")
        );
        rewritten.insert(base, segment.log_bytes);
        objects.insert(base, object);
    }
    assert_exactly_referenced(&fx, &log).await;
    let before = fx.objects();
    assert_eq!(log.scrub(now_ms() + 1_000, 0).await.expect("scrub"), 0);
    assert_eq!(fx.objects(), before);
    // A stale instance's scrub reads the stored root and agrees.
    let stale = RemoteLog::open(
        fx.id.clone(),
        fx.store.clone(),
        fx.manifests.clone(),
        Arc::new(SpillCache::new(1)),
        SMALL,
    )
    .await
    .expect("open");
    assert!(
        replace(
            &log,
            &log.locate(20).await.expect("locate").expect("present"),
            9,
            1
        )
        .await
        .expect("replace")
    );
    objects.insert(20, compacted(20, 9).1);
    rewritten.insert(20, compacted(20, 9).0.log_bytes);
    assert_eq!(stale.scrub(now_ms() + 1_000, 0).await.expect("scrub"), 0);
    for reader in [&log, &fx.open(SMALL).await] {
        let entries = live_entries(reader).await;
        assert_eq!(entries.len(), 30);
        for e in &entries {
            assert_object(&fx, reader, e, &objects[&e.base_offset]).await;
        }
    }
    // live_bytes still adds up: every entry's log bytes, the original or the rewrite.
    let expected_bytes: u64 = (0..30)
        .map(|i| match rewritten.get(&(i * SPAN)) {
            Some(len) => *len,
            None => seg_bytes(),
        })
        .sum();
    assert_eq!(log.marks().live_bytes, expected_bytes);
    assert_eq!(
        live_entries(&log)
            .await
            .iter()
            .map(|e| e.log_bytes)
            .sum::<u64>(),
        expected_bytes
    );
}

#[tokio::test]
async fn segments_come_largest_timestamp_first_loading_only_the_spills_on_the_way() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    // Timestamps in no particular order, with ties (segment i: (i * 37) % 50).
    let count: i64 = 60;
    let timestamp = |i: i64| (i * 37) % 50;
    for i in 0..count {
        log.upload(
            &segment_with(i * SPAN, SPAN, timestamp(i)),
            1,
            1 << 20,
            now_ms(),
            None,
        )
        .await
        .expect("upload");
    }
    assert!(!log.root().refs.is_empty(), "nothing spilled");
    let mut expected: Vec<(i64, i64)> = (0..count).map(|i| (timestamp(i), i * SPAN)).collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

    // A cold reader (empty spill cache) that stops after the first segment loads only
    // the spill objects on the path to it.
    let cold = fx.open(SMALL).await;
    let first = cold
        .by_max_timestamp(i64::MIN)
        .next()
        .await
        .expect("walk")
        .expect("a segment");
    assert_eq!((first.max_timestamp, first.base_offset), expected[0]);
    let loaded = cold.spills.len();
    let whole = fx.open(SMALL).await;
    let mut walk = whole.by_max_timestamp(i64::MIN);
    let mut all = Vec::new();
    while let Some(e) = walk.next().await.expect("walk") {
        all.push((e.max_timestamp, e.base_offset));
    }
    assert_eq!(all, expected);
    assert!(
        loaded < whole.spills.len(),
        "the first segment loaded {loaded} spill objects, the whole walk {}",
        whole.spills.len()
    );

    // Only timestamps of at least 45, and nothing below the log start.
    log.advance_start(200, 1).await.expect("advance the start");
    let mut walk = log.by_max_timestamp(45);
    let mut some = Vec::new();
    while let Some(e) = walk.next().await.expect("walk") {
        some.push((e.max_timestamp, e.base_offset));
    }
    let want: Vec<(i64, i64)> = expected
        .iter()
        .copied()
        .filter(|&(ts, base)| ts >= 45 && base + SPAN > 200)
        .collect();
    assert_eq!(some, want);
}

#[tokio::test]
async fn segments_in_offset_order_skip_spills_below_the_timestamp() {
    let fx = Fixture::new();
    let log = fx.open(SMALL).await;
    // Timestamps rise with the offset, except segment 40, which is late.
    let count: i64 = 60;
    let timestamp = |i: i64| if i == 40 { 1_000 } else { i };
    for i in 0..count {
        log.upload(
            &segment_with(i * SPAN, SPAN, timestamp(i)),
            1,
            1 << 20,
            now_ms(),
            None,
        )
        .await
        .expect("upload");
    }
    assert!(!log.root().refs.is_empty(), "nothing spilled");
    let order = |at_least: i64| {
        let mut want: Vec<i64> = (0..count)
            .filter(|&i| timestamp(i) >= at_least)
            .map(|i| i * SPAN)
            .collect();
        want.sort_unstable();
        want
    };
    for at_least in [i64::MIN, 30, 59, 60, 1_000, 1_001] {
        let whole = fx.open(SMALL).await;
        let mut walk = whole.by_offset_reaching(at_least);
        let mut got = Vec::new();
        while let Some(e) = walk.next().await.expect("walk") {
            got.push(e.base_offset);
        }
        assert_eq!(got, order(at_least), "at least {at_least}");
    }
    // The first segment reaching 59 is the late one, 40: a cold reader finds it without
    // loading the spill objects that hold only earlier timestamps.
    let everything = fx.open(SMALL).await;
    let mut walk = everything.by_offset_reaching(i64::MIN);
    while walk.next().await.expect("walk").is_some() {}
    let cold = fx.open(SMALL).await;
    let first = cold
        .by_offset_reaching(59)
        .next()
        .await
        .expect("walk")
        .expect("a segment");
    assert_eq!(first.base_offset, 400);
    // The path down to segment 40 is a few levels deep; a walk that loaded every spill
    // object on the way (as locating each segment in turn does) loads about 40.
    assert!(
        cold.spills.len() <= 4,
        "loaded {} spill objects, a full walk {}",
        cold.spills.len(),
        everything.spills.len()
    );
}

/// Retention through a copy of the manifest that still names a segment another copy
/// replaced (compaction): its commit is redone on the stored root, where the doomed
/// segment is the replacement; it must delete that copy's object and count its bytes, not
/// the original's (an orphan, and live bytes counted low for good, retention.bytes then
/// keeping too much).
#[tokio::test]
async fn advance_start_after_a_replacement_deletes_the_copy() {
    for (count, settings) in [(3, ManifestSettings::default()), (8, SMALL)] {
        let fx = Fixture::new();
        let a = fx.open(settings).await;
        upload_range(&a, 0, count, 1).await;
        let b = fx.open(settings).await;
        let old = b.locate(0).await.expect("locate").expect("present");
        assert!(replace(&b, &old, 1, 1).await.expect("replace"));
        a.advance_start(2 * SPAN, 1).await.expect("a advances");
        let fresh = fx.open(settings).await;
        let live = live_entries(&fresh).await;
        assert_eq!(live.len() as i64, count - 2);
        let marks = fresh.marks();
        assert_eq!(
            marks.live_bytes,
            live.iter().map(|e| e.log_bytes).sum::<u64>(),
            "{marks:?}"
        );
        let (segments, _) = referenced(&fx, &fx.id).await;
        assert_eq!(fx.segment_objects(), segments, "with {count} segments");
    }
}
