//! Partition behaviour that needs the log lock's holder and a background write to
//! interleave, driven step by step here, and a leader's append and its wait for the ISR.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::*;
use crate::log::records::MAX_INFLATED_BYTES;
use crate::log::tests::{batch, config};

/// After a failed fsync neither the data nor a checkpoint recording it can be trusted, so
/// a periodic flush's checkpoint that was prepared but not yet written must not land.
/// (Found in review: only topic deletion stopped such writes.)
#[test]
fn a_checkpoint_prepared_before_the_partition_went_offline_is_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    let records = batch(3, 0, Compression::None);
    let prepared = log::prepare(
        &records,
        config().max_message_bytes,
        false,
        MAX_INFLATED_BYTES,
    )
    .expect("a valid batch");
    log.append(prepared, 0, 0).expect("append");
    let partition = Partition::new("t".into(), 0, log, ReplicaState::solo(0, 0, 0), None);
    let checkpoint = dir.path().join("partition.checkpoint");
    // A new log writes no checkpoint at open.
    assert!(!checkpoint.exists());

    // The flusher prepared its checkpoint under the lock, then released it...
    let write = {
        let mut log = partition.lock();
        let plan = log.plan_flush(0, true).expect("plan").expect("dirty");
        plan.sync().expect("fsync");
        log.finish_flush(plan).expect("prepare")
    };
    // ...and before the write ran on the blocking pool, another fsync failed.
    partition.take_offline(&LogError::Io {
        dir: dir.path().to_path_buf(),
        source: std::io::Error::other("an fsync failed"),
    });
    write.write().expect("a no-op");
    assert!(partition.is_offline());
    assert!(
        !checkpoint.exists(),
        "the checkpoint recorded data after the failed fsync"
    );
}

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
