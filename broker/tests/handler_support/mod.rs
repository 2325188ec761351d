//! Shared by the handler tests: a real broker in process (embedded metadata, logs on a
//! temp dir) over either object store, requests sent as bytes through the same decode,
//! handler and encode steps the server uses, and the scenario macro that runs each test
//! against every store.
#![allow(dead_code)] // each test file uses a different part

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FetchRequest, ListOffsetsRequest, ProduceRequest, RequestHeader,
    RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_broker::broker::{Broker, Clock, SystemClock};
use strata_broker::config::Config;
use strata_broker::telemetry::Metrics;
use strata_broker::tier::Tiering;
use strata_tiering::store::ObjectStoreBackend;

pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const MEMBER_ID_REQUIRED: i16 = 79;

/// Which object store the broker's tiered storage writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `object_store`'s `InMemory`, through [`Tiering::open_with_backend`].
    Memory,
    /// The default: a directory under the data dir, through [`Tiering::open`].
    Directory,
}

impl Store {
    /// A new, empty bucket of this kind.
    pub fn bucket(self) -> Bucket {
        match self {
            Store::Memory => Bucket::Memory(ObjectStoreBackend::in_memory()),
            Store::Directory => Bucket::Directory,
        }
    }
}

/// The object store a broker is opened on. A broker reopened on a clone (after a restart)
/// sees the same objects: the in-memory store is shared, the directory one is found again
/// under the data directory.
#[derive(Clone)]
pub enum Bucket {
    Memory(ObjectStoreBackend),
    Directory,
}

/// Runs each named scenario (an `async fn(Store)` in the calling file) once per store, as
/// `memory::<scenario>` and `directory::<scenario>`.
#[allow(unused_macros)] // not every test file runs scenarios on both stores
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::handler_support::Store::Memory).await;
                }
            )*
        }
        mod directory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::handler_support::Store::Directory).await;
                }
            )*
        }
    };
}

/// A clock the test moves by hand.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn starting_now() -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(SystemClock.now_ms())))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A single-broker cluster with its logs under `dir` and tiered storage on `store`.
pub async fn broker(dir: &Path, store: Store) -> Arc<Broker> {
    broker_with(dir, store, Arc::new(SystemClock), |_| {}).await
}

/// [`broker`] with a chosen clock and settings changed by `tune`.
pub async fn broker_with(
    dir: &Path,
    store: Store,
    clock: Arc<dyn Clock>,
    tune: impl FnOnce(&mut Config),
) -> Arc<Broker> {
    broker_on(dir, &store.bucket(), clock, tune).await
}

