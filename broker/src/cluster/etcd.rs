//! The etcd metadata store. Layout under the prefix (default `strata`):
//!
//! | key | value |
//! |---|---|
//! | `<prefix>/cluster_id` | the cluster id, written once with a create-only transaction |
//! | `<prefix>/topics/<name>` | the topic's [`TopicRecord`] as JSON |
//! | `<prefix>/producer_ids` | the next producer id not yet reserved (decimal), advanced by compare-and-swap |
//! | `<prefix>/manifests/<topic_id>/<partition>` | a tiered partition's manifest root (see `manifests.rs`) |
//! | `<prefix>/brokers/<node_id>` | a live broker's [`BrokerInfo`] as JSON, attached to its lease |
//! | `<prefix>/controller` | the controller's node id, attached to its lease |
//! | `<prefix>/draining/<node_id>` | present while the broker is being drained |
//! | `<prefix>/security/<kind>/<key>` | a SCRAM credential, ACL binding or quota (JSON of the security module) |
//! | `<prefix>/broker_configs/default` | the cluster default of dynamic broker configs: a JSON object of Kafka names to values |
//! | `<prefix>/broker_configs/<node_id>` | one broker's dynamic configs, likewise; both changed by compare-and-swap on the key's revision; values this build cannot read are skipped with a warning |
//!
//! A broker's lease (TTL `broker_session_timeout_ms`) is its session: when the broker dies
//! or cannot reach etcd for that long, its registration and controllership vanish with it.
//! A broker taken for dead sooner (its listener refuses connections) has its lease
//! revoked by a peer ([`MetadataStore::end_broker_session`]). Brokers
//! learn of changes through watches on the keys of their view
//! ([`MetadataStore::watch_view`]), not by polling.
//! Topic records carry partition leadership and ISRs; they change by compare-and-swap on
//! the key's mod_revision (the "version" of [`MetadataStore::update_topic_if`]).
//!
//! Creation is a transaction on `create_revision == 0`, updates on `version > 0`, so two
//! brokers racing to create one topic cannot both succeed. Every call carries a timeout:
//! `etcd_client::Client::connect` is lazy and a dead etcd would otherwise hang a request.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions,
};

use super::{
    BrokerConfigs, BrokerInfo, ConfigScope, MetadataStore, SecurityKind, StoreError, TopicRecord,
};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Operations per etcd transaction when security records change (etcd's default limit
/// is 128).
const SECURITY_OPS_PER_TXN: usize = 100;
/// Topics created by one transaction: their compares and puts stay under etcd's
/// `--max-txn-ops` (128 by default).
const CREATE_TXN_TOPICS: usize = 64;
/// Record bytes in one creating transaction, under etcd's request limit (1.5 MiB by
/// default); a single larger record still goes alone.
const CREATE_TXN_BYTES: usize = 1 << 20;

pub struct EtcdStore {
    client: Client,
    prefix: String,
    /// The keep-alive stream of the session last renewed, reused by the next renewal:
    /// one message to etcd per renewal, where a stream per renewal costs a stream and two.
    /// A tokio mutex: held across the renewal's round trip.
    keeper: tokio::sync::Mutex<Option<SessionKeeper>>,
}

/// An open keep-alive stream of one lease.
struct SessionKeeper {
    session: i64,
    sender: etcd_client::LeaseKeeper,
    answers: etcd_client::LeaseKeepAliveStream,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn timed<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    within(call).await?.map_err(unavailable)
}

/// The call's own result, or `Unavailable` if etcd did not answer in time: for callers
/// that tell etcd's answers apart instead of treating every error as an outage.
async fn within<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<Result<T, etcd_client::Error>, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| {
        StoreError::Unavailable(format!("etcd did not answer within {CALL_TIMEOUT:?}"))
    })
}

/// Whether etcd answered that the lease no longer exists (it expired or was revoked).
/// etcd-client turns a keep-alive answer of TTL 0 into `LeaseKeepAliveError("lease not
/// found")` rather than a response, and etcd itself refuses requests naming an unknown
/// lease with gRPC NOT_FOUND; both mean the session is over, not that etcd is down.
fn lease_is_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(message) => message == "lease not found",
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::NotFound,
        _ => false,
    }
}

