//! Cluster metadata: topics (with ids), their config overrides and partition state.
//!
//! [`MetadataStore`] is the edge to the system that holds it. Two implementations share
//! one contract, exercised by the same scenario tests (broker/tests/metadata_store.rs):
//! [`embedded::EmbeddedStore`] (a JSON document in the data dir, for one broker) and
//! [`etcd::EtcdStore`] (one key per topic under a prefix, compare-and-swap transactions).

pub mod embedded;
pub mod etcd;
pub mod manifests;

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

/// Placement and leadership of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
}

#[derive(Debug, thiserror::Error)]
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
    /// Replaces an existing topic's record (configs, partitions); `NotFound` if absent.
    async fn update_topic(&self, topic: &TopicRecord) -> Result<(), StoreError>;
    /// Deletes a topic and returns what it was, or `None` if there was no such topic.
    async fn delete_topic(&self, name: &str) -> Result<Option<TopicRecord>, StoreError>;
    /// Reserves `count` producer ids for this broker and returns the first. Ids are never
    /// handed out twice, across brokers and restarts.
    async fn allocate_producer_ids(&self, count: i64) -> Result<i64, StoreError>;
}

/// The metadata store and, in the same place, the manifest roots of tiered partitions.
pub struct Stores {
    pub metadata: Arc<dyn MetadataStore>,
    pub manifests: Arc<dyn strata_tiering::ManifestStore>,
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
        },
        MetadataUrl::Etcd { endpoints, prefix } => {
            let store = etcd::EtcdStore::connect(&endpoints, &prefix)
                .await
                .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
            let manifests = manifests::EtcdManifests::new(store.client(), &prefix);
            Stores {
                metadata: Arc::new(store),
                manifests: Arc::new(manifests),
            }
        }
    })
}
