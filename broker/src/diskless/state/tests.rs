use super::*;

fn object() -> ObjectInfo {
    ObjectInfo {
        key: "diskless/2026120716/1-x.batches".into(),
        size: 1000,
        broker: 1,
        now_ms: 5,
    }
}

fn plain(pos: u64, records: i32) -> PendingBatch {
    PendingBatch {
        kind: BatchKind::Data,
        producer_id: -1,
        epoch: -1,
        first_sequence: -1,
        records,
        max_ts: 10,
        pos,
        len: 100,
    }
}

fn idempotent(pos: u64, producer_id: i64, epoch: i16, seq: i32, records: i32) -> PendingBatch {
    PendingBatch {
        kind: BatchKind::Data,
        producer_id,
        epoch,
        first_sequence: seq,
        records,
        max_ts: 10,
        pos,
        len: 100,
    }
}

fn commit(state: &mut PartitionState, batches: &[PendingBatch]) -> Vec<Outcome> {
    let plan = plan(state, batches, &object());
    let version = state.head_version + 1;
    state.apply(&plan, version);
    assert!(state.is_contiguous(), "{state:?}");
    plan.outcomes
}

#[test]
fn offsets_are_dense_and_one_run_covers_the_batches() {
    let mut state = PartitionState::default();
    let outcomes = commit(&mut state, &[plain(0, 3), plain(100, 2)]);
    assert_eq!(
        outcomes,
        [
            Outcome::Appended { base_offset: 0 },
            Outcome::Appended { base_offset: 3 }
        ]
    );
    assert_eq!(state.head.next, 5);
    assert_eq!(state.head.runs, 1);
    assert_eq!(state.head.run_bytes, 200);
    let run = &state.runs[&0];
    assert_eq!(
        (run.base, run.end, run.pos, run.len, run.batches),
        (0, 5, 0, 200, 2)
    );
    let outcomes = commit(&mut state, &[plain(0, 1)]);
    assert_eq!(outcomes, [Outcome::Appended { base_offset: 5 }]);
    assert_eq!(state.runs.len(), 2);
    assert_eq!(state.head.runs, 2);
}

#[test]
fn a_retry_gets_its_first_offsets_back_and_is_not_stored_again() {
    let mut state = PartitionState::default();
    commit(&mut state, &[idempotent(0, 7, 0, 0, 2), plain(100, 1)]);
    let before = state.clone();
    // The retry (same sequences) is a duplicate, however often it comes.
    let plan = plan(&state, &[idempotent(0, 7, 0, 0, 2)], &object());
    assert_eq!(plan.outcomes, [Outcome::Duplicate { base_offset: 0 }]);
    assert!(!plan.appended());
    assert_eq!(plan.head, before.head);
    // The next batch continues; a duplicate between two new batches splits the run.
    let outcomes = commit(
        &mut state,
        &[
            idempotent(0, 7, 0, 2, 1),
            idempotent(100, 7, 0, 2, 1),
            plain(200, 1),
        ],
    );
    assert_eq!(
        outcomes,
        [
            Outcome::Appended { base_offset: 3 },
            Outcome::Duplicate { base_offset: 3 },
            Outcome::Appended { base_offset: 4 }
        ]
    );
    assert_eq!(state.runs[&3].pos, 0);
    assert_eq!(state.runs[&4].pos, 200);
    assert_eq!(state.head.runs, before.head.runs + 2);
}

#[test]
fn a_gap_in_sequences_is_out_of_order_and_takes_no_offsets() {
    let mut state = PartitionState::default();
    commit(&mut state, &[idempotent(0, 7, 0, 0, 2)]);
    let outcomes = commit(&mut state, &[idempotent(0, 7, 0, 5, 1), plain(100, 1)]);
    assert_eq!(
        outcomes,
        [
            Outcome::Refused(ProducerErrorKind::OutOfOrder),
            Outcome::Appended { base_offset: 2 }
        ]
    );
    assert_eq!(state.head.next, 3);
    // A new epoch must start at 0.
    let outcomes = commit(&mut state, &[idempotent(0, 7, 1, 2, 1)]);
    assert_eq!(outcomes, [Outcome::Refused(ProducerErrorKind::OutOfOrder)]);
    let outcomes = commit(&mut state, &[idempotent(0, 7, 1, 0, 1)]);
    assert_eq!(outcomes, [Outcome::Appended { base_offset: 3 }]);
    assert_eq!(state.producers[&7].epoch, 1);
    assert_eq!(state.producers[&7].batches, [ProducerBatch(0, 0, 3, 3)]);
}

