//! The merger: turns a diskless partition's runs (offset ranges of shared objects, listed
//! in the metadata store) into segments of the tiered format, committed to the
//! partition's manifest, so long-term storage, retention, DeleteRecords, historical reads
//! and the partition scrubber work as for tiered topics, and the metadata store holds a
//! bounded number of runs per partition.
//!
//! Every `diskless_merge_interval_ms` each broker looks at the diskless partitions it
//! owns ([`owner`]: the live brokers sorted by node id, indexed by a stable hash of the
//! partition). A partition is merged when its unmerged runs reach `diskless_merge_bytes`
//! (capped by the topic's segment.bytes), when the oldest is older than
//! `diskless_merge_max_age_ms`, or when their count reaches half of
//! `diskless_max_pending_runs` (above which produce is refused). A merge never reaches
//! the head's last stable offset (`Head::last_stable`): it takes whole runs ending at or
//! below it, so an open transaction's records (and everything after them) stay in runs
//! until its marker; `transaction.timeout.ms` bounds how long, after which the
//! coordinator aborts it. Meanwhile runs pile up and, past `diskless_max_pending_runs`,
//! produce is refused. A merge:
//!
//! 1. **reads** a prefix of the runs (ranged reads of their shared objects through the
//!    segment cache, where a tailing reader may already have put them);
//! 2. **builds** the segment ([`build`]): deterministic bytes, offsets patched from the
//!    runs, partitionLeaderEpoch 0, the offset and time indexes the remote reader reads;
//! 3. **uploads** it and commits it to the manifest with `RemoteLog::upload` at leader
//!    epoch 0: objects first, manifest second;
//! 4. **trims**: a compare-and-swap of the head (`DisklessStore::trim`) that moves
//!    `merged` to the manifest's end and deletes the runs below it.
//!
//! Crash safety and fencing follow from the order (the tiering crate's doc has the crash
//! table): a crash before the commit leaves an orphan segment object for the partition
//! scrubber and nothing else; a crash after the commit leaves runs the manifest already
//! covers, and the next round ([`plan`] sees the manifest's end past `merged`) trims them
//! without uploading again. Two brokers merging the same runs at once (ownership moving)
//! build the same offsets; the manifest CAS lets one commit and the other's upload finds
//! the range covered and deletes its own object. The trim compares the head's version: a
//! trim that raced an append is recomputed from a fresh read.
//!
//! Producer state stays in the metadata store (the producer entries), where every broker
//! checks idempotent retries: a merged segment carries an empty producer snapshot. Its
//! transaction index (read by read_committed fetches of merged history, as a tiered
//! segment's) lists every aborted transaction with records in the segment's offsets
//! ([`build::aborted_overlapping`]): the entries of the runs, which live with the run of
//! their abort marker. Such a marker is at or after the segment's base, so in the runs
//! being merged or later ones, which the merge loaded with them: a transaction with
//! records below the last stable offset has its marker committed, and an entry whose
//! marker is still in runs past the segment's end is listed all the same. The set is
//! fixed once the records are below the last stable offset, so two mergers build the
//! same index.
//!
//! Compaction: the merge owner of a compacted topic's partition also compacts its merged
//! segments, on the log cleaner's schedule (`super::compact`); merges and compaction
//! meet only in the manifest, whose compare-and-swap keeps both.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use strata_tiering::{PartitionId, RemoteLog, SealedSegment, TierError};
use tracing::{info, warn};

use super::state::{Head, PartitionKey, PartitionState, Run};
use super::store::DisklessStore;
use crate::config::Config;
use crate::log::LogConfig;
use crate::tier::Tiering;

pub mod build;

#[cfg(test)]
mod tests;

/// A diskless topic as the background loops see it.
#[derive(Debug, Clone)]
pub struct DisklessTopic {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    pub config: LogConfig,
}

