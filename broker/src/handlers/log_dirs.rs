//! DescribeLogDirs and AlterReplicaLogDirs. A broker has one log dir, its data dir:
//! DescribeLogDirs reports it with its file system's size and free space and, per replica
//! it hosts, the local log's size; AlterReplicaLogDirs can only name that dir.
//!
//! Sizes are local bytes, as Kafka's `partition_size` is (the segments on this broker's
//! disk): a tiered partition's history in the bucket is not in them. Kafka 3.9 reports
//! the remote tier only through metrics and ListOffsets (KIP-1005's EARLIEST_LOCAL -4 and
//! LATEST_TIERED -5, both answered in `offsets.rs`), not in this API.
//!
//! A replica whose log a storage failure took offline is where Kafka's replicas of a
//! failed log dir are: AlterReplicaLogDirs answers it KAFKA_STORAGE_ERROR, and
//! DescribeLogDirs leaves it out of the dir's replicas (Kafka marks the whole dir
//! KAFKA_STORAGE_ERROR; here the other replicas of the one dir still work, so the dir is
//! reported and only the offline replica is missing).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ResponseKind,
};
use tracing::warn;

use super::{Authz, str_bytes, topic_name};
use crate::broker::Broker;
use crate::registry::Topic;
use crate::security::acl::AclOperation;

/// The broker's one log dir as Kafka names a log dir: the data dir's absolute path.
pub fn log_dir(broker: &Broker) -> String {
    let data_dir = &broker.config.data_dir;
    std::path::absolute(data_dir)
        .unwrap_or_else(|_| data_dir.clone())
        .display()
        .to_string()
}

/// Whether this broker holds a replica of partition `index` of `topic`.
fn hosts(broker: &Broker, topic: &Topic, index: usize) -> bool {
    topic
        .record
        .partitions
        .get(index)
        .is_some_and(|p| p.replicas.contains(&broker.config.node_id))
}

/// DESCRIBE on the cluster, as in Kafka. The file system's sizes are -1 when `statvfs`
/// fails; the replicas are still listed.
pub fn describe_log_dirs(
    broker: &Arc<Broker>,
    authz: &Authz,
    request: DescribeLogDirsRequest,
    version: i16,
) -> ResponseKind {
    if !authz.allows_cluster(AclOperation::Describe) {
        let code = ResponseError::ClusterAuthorizationFailed;
        broker.metrics.error("DescribeLogDirs", code);
        // Before v3 the response has no error field: no dirs is the whole answer.
        let response = if version >= 3 {
            DescribeLogDirsResponse::default().with_error_code(code.code())
        } else {
            DescribeLogDirsResponse::default()
        };
        return ResponseKind::DescribeLogDirs(response);
    }
    // Null asks for every partition; otherwise only those named (unknown ones are left
    // out, as Kafka leaves them out).
    let wanted: Option<HashMap<String, HashSet<i32>>> = request.topics.map(|topics| {
        let mut wanted: HashMap<String, HashSet<i32>> = HashMap::new();
        for t in topics {
            wanted
                .entry(t.topic.0.to_string())
                .or_default()
                .extend(t.partitions);
        }
        wanted
    });
    let mut topics = Vec::new();
    for topic in broker.topics.all() {
        let partitions: Vec<DescribeLogDirsPartition> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(index, partition)| {
                hosts(broker, &topic, *index)
                    && !partition.is_offline()
                    && wanted.as_ref().is_none_or(|w| {
                        w.get(&topic.name)
                            .is_some_and(|indexes| indexes.contains(&partition.index))
                    })
            })
            .map(|(_, partition)| {
                let marks = partition.watermarks();
                DescribeLogDirsPartition::default()
                    .with_partition_index(partition.index)
                    .with_partition_size(
                        i64::try_from(partition.local_size_bytes()).unwrap_or(i64::MAX),
                    )
                    // Kafka's lag of a current (not future) replica: how far its high
                    // watermark is past its log end, never negative.
                    .with_offset_lag((marks.high_watermark - partition.log_end_offset()).max(0))
                    .with_is_future_key(false)
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(partitions),
            );
        }
    }
    topics.sort_by(|a, b| a.name.0.cmp(&b.name.0));
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(log_dir(broker)))
        .with_topics(topics);
    if version >= 4 {
        // One statvfs of a local file system: cheap enough for the runtime thread.
        match crate::sys::disk_usage(&broker.config.data_dir) {
            Ok(usage) => {
                result = result
                    .with_total_bytes(i64::try_from(usage.size_bytes).unwrap_or(i64::MAX))
                    .with_usable_bytes(i64::try_from(usage.available_bytes).unwrap_or(i64::MAX));
            }
            Err(e) => {
                warn!(dir = %broker.config.data_dir.display(), error = %e,
                    "cannot read the data dir's file system size for DescribeLogDirs");
            }
        }
    }
    ResponseKind::DescribeLogDirs(DescribeLogDirsResponse::default().with_results(vec![result]))
}

