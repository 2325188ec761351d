//! One partition's remote tier: its manifest (see [`crate::manifest`]) and the objects it
//! references. Uploads, remote retention, DeleteRecords, topic deletion and the orphan
//! scrubber all change it through [`RemoteLog::commit`], a compare-and-swap on the root
//! in the metadata store, serialized in-process by a mutex.
//!
//! The truth rules are in the crate documentation.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tracing::{info, warn};
use uuid::Uuid;

use crate::keys::{self, ObjectName, PartitionId};
use crate::manifest::{self, FormatError, Root, SegmentEntry, Spill, SpillRef};
use crate::store::{Body, RemoteStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ManifestStoreError {
    #[error("the manifest changed concurrently")]
    Conflict,
    #[error("metadata store is unavailable: {0}")]
    Unavailable(String),
}

/// Where manifest roots live: the metadata store (etcd or embedded), one small value per
/// partition, replaced by compare-and-swap on a version.
#[async_trait::async_trait]
pub trait ManifestStore: Send + Sync + 'static {
    /// The root and its version, or `None` if the partition never uploaded anything.
    async fn load(&self, id: &PartitionId) -> Result<Option<(Bytes, u64)>, ManifestStoreError>;
    /// Writes the root if its version is still `expected` (`None`: it must not exist).
    /// Returns the new version.
    async fn save(
        &self,
        id: &PartitionId,
        bytes: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, ManifestStoreError>;
    async fn delete(&self, id: &PartitionId) -> Result<(), ManifestStoreError>;

    /// The roots of partitions `0..partitions` of topic `topic_id` (`topic` is its name),
    /// indexed by partition. A store that can read a topic's roots in one request
    /// overrides this; the default reads them one at a time.
    async fn load_topic(
        &self,
        topic: &str,
        topic_id: Uuid,
        partitions: i32,
    ) -> Result<Vec<Option<(Bytes, u64)>>, ManifestStoreError> {
        let mut roots = Vec::with_capacity(usize::try_from(partitions).unwrap_or(0));
        for partition in 0..partitions {
            let id = PartitionId {
                topic: topic.to_string(),
                topic_id,
                partition,
            };
            roots.push(self.load(&id).await?);
        }
        Ok(roots)
    }

    /// The ids of the topics that have at least one root, read in one pass over the
    /// store (start-up asks once, then reads only those topics' roots), or `None` if
    /// this store cannot list: every topic's roots must then be read. A topic missing
    /// from the answer has no root *as of the listing*: a root committed after it (by
    /// another broker's leader) is found by the usual reload or by the compare-and-swap
    /// of a commit, which fails against an unexpected root.
    async fn topics_with_roots(&self) -> Result<Option<HashSet<Uuid>>, ManifestStoreError> {
        Ok(None)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestStoreError),
    #[error("manifest object {key} is unreadable: {source}")]
    Format { key: String, source: FormatError },
    #[error("leader epoch {epoch} is fenced: the manifest was committed by epoch {current}")]
    Fenced { epoch: i32, current: i32 },
    #[error("segment at {base_offset} does not follow the remote log, which ends at {end_offset}")]
    NotContiguous { base_offset: i64, end_offset: i64 },
    #[error("the manifest kept changing; gave up after {0} attempts")]
    Contended(usize),
}

impl TierError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            TierError::Store(e) => e.is_transient(),
            TierError::Manifest(_) | TierError::Contended(_) => true,
            _ => false,
        }
    }
}

/// Shape of the manifest tree; see [`crate::manifest`].
#[derive(Debug, Clone, Copy)]
pub struct ManifestSettings {
    /// Segment entries kept in the root before the older half spills into the bucket.
    pub tail_entries: usize,
    /// References per level kept in the root before they are merged a level up.
    pub fanout: usize,
}

impl Default for ManifestSettings {
    fn default() -> Self {
        ManifestSettings {
            tail_entries: 100,
            fanout: 16,
        }
    }
}

/// Decoded spill objects by id. They are immutable, so entries never go stale.
pub struct SpillCache {
    entries: Mutex<HashMap<Uuid, Arc<Spill>>>,
    capacity: usize,
}

impl SpillCache {
    pub fn new(capacity: usize) -> SpillCache {
        SpillCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, id: &Uuid) -> Option<Arc<Spill>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(id).cloned()
    }

    fn insert(&self, id: Uuid, spill: Arc<Spill>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            // Crude but bounded: spill objects are re-fetched on demand.
            entries.clear();
        }
        entries.insert(id, spill);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A walk over the live segments of a remote log (those ending past the log start) whose
