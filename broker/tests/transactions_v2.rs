//! KIP-890 part 2 (`transaction_version = 2`) through the handlers, as a Kafka 4 producer
//! drives it: ApiVersions finalizes `transaction.version` 2; the producer sends Produce v12
//! without AddPartitionsToTxn (the partition leader adds the partition) and
//! TxnOffsetCommit v5 without AddOffsetsToTxn (the group coordinator adds the offsets
//! partition); every EndTxn v5 bumps the epoch and answers it, retries of it are answered
//! with the same outcome, and the old epoch is fenced. No client available to these tests
//! speaks this protocol (librdkafka, kafka-python and kafkajs stop at the first one), so
//! the requests are Kafka's own messages, encoded and decoded as a client would.

#[macro_use]
mod handler_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, EndTxnRequest, FetchRequest, FindCoordinatorRequest, GroupId,
    InitProducerIdRequest, OffsetFetchRequest, ProduceRequest, ProducerId, RequestKind,
    ResponseKind, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_broker::broker::{Broker, SystemClock};

use handler_support::{Store, broker_with, call, create, name};

const TXN_ID: &str = "tv2-producer";
const NONE: i16 = 0;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const PRODUCER_FENCED: i16 = 90;

on_every_store!(kip_890_part_2_producer_through_the_handlers);

fn txn_id() -> TransactionalId {
    TransactionalId(StrBytes::from_static_str(TXN_ID))
}

/// A transactional batch of `values` for (producer, epoch), sequences from `first_seq`.
fn txn_batch(producer_id: i64, epoch: i16, first_seq: i32, values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: 1_700_000_000_000,
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

async fn init(broker: &Arc<Broker>) -> (i64, i16) {
    let body = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id()))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    loop {
        let ResponseKind::InitProducerId(r) = call(
            broker,
            ApiKey::InitProducerId,
            5,
            RequestKind::InitProducerId(body.clone()),
        )
        .await
        else {
            panic!("not an InitProducerId response");
        };
        if r.error_code == CONCURRENT_TRANSACTIONS {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(r.error_code, NONE, "{r:?}");
        return (r.producer_id.0, r.producer_epoch);
    }
}