/// What the merger, retention and the scrubber need from the broker: the narrow handle
/// they get instead of the whole broker.
#[async_trait::async_trait]
pub trait DisklessHost: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    fn shutdown(&self) -> &tokio_util::sync::CancellationToken;
    fn config(&self) -> &Config;
    fn tiering(&self) -> Option<&Arc<Tiering>>;
    fn diskless_store(&self) -> Option<Arc<dyn DisklessStore>>;
    /// What this broker wrote lately (`super::read::WriteCache`): runs found there are
    /// merged without a GET.
    fn write_cache(&self) -> Option<Arc<super::read::WriteCache>>;
    /// The diskless topics this broker has open.
    fn diskless_topics(&self) -> Vec<DisklessTopic>;
    /// A partition's state as this broker's view has it (no metadata-store read; it may
    /// lag): what decides whether a round needs to look at the store at all.
    fn diskless_state(&self, key: &PartitionKey) -> Option<Arc<PartitionState>>;
    /// Reloads the view's copy of a partition after this broker changed it in the store
    /// (a trim or a new log start): the embedded store has no watch to tell the view.
    async fn refresh_view(&self, key: &PartitionKey);
    /// Ids of every topic in the metadata store (not this broker's copy, which may lag).
    async fn stored_topic_ids(&self) -> Result<HashSet<uuid::Uuid>, crate::cluster::StoreError>;
    /// Node ids of the live brokers as the cluster view lists them: empty until the view
    /// is first read (then the merger waits; see [`run_merger`]).
    fn live_brokers(&self) -> Vec<i32>;
    fn node_id(&self) -> i32;
    fn is_controller(&self) -> bool;
    /// The metrics registry the diskless families are registered in.
    fn registry(&self) -> &prometheus::Registry;
}

/// The merge owner of a partition among `live` brokers: sorted by node id, indexed by a
/// stable hash of (topic id, partition). Every broker computes the same answer from the
/// same cluster view; while views differ two brokers may both merge, which is safe.
pub fn owner(live: &[i32], key: &PartitionKey) -> Option<i32> {
    let mut live = live.to_vec();
    live.sort_unstable();
    live.dedup();
    if live.is_empty() {
        return None;
    }
    let index = (stable_hash(key) % live.len() as u64) as usize;
    Some(live[index])
}

/// FNV-1a over the topic id's bytes and the partition index (big-endian): the same on
/// every broker and every build, unlike `std`'s hasher.
pub fn stable_hash(key: &PartitionKey) -> u64 {
    let mut bytes = [0u8; 20];
    bytes[..16].copy_from_slice(key.topic_id.as_bytes());
    bytes[16..].copy_from_slice(&key.partition.to_be_bytes());
    fnv1a(&bytes)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// When a partition is merged, and how big a segment gets.
#[derive(Debug, Clone, Copy)]
pub struct MergeSettings {
    /// `diskless_merge_bytes` capped by the topic's segment.bytes.
    pub target_bytes: u64,
    pub max_age_ms: i64,
    /// `diskless_max_pending_runs`: a merge is due once half of it waits.
    pub max_pending_runs: u32,
    pub index_interval_bytes: u64,
}

impl MergeSettings {
    pub fn new(config: &Config, topic: &LogConfig) -> MergeSettings {
        MergeSettings {
            target_bytes: (config.diskless_merge_bytes.max(1) as u64)
                .min(topic.segment_bytes.max(1))
                .min(build::MAX_SEGMENT_BYTES),
            max_age_ms: config.diskless_merge_max_age_ms,
            max_pending_runs: u32::try_from(config.diskless_max_pending_runs.max(2))
                .unwrap_or(u32::MAX),
            index_interval_bytes: topic.index_interval_bytes,
        }
    }
}

/// What a round does with one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Nothing,
    /// The manifest covers runs the store still lists (a crash or a lost race after a
    /// manifest commit, or DeleteRecords past them): trim only.
    Trim,
    /// Merge the runs starting at these base offsets, in order.
    Merge(Vec<i64>),
}

