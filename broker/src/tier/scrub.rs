//! Objects no manifest references: the orphan scrubber, and the deletion of a deleted
//! topic's objects.

use std::sync::Arc;
use std::time::Duration;

use strata_tiering::RemoteStore;
use tracing::{info, warn};

use super::TierHost;
use crate::partition::Partition;

/// The orphan scrubber: every `remote_scrub_interval_ms`, deletes objects older than
/// `remote_scrub_grace_ms` that no manifest references, and objects of topics that no
/// longer exist. It LISTs the bucket; nothing on the read path does.
pub async fn run_scrubber(broker: Arc<dyn TierHost>) {
    let Some(tiering) = broker.tiering().cloned() else {
        return;
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(
        broker.config().remote_scrub_interval_ms as u64,
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = broker.shutdown().cancelled() => break,
            _ = ticker.tick() => {}
        }
        let grace = broker.config().remote_scrub_grace_ms;
        for partition in &broker.partitions() {
            {
                // A follower's view of the manifest may be behind the leader's.
                let Some(remote) = partition.remote().filter(|_| partition.is_leader()) else {
                    continue;
                };
                match remote.scrub(broker.now_ms(), grace).await {
                    Ok(0) => {}
                    Ok(n) => {
                        info!(partition = %remote.id, deleted = n, "scrubbed orphaned objects")
                    }
                    Err(e) => warn!(partition = %remote.id, error = %e, "scrub failed"),
                }
            }
        }
        if broker.is_controller()
            && let Err(e) = scrub_unknown_topics(&*broker, &*tiering.store, grace).await
        {
            warn!(error = %e, "scrub of deleted topics failed");
        }
    }
}

/// Deletes objects of topics this cluster no longer has. Topics are checked just before
/// each delete (a topic created during the pass is live), and the listing is of this
/// cluster's prefix only.
async fn scrub_unknown_topics(
    broker: &dyn TierHost,
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
        let old_enough = broker.now_ms() - object.last_modified_ms >= grace_ms;
        if old_enough && !broker.topic_exists(id) {
            info!(key = object.key, "deleting an object of a deleted topic");
            store.delete(&object.key).await?;
        }
    }
    Ok(())
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
