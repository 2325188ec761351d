//! Transactions and merging: the last stable offset bounds a merge, and a merged
//! segment's transaction index lists every aborted transaction overlapping it.

use super::*;
use crate::diskless::state::AbortedEntry;
use crate::log::txn::AbortedTxn;

/// Appends runs holding `objects`' aborted entries; the head's open transactions become
/// `open`.
async fn append_txn(
    fx: &Fixture,
    objects: &[(&[usize], &[AbortedEntry])],
    open: &BTreeMap<i64, i64>,
    at: i64,
) -> Vec<Run> {
    fx.append_runs(key(), objects, Some(open), at).await
}

/// The transaction index of the merged segment holding `offset`.
async fn txn_index_at(merger: &Merger, remote: &RemoteLog, offset: i64) -> Vec<AbortedTxn> {
    let entry = remote
        .locate(offset)
        .await
        .expect("locate")
        .expect("a merged segment");
    crate::partition::remote::aborted_in_remote(&merger.tiering.reader(), remote, &entry)
        .await
        .expect("read the transaction index")
}

fn txn(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedEntry(producer_id, first, last, lso).into()
}

#[test]
fn plan_never_merges_at_or_past_the_last_stable_offset() {
    let run = |base: i64, end: i64| Run {
        key: format!("k{base}"),
        size: 100,
        pos: 0,
        len: 100,
        base,
        end,
        max_ts: 0,
        at: 1_000,
        broker: 1,
        batches: 1,
        aborted: Vec::new(),
    };
    let mut state = PartitionState {
        head: Head {
            next: 30,
            runs: 3,
            run_bytes: 300,
            ..Head::default()
        },
        head_version: 1,
        runs: BTreeMap::new(),
        producers: BTreeMap::new(),
    };
    for (base, end) in [(0, 10), (10, 20), (20, 30)] {
        state.runs.insert(base, run(base, end));
    }
    let old = 100_000;
    assert_eq!(
        plan(&state, None, &settings(1 << 20), old),
        Plan::Merge(vec![0, 10, 20])
    );
    // A transaction open from offset 15: the run holding it waits whole, with all after.
    state.head.open.insert(7, 15);
    assert_eq!(
        plan(&state, None, &settings(1 << 20), old),
        Plan::Merge(vec![0])
    );
    // Open from a run's first offset: the runs before it go.
    state.head.open.insert(8, 10);
    assert_eq!(
        plan(&state, None, &settings(1 << 20), old),
        Plan::Merge(vec![0])
    );
    // Open from the first run: nothing, even though a merge is due (not an empty merge).
    state.head.open.insert(9, 3);
    assert_eq!(plan(&state, None, &settings(1 << 20), old), Plan::Nothing);
    // The oldest open transaction ends (its marker): the bound moves to the next one.
    state.head.open.remove(&9);
    state.head.open.remove(&8);
    assert_eq!(
        plan(&state, None, &settings(1 << 20), old),
        Plan::Merge(vec![0])
    );
    state.head.open.clear();
    assert_eq!(
        plan(&state, None, &settings(1 << 20), old),
        Plan::Merge(vec![0, 10, 20])
    );
}

#[tokio::test]
async fn a_round_merges_up_to_the_last_stable_offset_only() {
    let fx = Fixture::new();
    // Runs 0..2, 2..4 (a transaction opened at 3), 4..5; the transaction is still open.
    let open = BTreeMap::from([(7, 3)]);
    append_txn(
        &fx,
        &[(&[2], &[]), (&[1, 1], &[]), (&[1], &[])],
        &open,
        1_000,
    )
    .await;
    let merger = fx.merger().await;
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 100_000)
        .await
        .expect("round");
    assert_eq!(
        merged,
        Merged {
            uploaded: true,
            trimmed: 1
        }
    );
    let state = stored(&fx).await;
    assert_eq!((state.head.merged, state.head.last_stable()), (2, 3));
    // The next round has nothing to merge until the transaction ends.
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 200_000)
        .await
        .expect("round");
    assert_eq!(merged, Merged::default());
    assert_eq!(stored(&fx).await.runs.len(), 2);
}

