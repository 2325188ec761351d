//! What an append is refused or fails with, and the Kafka error code of each.

use kafka_protocol::ResponseError;

use super::Queued;
use crate::diskless::state::{MAX_OPEN_TRANSACTIONS, PartitionKey, ProducerErrorKind};
use crate::partition::PartitionError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("{0}")]
    Batch(String, ResponseError),
    #[error(
        "partition {key} has {runs} unmerged runs (diskless_max_pending_runs); retry once merging catches up"
    )]
    Backpressure { key: PartitionKey, runs: u32 },
    #[error("the object store failed, nothing was committed: {0}")]
    ObjectStore(String),
    #[error("the metadata store failed; the append may or may not have committed: {0}")]
    MetadataStore(String),
    #[error("{0}")]
    Producer(String, ProducerErrorKind),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error(
        "{queued} bytes of produce wait for the object store (diskless_append_queue_bytes); retry"
    )]
    QueueFull { queued: u64 },
    #[error("partition {0} was deleted while the append was committed")]
    Deleted(PartitionKey),
    #[error("the marker was not committed within {0} ms; it may still be")]
    TimedOut(u64),
}

impl AppendError {
    /// The Kafka error code; every failure of the broker's own (stores, contention) is
    /// retriable.
    pub fn code(&self) -> ResponseError {
        match self {
            AppendError::Batch(_, code) => *code,
            AppendError::Producer(_, ProducerErrorKind::Fenced) => {
                ResponseError::InvalidProducerEpoch
            }
            AppendError::Producer(_, ProducerErrorKind::OutOfOrder) => {
                ResponseError::OutOfOrderSequenceNumber
            }
            AppendError::Producer(_, ProducerErrorKind::InvalidTxnState) => {
                ResponseError::InvalidTxnState
            }
            AppendError::Producer(
                _,
                ProducerErrorKind::MarkerPending | ProducerErrorKind::NotVerified,
            ) => ResponseError::NotEnoughReplicas,
            AppendError::Producer(_, ProducerErrorKind::TooManyTransactions) => {
                ResponseError::KafkaStorageError
            }
            AppendError::Backpressure { .. }
            | AppendError::QueueFull { .. }
            | AppendError::ObjectStore(_)
            | AppendError::MetadataStore(_) => ResponseError::KafkaStorageError,
            AppendError::ShuttingDown | AppendError::TimedOut(_) => {
                ResponseError::NotEnoughReplicas
            }
            AppendError::Deleted(_) => ResponseError::UnknownTopicOrPartition,
        }
    }
}

pub(super) fn refusal(item: &Queued, kind: ProducerErrorKind) -> AppendError {
    let (producer, epoch, sequence) = item.batches.first().map_or((-1, -1, -1), |(h, _)| {
        (h.producer_id, h.producer_epoch, h.base_sequence)
    });
    let why = match kind {
        ProducerErrorKind::Fenced => {
            format!("producer {producer} epoch {epoch} is fenced by a newer epoch")
        }
        ProducerErrorKind::OutOfOrder => {
            format!("producer {producer}: sequence {sequence} does not follow the last one stored")
        }
        ProducerErrorKind::InvalidTxnState => format!(
            "producer {producer} has a transaction open in {}: a batch without the transactional flag is refused until it ends",
            item.key
        ),
        ProducerErrorKind::MarkerPending => format!(
            "producer {producer} begins a transaction at epoch {epoch} while the marker of its older transaction in {} is still to come; retry",
            item.key
        ),
        ProducerErrorKind::NotVerified => format!(
            "producer {producer}'s transaction in {} ended before its batch was committed; retry (the retry is verified with the coordinator)",
            item.key
        ),
        ProducerErrorKind::TooManyTransactions => return too_many_transactions(item.key),
    };
    AppendError::Producer(why, kind)
}

pub(super) fn too_many_transactions(key: PartitionKey) -> AppendError {
    AppendError::Producer(
        format!(
            "partition {key} has {MAX_OPEN_TRANSACTIONS} open transactions (the diskless cap); retry once one ends"
        ),
        ProducerErrorKind::TooManyTransactions,
    )
}

pub(super) fn partition_code(error: &PartitionError) -> ResponseError {
    match error {
        PartitionError::Log(crate::log::LogError::InvalidBatch(e)) => match e {
            crate::log::BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
            crate::log::BatchError::Crc { .. } | crate::log::BatchError::Decompress(_) => {
                ResponseError::CorruptMessage
            }
            crate::log::BatchError::Magic(_) => ResponseError::UnsupportedForMessageFormat,
            crate::log::BatchError::Codec(_) => ResponseError::UnsupportedCompressionType,
            crate::log::BatchError::Timestamp { .. } => ResponseError::InvalidTimestamp,
            _ => ResponseError::InvalidRecord,
        },
        PartitionError::DecodeFailed => ResponseError::UnknownServerError,
        _ => ResponseError::KafkaStorageError,
    }
}
