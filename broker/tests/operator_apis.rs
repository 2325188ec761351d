//! The APIs operators' tools call (kafka-ui, AKHQ, Cruise Control, kafka-transactions.sh):
//! DescribeLogDirs, AlterReplicaLogDirs, DescribeProducers, and CreatePartitions with
//! explicit replica assignments, through `handlers::handle` on a real single broker. The
//! black-box side (real clients, a 3-broker cluster) is tests/test_operator_apis.py.

mod handler_support;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::alter_replica_log_dirs_request::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic,
};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, ApiKey, BrokerId,
    CreatePartitionsRequest, DescribeLogDirsRequest, DescribeLogDirsResponse,
    DescribeProducersRequest, DescribeProducersResponse, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_broker::broker::{Broker, SystemClock};
use strata_broker::security::{Caller, Principal};

use handler_support::{Store, batch, broker, broker_with, call, call_as, create, name, produce};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const LOG_DIR_NOT_FOUND: i16 = 57;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

async fn describe_log_dirs(
    broker: &Arc<Broker>,
    caller: &Caller,
    version: i16,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> DescribeLogDirsResponse {
    let topics = topics.map(|topics| {
        topics
            .into_iter()
            .map(|(topic, partitions)| {
                DescribableLogDirTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(partitions)
            })
            .collect()
    });
    let ResponseKind::DescribeLogDirs(response) = call_as(
        broker,
        caller,
        ApiKey::DescribeLogDirs,
        version,
        RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(topics)),
    )
    .await
    else {
        panic!("not a DescribeLogDirs response");
    };
    response
}

/// (topic, partition, size, offset lag, future) of every replica the response lists.
fn replicas(response: &DescribeLogDirsResponse) -> Vec<(String, i32, i64, i64, bool)> {
    let mut out: Vec<_> = response
        .results
        .iter()
        .flat_map(|dir| &dir.topics)
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.partition_size,
                    p.offset_lag,
                    p.is_future_key,
                )
            })
        })
        .collect();
    out.sort();
    out
}

/// Bytes of the segment files under a partition's directory: what `du` would count of
/// its log, independent of the broker's own bookkeeping.
fn segment_bytes(data_dir: &std::path::Path, topic: &str, partition: i32) -> i64 {
    let logs = data_dir.join("logs");
    let topic_dir = std::fs::read_dir(&logs)
        .expect("read the logs dir")
        .map(|e| e.expect("dir entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{topic}.")))
        })
        .unwrap_or_else(|| panic!("no directory for {topic} under {}", logs.display()));
    std::fs::read_dir(topic_dir.join(partition.to_string()))
        .expect("read the partition dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::metadata(p).expect("stat a segment").len() as i64)
        .sum()
}

#[tokio::test]
async fn describe_log_dirs_reports_the_data_dir_and_each_replica_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), Store::Memory).await;
    create(&broker, "orders", 2).await;
    create(&broker, "events", 1).await;
    assert_eq!(
        produce(&broker, "orders", 0, batch(&["a", "b", "c"]))
            .await
            .0,
        0
    );
    assert_eq!(produce(&broker, "events", 0, batch(&["x"])).await.0, 0);
    let data_dir = std::path::absolute(dir.path().join("data")).expect("absolute");
    let orders_0 = segment_bytes(&data_dir, "orders", 0);
    let events_0 = segment_bytes(&data_dir, "events", 0);
    assert!(orders_0 > events_0 && events_0 > 0, "{orders_0} {events_0}");

    let all = describe_log_dirs(&broker, &handler_support::caller(), 4, None).await;
    assert_eq!(all.error_code, 0);
    assert_eq!(all.results.len(), 1, "one log dir: {all:?}");
    let result = &all.results[0];
    assert_eq!(result.error_code, 0);
    assert_eq!(result.log_dir.as_str(), data_dir.display().to_string());
    assert!(result.total_bytes > 0, "{result:?}");
    assert!(
        (0..=result.total_bytes).contains(&result.usable_bytes),
        "{result:?}"
    );
    assert_eq!(
        replicas(&all),
        vec![
            ("events".into(), 0, events_0, 0, false),
            ("orders".into(), 0, orders_0, 0, false),
            ("orders".into(), 1, 0, 0, false),
        ]
    );

    // Only what is named; unknown topics and partitions are left out, as Kafka does.
    let some = describe_log_dirs(
        &broker,
        &handler_support::caller(),
        4,
        Some(vec![("orders", vec![1, 7]), ("missing", vec![0])]),
    )
    .await;
    assert_eq!(replicas(&some), vec![("orders".into(), 1, 0, 0, false)]);

    // v1 has neither the file system's sizes nor a top-level error.
    let v1 = describe_log_dirs(&broker, &handler_support::caller(), 1, None).await;
    assert_eq!(v1.results[0].total_bytes, -1);
    assert_eq!(replicas(&v1), replicas(&all));
}

