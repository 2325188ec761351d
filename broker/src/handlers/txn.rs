//! Transactions (KIP-98, KIP-664): InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit, DescribeTransactions,
//! ListTransactions, and WriteTxnMarkers (coordinators here write markers over the
//! replication channel; this API serves admin tools: `kafka-transactions.sh abort` of a
//! hanging transaction). The coordinator is [`crate::txn`]; TxnOffsetCommit goes to the group
//! coordinator ([`crate::group`]), which keeps the offsets aside until the marker.
//!
//! Authorization, as Kafka: WRITE on the transactional id for every request of a
//! producer; AddPartitionsToTxn also WRITE on each topic, AddOffsetsToTxn and
//! TxnOffsetCommit READ on the group (and TxnOffsetCommit READ on each topic);
//! AddPartitionsToTxn v4 (verification, between brokers) and WriteTxnMarkers
//! CLUSTER_ACTION on the cluster;
//! DescribeTransactions DESCRIBE on each id; ListTransactions shows the ids the caller
//! may describe.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, ResponseKind, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};

use super::{Authz, str_bytes, topic_name};
use crate::broker::Broker;
use crate::group::format::OffsetValue;
use crate::security::acl::{AclOperation, ResourceType};
use crate::txn::{TxnError, TxnMetadata, TxnState};

fn error_code(
    broker: &Broker,
    api: &str,
    result: Result<(), TxnError>,
    version: i16,
    fenced_since: i16,
) -> i16 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            let code = crate::txn::kafka_error(e, version, fenced_since);
            broker.metrics.error(api, code);
            code.code()
        }
    }
}

const TXN_ID_DENIED: ResponseError = ResponseError::TransactionalIdAuthorizationFailed;

fn allows_txn_id(authz: &Authz, operation: AclOperation, id: &str) -> bool {
    authz.allows(operation, ResourceType::TransactionalId, id)
}

/// InitProducerId with a transactional id (the idempotent case is
/// `init_producer_id.rs`'s).
pub async fn init_producer_id(
    broker: &Arc<Broker>,
    request: &InitProducerIdRequest,
    transactional_id: &str,
    version: i16,
) -> ResponseKind {
    let expected =
        (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    let result = broker
        .txns
        .init_producer_id(
            broker,
            transactional_id,
            request.transaction_timeout_ms,
            expected,
        )
        .await;
    let response = match result {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(error_code(broker, "InitProducerId", Err(e), version, 4))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    };
    ResponseKind::InitProducerId(response)
}

fn partition_results(
    topics: &[AddPartitionsToTxnTopic],
    mut code: impl FnMut(&str, i32) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code(&t.name.0, p))
                        })
                        .collect(),
                )
        })
        .collect()
}

/// One transaction of an AddPartitionsToTxn request: every partition gets the same
/// answer, except that unknown or denied partitions fail alone and make the others
/// OPERATION_NOT_ATTEMPTED, as in Kafka.
#[allow(clippy::too_many_arguments)]
async fn add_partitions(
    broker: &Arc<Broker>,
    authz: &Authz<'_>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let all = |code: ResponseError| partition_results(topics, |_, _| code.code());
    if !allows_txn_id(authz, AclOperation::Write, transactional_id) {
        return all(TXN_ID_DENIED);
    }
    let mut refused: HashMap<(String, i32), ResponseError> = HashMap::new();
    for t in topics {
        let denied = !authz.allows_topic(AclOperation::Write, &t.name.0);
        let topic = broker.topics.get(&t.name.0);
        for &p in &t.partitions {
            let code = if denied {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if crate::group::is_internal(&t.name.0) && !verify_only {
                Some(ResponseError::InvalidTopicException)
            } else if !topic.as_ref().is_some_and(|t| {
                // A diskless partition has no local replica: it exists if the topic
                // has it (any broker appends to it, markers included).
                if t.diskless {
                    t.has_partition(p)
                } else {
                    t.partition(p).is_some()
                }
            }) {
                Some(ResponseError::UnknownTopicOrPartition)
            } else {
                None
            };
            if let Some(code) = code {
                refused.insert((t.name.0.to_string(), p), code);
            }
        }
    }
    if !refused.is_empty() {
        return partition_results(topics, |topic, p| {
            refused
                .get(&(topic.to_string(), p))
                .map_or(ResponseError::OperationNotAttempted, |code| *code)
                .code()
        });
    }
    // Each partition once, whatever the request repeats.
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.name.0.to_string(), p)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if verify_only {
        let mut codes = HashMap::with_capacity(wanted.len());
        for partition in wanted {
            let result = broker
                .txns
                .verify_partition(&**broker, transactional_id, producer_id, epoch, &partition)
                .await;
            codes.insert(
                partition,
                error_code(broker, "AddPartitionsToTxn", result, version, 2),
            );
        }
        return partition_results(topics, |topic, p| {
            codes.get(&(topic.to_string(), p)).copied().unwrap_or(0)
        });
    }
    // Between brokers (v4+) without verify_only: a partition leader adding a partition
    // for a KIP-890 part 2 producer.
    let tv2 = version >= 4;
    let result = broker
        .txns
        .add_partitions(
            &**broker,
            transactional_id,
            producer_id,
            epoch,
            &wanted,
            tv2,
        )
        .await;
    let code = error_code(broker, "AddPartitionsToTxn", result, version, 2);
    partition_results(topics, |_, _| code)
}

pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    authz: &Authz<'_>,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> ResponseKind {
    if version < 4 {
        let results = add_partitions(
            broker,
            authz,
            &request.v3_and_below_transactional_id.0,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &request.v3_and_below_topics,
            false,
            version,
        )
        .await;
        return ResponseKind::AddPartitionsToTxn(
            AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
        );
    }
    // v4+: between brokers (a partition leader verifying a producer's transaction).
    if !authz.allows_cluster(AclOperation::ClusterAction) {
        return ResponseKind::AddPartitionsToTxn(
            AddPartitionsToTxnResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code()),
        );
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for txn in &request.transactions {
        let topics = add_partitions(
            broker,
            authz,
            &txn.transactional_id.0,
            txn.producer_id.0,
            txn.producer_epoch,
            &txn.topics,
            txn.verify_only,
            version,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn.transactional_id.clone())
                .with_topic_results(topics),
        );
    }
    ResponseKind::AddPartitionsToTxn(
        AddPartitionsToTxnResponse::default().with_results_by_transaction(results),
    )
}

/// The offsets topic's partition holding `group`, created on first use.
async fn offsets_partition(broker: &Arc<Broker>, group: &str) -> Result<(String, i32), TxnError> {
    let topic = match broker.topics.get(crate::group::OFFSETS_TOPIC) {
        Some(topic) => topic,
        None => broker
            .create_offsets_topic()
            .await
            .map_err(|_| TxnError::CoordinatorNotAvailable)?,
    };
    let index = crate::group::partition_for(group, topic.partitions.len());
    Ok((crate::group::OFFSETS_TOPIC.to_string(), index))
}

pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    authz: &Authz<'_>,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> ResponseKind {
    let answer = |code: i16| {
        ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code))
    };
    if !allows_txn_id(authz, AclOperation::Write, &request.transactional_id.0) {
        return answer(TXN_ID_DENIED.code());
    }
    if !authz.allows_group(AclOperation::Read, &request.group_id.0) {
        return answer(ResponseError::GroupAuthorizationFailed.code());
    }
    let result = match offsets_partition(broker, &request.group_id.0).await {
        Ok(partition) => {
            broker
                .txns
                .add_partitions(
                    &**broker,
                    &request.transactional_id.0,
                    request.producer_id.0,
                    request.producer_epoch,
                    &[partition],
                    false,
                )
                .await
        }
        Err(e) => Err(e),
    };
    answer(error_code(broker, "AddOffsetsToTxn", result, version, 2))
}

pub async fn end_txn(
    broker: &Arc<Broker>,
    authz: &Authz<'_>,
    request: EndTxnRequest,
    version: i16,
) -> ResponseKind {
    let response = EndTxnResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if !allows_txn_id(authz, AclOperation::Write, &request.transactional_id.0) {
        return ResponseKind::EndTxn(response.with_error_code(TXN_ID_DENIED.code()));
    }
    // EndTxn v5 is KIP-890 part 2: the epoch is bumped and the answer carries it.
    let tv2 = version >= 5;
    let result = broker
        .txns
        .end_txn(
            broker,
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
            tv2,
        )
        .await;
    let response = match result {
        Ok((producer_id, epoch)) if tv2 => response
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        _ => response,
    };
    let result = result.map(|_| ());
    if result.is_ok() && !request.committed {
        broker
            .metrics
            .txn_aborts
            .with_label_values(&["client"])
            .inc();
    }
    let code = error_code(broker, "EndTxn", result, version, 2);
    ResponseKind::EndTxn(response.with_error_code(code))
}

pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    authz: &Authz<'_>,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> ResponseKind {
    let all = |code: i16| {
        request
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect::<Vec<_>>()
    };
    let respond = |topics| {
        ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics))
    };
    if !allows_txn_id(authz, AclOperation::Write, &request.transactional_id.0) {
        return respond(all(TXN_ID_DENIED.code()));
    }
    if !authz.allows_group(AclOperation::Read, &request.group_id.0) {
        return respond(all(ResponseError::GroupAuthorizationFailed.code()));
    }
    let now = broker.clock.now_ms();
    let mut denied = Vec::new();
    let mut offsets = Vec::new();
    for t in &request.topics {
        if !authz.allows_topic(AclOperation::Read, &t.name.0) {
            denied.push(t.name.0.to_string());
            continue;
        }
        for p in &t.partitions {
            offsets.push((
                t.name.0.to_string(),
                p.partition_index,
                OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    commit_timestamp_ms: now,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                },
            ));
        }
    }
    // KIP-890: the group's offsets partition must be in the producer's open transaction
    // (AddOffsetsToTxn), or the offsets would open a transaction no marker ends. The
    // guard is taken first, so a marker written meanwhile voids the answer.
    let mut guard = None;
    if !offsets.is_empty() {
        let partition = broker
            .topics
            .get(crate::group::OFFSETS_TOPIC)
            .and_then(|t| {
                let index = crate::group::partition_for(&request.group_id.0, t.partitions.len());
                t.partition(index).cloned()
            });
        let Some(partition) = partition else {
            let code = ResponseError::CoordinatorNotAvailable;
            broker.metrics.error("TxnOffsetCommit", code);
            return respond(all(code.code()));
        };
        guard = partition.txn_guard(request.producer_id.0);
        let verify = crate::txn::VerifyRequest {
            transactional_id: request.transactional_id.0.to_string(),
            producer_id: request.producer_id.0,
            producer_epoch: request.producer_epoch,
            topic: crate::group::OFFSETS_TOPIC.to_string(),
            partition: partition.index,
            // TxnOffsetCommit v5 from a KIP-890 part 2 producer: no AddOffsetsToTxn came
            // first, the group's offsets partition is added here.
            add: version >= 5,
        };
        if let Err(code) = broker.verify_transaction(verify).await {
            let code = match code {
                ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
                | ResponseError::ConcurrentTransactions => ResponseError::CoordinatorLoadInProgress,
                ResponseError::ProducerFenced if version < 2 => ResponseError::InvalidProducerEpoch,
                other => other,
            };
            broker.metrics.error("TxnOffsetCommit", code);
            return respond(all(code.code()));
        }
    }
    let member = request.member_id.to_string();
    let instance = request
        .group_instance_id
        .as_ref()
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty());
    let results = if offsets.is_empty() {
        Vec::new()
    } else {
        broker
            .groups
            .commit(
                broker,
                &request.group_id.0,
                &member,
                instance.as_deref(),
                request.generation_id,
                offsets,
                Some(crate::group::TxnCommit {
                    producer_id: request.producer_id.0,
                    epoch: request.producer_epoch,
                    guard,
                }),
            )
            .await
    };
    let mut results = results.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let refused = denied.contains(&t.name.0.to_string());
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = if refused {
                                ResponseError::TopicAuthorizationFailed.code()
                            } else {
                                match results.next().unwrap_or(Ok(())) {
                                    Ok(()) => 0,
                                    Err(e) => {
                                        let code = super::groups::group_error_code(&e);
                                        broker.metrics.error("TxnOffsetCommit", code);
                                        code.code()
                                    }
                                }
                            };
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    respond(topics)
}

fn topics_of(meta: &TxnMetadata) -> Vec<TopicData> {
    let mut topics: Vec<TopicData> = Vec::new();
    for (topic, partition) in &meta.partitions {
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(*partition),
            None => topics.push(
                TopicData::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    topics
}

pub async fn describe_transactions(
    broker: &Arc<Broker>,
    authz: &Authz<'_>,
    request: DescribeTransactionsRequest,
) -> ResponseKind {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let state = TransactionState::default()
            .with_transactional_id(id.clone())
            .with_transaction_state(str_bytes(""))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        if !allows_txn_id(authz, AclOperation::Describe, &id.0) {
            states.push(state.with_error_code(TXN_ID_DENIED.code()));
            continue;
        }
        states.push(match broker.txns.describe(&**broker, &id.0).await {
            Ok(meta) => state
                .with_transaction_state(str_bytes(meta.state.name()))
                .with_transaction_timeout_ms(meta.timeout_ms)
                .with_transaction_start_time_ms(meta.start_ms)
                .with_producer_id(ProducerId(meta.producer_id))
                .with_producer_epoch(meta.producer_epoch)
                .with_topics(topics_of(&meta)),
            Err(e) => {
                state.with_error_code(error_code(broker, "DescribeTransactions", Err(e), 0, 0))
            }
        });
    }
    ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(states),
    )
}

