//! Topic configs through the handlers: CreateTopics and IncrementalAlterConfigs refuse
//! what Strata cannot honour with INVALID_CONFIG and a reason, APPEND and SUBTRACT edit
//! list-valued configs, and produce honours compression.type (recompression) and the
//! timestamp bounds. Every scenario runs against both object stores.

#[macro_use]
mod handler_support;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_broker::broker::{Broker, Clock, SystemClock};

use handler_support::{
    Store, batch, batch_at, batches, broker_with, call, create, create_with, fetch_at, name,
    produce,
};

const INVALID_CONFIG: i16 = 40;
const INVALID_TIMESTAMP: i16 = 32;
const INVALID_REQUEST: i16 = 42;

on_every_store!(
    append_and_subtract_edit_list_valued_configs_only,
    configs_strata_cannot_honour_are_refused_with_the_reason,
    a_zstd_topic_stores_every_produced_batch_as_zstd,
    record_timestamps_outside_the_topics_bounds_are_invalid,
    a_name_repeated_in_one_request_is_refused_and_not_created,
);

/// A broker that refuses produce only on a completely full disk: these scenarios are
/// about topic configs, not about how full the machine's disk is.
async fn roomy_broker(dir: &std::path::Path, store: Store) -> Arc<Broker> {
    broker_with(dir, store, Arc::new(SystemClock), |c| {
        c.disk_high_watermark_percent = 100;
    })
    .await
}

/// (error code, error message) of one IncrementalAlterConfigs of topic `topic`; each
/// operation is (name, operation, value).
async fn alter(
    broker: &Arc<Broker>,
    topic: &str,
    operations: &[(&str, i8, &str)],
) -> (i16, String) {
    let configs = operations
        .iter()
        .map(|(config, operation, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(config.to_string()))
                .with_config_operation(*operation)
                .with_value(Some(StrBytes::from_string(value.to_string())))
        })
        .collect();
    let body = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(configs),
    ]);
    let ResponseKind::IncrementalAlterConfigs(response) = call(
        broker,
        ApiKey::IncrementalAlterConfigs,
        1,
        RequestKind::IncrementalAlterConfigs(body),
    )
    .await
    else {
        panic!("not an IncrementalAlterConfigs response");
    };
    let result = &response.responses[0];
    (
        result.error_code,
        result
            .error_message
            .as_deref()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The value DescribeConfigs gives for one config of `topic`.
async fn described(broker: &Arc<Broker>, topic: &str, config: &str) -> String {
    let body = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_string(config.to_string())])),
    ]);
    let ResponseKind::DescribeConfigs(response) = call(
        broker,
        ApiKey::DescribeConfigs,
        4,
        RequestKind::DescribeConfigs(body),
    )
    .await
    else {
        panic!("not a DescribeConfigs response");
    };
    let configs = &response.results[0].configs;
    assert_eq!(configs.len(), 1, "{response:?}");
    configs[0].value.as_deref().unwrap_or_default().to_string()
}

const SET: i8 = 0;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

