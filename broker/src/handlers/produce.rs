//! Produce: validate, append, answer per `acks`.
//!
//! On one broker, acks=1 and acks=-1 are answered at the same moment: after the batch is
//! in the log (page cache) and, if the flush policy requires it, fsynced. acks=0 gets no
//! response at all, as in Kafka.

use std::sync::Arc;

use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use super::{partition_error_code, str_bytes};
use crate::broker::Broker;
use crate::log::{TxnGuard, format};
use crate::partition::Partition;

fn partition_error(
    index: i32,
    error: ResponseError,
    message: Option<String>,
) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(str_bytes))
}

/// The transactional producer (id, epoch) of a request's batches, if any. Reads only
/// headers that are there; the append validates the batches themselves.
fn transactional_producer(records: &[u8]) -> Result<Option<(i64, i16)>, ResponseError> {
    let mut position = 0;
    let mut found = None;
    while records.len().saturating_sub(position) >= format::BATCH_HEADER_LEN {
        let batch = &records[position..];
        let Some((_, size, _)) = format::read_batch_prefix(batch) else {
            break;
        };
        let header = format::parse_validated_header(&batch[..format::BATCH_HEADER_LEN]);
        if header.producer_id >= 0 && header.base_sequence < 0 {
            return Err(ResponseError::InvalidRecord);
        }
        if header.is_transactional() && header.producer_id >= 0 {
            found = Some((header.producer_id, header.producer_epoch));
        }
        position = position.saturating_add(size);
    }
    Ok(found)
}

/// Verifies a transactional producer's first batch in `partition` with its coordinator
/// (with `add`, KIP-890 part 2, the coordinator adds the partition to the transaction);
/// `Ok(None)` when its transaction is already open there. Coordinator errors are
/// answered as NOT_ENOUGH_REPLICAS, which every producer retries (as Kafka does).
async fn verify(
    broker: &Broker,
    partition: &Partition,
    transactional_id: Option<&str>,
    producer: (i64, i16),
    add: bool,
) -> Result<Option<TxnGuard>, ResponseError> {
    let Some(guard) = partition.txn_guard(producer.0) else {
        return Ok(None);
    };
    let (topic, index) = (&partition.topic, partition.index);
    ask_coordinator(broker, topic, index, transactional_id, producer, add).await?;
    Ok(Some(guard))
}

/// Asks the producer's coordinator whether `topic`-`index` is in its open transaction
/// (with `add`, adds it); coordinator errors are answered NOT_ENOUGH_REPLICAS.
async fn ask_coordinator(
    broker: &Broker,
    topic: &str,
    index: i32,
    transactional_id: Option<&str>,
    (producer_id, producer_epoch): (i64, i16),
    add: bool,
) -> Result<(), ResponseError> {
    let Some(transactional_id) = transactional_id.filter(|id| !id.is_empty()) else {
        return Err(ResponseError::InvalidTxnState);
    };
    let request = crate::txn::VerifyRequest {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        topic: topic.to_string(),
        partition: index,
        add,
    };
    match broker.verify_transaction(request).await {
        Ok(()) => Ok(()),
        Err(
            ResponseError::CoordinatorNotAvailable
            | ResponseError::NotCoordinator
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::ConcurrentTransactions,
        ) => Err(ResponseError::NotEnoughReplicas),
        Err(e) => Err(e),
    }
}

