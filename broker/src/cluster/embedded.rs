//! The embedded metadata store: one JSON document, `<data_dir>/metadata.json`, rewritten
//! atomically (temporary file, fsync, rename) on every change. Metadata changes are rare
//! (topic admin), so a whole-file rewrite costs nothing that matters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{
    BrokerConfigs, BrokerInfo, ConfigScope, MetadataStore, SecurityKind, StoreError, TopicRecord,
};
use crate::log::write_atomically;

const FILE: &str = "metadata.json";
const VERSION: u32 = 1;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Document {
    version: u32,
    cluster_id: Option<String>,
    topics: BTreeMap<String, TopicRecord>,
    /// The next producer id not yet handed out.
    #[serde(default)]
    next_producer_id: i64,
    /// Security records by kind (`scram`, `acls`, `quotas`), then key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    security: BTreeMap<String, BTreeMap<String, String>>,
    /// Dynamic broker configs (cluster default and per broker).
    #[serde(default, skip_serializing_if = "BrokerConfigs::is_empty")]
    broker_configs: BrokerConfigs,
}

pub struct EmbeddedStore {
    path: PathBuf,
    /// A tokio mutex: held across the blocking-free but awaited file write.
    document: Mutex<Document>,
    /// Topic versions for compare-and-swap: a counter bumped on every change. In memory
    /// only: one process owns the document.
    versions: std::sync::Mutex<(u64, BTreeMap<String, u64>)>,
    /// The one broker of an embedded cluster, once it registered.
    registered: std::sync::Mutex<Option<BrokerInfo>>,
}

impl EmbeddedStore {
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Unavailable(format!("create {}: {e}", data_dir.display())))?;
        let path = data_dir.join(FILE);
        let document = match std::fs::read(&path) {
            Ok(bytes) => {
                let document: Document =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        key: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                if document.version != VERSION {
                    return Err(StoreError::Corrupt {
                        key: path.display().to_string(),
                        message: format!("unknown version {}", document.version),
                    });
                }
                document
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Document {
                version: VERSION,
                ..Document::default()
            },
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "read {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(EmbeddedStore {
            path,
            document: Mutex::new(document),
            versions: std::sync::Mutex::new((0, BTreeMap::new())),
            registered: std::sync::Mutex::new(None),
        })
    }

    fn version(&self, name: &str) -> u64 {
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.1.get(name).copied().unwrap_or(0)
    }

    fn bump(&self, name: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.0 += 1;
        let next = versions.0;
        versions.1.insert(name.to_string(), next);
    }

    async fn save(&self, document: &Document) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(document)
            .map_err(|e| StoreError::Unavailable(format!("encode metadata: {e}")))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .map_err(|e| StoreError::Unavailable(format!("write {}: {e}", self.path.display())))
    }
}

#[async_trait::async_trait]
impl MetadataStore for EmbeddedStore {
    async fn cluster_id(&self) -> Result<String, StoreError> {
        let mut document = self.document.lock().await;
        if let Some(id) = &document.cluster_id {
            return Ok(id.clone());
        }
        let mut next = document.clone();
        let id = new_cluster_id();
        next.cluster_id = Some(id.clone());
        self.save(&next).await?;
        *document = next;
        Ok(id)
    }

    async fn list_topics(&self) -> Result<Vec<TopicRecord>, StoreError> {
        Ok(self
            .document
            .lock()
            .await
            .topics
            .values()
            .cloned()
            .collect())
    }

    async fn create_topic(&self, topic: &TopicRecord) -> Result<(), StoreError> {
        let mut document = self.document.lock().await;
        if document.topics.contains_key(&topic.name) {
            return Err(StoreError::AlreadyExists(topic.name.clone()));
        }
        let mut next = document.clone();
        next.topics.insert(topic.name.clone(), topic.clone());
        self.save(&next).await?;
        *document = next;
        self.bump(&topic.name);
        Ok(())
    }

    /// One write of the document for all of them.
    async fn create_topics(
        &self,
        topics: &[TopicRecord],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut document = self.document.lock().await;
        let mut next = document.clone();
        let results: Vec<Result<(), StoreError>> = topics
            .iter()
            .map(|topic| {
                if next.topics.contains_key(&topic.name) {
                    return Err(StoreError::AlreadyExists(topic.name.clone()));
                }
                next.topics.insert(topic.name.clone(), topic.clone());
                Ok(())
            })
            .collect();
        if results.iter().any(Result::is_ok) {
            self.save(&next).await?;
            *document = next;
        }
        for (topic, result) in topics.iter().zip(&results) {
            if result.is_ok() {
                self.bump(&topic.name);
            }
        }
        Ok(results)
    }

