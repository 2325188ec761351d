//! ListOffsets and DeleteRecords.

use futures::StreamExt;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    ResponseKind,
};

use super::partition_error_code;
use crate::broker::Broker;
use crate::log::LogError;
use crate::partition::{Partition, PartitionError};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// (offset, timestamp) for one ListOffsets query. As in Kafka, a search by timestamp (or
/// MAX_TIMESTAMP) finds only a record the caller may fetch: below the high watermark, and
/// for read_committed callers (isolation level 1) below the last stable offset, which is
/// also their LATEST (else -1: the record may belong to a transaction still open).
async fn lookup(
    partition: &Partition,
    timestamp: i64,
    read_committed: bool,
) -> Result<(i64, i64), PartitionError> {
    let marks = partition.watermarks();
    // What a caller may fetch: below the LSO (read_committed) or the high watermark.
    let fetchable = if read_committed {
        marks.last_stable_offset
    } else {
        marks.high_watermark
    };
    let stable = |found: Option<(i64, i64)>| {
        found
            .filter(|&(offset, _)| offset < fetchable)
            .unwrap_or((-1, -1))
    };
    Ok(match timestamp {
        LATEST if read_committed => (marks.last_stable_offset, -1),
        LATEST => (marks.high_watermark, -1),
        EARLIEST => (marks.log_start_offset, -1),
        EARLIEST_LOCAL => (partition.local_log_start_offset(), -1),
        // KIP-1005: the last offset the remote tier holds, -1 if none.
        LATEST_TIERED => match partition.remote_bounds() {
            Some(b) if b.end > b.start => (b.end - 1, -1),
            _ => (-1, -1),
        },
        MAX_TIMESTAMP => stable(partition.max_timestamp().await?),
        t if t >= 0 => stable(partition.offset_for_timestamp(t).await?),
        _ => {
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset: timestamp,
                log_start_offset: marks.log_start_offset,
                log_end_offset: marks.high_watermark,
            }));
        }
    })
}