pub async fn produce(
    broker: &Arc<Broker>,
    request: ProduceRequest,
    version: i16,
) -> Option<ResponseKind> {
    let acks = request.acks;
    let timeout_ms = i64::from(request.timeout_ms);
    let now = broker.clock.now_ms();
    let context = ProduceContext {
        acks,
        now,
        version,
        transactional_id: request.transactional_id.as_ref().map(|id| id.0.to_string()),
    };
    // Every partition is appended first (a topic at a time, its partitions concurrently);
    // then, with acks=all, the request waits for the ISRs. Once the appends are done the connection
    // may read and append its next request (`ordering::appended`), so a client's
    // pipelined requests overlap their replication waits instead of taking turns.
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let topic = broker.topics.get(&name);
        let min_isr = topic.as_ref().map_or(1, |t| t.config.min_insync_replicas());
        let appends = topic_data
            .partition_data
            .into_iter()
            .map(|data| append(broker, &context, topic.as_ref(), &name, min_isr, data));
        topics.push((topic_data.name, min_isr, join_all(appends).await));
    }
    super::ordering::appended();
    // Every topic's acknowledgements are awaited together, so the request's timeout_ms
    // is one deadline for the whole request, not one per topic in turn.
    let waits = topics.into_iter().map(|(name, min_isr, appended)| async move {
        let topic_name = name.0.as_str();
        let acknowledged = appended.into_iter().map(|outcome| async move {
            match outcome {
                Stage::Answered(response) => response,
                Stage::Diskless(d) => diskless_answer(broker, topic_name, d, timeout_ms).await,
                Stage::Appended(a) => {
                    let (partition, bytes) = (&a.partition, a.bytes);
                    match partition.acknowledged(a.appended, acks, min_isr, timeout_ms).await {
                        Ok(info) => {
                            let labels = [topic_name];
                            broker.metrics.bytes_in.with_label_values(&labels).inc_by(bytes);
                            broker.metrics.records_in.with_label_values(&labels).inc_by(info.records as u64);
                            PartitionProduceResponse::default()
                                .with_index(a.index)
                                .with_base_offset(info.base_offset)
                                .with_log_append_time_ms(info.log_append_time)
                                .with_log_start_offset(partition.watermarks().log_start_offset)
                        }
                        Err(e) => {
                            let code = partition_error_code(&e);
                            broker.metrics.error("Produce", code);
                            tracing::debug!(topic = %topic_name, partition = a.index, error = %e, "produce not acknowledged");
                            partition_error(a.index, code, Some(e.to_string()))
                        }
                    }
                }
            }
        });
        let partition_responses = join_all(acknowledged).await;
        TopicProduceResponse::default()
            .with_name(name)
            .with_partition_responses(partition_responses)
    });
    let responses = join_all(waits).await;
    if acks == 0 {
        return None;
    }
    Some(ResponseKind::Produce(
        ProduceResponse::default().with_responses(responses),
    ))
}

/// One partition of a produce request after its append: answered already (refused), or
/// appended and waiting for its acknowledgement.
enum Stage {
    Answered(PartitionProduceResponse),
    Appended(AppendedPartition),
    /// Queued for a diskless partition's next flush.
    Diskless(QueuedDiskless),
}

struct QueuedDiskless {
    index: i32,
    bytes: u64,
    answer: crate::diskless::append::AckReceiver,
}

/// Waits for a diskless partition's commit, at most the request's `timeout_ms` but at
/// least a few append intervals: a commit cannot come sooner than one flush, and a
/// produce whose waiter is gone is dropped before the PUT, so a client sending
/// `timeout_ms` 0 (Kafka ignores it for acks=1) would otherwise never be appended.
async fn diskless_answer(
    broker: &Broker,
    topic: &str,
    queued: QueuedDiskless,
    timeout_ms: i64,
) -> PartitionProduceResponse {
    let floor = broker.config.diskless_append_interval_ms.saturating_mul(4);
    let wait = std::time::Duration::from_millis(timeout_ms.max(floor).max(0) as u64);
    let (code, message) = match tokio::time::timeout(wait, queued.answer).await {
        Ok(Ok(Ok(ack))) => {
            broker
                .metrics
                .bytes_in
                .with_label_values(&[topic])
                .inc_by(queued.bytes);
            broker
                .metrics
                .records_in
                .with_label_values(&[topic])
                .inc_by(ack.records.max(0) as u64);
            return PartitionProduceResponse::default()
                .with_index(queued.index)
                .with_base_offset(ack.base_offset)
                .with_log_append_time_ms(ack.log_append_time)
                .with_log_start_offset(ack.log_start_offset);
        }
        Ok(Ok(Err(e))) => (e.code(), e.to_string()),
        Ok(Err(_)) => (
            ResponseError::NotEnoughReplicas,
            "the broker is shutting down; retry".to_string(),
        ),
        Err(_) => (
            ResponseError::RequestTimedOut,
            format!(
                "not committed within the request's timeout_ms ({timeout_ms}); it may still be"
            ),
        ),
    };
    broker.metrics.error("Produce", code);
    tracing::debug!(topic, partition = queued.index, error = %message, "diskless produce refused");
    partition_error(queued.index, code, Some(message))
}