    async fn update_topic(&self, topic: &TopicRecord) -> Result<(), StoreError> {
        let mut document = self.document.lock().await;
        if !document.topics.contains_key(&topic.name) {
            return Err(StoreError::NotFound(topic.name.clone()));
        }
        let mut next = document.clone();
        next.topics.insert(topic.name.clone(), topic.clone());
        self.save(&next).await?;
        *document = next;
        self.bump(&topic.name);
        Ok(())
    }

    async fn allocate_producer_ids(&self, count: i64) -> Result<i64, StoreError> {
        let mut document = self.document.lock().await;
        let mut next = document.clone();
        let first = next.next_producer_id;
        next.next_producer_id = first + count;
        self.save(&next).await?;
        *document = next;
        Ok(first)
    }

    async fn delete_topic(&self, name: &str) -> Result<Option<TopicRecord>, StoreError> {
        let mut document = self.document.lock().await;
        let mut next = document.clone();
        let removed = next.topics.remove(name);
        if removed.is_some() {
            self.save(&next).await?;
            *document = next;
            self.bump(name);
        }
        Ok(removed)
    }

    async fn list_topics_versioned(&self) -> Result<Vec<(TopicRecord, u64)>, StoreError> {
        let document = self.document.lock().await;
        Ok(document
            .topics
            .values()
            .map(|t| (t.clone(), self.version(&t.name)))
            .collect())
    }

    async fn get_topic_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(TopicRecord, u64)>, StoreError> {
        let document = self.document.lock().await;
        Ok(document
            .topics
            .get(name)
            .map(|t| (t.clone(), self.version(name))))
    }

    async fn update_topic_if(&self, topic: &TopicRecord, version: u64) -> Result<bool, StoreError> {
        let mut document = self.document.lock().await;
        if !document.topics.contains_key(&topic.name) || self.version(&topic.name) != version {
            return Ok(false);
        }
        let mut next = document.clone();
        next.topics.insert(topic.name.clone(), topic.clone());
        self.save(&next).await?;
        *document = next;
        self.bump(&topic.name);
        Ok(true)
    }

    // One broker, one process: its session never expires and it is always the controller.

    async fn open_session(&self, _ttl_ms: i64) -> Result<i64, StoreError> {
        Ok(0)
    }

    async fn keep_alive(&self, _session: i64) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn close_session(&self, _session: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn register_broker(&self, info: &BrokerInfo, _session: i64) -> Result<(), StoreError> {
        *self.registered.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
        Ok(())
    }

    async fn live_brokers(&self) -> Result<Vec<BrokerInfo>, StoreError> {
        Ok(self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect())
    }

    async fn campaign(&self, node_id: i32, _session: i64) -> Result<i32, StoreError> {
        Ok(node_id)
    }

    async fn draining(&self) -> Result<Vec<i32>, StoreError> {
        Ok(Vec::new())
    }

    async fn set_draining(&self, _node_id: i32, _draining: bool) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "an embedded metadata store has one broker: there is nowhere to drain it to".into(),
        ))
    }

    async fn list_security(&self, kind: SecurityKind) -> Result<Vec<(String, String)>, StoreError> {
        let document = self.document.lock().await;
        Ok(document
            .security
            .get(kind.name())
            .map(|records| {
                records
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn change_security(
        &self,
        kind: SecurityKind,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<(), StoreError> {
        let mut document = self.document.lock().await;
        let mut next = document.clone();
        let records = next.security.entry(kind.name().to_string()).or_default();
        for key in deletes {
            records.remove(key);
        }
        for (key, value) in puts {
            records.insert(key.clone(), value.clone());
        }
        if records.is_empty() {
            next.security.remove(kind.name());
        }
        self.save(&next).await?;
        *document = next;
        Ok(())
    }

    async fn broker_configs(&self) -> Result<BrokerConfigs, StoreError> {
        Ok(self.document.lock().await.broker_configs.clone())
    }

    async fn set_broker_configs(
        &self,
        scope: ConfigScope,
        expected: &BTreeMap<String, String>,
        configs: &BTreeMap<String, String>,
    ) -> Result<bool, StoreError> {
        let mut document = self.document.lock().await;
        if document.broker_configs.scope(scope) != *expected {
            return Ok(false);
        }
        let mut next = document.clone();
        next.broker_configs.set_scope(scope, configs.clone());
        self.save(&next).await?;
        *document = next;
        Ok(true)
    }
}

/// A Kafka-style cluster id: 22 characters of URL-safe base64 of a random UUID.
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = uuid::Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| ALPHABET[((value >> (i * 6)) & 63) as usize] as char)
        .collect()
}
