//! The uploader: sealed segments below the high watermark go to the bucket in order,
//! then remote retention; the upload-lag gauges and the stall watchdog.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use strata_tiering::remote_log::AfterUploadHook;
use strata_tiering::{PartitionId, SealedSegment, TierError};
use tracing::Instrument as _;
use tracing::{error, warn};

use super::TierHost;
use super::Tiering;
use crate::log::SealedInfo;
use crate::partition::Partition;

/// Segments one partition uploads per pass before yielding to others.
const UPLOADS_PER_PASS: usize = 16;

/// A segment's offset index, time index and producer snapshot, read whole for upload.
type Sidecars = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Reads a sealed segment's index files for upload, and opens its `.log`: the segment
/// holds no descriptor of its own (sealed segments are opened on demand), and this
/// handle keeps its bytes readable for the whole upload even if retention removes it.
pub(super) async fn sealed_segment(
    info: SealedInfo,
    log_start_offset: i64,
) -> std::io::Result<SealedSegment> {
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
        txn_index: Bytes::from(info.txn_index),
        max_timestamp: info.max_timestamp,
        log_start_offset,
    })
}

/// One uploader pass over a partition: upload what is sealed and below the high
/// watermark, in order, then apply retention.ms / retention.bytes to the remote tier.
/// Returns false if the pass failed (it is retried after a backoff).
async fn upload_partition(broker: &dyn TierHost, tiering: &Tiering, partition: &Partition) -> bool {
    let (Some(remote), Some(epoch)) = (partition.remote(), partition.leading_epoch()) else {
        return true;
    };
    let label = format!("{}-{}", partition.topic, partition.index);
    // Fence the previous leader before writing anything of ours (the claim made when
    // leadership arrived may not have landed yet).
    if remote.marks().leader_epoch < epoch
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
            let now = broker.now_ms();
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
            if broker.shutdown().is_cancelled() {
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
    let now = broker.now_ms();
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
fn report_lag(broker: &dyn TierHost, tiering: &Tiering, partition: &Partition, now_ms: i64) {
    let UploadLag {
        segments,
        bytes,
        age_ms,
    } = upload_lag(partition, now_ms);
    let labels = [partition.topic.as_str(), &partition.index.to_string()];
    broker
        .metrics()
        .upload_lag_bytes
        .with_label_values(&labels)
        .set(bytes as i64);
    broker
        .metrics()
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
pub async fn run_uploader(broker: Arc<dyn TierHost>) {
    let Some(tiering) = broker.tiering().cloned() else {
        return;
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(
        broker.config().remote_upload_interval_ms as u64,
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = broker.shutdown().cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = broker.now_ms();
        for partition in &broker.partitions() {
            {
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
                    report_lag(&*broker, &tiering, partition, now);
                }
                if !partition.try_start_upload(now) {
                    continue;
                }
                let (broker, tiering, partition) =
                    (broker.clone(), tiering.clone(), partition.clone());
                tasks.spawn(async move {
                    let pass = async {
                        match tiering.upload_slots.clone().acquire_owned().await {
                            Ok(_slot) => upload_partition(&*broker, &tiering, &partition).await,
                            Err(_) => true,
                        }
                    };
                    // A panic must still give the partition's upload slot back, or its
                    // uploads would stop for good; it counts as a restart of the uploader.
                    let succeeded = match std::panic::AssertUnwindSafe(pass).catch_unwind().await {
                        Ok(succeeded) => succeeded,
                        Err(_) => {
                            broker
                                .metrics()
                                .task_restarts
                                .with_label_values(&["uploader"])
                                .inc();
                            tracing::error!(topic = %partition.topic, partition = partition.index,
                                "an upload pass panicked; retrying after a backoff");
                            false
                        }
                    };
                    let interval = broker.config().remote_upload_interval_ms;
                    partition.finish_upload(succeeded, broker.now_ms(), interval);
                });
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}
