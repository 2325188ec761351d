//! Deleting diskless records: retention.ms / retention.bytes (by the merge owner, after
//! each merge round), DeleteRecords (any broker), and topic deletion.
//!
//! A diskless partition's log start lives in two places: `head.log_start` in the
//! metadata store (what Fetch and ListOffsets answer from) and the manifest's start (what
//! the merged segments' deletion follows). Retention moves the manifest first, as on a
//! tiered partition (`RemoteLog::retention_target`, `advance_start`: manifest, then
//! objects), then raises `head.log_start` to it. DeleteRecords raises `head.log_start`
//! first, so the answer is true as soon as it is given, then the manifest's start; a
//! crash between the two leaves the manifest behind, and the owner's next retention pass
//! moves it up to `head.log_start`. The manifest step (and the deletion of the merged
//! objects below the new start) runs after DeleteRecords is answered. Moving the
//! manifest's start past `merged` makes the runs below it covered: the merger trims them without merging records nobody may read.
//!
//! Retention counts unmerged runs towards retention.bytes but applies retention.ms to
//! merged segments only: unmerged data is at most `diskless_merge_max_age_ms` old.

use std::sync::Arc;

use strata_tiering::{PartitionId, TierError};
use tracing::{info, warn};

use super::merge::{DisklessTopic, MergeError, Merger};
use super::state::{PartitionKey, PartitionState};
use super::store::DisklessStore;
use crate::tier::Tiering;

const CAS_ATTEMPTS: usize = 8;

/// The owner's retention pass over one partition: the manifest's start moves to what
/// retention.ms / retention.bytes ask for (and at least to `head.log_start`), then
/// `head.log_start` follows the manifest's start. Returns whether either moved.
pub async fn apply_retention(
    merger: &Merger,
    topic: &DisklessTopic,
    key: &PartitionKey,
    now_ms: i64,
) -> Result<bool, MergeError> {
    let Some(state) = merger.store.load(key).await? else {
        return Ok(false);
    };
    let remote = merger.remote_log(&topic.name, key).await?;
    let marks = remote.marks();
    if marks.end_offset.is_none() && state.head.log_start == 0 {
        return Ok(false);
    }
    let (manifest_start, head_start) = (marks.log_start_offset, state.head.log_start);
    let mut target =
        (state.head.log_start > marks.log_start_offset).then_some(state.head.log_start);
    let config = &topic.config;
    if config.retention_ms >= 0 || config.retention_bytes >= 0 {
        let wanted = remote
            .retention_target(
                now_ms,
                config.retention_ms,
                config.retention_bytes,
                state.head.run_bytes,
            )
            .await?;
        target = target.max(wanted);
    }
    if let Some(start) = target {
        let deleted = remote.advance_start(start, 0).await?;
        if deleted > 0 {
            info!(topic = %topic.name, partition = key.partition, log_start_offset = start,
                bytes = deleted, "diskless retention deleted merged segments");
        }
    }
    let moved_to = remote.marks().log_start_offset;
    let log_start = raise_log_start(&*merger.store, key, state, moved_to).await?;
    Ok(moved_to != manifest_start || log_start != head_start)
}

/// Raises `head.log_start` to `to` (capped at `head.next`) by compare-and-swap, re-reading
/// on a lost compare. Returns the log start in force afterwards.
async fn raise_log_start(
    store: &dyn DisklessStore,
    key: &PartitionKey,
    mut state: PartitionState,
    to: i64,
) -> Result<i64, MergeError> {
    for _ in 0..CAS_ATTEMPTS {
        let to = to.min(state.head.next);
        if to <= state.head.log_start {
            return Ok(state.head.log_start);
        }
        let mut head = state.head.clone();
        head.log_start = to;
        if store.trim(key, state.head_version, &head, &[]).await? {
            return Ok(to);
        }
        match store.load(key).await? {
            Some(fresh) => state = fresh,
            None => return Ok(0),
        }
    }
    Err(MergeError::Contended)
}

/// Why DeleteRecords on a diskless partition failed; the handler maps each to a code.
#[derive(Debug, thiserror::Error)]
pub enum DeleteRecordsError {
    #[error("offset {offset} is past the high watermark {high_watermark}")]
    OutOfRange { offset: i64, high_watermark: i64 },
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// DeleteRecords on a diskless partition, from any broker: `head.log_start` moves to
/// `offset` (-1: the high watermark). Returns the new low watermark, true as soon as it
/// is returned (reads answer from the head). The manifest's start, and the deletion of
/// the merged objects below it, follow with [`advance_manifest`], which the caller runs
/// after answering; if it fails or never runs, the owner's next retention pass does it.
pub async fn delete_records(
    store: &dyn DisklessStore,
    key: &PartitionKey,
    offset: i64,
) -> Result<i64, DeleteRecordsError> {
    let state = store.load(key).await.map_err(MergeError::from)?;
    let state = state.unwrap_or_default();
    let high_watermark = state.head.next;
    let offset = if offset == -1 { high_watermark } else { offset };
    if offset < 0 || offset > high_watermark {
        return Err(DeleteRecordsError::OutOfRange {
            offset,
            high_watermark,
        });
    }
    if offset <= state.head.log_start || state.head_version == 0 {
        // Nothing to delete (an empty partition has nothing below 0 or its next).
        return Ok(state.head.log_start);
    }
    Ok(raise_log_start(store, key, state, offset).await?)
}

/// The second step of DeleteRecords: the manifest's start moves up to `low_watermark`
/// and the merged objects below it are deleted. A failure is logged, not returned: the
/// head already answers reads, and the owner's next retention pass moves the manifest.
pub async fn advance_manifest(
    tiering: &Tiering,
    topic: &str,
    key: &PartitionKey,
    low_watermark: i64,
) {
    let id = PartitionId {
        topic: topic.to_string(),
        topic_id: key.topic_id,
        partition: key.partition,
    };
    let moved = async {
        let remote = tiering.open_remote_log(id).await?;
        remote.advance_start(low_watermark, 0).await
    }
    .await;
    if let Err(e) = moved {
        warn!(topic, partition = key.partition, error = %e,
            "DeleteRecords moved the diskless log start but not yet the manifest's; the merge owner will");
    }
}

/// Topic deletion of a diskless topic, in the background: its records in the metadata
/// store (heads, runs, producers), then each partition's merged objects and manifest
/// root. Shared objects hold other partitions' data too: the diskless scrubber deletes
/// them once no run references them. What a crash interrupts, the scrubbers finish
/// (objects of unknown topics; unreferenced shared objects).
pub fn delete_topic(
    store: Arc<dyn DisklessStore>,
    tiering: Option<Arc<Tiering>>,
    topic: String,
    topic_id: uuid::Uuid,
    partitions: i32,
) {
    tokio::spawn(async move {
        if let Err(e) = store.delete_topic(topic_id).await {
            warn!(topic, error = %e, "could not delete a diskless topic's runs; retrying once");
            if let Err(e) = store.delete_topic(topic_id).await {
                warn!(topic, error = %e, "could not delete a diskless topic's runs");
            }
        }
        let Some(tiering) = tiering else { return };
        for partition in 0..partitions {
            let id = PartitionId {
                topic: topic.clone(),
                topic_id,
                partition,
            };
            let deleted: Result<(), TierError> =
                async { tiering.open_remote_log(id).await?.delete_everything().await }.await;
            if let Err(e) = deleted {
                warn!(topic, partition, error = %e,
                    "could not delete all merged objects of a deleted diskless topic; the scrubber will");
            }
        }
        info!(
            topic,
            "deleted a diskless topic's records and merged objects"
        );
    });
}