/// ALTER on the cluster, as in Kafka. Moving a replica to another dir is impossible with
/// one dir: a path other than the data dir is LOG_DIR_NOT_FOUND (the response has no
/// message field, so the log names the one dir); the data dir itself is where every
/// replica already is, so naming it succeeds for a replica this broker holds, as Kafka
/// answers a move to the dir a replica is in.
pub fn alter_replica_log_dirs(
    broker: &Arc<Broker>,
    authz: &Authz,
    request: AlterReplicaLogDirsRequest,
) -> ResponseKind {
    let allowed = authz.allows_cluster(AclOperation::Alter);
    let ours = log_dir(broker);
    // By topic then partition: a partition named twice gets one answer, for the last
    // dir named, as Kafka keeps the last.
    let mut results: BTreeMap<String, BTreeMap<i32, Option<ResponseError>>> = BTreeMap::new();
    // Logged once per request, however many unknown dirs it names.
    let mut unknown_dirs = 0usize;
    let mut first_unknown: Option<String> = None;
    for dir in &request.dirs {
        let path = dir.path.to_string();
        let known_dir = path == ours;
        if allowed && !known_dir {
            unknown_dirs += 1;
            first_unknown.get_or_insert(path);
        }
        for t in &dir.topics {
            let topic = broker.topics.get(&t.name.0);
            for &index in &t.partitions {
                let outcome = if !allowed {
                    Some(ResponseError::ClusterAuthorizationFailed)
                } else if !known_dir {
                    Some(ResponseError::LogDirNotFound)
                } else {
                    match &topic {
                        Some(topic) => match topic.partition(index) {
                            // `partition` refused negative indexes.
                            Some(partition) if hosts(broker, topic, index as usize) => partition
                                .is_offline()
                                .then_some(ResponseError::KafkaStorageError),
                            // Kafka's answer for a broker without the replica.
                            Some(_) => Some(ResponseError::ReplicaNotAvailable),
                            None => Some(ResponseError::UnknownTopicOrPartition),
                        },
                        None => Some(ResponseError::UnknownTopicOrPartition),
                    }
                };
                results
                    .entry(t.name.0.to_string())
                    .or_default()
                    .insert(index, outcome);
            }
        }
    }
    if let Some(first) = first_unknown {
        warn!(requested = %first, unknown_dirs, log_dir = %ours,
            "AlterReplicaLogDirs names a log dir this broker does not have: its one log dir is its data dir");
    }
    let results = results
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, outcome)| {
                    if let Some(error) = outcome {
                        broker.metrics.error("AlterReplicaLogDirs", error);
                    }
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(outcome.map_or(0, |e| e.code()))
                })
                .collect();
            AlterReplicaLogDirTopicResult::default()
                .with_topic_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::AlterReplicaLogDirs(AlterReplicaLogDirsResponse::default().with_results(results))
}
