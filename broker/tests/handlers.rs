//! Request handlers in process: a real broker (embedded metadata, logs on a temp dir, the
//! local-directory object store) driven through `handlers::handle` with decoded requests,
//! as the server calls it, without sockets. Quicker and more precise than the black-box
//! suite about what each handler answers; that suite stays as it is.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FetchRequest, ListOffsetsRequest, ProduceRequest, RequestHeader,
    RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_broker::broker::{Broker, SystemClock};
use strata_broker::config::Config;
use strata_broker::protocol::Request;
use strata_broker::telemetry::Metrics;
use strata_broker::tier::Tiering;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const KAFKA_STORAGE_ERROR: i16 = 56;

async fn broker(dir: &std::path::Path) -> Arc<Broker> {
    let config = Config {
        data_dir: dir.join("data"),
        auto_create_topics: false,
        ..Config::default()
    };
    let stores = strata_broker::cluster::open(&config).await.expect("stores");
    let cluster_id = stores.metadata.cluster_id().await.expect("cluster id");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let tiering = Tiering::open(
        &config,
        &cluster_id,
        stores.manifests.clone(),
        &metrics.tiering_registry,
    )
    .await
    .expect("tiering");
    let broker = Broker::open(
        config,
        stores.metadata,
        Some(Arc::new(tiering)),
        metrics,
        Arc::new(SystemClock),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("open the broker");
    broker.join_cluster(true).await.expect("join");
    broker
}

async fn call(
    broker: &Arc<Broker>,
    api_key: ApiKey,
    version: i16,
    body: RequestKind,
) -> ResponseKind {
    let request = Request {
        api_key,
        version,
        header: RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_client_id(Some(StrBytes::from_static_str("handler-tests"))),
        body,
    };
    strata_broker::handlers::handle(broker, request, "127.0.0.1")
        .await
        .expect("a response")
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

async fn create(broker: &Arc<Broker>, topic: &str, partitions: i32) {
    let body = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(-1),
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

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i as i64,
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
async fn produce(broker: &Arc<Broker>, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
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

/// (error code, high watermark, values) of one Fetch of one partition.
async fn fetch(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (i16, i64, Vec<String>) {
    let body = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let ResponseKind::Fetch(response) =
        call(broker, ApiKey::Fetch, 11, RequestKind::Fetch(body)).await
    else {
        panic!("not a Fetch response");
    };
    let p = &response.responses[0].partitions[0];
    let mut values = Vec::new();
    if let Some(records) = &p.records {
        let mut bytes = records.clone();
        for set in RecordBatchDecoder::decode_all(&mut bytes).expect("decode") {
            for record in set.records {
                if record.offset >= offset {
                    values.push(
                        String::from_utf8_lossy(&record.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
        }
    }
    (p.error_code, p.high_watermark, values)
}

async fn latest(broker: &Arc<Broker>, topic: &str, partition: i32) -> i64 {
    let body = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(-1),
                ]),
        ]);
    let ResponseKind::ListOffsets(response) = call(
        broker,
        ApiKey::ListOffsets,
        5,
        RequestKind::ListOffsets(body),
    )
    .await
    else {
        panic!("not a ListOffsets response");
    };
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

#[tokio::test]
async fn produce_fetch_and_list_offsets_through_the_handlers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path()).await;
    create(&broker, "orders", 2).await;
    assert_eq!(
        produce(&broker, "orders", 0, batch(&["a", "b", "c"])).await,
        (0, 0)
    );
    assert_eq!(produce(&broker, "orders", 0, batch(&["d"])).await, (0, 3));
    assert_eq!(produce(&broker, "orders", 1, batch(&["x"])).await, (0, 0));
    assert_eq!(
        fetch(&broker, "orders", 0, 0).await,
        (0, 4, vec!["a".into(), "b".into(), "c".into(), "d".into()])
    );
    assert_eq!(
        fetch(&broker, "orders", 0, 3).await,
        (0, 4, vec!["d".into()])
    );
    assert_eq!(latest(&broker, "orders", 0).await, 4);
    assert_eq!(latest(&broker, "orders", 1).await, 1);
}

#[tokio::test]
async fn errors_are_kafka_error_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path()).await;
    create(&broker, "orders", 1).await;
    produce(&broker, "orders", 0, batch(&["a"])).await;
    assert_eq!(
        produce(&broker, "missing", 0, batch(&["a"])).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        fetch(&broker, "missing", 0, 0).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(fetch(&broker, "orders", 0, 5).await.0, OFFSET_OUT_OF_RANGE);
    assert_eq!(
        fetch(&broker, "orders", 7, 0).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

#[tokio::test]
async fn a_damaged_batch_on_disk_is_a_storage_error_and_nothing_else_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path()).await;
    create(&broker, "orders", 1).await;
    produce(&broker, "orders", 0, batch(&["first"])).await;
    produce(&broker, "orders", 0, batch(&["second"])).await;
    produce(&broker, "orders", 0, batch(&["third"])).await;
    // The second batch's last byte (its record's value), behind the broker's back.
    let topic = broker.topics.get("orders").expect("topic");
    let log = topic.partitions[0].dir().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&log).expect("read the segment");
    let first = 12 + u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let second = first
        + 12
        + u32::from_be_bytes(bytes[first + 8..first + 12].try_into().expect("4 bytes")) as usize;
    bytes[second - 1] ^= 0x40;
    std::fs::write(&log, &bytes).expect("write the segment");
    assert_eq!(
        fetch(&broker, "orders", 0, 0).await,
        (0, 3, vec!["first".into()])
    );
    assert_eq!(fetch(&broker, "orders", 0, 1).await.0, KAFKA_STORAGE_ERROR);
    assert_eq!(
        fetch(&broker, "orders", 0, 2).await,
        (0, 3, vec!["third".into()])
    );
    assert_eq!(
        produce(&broker, "orders", 0, batch(&["fourth"])).await,
        (0, 3)
    );
}

#[tokio::test]
async fn topic_administration_through_the_handlers() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        CreatePartitionsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
        IncrementalAlterConfigsRequest, MetadataRequest,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path()).await;
    create(&broker, "orders", 2).await;

    let metadata = |broker: Arc<Broker>| async move {
        let body = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("orders"))),
        ]));
        let ResponseKind::Metadata(response) =
            call(&broker, ApiKey::Metadata, 9, RequestKind::Metadata(body)).await
        else {
            panic!("not a Metadata response");
        };
        let topic = &response.topics[0];
        (
            topic.error_code,
            topic
                .partitions
                .iter()
                .map(|p| (p.partition_index, *p.leader_id))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(metadata(broker.clone()).await, (0, vec![(0, 0), (1, 0)]));

    // CreatePartitions: 2 -> 3.
    let body = CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name("orders"))
                .with_count(3),
        ])
        .with_timeout_ms(10_000);
    let ResponseKind::CreatePartitions(response) = call(
        &broker,
        ApiKey::CreatePartitions,
        1,
        RequestKind::CreatePartitions(body),
    )
    .await
    else {
        panic!("not a CreatePartitions response");
    };
    assert_eq!(response.results[0].error_code, 0, "{response:?}");
    assert_eq!(metadata(broker.clone()).await.1.len(), 3);
    assert_eq!(produce(&broker, "orders", 2, batch(&["new"])).await, (0, 0));

    // IncrementalAlterConfigs sets retention.ms; DescribeConfigs shows it.
    let body = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("3600000"))),
            ]),
    ]);
    let ResponseKind::IncrementalAlterConfigs(response) = call(
        &broker,
        ApiKey::IncrementalAlterConfigs,
        1,
        RequestKind::IncrementalAlterConfigs(body),
    )
    .await
    else {
        panic!("not an IncrementalAlterConfigs response");
    };
    assert_eq!(response.responses[0].error_code, 0, "{response:?}");
    let body = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")])),
    ]);
    let ResponseKind::DescribeConfigs(response) = call(
        &broker,
        ApiKey::DescribeConfigs,
        3,
        RequestKind::DescribeConfigs(body),
    )
    .await
    else {
        panic!("not a DescribeConfigs response");
    };
    let configs = &response.results[0].configs;
    assert_eq!(configs.len(), 1, "{response:?}");
    assert_eq!(configs[0].value.as_deref(), Some("3600000"));

    // DeleteTopics: gone for Fetch and Metadata.
    let body = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("orders")])
        .with_timeout_ms(10_000);
    let ResponseKind::DeleteTopics(response) = call(
        &broker,
        ApiKey::DeleteTopics,
        4,
        RequestKind::DeleteTopics(body),
    )
    .await
    else {
        panic!("not a DeleteTopics response");
    };
    assert_eq!(response.responses[0].error_code, 0, "{response:?}");
    assert_eq!(
        fetch(&broker, "orders", 0, 0).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(metadata(broker.clone()).await.0, UNKNOWN_TOPIC_OR_PARTITION);
}

