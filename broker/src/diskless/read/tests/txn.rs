//! read_committed reads of diskless partitions: bounded by the last stable offset, with
//! the aborted transactions of the runs and of the merged history.

use std::collections::BTreeMap;

use kafka_protocol::records::Compression;
use strata_tiering::RemoteStore;

use super::brokers::{Cluster, KEY};
use crate::diskless::state::{AbortedEntry, Head, Run};
use crate::diskless::store::AppendWrite;
use crate::log::format;
use crate::log::txn::AbortedTxn;

/// Commits one run per entry of `objects` (batches of that many records, timestamps
/// from `1000 * (n + 1)`, and the aborted entries the run holds, as the commit of an
/// abort marker stores them), as an appender would; the head's open transactions become
/// `open`.
async fn append_runs(
    cluster: &Cluster,
    objects: &[(&[usize], &[AbortedEntry])],
    open: &BTreeMap<i64, i64>,
) {
    for (n, (counts, aborted)) in objects.iter().enumerate() {
        let timestamp = 1_000 * (n as i64 + 1);
        let mut bytes = Vec::new();
        for count in counts.iter() {
            bytes.extend(crate::log::tests::batch(
                *count,
                timestamp,
                Compression::None,
            ));
        }
        let object_key = format!("diskless/2026120716/1-{}.batches", uuid::Uuid::new_v4());
        cluster
            .backend
            .put(&object_key, bytes.clone().into())
            .await
            .expect("put");
        let state = cluster
            .store
            .load(&KEY)
            .await
            .expect("load")
            .unwrap_or_default();
        let records: i64 = counts.iter().map(|c| *c as i64).sum();
        let run = Run {
            key: object_key,
            size: bytes.len() as u64,
            pos: 0,
            len: bytes.len() as u64,
            base: state.head.next,
            end: state.head.next + records,
            max_ts: timestamp + records,
            at: timestamp,
            broker: 1,
            batches: counts.len() as u32,
            aborted: aborted.to_vec(),
        };
        let head = Head {
            next: run.end,
            runs: state.head.runs + 1,
            run_bytes: state.head.run_bytes + run.len,
            open: open.clone(),
            ..state.head.clone()
        };
        let conflicts = cluster
            .store
            .append(&[AppendWrite {
                key: KEY,
                expected: state.head_version,
                head,
                runs: vec![run],
                producers: Vec::new(),
                expire: Vec::new(),
            }])
            .await
            .expect("append");
        assert!(conflicts.is_empty());
    }
}

/// The base offsets of the batches of `records`.
fn bases(records: &[u8]) -> Vec<i64> {
    let mut at = 0;
    let mut bases = Vec::new();
    while let Some((base, size, _)) = format::read_batch_prefix(&records[at..]) {
        bases.push(base);
        at += size;
    }
    bases
}

fn txn(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedEntry(producer_id, first, last, lso).into()
}

