//! Every broker's view of every diskless partition: the state last read from or written
//! to the metadata store, and a `watch` of each partition's `next` offset that long-poll
//! fetches wait on.
//!
//! Loaded in full at start; kept current by a watch on the store's `diskless/` keys
//! (each change is applied as it comes; a partition whose change cannot be decoded is
//! read again) and by this broker's own commits.
//! A watch error (etcd gone, revisions compacted) reloads everything and opens a new
//! watch. The embedded store has no watch: its only writer is this broker.
//!
//! A state is installed only if its head version is not older than the one held, so a
//! slow reload never undoes a newer commit.
//!
//! A deleted topic's partitions are forgotten for good: their ids are remembered, so a
//! late watch event, a refresh or a long-poll subscription does not bring them back.
//! Forgetting drops a partition's `watch` sender, which ends a long poll waiting on it
//! (its `changed()` fails), and the fetch then answers at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::state::{PartitionKey, PartitionState};
use super::store::DisklessStore;
use crate::cluster::StoreError;

struct Entry {
    state: Arc<PartitionState>,
    next: watch::Sender<i64>,
}

pub struct DisklessView {
    store: Arc<dyn DisklessStore>,
    partitions: RwLock<HashMap<PartitionKey, Entry>>,
    /// Deleted topics: never installed again. A std lock: held for a set access.
    removed: RwLock<HashSet<Uuid>>,
}