/// Partitions by topic, as a request names them.
type Partitions<'a> = Vec<(&'a str, Vec<i32>)>;

async fn alter_replica_log_dirs(
    broker: &Arc<Broker>,
    caller: &Caller,
    dirs: Vec<(&str, Partitions<'_>)>,
) -> AlterReplicaLogDirsResponse {
    let dirs = dirs
        .into_iter()
        .map(|(path, topics)| {
            AlterReplicaLogDir::default()
                .with_path(s(path))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            AlterReplicaLogDirTopic::default()
                                .with_name(name(topic))
                                .with_partitions(partitions)
                        })
                        .collect(),
                )
        })
        .collect();
    let ResponseKind::AlterReplicaLogDirs(response) = call_as(
        broker,
        caller,
        ApiKey::AlterReplicaLogDirs,
        2,
        RequestKind::AlterReplicaLogDirs(AlterReplicaLogDirsRequest::default().with_dirs(dirs)),
    )
    .await
    else {
        panic!("not an AlterReplicaLogDirs response");
    };
    response
}

/// (topic, partition, error) in response order.
fn outcomes(response: &AlterReplicaLogDirsResponse) -> Vec<(String, i32, i16)> {
    response
        .results
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic_name.0.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

#[tokio::test]
async fn alter_replica_log_dirs_knows_only_the_one_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), Store::Memory).await;
    create(&broker, "orders", 2).await;
    let ours = std::path::absolute(dir.path().join("data"))
        .expect("absolute")
        .display()
        .to_string();
    let elsewhere = dir.path().join("other").display().to_string();
    let response = alter_replica_log_dirs(
        &broker,
        &handler_support::caller(),
        vec![
            (&elsewhere, vec![("orders", vec![0])]),
            (
                &ours,
                vec![("orders", vec![1, 5, -1]), ("missing", vec![0])],
            ),
        ],
    )
    .await;
    assert_eq!(
        outcomes(&response),
        vec![
            ("missing".into(), 0, UNKNOWN_TOPIC_OR_PARTITION),
            ("orders".into(), -1, UNKNOWN_TOPIC_OR_PARTITION),
            ("orders".into(), 0, LOG_DIR_NOT_FOUND),
            // Already in the one dir: nothing to move.
            ("orders".into(), 1, 0),
            ("orders".into(), 5, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
}

/// One idempotent batch of `count` records from (producer, epoch), sequences from
/// `first_sequence`.
fn idempotent_batch(producer_id: i64, epoch: i16, first_sequence: i32, count: usize) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("v{i}"))),
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

async fn describe_producers(
    broker: &Arc<Broker>,
    caller: &Caller,
    topics: Vec<(&str, Vec<i32>)>,
) -> DescribeProducersResponse {
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            TopicRequest::default()
                .with_name(name(topic))
                .with_partition_indexes(partitions)
        })
        .collect();
    let ResponseKind::DescribeProducers(response) = call_as(
        broker,
        caller,
        ApiKey::DescribeProducers,
        0,
        RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(topics)),
    )
    .await
    else {
        panic!("not a DescribeProducers response");
    };
    response
}