/// Decides a round for one partition from its stored state and the manifest's end
/// (`None`: the manifest is empty).
pub fn plan(
    state: &PartitionState,
    manifest_end: Option<i64>,
    settings: &MergeSettings,
    now_ms: i64,
) -> Plan {
    if trimmed(state, manifest_end).is_some() {
        return Plan::Trim;
    }
    let pending: Vec<&Run> = state.runs.values().collect();
    let Some(&first) = pending.first() else {
        return Plan::Nothing;
    };
    let bytes: u64 = pending.iter().map(|r| r.len).sum();
    let due = bytes >= settings.target_bytes
        || now_ms.saturating_sub(first.at) >= settings.max_age_ms
        || pending.len() as u64 * 2 >= u64::from(settings.max_pending_runs);
    if !due {
        return Plan::Nothing;
    }
    // An open transaction's records stay in runs until its marker: nothing at or past
    // the last stable offset is merged (a run reaching past it waits whole).
    let stable = state.head.last_stable();
    let mut chosen = Vec::new();
    let mut total = 0u64;
    let mut next = first.base;
    for run in pending {
        let fits = total + run.len <= settings.target_bytes
            && run.end - first.base <= i64::from(i32::MAX)
            && total + run.len <= build::MAX_SEGMENT_BYTES;
        // The first run goes whatever its size: a run is never split.
        if run.base != next || run.end > stable || (!chosen.is_empty() && !fits) {
            break;
        }
        chosen.push(run.base);
        total += run.len;
        next = run.end;
    }
    if chosen.is_empty() {
        return Plan::Nothing;
    }
    Plan::Merge(chosen)
}

/// The head after trimming `state` to what the manifest covers (`manifest_end`), and the
/// runs to delete; `None` if there is nothing to trim. Runs ending at or below the
/// covered offset go; `merged` moves to the covered offset (but never past a remaining
/// run's base: DeleteRecords may have moved the manifest's start into a run);
/// `runs`/`run_bytes` are recounted from what remains.
pub fn trimmed(state: &PartitionState, manifest_end: Option<i64>) -> Option<(Head, Vec<i64>)> {
    let covered = manifest_end.unwrap_or(i64::MIN).max(state.head.merged);
    let doomed: Vec<i64> = state
        .runs
        .values()
        .filter(|r| r.end <= covered)
        .map(|r| r.base)
        .collect();
    let remaining = state.runs.values().filter(|r| r.end > covered);
    let first_remaining = state
        .runs
        .values()
        .find(|r| r.end > covered)
        .map(|r| r.base);
    let merged = first_remaining
        .map_or(covered, |base| base.min(covered))
        .min(state.head.next)
        .max(state.head.merged);
    if doomed.is_empty() && merged == state.head.merged {
        return None;
    }
    let mut head = state.head.clone();
    head.merged = merged;
    head.runs = remaining.clone().count() as u32;
    head.run_bytes = remaining.map(|r| r.len).sum();
    Some((head, doomed))
}

/// Why a merge round of a partition failed. Each is retried at the next round.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("metadata store: {0}")]
    Metadata(#[from] crate::cluster::StoreError),
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error(transparent)]
    Damaged(#[from] build::Damaged),
    #[error("stage the merged segment under {path}: {source}")]
    Staging {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the head of the partition kept changing; the trim is left to the next round")]
    Contended,
    #[error("the partition's records are gone from the metadata store: its topic was deleted")]
    PartitionDeleted,
}

/// What one round did to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Merged {
    /// A segment was committed to the manifest by this round.
    pub uploaded: bool,
    /// Runs deleted from the store.
    pub trimmed: usize,
}

/// One partition's merge context: the handles a round uses.
pub struct Merger {
    pub store: Arc<dyn DisklessStore>,
    pub tiering: Arc<Tiering>,
    /// `<data_dir>/diskless-merge`: segments are staged here for the upload.
    pub staging: PathBuf,
    pub part_bytes: u64,
    pub write_cache: Option<Arc<super::read::WriteCache>>,
}

impl Merger {
    pub fn new(
        host: &dyn DisklessHost,
        store: Arc<dyn DisklessStore>,
        tiering: Arc<Tiering>,
    ) -> Merger {
        Merger {
            store,
            tiering,
            staging: host.config().data_dir.join("diskless-merge"),
            part_bytes: host.config().remote_upload_part_bytes as u64,
            write_cache: host.write_cache(),
        }
    }

    pub async fn remote_log(
        &self,
        topic: &str,
        key: &PartitionKey,
    ) -> Result<Arc<RemoteLog>, TierError> {
        self.tiering
            .open_remote_log(PartitionId {
                topic: topic.to_string(),
                topic_id: key.topic_id,
                partition: key.partition,
            })
            .await
    }

