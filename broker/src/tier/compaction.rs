//! Compaction of the remote tier of a compacted topic, after a local pass.

use std::sync::Arc;

use bytes::Bytes;
use strata_tiering::ObjectRef;
use tracing::info;

use super::Tiering;
use crate::partition::Partition;
use crate::partition::remote::RemoteReadError;

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
        // The aborted transactions the object lists: the rewrite drops their records.
        // The list stays as it is (an entry whose records went is harmless to a reader:
        // the producer's abort marker still follows).
        let txn_index = if entry.txn_index_bytes > 0 {
            tiering.cache.read(&object, entry.txn_index_range()).await?
        } else {
            Bytes::new()
        };
        let aborted = if txn_index.is_empty() {
            Vec::new()
        } else {
            crate::log::txn::decode_file(&txn_index).ok_or_else(|| RemoteReadError::Corrupt {
                key: object.key.clone(),
                base_offset: entry.base_offset,
                position: entry.txn_index_range().start,
            })?
        };
        let mut rewrite = RemoteRewrite::new(
            &staging,
            (entry.base_offset, entry.end_offset),
            entry.log_bytes,
            map.clone(),
            &aborted,
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
            txn_index,
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
