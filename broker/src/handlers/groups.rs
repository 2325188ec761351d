//! Consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//! The logic is in [`crate::group`]; this module maps requests and errors.

use crate::security::Caller;
use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, ResponseKind, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::messages::{
    delete_groups_response::DeletableGroupResult,
    describe_groups_response::{DescribedGroup, DescribedGroupMember},
    find_coordinator_response::Coordinator,
    join_group_response::JoinGroupResponseMember,
    leave_group_response::MemberResponse,
    list_groups_response::ListedGroup,
    offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
    offset_delete_response::{
        OffsetDeleteResponsePartition as OffsetDeletePartitionResult, OffsetDeleteResponseTopic,
    },
    offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    },
};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::group::format::OffsetValue;
use crate::group::state::JoinRequest;
use crate::group::{GroupError, SyncRequest};

/// The Kafka error for a group failure.
pub fn group_error_code(error: &GroupError) -> ResponseError {
    match error {
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::TooLong(_) => ResponseError::InvalidRequest,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::InvalidCommitOffsetSize => ResponseError::InvalidCommitOffsetSize,
        GroupError::ProducerFenced => ResponseError::InvalidProducerEpoch,
    }
}

fn code(broker: &Broker, api: &str, result: &Result<(), GroupError>) -> i16 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            let code = group_error_code(e);
            broker.metrics.error(api, code);
            code.code()
        }
    }
}

/// A response's topics and partitions, in the request's order: `partition` answers each
/// requested partition (in order), `topic` wraps a topic's answers.
fn in_request_order<T, P, RP, RT>(
    topics: &[T],
    partitions_of: impl Fn(&T) -> &Vec<P>,
    mut partition: impl FnMut(&P) -> RP,
    mut topic: impl FnMut(&T, Vec<RP>) -> RT,
) -> Vec<RT> {
    topics
        .iter()
        .map(|t| {
            let answers = partitions_of(t).iter().map(&mut partition).collect();
            topic(t, answers)
        })
        .collect()
}

fn opt(s: &Option<StrBytes>) -> Option<&str> {
    s.as_ref().map(|s| s.as_str()).filter(|s| !s.is_empty())
}

pub async fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
    caller: &Caller,
) -> ResponseKind {
    let keys: Vec<StrBytes> = if version >= 4 {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        // Groups (0) live in the offsets topic, transactional ids (1) in the transaction
        // topic; share groups (2) are not supported.
        let result = match request.key_type {
            0 => broker.groups.coordinator_node(broker, &key).await,
            1 => broker
                .txns
                .coordinator_node(&**broker, &key)
                .await
                .map_err(|_| GroupError::CoordinatorNotAvailable),
            _ => Err(GroupError::CoordinatorNotAvailable),
        };
        let node = result
            .as_ref()
            .ok()
            .and_then(|&id| broker.broker_info_or_own(id))
            .and_then(|b| {
                let (host, port) = b.endpoint(&caller.listener)?;
                Some((b.node_id, host.to_string(), port))
            });
        let result = match (result, &node) {
            (Ok(_), None) => Err(GroupError::CoordinatorNotAvailable),
            (r, _) => r.map(drop),
        };
        let error = match (&result, request.key_type) {
            (Err(_), 2..) | (Err(_), ..0) => {
                broker
                    .metrics
                    .error("FindCoordinator", ResponseError::InvalidRequest);
                ResponseError::InvalidRequest.code()
            }
            _ => code(broker, "FindCoordinator", &result),
        };
        let entry = Coordinator::default().with_key(key).with_error_code(error);
        coordinators.push(match node.filter(|_| error == 0) {
            Some((node_id, host, port)) => entry
                .with_node_id(BrokerId(node_id))
                .with_host(str_bytes(host))
                .with_port(port),
            None => entry
                .with_node_id(BrokerId(-1))
                .with_host(str_bytes(String::new()))
                .with_port(-1),
        });
    }
    let mut response = FindCoordinatorResponse::default();
    if version < 4 {
        if let Some(c) = coordinators.pop() {
            response = response
                .with_error_code(c.error_code)
                .with_node_id(c.node_id)
                .with_host(c.host)
                .with_port(c.port);
        }
    } else {
        response = response.with_coordinators(coordinators);
    }
    ResponseKind::FindCoordinator(response)
}

