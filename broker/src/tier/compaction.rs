//! Compaction of remote segments: the remote tier of a compacted tiered topic, after a
//! local pass, and the merged history of a compacted diskless topic
//! (`crate::diskless::compact`). Both rewrite segments with a pass's key map and swap each
//! copy into the manifest with the same offset range.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use strata_tiering::manifest::SegmentEntry;
use strata_tiering::{ObjectRef, RemoteLog};
use tracing::info;

use super::Tiering;
use crate::log::LogConfig;
use crate::log::cleaner::{OffsetMap, RemoteRewrite};
use crate::partition::Partition;
use crate::partition::remote::RemoteReadError;

/// The remote segments a pass rewrites, and how.
pub struct RemoteTarget<'a> {
    pub remote: &'a RemoteLog,
    /// The epoch the rewrites commit at: the leader's (tiered), 0 (diskless, whose merges
    /// commit at 0).
    pub leader_epoch: i32,
    pub config: LogConfig,
    /// Where rewritten segments are staged (removed when the pass ends).
    pub staging: PathBuf,
    /// The map covers the offsets before it: segments at or past it are not rewritten,
    /// and records at or past it in the one it ends in stay as they are.
    pub map_end: i64,
    /// Stops the pass between segments (the partition was deleted).
    pub stopped: &'a (dyn Fn() -> bool + Sync),
}

/// What a pass over remote segments did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemotePass {
    pub rewritten: usize,
    /// Segments whose replacement found the manifest changed: the pass must run again.
    pub stale: usize,
    /// Log bytes the rewrites removed.
    pub bytes_removed: u64,
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
/// PUT per manifest level above it, one metadata-store write and one DELETE.
pub async fn compact_remote(
    tiering: &Tiering,
    partition: &Partition,
    map: Arc<OffsetMap>,
    now_ms: i64,
) -> Result<RemotePass, RemoteReadError> {
    let (Some(remote), Some(epoch)) = (partition.remote(), partition.leading_epoch()) else {
        return Ok(RemotePass::default());
    };
    let target = RemoteTarget {
        remote,
        leader_epoch: epoch,
        config: partition.log_config(),
        staging: partition.dir().join("cleaning-remote"),
        map_end: i64::MAX,
        stopped: &|| partition.is_deleted(),
    };
    compact_segments(tiering, &target, map, now_ms).await
}

/// Rewrites the target's segments from its log start to its map's end (see
/// [`compact_remote`]); a replacement that found the manifest changed (a segment deleted
/// or replaced meanwhile) counts as stale, while segments committed meanwhile (after the
/// ones read) are kept by the manifest's compare-and-swap and left for a later pass.
pub async fn compact_segments(
    tiering: &Tiering,
    target: &RemoteTarget<'_>,
    map: Arc<OffsetMap>,
    now_ms: i64,
) -> Result<RemotePass, RemoteReadError> {
    let remote = target.remote;
    let config = &target.config;
    let staging = &target.staging;
    let horizon = now_ms.saturating_sub(config.delete_retention_ms);
    let mut offset = remote.marks().log_start_offset;
    let mut pass = RemotePass::default();
    while let Some(entry) = remote.locate(offset).await? {
        offset = entry.end_offset;
        if (target.stopped)() || entry.base_offset >= target.map_end {
            break;
        }
        let object = segment_object(remote, &entry);
        // The aborted transactions the object lists: the rewrite drops their records.
        // The list stays as it is (an entry whose records went is harmless to a reader:
        // the producer's abort marker still follows).
        let (txn_index, aborted) = segment_aborted(tiering, &object, &entry).await?;
        let rewrite = RemoteRewrite::new(
            staging,
            (entry.base_offset, entry.end_offset),
            entry.log_bytes,
            map.clone(),
            &aborted,
            entry.uploaded_ms < horizon,
            config.index_interval_bytes,
            now_ms,
        )
        .map_err(RemoteReadError::Local)?
        .map_ends_at(target.map_end);
        let rewrite = feed_segment(tiering, &object, &entry, rewrite, RemoteRewrite::feed).await?;
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
            txn_index,
            max_timestamp: done.max_timestamp,
            log_start_offset: remote.marks().log_start_offset,
        };
        let replaced = remote
            .replace_segment(&entry, &sealed, target.leader_epoch, tiering.part_bytes)
            .await?;
        let _ = std::fs::remove_dir_all(staging);
        if !replaced {
            pass.stale += 1;
            continue;
        }
        pass.rewritten += 1;
        pass.bytes_removed += entry.log_bytes.saturating_sub(done.log_bytes);
        info!(partition = %remote.id, base_offset = entry.base_offset, records_removed = done.records_removed,
            bytes_before = entry.log_bytes, bytes_after = done.log_bytes, "rewrote a compacted remote segment");
    }
    let _ = std::fs::remove_dir_all(staging);
    Ok(pass)
}

/// The object holding a manifest entry's segment.
pub fn segment_object(remote: &RemoteLog, entry: &SegmentEntry) -> ObjectRef {
    ObjectRef {
        key: remote.segment_key(entry),
        id: entry.object_id,
        size: entry.object_size(),
    }
}

/// A segment's aborted-transaction index: its bytes and its entries.
pub async fn segment_aborted(
    tiering: &Tiering,
    object: &ObjectRef,
    entry: &SegmentEntry,
) -> Result<(Bytes, Vec<crate::log::txn::AbortedTxn>), RemoteReadError> {
    if entry.txn_index_bytes == 0 {
        return Ok((Bytes::new(), Vec::new()));
    }
    let txn_index = tiering.cache.read(object, entry.txn_index_range()).await?;
    let aborted =
        crate::log::txn::decode_file(&txn_index).ok_or_else(|| RemoteReadError::Corrupt {
            key: object.key.clone(),
            base_offset: entry.base_offset,
            position: entry.txn_index_range().start,
        })?;
    Ok((txn_index, aborted))
}

/// Feeds a segment's `.log` bytes, one cache chunk at a time, to `feed` on a blocking
/// thread (it parses, and may write): memory stays at a chunk plus what `state` keeps.
pub async fn feed_segment<T: Send + 'static>(
    tiering: &Tiering,
    object: &ObjectRef,
    entry: &SegmentEntry,
    mut state: T,
    feed: fn(&mut T, Bytes) -> std::io::Result<()>,
) -> Result<T, RemoteReadError> {
    let piece = tiering.cache.chunk_bytes();
    let mut position = 0;
    while position < entry.log_bytes {
        let end = (position + piece).min(entry.log_bytes);
        let chunk = tiering.cache.read(object, position..end).await?;
        position = end;
        let (back, fed) = tokio::task::spawn_blocking(move || {
            let fed = feed(&mut state, chunk);
            (state, fed)
        })
        .await
        .map_err(|e| RemoteReadError::Local(std::io::Error::other(e.to_string())))?;
        state = back;
        fed.map_err(RemoteReadError::Local)?;
    }
    Ok(state)
}
