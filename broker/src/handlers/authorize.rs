//! Authorization at the handler boundary, with Kafka's mapping of APIs to operations.
//!
//! [`restrict`] takes the parts of a request the caller may not touch out of it and
//! remembers them; the handler runs on the rest; [`Denied::merge`] puts an answer for
//! each removed part (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, ...) into
//! the response, in the place Kafka puts it. A request the caller may not make at all is
//! answered here, without reaching its handler ([`Check::Refuse`]). Metadata and
//! ListGroups filter inside their handlers (what a listing shows is not a refusal).
//!
//! | API | operation on resource |
//! |---|---|
//! | Produce | WRITE topic |
//! | Fetch (consumer) | READ topic |
//! | ListOffsets | DESCRIBE topic |
//! | DeleteRecords | DELETE topic |
//! | CreateTopics | CREATE cluster, else CREATE topic |
//! | DeleteTopics | DELETE topic |
//! | CreatePartitions | ALTER topic |
//! | DescribeLogDirs / AlterReplicaLogDirs | DESCRIBE / ALTER cluster (checked in `log_dirs.rs`) |
//! | DescribeProducers | READ topic (checked in `producers.rs`) |
//! | DescribeConfigs | DESCRIBE_CONFIGS topic or cluster (broker configs) |
//! | AlterConfigs, IncrementalAlterConfigs | ALTER_CONFIGS topic or cluster |
//! | FindCoordinator | DESCRIBE group or transactional id |
//! | JoinGroup, SyncGroup, Heartbeat, LeaveGroup | READ group |
//! | OffsetCommit | READ group, READ topic |
//! | OffsetFetch | DESCRIBE group, DESCRIBE topic |
//! | DescribeGroups | DESCRIBE group |
//! | DeleteGroups | DELETE group |
//! | OffsetDelete | DELETE group, READ topic |
//! | InitProducerId (idempotent) | IDEMPOTENT_WRITE cluster, or WRITE on any topic (KIP-679) |
//! | InitProducerId (transactional) | WRITE transactional id |
//! | DescribeAcls / CreateAcls, DeleteAcls | DESCRIBE / ALTER cluster |
//! | DescribeUserScramCredentials / AlterUserScramCredentials | DESCRIBE / ALTER cluster |
//! | DescribeClientQuotas / AlterClientQuotas | DESCRIBE_CONFIGS / ALTER_CONFIGS cluster |
//! | ListPartitionReassignments / AlterPartitionReassignments, ElectLeaders | DESCRIBE / ALTER cluster |

use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Authz;

mod merge;
use crate::security::acl::{AclOperation, ResourceType};

const TOPIC_DENIED: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP_DENIED: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER_DENIED: i16 = ResponseError::ClusterAuthorizationFailed.code();

/// Kafka's resource types of DescribeConfigs and AlterConfigs.
const CONFIG_TOPIC: i8 = 2;
const CONFIG_BROKER: i8 = 4;
const CONFIG_BROKER_LOGGER: i8 = 8;

/// What authorization leaves of a request.
pub enum Check {
    /// Run the handler on the (possibly reduced) request, then merge the denials.
    Handle(RequestKind, Denied),
    /// Answer with this and do not run the handler.
    Refuse(ResponseKind),
}

