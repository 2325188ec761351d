//! Tests of a leader's append and its wait for the ISR.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::*;
use crate::log::tests::{batch, config};

#[test]
fn deleting_a_partition_answers_an_acks_all_wait_at_once() {
    // Paused time: without the wake-up on deletion, the wait would end by its (auto-advanced)
    // timeout with ReplicationTimeout instead.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(&dir.path().join("t-0"), config(), 0).expect("open");
    let mut replica = ReplicaState::solo(0, 0, 0);
    // A follower that never fetches: the high watermark stays at 0.
    replica.replicas = vec![0, 1];
    replica.isr = vec![0, 1];
    let partition = Arc::new(Partition::new("t".into(), 0, log, replica, None));
    let records = Bytes::from(batch(1, 0, Compression::None));
    rt.block_on(async {
        let waiting = tokio::spawn({
            let partition = Arc::clone(&partition);
            async move { partition.append(&records, 0, -1, 1, 600_000).await }
        });
        while partition.log_end_offset() < 1 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "acks=all waits for the follower");
        partition.delete_files().expect("delete");
        let answered = waiting.await.expect("the append task completes");
        assert!(
            matches!(answered, Err(PartitionError::Deleted)),
            "{answered:?}"
        );
    });
}
