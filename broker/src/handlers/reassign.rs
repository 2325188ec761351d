//! Partition placement and leadership for operators' tools: AlterPartitionReassignments
//! and ListPartitionReassignments (KIP-455), ElectLeaders (KIP-460). Each needs ALTER
//! (listing: DESCRIBE) on the cluster, as in Kafka.
//!
//! Any broker answers: the change is a compare-and-swap of the topic's stored record
//! (see [`crate::cluster::reassignment`]), which the controller then carries out. A
//! reassignment's answer means "started"; ListPartitionReassignments shows it until the
//! new replicas are in sync and the old ones are gone.

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
    ListPartitionReassignmentsResponse, ResponseKind, TopicName,
};

use super::{Authz, admin_error_code, str_bytes, topic_name};
use crate::broker::{AdminError, Broker};
use crate::cluster::TopicRecord;
use crate::cluster::reassignment::{self, ElectError, Election, ReassignError};
use crate::security::acl::AclOperation;

/// One partition's outcome: `None` for success, else Kafka's error and a message.
type Outcome = Option<(ResponseError, String)>;

/// The partitions of one request, grouped by topic in request order (a partition named
/// twice is answered once, with the last change asked for).
fn by_topic<T>(
    items: impl IntoIterator<Item = (TopicName, i32, T)>,
) -> Vec<(TopicName, Vec<(i32, T)>)> {
    let mut topics: Vec<(TopicName, Vec<(i32, T)>)> = Vec::new();
    for (topic, partition, item) in items {
        let entry = match topics.iter().position(|(t, _)| *t == topic) {
            Some(i) => &mut topics[i],
            None => {
                topics.push((topic, Vec::new()));
                topics.last_mut().expect("just pushed")
            }
        };
        entry.1.retain(|(p, _)| *p != partition);
        entry.1.push((partition, item));
    }
    topics
}

/// Applies `change` to each named partition of `topic` in one compare-and-swap of its
/// record; a partition whose change fails is left as it was.
async fn edit_partitions<T>(
    broker: &Broker,
    topic: &str,
    partitions: &[(i32, T)],
    mut change: impl FnMut(&mut crate::cluster::PartitionRecord, &T) -> Outcome,
) -> Vec<(i32, Outcome)> {
    let mut outcomes = Vec::new();
    let stored = broker
        .edit_stored_topic(topic, |record: &mut TopicRecord| {
            outcomes.clear();
            for (index, item) in partitions {
                let outcome = match usize::try_from(*index)
                    .ok()
                    .and_then(|i| record.partitions.get_mut(i))
                {
                    Some(p) => change(p, item),
                    None => Some((
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic {topic} has no partition {index}"),
                    )),
                };
                outcomes.push((*index, outcome));
            }
            Ok(())
        })
        .await;
    match stored {
        Ok(_) => outcomes,
        Err(e) => {
            let code = admin_error_code(&e);
            partitions
                .iter()
                .map(|(index, _)| (*index, Some((code, e.to_string()))))
                .collect()
        }
    }
}

/// Registered brokers (in this design, the live ones: a broker is registered while its
/// session lasts), by node id.
async fn live_brokers(broker: &Broker) -> Result<Vec<i32>, AdminError> {
    Ok(broker
        .store
        .live_brokers()
        .await?
        .into_iter()
        .map(|b| b.node_id)
        .collect())
}

pub async fn alter_partition_reassignments(
    broker: &Broker,
    authz: &Authz<'_>,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> ResponseKind {
    let respond = |code: ResponseError, message: Option<String>, responses| {
        broker.metrics.error("AlterPartitionReassignments", code);
        ResponseKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsResponse::default()
                .with_allow_replication_factor_change(request.allow_replication_factor_change)
                .with_error_code(code.code())
                .with_error_message(message.map(str_bytes))
                .with_responses(responses),
        )
    };
    if !authz.allows_cluster(AclOperation::Alter) {
        return respond(ResponseError::ClusterAuthorizationFailed, None, Vec::new());
    }
    let live = match live_brokers(broker).await {
        Ok(live) => live,
        Err(e) => return respond(admin_error_code(&e), Some(e.to_string()), Vec::new()),
    };
    // v0 has no such flag and allows any replication factor.
    let allow_rf_change = version == 0 || request.allow_replication_factor_change;
    let items = request.topics.iter().flat_map(|t| {
        t.partitions
            .iter()
            .map(|p| (t.name.clone(), p.partition_index, p.replicas.clone()))
    });
    let mut responses = Vec::new();
    for (name, partitions) in by_topic(items) {
        let outcomes = edit_partitions(broker, &name.0, &partitions, |p, target| {
            let target: Option<Vec<i32>> = target.as_ref().map(|t| t.iter().map(|b| b.0).collect());
            let result = match &target {
                None => reassignment::cancel(p, &live),
                Some(target) => {
                    let current = reassignment::original_replicas(p).len();
                    if !allow_rf_change && target.len() != current {
                        return Some((
                            ResponseError::InvalidReplicationFactor,
                            format!(
                                "the partition has {current} replicas and the new assignment {}; the request does not allow changing the replication factor",
                                target.len()
                            ),
                        ));
                    }
                    reassignment::reassign(p, target, &live, &live)
                }
            };
            result.err().map(|e| match e {
                ReassignError::NoneInProgress => {
                    (ResponseError::NoReassignmentInProgress, e.to_string())
                }
                ReassignError::InvalidAssignment(_) => {
                    (ResponseError::InvalidReplicaAssignment, e.to_string())
                }
            })
        })
        .await;
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(name)
                .with_partitions(
                    outcomes
                        .into_iter()
                        .map(|(index, outcome)| {
                            let (code, message) =
                                split(broker, "AlterPartitionReassignments", outcome);
                            ReassignablePartitionResponse::default()
                                .with_partition_index(index)
                                .with_error_code(code)
                                .with_error_message(message)
                        })
                        .collect(),
                ),
        );
    }
    ResponseKind::AlterPartitionReassignments(
        AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(request.allow_replication_factor_change)
            .with_responses(responses),
    )
}