    /// One round for one partition: trim what the manifest already covers, or merge a
    /// prefix of the runs if one is due (then trim).
    pub async fn merge_partition(
        &self,
        topic: &str,
        key: &PartitionKey,
        settings: &MergeSettings,
        now_ms: i64,
    ) -> Result<Merged, MergeError> {
        let Some(state) = self.store.load(key).await? else {
            return Ok(Merged::default());
        };
        let remote = self.remote_log(topic, key).await?;
        match plan(&state, remote.marks().end_offset, settings, now_ms) {
            Plan::Nothing => Ok(Merged::default()),
            Plan::Trim => Ok(Merged {
                uploaded: false,
                trimmed: self.trim(key, state, &remote).await?,
            }),
            Plan::Merge(bases) => {
                let runs: Vec<Run> = bases
                    .iter()
                    .filter_map(|b| state.runs.get(b).cloned())
                    .collect();
                let aborted = build::aborted_overlapping(
                    state.runs.values(),
                    runs.first().map_or(0, |r| r.base),
                    runs.last().map_or(0, |r| r.end),
                );
                let uploaded = self
                    .upload(
                        &remote,
                        &runs,
                        &aborted,
                        state.head.log_start,
                        settings,
                        now_ms,
                    )
                    .await?;
                if uploaded {
                    // Counted here, before the trim: a trim that fails does not undo it.
                    MERGES.with_label_values(&[topic]).inc();
                    info!(partition = %remote.id, base_offset = runs.first().map_or(0, |r| r.base),
                        end_offset = runs.last().map_or(0, |r| r.end), runs = runs.len(),
                        bytes = runs.iter().map(|r| r.len).sum::<u64>(), "merged diskless runs into a segment");
                }
                match self.trim(key, state, &remote).await {
                    Ok(trimmed) => Ok(Merged { uploaded, trimmed }),
                    // The topic was deleted while this merge ran: its deletion may have
                    // deleted the manifest before this upload created it again. Fence:
                    // delete what this merge left (the scrubbers would take the segment
                    // objects, not the manifest root).
                    Err(MergeError::PartitionDeleted) if uploaded => {
                        warn!(partition = %remote.id,
                            "the topic was deleted during a merge; deleting what the merge committed");
                        remote.delete_everything().await?;
                        Ok(Merged {
                            uploaded,
                            trimmed: 0,
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Reads `runs`, builds their segment and commits it to the manifest, with
    /// `aborted` (the aborted transactions overlapping the runs' offsets,
    /// [`build::aborted_overlapping`]) as its transaction index. Returns whether this call
    /// committed it (false: the manifest already covered it).
    pub async fn upload(
        &self,
        remote: &RemoteLog,
        runs: &[Run],
        aborted: &[crate::log::txn::AbortedTxn],
        log_start: i64,
        settings: &MergeSettings,
        now_ms: i64,
    ) -> Result<bool, MergeError> {
        // In order, a few at a time.
        // Collected first: a stream over a closure's futures would not be `Send`.
        let reads: Vec<_> = runs.iter().map(|run| self.read_run(run)).collect();
        let pieces: Vec<Bytes> = futures::stream::iter(reads)
            .buffered(READS_AT_ONCE)
            .try_collect()
            .await?;
        let owned: Vec<(Run, Bytes)> = runs.iter().cloned().zip(pieces).collect();
        let interval = settings.index_interval_bytes;
        let segment = tokio::task::spawn_blocking(move || {
            let views: Vec<build::RunBytes<'_>> = owned
                .iter()
                .map(|(run, bytes)| build::RunBytes {
                    key: &run.key,
                    base: run.base,
                    end: run.end,
                    batches: run.batches,
                    bytes,
                })
                .collect();
            build::build_segment(&views, interval)
        })
        .await
        .map_err(|e| MergeError::Staging {
            path: self.staging.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let path = self.staging.join(format!(
            "{}-{}-{:020}.log",
            remote.id.topic_id.simple(),
            remote.id.partition,
            segment.base_offset
        ));
        let file = stage(&path, &segment.log).await?;
        let sealed = SealedSegment {
            base_offset: segment.base_offset,
            end_offset: segment.end_offset,
            log: file,
            log_bytes: segment.log.len() as u64,
            offset_index: Bytes::from(segment.offset_index),
            time_index: Bytes::from(segment.time_index),
            producer_snapshot: Bytes::new(),
            // No index object without an aborted transaction, as a local segment.
            txn_index: if aborted.is_empty() {
                Bytes::new()
            } else {
                Bytes::from(crate::log::txn::encode_file(aborted))
            },
            max_timestamp: segment.max_timestamp,
            log_start_offset: log_start,
        };
        // Leader epoch 0: a diskless partition has no leader; the manifest CAS decides
        // between two mergers.
        let result = remote
            .upload(&sealed, 0, self.part_bytes, now_ms, None)
            .await;
        // The open handle keeps the bytes readable until the upload ends.
        let _ = std::fs::remove_file(&path);
        Ok(result?)
    }

    /// The bytes of one run: from the write cache, else one ranged GET of exactly the
    /// run. Not through the segment cache: its chunks would read more than the run, and
    /// bytes read once would evict the chunks of tailing readers.
    async fn read_run(&self, run: &Run) -> Result<Bytes, MergeError> {
        if let Some(object) = self.write_cache.as_ref().and_then(|c| c.get(&run.key))
            && let Some(bytes) = usize::try_from(run.pos)
                .ok()
                .zip(usize::try_from(run.pos.saturating_add(run.len)).ok())
                .filter(|(_, end)| *end <= object.len())
                .map(|(start, end)| object.slice(start..end))
        {
            return Ok(bytes);
        }
        let end = run.pos.saturating_add(run.len);
        if end > run.size {
            return Err(build::Damaged {
                key: run.key.clone(),
                base: run.base,
                position: 0,
                reason: "the run reaches past the end of its object",
            }
            .into());
        }
        let bytes = self
            .tiering
            .store
            .get_range(&run.key, run.pos..end)
            .await
            .map_err(TierError::from)?;
        if bytes.len() as u64 != run.len {
            return Err(build::Damaged {
                key: run.key.clone(),
                base: run.base,
                position: bytes.len(),
                reason: "the object is shorter than its run",
            }
            .into());
        }
        Ok(bytes)
    }

    /// Trims the store to what the manifest covers, re-reading on a lost compare.
    /// Returns the runs deleted; [`MergeError::PartitionDeleted`] if the partition's
    /// head is gone (its topic was deleted).
    pub async fn trim(
        &self,
        key: &PartitionKey,
        mut state: PartitionState,
        remote: &RemoteLog,
    ) -> Result<usize, MergeError> {
        for _ in 0..TRIM_ATTEMPTS {
            let Some((head, doomed)) = trimmed(&state, remote.marks().end_offset) else {
                return Ok(0);
            };
            if self
                .store
                .trim(key, state.head_version, &head, &doomed)
                .await?
            {
                return Ok(doomed.len());
            }
            match self.store.load(key).await? {
                Some(fresh) => state = fresh,
                None => return Err(MergeError::PartitionDeleted),
            }
        }
        Err(MergeError::Contended)
    }
}

const TRIM_ATTEMPTS: usize = 8;

/// The id the segment cache knows a shared object by: the UUID in its name
/// (`<node_id>-<uuid>.batches`), or one derived from the key if the name has none.
pub fn shared_object_id(key: &str) -> uuid::Uuid {
    key.rsplit('/')
        .next()
        .and_then(|name| name.strip_suffix(".batches"))
        .and_then(|name| name.split_once('-'))
        .and_then(|(_, id)| uuid::Uuid::parse_str(id).ok())
        .unwrap_or_else(|| {
            let hash = fnv1a(key.as_bytes());
            uuid::Uuid::from_u64_pair(hash, !hash)
        })
}

/// Writes the segment bytes to `path` and returns a read handle.
async fn stage(path: &Path, bytes: &[u8]) -> Result<Arc<std::fs::File>, MergeError> {
    let staging = |source| MergeError::Staging {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(path).to_path_buf();
    let (path_owned, bytes) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || -> std::io::Result<Arc<std::fs::File>> {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&path_owned, &bytes)?;
        Ok(Arc::new(std::fs::File::open(&path_owned)?))
    })
    .await
    .map_err(|e| staging(std::io::Error::other(e.to_string())))?
    .map_err(staging)
}

// Metrics: process-wide families (several brokers in one test process share them),
// registered in each broker's registry by the loop that updates them.

pub static MERGE_LAG_SECONDS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    IntGaugeVec::new(
        Opts::new(
            "diskless_merge_lag_seconds",
            "Age of the oldest unmerged run of a diskless topic, over the partitions this broker owns (0 when none waits)",
        ),
        &["topic"],
    )
    .expect("a valid metric family")
});

pub static UNMERGED_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    IntGaugeVec::new(
        Opts::new(
            "diskless_unmerged_bytes",
            "Bytes of unmerged runs of a diskless topic, over the partitions this broker owns",
        ),
        &["topic"],
    )
    .expect("a valid metric family")
});

pub static MERGE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "diskless_merge_failures_total",
            "Merge rounds of a diskless partition that failed (read, build, upload or trim) and are retried at the next round",
        ),
        &["topic"],
    )
    .expect("a valid metric family")
});