impl DisklessView {
    pub fn new(store: Arc<dyn DisklessStore>) -> DisklessView {
        DisklessView {
            store,
            partitions: RwLock::new(HashMap::new()),
            removed: RwLock::new(HashSet::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn DisklessStore> {
        &self.store
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PartitionKey, Entry>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PartitionKey, Entry>> {
        self.partitions.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition's state as this broker knows it; an empty state (nothing committed
    /// yet) for a partition it has not seen.
    pub fn get(&self, key: &PartitionKey) -> Arc<PartitionState> {
        self.read()
            .get(key)
            .map(|e| e.state.clone())
            .unwrap_or_default()
    }

    /// Every partition's state.
    pub fn all(&self) -> Vec<(PartitionKey, Arc<PartitionState>)> {
        self.read()
            .iter()
            .map(|(k, e)| (*k, e.state.clone()))
            .collect()
    }

    pub fn is_removed(&self, topic_id: Uuid) -> bool {
        self.removed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&topic_id)
    }

    /// A receiver of the partition's `next` offset, for long polls. For a deleted
    /// topic's partition, a receiver whose sender is gone (`changed()` fails at once).
    pub fn subscribe(&self, key: &PartitionKey) -> watch::Receiver<i64> {
        if let Some(entry) = self.read().get(key) {
            return entry.next.subscribe();
        }
        let mut partitions = self.write();
        if self.is_removed(key.topic_id) {
            return watch::channel(0).1;
        }
        partitions
            .entry(*key)
            .or_insert_with(|| Entry {
                state: Arc::default(),
                next: watch::Sender::new(0),
            })
            .next
            .subscribe()
    }

    /// Installs `state` unless the view holds a newer one (a higher head version). Runs
    /// below `merged` are dropped: they are in the manifest, readers never use them, and a
    /// trim's deletes past its first transaction may be skipped by the watch (they do not
    /// move the head), which would otherwise keep them here for good.
    pub fn install(&self, key: PartitionKey, mut state: PartitionState) {
        state.runs = state.runs.split_off(&state.head.merged);
        let next = state.head.next;
        let mut partitions = self.write();
        // Checked under the map's lock: `remove_topic` marks the topic, then clears it.
        if self.is_removed(key.topic_id) {
            return;
        }
        match partitions.get_mut(&key) {
            Some(entry) => {
                if entry.state.head_version > state.head_version && state.head_version > 0 {
                    return;
                }
                entry.state = Arc::new(state);
                entry.next.send_if_modified(|current| {
                    let changed = *current != next;
                    *current = next;
                    changed
                });
            }
            None => {
                partitions.insert(
                    key,
                    Entry {
                        state: Arc::new(state),
                        next: watch::Sender::new(next),
                    },
                );
            }
        }
    }

    /// Reads one partition from the store and installs it (after a failed compare, or
    /// when another writer, such as the merger, changed it).
    pub async fn refresh(&self, key: &PartitionKey) -> Result<Arc<PartitionState>, StoreError> {
        let state = self.store.load(key).await?.unwrap_or_default();
        self.install(*key, state);
        Ok(self.get(key))
    }

    /// Applies the watched changes of partition `key`; false if there were none (the
    /// partition must be read again).
    fn apply_watched(&self, key: &PartitionKey, events: &[super::store::DisklessEvent]) -> bool {
        let mut mine = events.iter().filter(|e| e.key == *key).peekable();
        if mine.peek().is_none() {
            return false;
        }
        let mut state = (*self.get(key)).clone();
        if state.apply_events(mine) {
            self.install(*key, state);
        } else {
            self.forget(key);
        }
        true
    }

    /// Forgets one partition (its head was deleted). Only a topic's deletion deletes a
    /// head, so the topic is marked removed: an append in flight for it must not create
    /// the head again (`is_removed`, checked by the appender's commit).
    fn forget(&self, key: &PartitionKey) {
        self.removed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.topic_id);
        self.write().remove(key);
    }

    /// Forgets a deleted topic's partitions.
    pub fn remove_topic(&self, topic_id: Uuid) {
        self.removed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic_id);
        self.write().retain(|k, _| k.topic_id != topic_id);
    }

    /// Loads everything; returns the store revision to watch from. Replaces the whole
    /// map: a partition deleted while the watch was down is dropped (kept only when this
    /// broker installed it after the load's revision, or it was never stored: a long
    /// poll's subscription).
    pub async fn load(&self) -> Result<i64, StoreError> {
        let (all, revision) = self.store.load_all_at().await?;
        let count = all.len();
        let loaded: std::collections::HashSet<PartitionKey> =
            all.iter().map(|(key, _)| *key).collect();
        for (key, state) in all {
            self.install(key, state);
        }
        self.write().retain(|key, entry| {
            loaded.contains(key)
                || entry.state.head_version == 0
                || (revision > 0 && entry.state.head_version as i64 > revision)
        });
        info!(partitions = count, "loaded diskless partitions");
        Ok(revision)
    }

    /// Follows the store's changes until `cancel` (see the module doc).
    pub async fn follow(self: Arc<Self>, mut revision: i64, cancel: CancellationToken) {
        loop {
            let watch = tokio::select! {
                _ = cancel.cancelled() => return,
                watch = self.store.watch(revision) => watch,
            };
            let mut watch = match watch {
                Ok(Some(watch)) => watch,
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "cannot watch diskless partitions; retrying");
                    if self.pause_and_reload(&cancel, &mut revision).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let change = tokio::select! {
                    _ = cancel.cancelled() => return,
                    change = watch.next_change() => change,
                };
                match change {
                    Ok(change) => {
                        for key in &change.partitions {
                            // This broker's own commits come back through the watch too.
                            if self.get(key).head_version >= change.revision as u64 {
                                continue;
                            }
                            if self.apply_watched(key, &change.events) {
                                continue;
                            }
                            if let Err(e) = self.refresh(key).await {
                                warn!(partition = %key, error = %e, "cannot reload a diskless partition");
                            }
                        }
                        revision = revision.max(change.revision);
                    }
                    Err(e) => {
                        warn!(error = %e, "the diskless watch ended; reloading");
                        break;
                    }
                }
            }
            if self.pause_and_reload(&cancel, &mut revision).await {
                return;
            }
        }
    }

    /// Waits a second, then reloads everything; true if cancelled meanwhile.
    async fn pause_and_reload(&self, cancel: &CancellationToken, revision: &mut i64) -> bool {
        tokio::select! {
            _ = cancel.cancelled() => return true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match self.load().await {
            Ok(at) => *revision = at,
            Err(e) => warn!(error = %e, "cannot reload diskless partitions"),
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diskless::store::EmbeddedDisklessStore;

    #[tokio::test]
    async fn a_deleted_topic_stays_forgotten_and_ends_long_polls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = DisklessView::new(Arc::new(EmbeddedDisklessStore::new(dir.path())));
        let key = PartitionKey {
            topic_id: Uuid::from_u128(5),
            partition: 0,
        };
        let mut state = PartitionState::default();
        state.head.next = 3;
        state.head_version = 1;
        view.install(key, state.clone());
        let mut waiting = view.subscribe(&key);
        view.remove_topic(key.topic_id);
        // A long poll waiting on it wakes with an error, at once, not at max_wait.
        assert!(waiting.changed().await.is_err());
        // Neither a new subscription, nor a late install or refresh brings it back.
        let mut late = view.subscribe(&key);
        assert!(late.changed().await.is_err());
        view.install(key, state);
        view.refresh(&key).await.expect("refresh");
        assert!(view.all().is_empty(), "{:?}", view.all());
        assert_eq!(view.get(&key).head.next, 0);
    }

    #[tokio::test]
    async fn installed_states_keep_no_runs_below_merged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = DisklessView::new(Arc::new(EmbeddedDisklessStore::new(dir.path())));
        let key = PartitionKey {
            topic_id: Uuid::from_u128(6),
            partition: 0,
        };
        let run = |base: i64, end: i64| crate::diskless::state::Run {
            key: "diskless/x".into(),
            size: 100,
            pos: 0,
            len: 10,
            base,
            end,
            max_ts: 0,
            at: 0,
            broker: 1,
            batches: 1,
            aborted: Vec::new(),
        };
        // A trim moved `merged` to 10, but the deletes of runs 0 and 5 were skipped by
        // the watch (they came in a transaction that did not move the head).
        let mut state = PartitionState::default();
        state.head.next = 15;
        state.head.merged = 10;
        state.head_version = 7;
        for (base, end) in [(0, 5), (5, 10), (10, 15)] {
            state.runs.insert(base, run(base, end));
        }
        view.install(key, state);
        let runs: Vec<i64> = view.get(&key).runs.keys().copied().collect();
        assert_eq!(runs, [10]);
    }
}
