//! Compaction of a diskless topic's merged history (cleanup.policy=compact).
//!
//! Only the merged segments (the partition's tiered manifest) are compacted: the runs
//! are the partition's "active segment", which Kafka never compacts either. A key whose
//! newer value is still in a run is not compacted until that run is merged.
//!
//! The partition's merge owner (`merge::owner`) runs a pass on the log cleaner's schedule
//! (`log_cleaner_interval_ms`, `Broker::clean_logs`), with the local cleaner's rules
//! ([`crate::log::cleaner`]) applied to merged segments instead of local ones:
//!
//! 1. **Plan**: the cleanable segments are the merged ones from the log start up to the
//!    first whose newest record is younger than min.compaction.lag.ms. Those ending
//!    after the first dirty offset are dirty; a pass is due when they reach
//!    min.cleanable.dirty.ratio of the cleanable bytes or the oldest is older than
//!    max.compaction.lag.ms ([`Dirt::due`]).
//! 2. **Map**: the dirty segments are read through the segment cache, a chunk at a time,
//!    into the key → last offset map ([`MapBuilder`]), bounded by
//!    `log_cleaner_dedupe_buffer_bytes` as the local cleaner's: a full map ends the pass's
//!    range inside a segment, and the next pass carries on from there. Aborted records
//!    (the segment's aborted-transaction index) and markers bring no keys.
//! 3. **Rewrite**: every merged segment from the log start up to the map's end is
//!    rewritten with the machinery of tiered compaction
//!    ([`crate::tier::compact_segments`]): superseded records go, tombstones go
//!    delete.retention.ms after their segment was merged, aborted records go, markers
//!    and the aborted list stay. Records past the map's end stay as they are. Each copy
//!    keeps its segment's offset range and replaces it with the manifest's
//!    compare-and-swap at leader epoch 0 (merges commit at epoch 0 too): a merge that
//!    committed a new segment meanwhile makes the swap reload the manifest and apply it
//!    again, so the new segment stays; a segment deleted meanwhile (retention) makes the
//!    replacement stale, and the next pass covers the range again.
//!
//! The first dirty offset is kept in memory by the owner: a restart or a new owner starts
//! from the log start (one pass reads the whole merged history once more). The old
//! segment objects are deleted after each swap; a broker reading with an older copy of
//! the manifest reloads it when an object is gone (`Diskless::fetch`). A pass that may
//! have committed a copy is fenced against the topic's deletion ([`fence_deleted`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_tiering::RemoteLog;

use super::state::PartitionKey;
use super::store::DisklessStore;
use crate::log::LogConfig;
use crate::log::cleaner::{AbortedRanges, Dirt, MapBuilder, OffsetMap, SegmentBatches};
use crate::partition::remote::RemoteReadError;
use crate::tier::{RemotePass, RemoteTarget, Tiering};

/// Each partition's first dirty offset, on the broker that compacts it. A std mutex: held
/// for a map access.
#[derive(Default)]
pub struct CleanerState {
    first_dirty: Mutex<HashMap<PartitionKey, i64>>,
}

impl CleanerState {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionKey, i64>> {
        self.first_dirty.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn first_dirty(&self, key: &PartitionKey) -> i64 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    pub fn set_first_dirty(&self, key: PartitionKey, offset: i64) {
        self.lock().insert(key, offset);
    }

    /// Forgets the partitions `keep` refuses (no longer owned, deleted).
    pub fn retain(&self, keep: impl Fn(&PartitionKey) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }
}

/// One partition's pass: what it works on.
pub struct Pass<'a> {
    pub remote: &'a RemoteLog,
    pub config: LogConfig,
    pub first_dirty: i64,
    /// The key map's bound (keys).
    pub max_keys: usize,
    /// Where rewritten segments are staged.
    pub staging: PathBuf,
    pub stopped: &'a (dyn Fn() -> bool + Sync),
}

/// What a pass did: the rewrites, and where the dirty part now starts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    pub pass: RemotePass,
    pub first_dirty: i64,
}

/// Runs a pass over the merged history if one is due (`None` if not). The manifest
/// copy is reloaded first, so segments merged since are seen.
pub async fn compact(
    tiering: &Tiering,
    pass: Pass<'_>,
    now_ms: i64,
) -> Result<Option<Cleaned>, RemoteReadError> {
    let remote = pass.remote;
    remote.reload().await?;
    let log_start = remote.marks().log_start_offset;
    let first_dirty = pass.first_dirty.max(log_start);
    let (dirt, cleanable_end) = plan(remote, &pass.config, first_dirty, now_ms).await?;
    if !dirt.due(&pass.config, now_ms) {
        return Ok(None);
    }
    let (map, map_end) = build_map(
        tiering,
        remote,
        (first_dirty, cleanable_end),
        pass.max_keys,
        pass.stopped,
    )
    .await?;
    if map_end <= first_dirty {
        return Ok(None);
    }
    let target = RemoteTarget {
        remote,
        leader_epoch: 0,
        config: pass.config.clone(),
        staging: pass.staging.clone(),
        map_end,
        stopped: pass.stopped,
    };
    let done = crate::tier::compact_segments(tiering, &target, Arc::new(map), now_ms).await?;
    Ok(Some(Cleaned {
        pass: done,
        // A stale replacement leaves its range for the next pass.
        first_dirty: if done.stale == 0 {
            map_end
        } else {
            first_dirty
        },
    }))
}