/// The parts taken out of a request, to be answered as denied.
#[derive(Default)]
pub enum Denied {
    #[default]
    Nothing,
    Produce(Vec<produce_request::TopicProduceData>),
    Fetch(Vec<fetch_request::FetchTopic>),
    ListOffsets(Vec<list_offsets_request::ListOffsetsTopic>),
    DeleteRecords(Vec<delete_records_request::DeleteRecordsTopic>),
    CreateTopics(Vec<TopicName>),
    DeleteTopics(Vec<(Option<TopicName>, uuid::Uuid)>),
    CreatePartitions(Vec<TopicName>),
    DescribeConfigs(Vec<(i8, StrBytes, i16)>),
    AlterConfigs(Vec<(i8, StrBytes, i16)>),
    IncrementalAlterConfigs(Vec<(i8, StrBytes, i16)>),
    OffsetCommit(Vec<offset_commit_request::OffsetCommitRequestTopic>),
    /// v0–v7: topics of the one group; v8+: (group index, topics).
    OffsetFetch(Vec<offset_fetch_request::OffsetFetchRequestTopic>),
    OffsetFetchGroups(Vec<(usize, Vec<offset_fetch_request::OffsetFetchRequestTopics>)>),
    DescribeGroups(Vec<GroupId>),
    DeleteGroups(Vec<GroupId>),
    OffsetDelete(Vec<offset_delete_request::OffsetDeleteRequestTopic>),
    /// The keys, and the error (group or transactional id denied).
    FindCoordinator(Vec<StrBytes>, i16),
}

/// The error of a config resource the caller may not touch.
fn config_denied(resource_type: i8) -> i16 {
    if resource_type == CONFIG_TOPIC {
        TOPIC_DENIED
    } else {
        CLUSTER_DENIED
    }
}

/// The resource a config resource is checked on.
fn config_resource(resource_type: i8, name: &str) -> (ResourceType, String) {
    match resource_type {
        CONFIG_TOPIC => (ResourceType::Topic, name.to_string()),
        CONFIG_BROKER | CONFIG_BROKER_LOGGER => (
            ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME.to_string(),
        ),
        // Unknown resource types are the handler's to refuse.
        _ => (
            ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME.to_string(),
        ),
    }
}

/// Config resources split by whether `operation` is allowed on them: (kept, denied as
/// (resource type, name, error)).
fn split_configs<T>(
    authz: &Authz,
    operation: AclOperation,
    resources: Vec<T>,
    key: impl Fn(&T) -> (i8, &StrBytes),
) -> (Vec<T>, Vec<(i8, StrBytes, i16)>) {
    let (kept, denied) = split(resources, |c| {
        let (resource_type, name) = key(c);
        let (kind, name) = config_resource(resource_type, name);
        authz.allows(operation, kind, &name)
    });
    let denied = denied
        .iter()
        .map(|c| {
            let (resource_type, name) = key(c);
            (resource_type, name.clone(), config_denied(resource_type))
        })
        .collect();
    (kept, denied)
}

/// Splits `items` by `allowed`: (kept, denied).
fn split<T>(items: Vec<T>, mut allowed: impl FnMut(&T) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|item| allowed(item))
}