/// How the broker authenticates to etcd: TLS (a CA, and a client certificate) and etcd's
/// user name and password. The default is neither.
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    /// PEM of the CA etcd's certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key for client certificate authentication.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    pub user: Option<(String, String)>,
}

impl EtcdSecurity {
    /// Reads the files of the `etcd_*` settings; an error names the setting.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<EtcdSecurity> {
        use anyhow::Context;
        let read = |setting: &str, path: &str| -> anyhow::Result<Option<Vec<u8>>> {
            let path = path.trim();
            if path.is_empty() {
                return Ok(None);
            }
            std::fs::read(path)
                .map(Some)
                .with_context(|| format!("setting `{setting}`: read {path}"))
        };
        let ca_pem = read("etcd_ca_file", &config.etcd_ca_file)?;
        let identity_pem = match (
            read("etcd_cert_file", &config.etcd_cert_file)?,
            read("etcd_key_file", &config.etcd_key_file)?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!("settings `etcd_cert_file` and `etcd_key_file` go together"),
        };
        let user = (!config.etcd_username.trim().is_empty()).then(|| {
            (
                config.etcd_username.trim().to_string(),
                config.etcd_password.clone(),
            )
        });
        Ok(EtcdSecurity {
            ca_pem,
            identity_pem,
            user,
        })
    }

    fn tls(&self) -> bool {
        self.ca_pem.is_some() || self.identity_pem.is_some()
    }

    /// Adds the TLS material and credentials to `options`, and turns `endpoints` into
    /// `https://` URLs when TLS is configured (etcd-client picks TLS from the scheme).
    pub fn apply(
        &self,
        mut options: ConnectOptions,
        endpoints: &[String],
    ) -> (ConnectOptions, Vec<String>) {
        let mut endpoints = endpoints.to_vec();
        if self.tls() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca_pem {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.identity_pem {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
            for endpoint in &mut endpoints {
                let host = endpoint
                    .strip_prefix("http://")
                    .or_else(|| endpoint.strip_prefix("https://"))
                    .unwrap_or(endpoint);
                *endpoint = format!("https://{host}");
            }
        }
        if let Some((name, password)) = &self.user {
            options = options.with_user(name.clone(), password.clone());
        }
        (options, endpoints)
    }
}

/// How often the connection to etcd is pinged while a stream (a watch, a keep-alive) is
/// open on it.
const ETCD_PING_EVERY: Duration = Duration::from_secs(10);