#[tokio::test]
async fn an_aborted_transaction_over_two_segments_is_in_both_transaction_indexes() {
    let fx = Fixture::new();
    // Producer 7's transaction has records 2..6 and its abort marker at 6, the run of
    // 6..8; producer 9's, records 4..6 and its marker at 7. No transaction is open.
    let aborted = [AbortedEntry(7, 2, 6, 8), AbortedEntry(9, 4, 7, 8)];
    let runs = append_txn(
        &fx,
        &[(&[3], &[]), (&[3], &[]), (&[1, 1], &aborted)],
        &BTreeMap::new(),
        1_000,
    )
    .await;
    let merger = fx.merger().await;
    // The first segment: the first run only (the second does not fit the target).
    let first = merger
        .merge_partition(TOPIC, &key(), &settings(runs[0].len), 100_000)
        .await
        .expect("round");
    assert!(first.uploaded);
    assert_eq!(stored(&fx).await.head.merged, 3);
    // The second: the rest.
    let second = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 100_000)
        .await
        .expect("round");
    assert!(second.uploaded);
    assert_eq!(stored(&fx).await.head.merged, 8);
    let remote = merger.remote_log(TOPIC, &key()).await.expect("remote log");
    // Segment [0, 3) holds producer 7's offset 2, not producer 9's records.
    assert_eq!(txn_index_at(&merger, &remote, 0).await, [txn(7, 2, 6, 8)]);
    // Segment [3, 8) holds the rest of both, and both markers.
    assert_eq!(
        txn_index_at(&merger, &remote, 3).await,
        [txn(7, 2, 6, 8), txn(9, 4, 7, 8)]
    );
    // The first segment's records end at 3, where the second's begin.
    let reader = merger.tiering.reader();
    let (records, entry) = crate::partition::remote::read_remote(&reader, &remote, 0, 1 << 20)
        .await
        .expect("read");
    let end = crate::log::txn::records_end(&records).expect("records");
    assert_eq!((entry.expect("a segment").base_offset, end), (0, 3));
}

#[tokio::test]
async fn an_abort_marker_past_the_merge_is_already_in_the_segments_index() {
    let fx = Fixture::new();
    // Records 0..2, then producer 7's transaction 2..5 (committed below the LSO), its
    // abort marker at 5 in the last run.
    let aborted = [AbortedEntry(7, 2, 5, 6)];
    let runs = append_txn(
        &fx,
        &[(&[2], &[]), (&[3], &[]), (&[1], &aborted)],
        &BTreeMap::new(),
        1_000,
    )
    .await;
    let merger = fx.merger().await;
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(runs[0].len + runs[1].len), 100_000)
        .await
        .expect("round");
    assert!(merged.uploaded);
    let state = stored(&fx).await;
    assert_eq!(state.head.merged, 5);
    assert_eq!(
        state.runs.values().map(|r| r.base).collect::<Vec<_>>(),
        [5],
        "the marker's run is not merged"
    );
    let remote = merger.remote_log(TOPIC, &key()).await.expect("remote log");
    assert_eq!(txn_index_at(&merger, &remote, 0).await, [txn(7, 2, 5, 6)]);
}

#[tokio::test]
async fn a_segment_without_aborted_transactions_has_no_transaction_index() {
    let fx = Fixture::new();
    // Producer 7's aborted transaction is all at or past 2: not in segment [0, 2).
    let aborted = [AbortedEntry(7, 2, 3, 4)];
    let runs = append_txn(
        &fx,
        &[(&[2], &[]), (&[1, 1], &aborted)],
        &BTreeMap::new(),
        1_000,
    )
    .await;
    let merger = fx.merger().await;
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(runs[0].len), 100_000)
        .await
        .expect("round");
    assert!(merged.uploaded);
    let remote = merger.remote_log(TOPIC, &key()).await.expect("remote log");
    let entry = remote.locate(0).await.expect("locate").expect("a segment");
    assert_eq!(entry.txn_index_bytes, 0);
}
