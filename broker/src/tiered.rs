//! The broker's side of tiered storage: it builds the object store and segment cache from
//! the configuration, runs the uploader (with remote retention and the stall watchdog)
//! and the orphan scrubber, and serves Fetch below the local log start from the remote
//! tier. The mechanics (manifests, uploads, cache) are in the `strata-tiering` crate;
//! this module adds what only the broker knows: which segments are sealed and below the
//! high watermark, the record-batch framing, and the topic configs.
//!
//! Offsets: `log start ≤ local log start ≤ high watermark ≤ log end`. Offsets in
//! `[remote log start, local log start)` are read from the bucket; everything at or above
//! the local log start is read from local segments, as before. A local segment is deleted
//! only after the manifest commit that covers it ([`crate::log::Log::apply_retention`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::FutureExt as _;
use strata_tiering::manifest::SegmentEntry;
use strata_tiering::remote_log::AfterUploadHook;
use strata_tiering::store::{
    MeteredStore, ObjectStoreBackend, RetryPolicy, RetryingStore, StoreMetrics,
};
use strata_tiering::{
    CacheSettings, ManifestSettings, ManifestStore, ObjectRef, PartitionId, RemoteLog, RemoteStore,
    SealedSegment, SegmentCache, SpillCache, TierError,
};
use tokio::sync::Semaphore;
use tracing::Instrument as _;
use tracing::{error, info, warn};

use crate::broker::Broker;
use crate::config::Config;
use crate::log::SealedInfo;
use crate::log::format::{
    self, BATCH_HEADER_LEN, BATCH_PREFIX_LEN, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN,
};
use crate::partition::Partition;

/// Segments one partition uploads per pass before yielding to others.
const UPLOADS_PER_PASS: usize = 16;

pub struct Tiering {
    pub store: Arc<dyn RemoteStore>,
    pub manifests: Arc<dyn ManifestStore>,
    pub cache: Arc<SegmentCache>,
    spills: Arc<SpillCache>,
    manifest_settings: ManifestSettings,
    part_bytes: u64,
    read_ahead_chunks: u64,
    upload_slots: Arc<Semaphore>,
    crash_after_upload: Option<u64>,
    uploads: AtomicU64,
    stall_warn_ms: i64,
}

