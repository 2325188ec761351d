//! The topic registry: the topics this broker has open, by name and id, and how a
//! topic's partitions are opened (recovered) from their directories under
//! `<data_dir>/logs`, from the remote tier when the local disk is empty or behind.
//!
//! A [`Topic`] is an immutable snapshot; a change (config, partitions) replaces it as a
//! whole. The registry knows nothing of the metadata store: topic administration and
//! the metadata sync (`crate::broker`) decide what is open and call in here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::TopicRecord;
use crate::config::Config;
use crate::log::{Log, LogError};
use crate::partition::remote::RemoteTier;
use crate::partition::{Partition, isr};
use crate::sys::Clock;
use crate::tier::Tiering;
use crate::topic_config::{TopicConfig, TopicConfigError};

/// A topic: an immutable snapshot, replaced as a whole when its configuration or partition
/// count changes. Partitions are shared between snapshots.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    /// The local logs; empty for a diskless topic (see [`Topic::diskless`]).
    pub partitions: Vec<Arc<Partition>>,
    /// A diskless topic (`diskless.enable`) opens no `Partition`: its partitions live in
    /// the object store and the metadata store (`crate::diskless`), so `partition(i)` is
    /// `None` and a handler not taught about diskless answers UNKNOWN_TOPIC_OR_PARTITION.
    pub diskless: bool,
    pub config: TopicConfig,
    pub record: TopicRecord,
    /// The metadata store's version of `record` when this broker installed it, or a
    /// lower bound of it (0: unknown). A metadata round skips stored records of a lower
    /// version: they were read before this broker's own change was installed.
    pub store_version: u64,
}

impl Topic {
    /// The partition with this index, if the topic has it (negative indexes have none).
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.partitions.get(usize::try_from(index).ok()?)
    }

    /// How many partitions the topic has, diskless or not.
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.record.partitions.len()).unwrap_or(i32::MAX)
    }

    /// Whether partition `index` exists (for diskless topics, which open none).
    pub fn has_partition(&self, index: i32) -> bool {
        (0..self.partition_count()).contains(&index)
    }
}

pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Why a topic's partitions could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] TopicConfigError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("tiered storage: {0}")]
    Tiering(String),
}

/// What opening a topic knows of its partitions' manifest roots (tiered storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// Read them from the metadata store: one request for the whole topic.
    Read,
    /// It has none, so nothing is read: its id was created just now, or start-up's
    /// listing of the store ([`strata_tiering::ManifestStore::topics_with_roots`]) holds
    /// no key of it.
    Absent,
}

/// One partition's manifest root, read or to be read.
pub enum PartitionRoot {
    /// Read it (one request).
    Read,
    /// Already read with its topic's: `None` if the partition has none.
    Loaded(Option<(bytes::Bytes, u64)>),
}

/// The open topics. Lookups take a read lock for a map access; changes replace a topic's
/// snapshot.
pub struct Registry {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    logs_dir: PathBuf,
    /// Tiered storage; `None` only in unit tests that build a broker without it.
    tiering: Option<Arc<Tiering>>,
}