async fn append_and_subtract_edit_list_valued_configs_only(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = roomy_broker(dir.path(), store).await;
    create(&broker, "orders", 1).await;

    // APPEND starts from the default (`delete`) and adds what is not there yet.
    let appended = alter(
        &broker,
        "orders",
        &[("cleanup.policy", APPEND, "compact,delete")],
    );
    assert_eq!(appended.await, (0, String::new()));
    assert_eq!(
        described(&broker, "orders", "cleanup.policy").await,
        "delete,compact"
    );
    let subtracted = alter(&broker, "orders", &[("cleanup.policy", SUBTRACT, "delete")]);
    assert_eq!(subtracted.await, (0, String::new()));
    assert_eq!(
        described(&broker, "orders", "cleanup.policy").await,
        "compact"
    );
    let topic = broker.topics.get("orders").expect("topic");
    assert!(topic.config.log_config().compact);
    assert_eq!(
        topic.config.log_config().retention_ms,
        -1,
        "compact only: no retention"
    );

    // Subtracting the last policy leaves none, as Kafka allows: records are kept forever.
    let emptied = alter(
        &broker,
        "orders",
        &[("cleanup.policy", SUBTRACT, "compact")],
    );
    assert_eq!(emptied.await, (0, String::new()));
    assert_eq!(described(&broker, "orders", "cleanup.policy").await, "");
    let topic = broker.topics.get("orders").expect("topic");
    assert!(!topic.config.log_config().compact);
    assert_eq!(topic.config.log_config().retention_ms, -1);
    // An item that is not a policy is refused.
    let (code, message) = alter(&broker, "orders", &[("cleanup.policy", APPEND, "shred")]).await;
    assert_eq!(code, INVALID_CONFIG);
    assert!(
        message.contains("`shred` is not one of compact, delete"),
        "{message}"
    );
    assert_eq!(described(&broker, "orders", "cleanup.policy").await, "");

    // The throttled-replica lists are lists too.
    let replicas = "leader.replication.throttled.replicas";
    for (operation, items) in [(APPEND, "0:0"), (APPEND, "0:0,1:0"), (SUBTRACT, "0:0")] {
        assert_eq!(
            alter(&broker, "orders", &[(replicas, operation, items)])
                .await
                .0,
            0
        );
    }
    assert_eq!(described(&broker, "orders", replicas).await, "1:0");
    // At most 100,000 items given, or kept: the work stays linear and the stored value
    // bounded. (Repeats of one item: the edit would be quick without the cap.)
    let many = vec!["2:0"; 100_001].join(",");
    let (code, message) = alter(&broker, "orders", &[(replicas, APPEND, &many)]).await;
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.contains("at most 100000 items"), "{message}");
    assert!(
        message.len() < 1000,
        "the value is not quoted whole: {message}"
    );
    assert_eq!(described(&broker, "orders", replicas).await, "1:0");
    let distinct: Vec<String> = (0..100_000).map(|p| format!("{p}:1")).collect();
    let (code, message) = alter(
        &broker,
        "orders",
        &[(replicas, APPEND, &distinct.join(","))],
    )
    .await;
    assert_eq!(code, INVALID_CONFIG, "1:0 and 100,000 more");
    assert!(message.contains("not 100001"), "{message}");
    let (code, _) = alter(
        &broker,
        "orders",
        &[(replicas, SUBTRACT, &distinct.join(","))],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(described(&broker, "orders", replicas).await, "1:0");
    // One config twice in a resource: INVALID_REQUEST, as Kafka.
    let (code, message) = alter(
        &broker,
        "orders",
        &[(replicas, APPEND, "2:0"), (replicas, SUBTRACT, "1:0")],
    )
    .await;
    assert_eq!(code, INVALID_REQUEST);
    assert!(message.contains("more than once"), "{message}");
    assert_eq!(described(&broker, "orders", replicas).await, "1:0");
    // An operation that does not exist, and a SET without a value: INVALID_REQUEST too.
    let (code, message) = alter(&broker, "orders", &[(replicas, 7, "2:0")]).await;
    assert_eq!(code, INVALID_REQUEST);
    assert!(message.contains("operation 7"), "{message}");
    let body = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(SET)
                    .with_value(None),
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
    let result = &response.responses[0];
    assert_eq!(result.error_code, INVALID_REQUEST, "{response:?}");
    assert_eq!(
        result.error_message.as_deref(),
        Some("null value not supported for: retention.ms")
    );

    // Not a list: refused, and nothing of the request is applied.
    let (code, message) = alter(
        &broker,
        "orders",
        &[
            ("retention.bytes", SET, "1000"),
            ("retention.ms", APPEND, "5"),
        ],
    )
    .await;
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.contains("retention.ms"), "{message}");
    assert!(
        message.contains("append is allowed only for list-valued configs"),
        "{message}"
    );
    assert_eq!(described(&broker, "orders", "retention.bytes").await, "-1");
    let (code, message) = alter(&broker, "orders", &[("compression.type", SUBTRACT, "gzip")]).await;
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.contains("subtract is allowed only"), "{message}");

    // A resource named twice: INVALID_REQUEST for both entries and neither applied, as
    // Kafka; another resource of the request is applied.
    create(&broker, "payments", 1).await;
    let resource = |topic: &'static str, value: &'static str| {
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str(topic))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(SET)
                    .with_value(Some(StrBytes::from_static_str(value))),
            ])
    };
    let body = IncrementalAlterConfigsRequest::default().with_resources(vec![
        resource("orders", "1000"),
        resource("payments", "3000"),
        resource("orders", "2000"),
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
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [INVALID_REQUEST, 0, INVALID_REQUEST], "{response:?}");
    assert_eq!(
        response.responses[0].error_message.as_deref(),
        Some("Each resource must appear at most once.")
    );
    assert_ne!(described(&broker, "orders", "retention.ms").await, "1000");
    assert_ne!(described(&broker, "orders", "retention.ms").await, "2000");
    assert_eq!(described(&broker, "payments", "retention.ms").await, "3000");
}