/// ListOffsets on a diskless partition, answered by any broker, as [`lookup`] for
/// read_committed callers: LATEST is the head's last stable offset for them, and a search
/// by timestamp finds only a record below it. The earliest local offset is the log start
/// and the latest tiered one the last merged offset.
async fn diskless_lookup(
    broker: &Broker,
    topic: &crate::registry::Topic,
    index: i32,
    timestamp: i64,
    read_committed: bool,
) -> Result<(i64, i64), ResponseError> {
    let Some(diskless) = broker
        .diskless
        .as_ref()
        .filter(|_| topic.has_partition(index))
    else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    let key = crate::diskless::PartitionKey {
        topic_id: topic.id,
        partition: index,
    };
    let head = diskless.view.get(&key).head.clone();
    let search = |query| async move {
        diskless
            .offset_for_timestamp(key, &topic.name, query, read_committed)
            .await
            .map(|found| found.unwrap_or((-1, -1)))
            .map_err(|e| {
                tracing::warn!(topic = %topic.name, partition = index, error = %e, "diskless ListOffsets failed");
                ResponseError::KafkaStorageError
            })
    };
    match timestamp {
        LATEST if read_committed => Ok((head.last_stable(), -1)),
        LATEST => Ok((head.next, -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((head.log_start, -1)),
        LATEST_TIERED if head.merged > head.log_start => Ok((head.merged - 1, -1)),
        LATEST_TIERED => Ok((-1, -1)),
        MAX_TIMESTAMP => search(None).await,
        t if t >= 0 => search(Some(t)).await,
        _ => Err(ResponseError::OffsetOutOfRange),
    }
}

pub async fn list_offsets(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ResponseKind {
    // leader_epoch exists from v4; the encoder refuses a non-default value before.
    let epoch_of = |p: &Partition| if version >= 4 { p.leader_epoch() } else { -1 };
    let read_committed = version >= 2 && request.isolation_level == 1;
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let topic = broker.topics.get(&t.name.0);
        let partitions = t.partitions.into_iter().map(|p| {
            let topic = topic.clone();
            async move {
                let base = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_offset(-1)
                    .with_timestamp(-1)
                    .with_leader_epoch(-1);
                if let Some(t) = topic.as_ref().filter(|t| t.diskless) {
                    let leader_epoch = if version >= 4 { 0 } else { -1 };
                    return match diskless_lookup(
                        broker,
                        t,
                        p.partition_index,
                        p.timestamp,
                        read_committed,
                    )
                    .await
                    {
                        Ok((offset, timestamp)) => base
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(leader_epoch),
                        Err(code) => {
                            broker.metrics.error("ListOffsets", code);
                            base.with_error_code(code.code())
                        }
                    };
                }
                let partition = topic.as_ref().and_then(|t| t.partition(p.partition_index));
                let Some(partition) = partition else {
                    broker
                        .metrics
                        .error("ListOffsets", ResponseError::UnknownTopicOrPartition);
                    return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                };
                if !partition.is_leader() {
                    return base.with_error_code(ResponseError::NotLeaderOrFollower.code());
                }
                if p.current_leader_epoch >= 0 && p.current_leader_epoch != partition.leader_epoch()
                {
                    let code = if p.current_leader_epoch > partition.leader_epoch() {
                        ResponseError::UnknownLeaderEpoch
                    } else {
                        ResponseError::FencedLeaderEpoch
                    };
                    return base.with_error_code(code.code());
                }
                match lookup(partition, p.timestamp, read_committed).await {
                    Ok((offset, timestamp)) => base
                        .with_offset(offset)
                        .with_timestamp(timestamp)
                        .with_leader_epoch(epoch_of(partition)),
                    Err(e) => {
                        let code = partition_error_code(&e);
                        broker.metrics.error("ListOffsets", code);
                        base.with_error_code(code.code())
                    }
                }
            }
        });
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(futures::future::join_all(partitions).await),
        );
    }
    ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
}

/// Partitions of one DeleteRecords request worked on at once.
const DELETE_RECORDS_AT_ONCE: usize = 8;

pub async fn delete_records(broker: &Arc<Broker>, request: DeleteRecordsRequest) -> ResponseKind {
    let timeout = std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let topic = broker.topics.get(&t.name.0);
        // A partition named twice is deleted from once, at the offset named last (as
        // Kafka, whose request becomes a map), and answered once.
        let mut wanted: Vec<(i32, i64)> = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            match wanted
                .iter_mut()
                .find(|(index, _)| *index == p.partition_index)
            {
                Some(entry) => entry.1 = p.offset,
                None => wanted.push((p.partition_index, p.offset)),
            }
        }
        let partitions: Vec<_> = wanted
            .into_iter()
            .map(|(partition_index, offset)| {
                let topic = topic.clone();
                async move {
                    let base = DeleteRecordsPartitionResult::default()
                        .with_partition_index(partition_index)
                        .with_low_watermark(-1);
                    if let Some(topic) = topic.as_ref().filter(|t| t.diskless) {
                        let deleted = tokio::time::timeout(
                            timeout,
                            delete_diskless_records(broker, topic, partition_index, offset),
                        )
                        .await
                        .unwrap_or(Err(ResponseError::RequestTimedOut));
                        return match deleted {
                            Ok(low_watermark) => base.with_low_watermark(low_watermark),
                            Err(code) => {
                                broker.metrics.error("DeleteRecords", code);
                                base.with_error_code(code.code())
                            }
                        };
                    }
                    let partition = topic.as_ref().and_then(|t| t.partition(partition_index));
                    let Some(partition) = partition else {
                        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    // Deleting from the offsets topic would delete consumer groups' offsets.
                    if crate::group::is_internal(&partition.topic) {
                        broker
                            .metrics
                            .error("DeleteRecords", ResponseError::InvalidTopicException);
                        return base.with_error_code(ResponseError::InvalidTopicException.code());
                    }
                    match partition.delete_records_before(offset).await {
                        Ok(low_watermark) => base.with_low_watermark(low_watermark),
                        Err(e) => {
                            let code = partition_error_code(&e);
                            broker.metrics.error("DeleteRecords", code);
                            base.with_error_code(code.code())
                        }
                    }
                }
            })
            .collect();
        // In request order, a few at a time: a request naming many diskless partitions
        // is as many metadata-store round trips.
        let partitions: Vec<_> = futures::stream::iter(partitions)
            .buffered(DELETE_RECORDS_AT_ONCE)
            .collect()
            .await;
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ResponseKind::DeleteRecords(DeleteRecordsResponse::default().with_topics(topics))
}

/// DeleteRecords on a diskless partition: any broker answers, through the metadata store
/// (`crate::diskless::retention::delete_records`). Returns the new low watermark; the
/// manifest's start and the merged objects below it follow in the background.
async fn delete_diskless_records(
    broker: &Broker,
    topic: &crate::registry::Topic,
    index: i32,
    offset: i64,
) -> Result<i64, ResponseError> {
    use crate::diskless::retention::{DeleteRecordsError, advance_manifest, delete_records};
    if index < 0 || index >= topic.partition_count() {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    let (Some(diskless), Some(tiering)) = (broker.diskless.as_ref(), broker.tiering.as_ref())
    else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    let key = crate::diskless::PartitionKey {
        topic_id: topic.id,
        partition: index,
    };
    match delete_records(&**diskless.view.store(), &key, offset).await {
        Ok(low_watermark) => {
            let (tiering, name) = (tiering.clone(), topic.name.clone());
            tokio::spawn(async move {
                advance_manifest(&tiering, &name, &key, low_watermark).await;
            });
            // Fetch and ListOffsets answer from the view: it must not lag this answer.
            if let Err(e) = diskless.view.refresh(&key).await {
                tracing::warn!(topic = %topic.name, partition = index, error = %e,
                    "could not reload a diskless partition after DeleteRecords");
            }
            Ok(low_watermark)
        }
        Err(DeleteRecordsError::OutOfRange { .. }) => Err(ResponseError::OffsetOutOfRange),
        Err(e) => {
            tracing::warn!(topic = %topic.name, partition = index, error = %e, "DeleteRecords on a diskless partition failed");
            Err(ResponseError::KafkaStorageError)
        }
    }
}