/// largest record timestamp is at least a bound, in one of two orders
/// ([`RemoteLog::by_max_timestamp`], [`RemoteLog::by_offset_reaching`]). The root's
/// entries and spill references all carry a max timestamp, so a spill object is loaded
/// only once it is the next candidate and could hold a segment that qualifies: finding
/// the first few costs a path through the manifest, not a walk of all of it.
pub struct SegmentWalk<'a> {
    log: &'a RemoteLog,
    start: i64,
    at_least: i64,
    by_offset: bool,
    heap: std::collections::BinaryHeap<Candidate>,
}

/// A heap entry, ranked for the walk's order (the heap pops the largest rank).
struct Candidate {
    rank: (i64, i64),
    node: Node,
}

enum Node {
    Segment(SegmentEntry),
    Spill(SpillRef),
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank)
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl SegmentWalk<'_> {
    /// Offset order: the lowest first offset first. Max-timestamp order: the largest max
    /// timestamp first, the lower first offset on a tie. Segments and spill references
    /// cover disjoint offset ranges, so either order carries over to what a reference
    /// holds.
    fn rank(&self, max_timestamp: i64, first_offset: i64) -> (i64, i64) {
        if self.by_offset {
            (-first_offset, 0)
        } else {
            (max_timestamp, -first_offset)
        }
    }

    fn push_segment(&mut self, e: &SegmentEntry) {
        if e.end_offset > self.start && e.max_timestamp >= self.at_least {
            self.heap.push(Candidate {
                rank: self.rank(e.max_timestamp, e.base_offset),
                node: Node::Segment(*e),
            });
        }
    }

    fn push_spill(&mut self, r: &SpillRef) {
        if r.end_offset > self.start && r.max_timestamp >= self.at_least {
            self.heap.push(Candidate {
                rank: self.rank(r.max_timestamp, r.first_offset),
                node: Node::Spill(*r),
            });
        }
    }

    /// The log start of the manifest snapshot the walk runs over: records below it are
    /// deleted, whatever the segments yielded still hold.
    pub fn log_start(&self) -> i64 {
        self.start
    }

    /// The next segment, or `None` when no qualifying segment is left.
    pub async fn next(&mut self) -> Result<Option<SegmentEntry>, TierError> {
        while let Some(candidate) = self.heap.pop() {
            match candidate.node {
                Node::Segment(entry) => return Ok(Some(entry)),
                Node::Spill(r) => match &*self.log.load_spill(&r).await? {
                    Spill::Segments(entries) => entries.iter().for_each(|e| self.push_segment(e)),
                    Spill::Refs { refs, .. } => refs.iter().for_each(|r| self.push_spill(r)),
                },
            }
        }
        Ok(None)
    }
}

/// A sealed local segment, ready to upload.
#[derive(Debug, Clone)]
pub struct SealedSegment {
    pub base_offset: i64,
    pub end_offset: i64,
    /// The `.log` file; read through this handle, so local deletion cannot race the upload.
    pub log: Arc<File>,
    pub log_bytes: u64,
    pub offset_index: Bytes,
    pub time_index: Bytes,
    /// The idempotent producers' state as of the segment's end (empty: none).
    pub producer_snapshot: Bytes,
    /// The aborted transactions overlapping the segment, in the broker's format (empty:
    /// none). Opaque here.
    pub txn_index: Bytes,
    pub max_timestamp: i64,
    /// The local log start offset when the segment was picked. The first upload into an
    /// empty manifest starts the remote log there, so records deleted before (by
    /// DeleteRecords or local retention) do not come back from the bucket.
    pub log_start_offset: i64,
}

impl SealedSegment {
    /// The object: the log bytes, the offset index, the time index, the producer
    /// snapshot, the transaction index.
    fn body(&self) -> Body {
        let mut body = Body::new();
        body.push_file(self.log.clone(), 0, self.log_bytes);
        body.push_bytes(self.offset_index.clone());
        body.push_bytes(self.time_index.clone());
        body.push_bytes(self.producer_snapshot.clone());
        body.push_bytes(self.txn_index.clone());
        body
    }