#[test]
fn an_older_epoch_is_fenced() {
    let mut state = PartitionState::default();
    commit(&mut state, &[idempotent(0, 7, 3, 0, 1)]);
    let outcomes = commit(&mut state, &[idempotent(0, 7, 2, 1, 1)]);
    assert_eq!(outcomes, [Outcome::Refused(ProducerErrorKind::Fenced)]);
    assert_eq!(state.head.next, 1);
}

#[test]
fn a_producer_seen_for_the_first_time_starts_anywhere_and_only_five_batches_are_kept() {
    let mut state = PartitionState::default();
    // KIP-360: an unknown producer (expired, or new to this partition) at any sequence.
    let mut batches = Vec::new();
    for i in 0..7 {
        batches.push(idempotent(i * 100, 9, 0, 40 + i as i32, 1));
    }
    let outcomes = commit(&mut state, &batches);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Appended { .. }))
    );
    let entry = &state.producers[&9];
    assert_eq!(entry.batches.len(), CACHED_BATCHES);
    assert_eq!(entry.batches[0], ProducerBatch(42, 42, 2, 2));
    // A retry of a batch no longer remembered is out of order, as Kafka answers.
    let outcomes = commit(&mut state, &[idempotent(0, 9, 0, 40, 1)]);
    assert_eq!(outcomes, [Outcome::Refused(ProducerErrorKind::OutOfOrder)]);
}

#[test]
fn sequences_wrap_at_i32_max() {
    let mut state = PartitionState::default();
    commit(&mut state, &[idempotent(0, 7, 0, i32::MAX - 1, 2)]);
    assert_eq!(state.producers[&7].batches[0].1, i32::MAX);
    let outcomes = commit(&mut state, &[idempotent(0, 7, 0, 0, 3)]);
    assert_eq!(outcomes, [Outcome::Appended { base_offset: 2 }]);
    let batch = PendingBatch {
        first_sequence: i32::MAX,
        records: 3,
        ..plain(0, 1)
    };
    assert_eq!(batch.last_sequence(), 1);
}

#[test]
fn recomputing_against_a_state_another_broker_moved_shifts_offsets() {
    // Planned against the view, committed against a state where another broker appended
    // the same producer's batch (a retry through it) and others.
    let view = PartitionState::default();
    let batches = [idempotent(0, 7, 0, 0, 2), plain(100, 1)];
    let planned = plan(&view, &batches, &object());
    assert_eq!(planned.head.next, 3);
    let mut moved = view.clone();
    commit(&mut moved, &[plain(0, 4), idempotent(100, 7, 0, 0, 2)]);
    let outcomes = commit(&mut moved, &batches);
    assert_eq!(
        outcomes,
        [
            Outcome::Duplicate { base_offset: 4 },
            Outcome::Appended { base_offset: 6 }
        ]
    );
    assert_eq!(moved.runs[&6].pos, 100);
}

#[test]
fn idle_producers_expire_oldest_first_a_few_per_commit() {
    let mut state = PartitionState::default();
    for id in 0..15 {
        state.producers.insert(
            id,
            ProducerEntry {
                epoch: 0,
                batches: Vec::new(),
                last_ms: 1000 + id,
                last_ts: 0,
            },
        );
    }
    assert!(state.expired_producers(2000, 5000).is_empty());
    let expired = state.expired_producers(1_000_000, 5000);
    assert_eq!(expired, (0..EXPIRE_PER_COMMIT as i64).collect::<Vec<_>>());
    // Only those idle past the expiry: 1000 + 0..=4 are older than 1010 - 5.
    assert_eq!(state.expired_producers(1010, 5), [0, 1, 2, 3, 4]);
}

#[test]
fn contiguity_is_checked_above_merged_only() {
    let mut state = PartitionState::default();
    commit(&mut state, &[plain(0, 2)]);
    commit(&mut state, &[plain(0, 2)]);
    assert!(state.is_contiguous());
    // A merge moved `merged` past the first run, which lingers until trimmed.
    state.head.merged = 2;
    assert!(state.is_contiguous());
    assert_eq!(state.live_runs().count(), 1);
    // A hole is not contiguous.
    state.runs.remove(&2);
    state.head.merged = 0;
    state.head.next = 4;
    assert!(!state.is_contiguous());
}