impl EtcdStore {
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        Self::connect_with(endpoints, prefix, &EtcdSecurity::default()).await
    }

    /// Connects with TLS and/or etcd authentication. With TLS, `http://` endpoints are
    /// dialled as `https://`.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        security: &EtcdSecurity,
    ) -> Result<EtcdStore, StoreError> {
        // Require a leader: a watch on a member cut off from its cluster's leader would
        // otherwise stay open and silent, and the view would go stale unnoticed (the
        // member cancels it instead; the broker then polls and opens another). HTTP/2
        // pings on open streams notice a dead connection under a watch; 10 s, since
        // etcd answers pings more frequent than its 5 s minimum with GOAWAY.
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_require_leader(true)
            .with_keep_alive(ETCD_PING_EVERY, CALL_TIMEOUT);
        let (options, endpoints) = security.apply(options, endpoints);
        let client = timed(Client::connect(&endpoints, Some(options))).await?;
        let store = EtcdStore {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            keeper: tokio::sync::Mutex::new(None),
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

    /// A topic record with its version (the key's etcd mod_revision).
    fn versioned(kv: &etcd_client::KeyValue) -> Result<(TopicRecord, u64), StoreError> {
        Ok((
            Self::decode(kv.key(), kv.value())?,
            kv.mod_revision() as u64,
        ))
    }

    fn encode(topic: &TopicRecord) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(topic).map_err(unavailable)
    }

    async fn get_prefix(&self, suffix: &str) -> Result<etcd_client::GetResponse, StoreError> {
        let mut kv = self.client.kv_client();
        timed(kv.get(self.key(suffix), Some(GetOptions::new().with_prefix()))).await
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

    /// etcd's revision counts every write to the whole keyspace (other prefixes too), so
    /// it may move when nothing of ours did; it never stands still when something did.
    async fn revision(&self) -> Result<Option<i64>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = timed(kv.get(
            self.key("cluster_id"),
            Some(GetOptions::new().with_count_only()),
        ))
        .await?;
        Ok(response.header().map(|h| h.revision()))
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

    /// One transaction per [`CREATE_TXN_TOPICS`] topics (and at most [`CREATE_TXN_BYTES`]
    /// of records, under etcd's request size limit), each topic guarded by its own
    /// absence. A transaction that fails because one of its names is taken is retried
    /// topic by topic, so only that topic is refused.
    async fn create_topics(
        &self,
        topics: &[TopicRecord],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut encoded = Vec::with_capacity(topics.len());
        for topic in topics {
            encoded.push(Self::encode(topic)?);
        }
        let mut results = Vec::with_capacity(topics.len());
        let mut first = 0;
        while first < topics.len() {
            let mut end = first;
            let mut bytes = 0;
            while end < topics.len()
                && end - first < CREATE_TXN_TOPICS
                && (end == first || bytes + encoded[end].len() <= CREATE_TXN_BYTES)
            {
                bytes += encoded[end].len();
                end += 1;
            }
            let keys: Vec<String> = topics[first..end]
                .iter()
                .map(|t| self.topic_key(&t.name))
                .collect();
            let txn = Txn::new()
                .when(
                    keys.iter()
                        .map(|key| Compare::create_revision(key.clone(), CompareOp::Equal, 0))
                        .collect::<Vec<_>>(),
                )
                .and_then(
                    keys.iter()
                        .zip(&encoded[first..end])
                        .map(|(key, value)| TxnOp::put(key.clone(), value.clone(), None))
                        .collect::<Vec<_>>(),
                );
            let mut kv = self.client.kv_client();
            match timed(kv.txn(txn)).await {
                Ok(response) if response.succeeded() => {
                    results.extend((first..end).map(|_| Ok(())));
                }
                Ok(_) => {
                    for topic in &topics[first..end] {
                        results.push(self.create_topic(topic).await);
                    }
                }
                // Chunks before this one are known committed and keep their results;
                // this one may or may not have committed, and the rest were not sent.
                Err(e) => {
                    results.extend((first..topics.len()).map(|_| Err(e.clone())));
                    return Ok(results);
                }
            }
            first = end;
        }
        Ok(results)
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

    async fn list_topics_versioned(&self) -> Result<Vec<(TopicRecord, u64)>, StoreError> {
        let response = self.get_prefix("topics/").await?;
        response.kvs().iter().map(Self::versioned).collect()
    }

    async fn get_topic_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(TopicRecord, u64)>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = timed(kv.get(self.topic_key(name), None)).await?;
        response.kvs().first().map(Self::versioned).transpose()
    }

    async fn update_topic_if(&self, topic: &TopicRecord, version: u64) -> Result<bool, StoreError> {
        let key = self.topic_key(&topic.name);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                version as i64,
            )])
            .and_then([TxnOp::put(key, Self::encode(topic)?, None)]);
        let mut kv = self.client.kv_client();
        Ok(timed(kv.txn(txn)).await?.succeeded())
    }

    async fn open_session(&self, ttl_ms: i64) -> Result<i64, StoreError> {
        let ttl_s = ((ttl_ms + 999) / 1000).max(2);
        let mut lease = self.client.lease_client();
        Ok(timed(lease.grant(ttl_s, None)).await?.id())
    }

    async fn keep_alive(&self, session: i64) -> Result<bool, StoreError> {
        let mut cached = self.keeper.lock().await;
        // Any failure drops the stream; the next renewal opens a new one.
        let open = cached.take().filter(|k| k.session == session);
        let Some(mut keeper) = open else {
            let mut lease = self.client.lease_client();
            // Opening the stream renews the lease once. A lease that expired while etcd
            // was out of reach must read as "expired", so the broker joins again; read as
            // an outage it would never rejoin.
            let (sender, answers) = match within(lease.keep_alive(session)).await? {
                Ok(pair) => pair,
                Err(e) if lease_is_gone(&e) => return Ok(false),
                Err(e) => return Err(unavailable(e)),
            };
            *cached = Some(SessionKeeper {
                session,
                sender,
                answers,
            });
            return Ok(true);
        };
        timed(keeper.sender.keep_alive()).await?;
        match timed(keeper.answers.message()).await? {
            Some(response) if response.ttl() > 0 => {
                *cached = Some(keeper);
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(StoreError::Unavailable(
                "etcd closed the keep-alive stream".into(),
            )),
        }
    }

    async fn close_session(&self, session: i64) -> Result<(), StoreError> {
        let mut lease = self.client.lease_client();
        timed(lease.revoke(session)).await?;
        Ok(())
    }

    async fn register_broker(&self, info: &BrokerInfo, session: i64) -> Result<(), StoreError> {
        let key = self.key(&format!("brokers/{}", info.node_id));
        let value = serde_json::to_vec(info).map_err(unavailable)?;
        let put = TxnOp::put(
            key.clone(),
            value,
            Some(etcd_client::PutOptions::new().with_lease(session)),
        );
        // Free, or already ours (a re-registration under the same session).
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put.clone()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut kv = self.client.kv_client();
        let response = timed(kv.txn(txn)).await?;
        if response.succeeded() {
            return Ok(());
        }
        let holder = response.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
            _ => None,
        });
        if holder == Some(session) {
            let txn = Txn::new().and_then([put]);
            timed(kv.txn(txn)).await?;
            return Ok(());
        }
        Err(StoreError::AlreadyExists(format!(
            "broker {} (another live process holds this node id)",
            info.node_id
        )))
    }

    async fn live_brokers(&self) -> Result<Vec<BrokerInfo>, StoreError> {
        let response = self.get_prefix("brokers/").await?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    async fn broker_session(&self, node_id: i32) -> Result<Option<i64>, StoreError> {
        let key = self.key(&format!("brokers/{node_id}"));
        let mut kv = self.client.kv_client();
        let found = timed(kv.get(key, None)).await?;
        Ok(found
            .kvs()
            .first()
            .map(|kv| kv.lease())
            .filter(|&lease| lease != 0))
    }

    async fn end_broker_session(
        &self,
        node_id: i32,
        expected: &BrokerInfo,
        session: i64,
    ) -> Result<bool, StoreError> {
        let key = self.key(&format!("brokers/{node_id}"));
        let mut kv = self.client.kv_client();
        let found = timed(kv.get(key, None)).await?;
        let Some(found) = found.kvs().first() else {
            return Ok(false);
        };
        let registered: Option<BrokerInfo> = serde_json::from_slice(found.value()).ok();
        // The lease decides which incarnation this is: a restarted one registers the same
        // info under a new lease, and the refusals were counted against the old.
        if registered.as_ref() != Some(expected) || found.lease() == 0 || found.lease() != session {
            return Ok(false);
        }
        // Revoking a lease another process renews is what its expiry would do, sooner:
        // its keys go, its leaderships move with a new epoch, and it joins again if alive.
        let mut lease = self.client.lease_client();
        match within(lease.revoke(found.lease())).await? {
            Ok(_) => Ok(true),
            Err(e) if lease_is_gone(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn watch_view(
        &self,
        after_revision: i64,
    ) -> Result<Option<Box<dyn super::ViewWatch>>, StoreError> {
        // Everything `Broker::read_metadata` reads, and not the manifests or producer ids,
        // which change with traffic and are no part of the view.
        let options = |prefix: bool| {
            let options = WatchOptions::new().with_start_revision(after_revision + 1);
            if prefix {
                options.with_prefix()
            } else {
                options
            }
        };
        let mut client = self.client.watch_client();
        let mut stream = timed(client.watch(self.key("topics/"), Some(options(true)))).await?;
        let more = [
            ("brokers/", true),
            ("controller", false),
            ("draining/", true),
            ("broker_configs/", true),
            ("security/", true),
        ];
        for (suffix, prefix) in more {
            timed(stream.watch(self.key(suffix), Some(options(prefix)))).await?;
        }
        Ok(Some(Box::new(EtcdViewWatch { stream })))
    }

    async fn campaign(&self, node_id: i32, session: i64) -> Result<i32, StoreError> {
        let key = self.key("controller");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                node_id.to_string(),
                Some(etcd_client::PutOptions::new().with_lease(session)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut kv = self.client.kv_client();
        let response = timed(kv.txn(txn)).await?;
        if response.succeeded() {
            return Ok(node_id);
        }
        let holder = response.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .and_then(|kv| String::from_utf8_lossy(kv.value()).parse::<i32>().ok()),
            _ => None,
        });
        holder.ok_or(StoreError::Corrupt {
            key,
            message: "the controller key holds no node id".into(),
        })
    }

    async fn draining(&self) -> Result<Vec<i32>, StoreError> {
        let response = self.get_prefix("draining/").await?;
        let prefix = self.key("draining/");
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| {
                String::from_utf8_lossy(kv.key())
                    .strip_prefix(&prefix)
                    .and_then(|id| id.parse().ok())
            })
            .collect())
    }

    async fn set_draining(&self, node_id: i32, draining: bool) -> Result<(), StoreError> {
        let key = self.key(&format!("draining/{node_id}"));
        let mut kv = self.client.kv_client();
        if draining {
            timed(kv.put(key, "1", None)).await?;
        } else {
            timed(kv.delete(key, None)).await?;
        }
        Ok(())
    }

    /// The mark's value is the owner; `set_draining` writes "1" over it.
    async fn mark_draining_owned(&self, node_id: i32, owner: &str) -> Result<bool, StoreError> {
        let key = self.key(&format!("draining/{node_id}"));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, owner, None)]);
        let mut kv = self.client.kv_client();
        Ok(timed(kv.txn(txn)).await?.succeeded())
    }

    async fn undrain_owned(&self, node_id: i32, owner: &str) -> Result<bool, StoreError> {
        let key = self.key(&format!("draining/{node_id}"));
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, owner)])
            .and_then([TxnOp::delete(key.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let response = timed(kv.txn(txn)).await?;
        if response.succeeded() {
            return Ok(true);
        }
        // Not ours: gone already (nothing to undo), or marked again by someone else.
        Ok(!response
            .op_responses()
            .iter()
            .any(|op| matches!(op, etcd_client::TxnOpResponse::Get(get) if !get.kvs().is_empty())))
    }

    async fn list_security(&self, kind: SecurityKind) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = self.key(&format!("security/{}/", kind.name()));
        let response = self
            .get_prefix(&format!("security/{}/", kind.name()))
            .await?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let value = std::str::from_utf8(kv.value()).map_err(|e| StoreError::Corrupt {
                    key: key.to_string(),
                    message: e.to_string(),
                })?;
                Ok((
                    key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
                    value.to_string(),
                ))
            })
            .collect()
    }

    async fn change_security(
        &self,
        kind: SecurityKind,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<(), StoreError> {
        let key = |k: &str| self.key(&format!("security/{}/{k}", kind.name()));
        // etcd refuses a key twice in one transaction: each key appears once, a key put
        // twice with its last value, a key both put and deleted as put.
        let puts: std::collections::BTreeMap<&str, &str> =
            puts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let deletes: std::collections::BTreeSet<&str> = deletes
            .iter()
            .map(String::as_str)
            .filter(|k| !puts.contains_key(k))
            .collect();
        let mut ops: Vec<TxnOp> = deletes
            .iter()
            .map(|k| TxnOp::delete(key(k), None))
            .collect();
        ops.extend(puts.iter().map(|(k, v)| TxnOp::put(key(k), *v, None)));
        // etcd refuses transactions of more than 128 operations by default: a larger
        // change is written in transactions of SECURITY_OPS_PER_TXN, each all or nothing
        // (a failure part-way leaves the earlier parts written; the caller's reload shows
        // what is stored).
        let mut kv = self.client.kv_client();
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let part: Vec<TxnOp> = ops.by_ref().take(SECURITY_OPS_PER_TXN).collect();
            timed(kv.txn(Txn::new().and_then(part))).await?;
        }
        Ok(())
    }

    async fn broker_configs(&self) -> Result<BrokerConfigs, StoreError> {
        let prefix = self.key("broker_configs/");
        let response = self.get_prefix("broker_configs/").await?;
        let mut configs = BrokerConfigs::default();
        // A key or value this build cannot read (say one a newer build wrote) is skipped
        // with a warning rather than failing the read: every metadata round reads these.
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let scope = match key.strip_prefix(&prefix) {
                Some("default") => ConfigScope::ClusterDefault,
                Some(id) => match id.parse() {
                    Ok(id) => ConfigScope::Broker(id),
                    Err(_) => {
                        tracing::warn!(
                            key,
                            "skipping a dynamic broker config key that is not `default` or a node id"
                        );
                        continue;
                    }
                },
                None => continue,
            };
            let Some(values) = readable_broker_configs(&key, kv.value()) else {
                continue;
            };
            configs.set_scope(scope, values);
        }
        Ok(configs)
    }

    async fn set_broker_configs(
        &self,
        scope: ConfigScope,
        expected: &std::collections::BTreeMap<String, String>,
        configs: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool, StoreError> {
        let key = match scope {
            ConfigScope::ClusterDefault => self.key("broker_configs/default"),
            ConfigScope::Broker(id) => self.key(&format!("broker_configs/{id}")),
        };
        // Compared as read (values this build cannot read skipped, as `broker_configs`
        // does), then swapped on the key's revision: a set holding such a value can still
        // be changed.
        let mut kv = self.client.kv_client();
        let found = timed(kv.get(key.clone(), None)).await?;
        let (unchanged, stored) = match found.kvs().first() {
            Some(found) => (
                Compare::mod_revision(key.clone(), CompareOp::Equal, found.mod_revision()),
                readable_broker_configs(&key, found.value()).unwrap_or_default(),
            ),
            None => (
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                std::collections::BTreeMap::new(),
            ),
        };
        if stored != *expected {
            return Ok(false);
        }
        let change = if configs.is_empty() {
            TxnOp::delete(key, None)
        } else {
            TxnOp::put(key, serde_json::to_vec(configs).map_err(unavailable)?, None)
        };
        let response = timed(kv.txn(Txn::new().when([unchanged]).and_then([change]))).await?;
        Ok(response.succeeded())
    }
}

