//! The diskless scrubber: shared objects no committed run references, and orphaned
//! merged segments of diskless partitions.
//!
//! A shared object holds the batches of many partitions; it is needed while any run
//! points into it. Runs go when they are merged (the trim) or their topic is deleted, and
//! an append whose commit failed leaves an object no run ever referenced. On the
//! controller, every `remote_scrub_interval_ms` (the tiered scrubber's cadence), the
//! scrubber LISTs `diskless/`, *then* loads every run from the metadata store (the store,
//! not a broker's view, which may lag), and deletes the listed objects that no run
//! references and that are older than `diskless_scrub_grace_ms`. The order and the grace
//! period make it safe against appends in flight: an object listed but not yet committed
//! is younger than the grace period (longer than any PUT-to-commit time), and an object
//! whose run was committed before the load is referenced. Never is an object a committed
//! run references deleted.
//!
//! Diskless partitions have no leader, so the tiered scrubber (which asks each leader to
//! scrub its partition's prefix) never looks at them; the same pass runs
//! `RemoteLog::scrub` for each diskless partition here, for the segment objects of merges
//! that crashed or lost the manifest race, and deletes the diskless records of topics the
//! metadata store no longer has (a crash during a topic's deletion).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{IntCounter, Opts};
use strata_tiering::store::ObjectInfo;
use strata_tiering::{PartitionId, RemoteStore};
use tracing::{info, warn};

use super::merge::DisklessHost;
use super::store::DisklessStore;

/// Where shared objects live, relative to the store root.
pub const SHARED_PREFIX: &str = "diskless/";

pub static SCRUBBED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::with_opts(Opts::new(
        "diskless_scrubbed_objects_total",
        "Shared diskless objects the scrubber deleted because no committed run referenced them",
    ))
    .expect("a valid metric family")
});

/// The scrubber's decision: the listed shared objects to delete, those no run references
/// that are at least `grace_ms` old at `now_ms`. Objects outside [`SHARED_PREFIX`] are
/// never chosen.
pub fn unreferenced<'a>(
    listed: &'a [ObjectInfo],
    referenced: &HashSet<String>,
    now_ms: i64,
    grace_ms: i64,
) -> Vec<&'a ObjectInfo> {
    listed
        .iter()
        .filter(|o| o.key.starts_with(SHARED_PREFIX))
        .filter(|o| now_ms.saturating_sub(o.last_modified_ms) >= grace_ms)
        .filter(|o| !referenced.contains(&o.key))
        .collect()
}

/// Why a scrub pass stopped; the next pass starts over.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("object store: {0}")]
    Objects(#[from] strata_tiering::StoreError),
    #[error("metadata store: {0}")]
    Metadata(#[from] crate::cluster::StoreError),
}

/// One pass over the shared objects. Returns how many were deleted, and the topic ids
/// the metadata store holds diskless records of (for [`forget_deleted_topics`]: one load
/// of the keyspace serves both).
pub async fn scrub_shared(
    objects: &dyn RemoteStore,
    store: &dyn DisklessStore,
    now_ms: i64,
    grace_ms: i64,
) -> Result<(usize, HashSet<uuid::Uuid>), ScrubError> {
    // In this order: see the module doc.
    let listed = objects.list(SHARED_PREFIX).await?;
    let loaded = store.load_all().await?;
    let topics: HashSet<uuid::Uuid> = loaded.iter().map(|(key, _)| key.topic_id).collect();
    if listed.is_empty() {
        return Ok((0, topics));
    }
    let referenced: HashSet<String> = loaded
        .into_iter()
        .flat_map(|(_, state)| state.runs.into_values().map(|r| r.key))
        .collect();
    let mut deleted = 0;
    for object in unreferenced(&listed, &referenced, now_ms, grace_ms) {
        info!(
            key = object.key,
            "deleting a shared diskless object no run references"
        );
        objects.delete(&object.key).await?;
        SCRUBBED.inc();
        deleted += 1;
    }
    Ok((deleted, topics))
}

/// Deletes the diskless records (heads, runs, producers) of topics the metadata store no
/// longer has: what a crash during a topic's deletion left. `loaded` are the topic ids
/// of the records as loaded *before* the topic list is read here, so a topic whose
/// records were loaded was created before the list was read (an append needs the topic)
/// and is in it unless it was deleted. Returns the topics forgotten.
pub async fn forget_deleted_topics(
    host: &dyn DisklessHost,
    store: &dyn DisklessStore,
    loaded: &HashSet<uuid::Uuid>,
) -> Result<usize, ScrubError> {
    if loaded.is_empty() {
        return Ok(0);
    }
    let live = host.stored_topic_ids().await?;
    let mut forgotten = 0;
    for id in loaded.difference(&live) {
        info!(topic_id = %id, "deleting the diskless records of a deleted topic");
        store.delete_topic(*id).await?;
        forgotten += 1;
    }
    Ok(forgotten)
}

/// The diskless scrubber loop, on the controller only.
pub async fn run_scrubber(host: Arc<dyn DisklessHost>) {
    let (Some(tiering), Some(store)) = (host.tiering().cloned(), host.diskless_store()) else {
        return;
    };
    super::merge::register_metrics(host.registry());
    let mut ticker = tokio::time::interval(Duration::from_millis(
        host.config().remote_scrub_interval_ms as u64,
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = host.shutdown().cancelled() => break,
            _ = ticker.tick() => {}
        }
        if !host.is_controller() {
            continue;
        }
        let grace = host.config().diskless_scrub_grace_ms;
        match scrub_shared(&*tiering.store, &*store, host.now_ms(), grace).await {
            Ok((deleted, loaded)) => {
                if deleted > 0 {
                    info!(deleted, "scrubbed shared diskless objects");
                }
                if let Err(e) = forget_deleted_topics(&*host, &*store, &loaded).await {
                    warn!(error = %e, "could not look for diskless records of deleted topics");
                }
            }
            Err(e) => warn!(error = %e, "diskless scrub failed"),
        }
        let grace = host.config().remote_scrub_grace_ms;
        for topic in host.diskless_topics() {
            for partition in 0..topic.partitions {
                if host.shutdown().is_cancelled() {
                    return;
                }
                let id = PartitionId {
                    topic: topic.name.clone(),
                    topic_id: topic.id,
                    partition,
                };
                let label = id.to_string();
                let scrubbed = async {
                    tiering
                        .open_remote_log(id)
                        .await?
                        .scrub(host.now_ms(), grace)
                        .await
                }
                .await;
                match scrubbed {
                    Ok(0) => {}
                    Ok(n) => info!(
                        partition = label,
                        deleted = n,
                        "scrubbed orphaned merged segments"
                    ),
                    Err(e) => {
                        warn!(partition = label, error = %e, "scrub of a diskless partition failed")
                    }
                }
            }
        }
    }
}