#[tokio::test]
async fn describe_producers_lists_each_partitions_idempotent_producers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), Store::Memory).await;
    create(&broker, "orders", 2).await;
    assert_eq!(
        produce(&broker, "orders", 0, idempotent_batch(4000, 3, 0, 2)).await,
        (0, 0)
    );
    assert_eq!(
        produce(&broker, "orders", 0, idempotent_batch(4000, 3, 2, 3)).await,
        (0, 2)
    );
    assert_eq!(
        produce(&broker, "orders", 0, idempotent_batch(5000, 0, 0, 1)).await,
        (0, 5)
    );
    // A plain producer is not tracked.
    assert_eq!(produce(&broker, "orders", 1, batch(&["x"])).await.0, 0);

    let response = describe_producers(
        &broker,
        &handler_support::caller(),
        vec![
            ("orders", vec![0, 1, 9]),
            ("missing", vec![0]),
            ("bad/name", vec![0]),
        ],
    )
    .await;
    let orders = &response.topics[0];
    let p0 = &orders.partitions[0];
    assert_eq!((p0.partition_index, p0.error_code), (0, 0));
    let seen: Vec<(i64, i32, i32, i64)> = p0
        .active_producers
        .iter()
        .map(|p| {
            (
                p.producer_id.0,
                p.producer_epoch,
                p.last_sequence,
                p.current_txn_start_offset,
            )
        })
        .collect();
    assert_eq!(seen, vec![(4000, 3, 4, -1), (5000, 0, 0, -1)]);
    for p in &p0.active_producers {
        // Kafka's lastTimestamp: the max timestamp of the producer's last batch.
        assert_eq!(p.last_timestamp, 1_700_000_000_000, "{p:?}");
        // No transaction marker yet.
        assert_eq!(p.coordinator_epoch, -1);
    }
    let p1 = &orders.partitions[1];
    assert_eq!((p1.error_code, p1.active_producers.len()), (0, 0));
    assert_eq!(orders.partitions[2].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        response.topics[1].partitions[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        response.topics[2].partitions[0].error_code,
        INVALID_TOPIC_EXCEPTION
    );
}

#[tokio::test]
async fn describe_producers_answers_each_partition_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), Store::Memory).await;
    create(&broker, "orders", 2).await;
    assert_eq!(
        produce(&broker, "orders", 0, idempotent_batch(4000, 3, 0, 2)).await,
        (0, 0)
    );
    // Index 0 a hundred thousand times, the topic twice, an unknown index repeated.
    let response = describe_producers(
        &broker,
        &handler_support::caller(),
        vec![
            ("orders", vec![0; 100_000]),
            ("orders", vec![1, 0, 7, 7, 1]),
            ("missing", vec![3; 1_000]),
        ],
    )
    .await;
    // (topic, [(partition, error code, producers listed)]).
    type Answered = Vec<(String, Vec<(i32, i16, usize)>)>;
    let answered: Answered = response
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.error_code, p.active_producers.len()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        answered,
        vec![
            (
                "orders".to_string(),
                vec![(0, 0, 1), (1, 0, 0), (7, UNKNOWN_TOPIC_OR_PARTITION, 0)]
            ),
            (
                "missing".to_string(),
                vec![(3, UNKNOWN_TOPIC_OR_PARTITION, 0)]
            ),
        ]
    );
}