/// (error code, error message) of one CreateTopics of `topic` with `configs`.
async fn create_refused(
    broker: &Arc<Broker>,
    topic: &str,
    configs: &[(&str, &str)],
) -> (i16, String) {
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
                .with_num_partitions(1)
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
    let result = &response.topics[0];
    (
        result.error_code,
        result
            .error_message
            .as_deref()
            .unwrap_or_default()
            .to_string(),
    )
}

async fn configs_strata_cannot_honour_are_refused_with_the_reason(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = roomy_broker(dir.path(), store).await;
    for (config, value, reason) in [
        ("message.format.version", "3.0", "removed in Kafka 4.0"),
        (
            "message.downconversion.enable",
            "true",
            "removed in Kafka 4.0",
        ),
        (
            "message.timestamp.difference.max.ms",
            "1000",
            "message.timestamp.before.max.ms",
        ),
        ("segment.jitter.ms", "1000", "jitter is not implemented"),
        ("remote.log.copy.disable", "true", "only false is supported"),
        (
            "compression.type",
            "brotli",
            "must be one of producer, uncompressed",
        ),
        ("compression.gzip.level", "0", "between 1 and 9"),
        (
            "no.such.config",
            "1",
            "unknown topic config `no.such.config`",
        ),
    ] {
        let (code, message) = create_refused(&broker, "refused", &[(config, value)]).await;
        assert_eq!(code, INVALID_CONFIG, "{config}={value}: {message}");
        assert!(message.contains(reason), "{config}={value}: {message}");
        assert!(broker.topics.get("refused").is_none());
    }
    // Accepted with no effect, and Kafka's defaults of the fixed ones.
    create_with(
        &broker,
        "accepted",
        1,
        &[
            ("preallocate", "true"),
            ("segment.index.bytes", "1048576"),
            ("file.delete.delay.ms", "1000"),
            ("segment.jitter.ms", "0"),
            ("remote.log.copy.disable", "false"),
        ],
    )
    .await;
    assert_eq!(described(&broker, "accepted", "preallocate").await, "true");
    // DescribeConfigs documents that it has no effect.
    let body = DescribeConfigsRequest::default()
        .with_include_documentation(true)
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("accepted"))
                .with_configuration_keys(Some(vec![StrBytes::from_static_str("preallocate")])),
        ]);
    let ResponseKind::DescribeConfigs(response) = call(
        &broker,
        ApiKey::DescribeConfigs,
        4,
        RequestKind::DescribeConfigs(body),
    )
    .await
    else {
        panic!("not a DescribeConfigs response");
    };
    let doc = response.results[0].configs[0].documentation.as_deref();
    assert!(
        doc.is_some_and(|doc| doc.contains("no effect in Strata")),
        "{response:?}"
    );
    create(&broker, "orders", 1).await;
    let (code, message) = alter(&broker, "orders", &[("message.format.version", SET, "3.9")]).await;
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.contains("removed in Kafka 4.0"), "{message}");
}

fn encoded(values: &[&str], compression: Compression) -> Bytes {
    let now = SystemClock.now_ms();
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: now,
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.freeze()
}

/// The codec bits of every batch of a fetched records field.
fn codecs(records: &Bytes) -> Vec<u8> {
    let mut codecs = Vec::new();
    let mut rest = &records[..];
    while rest.len() >= 61 {
        let size = 12 + u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        codecs.push(rest[22] & 0x07);
        rest = &rest[size..];
    }
    codecs
}