#[tokio::test]
async fn committed_offsets_through_the_group_handlers() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path()).await;
    create(&broker, "orders", 2).await;
    let group = GroupId(StrBytes::from_static_str("billing"));
    // A "simple" commit: no member, generation -1 (assign() consumers do this).
    let body = OffsetCommitRequest::default()
        .with_group_id(group.clone())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(1)
                        .with_committed_offset(42),
                ]),
        ]);
    let ResponseKind::OffsetCommit(response) = call(
        &broker,
        ApiKey::OffsetCommit,
        7,
        RequestKind::OffsetCommit(body),
    )
    .await
    else {
        panic!("not an OffsetCommit response");
    };
    assert_eq!(
        response.topics[0].partitions[0].error_code, 0,
        "{response:?}"
    );

    let body = OffsetFetchRequest::default()
        .with_group_id(group.clone())
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(name("orders"))
                .with_partition_indexes(vec![0, 1]),
        ]));
    let ResponseKind::OffsetFetch(response) = call(
        &broker,
        ApiKey::OffsetFetch,
        7,
        RequestKind::OffsetFetch(body),
    )
    .await
    else {
        panic!("not an OffsetFetch response");
    };
    let offsets: Vec<(i32, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offsets, vec![(0, -1), (1, 42)]);

    let ResponseKind::ListGroups(response) = call(
        &broker,
        ApiKey::ListGroups,
        4,
        RequestKind::ListGroups(ListGroupsRequest::default()),
    )
    .await
    else {
        panic!("not a ListGroups response");
    };
    assert!(
        response.groups.iter().any(|g| g.group_id == group),
        "{response:?}"
    );
}