async fn create_partitions(
    broker: &Arc<Broker>,
    topic: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> (i16, String) {
    let assignments = assignments.map(|a| {
        a.into_iter()
            .map(|ids| {
                CreatePartitionsAssignment::default()
                    .with_broker_ids(ids.into_iter().map(BrokerId).collect())
            })
            .collect()
    });
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only)
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(count)
                .with_assignments(assignments),
        ]);
    let ResponseKind::CreatePartitions(response) = call(
        broker,
        ApiKey::CreatePartitions,
        3,
        RequestKind::CreatePartitions(request),
    )
    .await
    else {
        panic!("not a CreatePartitions response");
    };
    let result = &response.results[0];
    (
        result.error_code,
        result
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn create_partitions_checks_explicit_assignments_as_kafka_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), Store::Memory).await;
    let me = broker.config.node_id;
    create(&broker, "orders", 1).await;
    let partitions = |broker: &Arc<Broker>| {
        broker
            .topics
            .get("orders")
            .expect("orders")
            .record
            .partitions
            .len()
    };

    let refused = [
        // Two new partitions, one assignment.
        (
            Some(vec![vec![me]]),
            "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified.",
        ),
        (
            Some(vec![vec![me], vec![]]),
            "The manual partition assignment includes an empty replica list.",
        ),
        (
            Some(vec![vec![me], vec![me + 41]]),
            &*format!(
                "The manual partition assignment includes broker {}, but no such broker is registered.",
                me + 41
            ),
        ),
        (
            Some(vec![vec![me], vec![me, me]]),
            &*format!("The manual partition assignment includes the broker {me} more than once."),
        ),
    ];
    for (assignments, message) in refused {
        for validate_only in [true, false] {
            assert_eq!(
                create_partitions(&broker, "orders", 3, assignments.clone(), validate_only).await,
                (INVALID_REPLICA_ASSIGNMENT, message.to_string()),
                "{assignments:?}"
            );
        }
    }
    assert_eq!(partitions(&broker), 1, "nothing was added");
    assert_eq!(
        create_partitions(&broker, "orders", 1, Some(vec![]), false).await,
        (
            INVALID_PARTITIONS,
            "Topic already has 1 partition(s).".into()
        )
    );

    // An empty list places them, as no list does (kafka-protocol's default is empty).
    assert_eq!(
        create_partitions(&broker, "orders", 2, Some(vec![]), false).await,
        (0, String::new())
    );
    assert_eq!(
        create_partitions(&broker, "orders", 4, Some(vec![vec![me], vec![me]]), false).await,
        (0, String::new())
    );
    let topic = broker.topics.get("orders").expect("orders");
    let assigned: Vec<Vec<i32>> = topic
        .record
        .partitions
        .iter()
        .map(|p| p.replicas.clone())
        .collect();
    assert_eq!(assigned, vec![vec![me]; 4]);
    assert_eq!(produce(&broker, "orders", 3, batch(&["new"])).await, (0, 0));
}

fn user(name: &str) -> Caller {
    Caller::new(
        Principal::user(name),
        "SASL_PLAINTEXT".into(),
        IpAddr::from([127, 0, 0, 1]),
    )
}

#[tokio::test]
async fn each_api_asks_for_kafkas_operation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker_with(dir.path(), Store::Memory, Arc::new(SystemClock), |config| {
        config.authorizer = "acl".into();
        config.super_users = "User:admin".into();
    })
    .await;
    let admin = user("admin");
    let alice = user("alice");
    create_as_admin(&broker, &admin).await;
    let ours = std::path::absolute(dir.path().join("data"))
        .expect("absolute")
        .display()
        .to_string();

    // DESCRIBE on the cluster.
    let denied = describe_log_dirs(&broker, &alice, 4, None).await;
    assert_eq!(denied.error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert!(denied.results.is_empty());
    assert!(
        describe_log_dirs(&broker, &alice, 2, None)
            .await
            .results
            .is_empty()
    );
    let allowed = describe_log_dirs(&broker, &admin, 4, None).await;
    assert_eq!(replicas(&allowed).len(), 1);

    // ALTER on the cluster.
    let dirs = || vec![(ours.as_str(), vec![("orders", vec![0])])];
    assert_eq!(
        outcomes(&alter_replica_log_dirs(&broker, &alice, dirs()).await),
        vec![("orders".into(), 0, CLUSTER_AUTHORIZATION_FAILED)]
    );
    assert_eq!(
        outcomes(&alter_replica_log_dirs(&broker, &admin, dirs()).await),
        vec![("orders".into(), 0, 0)]
    );

    // READ on the topic.
    let denied = describe_producers(&broker, &alice, vec![("orders", vec![0])]).await;
    assert_eq!(
        denied.topics[0].partitions[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    let allowed = describe_producers(&broker, &admin, vec![("orders", vec![0])]).await;
    assert_eq!(allowed.topics[0].partitions[0].error_code, 0);
}

async fn create_as_admin(broker: &Arc<Broker>, admin: &Caller) {
    use kafka_protocol::messages::CreateTopicsRequest;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("orders"))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
    let ResponseKind::CreateTopics(r) = call_as(
        broker,
        admin,
        ApiKey::CreateTopics,
        7,
        RequestKind::CreateTopics(request),
    )
    .await
    else {
        panic!("not a CreateTopics response");
    };
    assert_eq!(r.topics[0].error_code, 0);
}