/// Validates and queues one diskless partition's records. A transactional producer's
/// batch is verified with its coordinator, as on the replicated path, unless this
/// broker's view shows its transaction open in the partition (the commit then refuses it
/// retriably if a marker ended the transaction meanwhile: the retry is verified).
async fn diskless_append(
    broker: &Broker,
    context: &ProduceContext,
    topic: &crate::registry::Topic,
    data: kafka_protocol::messages::produce_request::PartitionProduceData,
) -> Stage {
    let acks = context.acks;
    let refused = |code: ResponseError, message: String| {
        broker.metrics.error("Produce", code);
        Stage::Answered(partition_error(data.index, code, Some(message)))
    };
    let Some(diskless) = broker.diskless.as_ref() else {
        return refused(
            ResponseError::KafkaStorageError,
            "this broker has no object store for diskless topics".into(),
        );
    };
    if !topic.has_partition(data.index) {
        return refused(
            ResponseError::UnknownTopicOrPartition,
            format!("{} has no partition {}", topic.name, data.index),
        );
    }
    let records = data.records.clone().unwrap_or_default();
    let key = crate::diskless::PartitionKey {
        topic_id: topic.id,
        partition: data.index,
    };
    let verified = match transactional_producer(&records) {
        Ok(None) => false,
        Ok(Some(producer)) if diskless.view.get(&key).head.open.contains_key(&producer.0) => false,
        Ok(Some(producer)) => {
            // Produce v12: the coordinator adds the partition (KIP-890 part 2).
            let add = context.version >= 12;
            let id = context.transactional_id.as_deref();
            match ask_coordinator(broker, &topic.name, data.index, id, producer, add).await {
                Ok(()) => true,
                Err(code) => {
                    return refused(
                        code,
                        "the transaction was not verified with its coordinator".into(),
                    );
                }
            }
        }
        Err(code) => {
            return refused(
                code,
                "a batch with a producer id needs sequence numbers".to_string(),
            );
        }
    };
    if acks == 0 {
        // The append goes on; nobody waits for it.
        return match diskless
            .appender
            .enqueue_detached(key, &topic.name, &topic.config, &records)
            .await
        {
            Ok(()) => Stage::Answered(
                PartitionProduceResponse::default()
                    .with_index(data.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1),
            ),
            Err(e) => refused(e.code(), e.to_string()),
        };
    }
    let queued = if verified {
        diskless
            .appender
            .enqueue_verified(key, &topic.name, &topic.config, &records)
            .await
    } else {
        diskless
            .appender
            .enqueue(key, &topic.name, &topic.config, &records)
            .await
    };
    match queued {
        Ok(answer) => Stage::Diskless(QueuedDiskless {
            index: data.index,
            bytes: records.len() as u64,
            answer,
        }),
        Err(e) => refused(e.code(), e.to_string()),
    }
}

struct AppendedPartition {
    partition: Arc<Partition>,
    index: i32,
    bytes: u64,
    appended: crate::partition::Appended,
}

/// What every partition of one produce request shares.
struct ProduceContext {
    acks: i16,
    now: i64,
    version: i16,
    transactional_id: Option<String>,
}