/// [`broker_with`] on a given bucket: a broker restarted on the same `dir` and `bucket`
/// finds its logs, metadata and objects again.
pub async fn broker_on(
    dir: &Path,
    bucket: &Bucket,
    clock: Arc<dyn Clock>,
    tune: impl FnOnce(&mut Config),
) -> Arc<Broker> {
    let mut config = Config {
        data_dir: dir.join("data"),
        auto_create_topics: false,
        ..Config::default()
    };
    tune(&mut config);
    let stores = strata_broker::cluster::open(&config)
        .await
        .expect("open the metadata store");
    let cluster_id = stores.metadata.cluster_id().await.expect("cluster id");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let manifests = stores.manifests.clone();
    let tiering = match bucket {
        Bucket::Memory(backend) => {
            Tiering::open_with_backend(&config, manifests, &metrics, backend.clone()).await
        }
        Bucket::Directory => Tiering::open(&config, &cluster_id, manifests, &metrics).await,
    }
    .expect("open tiered storage");
    let broker = Broker::open(
        config,
        stores.metadata,
        Some(Arc::new(tiering)),
        metrics,
        clock,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("open the broker");
    broker.join_cluster(true).await.expect("join");
    broker
}

/// Sends one request as a client would: encoded at `version`, decoded by the broker's
/// decoder, handled, and the response encoded at `version` and decoded back. A field the
/// version cannot carry fails here, as it would fail the connection.
pub async fn call(
    broker: &Arc<Broker>,
    api_key: ApiKey,
    version: i16,
    body: RequestKind,
) -> ResponseKind {
    call_as(broker, &caller(), api_key, version, body).await
}

/// [`call`] from a chosen caller (principal, listener, address).
#[allow(dead_code)] // not every test file calls as someone else
pub async fn call_as(
    broker: &Arc<Broker>,
    caller: &strata_broker::security::Caller,
    api_key: ApiKey,
    version: i16,
    body: RequestKind,
) -> ResponseKind {
    call_as_client(broker, caller, "handler-tests", api_key, version, body).await
}

/// [`call_as`] with a chosen `client.id` (which may carry `strata_az=<zone>`).
#[allow(dead_code)] // not every test file sets a client id
pub async fn call_as_client(
    broker: &Arc<Broker>,
    caller: &strata_broker::security::Caller,
    client_id: &str,
    api_key: ApiKey,
    version: i16,
    body: RequestKind,
) -> ResponseKind {
    const CORRELATION_ID: i32 = 7;
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())))
        .encode(&mut frame, api_key.request_header_version(version))
        .expect("encode the request header");
    body.encode(&mut frame, version)
        .unwrap_or_else(|e| panic!("encode {api_key:?} v{version}: {e}"));
    let request = strata_broker::protocol::decode_request(frame.freeze())
        .unwrap_or_else(|e| panic!("the broker cannot decode {api_key:?} v{version}: {e}"));
    let response = strata_broker::handlers::handle(broker, request, caller)
        .await
        .expect("a response");
    let mut bytes =
        strata_broker::protocol::encode_response(api_key, version, CORRELATION_ID, &response)
            .unwrap_or_else(|e| panic!("the broker cannot encode {api_key:?} v{version}: {e}"));
    let size = i32::from_be_bytes(bytes[..4].try_into().expect("a size prefix"));
    assert_eq!(size as usize, bytes.len() - 4, "frame size prefix");
    let _ = bytes.split_to(4);
    let header = ResponseHeader::decode(&mut bytes, api_key.response_header_version(version))
        .expect("decode the response header");
    assert_eq!(header.correlation_id, CORRELATION_ID);
    let decoded = ResponseKind::decode(api_key, &mut bytes, version)
        .unwrap_or_else(|e| panic!("decode the {api_key:?} v{version} response: {e}"));
    assert!(bytes.is_empty(), "{} bytes after the response", bytes.len());
    decoded
}

pub fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

pub async fn create(broker: &Arc<Broker>, topic: &str, partitions: i32) {
    create_with(broker, topic, partitions, &[]).await;
}

/// CreateTopics with topic configs.
pub async fn create_with(
    broker: &Arc<Broker>,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let body = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(-1)
                .with_configs(configs),
        ])
        .with_timeout_ms(10_000);
    let ResponseKind::CreateTopics(response) = call(
        broker,
        ApiKey::CreateTopics,
        5,
        RequestKind::CreateTopics(body),
    )
    .await
    else {
        panic!("not a CreateTopics response");
    };
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

/// One record batch of `values`, timestamps 1_700_000_000_000 + i.
pub fn batch(values: &[&str]) -> Bytes {
    let timestamps: Vec<i64> = (0..values.len() as i64)
        .map(|i| 1_700_000_000_000 + i)
        .collect();
    batch_at(values, &timestamps)
}