async fn a_zstd_topic_stores_every_produced_batch_as_zstd(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = roomy_broker(dir.path(), store).await;
    create_with(&broker, "squeezed", 1, &[("compression.type", "zstd")]).await;
    let produced = [
        (Compression::None, vec!["a", "b"]),
        (Compression::Gzip, vec!["c"]),
        (Compression::Lz4, vec!["d", "e", "f"]),
        (Compression::Snappy, vec!["g"]),
        (Compression::Zstd, vec!["h"]),
    ];
    for (compression, values) in &produced {
        let (code, _) = produce(&broker, "squeezed", 0, encoded(values, *compression)).await;
        assert_eq!(code, 0, "{compression:?}");
    }
    let fetched = fetch_at(&broker, 12, "squeezed", 0, 0, 1 << 20).await;
    let records = fetched.records.clone().expect("records");
    assert_eq!(codecs(&records), vec![4; 5], "every stored batch is zstd");
    let values: Vec<Vec<String>> = batches(&fetched)
        .into_iter()
        .map(|batch| batch.into_iter().map(|r| r.value).collect())
        .collect();
    let expected: Vec<Vec<String>> = produced
        .iter()
        .map(|(_, values)| values.iter().map(|v| v.to_string()).collect())
        .collect();
    assert_eq!(values, expected);

    // Back to `producer`: batches are stored as they come again.
    assert_eq!(
        alter(
            &broker,
            "squeezed",
            &[("compression.type", SET, "producer")]
        )
        .await
        .0,
        0
    );
    produce(&broker, "squeezed", 0, encoded(&["i"], Compression::Gzip)).await;
    let fetched = fetch_at(&broker, 12, "squeezed", 0, 8, 1 << 20).await;
    assert_eq!(codecs(&fetched.records.expect("records")), vec![1]);
    // The plain handler batch (CreateTime 2023) is not refused by the default bounds.
    assert_eq!(produce(&broker, "squeezed", 0, batch(&["j"])).await.0, 0);
}

async fn record_timestamps_outside_the_topics_bounds_are_invalid(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = roomy_broker(dir.path(), store).await;
    create(&broker, "default-bounds", 1).await;
    let now = SystemClock.now_ms();
    // Kafka 4's default message.timestamp.after.max.ms is one hour.
    let (code, _) = produce(
        &broker,
        "default-bounds",
        0,
        batch_at(&["late"], &[now + 7_200_000]),
    )
    .await;
    assert_eq!(code, INVALID_TIMESTAMP);
    let (code, _) = produce(
        &broker,
        "default-bounds",
        0,
        batch_at(&["ok"], &[now + 60_000]),
    )
    .await;
    assert_eq!(code, 0);

    create_with(
        &broker,
        "recent",
        1,
        &[("message.timestamp.before.max.ms", "60000")],
    )
    .await;
    let (code, _) = produce(
        &broker,
        "recent",
        0,
        batch_at(&["old", "new"], &[now, now - 3_600_000]),
    )
    .await;
    assert_eq!(code, INVALID_TIMESTAMP);
    // LogAppendTime topics replace producer timestamps instead of checking them.
    assert_eq!(
        alter(
            &broker,
            "recent",
            &[("message.timestamp.type", SET, "LogAppendTime")]
        )
        .await
        .0,
        0
    );
    let (code, _) = produce(&broker, "recent", 0, batch_at(&["old"], &[now - 3_600_000])).await;
    assert_eq!(code, 0);
}

/// As Kafka: a topic named twice in one CreateTopics gets one answer, INVALID_REQUEST
/// "Duplicate topic name.", and is not created; the other topics are. (Found in review:
/// the first copy was created and the others answered TOPIC_ALREADY_EXISTS.)
async fn a_name_repeated_in_one_request_is_refused_and_not_created(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = roomy_broker(dir.path(), store).await;
    let topic = |n: &str| {
        CreatableTopic::default()
            .with_name(name(n))
            .with_num_partitions(1)
            .with_replication_factor(-1)
    };
    let body = CreateTopicsRequest::default()
        .with_topics(vec![topic("twice"), topic("once"), topic("twice")])
        .with_timeout_ms(10_000);
    let ResponseKind::CreateTopics(response) = call(
        &broker,
        ApiKey::CreateTopics,
        5,
        RequestKind::CreateTopics(body),
    )
    .await
    else {
        panic!("not a CreateTopics response");
    };
    let answers: Vec<(String, i16)> = response
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.error_code))
        .collect();
    assert_eq!(
        answers,
        vec![
            ("twice".to_string(), INVALID_REQUEST),
            ("once".to_string(), 0)
        ]
    );
    assert_eq!(
        response.topics[0].error_message.as_deref(),
        Some("Duplicate topic name.")
    );
    assert!(broker.topics.get("twice").is_none());
    assert!(broker.topics.get("once").is_some());
}