/// The topic-deletion fence after a pass, as the merger's (`merge.rs`): a deletion
/// removes the partition's head from the store, *then* LISTs and deletes its objects and
/// its manifest root. A replacement committed after that LIST (and before the root went)
/// is an object nothing would ever delete (the scrubber only looks at existing topics'
/// partitions). So after a pass that may have committed one: if the head is gone, this
/// deletes everything under the partition, as the deletion did. Returns whether it did.
pub async fn fence_deleted(
    store: &dyn DisklessStore,
    key: &PartitionKey,
    remote: &RemoteLog,
) -> Result<bool, RemoteReadError> {
    let gone = store
        .load(key)
        .await
        .map_err(|e| RemoteReadError::Local(std::io::Error::other(e.to_string())))?
        .is_none();
    if gone {
        tracing::warn!(partition = %remote.id,
            "the topic was deleted during a compaction pass; deleting what the pass committed");
        remote.delete_everything().await?;
    }
    Ok(gone)
}

/// The key map over the merged segments of `range` (the first dirty offset, the end of
/// the cleanable ones), read through the segment cache a chunk at a time, and the offset
/// it covers the records up to ([`MapBuilder`]).
pub async fn build_map(
    tiering: &Tiering,
    remote: &RemoteLog,
    range: (i64, i64),
    max_keys: usize,
    stopped: &(dyn Fn() -> bool + Sync),
) -> Result<(OffsetMap, i64), RemoteReadError> {
    let (first_dirty, cleanable_end) = range;
    let mut builder = MapBuilder::new(first_dirty, cleanable_end, max_keys);
    let mut offset = first_dirty;
    while let Some(entry) = remote.locate(offset).await? {
        offset = entry.end_offset;
        if entry.end_offset > cleanable_end || stopped() {
            break;
        }
        let object = crate::tier::segment_object(remote, &entry);
        let (_, aborted) = crate::tier::segment_aborted(tiering, &object, &entry).await?;
        let reading = MapReading {
            builder,
            batches: SegmentBatches::new((entry.base_offset, entry.end_offset), entry.log_bytes),
            aborted: AbortedRanges::new(&aborted),
        };
        let read =
            crate::tier::feed_segment(tiering, &object, &entry, reading, MapReading::feed).await?;
        read.batches.finish().map_err(RemoteReadError::Local)?;
        builder = read.builder;
        if !builder.covered_to(entry.end_offset) {
            break;
        }
    }
    Ok(builder.finish())
}

/// The dirt of the cleanable merged segments and where they end: from the log start up
/// to the first segment whose newest record is younger than min.compaction.lag.ms.
async fn plan(
    remote: &RemoteLog,
    config: &LogConfig,
    first_dirty: i64,
    now_ms: i64,
) -> Result<(Dirt, i64), RemoteReadError> {
    let lag = config.min_compaction_lag_ms;
    let mut dirt = Dirt::default();
    let mut offset = remote.marks().log_start_offset;
    let mut cleanable_end = offset;
    while let Some(entry) = remote.locate(offset).await? {
        offset = entry.end_offset;
        if lag > 0 && entry.max_timestamp > now_ms - lag {
            break;
        }
        dirt.total_bytes += entry.log_bytes;
        if entry.end_offset > first_dirty {
            dirt.dirty_bytes += entry.log_bytes;
            dirt.oldest_dirty_timestamp
                .get_or_insert(entry.max_timestamp);
        }
        cleanable_end = entry.end_offset;
    }
    Ok((dirt, cleanable_end))
}

/// The map's reading of one segment (moved to a blocking thread for each chunk).
struct MapReading {
    builder: MapBuilder,
    batches: SegmentBatches,
    aborted: AbortedRanges,
}

impl MapReading {
    fn feed(&mut self, piece: Bytes) -> std::io::Result<()> {
        let MapReading {
            builder,
            batches,
            aborted,
        } = self;
        batches.feed(piece, |base, batch| builder.add(base, &batch, aborted))
    }
}

#[cfg(test)]
mod tests;