/// One record batch of `values` with the given create timestamps.
pub fn batch_at(values: &[&str], timestamps: &[i64]) -> Bytes {
    assert_eq!(values.len(), timestamps.len());
    let records: Vec<Record> = values
        .iter()
        .zip(timestamps)
        .enumerate()
        .map(|(i, (v, &timestamp))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch wherever offset - sequence changes: a
            // sequence that follows the offset from -1 keeps the records in one batch,
            // whose base sequence is -1 (none, as for a non-idempotent producer).
            sequence: i as i32 - 1,
            timestamp,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

/// (error code, base offset) of one Produce.
pub async fn produce(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (i16, i64) {
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let ResponseKind::Produce(response) =
        call(broker, ApiKey::Produce, 9, RequestKind::Produce(body)).await
    else {
        panic!("not a Produce response");
    };
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// One Fetch of one partition at `version` (v13 on names the topic by id), no waiting.
pub async fn fetch_at(
    broker: &Arc<Broker>,
    version: i16,
    topic: &str,
    partition: i32,
    offset: i64,
    partition_max_bytes: i32,
) -> PartitionData {
    let mut data = fetch_partitions(
        broker,
        version,
        topic,
        &[(partition, offset, partition_max_bytes)],
        1 << 20,
    )
    .await;
    data.pop().expect("one partition")
}

/// One Fetch of several partitions of `topic` at `version`, no waiting: each wanted
/// partition is (index, fetch offset, partition max bytes), in request order, and
/// `max_bytes` is the response's budget. Returns the partition responses, which must come
/// in request order.
pub async fn fetch_partitions(
    broker: &Arc<Broker>,
    version: i16,
    topic: &str,
    wanted: &[(i32, i64, i32)],
    max_bytes: i32,
) -> Vec<PartitionData> {
    let partitions = wanted
        .iter()
        .map(|&(partition, offset, partition_max_bytes)| {
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes)
        })
        .collect();
    let mut fetch_topic = FetchTopic::default().with_partitions(partitions);
    if version >= 13 {
        let id = broker.topics.get(topic).map_or(uuid::Uuid::nil(), |t| t.id);
        fetch_topic = fetch_topic.with_topic_id(id);
    } else {
        fetch_topic = fetch_topic.with_topic(name(topic));
    }
    let body = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![fetch_topic]);
    let ResponseKind::Fetch(response) =
        call(broker, ApiKey::Fetch, version, RequestKind::Fetch(body)).await
    else {
        panic!("not a Fetch response");
    };
    assert_eq!(response.responses.len(), 1, "{response:?}");
    let partitions = response.responses[0].partitions.clone();
    let indexes: Vec<i32> = partitions.iter().map(|p| p.partition_index).collect();
    let asked: Vec<i32> = wanted.iter().map(|w| w.0).collect();
    assert_eq!(indexes, asked, "the partitions answered, in request order");
    partitions
}

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub offset: i64,
    pub timestamp: i64,
    pub value: String,
}

/// The batches of a fetch response, decoded (CRCs checked by the decoder).
pub fn batches(data: &PartitionData) -> Vec<Vec<Consumed>> {
    let Some(records) = &data.records else {
        return Vec::new();
    };
    let mut bytes = records.clone();
    RecordBatchDecoder::decode_all(&mut bytes)
        .expect("the fetched records decode")
        .into_iter()
        .map(|set| {
            set.records
                .into_iter()
                .map(|r| Consumed {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    value: String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned(),
                })
                .collect()
        })
        .collect()
}

/// (error code, high watermark, values at or after `offset`) of one Fetch v11.
pub async fn fetch(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (i16, i64, Vec<String>) {
    let p = fetch_at(broker, 11, topic, partition, offset, 1 << 20).await;
    let values = batches(&p)
        .into_iter()
        .flatten()
        .filter(|r| r.offset >= offset)
        .map(|r| r.value)
        .collect();
    (p.error_code, p.high_watermark, values)
}

/// (error code, offset, timestamp) of one ListOffsets query at `version`.
pub async fn list_offsets(
    broker: &Arc<Broker>,
    version: i16,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> (i16, i64, i64) {
    let body = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let ResponseKind::ListOffsets(response) = call(
        broker,
        ApiKey::ListOffsets,
        version,
        RequestKind::ListOffsets(body),
    )
    .await
    else {
        panic!("not a ListOffsets response");
    };
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

pub async fn latest(broker: &Arc<Broker>, topic: &str, partition: i32) -> i64 {
    let (error_code, offset, _) = list_offsets(broker, 5, topic, partition, -1).await;
    assert_eq!(error_code, 0);
    offset
}

/// Polls `check` every 10 ms until it returns `Some`, for at most `limit`; the panic
/// names what was awaited.
pub async fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A PLAINTEXT client on loopback, as the default listener sees it.
pub fn caller() -> strata_broker::security::Caller {
    strata_broker::security::Caller::new(
        strata_broker::security::Principal::anonymous(),
        "PLAINTEXT".into(),
        std::net::IpAddr::from([127, 0, 0, 1]),
    )
}
