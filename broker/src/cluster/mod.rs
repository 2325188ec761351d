//! Cluster metadata: topics (with ids), their config overrides and partition state.
//!
//! [`MetadataStore`] is the edge to the system that holds it. Two implementations share
//! one contract, exercised by the same scenario tests (broker/tests/metadata_store.rs):
//! [`embedded::EmbeddedStore`] (a JSON document in the data dir, for one broker) and
//! [`etcd::EtcdStore`] (one key per topic under a prefix, compare-and-swap transactions).

pub mod controller;
pub mod embedded;
pub mod etcd;
pub mod manifests;
pub mod placement;
pub mod reassignment;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{Config, MetadataUrl};

/// A topic as the metadata store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionRecord>,
    /// Overrides only; defaults come from the broker configuration.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// Placement and leadership of one partition. The controller changes `leader`,
/// `leader_epoch`, `replicas`, `adding` and `removing`; the leader changes `isr` (expand
/// and shrink), and the controller removes dead brokers from it. Admin requests start and
/// cancel reassignments and elect leaders (see [`reassignment`]). Every change is a
/// compare-and-swap of the whole topic record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// -1: no leader (every in-sync replica is down).
    pub leader: i32,
    pub leader_epoch: i32,
    /// The first replica is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas. Records written before replication existed have none stored:
    /// see [`TopicRecord::normalize`].
    #[serde(default)]
    pub isr: Vec<i32>,
    /// Replicas being moved off (a reassignment or a drain): still in `replicas` until
    /// every other replica is in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
    /// Replicas being added by a reassignment or a drain: in `replicas` already, not yet
    /// in sync. While a reassignment runs, `replicas` is the target followed by `removing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
}

impl PartitionRecord {
    /// A new partition on `replicas`, led by the first, all in sync (their logs are empty).
    pub fn new(replicas: Vec<i32>) -> PartitionRecord {
        PartitionRecord {
            leader: replicas.first().copied().unwrap_or(-1),
            leader_epoch: 0,
            isr: replicas.clone(),
            replicas,
            removing: Vec::new(),
            adding: Vec::new(),
        }
    }

    /// A diskless topic's partition: no replicas, no ISR, no leader (any broker serves
    /// it; see `crate::diskless`).
    pub fn diskless() -> PartitionRecord {
        PartitionRecord {
            leader: -1,
            leader_epoch: 0,
            replicas: Vec::new(),
            isr: Vec::new(),
            removing: Vec::new(),
            adding: Vec::new(),
        }
    }

    /// Whether a reassignment (or a drain's move) is under way.
    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }
}

impl TopicRecord {
    /// A diskless topic (`diskless.enable`): its partitions have no replicas, no ISR and
    /// no leader, and the controller, placement and liveness leave them alone.
    pub fn is_diskless(&self) -> bool {
        self.configs
            .get("diskless.enable")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Fills in what older records lack: an ISR of all replicas.
    pub fn normalize(mut self) -> TopicRecord {
        for p in &mut self.partitions {
            if p.isr.is_empty() && p.leader >= 0 {
                p.isr = p.replicas.clone();
            }
        }
        self
    }
}

/// What a broker last read about the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub brokers: Vec<BrokerInfo>,
    /// -1 until known.
    pub controller: i32,
    pub draining: std::collections::BTreeSet<i32>,
}

/// A live broker, as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub node_id: i32,
    /// The Kafka listener clients are told about.
    pub host: String,
    pub port: i32,
    #[serde(default)]
    pub rack: Option<String>,
    /// The replication gRPC endpoint, `HOST:PORT`.
    pub replication: String,
    /// The admin API endpoint, `HOST:PORT` (empty from brokers that did not say).
    #[serde(default)]
    pub admin: String,
    /// Every Kafka listener's advertised address by listener name; `host` and `port` are
    /// the first one's. Empty from brokers that registered before listeners existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerEndpoint>,
    /// The principal of this broker's certificate (`User:CN=...`), which its replication
    /// client presents; empty without TLS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal: String,
}

/// One advertised Kafka listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerEndpoint {
    pub name: String,
    pub host: String,
    pub port: i32,
}

impl BrokerInfo {
    /// Where a client of listener `name` reaches this broker: that listener's advertised
    /// address, or `None` if the broker has no such listener (Kafka leaves such a broker
    /// out of the answer). A broker that named no listeners has one, under any name.
    pub fn endpoint(&self, name: &str) -> Option<(&str, i32)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| (l.host.as_str(), l.port))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("topic `{0}` already exists")]
    AlreadyExists(String),
    #[error("topic `{0}` does not exist")]
    NotFound(String),
    #[error("metadata store is unavailable: {0}")]
    Unavailable(String),
    #[error("metadata store holds an unreadable record at {key}: {message}")]
    Corrupt { key: String, message: String },
}

