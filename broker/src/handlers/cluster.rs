//! ApiVersions, Metadata, DescribeCluster.

use crate::security::Caller;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, DescribeClusterRequest, DescribeClusterResponse,
    MetadataRequest, MetadataResponse, ResponseKind,
};

use super::{str_bytes, topic_name};
use crate::broker::{AdminError, Broker};
use crate::cluster::BrokerInfo;
use crate::protocol::versions;
use crate::registry::{Topic, valid_topic_name};

/// ApiVersions. From v3 the response carries features: with `transaction_version` 2 the
/// finalized `transaction.version` 2 tells Kafka 4 clients to use KIP-890 part 2.
pub fn api_versions(broker: &Broker, version: i16) -> ResponseKind {
    use kafka_protocol::messages::api_versions_response::{
        FinalizedFeatureKey, SupportedFeatureKey,
    };
    let mut response = ApiVersionsResponse::default().with_api_keys(versions::advertised());
    if version >= 3 && broker.config.transaction_version >= 2 {
        let level = broker.config.transaction_version;
        response = response
            .with_supported_features(vec![
                SupportedFeatureKey::default()
                    .with_name(str_bytes("transaction.version"))
                    .with_min_version(0)
                    .with_max_version(2),
            ])
            // Fixed at start: a restart with another level is a new epoch to clients only
            // through a new connection, as in Kafka.
            .with_finalized_features_epoch(1)
            .with_finalized_features(vec![
                FinalizedFeatureKey::default()
                    .with_name(str_bytes("transaction.version"))
                    .with_min_version_level(level)
                    .with_max_version_level(level),
            ]);
    }
    ResponseKind::ApiVersions(response)
}