pub async fn join_group(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> ResponseKind {
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        instance_id: opt(&request.group_instance_id).map(String::from),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member: version >= 4,
    };
    let response = JoinGroupResponse::default()
        .with_generation_id(-1)
        .with_protocol_name(Some(StrBytes::default()));
    let response = match broker.groups.join(broker, &request.group_id, join).await {
        Ok(mut joined) => {
            if version < 9 && joined.skip_assignment {
                // A static leader rejoining unchanged keeps its assignment. Before v9 there
                // is no skip_assignment field: as Kafka does, it is answered as a follower
                // (no members, its old member id as the leader), so it does not run the
                // assignor and its SyncGroup gets the stored assignment.
                joined.skip_assignment = false;
                joined.members.clear();
                joined.leader = joined.previous_leader.take().unwrap_or_default();
            }
            response
                .with_generation_id(joined.generation)
                .with_protocol_type(joined.protocol_type.map(str_bytes))
                .with_protocol_name(Some(str_bytes(joined.protocol.unwrap_or_default())))
                .with_leader(str_bytes(joined.leader))
                .with_member_id(str_bytes(joined.member_id))
                .with_skip_assignment(joined.skip_assignment)
                .with_members(
                    joined
                        .members
                        .into_iter()
                        .map(|m| {
                            JoinGroupResponseMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(m.instance_id.map(str_bytes))
                                .with_metadata(m.metadata)
                        })
                        .collect(),
                )
        }
        Err(GroupError::MemberIdRequired(id)) => {
            let result = Err(GroupError::MemberIdRequired(id.clone()));
            response
                .with_error_code(code(broker, "JoinGroup", &result))
                .with_member_id(str_bytes(id))
        }
        Err(e) => response
            .with_error_code(code(broker, "JoinGroup", &Err(e)))
            .with_member_id(request.member_id),
    };
    ResponseKind::JoinGroup(response)
}

pub async fn sync_group(broker: &Arc<Broker>, request: SyncGroupRequest) -> ResponseKind {
    let assignments: HashMap<String, bytes::Bytes> = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let result = broker
        .groups
        .sync(
            broker,
            &request.group_id,
            SyncRequest {
                member_id: &request.member_id,
                instance_id: opt(&request.group_instance_id),
                generation: request.generation_id,
                protocol_type: opt(&request.protocol_type),
                protocol: opt(&request.protocol_name),
                assignments,
            },
        )
        .await;
    let response = match result {
        Ok(synced) => SyncGroupResponse::default()
            .with_protocol_type(synced.protocol_type.map(str_bytes))
            .with_protocol_name(synced.protocol.map(str_bytes))
            .with_assignment(synced.assignment),
        Err(e) => SyncGroupResponse::default().with_error_code(code(broker, "SyncGroup", &Err(e))),
    };
    ResponseKind::SyncGroup(response)
}

pub async fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> ResponseKind {
    let result = broker
        .groups
        .heartbeat(
            broker,
            &request.group_id,
            &request.member_id,
            opt(&request.group_instance_id),
            request.generation_id,
        )
        .await;
    ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code(
        broker,
        "Heartbeat",
        &result,
    )))
}

pub async fn leave_group(
    broker: &Arc<Broker>,
    request: LeaveGroupRequest,
    version: i16,
) -> ResponseKind {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    opt(&m.group_instance_id).map(String::from),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let results = match broker
        .groups
        .leave(broker, &request.group_id, &members)
        .await
    {
        Ok(results) => results,
        Err(e) => {
            return ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(code(
                broker,
                "LeaveGroup",
                &Err(e),
            )));
        }
    };
    let mut response = LeaveGroupResponse::default();
    if version >= 3 {
        response.members = members
            .into_iter()
            .zip(&results)
            .map(|((id, instance), result)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(id))
                    .with_group_instance_id(instance.map(str_bytes))
                    .with_error_code(code(broker, "LeaveGroup", result))
            })
            .collect();
    } else if let Some(result) = results.first() {
        response.error_code = code(broker, "LeaveGroup", result);
    }
    ResponseKind::LeaveGroup(response)
}

