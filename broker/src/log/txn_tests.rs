//! Transactions in the partition log: guards, markers, the last stable offset's bound,
//! the aborted-transaction index, and what survives a restart and a truncation.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::tests::config;
use super::txn::{AbortedTxn, Marker};
use super::*;
use crate::log::records::MAX_INFLATED_BYTES;

fn txn_batch(producer_id: i64, first_seq: i32, count: usize) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::from(format!("p{producer_id}-{i}"))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.to_vec()
}

fn append_txn(
    log: &mut Log,
    records: &[u8],
    guard: Option<TxnGuard>,
) -> Result<AppendInfo, LogError> {
    let prepared = prepare(records, 1 << 20, false, MAX_INFLATED_BYTES)?;
    log.append_verified(prepared, 0, 0, guard)
        .map(|(info, _)| info)
}

fn guard(log: &Log, producer_id: i64) -> Option<TxnGuard> {
    Some(TxnGuard {
        producer_id,
        marker_position: log.marker_position(producer_id),
    })
}

fn marker(log: &mut Log, producer_id: i64, marker: Marker) -> i64 {
    log.append_marker(producer_id, 0, marker, 0, 0, 0)
        .expect("marker")
        .0
        .base_offset
}

#[test]
fn markers_bound_the_stable_offset_and_aborts_are_indexed_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config(), 0).expect("open");
    // A transactional batch needs a verified transaction.
    assert!(matches!(
        append_txn(&mut log, &txn_batch(1, 0, 3), None),
        Err(LogError::Producer(
            producers::ProducerError::NotInTransaction { producer_id: 1 }
        ))
    ));
    let g = guard(&log, 1);
    append_txn(&mut log, &txn_batch(1, 0, 3), g).expect("verified"); // 0..=2
    let g = guard(&log, 2);
    append_txn(&mut log, &txn_batch(2, 0, 2), g).expect("verified"); // 3..=4
    // Later batches of an open transaction need no guard.
    append_txn(&mut log, &txn_batch(1, 3, 1), None).expect("open already"); // 5
    assert_eq!(log.first_unstable_offset(), Some(0));
    assert_eq!(marker(&mut log, 1, Marker::Abort), 6);
    assert_eq!(log.first_unstable_offset(), Some(3));
    let aborted = AbortedTxn {
        producer_id: 1,
        first_offset: 0,
        last_offset: 6,
        last_stable_offset: 3,
    };
    assert_eq!(log.aborted_overlapping(0, 7), vec![aborted]);
    assert_eq!(log.aborted_overlapping(7, 8), vec![]);
    // A guard taken before a marker is void after it: the transaction it verified ended.
    let stale = guard(&log, 2);
    let g1 = guard(&log, 1);
    append_txn(&mut log, &txn_batch(1, 4, 1), g1).expect("a new transaction"); // 7
    assert_eq!(marker(&mut log, 2, Marker::Commit), 8);
    assert!(stale.is_none_or(|g| g.marker_position != log.marker_position(2)));
    assert!(matches!(
        append_txn(&mut log, &txn_batch(2, 2, 1), stale),
        Err(LogError::Producer(
            producers::ProducerError::NotInTransaction { .. }
        ))
    ));
    assert_eq!(log.first_unstable_offset(), Some(7));
    // Restart: the snapshot (at a flush) and the scanned tail rebuild the same state.
    let plan = log.plan_flush(0, true).expect("plan").expect("dirty");
    plan.sync().expect("sync");
    log.finish_flush(plan)
        .expect("prepare")
        .write()
        .expect("finish");
    assert_eq!(marker(&mut log, 1, Marker::Abort), 9);
    let aborted_second = AbortedTxn {
        producer_id: 1,
        first_offset: 7,
        last_offset: 9,
        last_stable_offset: 10,
    };
    assert_eq!(
        log.aborted_overlapping(0, 10),
        vec![aborted, aborted_second]
    );
    // The .txnindex file loses its last entry (as if its append never reached the disk
    // before a crash): the scan of the tail after the checkpoint puts it back.
    let path = txn::AbortedIndex::path(dir.path(), 0);
    std::fs::write(&path, txn::encode_file(&[aborted])).expect("rewrite");
    drop(log);
    let mut log = Log::open(dir.path(), config(), 0).expect("reopen");
    assert_eq!(log.first_unstable_offset(), None);
    assert_eq!(
        log.aborted_overlapping(0, 10),
        vec![aborted, aborted_second]
    );
    let on_disk = txn::decode_file(&std::fs::read(&path).expect("read")).expect("decode");
    assert_eq!(on_disk, vec![aborted, aborted_second]);
    // A truncation below the second abort marker drops its entry (in memory and in the
    // file) and reopens its transaction.
    log.truncate_to(9, 0).expect("truncate");
    assert_eq!(log.aborted_overlapping(0, 10), vec![aborted]);
    assert_eq!(log.first_unstable_offset(), Some(7));
    let g = guard(&log, 3);
    append_txn(&mut log, &txn_batch(3, 0, 1), g).expect("append past");
    append_txn(&mut log, &txn_batch(3, 1, 1), None).expect("append past");
    drop(log);
    let log = Log::open(dir.path(), config(), 0).expect("reopen");
    assert_eq!(
        log.aborted_overlapping(0, 20),
        vec![aborted],
        "the truncated entry does not come back once the log grows past it"
    );
}