const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

pub fn list_transactions(
    broker: &Arc<Broker>,
    authz: &Authz<'_>,
    request: ListTransactionsRequest,
    version: i16,
) -> ResponseKind {
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = broker.clock.now_ms();
    let mut listed: Vec<TxnMetadata> = broker
        .txns
        .list()
        .into_iter()
        .filter(|m| {
            request.state_filters.is_empty()
                || request
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == m.state.name())
        })
        .filter(|m| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .contains(&ProducerId(m.producer_id))
        })
        // v1 (KIP-994): transactions running for longer than the filter.
        .filter(|m| {
            version < 1
                || request.duration_filter < 0
                || (m.start_ms >= 0 && now - m.start_ms > request.duration_filter)
        })
        .filter(|m| {
            authz.can(
                AclOperation::Describe,
                ResourceType::TransactionalId,
                &m.transactional_id,
            )
        })
        .collect();
    listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    let states = listed
        .into_iter()
        .map(|m| {
            ListedState::default()
                .with_transactional_id(TransactionalId(str_bytes(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ResponseKind::ListTransactions(
        ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(states),
    )
}

/// WriteTxnMarkers: writes each marker to the listed partitions this broker leads, as a
/// coordinator would. Kafka's admin client sends it to abort a hanging transaction (one
/// whose coordinator lost it) in one partition. A marker for a transaction its coordinator
/// still runs would end it in that partition alone: that is the caller's responsibility,
/// as in Kafka, and why it needs CLUSTER_ACTION.
pub async fn write_txn_markers(
    broker: &Arc<Broker>,
    authz: &Authz<'_>,
    request: WriteTxnMarkersRequest,
) -> ResponseKind {
    let allowed = authz.allows_cluster(AclOperation::ClusterAction);
    let mut markers = Vec::with_capacity(request.markers.len());
    for m in request.markers {
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let name = &t.name.0;
            let writes = t.partition_indexes.iter().map(|&index| async move {
                let result = if !allowed {
                    Err(ResponseError::ClusterAuthorizationFailed)
                } else {
                    let marker = crate::txn::MarkerRequest {
                        producer_id: m.producer_id.0,
                        producer_epoch: m.producer_epoch,
                        marker: if m.transaction_result {
                            crate::log::txn::Marker::Commit
                        } else {
                            crate::log::txn::Marker::Abort
                        },
                        coordinator_epoch: m.coordinator_epoch,
                    };
                    write_marker(broker, name, index, marker).await
                };
                if let Err(code) = result {
                    broker.metrics.error("WriteTxnMarkers", code);
                }
                WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(index)
                    .with_error_code(result.err().map_or(0, |c| c.code()))
            });
            // The partitions' writes (each waits for its ISR) run together.
            let partitions = futures::future::join_all(writes).await;
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    ResponseKind::WriteTxnMarkers(WriteTxnMarkersResponse::default().with_markers(markers))
}

async fn write_marker(
    broker: &Arc<Broker>,
    topic: &str,
    index: i32,
    marker: crate::txn::MarkerRequest,
) -> Result<(), ResponseError> {
    if marker.producer_id < 0 || marker.producer_epoch < 0 {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if let Some(t) = broker.topics.get(topic).filter(|t| t.diskless) {
        if !t.has_partition(index) {
            return Err(ResponseError::UnknownTopicOrPartition);
        }
        // Any broker appends a diskless partition's marker.
        return match broker.write_diskless_marker(&t, index, marker).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ResponseError::InvalidProducerEpoch),
            Err(e) => Err(e.code()),
        };
    }
    let Some(partition) = broker.topics.partition(topic, index) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    if !partition.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    match broker.write_txn_marker_local(&partition, marker).await {
        Ok(Some(offset)) => {
            tracing::info!(
                topic,
                partition = index,
                producer_id = marker.producer_id,
                epoch = marker.producer_epoch,
                commit = marker.marker == crate::log::txn::Marker::Commit,
                offset,
                "wrote a transaction marker for WriteTxnMarkers"
            );
            Ok(())
        }
        // An older epoch than the producer's: Kafka answers the same.
        Ok(None) => Err(ResponseError::InvalidProducerEpoch),
        Err(e) => Err(super::partition_error_code(&e)),
    }
}
