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

pub async fn produce(
    broker: &Arc<Broker>,
    request: ProduceRequest,
    _version: i16,
) -> Option<ResponseKind> {
    let acks = request.acks;
    let timeout_ms = i64::from(request.timeout_ms);
    let now = broker.clock.now_ms();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let topic = broker.topics.get(&name);
        let appends = topic_data.partition_data.into_iter().map(|data| {
            let topic = topic.clone();
            let name = name.clone();
            async move {
                if !matches!(acks, -1..=1) {
                    return partition_error(data.index, ResponseError::InvalidRequiredAcks, None);
                }
                if crate::group::is_internal(&name) {
                    broker.metrics.error("Produce", ResponseError::InvalidTopicException);
                    return partition_error(
                        data.index,
                        ResponseError::InvalidTopicException,
                        Some(format!("{name} is an internal topic; clients cannot produce to it")),
                    );
                }
                let partition = topic.as_ref().and_then(|t| t.partition(data.index));
                let Some(partition) = partition else {
                    broker.metrics.error("Produce", ResponseError::UnknownTopicOrPartition);
                    return partition_error(data.index, ResponseError::UnknownTopicOrPartition, None);
                };
                let incoming = data.records.as_ref().map_or(0, |r| r.len() as u64);
                if broker.disk_is_full(incoming) {
                    broker.metrics.error("Produce", ResponseError::KafkaStorageError);
                    broker.metrics.produce_refused_disk.with_label_values(&[&name]).inc();
                    return partition_error(
                        data.index,
                        ResponseError::KafkaStorageError,
                        Some(format!(
                            "the broker's data disk is past disk_high_watermark_percent ({}%); retry once uploads or retention free space",
                            broker.config.disk_high_watermark_percent
                        )),
                    );
                }
                let records = data.records.unwrap_or_default();
                let min_isr = topic.as_ref().map_or(1, |t| t.config.min_insync_replicas());
                match partition.append(&records, now, acks, min_isr, timeout_ms).await {
                    Ok(info) => {
                        broker.metrics.bytes_in.with_label_values(&[&name]).inc_by(records.len() as u64);
                        broker.metrics.records_in.with_label_values(&[&name]).inc_by(info.records as u64);
                        PartitionProduceResponse::default()
                            .with_index(data.index)
                            .with_base_offset(info.base_offset)
                            .with_log_append_time_ms(info.log_append_time)
                            .with_log_start_offset(partition.watermarks().log_start_offset)
                    }
                    Err(e) => {
                        let code = partition_error_code(&e);
                        broker.metrics.error("Produce", code);
                        tracing::debug!(topic = %name, partition = data.index, error = %e, "produce refused");
                        partition_error(data.index, code, Some(e.to_string()))
                    }
                }
            }
        });
        let partition_responses = join_all(appends).await;
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partition_responses),
        );
    }
    if acks == 0 {
        return None;
    }
    Some(ResponseKind::Produce(
        ProduceResponse::default().with_responses(responses),
    ))
}