fn split(
    broker: &Broker,
    api: &str,
    outcome: Outcome,
) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    match outcome {
        None => (0, None),
        Some((code, message)) => {
            broker.metrics.error(api, code);
            (code.code(), Some(str_bytes(message)))
        }
    }
}

pub async fn list_partition_reassignments(
    broker: &Broker,
    authz: &Authz<'_>,
    request: ListPartitionReassignmentsRequest,
) -> ResponseKind {
    let respond = |code: ResponseError, message: Option<String>| {
        broker.metrics.error("ListPartitionReassignments", code);
        ResponseKind::ListPartitionReassignments(
            ListPartitionReassignmentsResponse::default()
                .with_error_code(code.code())
                .with_error_message(message.map(str_bytes)),
        )
    };
    if !authz.allows_cluster(AclOperation::Describe) {
        return respond(ResponseError::ClusterAuthorizationFailed, None);
    }
    // Read from the store, not this broker's last refresh: a tool that starts a
    // reassignment and lists at once sees it.
    let records: Vec<TopicRecord> = match &request.topics {
        None => match broker.store.list_topics().await {
            Ok(records) => records,
            Err(e) => return respond(ResponseError::RequestTimedOut, Some(e.to_string())),
        },
        Some(topics) => {
            let mut records = Vec::new();
            for t in topics {
                match broker.store.get_topic_versioned(&t.name.0).await {
                    Ok(Some((record, _))) => records.push(record),
                    // Kafka lists nothing for a topic it does not know.
                    Ok(None) => {}
                    Err(e) => {
                        return respond(ResponseError::RequestTimedOut, Some(e.to_string()));
                    }
                }
            }
            records
        }
    };
    let wanted: Option<BTreeMap<&str, &[i32]>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.as_str(), t.partition_indexes.as_slice()))
            .collect()
    });
    let ids = |ids: &[i32]| ids.iter().map(|&i| BrokerId(i)).collect::<Vec<_>>();
    let topics = records
        .iter()
        .filter_map(|record| {
            let partitions: Vec<OngoingPartitionReassignment> = record
                .partitions
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    p.is_reassigning()
                        && wanted.as_ref().is_none_or(|w| {
                            w.get(record.name.as_str())
                                .is_some_and(|ps| ps.contains(&(*i as i32)))
                        })
                })
                .map(|(i, p)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i as i32)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&record.name))
                    .with_partitions(partitions)
            })
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
) -> ResponseKind {
    let respond = |code: ResponseError, results| {
        broker.metrics.error("ElectLeaders", code);
        ResponseKind::ElectLeaders(
            ElectLeadersResponse::default()
                .with_error_code(code.code())
                .with_replica_election_results(results),
        )
    };
    if !authz.allows_cluster(AclOperation::Alter) {
        return respond(ResponseError::ClusterAuthorizationFailed, Vec::new());
    }
    let election = match request.election_type {
        0 => Election::Preferred,
        1 => Election::Unclean,
        _ => return respond(ResponseError::InvalidRequest, Vec::new()),
    };
    let live = match live_brokers(broker).await {
        Ok(live) => live,
        Err(e) => return respond(admin_error_code(&e), Vec::new()),
    };
    // No partitions named: every partition of every topic (Kafka's "all").
    let items: Vec<(TopicName, i32, ())> = match &request.topic_partitions {
        Some(topics) => topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.clone(), p, ())))
            .collect(),
        None => match broker.store.list_topics().await {
            Ok(records) => records
                .iter()
                .flat_map(|r| (0..r.partitions.len() as i32).map(|p| (topic_name(&r.name), p, ())))
                .collect(),
            Err(e) => return respond(admin_error_code(&AdminError::Store(e)), Vec::new()),
        },
    };
    let all = request.topic_partitions.is_none();
    let mut results = Vec::new();
    for (name, partitions) in by_topic(items) {
        let outcomes = edit_partitions(broker, &name.0, &partitions, |p, ()| {
            reassignment::elect(p, election, &live).err().map(|e| {
                let code = match e {
                    ElectError::NotNeeded => ResponseError::ElectionNotNeeded,
                    ElectError::PreferredNotAvailable => ResponseError::PreferredLeaderNotAvailable,
                    ElectError::EligibleNotAvailable => ResponseError::EligibleLeadersNotAvailable,
                };
                (code, e.to_string())
            })
        })
        .await;
        // Asked for all partitions, Kafka leaves out those that needed no election.
        let partition_results: Vec<PartitionResult> = outcomes
            .into_iter()
            .filter(|(_, outcome)| {
                !(all && matches!(outcome, Some((ResponseError::ElectionNotNeeded, _))))
            })
            .map(|(index, outcome)| {
                let (code, message) = split(broker, "ElectLeaders", outcome);
                PartitionResult::default()
                    .with_partition_id(index)
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        if !partition_results.is_empty() {
            results.push(
                ReplicaElectionResult::default()
                    .with_topic(name)
                    .with_partition_result(partition_results),
            );
        }
    }
    ResponseKind::ElectLeaders(
        ElectLeadersResponse::default().with_replica_election_results(results),
    )
}