    /// Its manifest entry, as object `object_id` uploaded by `leader_epoch` at `uploaded_ms`.
    fn entry(&self, leader_epoch: i32, object_id: Uuid, uploaded_ms: i64) -> SegmentEntry {
        SegmentEntry {
            base_offset: self.base_offset,
            end_offset: self.end_offset,
            log_bytes: self.log_bytes,
            offset_index_bytes: self.offset_index.len() as u32,
            time_index_bytes: self.time_index.len() as u32,
            max_timestamp: self.max_timestamp,
            leader_epoch,
            object_id,
            uploaded_ms,
            producer_snapshot_bytes: self.producer_snapshot.len() as u32,
            txn_index_bytes: self.txn_index.len() as u32,
        }
    }
}

/// What the broker needs to know about a remote log, cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMarks {
    pub log_start_offset: i64,
    /// One past the last remote record; `None` if nothing was uploaded.
    pub end_offset: Option<i64>,
    pub live_bytes: u64,
    pub live_segments: u64,
    pub leader_epoch: i32,
}

/// The size of a manifest root, for status pages: how much one read of it costs and how
/// far the spill levels reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestShape {
    pub root_bytes: u64,
    pub tail_entries: u32,
    pub spill_refs: u32,
}

/// Test hook between the object PUT and the manifest commit (the crash window).
pub type AfterUploadHook<'a> = dyn Fn(&PartitionId, &SealedSegment) + Send + Sync + 'a;

struct Current {
    root: Arc<Root>,
    version: Option<u64>,
}

/// One past the last remote offset: the last segment's end, or the log start offset once
/// retention or DeleteRecords has deleted every segment (the root then has no entries,
/// but the offsets below its start are gone for good); `None` if nothing ever was.
fn remote_end(root: &Root) -> Option<i64> {
    match root.end_offset() {
        Some(end) => Some(end.max(root.log_start_offset)),
        None => (root.log_start_offset > 0).then_some(root.log_start_offset),
    }
}

/// Whether the segment `[base_offset, end_offset)` is new to `root` (`Ok(true)`), or
/// already covered or deleted (`Ok(false)`); an error if it does not follow the last
/// segment. With no live segment (the first upload, or the first after every segment
/// was deleted) any segment reaching past the log start follows.
fn follows(root: &Root, base_offset: i64, end_offset: i64) -> Result<bool, TierError> {
    if end_offset <= root.log_start_offset {
        return Ok(false);
    }
    match root.end_offset() {
        None => Ok(true),
        Some(end) if end_offset <= end => Ok(false),
        Some(end) if base_offset != end => Err(TierError::NotContiguous {
            base_offset,
            end_offset: end,
        }),
        Some(_) => Ok(true),
    }
}

pub struct RemoteLog {
    pub id: PartitionId,
    store: Arc<dyn RemoteStore>,
    manifests: Arc<dyn ManifestStore>,
    spills: Arc<SpillCache>,
    settings: ManifestSettings,
    /// A std lock: only cloned out of, never held across an `.await`.
    current: RwLock<Current>,
    /// A tokio mutex: held across the object writes and the CAS of one commit, so this
    /// process never races itself on the root.
    commit_lock: tokio::sync::Mutex<()>,
    /// Objects uploaded but not yet committed (or cleaned up): the scrubber must not
    /// take them for orphans.
    in_flight: Mutex<HashSet<Uuid>>,
}

const COMMIT_ATTEMPTS: usize = 8;

impl RemoteLog {
    pub async fn open(
        id: PartitionId,
        store: Arc<dyn RemoteStore>,
        manifests: Arc<dyn ManifestStore>,
        spills: Arc<SpillCache>,
        settings: ManifestSettings,
    ) -> Result<RemoteLog, TierError> {
        let loaded = manifests.load(&id).await?;
        Self::from_loaded(id, store, manifests, spills, settings, loaded)
    }