pub async fn offset_commit(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
    version: i16,
) -> ResponseKind {
    let now = broker.clock.now_ms();
    let offsets: Vec<(String, i32, OffsetValue)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    OffsetValue {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        commit_timestamp_ms: now,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    },
                )
            })
        })
        .collect();
    let mut results = broker
        .groups
        .commit(
            broker,
            &request.group_id,
            &request.member_id,
            opt(&request.group_instance_id),
            request.generation_id_or_member_epoch,
            offsets,
            None,
        )
        .await
        .into_iter()
        .map(|result| match result {
            // A member's commit to a group that does not exist: v9 says so, earlier
            // versions answer ILLEGAL_GENERATION (as Kafka does, for compatibility).
            Err(GroupError::GroupIdNotFound) if version < 9 => Err(GroupError::IllegalGeneration),
            other => other,
        });
    let topics = in_request_order(
        &request.topics,
        |t| &t.partitions,
        |p| {
            let result = results.next().unwrap_or(Ok(()));
            OffsetCommitResponsePartition::default()
                .with_partition_index(p.partition_index)
                .with_error_code(code(broker, "OffsetCommit", &result))
        },
        |t, partitions| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        },
    );
    ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
}

type Committed = Vec<(String, i32, Option<OffsetValue>)>;
type ByTopic = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

fn committed_for(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Committed {
    broker.groups.committed(group, topics)
}

/// Groups (name, offsets) by topic in first-seen order.
fn by_topic(committed: Committed) -> ByTopic {
    let mut topics: ByTopic = Vec::new();
    for (topic, partition, value) in committed {
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, partitions)) => partitions.push((partition, value)),
            None => topics.push((topic, vec![(partition, value)])),
        }
    }
    topics
}

fn offset_fields(value: &Option<OffsetValue>) -> (i64, i32, Option<StrBytes>) {
    match value {
        Some(v) => (
            v.offset,
            v.leader_epoch,
            Some(str_bytes(v.metadata.clone().unwrap_or_default())),
        ),
        None => (-1, -1, Some(StrBytes::default())),
    }
}

/// KIP-447: UNSTABLE_OFFSET_COMMIT (retriable) for a partition whose offset an open
/// transaction is about to change, when the consumer asked for stable offsets
/// (`require_stable`, as read_committed consumers do); 0 otherwise.
fn unstable(broker: &Broker, group: &str, topic: &str, partition: i32) -> i16 {
    if broker.groups.has_pending_offsets(group, topic, partition) {
        broker
            .metrics
            .error("OffsetFetch", ResponseError::UnstableOffsetCommit);
        ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}

/// OffsetFetch. Only the group's coordinator answers with offsets: any other broker (or
/// one still loading the group's partition) answers with an error the client retries
/// after finding the coordinator again. An empty answer there would read as "nothing
/// committed" and send the consumer to auto.offset.reset.
pub async fn offset_fetch(
    broker: &Arc<Broker>,
    request: OffsetFetchRequest,
    version: i16,
) -> ResponseKind {
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for g in request.groups {
            let answer = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            if let Err(e) = broker.groups.partition(broker, &g.group_id).await {
                groups.push(answer.with_error_code(code(broker, "OffsetFetch", &Err(e))));
                continue;
            }
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let committed = committed_for(broker, &g.group_id, topics);
            let group_id = g.group_id.to_string();
            groups.push(
                answer.with_topics(
                    by_topic(committed)
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(topic_name(&topic))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(p, v)| {
                                            let (offset, epoch, metadata) = offset_fields(&v);
                                            let unstable = if request.require_stable {
                                                unstable(broker, &group_id, &topic, p)
                                            } else {
                                                0
                                            };
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(metadata)
                                                .with_error_code(unstable)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            );
        }
        return ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(groups));
    }
    let refused = broker
        .groups
        .partition(broker, &request.group_id)
        .await
        .err()
        .map(|e| code(broker, "OffsetFetch", &Err(e)));
    let topics: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let committed: Committed = match refused {
        // Versions 0 and 1 have no top-level error code: each asked partition carries it.
        Some(_) if version < 2 => topics
            .into_iter()
            .flatten()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p, None)))
            .collect(),
        Some(_) => Vec::new(),
        None => committed_for(broker, &request.group_id, topics),
    };
    let topics = by_topic(committed)
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, v)| {
                            let (offset, epoch, metadata) = offset_fields(&v);
                            let unstable = if version >= 7 && request.require_stable {
                                unstable(broker, &request.group_id, &topic, p)
                            } else {
                                0
                            };
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(metadata)
                                .with_error_code(refused.unwrap_or(unstable))
                        })
                        .collect(),
                )
        })
        .collect();
    ResponseKind::OffsetFetch(
        OffsetFetchResponse::default()
            .with_topics(topics)
            .with_error_code(refused.unwrap_or(0)),
    )
}

