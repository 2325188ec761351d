//! Answers for the parts of a request [`super::restrict`] took out: each denied topic,
//! group or resource gets its error in the place Kafka's response puts it.

use kafka_protocol::messages::*;

use super::{Denied, GROUP_DENIED, TOPIC_DENIED, commit_topic_error};
use crate::handlers::{Authz, str_bytes};
use crate::security::acl::{AclOperation, ResourceType};

impl Denied {
    /// Puts an answer for every denied part into the handler's response. `group_denied`
    /// holds, for OffsetFetch v8+, the groups refused whole.
    pub fn merge(self, authz: &Authz, response: ResponseKind, version: i16) -> ResponseKind {
        match (self, response) {
            (Denied::Nothing, response) => response,
            (Denied::Produce(topics), ResponseKind::Produce(mut r)) => {
                for t in topics {
                    let partitions = t
                        .partition_data
                        .iter()
                        .map(|p| {
                            produce_response::PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(TOPIC_DENIED)
                                .with_base_offset(-1)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(-1)
                        })
                        .collect();
                    r.responses.push(
                        produce_response::TopicProduceResponse::default()
                            .with_name(t.name)
                            .with_topic_id(t.topic_id)
                            .with_partition_responses(partitions),
                    );
                }
                ResponseKind::Produce(r)
            }
            (Denied::Fetch(topics), ResponseKind::Fetch(mut r)) => {
                for t in topics {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            fetch_response::PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_error_code(TOPIC_DENIED)
                                .with_high_watermark(-1)
                                .with_last_stable_offset(-1)
                                .with_log_start_offset(-1)
                                .with_preferred_read_replica(BrokerId(-1))
                        })
                        .collect();
                    r.responses.push(
                        fetch_response::FetchableTopicResponse::default()
                            .with_topic(t.topic)
                            .with_topic_id(t.topic_id)
                            .with_partitions(partitions),
                    );
                }
                ResponseKind::Fetch(r)
            }
            (Denied::ListOffsets(topics), ResponseKind::ListOffsets(mut r)) => {
                for t in topics {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            list_offsets_response::ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(TOPIC_DENIED)
                                .with_timestamp(-1)
                                .with_offset(-1)
                        })
                        .collect();
                    r.topics.push(
                        list_offsets_response::ListOffsetsTopicResponse::default()
                            .with_name(t.name)
                            .with_partitions(partitions),
                    );
                }
                ResponseKind::ListOffsets(r)
            }
            (Denied::DeleteRecords(topics), ResponseKind::DeleteRecords(mut r)) => {
                for t in topics {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            delete_records_response::DeleteRecordsPartitionResult::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(TOPIC_DENIED)
                                .with_low_watermark(-1)
                        })
                        .collect();
                    r.topics.push(
                        delete_records_response::DeleteRecordsTopicResult::default()
                            .with_name(t.name)
                            .with_partitions(partitions),
                    );
                }
                ResponseKind::DeleteRecords(r)
            }
            (Denied::CreateTopics(names), ResponseKind::CreateTopics(mut r)) => {
                for name in names {
                    r.topics.push(
                        create_topics_response::CreatableTopicResult::default()
                            .with_name(name)
                            .with_error_code(TOPIC_DENIED)
                            .with_error_message(Some(str_bytes("Authorization failed.")))
                            .with_num_partitions(-1)
                            .with_replication_factor(-1),
                    );
                }
                ResponseKind::CreateTopics(r)
            }
            (Denied::DeleteTopics(topics), ResponseKind::DeleteTopics(mut r)) => {
                for (name, id) in topics {
                    r.responses.push(
                        delete_topics_response::DeletableTopicResult::default()
                            .with_name(name)
                            .with_topic_id(id)
                            .with_error_code(TOPIC_DENIED),
                    );
                }
                ResponseKind::DeleteTopics(r)
            }
            (Denied::CreatePartitions(names), ResponseKind::CreatePartitions(mut r)) => {
                for name in names {
                    r.results.push(
                        create_partitions_response::CreatePartitionsTopicResult::default()
                            .with_name(name)
                            .with_error_code(TOPIC_DENIED),
                    );
                }
                ResponseKind::CreatePartitions(r)
            }
            (Denied::DescribeConfigs(resources), ResponseKind::DescribeConfigs(mut r)) => {
                for (resource_type, name, code) in resources {
                    r.results.push(
                        describe_configs_response::DescribeConfigsResult::default()
                            .with_resource_type(resource_type)
                            .with_resource_name(name)
                            .with_error_code(code),
                    );
                }
                ResponseKind::DescribeConfigs(r)
            }
            (Denied::AlterConfigs(resources), ResponseKind::AlterConfigs(mut r)) => {
                for (resource_type, name, code) in resources {
                    r.responses.push(
                        alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(resource_type)
                            .with_resource_name(name)
                            .with_error_code(code),
                    );
                }
                ResponseKind::AlterConfigs(r)
            }
            (
                Denied::IncrementalAlterConfigs(resources),
                ResponseKind::IncrementalAlterConfigs(mut r),
            ) => {
                for (resource_type, name, code) in resources {
                    r.responses.push(
                        incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(resource_type)
                            .with_resource_name(name)
                            .with_error_code(code),
                    );
                }
                ResponseKind::IncrementalAlterConfigs(r)
            }
            (Denied::OffsetCommit(topics), ResponseKind::OffsetCommit(mut r)) => {
                r.topics.extend(
                    topics
                        .into_iter()
                        .map(|t| commit_topic_error(t, TOPIC_DENIED)),
                );
                ResponseKind::OffsetCommit(r)
            }
            (Denied::OffsetFetch(topics), ResponseKind::OffsetFetch(mut r)) => {
                // All topics asked for: keep what the caller may describe.
                r.topics
                    .retain(|t| authz.can(AclOperation::Describe, ResourceType::Topic, &t.name.0));
                for t in topics {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|&p| {
                            offset_fetch_response::OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(-1)
                                .with_committed_leader_epoch(-1)
                                .with_error_code(TOPIC_DENIED)
                        })
                        .collect();
                    r.topics.push(
                        offset_fetch_response::OffsetFetchResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(partitions),
                    );
                }
                ResponseKind::OffsetFetch(r)
            }
            (Denied::OffsetFetchGroups(denied), ResponseKind::OffsetFetch(mut r)) => {
                merge_offset_fetch_groups(authz, &mut r, denied, version);
                ResponseKind::OffsetFetch(r)
            }
            (Denied::DescribeGroups(groups), ResponseKind::DescribeGroups(mut r)) => {
                for group in groups {
                    r.groups.push(
                        describe_groups_response::DescribedGroup::default()
                            .with_group_id(group)
                            .with_error_code(GROUP_DENIED),
                    );
                }
                ResponseKind::DescribeGroups(r)
            }
            (Denied::DeleteGroups(groups), ResponseKind::DeleteGroups(mut r)) => {
                for group in groups {
                    r.results.push(
                        delete_groups_response::DeletableGroupResult::default()
                            .with_group_id(group)
                            .with_error_code(GROUP_DENIED),
                    );
                }
                ResponseKind::DeleteGroups(r)
            }
            (Denied::OffsetDelete(topics), ResponseKind::OffsetDelete(mut r)) => {
                for t in topics {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            offset_delete_response::OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(TOPIC_DENIED)
                        })
                        .collect();
                    r.topics.push(
                        offset_delete_response::OffsetDeleteResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(partitions),
                    );
                }
                ResponseKind::OffsetDelete(r)
            }
            (Denied::FindCoordinator(keys, code), ResponseKind::FindCoordinator(mut r)) => {
                for key in keys {
                    r.coordinators.push(
                        find_coordinator_response::Coordinator::default()
                            .with_key(key)
                            .with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(code),
                    );
                }
                ResponseKind::FindCoordinator(r)
            }
            // The handler answered with another kind (it cannot, but never panic).
            (_, response) => response,
        }
    }
}

fn merge_offset_fetch_groups(
    authz: &Authz,
    r: &mut OffsetFetchResponse,
    denied: Vec<(usize, Vec<offset_fetch_request::OffsetFetchRequestTopics>)>,
    _version: i16,
) {
    for group in r.groups.iter_mut() {
        // Groups asked for all topics: keep what the caller may describe.
        group
            .topics
            .retain(|t| authz.can(AclOperation::Describe, ResourceType::Topic, &t.name.0));
    }
    for (index, topics) in denied {
        let Some(group) = r.groups.get_mut(index) else {
            continue;
        };
        if topics.is_empty() {
            group.error_code = GROUP_DENIED;
            group.topics.clear();
            continue;
        }
        for t in topics {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    offset_fetch_response::OffsetFetchResponsePartitions::default()
                        .with_partition_index(p)
                        .with_committed_offset(-1)
                        .with_committed_leader_epoch(-1)
                        .with_error_code(TOPIC_DENIED)
                })
                .collect();
            group.topics.push(
                offset_fetch_response::OffsetFetchResponseTopics::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partitions(partitions),
            );
        }
    }
}