#[tokio::test]
async fn read_committed_stops_at_the_last_stable_offset_with_the_runs_aborted_entries() {
    let cluster = Cluster::new();
    // Runs 0..2, 2..4 (producer 9's abort marker at 2, its records at 0..2), 4..6 and
    // 6..7 (producer 5's aborted 4..6, marker at 6); producer 7's transaction is open from
    // 4: the last stable offset is 4.
    append_runs(
        &cluster,
        &[
            (&[2], &[]),
            (&[1, 1], &[AbortedEntry(9, 0, 2, 3)]),
            (&[1, 1], &[]),
            (&[1], &[AbortedEntry(5, 4, 6, 4)]),
        ],
        &BTreeMap::from([(7, 4)]),
    )
    .await;
    let a = cluster.broker(1).await;
    let read = a.fetch(KEY, "t", 0, 1 << 20, true).await.expect("read");
    assert_eq!(bases(&read.records), [0, 2, 3], "nothing from 4 on");
    assert_eq!((read.last_stable_offset, read.high_watermark), (4, 7));
    assert_eq!(read.aborted, [txn(9, 0, 2, 3)]);
    // From the last stable offset up to `next`: empty, not out of range.
    for offset in [4, 5, 7] {
        let read = a.fetch(KEY, "t", offset, 1 << 20, true).await;
        let read = read.expect("in range");
        assert!(read.records.is_empty() && read.aborted.is_empty());
    }
    // A transaction whose marker is below the fetch offset is not listed.
    let read = a.fetch(KEY, "t", 3, 1 << 20, true).await.expect("read");
    assert_eq!((bases(&read.records), read.aborted), (vec![3], vec![]));
    // read_uncommitted: everything, no list, the same last stable offset.
    let read = a.fetch(KEY, "t", 0, 1 << 20, false).await.expect("read");
    assert_eq!(bases(&read.records), [0, 2, 3, 4, 5, 6]);
    assert!(read.aborted.is_empty());
    assert_eq!(read.last_stable_offset, 4);
    // ListOffsets by timestamp: a record at or past the last stable offset is not
    // found for read_committed (run 4..6 carries timestamps from 3000).
    let found = a.offset_for_timestamp(KEY, "t", Some(3_000), true).await;
    assert_eq!(found.expect("search"), None);
    let found = a.offset_for_timestamp(KEY, "t", Some(3_000), false).await;
    assert_eq!(found.expect("search"), Some((4, 3_000)));
    let found = a.offset_for_timestamp(KEY, "t", Some(2_000), true).await;
    assert_eq!(found.expect("search"), Some((2, 2_000)));
}

#[tokio::test]
async fn read_committed_reads_of_merged_history_list_the_segments_aborted_entries() {
    let cluster = Cluster::new();
    // Producer 9's records 0..2 (the first run) and its abort marker at 3 (the second).
    append_runs(
        &cluster,
        &[(&[2], &[]), (&[1, 1], &[AbortedEntry(9, 0, 3, 4)])],
        &BTreeMap::new(),
    )
    .await;
    let a = cluster.broker(1).await;
    let merger = crate::diskless::merge::Merger {
        store: cluster.store.clone(),
        tiering: a.tiering.clone(),
        staging: cluster.dir.path().join("merge"),
        part_bytes: 16 << 20,
        write_cache: None,
    };
    let settings = crate::diskless::merge::MergeSettings {
        target_bytes: 1,
        max_age_ms: 0,
        max_pending_runs: 2000,
        index_interval_bytes: 1,
    };
    // One run a round: the first run only.
    let merged = merger.merge_partition("t", &KEY, &settings, i64::MAX / 2);
    assert!(merged.await.expect("merged").uploaded);
    a.view.refresh(&KEY).await.expect("refresh");
    assert_eq!(a.view.get(&KEY).head.merged, 2);
    // From the merged segment [0, 2): the entry comes from its transaction index (the
    // runs hold it too; listed once).
    let read = a.fetch(KEY, "t", 0, 1 << 20, true).await.expect("read");
    assert!(read.from_merged);
    assert_eq!(bases(&read.records), [0]);
    assert_eq!(read.aborted, [txn(9, 0, 3, 4)]);
    // The marker's run merged too: the segment [2, 4) lists it, the runs no longer.
    let merged = merger.merge_partition("t", &KEY, &settings, i64::MAX / 2);
    assert!(merged.await.expect("merged").uploaded);
    a.view.refresh(&KEY).await.expect("refresh");
    assert!(a.view.get(&KEY).runs.is_empty());
    for offset in [0, 2] {
        let read = a
            .fetch(KEY, "t", offset, 1 << 20, true)
            .await
            .expect("read");
        assert!(read.from_merged);
        assert_eq!(read.aborted, [txn(9, 0, 3, 4)], "from {offset}");
    }
    // read_uncommitted lists nothing.
    let read = a.fetch(KEY, "t", 0, 1 << 20, false).await.expect("read");
    assert!(read.aborted.is_empty());
}