/// Validates and appends one partition's records, without waiting for acks=all.
async fn append(
    broker: &Arc<Broker>,
    context: &ProduceContext,
    topic: Option<&Arc<crate::registry::Topic>>,
    name: &str,
    min_isr: usize,
    data: kafka_protocol::messages::produce_request::PartitionProduceData,
) -> Stage {
    let ProduceContext {
        acks,
        now,
        version,
        ref transactional_id,
    } = *context;
    let refused = |code, message| Stage::Answered(partition_error(data.index, code, message));
    if !matches!(acks, -1..=1) {
        return refused(ResponseError::InvalidRequiredAcks, None);
    }
    if crate::group::is_internal(name) {
        broker
            .metrics
            .error("Produce", ResponseError::InvalidTopicException);
        return refused(
            ResponseError::InvalidTopicException,
            Some(format!(
                "{name} is an internal topic; clients cannot produce to it"
            )),
        );
    }
    if let Some(topic) = topic.filter(|t| t.diskless) {
        return diskless_append(broker, context, topic, data).await;
    }
    let partition = topic.and_then(|t| t.partition(data.index));
    let Some(partition) = partition else {
        broker
            .metrics
            .error("Produce", ResponseError::UnknownTopicOrPartition);
        return refused(ResponseError::UnknownTopicOrPartition, None);
    };
    let incoming = data.records.as_ref().map_or(0, |r| r.len() as u64);
    if broker.disk_is_full(incoming) {
        broker
            .metrics
            .error("Produce", ResponseError::KafkaStorageError);
        broker
            .metrics
            .produce_refused_disk
            .with_label_values(&[name])
            .inc();
        return refused(
            ResponseError::KafkaStorageError,
            Some(format!(
                "the broker's data disk is past disk_high_watermark_percent ({}%); retry once uploads or retention free space",
                broker.config.disk_high_watermark_percent
            )),
        );
    }
    let records = data.records.clone().unwrap_or_default();
    let producer = transactional_producer(&records);
    let guard = match producer {
        Ok(None) => None,
        Ok(Some(producer)) => {
            // Produce v12 from a KIP-890 part 2 producer: no AddPartitionsToTxn
            // came first, the leader adds the partition.
            // (Decided by the version alone, as Kafka: a client sends v12 in a
            // transaction only with transaction.version 2 finalized, and adding
            // a partition already added changes nothing.)
            let add = version >= 12;
            let id = transactional_id.as_deref();
            match verify(broker, partition, id, producer, add).await {
                Ok(guard) => guard,
                Err(code) => {
                    broker.metrics.error("Produce", code);
                    return refused(code, None);
                }
            }
        }
        Err(code) => {
            broker.metrics.error("Produce", code);
            return refused(
                code,
                Some("a batch with a producer id needs sequence numbers".to_string()),
            );
        }
    };
    match partition
        .append_unacknowledged(&records, now, acks, min_isr, guard)
        .await
    {
        Ok(appended) => Stage::Appended(AppendedPartition {
            partition: partition.clone(),
            index: data.index,
            bytes: records.len() as u64,
            appended,
        }),
        Err(e) => {
            let mut code = partition_error_code(&e);
            // Its transaction was open here when the batch came, so it was not
            // verified; a marker ended it before the append. Retriable: the
            // retry is verified (or added) against the coordinator.
            if matches!(producer, Ok(Some(_)))
                && guard.is_none()
                && matches!(
                    e,
                    crate::partition::PartitionError::Log(crate::log::LogError::Producer(
                        crate::log::producers::ProducerError::NotInTransaction { .. }
                    ))
                )
            {
                code = ResponseError::NotEnoughReplicas;
            }
            broker.metrics.error("Produce", code);
            tracing::debug!(topic = %name, partition = data.index, error = %e, "produce refused");
            refused(code, Some(e.to_string()))
        }
    }
}