/// Lists every group for DESCRIBE on the cluster; otherwise the groups the caller may
/// describe, as Kafka does.
pub fn list_groups(
    broker: &Arc<Broker>,
    request: ListGroupsRequest,
    authz: &super::Authz,
) -> ResponseKind {
    use crate::security::acl::{AclOperation, CLUSTER_NAME, ResourceType};
    let all = authz.can(AclOperation::Describe, ResourceType::Cluster, CLUSTER_NAME);
    let visible = |id: &str| all || authz.can(AclOperation::Describe, ResourceType::Group, id);
    let wanted_state = |state: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(state))
    };
    // Every group here uses the classic protocol.
    let classic = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case("classic"));
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(id, _, state)| classic && wanted_state(state.name()) && visible(id))
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type))
                .with_group_state(StrBytes::from_static_str(state.name()))
                .with_group_type(StrBytes::from_static_str("classic"))
        })
        .collect();
    ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(groups))
}

pub fn describe_groups(broker: &Arc<Broker>, request: DescribeGroupsRequest) -> ResponseKind {
    let groups = request
        .groups
        .into_iter()
        .map(|id| match broker.groups.describe(&id) {
            // An unknown group is described as Dead, without an error (v0-v5).
            None => DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(StrBytes::from_static_str("Dead"))
                .with_authorized_operations(i32::MIN),
            Some(d) => DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(StrBytes::from_static_str(d.state.name()))
                .with_protocol_type(str_bytes(d.protocol_type))
                .with_protocol_data(str_bytes(d.protocol))
                .with_authorized_operations(i32::MIN)
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(m.instance_id.map(str_bytes))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        })
        .collect();
    ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn delete_groups(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> ResponseKind {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group in request.groups_names {
        let result = broker.groups.delete_group(broker, &group).await;
        results.push(
            DeletableGroupResult::default()
                .with_error_code(code(broker, "DeleteGroups", &result))
                .with_group_id(group),
        );
    }
    ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
}

pub async fn offset_delete(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> ResponseKind {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let results = match broker
        .groups
        .delete_offsets(broker, &request.group_id, &partitions)
        .await
    {
        Ok(results) => results,
        Err(e) => {
            return ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default().with_error_code(code(
                    broker,
                    "OffsetDelete",
                    &Err(e),
                )),
            );
        }
    };
    let mut results = results.into_iter();
    let topics = in_request_order(
        &request.topics,
        |t| &t.partitions,
        |p| {
            let result = results.next().unwrap_or(Ok(()));
            OffsetDeletePartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_error_code(code(broker, "OffsetDelete", &result))
        },
        |t, partitions| {
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        },
    );
    ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_topics(topics))
}