impl Registry {
    pub fn new(data_dir: &std::path::Path, tiering: Option<Arc<Tiering>>) -> Registry {
        Registry {
            topics: RwLock::new(HashMap::new()),
            logs_dir: data_dir.join("logs"),
            tiering,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    pub fn by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.read().values().find(|t| t.id == id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.read().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.get(topic)?.partition(index).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Adds `topic`, or replaces the snapshot of the topic with its name.
    pub(crate) fn insert(&self, topic: Arc<Topic>) {
        self.write().insert(topic.name.clone(), topic);
    }

    pub(crate) fn remove(&self, name: &str) -> Option<Arc<Topic>> {
        self.write().remove(name)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    /// `<name>.<id>`, the name cut to 200 bytes: a 249-character topic name plus the id
    /// would pass the 255-byte file name limit. The id alone makes the directory unique.
    pub fn topic_dir(&self, name: &str, id: Uuid) -> PathBuf {
        let short = &name[..name.len().min(200)];
        self.logs_dir.join(format!("{short}.{}", id.simple()))
    }

    /// Deletes log directories of topics the metadata store does not know (deleted while
    /// this broker was down).
    pub(crate) fn remove_unknown_logs(&self, known: &std::collections::HashSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(&self.logs_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !known.contains(&path) {
                warn!(dir = %path.display(), "removing logs of a topic the metadata store does not know");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    warn!(dir = %path.display(), error = %e, "could not remove orphaned logs");
                }
            }
        }
    }

    pub(crate) async fn open_partition(
        &self,
        broker: &Config,
        clock: &dyn Clock,
        record: &TopicRecord,
        config: &TopicConfig,
        index: usize,
        root: PartitionRoot,
    ) -> Result<Partition, OpenError> {
        let dir = self
            .topic_dir(&record.name, record.id)
            .join(index.to_string());
        let remote = match &self.tiering {
            Some(tiering) => {
                let id = strata_tiering::PartitionId {
                    topic: record.name.clone(),
                    topic_id: record.id,
                    partition: index as i32,
                };
                let opened = match root {
                    PartitionRoot::Read => tiering.open_remote_log(id).await,
                    PartitionRoot::Loaded(loaded) => tiering.remote_log_from(id, loaded),
                };
                Some(opened.map_err(|e| OpenError::Tiering(e.to_string()))?)
            }
            None => None,
        };
        // After an empty-disk restart the local log starts where the remote tier ends.
        let remote_end = remote.as_ref().and_then(|r| r.marks().end_offset);
        let now = clock.now_ms();
        let existed = dir.exists();
        if let Some(remote) = &remote
            && remote_end.is_some()
            && !existed
        {
            // An empty disk: the log will start at the remote end.
            restore_producers(remote, &dir).await?;
        }
        // A directory that exists opens from what it holds (a log without segment files at
        // its checkpoint's start, or 0), never at the remote end: if that is behind the
        // remote end, the branch below restarts it there with the producers restored.
        let start = if existed { 0 } else { remote_end.unwrap_or(0) };
        let mut log = Log::open_at(&dir, config.log_config(), now, start)?;
        if let Some(end) = remote_end
            && log.log_end_offset() < end
        {
            // The local log lost data the bucket has (a replaced or restored disk):
            // offsets must stay dense, so the local log restarts at the remote end.
            warn!(topic = %record.name, partition = index, local_end = log.log_end_offset(),
                remote_end = end, "local log is behind the remote tier; restarting it at the remote end");
            drop(log);
            let io = |source| LogError::Io {
                dir: dir.clone(),
                source,
            };
            std::fs::remove_dir_all(&dir).map_err(io)?;
            if let Some(remote) = &remote {
                restore_producers(remote, &dir).await?;
            }
            log = Log::open_at(&dir, config.log_config(), now, end)?;
        }
        let mut replica = isr::ReplicaState::solo(broker.node_id, -1, 0);
        replica.role = isr::Role::None;
        replica.leader = -1;
        if let Some(p) = record.partitions.get(index) {
            let transition = replica.apply(p, log.log_end_offset(), now);
            if transition == isr::Transition::BecameLeader {
                log.assign_epoch(p.leader_epoch, log.log_end_offset())?;
            }
        }
        Ok(Partition::new(
            record.name.clone(),
            index as i32,
            log,
            replica,
            remote
                .zip(self.tiering.as_ref())
                .map(|(log, tiering)| RemoteTier {
                    log,
                    reader: tiering.reader(),
                }),
        ))
    }

    pub(crate) async fn open_topic(
        &self,
        broker: &Config,
        clock: &dyn Clock,
        record: TopicRecord,
        roots: Roots,
    ) -> Result<Topic, OpenError> {
        let config = TopicConfig::resolve(&record.configs, broker)?;
        let diskless = config.diskless();
        let local = if diskless { 0 } else { record.partitions.len() };
        let mut loaded = match (&self.tiering, roots) {
            (Some(tiering), Roots::Read) if local > 0 => {
                let loaded = tiering
                    .manifests
                    .load_topic(
                        &record.name,
                        record.id,
                        i32::try_from(local).unwrap_or(i32::MAX),
                    )
                    .await
                    .map_err(|e| OpenError::Tiering(e.to_string()))?;
                // One entry per partition, or a partition would open without its root.
                if loaded.len() != local {
                    return Err(OpenError::Tiering(format!(
                        "the manifest store answered {} partitions' roots for topic {}, which has {local}",
                        loaded.len(),
                        record.name
                    )));
                }
                loaded
            }
            _ => Vec::new(),
        }
        .into_iter();
        let mut partitions = Vec::with_capacity(local);
        for i in 0..local {
            // Absent roots (or no tiering): every partition opens without one.
            let root = PartitionRoot::Loaded(loaded.next().flatten());
            partitions.push(Arc::new(
                self.open_partition(broker, clock, &record, &config, i, root)
                    .await?,
            ));
        }
        Ok(Topic {
            name: record.name.clone(),
            id: record.id,
            partitions,
            diskless,
            config,
            record,
            store_version: 0,
        })
    }
}

/// Writes the remote tier's producer snapshot (as of the remote end, from the last remote
/// segment) into a partition directory about to be opened at the remote end, so
/// idempotent producers' retries of batches the bucket holds are still recognised.
async fn restore_producers(
    remote: &strata_tiering::RemoteLog,
    dir: &std::path::Path,
) -> Result<(), LogError> {
    let io = |source| LogError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    match remote.producer_snapshot().await {
        Ok(Some(snapshot)) => {
            std::fs::create_dir_all(dir).map_err(io)?;
            crate::log::write_atomically(&dir.join(crate::log::PRODUCERS_FILE), &snapshot)
                .map_err(io)?;
            info!(partition = %remote.id, "restored idempotent producer state from the bucket");
        }
        Ok(None) => {}
        Err(e) => warn!(partition = %remote.id, error = %e,
            "cannot read the producer snapshot from the bucket; idempotent producers start over"),
    }
    Ok(())
}