pub static MERGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "diskless_merges_total",
            "Segments this broker merged from diskless runs and committed to a manifest",
        ),
        &["topic"],
    )
    .expect("a valid metric family")
});

/// Registers the diskless families in `registry`; a second registration (a restarted
/// loop) is not an error.
pub fn register_metrics(registry: &prometheus::Registry) {
    let families: [Box<dyn prometheus::core::Collector>; 5] = [
        Box::new(MERGE_LAG_SECONDS.clone()),
        Box::new(UNMERGED_BYTES.clone()),
        Box::new(MERGES.clone()),
        Box::new(MERGE_FAILURES.clone()),
        Box::new(super::scrub::SCRUBBED.clone()),
    ];
    for family in families {
        match registry.register(family) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(e) => warn!(error = %e, "cannot register a diskless metric"),
        }
    }
}

/// Merges of one partition in one round at most: a backlog is worked off over a few
/// rounds without one partition holding the loop.
const MERGES_PER_ROUND: usize = 8;
/// Partitions merged at once by one broker.
const PARTITIONS_AT_ONCE: usize = 4;
/// Runs of one merge read at once.
const READS_AT_ONCE: usize = 8;

/// The merger loop: every `diskless_merge_interval_ms`, each diskless partition this
/// broker owns gets a round (merges while due, then retention), [`PARTITIONS_AT_ONCE`]
/// partitions at a time; the per-topic gauges are set from the owned partitions' view.
///
/// A round plans from the broker's view of each partition and reads the metadata store
/// only when the view says a merge is due, or retention's turn came for a partition that
/// was ever written: an idle partition costs no metadata read. Rounds are skipped until
/// the cluster view lists this broker (a starting broker would otherwise own everything).
pub async fn run_merger(host: Arc<dyn DisklessHost>) {
    let (Some(tiering), Some(store)) = (host.tiering().cloned(), host.diskless_store()) else {
        return;
    };
    register_metrics(host.registry());
    let merger = Merger::new(&*host, store, tiering);
    // Segments staged by a merge that a crash or a restart cut short.
    let _ = std::fs::remove_dir_all(&merger.staging);
    // Retention needs two metadata reads (head, manifest root) per partition: it runs at
    // most once per `diskless_merge_max_age_ms` (and at least once per round's interval).
    let retention_every = host
        .config()
        .diskless_merge_max_age_ms
        .max(host.config().diskless_merge_interval_ms);
    let mut retained: HashMap<PartitionKey, i64> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(
        host.config().diskless_merge_interval_ms as u64,
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = host.shutdown().cancelled() => break,
            _ = ticker.tick() => {}
        }
        let live = host.live_brokers();
        let me = host.node_id();
        if !live.contains(&me) {
            continue;
        }
        let mut gauges: HashMap<String, (i64, u64)> = HashMap::new();
        let mut owned: Vec<(DisklessTopic, MergeSettings, PartitionKey, bool)> = Vec::new();
        for topic in host.diskless_topics() {
            let settings = MergeSettings::new(host.config(), &topic.config);
            gauges.entry(topic.name.clone()).or_default();
            for partition in 0..topic.partitions {
                let key = PartitionKey {
                    topic_id: topic.id,
                    partition,
                };
                if owner(&live, &key) != Some(me) {
                    continue;
                }
                let retention_due = retained
                    .get(&key)
                    .is_none_or(|at| host.now_ms() - at >= retention_every);
                owned.push((topic.clone(), settings, key, retention_due));
            }
        }
        // Partitions no longer owned (or deleted) are forgotten.
        let keys: HashSet<PartitionKey> = owned.iter().map(|(_, _, key, _)| *key).collect();
        retained.retain(|key, _| keys.contains(key));
        // Boxed as `Send`: left to inference, the futures' borrows make the compiler ask
        // `Send` of them for every lifetime, which fails the spawn of this loop.
        let rounds = futures::stream::iter(owned.clone().into_iter().map(
            |(topic, settings, key, due)| -> RoundFuture<'_> {
                Box::pin(partition_round(&*host, &merger, topic, key, settings, due))
            },
        ))
        .buffer_unordered(PARTITIONS_AT_ONCE);
        tokio::pin!(rounds);
        loop {
            let next = tokio::select! {
                _ = host.shutdown().cancelled() => return,
                next = rounds.next() => next,
            };
            let Some((key, retention_ran)) = next else {
                break;
            };
            if retention_ran {
                retained.insert(key, host.now_ms());
            }
        }
        for (topic, _, key, _) in &owned {
            if let Some(state) = host.diskless_state(key)
                && let Some(entry) = gauges.get_mut(&topic.name)
            {
                let oldest = state.live_runs().map(|r| r.at).min();
                let age = oldest.map_or(0, |at| (host.now_ms() - at).max(0) / 1000);
                entry.0 = entry.0.max(age);
                entry.1 += state.live_runs().map(|r| r.len).sum::<u64>();
            }
        }
        for (topic, (age, bytes)) in &gauges {
            MERGE_LAG_SECONDS.with_label_values(&[topic]).set(*age);
            UNMERGED_BYTES
                .with_label_values(&[topic])
                .set(*bytes as i64);
        }
        for gone in reported.iter().filter(|t| !gauges.contains_key(*t)) {
            let _ = MERGE_LAG_SECONDS.remove_label_values(&[gone]);
            let _ = UNMERGED_BYTES.remove_label_values(&[gone]);
            let _ = MERGES.remove_label_values(&[gone]);
            let _ = MERGE_FAILURES.remove_label_values(&[gone]);
        }
        reported = gauges.into_keys().collect();
    }
}

type RoundFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (PartitionKey, bool)> + Send + 'a>>;

/// One partition's round: merges while one is due (at most [`MERGES_PER_ROUND`]), then
/// retention if `retention_due` and the partition was ever written. Returns whether
/// retention ran. The view is refreshed only if something changed.
async fn partition_round(
    host: &dyn DisklessHost,
    merger: &Merger,
    topic: DisklessTopic,
    key: PartitionKey,
    settings: MergeSettings,
    retention_due: bool,
) -> (PartitionKey, bool) {
    let (topic, key, settings) = (&topic, &key, &settings);
    let seen = host.diskless_state(key);
    // No view (a host without one): ask the store.
    let merge_due = seen
        .as_ref()
        .is_none_or(|s| plan(s, None, settings, host.now_ms()) != Plan::Nothing);
    let mut changed = false;
    if merge_due {
        for _ in 0..MERGES_PER_ROUND {
            match merger
                .merge_partition(&topic.name, key, settings, host.now_ms())
                .await
            {
                Ok(merged) => {
                    changed |= merged != Merged::default();
                    if !merged.uploaded {
                        break;
                    }
                }
                Err(e) => {
                    MERGE_FAILURES.with_label_values(&[&topic.name]).inc();
                    warn!(topic = %topic.name, partition = key.partition, error = %e,
                        "diskless merge failed; retrying at the next round");
                    break;
                }
            }
        }
    }
    let config = &topic.config;
    let retention = retention_due
        && seen.as_ref().is_none_or(|s| {
            s.head_version > 0
                && (config.retention_ms >= 0 || config.retention_bytes >= 0 || s.head.log_start > 0)
        });
    if retention {
        match super::retention::apply_retention(merger, topic, key, host.now_ms()).await {
            Ok(moved) => changed |= moved,
            Err(e) => warn!(topic = %topic.name, partition = key.partition, error = %e,
                "diskless retention failed; retrying at the next round"),
        }
    }
    if changed {
        host.refresh_view(key).await;
    }
    (*key, retention)
}
