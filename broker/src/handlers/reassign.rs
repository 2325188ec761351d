//! Partition placement and leadership for operators' tools: AlterPartitionReassignments
//! and ListPartitionReassignments (KIP-455), ElectLeaders (KIP-460). Each needs ALTER
//! (listing: DESCRIBE) on the cluster, as in Kafka.
//!
//! Any broker answers: the change is a compare-and-swap of the topic's stored record
//! (`Broker::reassign_partitions`, `Broker::elect_leaders`), which the controller then
//! carries out. A reassignment's answer means "started"; ListPartitionReassignments shows
//! it until the new replicas are in sync and the old ones are gone.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use super::{Authz, admin_error_code, str_bytes, topic_name};
use crate::broker::{Broker, Ongoing, PlacementError};
use crate::cluster::reassignment::Election;
use crate::security::acl::AclOperation;

fn code_and_message(
    broker: &Broker,
    api: &str,
    outcome: &Result<(), PlacementError>,
) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err(e) => {
            let code = e.kafka_error();
            broker.metrics.error(api, code);
            (code.code(), Some(str_bytes(e.to_string())))
        }
    }
}

/// Outcomes grouped by topic (they come in topic order: consecutive items share one).
fn grouped<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut topics: Vec<(String, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match topics.last_mut() {
            Some((last, items)) if *last == topic => items.push(item),
            _ => topics.push((topic, vec![item])),
        }
    }
    topics
}

pub async fn alter_partition_reassignments(
    broker: &Broker,
    authz: &Authz<'_>,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> ResponseKind {
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change);
    let refuse = |code: ResponseError, message: Option<String>| {
        broker.metrics.error("AlterPartitionReassignments", code);
        ResponseKind::AlterPartitionReassignments(
            response
                .clone()
                .with_error_code(code.code())
                .with_error_message(message.map(str_bytes)),
        )
    };
    if !authz.allows_cluster(AclOperation::Alter) {
        return refuse(ResponseError::ClusterAuthorizationFailed, None);
    }
    // v0 has no such flag and allows any replication factor.
    let allow_rf_change = version == 0 || request.allow_replication_factor_change;
    let changes = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let replicas = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
                (t.name.0.to_string(), p.partition_index, replicas)
            })
        })
        .collect();
    let outcomes = match broker.reassign_partitions(changes, allow_rf_change).await {
        Ok(outcomes) => outcomes,
        Err(e) => return refuse(admin_error_code(&e), Some(e.to_string())),
    };
    let responses = grouped(outcomes.into_iter().map(|(t, p, o)| (t, (p, o))))
        .into_iter()
        .map(|(name, partitions)| {
            ReassignableTopicResponse::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|(index, outcome)| {
                            let (code, message) =
                                code_and_message(broker, "AlterPartitionReassignments", outcome);
                            ReassignablePartitionResponse::default()
                                .with_partition_index(*index)
                                .with_error_code(code)
                                .with_error_message(message)
                        })
                        .collect(),
                )
        })
        .collect();
    ResponseKind::AlterPartitionReassignments(response.with_responses(responses))
}

pub async fn list_partition_reassignments(
    broker: &Broker,
    authz: &Authz<'_>,
    request: ListPartitionReassignmentsRequest,
) -> ResponseKind {
    let refuse = |code: ResponseError, message: Option<String>| {
        broker.metrics.error("ListPartitionReassignments", code);
        ResponseKind::ListPartitionReassignments(
            ListPartitionReassignmentsResponse::default()
                .with_error_code(code.code())
                .with_error_message(message.map(str_bytes)),
        )
    };
    if !authz.allows_cluster(AclOperation::Describe) {
        return refuse(ResponseError::ClusterAuthorizationFailed, None);
    }
    let wanted: Option<BTreeMap<String, Vec<i32>>> = request.topics.as_ref().map(|topics| {
        let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for t in topics {
            wanted
                .entry(t.name.0.to_string())
                .or_default()
                .extend(&t.partition_indexes);
        }
        wanted
    });
    let ongoing = match broker.list_reassignments(wanted.as_ref()).await {
        Ok(ongoing) => ongoing,
        Err(e) => return refuse(admin_error_code(&e), Some(e.to_string())),
    };
    let ids = |ids: &[i32]| ids.iter().map(|&i| BrokerId(i)).collect::<Vec<_>>();
    let topics = grouped(ongoing.into_iter().map(|o| (o.topic.clone(), o)))
        .into_iter()
        .map(|(name, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    partitions
                        .iter()
                        .map(
                            |Ongoing {
                                 partition, record, ..
                             }| {
                                OngoingPartitionReassignment::default()
                                    .with_partition_index(*partition)
                                    .with_replicas(ids(&record.replicas))
                                    .with_adding_replicas(ids(&record.adding))
                                    .with_removing_replicas(ids(&record.removing))
                            },
                        )
                        .collect(),
                )
        })
        .collect();
    ResponseKind::ListPartitionReassignments(
        ListPartitionReassignmentsResponse::default().with_topics(topics),
    )
}

pub async fn elect_leaders(
    broker: &Broker,
    authz: &Authz<'_>,
    request: ElectLeadersRequest,
    version: i16,
) -> ResponseKind {
    // v0 has no top-level error: a refusal goes on each partition asked for, as Kafka
    // answers (every version gets it there too, with the top-level code from v1).
    let refuse = |code: ResponseError| {
        broker.metrics.error("ElectLeaders", code);
        let results = request
            .topic_partitions
            .iter()
            .flatten()
            .map(|t| {
                ReplicaElectionResult::default()
                    .with_topic(t.topic.clone())
                    .with_partition_result(
                        t.partitions
                            .iter()
                            .map(|&p| {
                                PartitionResult::default()
                                    .with_partition_id(p)
                                    .with_error_code(code.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        let response = ElectLeadersResponse::default().with_replica_election_results(results);
        ResponseKind::ElectLeaders(if version >= 1 {
            response.with_error_code(code.code())
        } else {
            response
        })
    };
    if !authz.allows_cluster(AclOperation::Alter) {
        return refuse(ResponseError::ClusterAuthorizationFailed);
    }
    let election = match request.election_type {
        0 => Election::Preferred,
        1 => Election::Unclean,
        _ => return refuse(ResponseError::InvalidRequest),
    };
    // No partitions named: every partition of every topic (Kafka's "all").
    let partitions = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect()
    });
    let outcomes = match broker.elect_leaders(election, partitions).await {
        Ok(outcomes) => outcomes,
        Err(e) => return refuse(admin_error_code(&e)),
    };
    let results = grouped(outcomes.into_iter().map(|(t, p, o)| (t, (p, o))))
        .into_iter()
        .map(|(name, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(topic_name(&name))
                .with_partition_result(
                    partitions
                        .iter()
                        .map(|(index, outcome)| {
                            let (code, message) = code_and_message(broker, "ElectLeaders", outcome);
                            PartitionResult::default()
                                .with_partition_id(*index)
                                .with_error_code(code)
                                .with_error_message(message)
                        })
                        .collect(),
                )
        })
        .collect();
    ResponseKind::ElectLeaders(
        ElectLeadersResponse::default().with_replica_election_results(results),
    )
}