/// A diskless topic's partitions: each led, for this client, by a live broker of its
/// zone (`crate::diskless::choose_broker`) that it can reach on its listener, epoch 0.
/// Every such broker serves the partition, so all are listed as replicas and in sync,
/// the leader first: a Fetch redirect (KIP-392) names one of them, and a Java consumer
/// follows a redirect only to a replica Metadata listed (KAFKA-14379).
fn diskless_metadata(
    broker: &Broker,
    topic: &Topic,
    zone: Option<&str>,
    listener: &str,
) -> MetadataResponseTopic {
    let live = crate::diskless::reachable(broker.live_brokers(), listener);
    let mut ids: Vec<i32> = live.iter().map(|b| b.node_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let partitions = (0..topic.partition_count())
        .map(|index| {
            let key = crate::diskless::PartitionKey {
                topic_id: topic.id,
                partition: index,
            };
            let response = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_epoch(0);
            match crate::diskless::choose_broker(&live, &key, zone) {
                Some(leader) => {
                    let replicas: Vec<BrokerId> = std::iter::once(leader)
                        .chain(ids.iter().copied().filter(|&id| id != leader))
                        .map(BrokerId)
                        .collect();
                    response
                        .with_leader_id(BrokerId(leader))
                        .with_replica_nodes(replicas.clone())
                        .with_isr_nodes(replicas)
                }
                None => response
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1)),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
}

fn topic_metadata(
    broker: &Broker,
    topic: &Topic,
    zone: Option<&str>,
    listener: &str,
) -> MetadataResponseTopic {
    if topic.diskless {
        return diskless_metadata(broker, topic, zone, listener);
    }
    let live: Vec<i32> = broker.live_brokers().iter().map(|b| b.node_id).collect();
    let ids = |ids: &[i32]| ids.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .zip(&topic.record.partitions)
        .map(|(p, record)| {
            let offline: Vec<i32> = record
                .replicas
                .iter()
                .copied()
                .filter(|r| !live.contains(r))
                .collect();
            let error = if record.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(record.leader))
                .with_leader_epoch(record.leader_epoch)
                .with_replica_nodes(ids(&record.replicas))
                .with_isr_nodes(ids(&record.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(crate::group::is_internal(&topic.name))
        .with_partitions(partitions)
}

/// The broker as a client of `listener` reaches it; `None` (left out of the answer, as
/// Kafka does) if it has no such listener.
fn broker_entry(b: &BrokerInfo, listener: &str) -> Option<MetadataResponseBroker> {
    let (host, port) = b.endpoint(listener)?;
    Some(
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(b.node_id))
            .with_host(str_bytes(host))
            .with_port(port)
            .with_rack(b.rack.clone().map(str_bytes)),
    )
}

fn topic_error(name: Option<&str>, id: uuid::Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_error_code(error.code())
}

pub async fn metadata(
    broker: &Arc<Broker>,
    request: MetadataRequest,
    version: i16,
    authz: &super::Authz<'_>,
    client_id: &str,
) -> ResponseKind {
    use crate::security::acl::{AclOperation, CLUSTER_NAME, ResourceType};
    let zone = crate::diskless::client_zone(client_id);
    let caller = authz.caller();
    let all = match &request.topics {
        None => true,
        Some(list) => version == 0 && list.is_empty(),
    };
    let mut topics = Vec::new();
    if all {
        topics = broker
            .topics
            .all()
            .iter()
            // Topics the caller may not describe are not shown (not refused).
            .filter(|t| authz.can(AclOperation::Describe, ResourceType::Topic, &t.name))
            .map(|t| topic_metadata(broker, t, zone, &caller.listener))
            .collect();
    } else {
        // Before v4 there is no flag and Kafka auto-creates; after, the client decides.
        let client_allows = version < 4 || request.allow_auto_topic_creation;
        // One request of a few bytes may name thousands of unknown topics: only the first
        // few are created, the rest are UNKNOWN_TOPIC_OR_PARTITION until a retry.
        let mut may_create = broker.config.auto_create_topics_per_request;
        for wanted in request.topics.unwrap_or_default() {
            let name = wanted.name.as_ref().map(|n| n.0.to_string());
            let entry = match name {
                None => match broker.topics.by_id(wanted.topic_id) {
                    Some(topic) if !authz.allows_topic(AclOperation::Describe, &topic.name) => {
                        topic_error(
                            None,
                            wanted.topic_id,
                            ResponseError::TopicAuthorizationFailed,
                        )
                    }
                    Some(topic) => topic_metadata(broker, &topic, zone, &caller.listener),
                    None => topic_error(None, wanted.topic_id, ResponseError::UnknownTopicId),
                },
                Some(name) if !valid_topic_name(&name) => topic_error(
                    Some(&name),
                    uuid::Uuid::nil(),
                    ResponseError::InvalidTopicException,
                ),
                Some(name) if !authz.allows_topic(AclOperation::Describe, &name) => topic_error(
                    Some(&name),
                    uuid::Uuid::nil(),
                    ResponseError::TopicAuthorizationFailed,
                ),
                Some(name) => {
                    let known = broker.topics.get(&name);
                    // Auto-creation needs CREATE on the cluster or the topic, as in Kafka.
                    if known.is_none()
                        && client_allows
                        && broker.config.auto_create_topics
                        && !authz.can(AclOperation::Create, ResourceType::Cluster, CLUSTER_NAME)
                        && !authz.allows_topic(AclOperation::Create, &name)
                    {
                        topics.push(topic_error(
                            Some(&name),
                            uuid::Uuid::nil(),
                            ResponseError::TopicAuthorizationFailed,
                        ));
                        continue;
                    }
                    let creates = known.is_none() && !crate::group::is_internal(&name);
                    let found = if known.is_some() || !client_allows {
                        Ok(known)
                    } else if creates && may_create <= 0 {
                        Ok(None)
                    } else {
                        if creates {
                            may_create -= 1;
                        }
                        broker.get_or_auto_create(&name).await
                    };
                    match found {
                        Ok(Some(topic)) => topic_metadata(broker, &topic, zone, &caller.listener),
                        Ok(None) => topic_error(
                            Some(&name),
                            uuid::Uuid::nil(),
                            ResponseError::UnknownTopicOrPartition,
                        ),
                        // A limit reached is the client's doing, not the broker's trouble:
                        // no warning per refused name.
                        Err(e @ AdminError::PolicyViolation(_)) => {
                            tracing::debug!(topic = %name, error = %e, "auto-creation refused");
                            topic_error(Some(&name), uuid::Uuid::nil(), super::admin_error_code(&e))
                        }
                        Err(e) => {
                            tracing::warn!(topic = %name, error = %e, "auto-creating a topic failed");
                            let code = match e {
                                AdminError::Store(_) => ResponseError::LeaderNotAvailable,
                                other => super::admin_error_code(&other),
                            };
                            topic_error(Some(&name), uuid::Uuid::nil(), code)
                        }
                    }
                }
            };
            topics.push(entry);
        }
    }
    let brokers = broker
        .metadata_brokers()
        .iter()
        .filter_map(|b| broker_entry(b, &caller.listener))
        .collect();
    ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
            // A live broker: kafkajs sends InitProducerId to whatever is named here.
            .with_controller_id(BrokerId(broker.controller_id()))
            .with_topics(topics),
    )
}

pub fn describe_cluster(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
    caller: &Caller,
) -> ResponseKind {
    let brokers = broker
        .live_brokers()
        .iter()
        .filter_map(|b| {
            let (host, port) = b.endpoint(&caller.listener)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.node_id))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_rack(b.rack.clone().map(str_bytes)),
            )
        })
        .collect();
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_endpoint_type(request.endpoint_type)
            .with_cluster_id(str_bytes(broker.cluster_id.clone()))
            .with_controller_id(BrokerId(broker.controller_id()))
            .with_brokers(brokers),
    )
}
