//! The etcd metadata store. Layout under the prefix (default `strata`):
//!
//! | key | value |
//! |---|---|
//! | `<prefix>/cluster_id` | the cluster id, written once with a create-only transaction |
//! | `<prefix>/topics/<name>` | the topic's [`TopicRecord`] as JSON |
//! | `<prefix>/producer_ids` | the next producer id not yet reserved (decimal), advanced by compare-and-swap |
//! | `<prefix>/manifests/<topic_id>/<partition>` | a tiered partition's manifest root (see `manifests.rs`) |
//!
//! Creation is a transaction on `create_revision == 0`, updates on `version > 0`, so two
//! brokers racing to create one topic cannot both succeed. Every call carries a timeout:
//! `etcd_client::Client::connect` is lazy and a dead etcd would otherwise hang a request.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};

use super::{MetadataStore, StoreError, TopicRecord};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EtcdStore {
    client: Client,
    prefix: String,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn timed<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

impl EtcdStore {
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let client = timed(Client::connect(endpoints, Some(options))).await?;
        let store = EtcdStore {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        };
        // Fail at start-up, not at the first client request, if etcd is not there.
        let mut kv = store.client.kv_client();
        timed(kv.get(store.key("cluster_id"), None)).await?;
        Ok(store)
    }

    /// A handle on the same connection, for the manifest store.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.prefix)
    }

    fn topic_key(&self, name: &str) -> String {
        self.key(&format!("topics/{name}"))
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<TopicRecord, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            message: e.to_string(),
        })
    }

    fn encode(topic: &TopicRecord) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(topic).map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl MetadataStore for EtcdStore {
    async fn cluster_id(&self) -> Result<String, StoreError> {
        let key = self.key("cluster_id");
        let candidate = super::embedded::new_cluster_id();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), candidate.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut kv = self.client.kv_client();
        let response = timed(kv.txn(txn)).await?;
        if response.succeeded() {
            return Ok(candidate);
        }
        for op in response.op_responses() {
            if let etcd_client::TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                return Ok(String::from_utf8_lossy(kv.value()).into_owned());
            }
        }
        Err(StoreError::Corrupt {
            key,
            message: "cluster id vanished during read".into(),
        })
    }

    async fn list_topics(&self) -> Result<Vec<TopicRecord>, StoreError> {
        let mut kv = self.client.kv_client();
        let prefix = self.key("topics/");
        let response = timed(kv.get(prefix, Some(GetOptions::new().with_prefix()))).await?;
        response
            .kvs()
            .iter()
            .map(|kv| Self::decode(kv.key(), kv.value()))
            .collect()
    }

    async fn create_topic(&self, topic: &TopicRecord) -> Result<(), StoreError> {
        let key = self.topic_key(&topic.name);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, Self::encode(topic)?, None)]);
        let mut kv = self.client.kv_client();
        if timed(kv.txn(txn)).await?.succeeded() {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists(topic.name.clone()))
        }
    }

    async fn update_topic(&self, topic: &TopicRecord) -> Result<(), StoreError> {
        let key = self.topic_key(&topic.name);
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(key, Self::encode(topic)?, None)]);
        let mut kv = self.client.kv_client();
        if timed(kv.txn(txn)).await?.succeeded() {
            Ok(())
        } else {
            Err(StoreError::NotFound(topic.name.clone()))
        }
    }

    async fn allocate_producer_ids(&self, count: i64) -> Result<i64, StoreError> {
        let key = self.key("producer_ids");
        let mut kv = self.client.kv_client();
        for _ in 0..16 {
            let current = timed(kv.get(key.clone(), None)).await?;
            let (first, compare) = match current.kvs().first() {
                Some(found) => {
                    let text = String::from_utf8_lossy(found.value());
                    let first = text
                        .trim()
                        .parse::<i64>()
                        .map_err(|e| StoreError::Corrupt {
                            key: key.clone(),
                            message: e.to_string(),
                        })?;
                    let compare =
                        Compare::mod_revision(key.clone(), CompareOp::Equal, found.mod_revision());
                    (first, compare)
                }
                None => (
                    0,
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                ),
            };
            let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                key.clone(),
                (first + count).to_string(),
                None,
            )]);
            if timed(kv.txn(txn)).await?.succeeded() {
                return Ok(first);
            }
        }
        Err(StoreError::Unavailable(
            "producer id allocation kept conflicting with other brokers".into(),
        ))
    }

    async fn delete_topic(&self, name: &str) -> Result<Option<TopicRecord>, StoreError> {
        let key = self.topic_key(name);
        let mut kv = self.client.kv_client();
        let options = etcd_client::DeleteOptions::new().with_prev_key();
        let response = timed(kv.delete(key, Some(options))).await?;
        response
            .prev_kvs()
            .first()
            .map(|kv| Self::decode(kv.key(), kv.value()))
            .transpose()
    }
}
