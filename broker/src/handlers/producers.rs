//! DescribeProducers (KIP-664): the producers a partition's log remembers, as Kafka's
//! `kafka-transactions.sh describe-producers` and `find-hanging` read them. Any replica
//! answers from its own log, as in Kafka; a broker without a replica answers
//! NOT_LEADER_OR_FOLLOWER. READ on the topic, as in Kafka.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId, ResponseKind,
};

use super::{Authz, str_bytes};
use crate::broker::Broker;
use crate::registry::{Topic, valid_topic_name};
use crate::security::acl::AclOperation;

fn error(index: i32, code: ResponseError, message: String) -> PartitionResponse {
    PartitionResponse::default()
        .with_partition_index(index)
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(message)))
}

/// One partition's producers, or why this broker cannot say.
fn describe_partition(broker: &Broker, topic: &Topic, index: i32) -> PartitionResponse {
    let Some(partition) = topic.partition(index) else {
        return error(
            index,
            ResponseError::UnknownTopicOrPartition,
            format!(
                "topic `{}` has no partition {index}: it has {}",
                topic.name,
                topic.partitions.len()
            ),
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
            format!(
                "broker {node} holds no replica of {}-{index}; its replicas are on brokers {replicas:?}",
                topic.name
            ),
        );
    }
    if partition.is_offline() {
        return error(
            index,
            ResponseError::KafkaStorageError,
            format!(
                "the log of {}-{index} is offline on broker {node}",
                topic.name
            ),
        );
    }
    let producers = partition
        .active_producers()
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

pub fn describe_producers(
    broker: &Arc<Broker>,
    authz: &Authz,
    request: DescribeProducersRequest,
) -> ResponseKind {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let name = t.name.0.to_string();
        // Kafka's order: a name that cannot be a topic, then READ, then existence.
        let topic_error = if !valid_topic_name(&name) {
            Some((
                ResponseError::InvalidTopicException,
                format!("`{name}` is not a valid topic name"),
            ))
        } else if !authz.allows_topic(AclOperation::Read, &name) {
            Some((
                ResponseError::TopicAuthorizationFailed,
                "Topic authorization failed.".to_string(),
            ))
        } else {
            None
        };
        let topic = broker.topics.get(&name);
        let partitions = t
            .partition_indexes
            .iter()
            .map(|&index| match (&topic_error, &topic) {
                (Some((code, message)), _) => error(index, *code, message.clone()),
                (None, None) => error(
                    index,
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic `{name}` does not exist"),
                ),
                (None, Some(topic)) => describe_partition(broker, topic, index),
            })
            .inspect(|p| {
                if let Some(code) = ResponseError::try_from_code(p.error_code) {
                    broker.metrics.error("DescribeProducers", code);
                }
            })
            .collect();
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ResponseKind::DescribeProducers(DescribeProducersResponse::default().with_topics(topics))
}
