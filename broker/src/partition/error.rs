//! What a partition operation can fail with: its log's errors, and what only a partition
//! knows (leadership, the in-sync replicas, deletion, going offline, the remote tier).
//! Handlers map it to Kafka error codes (`handlers::partition_error_code`).

use crate::log::LogError;

use super::remote::RemoteReadError;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the partition was deleted")]
    Deleted,
    #[error(
        "the partition is offline after a storage failure (fsync or compaction swap); restart the broker to recover it"
    )]
    Offline,
    #[error("decoding records failed unexpectedly (the decode task did not finish)")]
    DecodeFailed,
    #[error("this broker is not the partition's leader")]
    NotLeader,
    #[error("the in-sync replicas ({isr}) are fewer than min.insync.replicas ({min})")]
    NotEnoughReplicas { isr: usize, min: usize },
    #[error(
        "written, but the in-sync replicas shrank below min.insync.replicas before it was replicated"
    )]
    NotEnoughReplicasAfterAppend,
    #[error("the in-sync replicas did not acknowledge within the request timeout")]
    ReplicationTimeout,
    #[error("remote tier: {0}")]
    Remote(#[from] RemoteReadError),
}
