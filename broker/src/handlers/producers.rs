//! DescribeProducers (KIP-664): the producers a partition's log remembers, as Kafka's
//! `kafka-transactions.sh describe-producers` and `find-hanging` read them. Any replica
//! answers from its own log, as in Kafka; a broker without a replica answers
//! NOT_LEADER_OR_FOLLOWER. Any broker answers for a diskless partition, from its view of
//! the stored producer entries and open transactions (no coordinator epoch is stored
//! there: -1). READ on the topic, as in Kafka.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::registry::{Topic, valid_topic_name};
use crate::security::acl::AclOperation;

use super::{Authz, str_bytes};

/// Producers one response lists at most, summed over its partitions: about 40 bytes
/// each, so about 4 MB, copied under each partition's log lock. A partition whose
/// producers no longer fit is answered with POLICY_VIOLATION and a message that says to
/// ask for it alone; the first partition listed is listed whole.
pub const MAX_PRODUCERS_LISTED: usize = 100_000;

fn error(index: i32, code: ResponseError, message: StrBytes) -> PartitionResponse {
    PartitionResponse::default()
        .with_partition_index(index)
        .with_error_code(code.code())
        .with_error_message(Some(message))
}

/// One partition's producers, or why this broker cannot say. `budget` is how many more
/// producers the response may list; it is charged for those listed here.
fn describe_partition(
    broker: &Broker,
    topic: &Topic,
    index: i32,
    budget: &mut usize,
) -> PartitionResponse {
    if topic.diskless {
        return describe_diskless(broker, topic, index, budget);
    }
    let Some(partition) = topic.partition(index) else {
        return error(
            index,
            ResponseError::UnknownTopicOrPartition,
            StrBytes::from_static_str("This partition does not exist."),
        );
    };
    let replicas = topic
        .record
        .partitions
        .get(partition.index as usize)
        .map(|p| p.replicas.clone())
        .unwrap_or_default();
    let node = broker.config.node_id;
    if !replicas.contains(&node) {
        return error(
            index,
            ResponseError::NotLeaderOrFollower,
            str_bytes(format!(
                "broker {node} holds no replica of {}-{index}; its replicas are on brokers {replicas:?}",
                topic.name
            )),
        );
    }
    if partition.is_offline() {
        return error(
            index,
            ResponseError::KafkaStorageError,
            str_bytes(format!(
                "the log of {}-{index} is offline on broker {node}",
                topic.name
            )),
        );
    }
    // Nothing listed yet: the partition is listed whole, however many it has.
    let limit = if *budget == MAX_PRODUCERS_LISTED {
        usize::MAX
    } else {
        *budget
    };
    let Some(active) = partition.active_producers(limit) else {
        return error(
            index,
            ResponseError::PolicyViolation,
            StrBytes::from_static_str(
                "This response already lists as many producers as one may; ask for this partition in a request of its own.",
            ),
        );
    };
    *budget = budget.saturating_sub(active.len().max(1));
    let producers = active
        .into_iter()
        .map(|p| {
            ProducerState::default()
                .with_producer_id(ProducerId(p.producer_id))
                .with_producer_epoch(i32::from(p.epoch))
                .with_last_sequence(p.last_sequence)
                .with_last_timestamp(p.last_timestamp)
                .with_coordinator_epoch(p.coordinator_epoch)
                .with_current_txn_start_offset(p.txn_first_offset)
        })
        .collect();
    PartitionResponse::default()
        .with_partition_index(index)
        .with_active_producers(producers)
}

/// [`describe_partition`] of a diskless partition, from this broker's view.
fn describe_diskless(
    broker: &Broker,
    topic: &Topic,
    index: i32,
    budget: &mut usize,
) -> PartitionResponse {
    let view = broker.diskless.as_ref().map(|d| &d.view);
    let Some(view) = view.filter(|_| topic.has_partition(index)) else {
        return error(
            index,
            ResponseError::UnknownTopicOrPartition,
            StrBytes::from_static_str("This partition does not exist."),
        );
    };
    let state = view.get(&crate::diskless::PartitionKey {
        topic_id: topic.id,
        partition: index,
    });
    if *budget != MAX_PRODUCERS_LISTED && state.producers.len() > *budget {
        return error(
            index,
            ResponseError::PolicyViolation,
            StrBytes::from_static_str(
                "This response already lists as many producers as one may; ask for this partition in a request of its own.",
            ),
        );
    }
    *budget = budget.saturating_sub(state.producers.len().max(1));
    let producers = state
        .producers
        .iter()
        .map(|(id, entry)| {
            ProducerState::default()
                .with_producer_id(ProducerId(*id))
                .with_producer_epoch(i32::from(entry.epoch))
                .with_last_sequence(entry.batches.last().map_or(-1, |b| b.1))
                .with_last_timestamp(entry.last_ts)
                .with_coordinator_epoch(-1)
                .with_current_txn_start_offset(state.head.open.get(id).copied().unwrap_or(-1))
        })
        .collect();
    PartitionResponse::default()
        .with_partition_index(index)
        .with_active_producers(producers)
}

/// Each (topic, partition) is answered once however often the request names it, and a
/// topic named twice gets one entry: the work is bounded by the distinct partitions the
/// request names and by [`MAX_PRODUCERS_LISTED`].
pub fn describe_producers(
    broker: &Arc<Broker>,
    authz: &Authz,
    request: DescribeProducersRequest,
) -> ResponseKind {
    let mut topics: Vec<TopicResponse> = Vec::new();
    let mut topic_slots: HashMap<String, (usize, HashSet<i32>)> = HashMap::new();
    let mut budget = MAX_PRODUCERS_LISTED;
    for t in request.topics {
        let name = t.name.0.to_string();
        let (slot, answered) = topic_slots.entry(name.clone()).or_insert_with(|| {
            topics.push(TopicResponse::default().with_name(t.name.clone()));
            (topics.len() - 1, HashSet::new())
        });
        // Kafka's order: a name that cannot be a topic, then READ, then existence.
        let topic_error = if !valid_topic_name(&name) {
            Some((
                ResponseError::InvalidTopicException,
                "The request names a topic that is not a valid topic name.",
            ))
        } else if !authz.allows_topic(AclOperation::Read, &name) {
            Some((
                ResponseError::TopicAuthorizationFailed,
                "Topic authorization failed.",
            ))
        } else {
            None
        };
        let topic = broker.topics.get(&name);
        for index in t.partition_indexes {
            if !answered.insert(index) {
                continue;
            }
            let partition = match (topic_error, &topic) {
                (Some((code, message)), _) => {
                    error(index, code, StrBytes::from_static_str(message))
                }
                (None, None) => error(
                    index,
                    ResponseError::UnknownTopicOrPartition,
                    StrBytes::from_static_str("This topic does not exist."),
                ),
                (None, Some(topic)) => describe_partition(broker, topic, index, &mut budget),
            };
            if let Some(code) = ResponseError::try_from_code(partition.error_code) {
                broker.metrics.error("DescribeProducers", code);
            }
            topics[*slot].partitions.push(partition);
        }
    }
    ResponseKind::DescribeProducers(DescribeProducersResponse::default().with_topics(topics))
}