    /// Opens the remote log from a root the caller already read (`None`: the partition
    /// has no root, as for a topic created with a fresh id). The caller answers for the
    /// read being current: a root committed since is found by [`RemoteLog::reload`], or
    /// by the first commit, whose compare-and-swap fails and reloads.
    pub fn from_loaded(
        id: PartitionId,
        store: Arc<dyn RemoteStore>,
        manifests: Arc<dyn ManifestStore>,
        spills: Arc<SpillCache>,
        settings: ManifestSettings,
        loaded: Option<(Bytes, u64)>,
    ) -> Result<RemoteLog, TierError> {
        let (root, version) = Self::decode_root(&id, loaded)?;
        Ok(RemoteLog {
            id,
            store,
            manifests,
            spills,
            settings,
            current: RwLock::new(Current {
                root: Arc::new(root),
                version,
            }),
            commit_lock: tokio::sync::Mutex::new(()),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    async fn load_root(
        manifests: &dyn ManifestStore,
        id: &PartitionId,
    ) -> Result<(Root, Option<u64>), TierError> {
        Self::decode_root(id, manifests.load(id).await?)
    }

    fn decode_root(
        id: &PartitionId,
        loaded: Option<(Bytes, u64)>,
    ) -> Result<(Root, Option<u64>), TierError> {
        match loaded {
            None => Ok((Root::default(), None)),
            Some((bytes, version)) => {
                let root = Root::decode(&bytes).map_err(|source| TierError::Format {
                    key: format!("manifest root of {id}"),
                    source,
                })?;
                Ok((root, Some(version)))
            }
        }
    }

    /// Reads the root again from the manifest store: a follower's view after the leader
    /// committed. Never goes back to an older version.
    pub async fn reload(&self) -> Result<(), TierError> {
        let (root, version) = Self::load_root(&*self.manifests, &self.id).await?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if version > current.version {
            current.root = Arc::new(root);
            current.version = version;
        }
        Ok(())
    }

    /// Makes `leader_epoch` the manifest's epoch (a new leader taking over), so a deposed
    /// leader's uploads and retention fail from now on. Nothing else changes.
    pub async fn claim(&self, leader_epoch: i32) -> Result<(), TierError> {
        self.reload().await?;
        if self.root().leader_epoch >= leader_epoch || self.marks().end_offset.is_none() {
            return Ok(());
        }
        self.commit(leader_epoch, |root| Ok(root.leader_epoch < leader_epoch))
            .await
            .map(|_| ())
    }

    /// The manifest root as last loaded or committed (tests compare it; the broker asks
    /// the methods below, so the manifest's layout stays this crate's business).
    pub(crate) fn root(&self) -> Arc<Root> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .root
            .clone()
    }

    pub fn marks(&self) -> RemoteMarks {
        let root = self.root();
        RemoteMarks {
            log_start_offset: root.log_start_offset,
            end_offset: remote_end(&root),
            live_bytes: root.live_bytes,
            live_segments: root.live_segments,
            leader_epoch: root.leader_epoch,
        }
    }

    /// The live segments (ending past the log start) whose largest timestamp is at least
    /// `at_least`, largest first; see [`SegmentWalk`].
    pub fn by_max_timestamp(&self, at_least: i64) -> SegmentWalk<'_> {
        self.walk(at_least, false)
    }

    /// The live segments whose largest timestamp is at least `at_least`, in offset order
    /// (where a search for the first record at or after a timestamp looks); see
    /// [`SegmentWalk`].
    pub fn by_offset_reaching(&self, at_least: i64) -> SegmentWalk<'_> {
        self.walk(at_least, true)
    }

