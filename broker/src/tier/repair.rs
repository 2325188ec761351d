//! Repair of a damaged object in the bucket from the leader's local copy.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::TierHost;
use super::upload::sealed_segment;
use crate::partition::Partition;
use crate::partition::remote::object_ref;

/// Reports a damaged remote segment a read found, and repairs it in the background when
/// this broker leads the partition and still holds the segment locally: the local copy
/// (checked batch by batch first) replaces the object in the manifest, as a compaction
/// rewrite does ([`RemoteLog::replace_segment`]: same offset range, new object, old one
/// deleted). Without a local copy the damage stays, and reads of that range answer
/// KAFKA_STORAGE_ERROR; another replica that still has it repairs it once it leads.
pub fn repair_remote(broker: &dyn TierHost, partition: &Arc<Partition>, base_offset: i64) {
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
        broker.tiering().cloned(),
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
