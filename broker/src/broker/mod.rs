//! The broker's state: topics and their partitions, kept in step with the metadata store.
//!
//! Admin changes (create, delete, alter, add partitions) are serialised by `admin` and go
//! to the metadata store first; the in-memory map and the local logs follow once the
//! store accepted the change. At start-up the store is the truth: logs of topics it does
//! not know are removed.

mod sync;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::{BrokerInfo, MetadataStore, PartitionRecord, StoreError, TopicRecord};
use crate::config::{Config, MetadataUrl};
use crate::log::LogError;
use crate::partition::Partition;
use crate::registry::{OpenError, Registry, Topic, valid_topic_name};
use crate::telemetry::Metrics;
use crate::tier::Tiering;
use crate::topic_config::{TopicConfig, TopicConfigError};

/// Time comes in through this trait so tests can control it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name `{0}`: use 1-249 of [a-zA-Z0-9._-], not `.` or `..`")]
    InvalidTopicName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error(transparent)]
    InvalidConfig(#[from] TopicConfigError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("tiered storage: {0}")]
    Tiering(String),
    #[error(
        "`{0}` is an internal topic: it cannot be created, deleted or repartitioned by clients"
    )]
    Internal(String),
    /// A limit the operator set (or its default) refuses the request.
    #[error("{0}")]
    PolicyViolation(String),
}

impl From<OpenError> for AdminError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Config(e) => AdminError::InvalidConfig(e),
            OpenError::Log(e) => AdminError::Log(e),
            OpenError::Tiering(e) => AdminError::Tiering(e),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(name) => AdminError::TopicExists(name),
            StoreError::NotFound(name) => AdminError::UnknownTopic(name),
            other => AdminError::Store(other),
        }
    }
}

/// Partitions whose periodic flush and retention run at the same time.
const HOUSEKEEPING_CONCURRENCY: usize = 16;

pub struct Broker {
    pub config: Config,
    pub cluster_id: String,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Cancelled at shutdown; long polls end early on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub(crate) store: Arc<dyn MetadataStore>,
    /// The brokers, controller and drains as last read from the metadata store.
    pub(crate) cluster: RwLock<Arc<crate::cluster::ClusterView>>,
    /// Tiered storage; `None` only in unit tests that build a broker without it.
    pub tiering: Option<Arc<Tiering>>,
    /// Set by housekeeping while the data disk is past `disk_high_watermark_percent`.
    pub disk_full: AtomicBool,
    /// Produce bytes accepted since the disk was last looked at, and how many may come
    /// before produce looks again (a quarter of the headroom then left): a burst cannot
    /// outrun the housekeeping ticker from below the mark to a full disk.
    disk_appended_since_check: AtomicU64,
    disk_recheck_bytes: AtomicU64,
    /// The open topics.
    pub topics: Registry,
    /// A tokio mutex: held across metadata store calls so admin changes apply in order.
    pub(crate) admin: tokio::sync::Mutex<()>,
    /// Producer ids reserved in the metadata store and not yet handed out: [next, end).
    /// A tokio mutex: held across the store call that reserves the next block.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// Consumer groups and committed offsets.
    pub groups: crate::group::Coordinator,
    /// When the controller last moved leaders back to preferred replicas.
    pub(crate) last_rebalance_ms: std::sync::atomic::AtomicI64,
    /// The last metadata read in full, reused while the store's revision stands still.
    pub(crate) metadata_snapshot: std::sync::Mutex<Option<sync::MetadataSnapshot>>,
    /// An exclusive lock on `<data_dir>/.lock`, held for the broker's lifetime so two
    /// processes never share a data directory.
    _data_dir_lock: std::fs::File,
}

fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create the data directory {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!(
                "another strata process is using the data directory {}",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("lock {}", path.display()))
        }
    }
}