    fn walk(&self, at_least: i64, by_offset: bool) -> SegmentWalk<'_> {
        let root = self.root();
        let mut walk = SegmentWalk {
            log: self,
            start: root.log_start_offset,
            at_least,
            by_offset,
            heap: std::collections::BinaryHeap::new(),
        };
        root.tail.iter().for_each(|e| walk.push_segment(e));
        root.refs.iter().for_each(|r| walk.push_spill(r));
        walk
    }

    pub fn manifest_shape(&self) -> ManifestShape {
        let root = self.root();
        ManifestShape {
            root_bytes: root.encode().len() as u64,
            tail_entries: root.tail.len() as u32,
            spill_refs: root.refs.len() as u32,
        }
    }

    pub fn segment_key(&self, entry: &SegmentEntry) -> String {
        keys::segment_key(&self.id, entry.base_offset, entry.object_id)
    }

    async fn load_spill(&self, r: &SpillRef) -> Result<Arc<Spill>, TierError> {
        if let Some(spill) = self.spills.get(&r.object_id) {
            return Ok(spill);
        }
        let key = keys::manifest_key(&self.id, r.level, r.first_offset, r.object_id);
        let bytes = self.store.get(&key).await?;
        let spill =
            Arc::new(Spill::decode(&bytes).map_err(|source| TierError::Format { key, source })?);
        self.spills.insert(r.object_id, spill.clone());
        Ok(spill)
    }

    /// The segment holding `offset`, whether or not it is below the log start.
    async fn find(&self, root: &Root, offset: i64) -> Result<Option<SegmentEntry>, TierError> {
        let i = root.tail.partition_point(|e| e.end_offset <= offset);
        if let Some(e) = root.tail.get(i)
            && e.base_offset <= offset
        {
            return Ok(Some(*e));
        }
        // Older than the tail (or past the end): the spill objects hold it, if anyone.
        let i = root.refs.partition_point(|r| r.end_offset <= offset);
        let Some(mut r) = root.refs.get(i).copied() else {
            return Ok(None);
        };
        if r.first_offset > offset {
            return Ok(None);
        }
        loop {
            match &*self.load_spill(&r).await? {
                Spill::Segments(entries) => {
                    let i = entries.partition_point(|e| e.end_offset <= offset);
                    return Ok(entries.get(i).filter(|e| e.base_offset <= offset).copied());
                }
                Spill::Refs { refs, .. } => {
                    let i = refs.partition_point(|r| r.end_offset <= offset);
                    match refs.get(i) {
                        Some(next) if next.first_offset <= offset => r = *next,
                        _ => return Ok(None),
                    }
                }
            }
        }
    }

    /// The live segment holding `offset`, if the remote tier has it.
    pub async fn locate(&self, offset: i64) -> Result<Option<SegmentEntry>, TierError> {
        let root = self.root();
        if offset < root.log_start_offset {
            return Ok(None);
        }
        self.find(&root, offset).await
    }

    /// The idempotent producers' state at the remote end (the last segment's snapshot),
    /// for a broker that restores the partition from the bucket. `None` if the last
    /// segment carries none.
    pub async fn producer_snapshot(&self) -> Result<Option<Bytes>, TierError> {
        let Some(end) = self.root().end_offset() else {
            return Ok(None);
        };
        let Some(entry) = self.locate(end - 1).await? else {
            return Ok(None);
        };
        if entry.producer_snapshot_bytes == 0 {
            return Ok(None);
        }
        let bytes = self
            .store
            .get_range(&self.segment_key(&entry), entry.producer_snapshot_range())
            .await?;
        Ok(Some(bytes))
    }

    /// Uploads a sealed segment, then commits it to the manifest: objects first, manifest
    /// second. Returns false if the manifest already covered it.
    pub async fn upload(
        &self,
        segment: &SealedSegment,
        leader_epoch: i32,
        part_bytes: u64,
        now_ms: i64,
        after_upload: Option<&AfterUploadHook<'_>>,
    ) -> Result<bool, TierError> {
        let root = self.root();
        if !follows(&root, segment.base_offset, segment.end_offset)? {
            return Ok(false);
        }
        if leader_epoch < root.leader_epoch {
            return Err(TierError::Fenced {
                epoch: leader_epoch,
                current: root.leader_epoch,
            });
        }
        let object_id = Uuid::new_v4();
        let key = keys::segment_key(&self.id, segment.base_offset, object_id);
        let body = segment.body();
        self.set_in_flight(object_id, true);
        let result = async {
            self.store.put_body(&key, &body, part_bytes).await?;
            if let Some(hook) = after_upload {
                hook(&self.id, segment);
            }
            let entry = segment.entry(leader_epoch, object_id, now_ms);
            let mut already_ours = false;
            let committed = self
                .commit(leader_epoch, |root| {
                    // A commit whose answer was lost (a timeout) may have landed: then the
                    // entry is ours and the object must stay.
                    if root.tail.iter().any(|e| e.object_id == object_id) {
                        already_ours = true;
                        return Ok(false);
                    }
                    if !follows(root, entry.base_offset, entry.end_offset)? {
                        return Ok(false);
                    }
                    if root.end_offset().is_none() {
                        root.log_start_offset = root.log_start_offset.max(segment.log_start_offset);
                    }
                    root.tail.push(entry);
                    root.live_bytes += entry.log_bytes;
                    root.live_segments += 1;
                    Ok(true)
                })
                .await?;
            Ok(committed || already_ours)
        }
        .await;
        // When the metadata store did not answer, the commit may have landed and the
        // manifest may reference the object: the scrubber, which reads the stored root,
        // decides. Otherwise it is not referenced: remove it now.
        let outcome_unknown = matches!(
            result,
            Err(TierError::Manifest(ManifestStoreError::Unavailable(_)))
        );
        if !matches!(result, Ok(true))
            && !outcome_unknown
            && let Err(e) = self.store.delete(&key).await
        {
            warn!(key, error = %e, "could not delete an uncommitted upload; the scrubber will");
        }
        self.set_in_flight(object_id, false);
        result
    }

    fn set_in_flight(&self, id: Uuid, on: bool) {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }

    /// Read-modify-write of the root: `edit` changes a copy (returning whether anything
    /// changed), spill-over objects are written, then the root is swapped in if nobody
    /// else changed it meanwhile; on a conflict the root is reloaded and `edit` runs again.
    async fn commit<T>(
        &self,
        leader_epoch: i32,
        mut edit: impl FnMut(&mut Root) -> Result<T, TierError>,
    ) -> Result<T, TierError>
    where
        T: Copy + Into<bool>,
    {
        let _guard = self.commit_lock.lock().await;
        for _ in 0..COMMIT_ATTEMPTS {
            let (root, version) = {
                let current = self.current.read().unwrap_or_else(|p| p.into_inner());
                (current.root.clone(), current.version)
            };
            if leader_epoch < root.leader_epoch {
                return Err(TierError::Fenced {
                    epoch: leader_epoch,
                    current: root.leader_epoch,
                });
            }
            let mut next = (*root).clone();
            let outcome = edit(&mut next)?;
            if !outcome.into() {
                return Ok(outcome);
            }
            next.leader_epoch = leader_epoch;
            let mut written = Vec::new();
            let spilled = self.spill_over(&mut next, &mut written).await;
            let saved = match spilled {
                Ok(()) => self.manifests.save(&self.id, next.encode(), version).await,
                Err(_) => Err(ManifestStoreError::Conflict),
            };
            // Including those written before a failed write: uncommitted, they are
            // orphans for the scrubber.
            for id in &written {
                self.set_in_flight(*id, false);
            }
            spilled?;
            match saved {
                Ok(new_version) => {
                    let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                    *current = Current {
                        root: Arc::new(next),
                        version: Some(new_version),
                    };
                    return Ok(outcome);
                }
                Err(ManifestStoreError::Conflict) => {
                    warn!(partition = %self.id, "manifest changed under us; reloading");
                    let (root, version) = Self::load_root(&*self.manifests, &self.id).await?;
                    let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                    *current = Current {
                        root: Arc::new(root),
                        version,
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(TierError::Contended(COMMIT_ATTEMPTS))
    }

    /// Moves the oldest tail entries into a level-0 object, and merges references a level
    /// up, until the root is within its bounds.
    /// Adds the ids written to `written` (also when a later write fails); they stay
    /// marked in flight until the commit is decided.
    async fn spill_over(&self, root: &mut Root, written: &mut Vec<Uuid>) -> Result<(), TierError> {
        let ManifestSettings {
            tail_entries,
            fanout,
        } = self.settings;
        // Merging fewer than two references would not shrink the root.
        let fanout = fanout.max(2);
        if root.tail.len() > tail_entries.max(2) {
            let moved: Vec<SegmentEntry> = root.tail.drain(..(tail_entries / 2).max(1)).collect();
            let object_id = Uuid::new_v4();
            let r = manifest::ref_for_segments(&moved, object_id);
            self.write_spill(&r, Spill::Segments(moved)).await?;
            written.push(object_id);
            root.refs.push(r);
        }
        let mut level = 0u8;
        loop {
            let first = root.refs.iter().position(|r| r.level == level);
            let count = root.refs.iter().filter(|r| r.level == level).count();
            let Some(first) = first else { break };
            if count <= fanout {
                level += 1;
                continue;
            }
            let group: Vec<SpillRef> = root.refs[first..first + fanout].to_vec();
            let object_id = Uuid::new_v4();
            let r = manifest::ref_for_refs(&group, object_id);
            self.write_spill(&r, Spill::Refs { level, refs: group })
                .await?;
            written.push(object_id);
            root.refs.splice(first..first + fanout, [r]);
            level += 1;
        }
        Ok(())
    }

    async fn write_spill(&self, r: &SpillRef, spill: Spill) -> Result<(), TierError> {
        let key = keys::manifest_key(&self.id, r.level, r.first_offset, r.object_id);
        self.set_in_flight(r.object_id, true);
        let result = self.store.put(&key, spill.encode()).await;
        if result.is_err() {
            self.set_in_flight(r.object_id, false);
        } else {
            self.spills.insert(r.object_id, Arc::new(spill));
        }
        Ok(result?)
    }

    /// Segments wholly below `new_start` that are still live: what moving the start
    /// there would delete. Walks at most `limit` segments.
    async fn segments_below(
        &self,
        root: &Root,
        new_start: i64,
        limit: usize,
    ) -> Result<Vec<SegmentEntry>, TierError> {
        let mut out = Vec::new();
        let mut offset = root.log_start_offset;
        while out.len() < limit {
            let Some(entry) = self.find(root, offset).await? else {
                break;
            };
            if entry.end_offset > new_start {
                break;
            }
            offset = entry.end_offset;
            out.push(entry);
        }
        Ok(out)
    }

    /// Total retention on the remote tier: the new log start offset that retention.ms /
    /// retention.bytes ask for, or `None`. `local_only_bytes` is what the local log holds
    /// beyond the remote end, which counts towards retention.bytes too.
    pub async fn retention_target(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
        local_only_bytes: u64,
    ) -> Result<Option<i64>, TierError> {
        let root = self.root();
        let mut total = root.live_bytes + local_only_bytes;
        let mut offset = root.log_start_offset;
        let mut target = None;
        // Bounded per pass; the next pass continues.
        for _ in 0..1000 {
            let Some(entry) = self.find(&root, offset).await? else {
                break;
            };
            let expired = retention_ms >= 0
                && entry.max_timestamp >= 0
                && now_ms - entry.max_timestamp > retention_ms;
            let oversize = retention_bytes >= 0
                && total.saturating_sub(entry.log_bytes) >= retention_bytes as u64;
            if !(expired || oversize) {
                break;
            }
            total = total.saturating_sub(entry.log_bytes);
            offset = entry.end_offset;
            target = Some(offset);
        }
        Ok(target)
    }

    /// Moves the remote log start offset to `new_start` (retention or DeleteRecords):
    /// manifest first, then the objects of segments wholly below it and of spill objects
    /// no longer referenced. A crash between the two leaves orphans for the scrubber.
    pub async fn advance_start(&self, new_start: i64, leader_epoch: i32) -> Result<u64, TierError> {
        for _ in 0..COMMIT_ATTEMPTS {
            let root = self.root();
            if new_start <= root.log_start_offset {
                return Ok(0);
            }
            let doomed = self.segments_below(&root, new_start, usize::MAX).await?;
            let doomed_bytes: u64 = doomed.iter().map(|e| e.log_bytes).sum();
            let doomed_ids: HashSet<Uuid> = doomed.iter().map(|e| e.object_id).collect();
            let mut dropped_refs = Vec::new();
            let mut stale = false;
            let outcome = self
                .commit(leader_epoch, |next| {
                    stale = false;
                    if new_start <= next.log_start_offset {
                        return Ok(false);
                    }
                    // `doomed` was found from `root`'s start. A reload that moved the start
                    // (another writer advanced it) would count segments twice: find again.
                    // So would one that replaced a segment below `new_start` (compaction):
                    // `doomed` would name the original, not the copy the root now holds.
                    if next.log_start_offset != root.log_start_offset
                        || below(next, new_start) != below(&root, new_start)
                    {
                        stale = true;
                        return Ok(false);
                    }
                    next.log_start_offset = new_start;
                    next.tail.retain(|e| e.end_offset > new_start);
                    dropped_refs = next
                        .refs
                        .iter()
                        .filter(|r| r.end_offset <= new_start)
                        .copied()
                        .collect();
                    next.refs.retain(|r| r.end_offset > new_start);
                    next.live_bytes = next.live_bytes.saturating_sub(doomed_bytes);
                    next.live_segments = next.live_segments.saturating_sub(doomed.len() as u64);
                    if next.tail.is_empty() && next.refs.is_empty() {
                        next.live_bytes = 0;
                        next.live_segments = 0;
                    }
                    Ok(true)
                })
                .await?;
            if stale {
                continue;
            }
            if !outcome {
                return Ok(0);
            }
            for entry in &doomed {
                self.delete_quietly(&self.segment_key(entry)).await;
            }
            let mut spill_keys = Vec::new();
            for r in &dropped_refs {
                self.collect_spills(r, &mut spill_keys).await;
            }
            for key in spill_keys {
                self.delete_quietly(&key).await;
            }
            info!(partition = %self.id, log_start_offset = new_start, segments = doomed_ids.len(),
                bytes = doomed_bytes, "deleted remote segments");
            return Ok(doomed_bytes);
        }
        Err(TierError::Contended(COMMIT_ATTEMPTS))
    }

    /// Keys of `r`'s object and every spill object below it.
    async fn collect_spills(&self, r: &SpillRef, out: &mut Vec<String>) {
        out.push(keys::manifest_key(
            &self.id,
            r.level,
            r.first_offset,
            r.object_id,
        ));
        if r.level == 0 {
            return;
        }
        let mut stack = vec![*r];
        while let Some(r) = stack.pop() {
            match self.load_spill(&r).await {
                Ok(spill) => {
                    if let Spill::Refs { refs, .. } = &*spill {
                        for child in refs {
                            out.push(keys::manifest_key(
                                &self.id,
                                child.level,
                                child.first_offset,
                                child.object_id,
                            ));
                            if child.level > 0 {
                                stack.push(*child);
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(partition = %self.id, error = %e, "cannot read a dropped manifest object; the scrubber will remove what it references")
                }
            }
        }
    }

    async fn delete_quietly(&self, key: &str) {
        if let Err(e) = self.store.delete(key).await {
            warn!(key, error = %e, "could not delete a remote object; the scrubber will retry");
        }
    }

    /// Deletes objects under this partition that no manifest references and that are
    /// older than `grace_ms`. Returns how many were deleted.
    pub async fn scrub(&self, now_ms: i64, grace_ms: i64) -> Result<usize, TierError> {
        let objects = self.store.list(&keys::partition_prefix(&self.id)).await?;
        // In this order: an object listed but no longer in flight was committed (or given
        // up) before the root is read. And the root is the stored one, not this
        // instance's copy, which is stale if another writer (a newer leader) committed
        // since, or if a commit's answer was lost.
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (root, _) = Self::load_root(&*self.manifests, &self.id).await?;
        let mut reachable_spills = HashSet::new();
        let mut stack: Vec<SpillRef> = root.refs.clone();
        while let Some(r) = stack.pop() {
            reachable_spills.insert(r.object_id);
            if r.level > 0
                && let Spill::Refs { refs, .. } = &*self.load_spill(&r).await?
            {
                stack.extend(refs.iter().copied());
            }
        }
        let mut deleted = 0;
        for object in objects {
            if now_ms - object.last_modified_ms < grace_ms {
                continue;
            }
            let referenced = match keys::parse_object_name(&object.key) {
                None => continue,
                Some(ObjectName::Segment {
                    base_offset,
                    object_id,
                }) => {
                    in_flight.contains(&object_id)
                        || self.find(&root, base_offset).await?.is_some_and(|e| {
                            e.object_id == object_id
                                && e.base_offset == base_offset
                                && e.end_offset > root.log_start_offset
                        })
                }
                Some(ObjectName::Manifest { object_id, .. }) => {
                    in_flight.contains(&object_id) || reachable_spills.contains(&object_id)
                }
            };
            if !referenced {
                info!(
                    key = object.key,
                    "deleting an object no manifest references"
                );
                self.store.delete(&object.key).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Topic deletion: every object of the partition, then its manifest root.
    pub async fn delete_everything(&self) -> Result<(), TierError> {
        delete_prefix(&*self.store, &keys::partition_prefix(&self.id)).await?;
        self.manifests.delete(&self.id).await?;
        Ok(())
    }
}

/// Deletes every object under `prefix` (topic deletion, and the scrubber for topics that
/// no longer exist).
pub async fn delete_prefix(store: &dyn RemoteStore, prefix: &str) -> Result<usize, StoreError> {
    let objects = store.list(prefix).await?;
    for object in &objects {
        store.delete(&object.key).await?;
    }
    Ok(objects.len())
}

mod compaction;

#[cfg(test)]
mod tests;

/// What of `root` holds offsets below `offset`: the tail entries and the references that
/// start below it. [`RemoteLog::advance_start`] compares them before and after a reload.
fn below(root: &Root, offset: i64) -> (Vec<SegmentEntry>, Vec<SpillRef>) {
    let tail = root
        .tail
        .iter()
        .filter(|e| e.base_offset < offset)
        .copied()
        .collect();
    let refs = root
        .refs
        .iter()
        .filter(|r| r.first_offset < offset)
        .copied()
        .collect();
    (tail, refs)
}