pub fn restrict(authz: &Authz, request: RequestKind, version: i16) -> Check {
    use AclOperation::*;
    if !authz.enabled() {
        return Check::Handle(request, Denied::Nothing);
    }
    match request {
        RequestKind::Produce(mut r) => {
            // A transactional produce needs WRITE on its transactional id as well, as in
            // Kafka; without it every topic is refused.
            let transactional = r
                .transactional_id
                .as_ref()
                .filter(|id| !id.0.is_empty())
                .map(|id| id.0.to_string());
            let id_allowed = transactional
                .as_deref()
                .is_none_or(|id| authz.allows(Write, ResourceType::TransactionalId, id));
            let (kept, denied) = split(std::mem::take(&mut r.topic_data), |t| {
                id_allowed && authz.allows_topic(Write, &t.name.0)
            });
            r.topic_data = kept;
            Check::Handle(RequestKind::Produce(r), Denied::Produce(denied))
        }
        RequestKind::Fetch(mut r) => {
            // Topics that do not resolve stay: the handler answers them as unknown.
            let (kept, denied) = split(std::mem::take(&mut r.topics), |t| {
                match fetch_topic_name(authz, t, version) {
                    Some(name) => authz.allows_topic(Read, &name),
                    None => true,
                }
            });
            r.topics = kept;
            Check::Handle(RequestKind::Fetch(r), Denied::Fetch(denied))
        }
        RequestKind::ListOffsets(mut r) => {
            let (kept, denied) = split(std::mem::take(&mut r.topics), |t| {
                authz.allows_topic(Describe, &t.name.0)
            });
            r.topics = kept;
            Check::Handle(RequestKind::ListOffsets(r), Denied::ListOffsets(denied))
        }
        RequestKind::DeleteRecords(mut r) => {
            let (kept, denied) = split(std::mem::take(&mut r.topics), |t| {
                authz.allows_topic(Delete, &t.name.0)
            });
            r.topics = kept;
            Check::Handle(RequestKind::DeleteRecords(r), Denied::DeleteRecords(denied))
        }
        RequestKind::CreateTopics(mut r) => {
            if authz.can(
                Create,
                ResourceType::Cluster,
                crate::security::acl::CLUSTER_NAME,
            ) {
                return Check::Handle(RequestKind::CreateTopics(r), Denied::Nothing);
            }
            let (kept, denied) = split(std::mem::take(&mut r.topics), |t| {
                authz.allows_topic(Create, &t.name.0)
            });
            r.topics = kept;
            let denied = denied.into_iter().map(|t| t.name).collect();
            Check::Handle(RequestKind::CreateTopics(r), Denied::CreateTopics(denied))
        }
        RequestKind::DeleteTopics(mut r) => {
            let mut denied = Vec::new();
            let names = std::mem::take(&mut r.topic_names);
            let (kept, gone) = split(names, |n| authz.allows_topic(Delete, &n.0));
            r.topic_names = kept;
            denied.extend(gone.into_iter().map(|n| (Some(n), uuid::Uuid::nil())));
            let states = std::mem::take(&mut r.topics);
            let (kept, gone) = split(states, |t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).or_else(|| {
                    authz
                        .broker
                        .topics
                        .by_id(t.topic_id)
                        .map(|topic| topic.name.clone())
                });
                // An id that names no topic stays: the handler answers it as unknown.
                name.is_none_or(|name| authz.allows_topic(Delete, &name))
            });
            r.topics = kept;
            denied.extend(gone.into_iter().map(|t| (t.name, t.topic_id)));
            Check::Handle(RequestKind::DeleteTopics(r), Denied::DeleteTopics(denied))
        }
        RequestKind::CreatePartitions(mut r) => {
            let (kept, denied) = split(std::mem::take(&mut r.topics), |t| {
                authz.allows_topic(Alter, &t.name.0)
            });
            r.topics = kept;
            let denied = denied.into_iter().map(|t| t.name).collect();
            Check::Handle(
                RequestKind::CreatePartitions(r),
                Denied::CreatePartitions(denied),
            )
        }
        RequestKind::DescribeConfigs(mut r) => {
            let (kept, denied) = split_configs(
                authz,
                DescribeConfigs,
                std::mem::take(&mut r.resources),
                |c| (c.resource_type, &c.resource_name),
            );
            r.resources = kept;
            Check::Handle(
                RequestKind::DescribeConfigs(r),
                Denied::DescribeConfigs(denied),
            )
        }
        RequestKind::AlterConfigs(mut r) => {
            let (kept, denied) =
                split_configs(authz, AlterConfigs, std::mem::take(&mut r.resources), |c| {
                    (c.resource_type, &c.resource_name)
                });
            r.resources = kept;
            Check::Handle(RequestKind::AlterConfigs(r), Denied::AlterConfigs(denied))
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let (kept, denied) =
                split_configs(authz, AlterConfigs, std::mem::take(&mut r.resources), |c| {
                    (c.resource_type, &c.resource_name)
                });
            r.resources = kept;
            Check::Handle(
                RequestKind::IncrementalAlterConfigs(r),
                Denied::IncrementalAlterConfigs(denied),
            )
        }
        RequestKind::FindCoordinator(mut r) => {
            let resource = if r.key_type == 1 {
                ResourceType::TransactionalId
            } else {
                ResourceType::Group
            };
            if version < 4 {
                if !authz.allows(Describe, resource, &r.key) {
                    let code = if r.key_type == 1 {
                        ResponseError::TransactionalIdAuthorizationFailed.code()
                    } else {
                        GROUP_DENIED
                    };
                    return Check::Refuse(ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default()
                            .with_error_code(code)
                            .with_node_id(BrokerId(-1))
                            .with_port(-1),
                    ));
                }
                return Check::Handle(RequestKind::FindCoordinator(r), Denied::Nothing);
            }
            let (kept, denied) = split(std::mem::take(&mut r.coordinator_keys), |k| {
                authz.allows(Describe, resource, k)
            });
            r.coordinator_keys = kept;
            let code = if r.key_type == 1 {
                ResponseError::TransactionalIdAuthorizationFailed.code()
            } else {
                GROUP_DENIED
            };
            Check::Handle(
                RequestKind::FindCoordinator(r),
                Denied::FindCoordinator(denied, code),
            )
        }
        RequestKind::JoinGroup(r) => {
            if authz.allows_group(Read, &r.group_id.0) {
                return Check::Handle(RequestKind::JoinGroup(r), Denied::Nothing);
            }
            Check::Refuse(ResponseKind::JoinGroup(
                JoinGroupResponse::default()
                    .with_error_code(GROUP_DENIED)
                    .with_generation_id(-1)
                    .with_member_id(r.member_id),
            ))
        }
        RequestKind::SyncGroup(r) => {
            if authz.allows_group(Read, &r.group_id.0) {
                return Check::Handle(RequestKind::SyncGroup(r), Denied::Nothing);
            }
            Check::Refuse(ResponseKind::SyncGroup(
                SyncGroupResponse::default().with_error_code(GROUP_DENIED),
            ))
        }
        RequestKind::Heartbeat(r) => {
            if authz.allows_group(Read, &r.group_id.0) {
                return Check::Handle(RequestKind::Heartbeat(r), Denied::Nothing);
            }
            Check::Refuse(ResponseKind::Heartbeat(
                HeartbeatResponse::default().with_error_code(GROUP_DENIED),
            ))
        }
        RequestKind::LeaveGroup(r) => {
            if authz.allows_group(Read, &r.group_id.0) {
                return Check::Handle(RequestKind::LeaveGroup(r), Denied::Nothing);
            }
            Check::Refuse(ResponseKind::LeaveGroup(
                LeaveGroupResponse::default().with_error_code(GROUP_DENIED),
            ))
        }
        RequestKind::OffsetCommit(mut r) => {
            if !authz.allows_group(Read, &r.group_id.0) {
                let topics = r
                    .topics
                    .into_iter()
                    .map(|t| commit_topic_error(t, GROUP_DENIED))
                    .collect();
                return Check::Refuse(ResponseKind::OffsetCommit(
                    OffsetCommitResponse::default().with_topics(topics),
                ));
            }
            let (kept, denied) = split(std::mem::take(&mut r.topics), |t| {
                authz.allows_topic(Read, &t.name.0)
            });
            r.topics = kept;
            Check::Handle(RequestKind::OffsetCommit(r), Denied::OffsetCommit(denied))
        }
        RequestKind::OffsetFetch(r) => restrict_offset_fetch(authz, r, version),
        RequestKind::DescribeGroups(mut r) => {
            let (kept, denied) = split(std::mem::take(&mut r.groups), |g| {
                authz.allows_group(Describe, &g.0)
            });
            r.groups = kept;
            Check::Handle(
                RequestKind::DescribeGroups(r),
                Denied::DescribeGroups(denied),
            )
        }
        RequestKind::DeleteGroups(mut r) => {
            let (kept, denied) = split(std::mem::take(&mut r.groups_names), |g| {
                authz.allows_group(Delete, &g.0)
            });
            r.groups_names = kept;
            Check::Handle(RequestKind::DeleteGroups(r), Denied::DeleteGroups(denied))
        }
        RequestKind::OffsetDelete(mut r) => {
            if !authz.allows_group(Delete, &r.group_id.0) {
                return Check::Refuse(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default().with_error_code(GROUP_DENIED),
                ));
            }
            let (kept, denied) = split(std::mem::take(&mut r.topics), |t| {
                authz.allows_topic(Read, &t.name.0)
            });
            r.topics = kept;
            Check::Handle(RequestKind::OffsetDelete(r), Denied::OffsetDelete(denied))
        }
        RequestKind::InitProducerId(r) => {
            // An empty transactional id is an idempotent producer, as the handler reads it.
            let transactional = r.transactional_id.as_ref().filter(|id| !id.0.is_empty());
            let allowed = match transactional {
                Some(id) => authz.allows(Write, ResourceType::TransactionalId, id),
                None => {
                    authz.can(
                        IdempotentWrite,
                        ResourceType::Cluster,
                        crate::security::acl::CLUSTER_NAME,
                    ) || authz.allows_any(Write, ResourceType::Topic)
                }
            };
            if allowed {
                return Check::Handle(RequestKind::InitProducerId(r), Denied::Nothing);
            }
            let code = if transactional.is_some() {
                ResponseError::TransactionalIdAuthorizationFailed.code()
            } else {
                CLUSTER_DENIED
            };
            Check::Refuse(ResponseKind::InitProducerId(
                InitProducerIdResponse::default()
                    .with_error_code(code)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ))
        }
        other => Check::Handle(other, Denied::Nothing),
    }
}