/// The watches of [`MetadataStore::watch_view`], on one gRPC stream.
struct EtcdViewWatch {
    stream: etcd_client::WatchStream,
}

#[async_trait::async_trait]
impl super::ViewWatch for EtcdViewWatch {
    async fn next_change(&mut self) -> Result<i64, StoreError> {
        loop {
            let Some(response) = self.stream.message().await.map_err(unavailable)? else {
                return Err(StoreError::Unavailable("etcd closed the watch".into()));
            };
            if response.canceled() || response.compact_revision() > 0 {
                return Err(StoreError::Unavailable(format!(
                    "etcd cancelled the watch (compacted at revision {}): {}",
                    response.compact_revision(),
                    response.cancel_reason()
                )));
            }
            // Creation and progress answers carry no events.
            let changed = response
                .events()
                .iter()
                .filter_map(|e| e.kv().map(|kv| kv.mod_revision()))
                .max();
            if let Some(revision) = changed {
                return Ok(revision);
            }
        }
    }
}

/// The dynamic broker configs stored at `key` as this build reads them: a value that is
/// not a string (say one a newer build wrote) is skipped with a warning, and so is the
/// whole set if it is not a JSON object.
fn readable_broker_configs(
    key: &str,
    bytes: &[u8],
) -> Option<std::collections::BTreeMap<String, String>> {
    let values: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(bytes) {
        Ok(values) => values,
        Err(e) => {
            tracing::warn!(key, error = %e, "skipping dynamic broker configs that are not a JSON object");
            return None;
        }
    };
    Some(
        values
            .into_iter()
            .filter_map(|(name, value)| match value {
                serde_json::Value::String(value) => Some((name, value)),
                other => {
                    tracing::warn!(key, name, value = %other, "skipping a dynamic broker config whose value is not a string");
                    None
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::readable_broker_configs;

    #[test]
    fn a_broker_config_this_build_cannot_read_is_skipped_alone() {
        let read = readable_broker_configs(
            "k",
            br#"{"log.retention.ms":"60000","num.partitions":3,"x":{"nested":"1"}}"#,
        )
        .expect("an object");
        assert_eq!(
            read.into_iter().collect::<Vec<_>>(),
            [("log.retention.ms".to_string(), "60000".to_string())]
        );
        assert_eq!(readable_broker_configs("k", b"[1, 2]"), None);
        assert_eq!(readable_broker_configs("k", b"\xff"), None);
    }
}