#[test]
fn records_read_as_the_spec_writes_them() {
    let head: Head = serde_json::from_str(
        r#"{"v":1,"log_start":0,"next":10,"merged":4,"runs":2,"run_bytes":300}"#,
    )
    .expect("head v1 parses");
    assert_eq!((head.next, head.merged, head.runs), (10, 4, 2));
    let run: Run = serde_json::from_str(
        r#"{"key":"diskless/2026120716/1-u.batches","size":9,"pos":1,"len":2,"base":4,"end":6,"max_ts":7,"at":8,"broker":1,"batches":1}"#,
    )
    .expect("run parses");
    assert_eq!((run.base, run.end), (4, 6));
    let entry: ProducerEntry =
        serde_json::from_str(r#"{"epoch":2,"batches":[[0,4,10,14]],"last_ms":1,"last_ts":2}"#)
            .expect("producer entry parses");
    assert_eq!(entry.batches, [ProducerBatch(0, 4, 10, 14)]);
    let json = serde_json::to_string(&entry).expect("serialises");
    assert!(json.contains(r#""batches":[[0,4,10,14]]"#), "{json}");
}

/// A verified transactional batch of `records` records.
fn txn(producer_id: i64, epoch: i16, seq: i32, records: i32) -> PendingBatch {
    PendingBatch {
        kind: BatchKind::Transactional { verified: true },
        ..idempotent(0, producer_id, epoch, seq, records)
    }
}

fn marker(producer_id: i64, epoch: i16, marker: Marker) -> PendingBatch {
    PendingBatch {
        kind: BatchKind::Marker(marker),
        producer_id,
        epoch,
        first_sequence: -1,
        records: 1,
        max_ts: 10,
        pos: 0,
        len: 80,
    }
}

#[test]
fn a_transactional_batch_opens_a_transaction_that_a_commit_marker_closes() {
    let mut state = PartitionState::default();
    commit(&mut state, &[plain(0, 2)]);
    commit(&mut state, &[txn(7, 0, 0, 3)]);
    assert_eq!(state.head.open, BTreeMap::from([(7, 2)]));
    assert_eq!(state.head.last_stable(), 2);
    // A second batch of the same transaction, and others' data, keep the first offset.
    commit(&mut state, &[plain(0, 1), txn(7, 0, 3, 2)]);
    assert_eq!(state.head.open, BTreeMap::from([(7, 2)]));
    assert_eq!((state.head.last_stable(), state.head.next), (2, 8));
    let outcomes = commit(&mut state, &[marker(7, 0, Marker::Commit)]);
    assert_eq!(outcomes, [Outcome::Appended { base_offset: 8 }]);
    assert!(state.head.open.is_empty());
    assert_eq!((state.head.last_stable(), state.head.next), (9, 9));
    assert!(state.runs.values().all(|r| r.aborted.is_empty()));
    // The marker took no sequence: the producer goes on from its last one.
    let outcomes = commit(&mut state, &[txn(7, 0, 5, 1)]);
    assert_eq!(outcomes, [Outcome::Appended { base_offset: 9 }]);
    assert_eq!(state.head.open, BTreeMap::from([(7, 9)]));
}

#[test]
fn an_abort_marker_records_the_aborted_transaction_with_its_run() {
    let mut state = PartitionState::default();
    commit(&mut state, &[txn(7, 0, 0, 2), txn(8, 0, 0, 1)]);
    assert_eq!(state.head.open, BTreeMap::from([(7, 0), (8, 2)]));
    // The marker shares its run with a plain batch before it.
    commit(&mut state, &[plain(0, 1), marker(7, 0, Marker::Abort)]);
    let run = &state.runs[&3];
    assert_eq!((run.base, run.end), (3, 5));
    // lso: producer 8's transaction (at 2) is still open.
    assert_eq!(run.aborted, [AbortedEntry(7, 0, 4, 2)]);
    assert_eq!(state.head.open, BTreeMap::from([(8, 2)]));
    commit(&mut state, &[marker(8, 0, Marker::Abort)]);
    // None open any more: the lso is the offset after the marker.
    assert_eq!(state.runs[&5].aborted, [AbortedEntry(8, 2, 5, 6)]);
    assert_eq!(state.head.last_stable(), 6);
    let aborted: crate::log::txn::AbortedTxn = state.runs[&5].aborted[0].into();
    assert_eq!((aborted.first_offset, aborted.last_offset), (2, 5));
}

#[test]
fn a_marker_without_an_open_transaction_is_appended_and_aborts_nothing() {
    let mut state = PartitionState::default();
    let outcomes = commit(&mut state, &[marker(7, 3, Marker::Abort)]);
    assert_eq!(outcomes, [Outcome::Appended { base_offset: 0 }]);
    assert!(state.runs[&0].aborted.is_empty());
    // Its epoch is the producer's here now.
    assert_eq!(state.producers[&7].epoch, 3);
}

#[test]
fn a_stale_marker_is_refused_and_a_bumped_one_fences_older_batches() {
    let mut state = PartitionState::default();
    commit(&mut state, &[txn(7, 2, 0, 1)]);
    let before = state.clone();
    let outcomes = commit(&mut state, &[marker(7, 1, Marker::Commit)]);
    assert_eq!(outcomes, [Outcome::Refused(ProducerErrorKind::Fenced)]);
    assert_eq!(state.head, before.head);
    // The coordinator aborts a timed-out transaction with a bumped epoch.
    commit(&mut state, &[marker(7, 3, Marker::Abort)]);
    assert_eq!(state.producers[&7].epoch, 3);
    assert!(state.head.open.is_empty());
    assert_eq!(state.runs[&1].aborted, [AbortedEntry(7, 0, 1, 2)]);
    // A late batch of the old epoch is fenced and opens nothing.
    let outcomes = commit(&mut state, &[txn(7, 2, 1, 1)]);
    assert_eq!(outcomes, [Outcome::Refused(ProducerErrorKind::Fenced)]);
    assert!(state.head.open.is_empty());
    // The same in one commit: the marker's bump applies to the batches after it.
    let mut state = PartitionState::default();
    commit(&mut state, &[txn(9, 0, 0, 1)]);
    let outcomes = commit(&mut state, &[marker(9, 1, Marker::Abort), txn(9, 0, 1, 1)]);
    assert_eq!(
        outcomes,
        [
            Outcome::Appended { base_offset: 1 },
            Outcome::Refused(ProducerErrorKind::Fenced)
        ]
    );
}

#[test]
fn transaction_state_rules_for_data_batches() {
    let mut state = PartitionState::default();
    commit(&mut state, &[txn(7, 0, 0, 1)]);
    // A plain batch of the producer while its transaction is open.
    let outcomes = commit(&mut state, &[idempotent(0, 7, 0, 1, 1)]);
    assert_eq!(
        outcomes,
        [Outcome::Refused(ProducerErrorKind::InvalidTxnState)]
    );
    // A newer epoch's transaction before the older one's marker came.
    let outcomes = commit(&mut state, &[txn(7, 1, 0, 1)]);
    assert_eq!(
        outcomes,
        [Outcome::Refused(ProducerErrorKind::MarkerPending)]
    );
    // An unverified batch joins the open transaction ...
    let unverified = |seq| PendingBatch {
        kind: BatchKind::Transactional { verified: false },
        ..txn(7, 0, seq, 1)
    };
    let outcomes = commit(&mut state, &[unverified(1)]);
    assert_eq!(outcomes, [Outcome::Appended { base_offset: 1 }]);
    // ... but opens none: a marker ended it after the produce looked.
    commit(&mut state, &[marker(7, 0, Marker::Commit)]);
    let outcomes = commit(&mut state, &[unverified(2)]);
    assert_eq!(outcomes, [Outcome::Refused(ProducerErrorKind::NotVerified)]);
    assert!(state.head.open.is_empty());
}

#[test]
fn open_transactions_are_capped() {
    let mut state = PartitionState::default();
    let batches: Vec<PendingBatch> = (0..MAX_OPEN_TRANSACTIONS as i64)
        .map(|id| txn(id, 0, 0, 1))
        .collect();
    commit(&mut state, &batches);
    assert_eq!(state.head.open.len(), MAX_OPEN_TRANSACTIONS);
    let outcomes = commit(&mut state, &[txn(1000, 0, 0, 1), txn(5, 0, 1, 1)]);
    assert_eq!(
        outcomes,
        [
            Outcome::Refused(ProducerErrorKind::TooManyTransactions),
            // An open transaction goes on.
            Outcome::Appended {
                base_offset: MAX_OPEN_TRANSACTIONS as i64
            }
        ]
    );
    // A marker frees a place.
    commit(&mut state, &[marker(0, 0, Marker::Commit)]);
    let outcomes = commit(&mut state, &[txn(1000, 0, 0, 1)]);
    assert!(matches!(outcomes[0], Outcome::Appended { .. }));
}

#[test]
fn producers_with_an_open_transaction_never_expire() {
    let mut state = PartitionState::default();
    commit(&mut state, &[txn(7, 0, 0, 1), idempotent(0, 8, 0, 0, 1)]);
    assert_eq!(state.expired_producers(1_000_000, 5000), [8]);
    commit(&mut state, &[marker(7, 0, Marker::Commit)]);
    assert_eq!(state.expired_producers(1_000_000, 5000), [7, 8]);
}

#[test]
fn a_head_with_open_transactions_and_a_run_with_aborted_ones_round_trip() {
    let mut state = PartitionState::default();
    commit(&mut state, &[txn(7, 0, 0, 1), txn(8, 0, 0, 1)]);
    commit(&mut state, &[marker(7, 0, Marker::Abort)]);
    let head: Head =
        serde_json::from_str(&serde_json::to_string(&state.head).expect("head")).expect("parses");
    assert_eq!(head, state.head);
    let json = serde_json::to_string(&state.runs[&2]).expect("run");
    assert!(json.contains(r#""aborted":[[7,0,2,1]]"#), "{json}");
}