/// Produce v12 of one transactional batch: the error code.
async fn produce_v12(broker: &Arc<Broker>, partition: i32, records: Bytes) -> i16 {
    let body = ProduceRequest::default()
        .with_transactional_id(Some(txn_id()))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("tv2"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let ResponseKind::Produce(r) =
        call(broker, ApiKey::Produce, 12, RequestKind::Produce(body)).await
    else {
        panic!("not a Produce response");
    };
    r.responses[0].partition_responses[0].error_code
}

/// Produce v12, retried while the answer is retriable (the previous transaction's markers
/// may still be on their way).
async fn produce_until_done(broker: &Arc<Broker>, partition: i32, records: Bytes) {
    for _ in 0..500 {
        match produce_v12(broker, partition, records.clone()).await {
            NONE => return,
            NOT_ENOUGH_REPLICAS => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("Produce v12 answered {other}"),
        }
    }
    panic!("Produce v12 still retriable after 5 s");
}

/// EndTxn at `version`: (error, producer id, epoch) of the answer.
async fn end(
    broker: &Arc<Broker>,
    (producer_id, epoch): (i64, i16),
    commit: bool,
    version: i16,
) -> (i16, i64, i16) {
    let body = EndTxnRequest::default()
        .with_transactional_id(txn_id())
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let ResponseKind::EndTxn(r) =
        call(broker, ApiKey::EndTxn, version, RequestKind::EndTxn(body)).await
    else {
        panic!("not an EndTxn response");
    };
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

/// EndTxn v5, retried while CONCURRENT_TRANSACTIONS (markers being written).
async fn end_until_done(
    broker: &Arc<Broker>,
    producer: (i64, i16),
    commit: bool,
) -> (i16, i64, i16) {
    for _ in 0..500 {
        let answer = end(broker, producer, commit, 5).await;
        if answer.0 != CONCURRENT_TRANSACTIONS {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("EndTxn still CONCURRENT_TRANSACTIONS after 5 s");
}

/// What a read_committed consumer delivers from the partition, up to the LSO: records
/// of aborted transactions (the response's list) and control records dropped.
async fn read_committed(broker: &Arc<Broker>, partition: i32) -> (i64, Vec<String>) {
    let body = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("tv2"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let ResponseKind::Fetch(r) = call(broker, ApiKey::Fetch, 11, RequestKind::Fetch(body)).await
    else {
        panic!("not a Fetch response");
    };
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, NONE, "{p:?}");
    let aborted: Vec<(i64, i64)> = p
        .aborted_transactions
        .iter()
        .flatten()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    let mut skipping = std::collections::HashSet::new();
    let mut values = Vec::new();
    let mut bytes = p.records.clone().unwrap_or_default();
    for set in RecordBatchDecoder::decode_all(&mut bytes).expect("decode") {
        for record in set.records {
            if record.control {
                skipping.remove(&record.producer_id);
                continue;
            }
            if aborted
                .iter()
                .any(|&(id, first)| id == record.producer_id && first <= record.offset)
            {
                skipping.insert(record.producer_id);
            }
            if record.transactional && skipping.contains(&record.producer_id) {
                continue;
            }
            values.push(String::from_utf8_lossy(&record.value.unwrap_or_default()).into_owned());
        }
    }
    (p.last_stable_offset, values)
}

async fn committed_values(broker: &Arc<Broker>, partition: i32, want: &[&str]) {
    for _ in 0..500 {
        let (_, values) = read_committed(broker, partition).await;
        if values == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = read_committed(broker, partition).await;
    panic!("read_committed partition {partition}: {got:?}, want {want:?}");
}

async fn kip_890_part_2_producer_through_the_handlers(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker_with(dir.path(), store, Arc::new(SystemClock), |c| {
        c.transaction_version = 2;
        c.transaction_state_partitions = 1;
        c.offsets_topic_partitions = 1;
    })
    .await;

    // ApiVersions v3 finalizes transaction.version 2; v0 has no room for features.
    let ResponseKind::ApiVersions(versions) = call(
        &broker,
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    )
    .await
    else {
        panic!("not an ApiVersions response");
    };
    let finalized: Vec<(String, i16)> = versions
        .finalized_features
        .iter()
        .map(|f| (f.name.to_string(), f.max_version_level))
        .collect();
    assert_eq!(finalized, vec![("transaction.version".to_string(), 2)]);
    assert!(versions.finalized_features_epoch >= 0);
    let end_txn = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::EndTxn as i16)
        .expect("EndTxn advertised");
    assert_eq!(end_txn.max_version, 5);
    call(
        &broker,
        ApiKey::ApiVersions,
        0,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    )
    .await;

    create(&broker, "tv2", 2).await;
    let (producer_id, e0) = init(&broker).await;

    // Transaction 1: Produce v12 straight away, no AddPartitionsToTxn.
    produce_until_done(&broker, 0, txn_batch(producer_id, e0, 0, &["a1", "a2"])).await;
    produce_until_done(&broker, 1, txn_batch(producer_id, e0, 0, &["b1"])).await;
    let (code, id, e1) = end_until_done(&broker, (producer_id, e0), true).await;
    assert_eq!(
        (code, id, e1),
        (NONE, producer_id, e0 + 1),
        "EndTxn v5 bumps"
    );
    // A retry whose answer was lost: the same outcome and epoch.
    assert_eq!(
        end_until_done(&broker, (producer_id, e0), true).await,
        (NONE, producer_id, e1)
    );
    committed_values(&broker, 0, &["a1", "a2"]).await;
    committed_values(&broker, 1, &["b1"]).await;

    // Transaction 2, at the new epoch with sequences from 0; a zombie at the old epoch
    // is fenced by the partition; the transaction is aborted, with another bump.
    produce_until_done(&broker, 0, txn_batch(producer_id, e1, 0, &["a3"])).await;
    assert_eq!(
        produce_v12(&broker, 0, txn_batch(producer_id, e0, 2, &["zombie"])).await,
        INVALID_PRODUCER_EPOCH
    );
    let (code, _, e2) = end_until_done(&broker, (producer_id, e1), false).await;
    assert_eq!((code, e2), (NONE, e1 + 1));
    committed_values(&broker, 0, &["a1", "a2"]).await;
    // The old epochs are fenced at the coordinator too.
    assert_eq!(
        end_until_done(&broker, (producer_id, e0), true).await.0,
        PRODUCER_FENCED
    );

    // Transaction 3: offsets through TxnOffsetCommit v5, no AddOffsetsToTxn, sent to the
    // group's coordinator once found (which creates the offsets topic).
    produce_until_done(&broker, 1, txn_batch(producer_id, e2, 0, &["b2"])).await;
    let find = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![StrBytes::from_static_str("tv2-group")]);
    call(
        &broker,
        ApiKey::FindCoordinator,
        4,
        RequestKind::FindCoordinator(find),
    )
    .await;
    let body = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id())
        .with_group_id(GroupId(StrBytes::from_static_str("tv2-group")))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(e2)
        .with_generation_id(-1)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(name("tv2"))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(42),
                ]),
        ]);
    let mut committed = false;
    for _ in 0..500 {
        let ResponseKind::TxnOffsetCommit(r) = call(
            &broker,
            ApiKey::TxnOffsetCommit,
            5,
            RequestKind::TxnOffsetCommit(body.clone()),
        )
        .await
        else {
            panic!("not a TxnOffsetCommit response");
        };
        match r.topics[0].partitions[0].error_code {
            NONE => {
                committed = true;
                break;
            }
            // Retriable: the coordinator was busy.
            14 | 15 | 16 | CONCURRENT_TRANSACTIONS => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("TxnOffsetCommit v5 answered {other}"),
        }
    }
    assert!(committed, "TxnOffsetCommit v5 kept failing");
    let (code, _, e3) = end_until_done(&broker, (producer_id, e2), true).await;
    assert_eq!((code, e3), (NONE, e2 + 1));
    committed_values(&broker, 1, &["b1", "b2"]).await;
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("tv2-group")))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(name("tv2"))
                .with_partition_indexes(vec![0]),
        ]));
    let mut offset = -2;
    for _ in 0..500 {
        let ResponseKind::OffsetFetch(r) = call(
            &broker,
            ApiKey::OffsetFetch,
            7,
            RequestKind::OffsetFetch(fetch.clone()),
        )
        .await
        else {
            panic!("not an OffsetFetch response");
        };
        offset = r.topics[0].partitions[0].committed_offset;
        if offset == 42 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(offset, 42, "the transaction's offset is committed with it");
}
