//! The broker: what one process holds, and the narrow handles the layers below get.
//!
//! One module per responsibility: [`crate::registry`] holds the open topics; here,
//! `topic_admin` changes them (create, delete, alter, placement), `membership` keeps this
//! broker in the cluster and in step with the metadata store (session, metadata rounds,
//! leadership and ISR changes), `housekeeping` runs the flush, retention and cleaner
//! rounds and watches the disk, and `producer_ids` hands out producer ids. The group
//! coordinator, the tiering loops and replication see the broker only through
//! [`crate::group::GroupHost`], [`crate::tier::TierHost`] and
//! [`crate::replication::ReplicaHost`].
//!
//! At start-up the metadata store is the truth: logs of topics it does not know are
//! removed.

pub mod cost_ledger;
pub mod dynamic_config;
mod housekeeping;
mod liveness;
mod membership;
mod placement_admin;
mod producer_ids;
mod roll;
mod topic_admin;
mod transactions;

pub use crate::sys::{Clock, SystemClock};
pub use placement_admin::{Ongoing, Outcome as PlacementOutcome, PlacementError};
pub use topic_admin::{AdminError, NewTopic};

use std::sync::Arc;

use tracing::info;
use uuid::Uuid;

use crate::cluster::{MetadataStore, TopicRecord};
use crate::config::Config;
use crate::partition::remote::RemoteReadError;
use crate::partition::{Partition, PartitionError};
use crate::registry::{PartitionRoot, Registry, Roots, Topic};
use crate::telemetry::Metrics;
use crate::tier::Tiering;
use crate::topic_config::TopicConfig;