#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync {
    /// The cluster id, created by the first broker that asks.
    async fn cluster_id(&self) -> Result<String, StoreError>;
    async fn list_topics(&self) -> Result<Vec<TopicRecord>, StoreError>;
    /// Creates a topic atomically; fails with `AlreadyExists` if the name is taken.
    async fn create_topic(&self, topic: &TopicRecord) -> Result<(), StoreError>;
    /// Creates several topics, each as [`MetadataStore::create_topic`] does, in as few
    /// writes as the store allows (one CreateTopics request of many topics would
    /// otherwise cost a store write each). One result per topic, in order: a name that
    /// is taken fails alone with `AlreadyExists`; one that fails with `Unavailable` may or
    /// may not have been created. An error for the whole call means that none, some or
    /// all of them may have been created.
    async fn create_topics(
        &self,
        topics: &[TopicRecord],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(topics.len());
        for topic in topics {
            results.push(self.create_topic(topic).await);
        }
        Ok(results)
    }
    /// Replaces an existing topic's record (configs, partitions); `NotFound` if absent.
    async fn update_topic(&self, topic: &TopicRecord) -> Result<(), StoreError>;
    /// Deletes a topic and returns what it was, or `None` if there was no such topic.
    async fn delete_topic(&self, name: &str) -> Result<Option<TopicRecord>, StoreError>;
    /// Reserves `count` producer ids for this broker and returns the first. Ids are never
    /// handed out twice, across brokers and restarts.
    async fn allocate_producer_ids(&self, count: i64) -> Result<i64, StoreError>;

    /// The store's current revision, if it keeps one: while it stands still no key has
    /// changed, so a broker's metadata round can reuse what it read last. `None` (the
    /// default) means "read everything every time".
    async fn revision(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
    /// Topics with their versions, for [`MetadataStore::update_topic_if`].
    async fn list_topics_versioned(&self) -> Result<Vec<(TopicRecord, u64)>, StoreError>;
    /// One topic with its version; `None` if there is no such topic.
    async fn get_topic_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(TopicRecord, u64)>, StoreError>;
    /// Replaces a topic's record if its version is still `version`; false if it changed
    /// (or was deleted) meanwhile.
    async fn update_topic_if(&self, topic: &TopicRecord, version: u64) -> Result<bool, StoreError>;

    /// Starts a session of `ttl_ms` (an etcd lease) and returns its id. Registration and
    /// controllership end with it.
    async fn open_session(&self, ttl_ms: i64) -> Result<i64, StoreError>;
    /// Keeps a session alive; false if it already expired.
    async fn keep_alive(&self, session: i64) -> Result<bool, StoreError>;
    /// Ends a session (clean shutdown): registration and controllership go at once.
    async fn close_session(&self, session: i64) -> Result<(), StoreError>;
    /// Registers this broker under the session. Fails with `AlreadyExists` if a live
    /// broker of another session holds the node id.
    async fn register_broker(&self, info: &BrokerInfo, session: i64) -> Result<(), StoreError>;
    async fn live_brokers(&self) -> Result<Vec<BrokerInfo>, StoreError>;
    /// The session (etcd lease) `node_id` is registered under, if it is registered; the
    /// identity of one incarnation, as [`BrokerInfo`] is the same across incarnations of
    /// one configuration. The default (a store of one broker) knows none.
    async fn broker_session(&self, _node_id: i32) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
    /// Ends `session` if the broker registered as `node_id` still holds it with the
    /// registration `expected` (another incarnation registers under another session and
    /// is left alone): its registration and controllership go at once, as at the
    /// session's expiry. For brokers shown to be dead before their session expires
    /// ([`crate::broker::liveness`]). Returns whether a session was ended. The default (a
    /// store of one broker) ends none.
    async fn end_broker_session(
        &self,
        _node_id: i32,
        _expected: &BrokerInfo,
        _session: i64,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Watches the keys a broker's view of the cluster is read from (topics, brokers,
    /// controller, drains, broker configs, security records) for changes after
    /// `after_revision` (a [`MetadataStore::revision`]). `None` (the default) if the
    /// store cannot watch: the broker then polls [`MetadataStore::revision`].
    async fn watch_view(
        &self,
        _after_revision: i64,
    ) -> Result<Option<Box<dyn ViewWatch>>, StoreError> {
        Ok(None)
    }
    /// Becomes the controller if no live broker is; returns the controller's node id.
    async fn campaign(&self, node_id: i32, session: i64) -> Result<i32, StoreError>;
    /// Brokers marked for draining (their replicas are moved off).
    async fn draining(&self) -> Result<Vec<i32>, StoreError>;
    async fn set_draining(&self, node_id: i32, draining: bool) -> Result<(), StoreError>;
    /// Marks `node_id` draining on behalf of `owner` (a token the caller keeps), unless
    /// it is marked already; true when this call made the mark. A later `set_draining`
    /// (an operator's drain) takes the mark over, so that [`Self::undrain_owned`] leaves
    /// it. Stores that cannot compare do the check and the mark in two steps.
    async fn mark_draining_owned(&self, node_id: i32, owner: &str) -> Result<bool, StoreError> {
        let _ = owner;
        if self.draining().await?.contains(&node_id) {
            return Ok(false);
        }
        self.set_draining(node_id, true).await?;
        Ok(true)
    }
    /// Removes the mark of `node_id` if `owner` made it and nobody marked it since; true
    /// when no mark is left. Stores that cannot compare remove it unconditionally.
    async fn undrain_owned(&self, node_id: i32, owner: &str) -> Result<bool, StoreError> {
        let _ = owner;
        self.set_draining(node_id, false).await?;
        Ok(true)
    }

    /// Every security record of `kind` (SCRAM credentials, ACLs, quotas), as (key, value).
    /// Values are the security module's JSON; the store does not read them.
    async fn list_security(&self, kind: SecurityKind) -> Result<Vec<(String, String)>, StoreError>;
    /// Writes the records of `kind` in `puts` and removes those in `deletes` (a key in
    /// both is put). The embedded store applies them all or nothing; etcd in transactions
    /// of up to 100 operations, each all or nothing.
    async fn change_security(
        &self,
        kind: SecurityKind,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<(), StoreError>;

    /// The dynamic broker configs of the cluster default and of every broker.
    async fn broker_configs(&self) -> Result<BrokerConfigs, StoreError>;
    /// Replaces the dynamic configs of one scope with `configs` (an empty map removes
    /// them) if they are still `expected` (empty: none stored); false, and nothing
    /// written, if another broker changed them meanwhile.
    async fn set_broker_configs(
        &self,
        scope: ConfigScope,
        expected: &BTreeMap<String, String>,
        configs: &BTreeMap<String, String>,
    ) -> Result<bool, StoreError>;
}

/// A watch opened by [`MetadataStore::watch_view`].
#[async_trait::async_trait]
pub trait ViewWatch: Send {
    /// Waits for the next change and returns the store revision it was made at. An error
    /// ends the watch (etcd went away, or compacted the revisions it had to replay): the
    /// caller reads everything again and opens a new one.
    async fn next_change(&mut self) -> Result<i64, StoreError>;
}

/// Whose dynamic broker configs (Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG and
/// DYNAMIC_BROKER_CONFIG): the cluster default (a BROKER resource named "") or one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigScope {
    ClusterDefault,
    Broker(i32),
}

/// Every dynamic broker config in the store, under Kafka's names (`log.retention.ms`).
/// The store keeps the values as given; `config::dynamic` checks them before they are
/// written and again when they are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerConfigs {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_default: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub brokers: BTreeMap<i32, BTreeMap<String, String>>,
}