fn fetch_topic_name(
    authz: &Authz,
    topic: &fetch_request::FetchTopic,
    version: i16,
) -> Option<String> {
    if version >= 13 {
        authz
            .broker
            .topics
            .by_id(topic.topic_id)
            .map(|t| t.name.clone())
    } else {
        Some(topic.topic.0.to_string())
    }
}

fn commit_topic_error(
    topic: offset_commit_request::OffsetCommitRequestTopic,
    code: i16,
) -> offset_commit_response::OffsetCommitResponseTopic {
    offset_commit_response::OffsetCommitResponseTopic::default()
        .with_name(topic.name)
        .with_topic_id(topic.topic_id)
        .with_partitions(
            topic
                .partitions
                .into_iter()
                .map(|p| {
                    offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect(),
        )
}

fn restrict_offset_fetch(authz: &Authz, mut r: OffsetFetchRequest, version: i16) -> Check {
    use AclOperation::Describe;
    if version < 8 {
        if !authz.allows_group(Describe, &r.group_id.0) {
            // v0 and v1 have no top-level error: the denial goes on each partition asked
            // for, as Kafka answers them.
            let topics = r
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    offset_fetch_response::OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|&p| {
                                    offset_fetch_response::OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_committed_leader_epoch(-1)
                                        .with_error_code(GROUP_DENIED)
                                })
                                .collect(),
                        )
                })
                .collect();
            return Check::Refuse(ResponseKind::OffsetFetch(
                OffsetFetchResponse::default()
                    .with_error_code(GROUP_DENIED)
                    .with_topics(topics),
            ));
        }
        // All topics (null): the handler's answer is filtered in merge.
        let Some(topics) = r.topics.take() else {
            return Check::Handle(RequestKind::OffsetFetch(r), Denied::OffsetFetch(Vec::new()));
        };
        let (kept, denied) = split(topics, |t| authz.allows_topic(Describe, &t.name.0));
        r.topics = Some(kept);
        return Check::Handle(RequestKind::OffsetFetch(r), Denied::OffsetFetch(denied));
    }
    let mut denied = Vec::new();
    for (index, group) in r.groups.iter_mut().enumerate() {
        if !authz.allows_group(Describe, &group.group_id.0) {
            denied.push((index, Vec::new()));
            continue;
        }
        if let Some(topics) = group.topics.take() {
            let (kept, gone) = split(topics, |t| authz.allows_topic(Describe, &t.name.0));
            group.topics = Some(kept);
            if !gone.is_empty() {
                denied.push((index, gone));
            }
        }
    }
    Check::Handle(
        RequestKind::OffsetFetch(r),
        Denied::OffsetFetchGroups(denied),
    )
}