impl Tiering {
    /// Objects go under `<object_store>/<cluster_id>/`: clusters sharing a bucket (or a
    /// broker pointed at the wrong metadata store, which names another cluster) never
    /// see, let alone scrub, each other's objects.
    pub async fn open(
        config: &Config,
        cluster_id: &str,
        manifests: Arc<dyn ManifestStore>,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Tiering> {
        let location = match config.object_store_url()? {
            strata_tiering::Location::Directory(dir) => {
                strata_tiering::Location::Directory(dir.join(cluster_id))
            }
            strata_tiering::Location::S3 { bucket, prefix } => strata_tiering::Location::S3 {
                bucket,
                prefix: if prefix.is_empty() {
                    cluster_id.to_string()
                } else {
                    format!("{prefix}/{cluster_id}")
                },
            },
        };
        let s3 = strata_tiering::S3Settings {
            endpoint: config.s3_endpoint.clone(),
            region: config.s3_region.clone(),
            access_key_id: config.s3_access_key_id.clone(),
            secret_access_key: config.s3_secret_access_key.clone(),
            path_style: config.s3_path_style,
            allow_http: config.s3_allow_http,
        };
        let backend: ObjectStoreBackend = strata_tiering::store::open(&location, &s3)
            .map_err(anyhow::Error::msg)
            .context("set up the object store (setting `object_store`)")?;
        info!(object_store = %backend, "tiered storage object store");
        let metrics = StoreMetrics::register(registry).context("register object store metrics")?;
        let seed = std::process::id() as u64;
        let store: Arc<dyn RemoteStore> = Arc::new(MeteredStore::new(
            RetryingStore::new(backend, RetryPolicy::default(), seed),
            metrics,
        ));
        let cache_settings = CacheSettings {
            memory_bytes: config.remote_cache_memory_bytes as usize,
            disk_bytes: config.remote_cache_disk_bytes as usize,
            dir: config.remote_cache_dir(),
            chunk_bytes: config.remote_chunk_bytes as u64,
            read_ahead_chunks: config.remote_read_ahead_chunks as u64,
            rate_bytes_per_sec: config.remote_read_rate_bytes as u64,
            prefetch_concurrency: 8,
        };
        let cache = SegmentCache::open(&cache_settings, store.clone(), registry)
            .await
            .map_err(anyhow::Error::msg)
            .context("open the remote segment cache")?;
        Ok(Tiering {
            store,
            manifests,
            cache,
            spills: Arc::new(SpillCache::new(4096)),
            manifest_settings: ManifestSettings {
                tail_entries: config.remote_manifest_tail_entries as usize,
                fanout: config.remote_manifest_fanout as usize,
            },
            part_bytes: config.remote_upload_part_bytes as u64,
            read_ahead_chunks: config.remote_read_ahead_chunks as u64,
            upload_slots: Arc::new(Semaphore::new(config.remote_upload_concurrency as usize)),
            crash_after_upload: config.crash_after_upload()?,
            uploads: AtomicU64::new(0),
            stall_warn_ms: config.remote_upload_stall_warn_ms,
        })
    }

    /// Loads a partition's manifest root (one metadata-store read: start-up time does not
    /// depend on how much history the bucket holds).
    pub async fn open_remote_log(&self, id: PartitionId) -> Result<Arc<RemoteLog>, TierError> {
        RemoteLog::open(
            id,
            self.store.clone(),
            self.manifests.clone(),
            self.spills.clone(),
            self.manifest_settings,
        )
        .await
        .map(Arc::new)
    }

    fn crash_point(&self, id: &PartitionId, segment: &SealedSegment) {
        if let Some(crash_at) = self.crash_after_upload {
            let n = self.uploads.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= crash_at {
                tracing::error!(partition = %id, base_offset = segment.base_offset,
                    "fault injection: aborting after an upload, before its manifest commit");
                std::process::abort();
            }
        }
    }
}

/// A segment's offset index, time index and producer snapshot, read whole for upload.
type Sidecars = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Reads a sealed segment's index files for upload, and opens its `.log`: the segment
/// holds no descriptor of its own (sealed segments are opened on demand), and this
/// handle keeps its bytes readable for the whole upload even if retention removes it.
async fn sealed_segment(info: SealedInfo, log_start_offset: i64) -> std::io::Result<SealedSegment> {
    let (log, (offset_index, time_index, producers)) = tokio::task::spawn_blocking({
        let info = info.clone();
        move || -> std::io::Result<(std::sync::Arc<std::fs::File>, Sidecars)> {
            let log = std::sync::Arc::new(std::fs::File::open(&info.log_path)?);
            crate::log::verify(&crate::log::Location {
                file: log.clone(),
                start: 0,
                start_offset: info.base_offset,
                end: info.size,
                base_offset: info.base_offset,
                end_offset: info.end_offset,
                index_damaged: Default::default(),
            })?;
            let producers = match &info.producers {
                // Retention or compaction may remove it meanwhile: then none is uploaded
                // and a restore from the bucket starts producers over (as KIP-360 allows).
                Some(path) => std::fs::read(path).unwrap_or_default(),
                None => Vec::new(),
            };
            let indexes = (
                std::fs::read(&info.offset_index)?,
                std::fs::read(&info.time_index)?,
                producers,
            );
            Ok((log, indexes))
        }
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(SealedSegment {
        base_offset: info.base_offset,
        end_offset: info.end_offset,
        log,
        log_bytes: info.size,
        offset_index: Bytes::from(offset_index),
        time_index: Bytes::from(time_index),
        producer_snapshot: Bytes::from(producers),
        max_timestamp: info.max_timestamp,
        log_start_offset,
    })
}

/// One uploader pass over a partition: upload what is sealed and below the high
/// watermark, in order, then apply retention.ms / retention.bytes to the remote tier.
/// Returns false if the pass failed (it is retried after a backoff).
async fn upload_partition(broker: &Broker, tiering: &Tiering, partition: &Partition) -> bool {
    let (Some(remote), Some(epoch)) = (partition.remote(), partition.leading_epoch()) else {
        return true;
    };
    let label = format!("{}-{}", partition.topic, partition.index);
    // Fence the previous leader before writing anything of ours (the claim made when
    // leadership arrived may not have landed yet).
    if remote.root().leader_epoch < epoch
        && let Err(e) = remote.claim(epoch).await
    {
        warn!(partition = %label, epoch, error = %e, "cannot claim the manifest; retrying after a backoff");
        return false;
    }
    let config = partition.log_config();
    'passes: loop {
        if !config.remote_storage {
            break;
        }
        let candidates = partition.upload_candidates(UPLOADS_PER_PASS);
        if candidates.is_empty() {
            break;
        }
        // Skipped uploads (already covered) do not move the remote end: never spin on them.
        let mut progressed = false;
        for info in candidates {
            if partition.is_deleted() {
                return true;
            }
            let base_offset = info.base_offset;
            let segment = match sealed_segment(info, partition.local_log_start_offset()).await {
                Ok(segment) => segment,
                Err(ref e) if let Some(damage) = crate::log::damage_of(e) => {
                    // Never upload damage: the upload waits (and the lag alarms fire)
                    // until an operator restores the segment or deletes the records.
                    if crate::log::damage::found("local", "batch", &label) {
                        error!(partition = %label, %damage,
                            "a sealed segment is damaged and will not be uploaded; uploads of this partition are stopped");
                    }
                    return false;
                }
                Err(e) => {
                    // Retention removed it meanwhile (only possible for data the remote
                    // tier already deleted), or the disk failed; next pass decides.
                    warn!(partition = %label, base_offset, error = %e, "cannot read a sealed segment for upload");
                    return false;
                }
            };
            let crash = |id: &PartitionId, s: &SealedSegment| tiering.crash_point(id, s);
            let hook: Option<&AfterUploadHook> = tiering
                .crash_after_upload
                .map(|_| &crash as &AfterUploadHook);
            let now = broker.clock.now_ms();
            // Each upload is a trace of its own (nothing waits for it).
            let span = tracing::trace_span!(target: crate::telemetry::TRACE, "tier.upload",
                topic = %partition.topic, partition = partition.index, base_offset,
                end_offset = segment.end_offset, bytes = segment.log_bytes, leader_epoch = epoch);
            match remote
                .upload(&segment, epoch, tiering.part_bytes, now, hook)
                .instrument(span)
                .await
            {
                Ok(uploaded) => progressed |= uploaded,
                Err(TierError::NotContiguous { end_offset, .. })
                    if base_offset > end_offset
                        && partition.local_log_start_offset() >= base_offset =>
                {
                    // The records between the remote end and the local log are gone
                    // (deleted locally while remote storage was off): the log cannot have
                    // a hole, so the remote history before it goes too.
                    warn!(partition = %label, remote_end = end_offset, local_start = base_offset,
                        "the local log starts past the remote tier's end; moving the remote log start there");
                    if let Err(e) = remote.advance_start(base_offset, epoch).await {
                        warn!(partition = %label, error = %e, "could not move the remote log start; retrying after a backoff");
                        return false;
                    }
                    continue 'passes;
                }
                Err(e) => {
                    warn!(partition = %label, base_offset, error = %e, "segment upload failed; retrying after a backoff");
                    return false;
                }
            }
            if broker.shutdown.is_cancelled() {
                return true;
            }
        }
        if !progressed {
            break;
        }
    }
    if config.retention_ms < 0 && config.retention_bytes < 0 {
        return true;
    }
    let marks = remote.marks();
    let local_only = partition.bytes_after(marks.end_offset.unwrap_or(i64::MIN));
    let now = broker.clock.now_ms();
    let target = remote
        .retention_target(now, config.retention_ms, config.retention_bytes, local_only)
        .await;
    let result = match target {
        Ok(Some(new_start)) => remote.advance_start(new_start, epoch).await.map(drop),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        warn!(partition = %label, error = %e, "remote retention failed; retrying after a backoff");
        return false;
    }
    true
}

/// Sealed segments waiting for upload: how many, their bytes, the oldest one's age.
pub struct UploadLag {
    pub segments: usize,
    pub bytes: u64,
    pub age_ms: i64,
}

pub fn upload_lag(partition: &Partition, now_ms: i64) -> UploadLag {
    let pending = partition.upload_candidates(usize::MAX);
    UploadLag {
        segments: pending.len(),
        bytes: pending.iter().map(|s| s.size).sum(),
        age_ms: pending
            .iter()
            .map(|s| now_ms - s.sealed_ms)
            .max()
            .unwrap_or(0)
            .max(0),
    }
}

/// Upload lag gauges and the stall watchdog, for one partition.
fn report_lag(broker: &Broker, tiering: &Tiering, partition: &Partition, now_ms: i64) {
    let UploadLag {
        segments,
        bytes,
        age_ms,
    } = upload_lag(partition, now_ms);
    let labels = [partition.topic.as_str(), &partition.index.to_string()];
    broker
        .metrics
        .upload_lag_bytes
        .with_label_values(&labels)
        .set(bytes as i64);
    broker
        .metrics
        .upload_lag_seconds
        .with_label_values(&labels)
        .set(age_ms / 1000);
    if age_ms > tiering.stall_warn_ms && partition.should_warn_stall(now_ms) {
        warn!(topic = %partition.topic, partition = partition.index, pending_segments = segments,
            pending_bytes = bytes, oldest_age_s = age_ms / 1000,
            "uploads are stalled: sealed segments are waiting; local disk use grows until they go");
    }
}

/// The uploader: every `remote_upload_interval_ms`, each tiered partition not already
/// uploading gets a pass, at most `remote_upload_concurrency` at once.
pub async fn run_uploader(broker: Arc<Broker>) {
    let Some(tiering) = broker.tiering.clone() else {
        return;
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(
        broker.config.remote_upload_interval_ms as u64,
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = broker.clock.now_ms();
        for topic in broker.topics() {
            for partition in &topic.partitions {
                // Partitions with tiering off still get passes while the remote tier
                // holds data, so retention keeps applying to it.
                let tiered = partition.log_config().remote_storage;
                let has_remote = partition.remote_bounds().is_some_and(|b| b.end > b.start);
                // Only the leader uploads and applies remote retention; followers
                // follow the manifest it commits.
                if !(tiered || has_remote) || partition.is_deleted() || !partition.is_leader() {
                    continue;
                }
                if tiered {
                    report_lag(&broker, &tiering, partition, now);
                }
                if !partition.try_start_upload(now) {
                    continue;
                }
                let (broker, tiering, partition) =
                    (broker.clone(), tiering.clone(), partition.clone());
                tasks.spawn(async move {
                    let pass = async {
                        match tiering.upload_slots.clone().acquire_owned().await {
                            Ok(_slot) => upload_partition(&broker, &tiering, &partition).await,
                            Err(_) => true,
                        }
                    };
                    // A panic must still give the partition's upload slot back, or its
                    // uploads would stop for good; it counts as a restart of the uploader.
                    let succeeded = match std::panic::AssertUnwindSafe(pass).catch_unwind().await {
                        Ok(succeeded) => succeeded,
                        Err(_) => {
                            broker
                                .metrics
                                .task_restarts
                                .with_label_values(&["uploader"])
                                .inc();
                            tracing::error!(topic = %partition.topic, partition = partition.index,
                                "an upload pass panicked; retrying after a backoff");
                            false
                        }
                    };
                    let interval = broker.config.remote_upload_interval_ms;
                    partition.finish_upload(succeeded, broker.clock.now_ms(), interval);
                });
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// The orphan scrubber: every `remote_scrub_interval_ms`, deletes objects older than
/// `remote_scrub_grace_ms` that no manifest references, and objects of topics that no
/// longer exist. It LISTs the bucket; nothing on the read path does.
pub async fn run_scrubber(broker: Arc<Broker>) {
    let Some(tiering) = broker.tiering.clone() else {
        return;
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(
        broker.config.remote_scrub_interval_ms as u64,
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let grace = broker.config.remote_scrub_grace_ms;
        let topics = broker.topics();
        for topic in &topics {
            for partition in &topic.partitions {
                // A follower's view of the manifest may be behind the leader's.
                let Some(remote) = partition.remote().filter(|_| partition.is_leader()) else {
                    continue;
                };
                match remote.scrub(broker.clock.now_ms(), grace).await {
                    Ok(0) => {}
                    Ok(n) => {
                        info!(partition = %remote.id, deleted = n, "scrubbed orphaned objects")
                    }
                    Err(e) => warn!(partition = %remote.id, error = %e, "scrub failed"),
                }
            }
        }
        if broker.is_controller()
            && let Err(e) = scrub_unknown_topics(&broker, &*tiering.store, grace).await
        {
            warn!(error = %e, "scrub of deleted topics failed");
        }
    }
}

/// Deletes objects of topics this cluster no longer has. Topics are checked just before
/// each delete (a topic created during the pass is live), and the listing is of this
/// cluster's prefix only.
async fn scrub_unknown_topics(
    broker: &Broker,
    store: &dyn RemoteStore,
    grace_ms: i64,
) -> Result<(), strata_tiering::StoreError> {
    for object in store.list("topics/").await? {
        let dir = object
            .key
            .strip_prefix("topics/")
            .and_then(|k| k.split('/').next());
        let Some((_, id)) = dir.and_then(strata_tiering::keys::parse_topic_dir) else {
            continue;
        };
        let old_enough = broker.clock.now_ms() - object.last_modified_ms >= grace_ms;
        if old_enough && broker.topic_by_id(id).is_none() {
            info!(key = object.key, "deleting an object of a deleted topic");
            store.delete(&object.key).await?;
        }
    }
    Ok(())
}

/// Why a remote read failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteReadError {
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error("remote segment {key} (base offset {base_offset}) is damaged at byte {position}")]
    Corrupt {
        key: String,
        base_offset: i64,
        position: u64,
    },
    #[error("local staging for a remote rewrite failed: {0}")]
    Local(std::io::Error),
}

/// The last offset-index entry at or before `relative`: (its relative offset, its
/// position); (0, 0) if none.
fn index_floor(index: &[u8], relative: i64) -> (u32, u64) {
    format::index_floor(index, OFFSET_ENTRY_LEN, relative, |e| {
        i64::from(format::offset_entry(e).0)
    })
    .map_or((0, 0), |e| {
        let (rel, position) = format::offset_entry(e);
        (rel, u64::from(position))
    })
}

/// Reads whole batches from the remote tier starting with the one holding `offset`, up
/// to `max_bytes` but always at least one whole batch (KIP-74). One segment per call, as
/// for local reads; the consumer's next fetch continues in the next segment.
#[tracing::instrument(target = "strata::trace", level = "trace", name = "tier.remote_read",
    skip_all, fields(partition = %remote.id, offset = offset, max_bytes = max_bytes))]
///
/// Returned batches are checked (framing and CRC-32C). A read that meets damage drops the
/// object's chunks from the segment cache and reads once more from the bucket (the cache's
/// disk may be what is damaged); damage that persists is a [`RemoteReadError::Corrupt`],
/// which [`repair_remote`] can mend from a local copy.
pub async fn read_remote(
    tiering: &Tiering,
    remote: &RemoteLog,
    offset: i64,
    max_bytes: usize,
) -> Result<Bytes, RemoteReadError> {
    match read_remote_once(tiering, remote, offset, max_bytes).await {
        Err(RemoteReadError::Corrupt { base_offset, .. }) => {
            if let Some(entry) = remote.locate(base_offset).await? {
                tiering.cache.forget(&object_ref(remote, &entry));
            }
            read_remote_once(tiering, remote, offset, max_bytes).await
        }
        result => result,
    }
}

fn object_ref(remote: &RemoteLog, entry: &SegmentEntry) -> ObjectRef {
    ObjectRef {
        key: remote.segment_key(entry),
        id: entry.object_id,
        size: entry.object_size(),
    }
}

async fn read_remote_once(
    tiering: &Tiering,
    remote: &RemoteLog,
    offset: i64,
    max_bytes: usize,
) -> Result<Bytes, RemoteReadError> {
    let mut offset = offset;
    let cache = &tiering.cache;
    let (entry, object, position, first_size) = loop {
        let Some(entry) = remote.locate(offset).await? else {
            return Ok(Bytes::new());
        };
        let object = object_ref(remote, &entry);
        match seek_remote(cache, &entry, &object, offset).await? {
            Some((position, size)) => break (entry, object, position, size as u64),
            // Nothing at or after `offset` in this segment: compaction removed the
            // records at its end (or all of them). Go on with the next one.
            None => offset = entry.end_offset,
        }
    };
    let available = entry.log_bytes - position;
    let want = available.min((max_bytes as u64).max(first_size));
    // Also the next batch's prefix, to check the last batch returned against it.
    let end = position + available.min(want + BATCH_PREFIX_LEN as u64);
    let bytes = cache.read(&object, position..end).await?;
    let whole = crate::log::checked_prefix(
        &bytes,
        want as usize,
        i64::MAX,
        (entry.base_offset, entry.end_offset),
    )
    .map_err(|_| RemoteReadError::Corrupt {
        key: object.key.clone(),
        base_offset: entry.base_offset,
        position,
    })?;
    // A sequential reader will want the next segment soon: warm its first chunks.
    let window = cache.chunk_bytes() * tiering.read_ahead_chunks.max(1);
    if end + window >= entry.log_bytes
        && let Ok(Some(next)) = remote.locate(entry.end_offset).await
    {
        cache.read_ahead(&object_ref(remote, &next), 0);
    }
    Ok(bytes.slice(..whole))
}

/// The batch of a remote segment holding `offset` (position, size), or `None` if the
/// segment has nothing at or after it. Checks what it walks as a local read does: the
/// index entry must name a batch with the offset it says (else the walk starts at the
/// segment's start), every batch must fit the segment and follow the one before, and the
/// batch before a gap in the offsets is checked whole (a damaged last-offset delta would
/// make one, and the read would skip the records in it).
async fn seek_remote(
    cache: &Arc<SegmentCache>,
    entry: &SegmentEntry,
    object: &ObjectRef,
    offset: i64,
) -> Result<Option<(u64, usize)>, RemoteReadError> {
    let corrupt = |position| RemoteReadError::Corrupt {
        key: object.key.clone(),
        base_offset: entry.base_offset,
        position,
    };
    let prefix_at = |position: u64| async move {
        if position + BATCH_PREFIX_LEN as u64 > entry.log_bytes {
            return Ok::<_, RemoteReadError>(None);
        }
        let prefix = cache
            .read(object, position..position + BATCH_PREFIX_LEN as u64)
            .await?;
        Ok(format::read_batch_prefix(&prefix)
            .filter(|(_, size, _)| position + *size as u64 <= entry.log_bytes))
    };
    let check_whole = |position: u64, size: usize| async move {
        let batch = cache.read(object, position..position + size as u64).await?;
        Ok::<_, RemoteReadError>(format::crc_matches(&batch))
    };
    let index = cache.read(object, entry.offset_index_range()).await?;
    let (relative, mut position) = index_floor(&index, offset - entry.base_offset);
    if position > 0
        && !matches!(prefix_at(position).await?,
            Some((base, ..)) if base == entry.base_offset + i64::from(relative))
    {
        position = 0;
    }
    let mut next_offset = entry.base_offset;
    let mut previous: Option<(u64, usize)> = None;
    while position < entry.log_bytes {
        let Some((base, size, last_delta)) = prefix_at(position).await? else {
            return Err(corrupt(position));
        };
        if !crate::log::offsets_fit(entry.end_offset, base, last_delta, next_offset) {
            return Err(corrupt(position));
        }
        if base > next_offset
            && let Some((before, before_size)) = previous
            && !check_whole(before, before_size).await?
        {
            return Err(corrupt(before));
        }
        if base + i64::from(last_delta) >= offset {
            return Ok(Some((position, size)));
        }
        next_offset = base + i64::from(last_delta) + 1;
        previous = Some((position, size));
        position += size as u64;
    }
    if next_offset < entry.end_offset
        && let Some((before, before_size)) = previous
        && !check_whole(before, before_size).await?
    {
        return Err(corrupt(before));
    }
    Ok(None)
}

/// Compaction of the remote tier of a compacted topic, after a local pass: every remote
/// segment is read (through the segment cache) and, if the pass's map supersedes any of
/// its records or its tombstones expired, rewritten and swapped in the manifest with the
/// same offset range ([`RemoteLog::replace_segment`]). Kafka's tiered storage (KIP-405)
/// refuses compacted topics; here they tier because a segment keeps its offset range
/// through any number of rewrites, so the manifest's contiguity and fencing rules hold.
///
/// Cost per pass: GETs for every remote byte of the partition (cached chunks are free),
/// and for each changed segment one PUT (multipart above `remote_upload_part_bytes`), one
/// PUT per manifest level above it, one metadata-store write and one DELETE. Returns
/// (segments rewritten, segments whose replacement found the manifest changed: the pass
/// must run again).
pub async fn compact_remote(
    tiering: &Tiering,
    partition: &Partition,
    map: Arc<crate::log::cleaner::OffsetMap>,
    now_ms: i64,
) -> Result<(usize, usize), RemoteReadError> {
    use crate::log::cleaner::RemoteRewrite;
    let (Some(remote), Some(epoch)) = (partition.remote(), partition.leading_epoch()) else {
        return Ok((0, 0));
    };
    let mut stale = 0;
    let config = partition.log_config();
    let staging = partition.dir().join("cleaning-remote");
    let horizon = now_ms.saturating_sub(config.delete_retention_ms);
    let mut offset = remote.marks().log_start_offset;
    let mut rewritten = 0;
    let piece = tiering.cache.chunk_bytes();
    while let Some(entry) = remote.locate(offset).await? {
        offset = entry.end_offset;
        if partition.is_deleted() {
            break;
        }
        let object = ObjectRef {
            key: remote.segment_key(&entry),
            id: entry.object_id,
            size: entry.object_size(),
        };
        let mut rewrite = RemoteRewrite::new(
            &staging,
            (entry.base_offset, entry.end_offset),
            entry.log_bytes,
            map.clone(),
            entry.uploaded_ms < horizon,
            config.index_interval_bytes,
            now_ms,
        )
        .map_err(RemoteReadError::Local)?;
        let mut position = 0;
        while position < entry.log_bytes {
            let end = (position + piece).min(entry.log_bytes);
            let chunk = tiering.cache.read(&object, position..end).await?;
            position = end;
            let (back, fed) = tokio::task::spawn_blocking(move || {
                let fed = rewrite.feed(chunk);
                (rewrite, fed)
            })
            .await
            .map_err(|e| RemoteReadError::Local(std::io::Error::other(e.to_string())))?;
            rewrite = back;
            fed.map_err(RemoteReadError::Local)?;
        }
        let Some(done) = tokio::task::spawn_blocking(move || rewrite.finish())
            .await
            .map_err(|e| RemoteReadError::Local(std::io::Error::other(e.to_string())))?
            .map_err(RemoteReadError::Local)?
        else {
            continue;
        };
        let offset_index =
            Bytes::from(std::fs::read(&done.offset_index).map_err(RemoteReadError::Local)?);
        let time_index =
            Bytes::from(std::fs::read(&done.time_index).map_err(RemoteReadError::Local)?);
        // The copy ends where the original did: same producer state.
        let producer_snapshot = if entry.producer_snapshot_bytes > 0 {
            tiering
                .cache
                .read(&object, entry.producer_snapshot_range())
                .await?
        } else {
            Bytes::new()
        };
        let sealed = strata_tiering::SealedSegment {
            base_offset: entry.base_offset,
            end_offset: entry.end_offset,
            log: done.log.clone(),
            log_bytes: done.log_bytes,
            offset_index,
            time_index,
            producer_snapshot,
            max_timestamp: done.max_timestamp,
            log_start_offset: remote.marks().log_start_offset,
        };
        let replaced = remote
            .replace_segment(&entry, &sealed, epoch, tiering.part_bytes)
            .await?;
        let _ = std::fs::remove_dir_all(&staging);
        if !replaced {
            stale += 1;
        }
        if replaced {
            rewritten += 1;
            info!(partition = %remote.id, base_offset = entry.base_offset, records_removed = done.records_removed,
                bytes_before = entry.log_bytes, bytes_after = done.log_bytes, "rewrote a compacted remote segment");
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok((rewritten, stale))
}

/// The relative offset of the last time-index entry whose running max timestamp is below
/// `timestamp` (where a scan for `timestamp` can start), if any.
fn time_index_floor(index: &[u8], timestamp: i64) -> Option<u32> {
    format::index_floor(index, TIME_ENTRY_LEN, timestamp.saturating_sub(1), |e| {
        format::time_entry(e).0
    })
    .map(|e| format::time_entry(e).1)
}

/// ListOffsets by timestamp over the remote tier: the first record at or after the remote
/// log start with a timestamp >= `timestamp`, or `None` if no remote segment has one.
/// Segments are skipped by their max timestamp (from the manifest), then the segment's
/// time index narrows the scan, and only the batch holding the answer is decoded.
pub async fn remote_offset_for_timestamp(
    tiering: &Tiering,
    remote: &RemoteLog,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, RemoteReadError> {
    let marks = remote.marks();
    let Some(end) = marks.end_offset else {
        return Ok(None);
    };
    let root = remote.root();
    let remote_max = root
        .tail
        .iter()
        .map(|e| e.max_timestamp)
        .chain(root.refs.iter().map(|r| r.max_timestamp))
        .max()
        .unwrap_or(-1);
    if remote_max < timestamp {
        return Ok(None);
    }
    let start = marks.log_start_offset;
    let mut offset = start;
    while offset < end {
        let Some(entry) = remote.locate(offset).await? else {
            return Ok(None);
        };
        offset = entry.end_offset;
        if entry.max_timestamp < timestamp {
            continue;
        }
        let found = scan_segment_for_timestamp(tiering, remote, &entry, timestamp, start).await?;
        if found.is_some() {
            return Ok(found);
        }
        // Every match in this segment was below the log start: look further on.
    }
    Ok(None)
}

/// The first record of `entry` at or after `min_offset` with a timestamp >= `timestamp`.
async fn scan_segment_for_timestamp(
    tiering: &Tiering,
    remote: &RemoteLog,
    entry: &SegmentEntry,
    timestamp: i64,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, RemoteReadError> {
    let object = object_ref(remote, entry);
    let corrupt = |position| RemoteReadError::Corrupt {
        key: object.key.clone(),
        base_offset: entry.base_offset,
        position,
    };
    let cache = &tiering.cache;
    let time_index = cache.read(&object, entry.time_index_range()).await?;
    let offset_index = cache.read(&object, entry.offset_index_range()).await?;
    let mut position = time_index_floor(&time_index, timestamp).map_or(0, |relative| {
        index_floor(&offset_index, i64::from(relative)).1
    });
    while position + BATCH_HEADER_LEN as u64 <= entry.log_bytes {
        let header = cache
            .read(&object, position..position + BATCH_HEADER_LEN as u64)
            .await?;
        let Some((base, size, last_delta)) = format::read_batch_prefix(&header) else {
            return Err(corrupt(position));
        };
        if size < BATCH_HEADER_LEN || position + size as u64 > entry.log_bytes {
            return Err(corrupt(position));
        }
        let batch_max = format::parse_validated_header(&header).max_timestamp;
        if base + i64::from(last_delta) >= min_offset && batch_max >= timestamp {
            let batch = cache
                .read(&object, position..position + size as u64)
                .await?;
            if !format::crc_matches(&batch) {
                return Err(corrupt(position));
            }
            let found = crate::partition::heavy_decode(move || {
                crate::log::first_at_or_after(&batch, timestamp, min_offset, i64::MAX)
            })
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| corrupt(position))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        position += size as u64;
    }
    Ok(None)
}

/// Reports a damaged remote segment a read found, and repairs it in the background when
/// this broker leads the partition and still holds the segment locally: the local copy
/// (checked batch by batch first) replaces the object in the manifest, as a compaction
/// rewrite does ([`RemoteLog::replace_segment`]: same offset range, new object, old one
/// deleted). Without a local copy the damage stays, and reads of that range answer
/// KAFKA_STORAGE_ERROR; another replica that still has it repairs it once it leads.
pub fn repair_remote(broker: &Broker, partition: &Arc<Partition>, base_offset: i64) {
    let label = format!("{}-{}", partition.topic, partition.index);
    let log_it = crate::log::damage::found("remote", "object", &label);
    let local = partition.sealed_segment(base_offset);
    if log_it {
        error!(partition = %label, base_offset, local_copy = local.is_some(),
            leader = partition.is_leader(),
            "a remote segment is damaged; reads of it fail with KAFKA_STORAGE_ERROR until it is repaired");
    }
    // One attempt a minute per segment: clients retry the failed fetch far more often.
    let due = crate::log::damage::once_a_minute(&format!("{label}/repair/{base_offset}"));
    let (true, Some(info), Some(epoch), Some(tiering), Some(remote)) = (
        due,
        local,
        partition.leading_epoch(),
        broker.tiering.clone(),
        partition.remote().cloned(),
    ) else {
        return;
    };
    let partition = partition.clone();
    tokio::spawn(async move {
        // One repair (or upload, or compaction) at a time per partition.
        let Some(_slot) = partition.claim_upload_slot() else {
            return;
        };
        let outcome = async {
            let Some(entry) = remote.locate(base_offset).await? else {
                return Ok(false);
            };
            if entry.base_offset != info.base_offset || entry.end_offset != info.end_offset {
                return Ok(false);
            }
            let segment = sealed_segment(info, partition.local_log_start_offset())
                .await
                .map_err(|e| anyhow::anyhow!("the local copy cannot be used: {e}"))?;
            let replaced = remote
                .replace_segment(&entry, &segment, epoch, tiering.part_bytes)
                .await?;
            if replaced {
                tiering.cache.forget(&object_ref(&remote, &entry));
            }
            anyhow::Ok(replaced)
        }
        .await;
        match outcome {
            Ok(true) => {
                crate::log::damage::repaired("remote_reuploaded");
                warn!(partition = %label, base_offset, "damaged remote segment replaced by the local copy");
            }
            Ok(false) => info!(partition = %label, base_offset,
                "damaged remote segment not repaired: the manifest or the local log no longer hold it as it was"),
            Err(e) => warn!(partition = %label, base_offset, error = %e,
                "repair of a damaged remote segment failed; the next read that finds it retries"),
        }
    });
}

/// Deletes a deleted topic's objects and manifests in the background. What a crash
/// interrupts, the scrubber finishes (objects of unknown topics).
pub fn delete_remote(partitions: Vec<Arc<Partition>>) {
    tokio::spawn(async move {
        for partition in partitions {
            // Claim the partition's upload slot for good, so no upload can commit a
            // manifest after its deletion.
            while !partition.try_start_upload(i64::MAX) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(remote) = partition.remote() {
                match remote.delete_everything().await {
                    Ok(()) => info!(partition = %remote.id, "deleted remote objects"),
                    Err(e) => warn!(partition = %remote.id, error = %e,
                        "could not delete all remote objects; the scrubber will"),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_floor_finds_the_last_entry_at_or_before() {
        let mut index = format::index_header(format::OFFSET_INDEX_MAGIC).to_vec();
        for (rel, pos) in [(0u32, 0u32), (10, 4000), (20, 8000)] {
            index.extend_from_slice(&rel.to_be_bytes());
            index.extend_from_slice(&pos.to_be_bytes());
        }
        assert_eq!(index_floor(&index, 0).1, 0);
        assert_eq!(index_floor(&index, 9).1, 0);
        assert_eq!(index_floor(&index, 10), (10, 4000));
        assert_eq!(index_floor(&index, 25).1, 8000);
        assert_eq!(index_floor(&index[..8], 25), (0, 0));
    }
}