/// The data directory remembers which cluster it belongs to (`cluster.id`). A metadata
/// store that names another cluster (a wrong etcd prefix, an emptied or replaced store)
/// would otherwise make start-up treat every local log as belonging to deleted topics.
fn check_cluster_id(
    data_dir: &std::path::Path,
    cluster_id: &str,
    metadata: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = data_dir.join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(stored) if stored.trim() == cluster_id => Ok(()),
        Ok(stored) => anyhow::bail!(
            "the data directory {} belongs to cluster {} but the metadata store ({metadata}) is cluster {cluster_id}; \
             refusing to start rather than treat its logs as deleted topics. Check the metadata setting; if the data \
             directory really is to be reused for a new cluster, remove it.",
            data_dir.display(),
            stored.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::log::write_atomically(&path, cluster_id.as_bytes())
                .with_context(|| format!("write {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

impl Broker {
    /// Loads topics from the store and opens (recovers) every local log.
    pub async fn open(
        config: Config,
        store: Arc<dyn MetadataStore>,
        tiering: Option<Arc<Tiering>>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Arc<Broker>> {
        use anyhow::Context;
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let cluster_id = store.cluster_id().await.context("read the cluster id")?;
        check_cluster_id(&config.data_dir, &cluster_id, &config.metadata)?;
        let (advertised_host, advertised_port) = config.advertised()?;
        let groups = crate::group::Coordinator::new(&config);
        let topics = Registry::new(&config.data_dir, tiering.clone());
        let broker = Arc::new(Broker {
            config,
            cluster_id,
            advertised_host,
            advertised_port,
            metrics,
            clock,
            shutdown,
            store,
            cluster: RwLock::new(Arc::new(crate::cluster::ClusterView::default())),
            tiering,
            disk_full: AtomicBool::new(false),
            disk_appended_since_check: AtomicU64::new(0),
            // Until the first look at the disk, every produce looks.
            disk_recheck_bytes: AtomicU64::new(0),
            topics,
            admin: tokio::sync::Mutex::new(()),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            groups,
            last_rebalance_ms: std::sync::atomic::AtomicI64::new(0),
            metadata_snapshot: std::sync::Mutex::new(None),
            _data_dir_lock: data_dir_lock,
        });
        let records = broker.store.list_topics().await.context("list topics")?;
        let started = std::time::Instant::now();
        let mut known_dirs = std::collections::HashSet::new();
        for record in records {
            known_dirs.insert(broker.topics.topic_dir(&record.name, record.id));
            let topic = broker
                .open_topic(record)
                .await
                .with_context(|| "open a topic's logs".to_string())?;
            broker.topics.insert(Arc::new(topic));
        }
        broker.topics.remove_unknown_logs(&known_dirs);
        broker
            .groups
            .load(&broker)
            .context("load consumer groups from the offsets topic")?;
        info!(
            topics = broker.topics.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "logs recovered"
        );
        Ok(broker)
    }

    /// Opens (recovers) a topic's partitions; the caller adds it to the registry.
    pub(crate) async fn open_topic(&self, record: TopicRecord) -> Result<Topic, AdminError> {
        let now = self.clock.now_ms();
        Ok(self.topics.open_topic(&self.config, now, record).await?)
    }

    /// Opens (recovers) partition `index` of a topic, for a topic that grew.
    pub(crate) async fn open_partition(
        &self,
        record: &TopicRecord,
        config: &TopicConfig,
        index: usize,
    ) -> Result<Partition, AdminError> {
        let now = self.clock.now_ms();
        Ok(self
            .topics
            .open_partition(&self.config, now, record, config, index)
            .await?)
    }

    /// Returns the topic, creating it with defaults when auto-creation is on.
    pub async fn get_or_auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>, AdminError> {
        if let Some(topic) = self.topics.get(name) {
            return Ok(Some(topic));
        }
        if crate::group::is_internal(name) {
            return self.create_offsets_topic().await.map(Some);
        }
        if !self.config.auto_create_topics || !valid_topic_name(name) {
            return Ok(None);
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Ok(topic) => {
                info!(topic = name, "auto-created topic");
                Ok(Some(topic))
            }
            Err(AdminError::TopicExists(_)) => Ok(self.open_stored_topic(name).await),
            Err(e) => Err(e),
        }
    }

    /// CreateTopics and auto-creation. `__consumer_offsets` is created only by the group
    /// coordinator, with its own configuration: a client asking for it gets that topic.
    pub async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, AdminError> {
        if crate::group::is_internal(name) {
            return Err(AdminError::Internal(name.to_string()));
        }
        crate::topic_config::check_floors(&configs, &self.config)?;
        self.create_any_topic(
            name,
            num_partitions,
            replication_factor,
            configs,
            validate_only,
        )
        .await
    }

    async fn create_any_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, AdminError> {
        if !valid_topic_name(name) {
            return Err(AdminError::InvalidTopicName(name.to_string()));
        }
        let partitions = if num_partitions == -1 {
            self.config.num_partitions
        } else {
            num_partitions
        };
        if !(1..=100_000).contains(&partitions) {
            return Err(AdminError::InvalidPartitions(format!(
                "number of partitions must be between 1 and 100000, got {partitions}"
            )));
        }
        let factor = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        let config = TopicConfig::resolve(&configs, &self.config)?;
        let assignment = self.place(name, partitions as usize, factor, 0).await?;
        let _admin = self.admin.lock().await;
        if self.topics.get(name).is_some() {
            return Err(AdminError::TopicExists(name.to_string()));
        }
        // The group coordinator's own topic is never refused: groups depend on it.
        if !crate::group::is_internal(name) {
            self.check_partition_limit(partitions as u64).await?;
        }
        let record = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions: assignment.into_iter().map(PartitionRecord::new).collect(),
            configs,
        };
        if validate_only {
            let partitions = Vec::new();
            return Ok(Arc::new(Topic {
                name: record.name.clone(),
                id: record.id,
                partitions,
                config,
                record,
            }));
        }
        // Logs first, then the store: a topic the store knows always has openable logs.
        // If the store refuses, the new directories go; if we crash in between, start-up
        // removes them as logs of an unknown topic.
        let id = record.id;
        let topic = match self.open_topic(record).await {
            Ok(topic) => Arc::new(topic),
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.topics.topic_dir(name, id));
                return Err(e);
            }
        };
        if let Err(e) = self.store.create_topic(&topic.record).await {
            // A timeout may hide a create that did commit: look before undoing.
            let committed = matches!(e, StoreError::Unavailable(_))
                && self
                    .store
                    .list_topics()
                    .await
                    .is_ok_and(|all| all.iter().any(|t| t.id == topic.id));
            if committed {
                self.topics.insert(topic.clone());
                info!(
                    topic = name,
                    partitions, "created topic (confirmed after a store timeout)"
                );
                return Ok(topic);
            }
            for partition in &topic.partitions {
                let _ = partition.delete_files();
            }
            let _ = std::fs::remove_dir(self.topics.topic_dir(name, topic.id));
            return Err(e.into());
        }
        self.topics.insert(topic.clone());
        info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Creates `__consumer_offsets` (first use of a group): compacted, never tiered.
    pub async fn create_offsets_topic(&self) -> Result<Arc<Topic>, AdminError> {
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.offsets_topic_segment_bytes.to_string(),
            ),
            ("remote.storage.enable".to_string(), "false".to_string()),
        ]);
        let name = crate::group::OFFSETS_TOPIC;
        match self
            .create_any_topic(
                name,
                self.config.offsets_topic_partitions,
                self.offsets_replication_factor().await?,
                configs,
                false,
            )
            .await
        {
            Ok(topic) => Ok(topic),
            Err(AdminError::TopicExists(_)) => self
                .open_stored_topic(name)
                .await
                .ok_or_else(|| AdminError::UnknownTopic(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Changes a topic's stored record by compare-and-swap, retrying on conflicts (the
    /// controller and partition leaders change the same record). Returns what was stored;
    /// an edit that changes nothing writes nothing.
    pub(crate) async fn edit_stored_topic(
        &self,
        name: &str,
        mut edit: impl FnMut(&mut TopicRecord) -> Result<(), AdminError>,
    ) -> Result<TopicRecord, AdminError> {
        for _ in 0..32 {
            let (mut record, version) = self
                .store
                .get_topic_versioned(name)
                .await?
                .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
            let before = record.clone();
            edit(&mut record)?;
            if record == before || self.store.update_topic_if(&record, version).await? {
                return Ok(record.normalize());
            }
        }
        Err(AdminError::Store(StoreError::Unavailable(format!(
            "topic {name} kept changing while being edited"
        ))))
    }

    /// `offsets_topic_replication_factor`. With one broker (embedded metadata) it is 1;
    /// in a cluster, as in Kafka, the topic is not created (so group coordination is not
    /// available) until that many brokers are live, rather than created with fewer
    /// replicas for good because the first group arrived while brokers were starting.
    async fn offsets_replication_factor(&self) -> Result<i16, AdminError> {
        let wanted = self.config.offsets_topic_replication_factor.max(1);
        if !matches!(self.config.metadata_url(), Ok(MetadataUrl::Etcd { .. })) {
            return Ok(1);
        }
        let live = self.placement_targets().await.len();
        if live < wanted as usize {
            return Err(AdminError::InvalidReplicationFactor(format!(
                "{live} brokers are live and not draining; __consumer_offsets needs \
                 offsets_topic_replication_factor = {wanted}: group coordination waits for them"
            )));
        }
        Ok(wanted)
    }

    /// Live brokers that are not draining, as the store has them now: placement is rare,
    /// and the cached view can be a refresh interval old (missing a broker that just
    /// joined or was undrained, or still offering one just marked for draining). The
    /// cached view serves only when the store cannot answer.
    async fn placement_targets(&self) -> Vec<BrokerInfo> {
        fn eligible(brokers: &[BrokerInfo], draining: impl Fn(i32) -> bool) -> Vec<BrokerInfo> {
            brokers
                .iter()
                .filter(|b| !draining(b.node_id))
                .cloned()
                .collect()
        }
        let mut targets = match (self.store.live_brokers().await, self.store.draining().await) {
            (Ok(brokers), Ok(draining)) => eligible(&brokers, |id| draining.contains(&id)),
            _ => {
                let view = self.cluster_view();
                eligible(&view.brokers, |id| view.draining.contains(&id))
            }
        };
        if targets.is_empty() {
            // Before the first registration: this broker alone.
            targets.push(self.own_info());
        }
        targets
    }

    /// Refuses `adding` partitions that would take the cluster past `max_partitions`,
    /// counted in the metadata store (so every broker sees the same total). Called under
    /// the admin lock; brokers creating at the same moment may together pass the limit
    /// by one request's partitions, which `max_partitions_per_request` bounds.
    async fn check_partition_limit(&self, adding: u64) -> Result<(), AdminError> {
        let budget = crate::sys::FdBudget::current()
            .unwrap_or_else(|_| crate::sys::FdBudget::for_limit(1024));
        let limit = self.config.partition_limit(&budget);
        let existing: u64 = self
            .store
            .list_topics()
            .await?
            .iter()
            .map(|t| t.partitions.len() as u64)
            .sum();
        if existing + adding > limit {
            return Err(AdminError::PolicyViolation(format!(
                "the cluster has {existing} partitions; {adding} more would pass its limit of {limit} (broker setting max_partitions)"
            )));
        }
        Ok(())
    }

    /// Replicas for new partitions `first..first + count` of topic `name`, over the live
    /// brokers that are not draining.
    async fn place(
        &self,
        name: &str,
        count: usize,
        factor: i16,
        first: usize,
    ) -> Result<Vec<Vec<i32>>, AdminError> {
        let factor = factor.max(1) as usize;
        let targets = self.placement_targets().await;
        let start = name
            .bytes()
            .fold(first, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        crate::cluster::placement::assign(&targets, count, factor, start)
            .map_err(AdminError::InvalidReplicationFactor)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, AdminError> {
        if crate::group::is_internal(name) {
            return Err(AdminError::Internal(name.to_string()));
        }
        let _admin = self.admin.lock().await;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        self.store.delete_topic(name).await?;
        self.topics.remove(name);
        for partition in &topic.partitions {
            if let Err(e) = partition.delete_files() {
                warn!(topic = name, partition = partition.index, error = %e, "could not remove a deleted topic's log");
            }
        }
        let _ = std::fs::remove_dir(self.topics.topic_dir(name, topic.id));
        crate::tier::delete_remote(topic.partitions.clone());
        self.metrics
            .forget_topic(name, topic.partitions.len() as i32);
        info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        if crate::group::is_internal(name) {
            return Err(AdminError::Internal(name.to_string()));
        }
        let _admin = self.admin.lock().await;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(AdminError::InvalidPartitions(format!(
                "topic has {current} partitions; the new count {count} must be larger"
            )));
        }
        if count > 100_000 {
            return Err(AdminError::InvalidPartitions(format!(
                "{count} partitions is more than 100000"
            )));
        }
        self.check_partition_limit((count - current) as u64).await?;
        if validate_only {
            return Ok(());
        }
        let mut record = topic.record.clone();
        let factor = record.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
        let assignment = self
            .place(name, (count - current) as usize, factor, current as usize)
            .await?;
        record
            .partitions
            .extend(assignment.into_iter().map(PartitionRecord::new));
        // Logs first, then the store (as in create_topic).
        let mut added = Vec::new();
        for index in current as usize..count as usize {
            match self.open_partition(&record, &topic.config, index).await {
                Ok(partition) => added.push(Arc::new(partition)),
                Err(e) => {
                    added
                        .iter()
                        .for_each(|p: &Arc<Partition>| drop(p.delete_files()));
                    return Err(e);
                }
            }
        }
        let extension = record.partitions[current as usize..].to_vec();
        let stored = self
            .edit_stored_topic(name, |stored| {
                if stored.partitions.len() != current as usize {
                    return Err(AdminError::InvalidPartitions(
                        "the partition count changed meanwhile; retry".into(),
                    ));
                }
                stored.partitions.extend(extension.iter().cloned());
                Ok(())
            })
            .await;
        let record = match stored {
            Ok(record) => record,
            Err(e) => {
                added.iter().for_each(|p| drop(p.delete_files()));
                return Err(e);
            }
        };
        let mut partitions = topic.partitions.clone();
        partitions.extend(added);
        let next = Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            config: topic.config.clone(),
            record,
        };
        self.topics.insert(Arc::new(next));
        info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Changes a topic's config overrides: `edit` gets the current overrides and returns
    /// the new full set (AlterConfigs replaces them, IncrementalAlterConfigs edits them).
    /// Runs under the admin lock, so concurrent edits do not lose each other's changes.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        edit: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        let configs = edit(&topic.record.configs)?;
        // Only what this request changes must respect the floors: a value stored before an
        // operator raised them does not block every other change to the topic.
        let changed: BTreeMap<String, String> = configs
            .iter()
            .filter(|(name, value)| topic.record.configs.get(*name) != Some(*value))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        crate::topic_config::check_floors(&changed, &self.config)?;
        let config = TopicConfig::resolve(&configs, &self.config)?;
        if validate_only {
            return Ok(());
        }
        let record = self
            .edit_stored_topic(name, |stored| {
                stored.configs = configs.clone();
                Ok(())
            })
            .await?;
        let log_config = config.log_config();
        for partition in &topic.partitions {
            partition.set_config(log_config.clone());
        }
        let next = Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            config,
            record,
        };
        self.topics.insert(Arc::new(next));
        info!(topic = name, "altered topic configs");
        Ok(())
    }

    /// One pass of periodic log work over every partition; updates log gauges.
    /// One pass of periodic log work over every partition; updates log gauges. Up to
    /// [`HOUSEKEEPING_CONCURRENCY`] partitions are worked on at once, so the fsyncs of a
    /// busy broker overlap instead of adding up (flush.ms stays close to its promise).
    pub async fn housekeeping(&self, force_flush: bool) {
        use futures::StreamExt;
        let now = self.clock.now_ms();
        self.check_disk();
        self.report_open_files();
        let partitions: Vec<Arc<Partition>> = self
            .topics
            .all()
            .iter()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect();
        futures::stream::iter(partitions)
            .for_each_concurrent(HOUSEKEEPING_CONCURRENCY, |partition| async move {
                let expiration = self.config.producer_id_expiration_ms;
                match partition.housekeeping(now, force_flush, expiration).await {
                    Ok(outcome) if outcome.segments > 0 => {
                        info!(topic = %partition.topic, partition = partition.index, segments = outcome.segments,
                            bytes = outcome.bytes, "retention deleted segments");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(topic = %partition.topic, partition = partition.index, error = %e, "log housekeeping failed")
                    }
                }
                if partition.is_deleted() {
                    return; // its series went with the topic
                }
                let (size, segments, end, start) = partition.stats();
                let labels = [partition.topic.as_str(), &partition.index.to_string()];
                self.metrics.log_size.with_label_values(&labels).set(size as i64);
                self.metrics.log_segments.with_label_values(&labels).set(segments as i64);
                self.metrics.log_end_offset.with_label_values(&labels).set(end);
                self.metrics
                    .log_start_offset
                    .with_label_values(&labels)
                    .set(partition.watermarks().log_start_offset);
                self.metrics.local_log_start_offset.with_label_values(&labels).set(start);
                if let Some(remote) = partition.remote() {
                    let marks = remote.marks();
                    let m = &self.metrics;
                    m.remote_log_start_offset.with_label_values(&labels).set(marks.log_start_offset);
                    m.remote_log_end_offset
                        .with_label_values(&labels)
                        .set(marks.end_offset.unwrap_or(marks.log_start_offset));
                    m.remote_segments.with_label_values(&labels).set(marks.live_segments as i64);
                    m.remote_bytes.with_label_values(&labels).set(marks.live_bytes as i64);
                }
            })
            .await;
    }

    /// One log-cleaner round: a compaction pass for each compacted partition that is due,
    /// one partition at a time; for tiered partitions the remote tier follows each pass.
    pub async fn clean_logs(&self) {
        let max_keys = (self.config.log_cleaner_dedupe_buffer_bytes as usize)
            / crate::log::cleaner::BYTES_PER_KEY;
        for topic in self.topics.all() {
            if !topic.config.log_config().compact {
                continue;
            }
            let name = topic.name.as_str();
            for partition in &topic.partitions {
                if self.shutdown.is_cancelled() {
                    return;
                }
                // A tiered partition is compacted by its leader, in both tiers; its
                // followers drop what the bucket holds instead.
                if topic.config.log_config().remote_storage && !partition.is_leader() {
                    continue;
                }
                let now = self.clock.now_ms();
                let started = std::time::Instant::now();
                let before_bytes = partition.stats().0;
                let tiering = self.tiering.as_ref().filter(|_| {
                    partition
                        .remote()
                        .is_some_and(|r| r.marks().end_offset.is_some())
                });
                let remote_part = async |map| {
                    let Some(tiering) = tiering else { return true };
                    match crate::tier::compact_remote(tiering, partition, map, now).await {
                        Ok((rewritten, 0)) => {
                            if rewritten > 0 {
                                info!(
                                    topic = name,
                                    partition = partition.index,
                                    segments = rewritten,
                                    "compacted remote segments"
                                );
                            }
                            true
                        }
                        Ok((_, stale)) => {
                            info!(
                                topic = name,
                                partition = partition.index,
                                stale,
                                "remote segments changed during compaction; the pass runs again"
                            );
                            false
                        }
                        Err(e) => {
                            self.cleaner_failed(name, partition, "remote compaction", &e);
                            false
                        }
                    }
                };
                let removed = match partition.clean(now, max_keys, remote_part).await {
                    Ok(Some(removed)) => removed,
                    Ok(None) => continue,
                    Err(e) => {
                        self.cleaner_failed(name, partition, "compaction", &e);
                        continue;
                    }
                };
                self.metrics.cleaner_runs.with_label_values(&[name]).inc();
                self.metrics
                    .cleaner_bytes_removed
                    .with_label_values(&[name])
                    .inc_by(removed);
                info!(
                    topic = name,
                    partition = partition.index,
                    before_bytes,
                    removed_bytes = removed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compacted"
                );
            }
        }
    }

    fn cleaner_failed(
        &self,
        topic: &str,
        partition: &Partition,
        what: &str,
        error: &dyn std::fmt::Display,
    ) {
        self.metrics
            .cleaner_errors
            .with_label_values(&[topic])
            .inc();
        warn!(topic, partition = partition.index, %error, "{what} failed; retrying at the next round");
    }

    /// A producer id never handed out before (InitProducerId).
    pub async fn next_producer_id(&self) -> Result<i64, StoreError> {
        const BLOCK: i64 = 1000;
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let first = self.store.allocate_producer_ids(BLOCK).await?;
            *ids = (first, first + BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Whether a produce of `incoming_bytes` must be refused for a full disk. While
    /// refusing, every call looks at the disk again (one statvfs), so produce resumes as
    /// soon as space is freed rather than at the next housekeeping pass; while accepting,
    /// a call looks again once the bytes accepted since the last look may have used a
    /// quarter of the headroom.
    pub fn disk_is_full(&self, incoming_bytes: u64) -> bool {
        let since = self
            .disk_appended_since_check
            .fetch_add(incoming_bytes, Ordering::Relaxed)
            .saturating_add(incoming_bytes);
        if self.disk_full.load(Ordering::Relaxed)
            || since >= self.disk_recheck_bytes.load(Ordering::Relaxed)
        {
            self.check_disk();
        }
        self.disk_full.load(Ordering::Relaxed)
    }

    /// Updates `disk_full` from the data directory's file system usage.
    /// Descriptors in use, for the gauges an operator compares with the limit.
    fn report_open_files(&self) {
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.metrics.open_files.set(entries.count() as i64);
        }
        self.metrics
            .open_segment_files
            .set(crate::log::files::open_count() as i64);
    }

    fn check_disk(&self) {
        match crate::sys::disk_usage(&self.config.data_dir) {
            Ok(usage) => {
                let used = usage.used_percent;
                self.metrics.disk_used_percent.set(used as i64);
                let limit = self.config.disk_high_watermark_percent;
                let full = limit < 100 && used >= limit as f64;
                let headroom = ((limit as f64 - used).max(0.0) / 100.0) * usage.size_bytes as f64;
                self.disk_recheck_bytes
                    .store(((headroom / 4.0) as u64).max(64 << 10), Ordering::Relaxed);
                self.disk_appended_since_check.store(0, Ordering::Relaxed);
                if full != self.disk_full.swap(full, Ordering::Relaxed) {
                    if full {
                        warn!(
                            used_percent = used,
                            limit,
                            "data disk past its high-water mark: refusing produce until space is freed"
                        );
                    } else {
                        info!(
                            used_percent = used,
                            "data disk below its high-water mark: accepting produce again"
                        );
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot read the data disk's usage"),
        }
    }

    pub fn housekeeping_interval(&self) -> Duration {
        Duration::from_millis(self.config.log_housekeeping_interval_ms as u64)
    }
}

impl crate::group::GroupHost for Broker {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        &self.shutdown
    }

    fn topics(&self) -> &Registry {
        &self.topics
    }

    async fn create_offsets_topic(&self) -> Result<Arc<Topic>, String> {
        Broker::create_offsets_topic(self)
            .await
            .map_err(|e| e.to_string())
    }
}

impl crate::tier::TierHost for Broker {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        &self.shutdown
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn tiering(&self) -> Option<&Arc<Tiering>> {
        self.tiering.as_ref()
    }

    fn partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .all()
            .iter()
            .flat_map(|topic| topic.partitions.iter().cloned())
            .collect()
    }

    fn topic_exists(&self, id: Uuid) -> bool {
        self.topics.by_id(id).is_some()
    }

    fn is_controller(&self) -> bool {
        Broker::is_controller(self)
    }
}

impl crate::replication::ReplicaHost for Broker {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        &self.shutdown
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn partitions_with_topic_ids(&self) -> Vec<(Uuid, Arc<Partition>)> {
        self.topics
            .all()
            .iter()
            .flat_map(|topic| topic.partitions.iter().map(|p| (topic.id, p.clone())))
            .collect()
    }

    fn partition_by_topic_id(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.topics.by_id(topic_id)?.partition(index).cloned()
    }

    fn replication_address(&self, node_id: i32) -> Option<String> {
        self.broker_info(node_id).map(|info| info.replication)
    }
}