impl BrokerConfigs {
    pub fn is_empty(&self) -> bool {
        self.cluster_default.is_empty() && self.brokers.is_empty()
    }

    /// The configs stored for one scope (empty if none).
    pub fn scope(&self, scope: ConfigScope) -> BTreeMap<String, String> {
        match scope {
            ConfigScope::ClusterDefault => self.cluster_default.clone(),
            ConfigScope::Broker(id) => self.brokers.get(&id).cloned().unwrap_or_default(),
        }
    }

    /// Replaces one scope's configs; an empty map removes the scope.
    pub fn set_scope(&mut self, scope: ConfigScope, configs: BTreeMap<String, String>) {
        match scope {
            ConfigScope::ClusterDefault => self.cluster_default = configs,
            ConfigScope::Broker(id) if configs.is_empty() => {
                self.brokers.remove(&id);
            }
            ConfigScope::Broker(id) => {
                self.brokers.insert(id, configs);
            }
        }
    }
}

/// The kinds of security record in the metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityKind {
    /// SCRAM credentials, keyed `<user>/<mechanism>`.
    Scram,
    /// ACL bindings, keyed by the binding.
    Acl,
    /// Client quotas, keyed by the entity.
    Quota,
}

impl SecurityKind {
    pub fn name(self) -> &'static str {
        match self {
            SecurityKind::Scram => "scram",
            SecurityKind::Acl => "acls",
            SecurityKind::Quota => "quotas",
        }
    }
}

/// The metadata store and, in the same place, the manifest roots of tiered partitions.
pub struct Stores {
    pub metadata: Arc<dyn MetadataStore>,
    pub manifests: Arc<dyn strata_tiering::ManifestStore>,
    /// The etcd connection, shared by the diskless store (`crate::diskless::store::open`);
    /// `None` for the embedded store.
    pub etcd: Option<etcd_client::Client>,
}

/// Opens the store named by the `metadata` setting.
pub async fn open(config: &Config) -> anyhow::Result<Stores> {
    use anyhow::Context;
    Ok(match config.metadata_url()? {
        MetadataUrl::Embedded(dir) => Stores {
            metadata: Arc::new(
                embedded::EmbeddedStore::open(&dir).context("open the embedded metadata store")?,
            ),
            manifests: Arc::new(manifests::EmbeddedManifests::new(&dir)),
            etcd: None,
        },
        MetadataUrl::Etcd { endpoints, prefix } => {
            let security = etcd::EtcdSecurity::from_config(config)?;
            let store = etcd::EtcdStore::connect_with(&endpoints, &prefix, &security)
                .await
                .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
            let manifests = manifests::EtcdManifests::new(store.client(), &prefix);
            let client = store.client();
            Stores {
                metadata: Arc::new(store),
                manifests: Arc::new(manifests),
                etcd: Some(client),
            }
        }
    })
}