pub struct Broker {
    /// The static settings (file, environment, flags). Settings that may change at run
    /// time are read from [`Broker::effective_config`].
    pub config: Config,
    /// Dynamic broker configs and the configuration they make.
    dynamic_configs: dynamic_config::DynamicConfigs,
    /// The throttle on reassignment catch-up; its rates follow the dynamic configs.
    replication_throttle: crate::replication::throttle::ReplicationThrottle,
    pub cluster_id: String,
    pub advertised_host: String,
    pub advertised_port: i32,
    /// The Kafka listeners (`listeners`, or `listen` as one PLAINTEXT listener).
    pub listeners: Vec<crate::config::Listener>,
    /// Credentials, SASL settings and the authorizer.
    pub security: Arc<crate::security::Security>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Cancelled at shutdown; long polls end early on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub(crate) store: Arc<dyn MetadataStore>,
    /// This broker's view of the cluster, kept by the membership loop.
    membership: membership::Membership,
    /// Tiered storage; `None` only in unit tests that build a broker without it.
    pub tiering: Option<Arc<Tiering>>,
    /// Diskless partitions (view, appender, write cache); `None` without tiering.
    pub diskless: Option<Arc<crate::diskless::Diskless>>,
    /// The data disk as housekeeping last saw it.
    disk: housekeeping::DiskWatch,
    /// The open topics.
    pub topics: Registry,
    /// A tokio mutex: held across metadata store calls so admin changes apply in order.
    pub(crate) admin: tokio::sync::Mutex<()>,
    /// Producer ids reserved in the metadata store and not yet handed out: [next, end).
    /// A tokio mutex: held across the store call that reserves the next block.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// Consumer groups and committed offsets.
    pub groups: crate::group::Coordinator,
    /// Transactional ids and their transactions.
    pub txns: crate::txn::TxnCoordinator,
    /// Channels to other brokers for transaction markers.
    marker_clients: transactions::MarkerClients,
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
        // Without an etcd connection to share, only an embedded metadata store has one.
        let diskless = match config.metadata_url()? {
            crate::config::MetadataUrl::Embedded(_) => {
                Some(crate::diskless::store::open(&config, None)?)
            }
            crate::config::MetadataUrl::Etcd { .. } => None,
        };
        Self::open_with_diskless(config, store, diskless, tiering, metrics, clock, shutdown).await
    }

    /// [`Broker::open`] with the diskless store opened next to the metadata store
    /// (`crate::diskless::store::open`).
    pub async fn open_with_diskless(
        config: Config,
        store: Arc<dyn MetadataStore>,
        diskless_store: Option<Arc<dyn crate::diskless::DisklessStore>>,
        tiering: Option<Arc<Tiering>>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Arc<Broker>> {
        use anyhow::Context;
        let diskless = match (diskless_store, &tiering) {
            (Some(diskless_store), Some(tiering)) => {
                let (diskless, revision) = crate::diskless::Diskless::open(
                    &config,
                    diskless_store,
                    tiering.clone(),
                    &metrics.registry,
                    clock.clone(),
                )
                .await?;
                diskless.start(revision, &shutdown);
                Some(Arc::new(diskless))
            }
            _ => None,
        };
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let cluster_id = store.cluster_id().await.context("read the cluster id")?;
        check_cluster_id(&config.data_dir, &cluster_id, &config.metadata)?;
        let listeners = config.kafka_listeners()?;
        // Registrations lead with the first listener (brokers that predate listeners read
        // only that one).
        let (advertised_host, advertised_port) = listeners
            .first()
            .map(|l| (l.advertised_host.clone(), l.advertised_port))
            .context("no Kafka listener")?;
        let security = Arc::new(crate::security::Security::open(&config, store.clone()).await?);
        let groups = crate::group::Coordinator::new(&config);
        let topics = Registry::new(&config.data_dir, tiering.clone());
        let broker = Arc::new(Broker {
            dynamic_configs: dynamic_config::DynamicConfigs::new(&config),
            replication_throttle: crate::replication::throttle::ReplicationThrottle::new(
                &config, &metrics,
            ),
            config,
            cluster_id,
            advertised_host,
            advertised_port,
            listeners,
            security,
            metrics,
            clock,
            shutdown,
            store,
            membership: membership::Membership::default(),
            tiering,
            diskless,
            disk: housekeeping::DiskWatch::default(),
            topics,
            admin: tokio::sync::Mutex::new(()),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            groups,
            txns: crate::txn::TxnCoordinator::new(),
            marker_clients: transactions::MarkerClients::default(),
            _data_dir_lock: data_dir_lock,
        });
        cost_ledger::SharedObjectAttribution::install(&broker);
        // Topics open with the dynamic defaults in force.
        broker
            .refresh_broker_configs()
            .await
            .context("read the dynamic broker configs")?;
        let records = broker.store.list_topics().await.context("list topics")?;
        let started = std::time::Instant::now();
        // One pass over the manifest store says which topics have roots to read; the
        // rest open without a request each (see the truth rules in `strata_tiering`).
        let with_roots = match &broker.tiering {
            Some(tiering) => tiering
                .manifests
                .topics_with_roots()
                .await
                .context("list the topics with tiered-storage manifests")?,
            None => None,
        };
        let mut known_dirs = std::collections::HashSet::new();
        for record in records {
            known_dirs.insert(broker.topics.topic_dir(&record.name, record.id));
            let roots = match &with_roots {
                Some(topics) if !topics.contains(&record.id) => Roots::Absent,
                _ => Roots::Read,
            };
            let topic = broker
                .open_topic(record, roots)
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
    pub(crate) async fn open_topic(
        &self,
        record: TopicRecord,
        roots: Roots,
    ) -> Result<Topic, AdminError> {
        Ok(self
            .topics
            .open_topic(&self.effective_config(), &*self.clock, record, roots)
            .await?)
    }

    /// Opens (recovers) partition `index` of a topic, for a topic that grew.
    pub(crate) async fn open_partition(
        &self,
        record: &TopicRecord,
        config: &TopicConfig,
        index: usize,
    ) -> Result<Partition, AdminError> {
        Ok(self
            .topics
            .open_partition(
                &self.effective_config(),
                &*self.clock,
                record,
                config,
                index,
                PartitionRoot::Read,
            )
            .await?)
    }
}

impl Broker {
    /// A remote read of `partition` failed: a damaged object is repaired in the
    /// background when this broker can (`tier::repair_remote`); anything else is logged.
    pub fn remote_read_failed(
        &self,
        partition: &Arc<Partition>,
        offset: i64,
        error: &PartitionError,
    ) {
        if let PartitionError::Remote(RemoteReadError::Corrupt { base_offset, .. }) = error {
            crate::tier::repair_remote(self, partition, *base_offset);
        } else {
            tracing::warn!(topic = %partition.topic, partition = partition.index, offset,
                error = %error, "remote read failed");
        }
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

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.get(name)
    }

    async fn create_offsets_topic(&self) -> anyhow::Result<Arc<Topic>> {
        Ok(Broker::create_offsets_topic(self).await?)
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

#[async_trait::async_trait]
impl crate::diskless::merge::DisklessHost for Broker {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        &self.shutdown
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn tiering(&self) -> Option<&Arc<Tiering>> {
        self.tiering.as_ref()
    }

    fn diskless_store(&self) -> Option<Arc<dyn crate::diskless::DisklessStore>> {
        self.diskless.as_ref().map(|d| d.view.store().clone())
    }

    fn write_cache(&self) -> Option<Arc<crate::diskless::read::WriteCache>> {
        self.diskless.as_ref().map(|d| d.cache.clone())
    }

    fn diskless_topics(&self) -> Vec<crate::diskless::merge::DisklessTopic> {
        self.topics
            .all()
            .iter()
            .filter(|t| t.diskless)
            .map(|t| crate::diskless::merge::DisklessTopic {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partition_count(),
                config: t.config.log_config(),
            })
            .collect()
    }

    fn diskless_state(
        &self,
        key: &crate::diskless::PartitionKey,
    ) -> Option<Arc<crate::diskless::PartitionState>> {
        self.diskless.as_ref().map(|d| d.view.get(key))
    }

    async fn refresh_view(&self, key: &crate::diskless::PartitionKey) {
        if let Some(diskless) = &self.diskless
            && let Err(e) = diskless.view.refresh(key).await
        {
            tracing::debug!(partition = %key, error = %e, "could not reload a diskless partition's view");
        }
    }

    async fn stored_topic_ids(
        &self,
    ) -> Result<std::collections::HashSet<Uuid>, crate::cluster::StoreError> {
        Ok(self
            .store
            .list_topics()
            .await?
            .iter()
            .map(|t| t.id)
            .collect())
    }

    fn live_brokers(&self) -> Vec<i32> {
        // The view as read, without `Broker::live_brokers`' stand-in (this broker alone)
        // before the first read: the merger waits to see itself listed.
        self.cluster_view()
            .brokers
            .iter()
            .map(|b| b.node_id)
            .collect()
    }

    fn node_id(&self) -> i32 {
        self.config.node_id
    }

    fn is_controller(&self) -> bool {
        Broker::is_controller(self)
    }

    fn registry(&self) -> &prometheus::Registry {
        &self.metrics.registry
    }
}

impl crate::replication::ReplicaHost for Broker {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn leader_unreachable(&self, leader: i32) {
        self.check_peer(leader);
    }

    fn replicated_from(&self, leader: i32, bytes_by_topic: &[(&str, u64)]) {
        let leader_rack = self.broker_info(leader).and_then(|info| info.rack);
        let crosses = match leader_rack {
            Some(rack) => !self.config.rack.is_empty() && rack != self.config.rack,
            None => false,
        };
        if crosses {
            for (topic, bytes) in bytes_by_topic {
                self.metrics.cost.inter_zone(topic, *bytes as f64);
            }
        }
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

    fn replication_throttle(&self) -> &crate::replication::throttle::ReplicationThrottle {
        &self.replication_throttle
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

    fn registered_principal(&self, node_id: i32) -> Option<String> {
        self.broker_info(node_id).map(|info| info.principal)
    }

    fn replication_mtls(&self) -> bool {
        !self.config.ssl_cert_file.trim().is_empty() && !self.config.ssl_ca_file.trim().is_empty()
    }

    fn certificate_shows(&self, certificate: &[u8], principal: &str) -> bool {
        let der = rustls::pki_types::CertificateDer::from(certificate);
        self.security
            .certificate_principal(&der)
            .is_ok_and(|p| p.to_string() == principal)
    }

    fn write_txn_marker(
        &self,
        topic_id: Uuid,
        partition: i32,
        marker: crate::txn::MarkerRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PartitionError>> + Send + '_>>
    {
        Box::pin(async move {
            let partition = self
                .topics
                .by_id(topic_id)
                .and_then(|t| t.partition(partition).cloned())
                .ok_or(PartitionError::Deleted)?;
            self.write_txn_marker_local(&partition, marker)
                .await
                .map(|_| ())
        })
    }

    fn verify_transaction(
        &self,
        request: crate::txn::VerifyRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = i16> + Send + '_>> {
        Box::pin(async move { self.verify_here(&request).await })
    }
}
