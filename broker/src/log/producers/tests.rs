use super::*;

fn marker() -> MarkerMeta {
    MarkerMeta {
        timestamp: 0,
        coordinator_epoch: 0,
    }
}

fn meta(first: i32, last: i32, base: i64) -> BatchMeta {
    BatchMeta {
        first_sequence: first,
        last_sequence: last,
        base_offset: base,
        last_offset: base + i64::from(last - first),
    }
}

#[test]
fn sequences_duplicates_and_fencing() {
    let mut state = ProducerState::default();
    assert_eq!(state.check(7, 0, 0, 4), Ok(Verdict::Append));
    state.record(7, 0, meta(0, 4, 100), 0, false, 1);
    assert_eq!(state.check(7, 0, 5, 9), Ok(Verdict::Append));
    state.record(7, 0, meta(5, 9, 105), 0, false, 2);
    // A retry of either batch is answered with its offsets.
    assert_eq!(
        state.check(7, 0, 0, 4),
        Ok(Verdict::Duplicate {
            base_offset: 100,
            last_offset: 104
        })
    );
    // A gap is refused.
    assert!(matches!(
        state.check(7, 0, 11, 12),
        Err(ProducerError::OutOfOrder {
            last: 9,
            got: 11,
            ..
        })
    ));
    // An older epoch is fenced; a newer one starts at 0.
    assert!(matches!(
        state.check(7, -1, 10, 10),
        Err(ProducerError::Fenced { .. })
    ));
    assert!(matches!(
        state.check(7, 1, 10, 10),
        Err(ProducerError::OutOfOrder { .. })
    ));
    assert_eq!(state.check(7, 1, 0, 0), Ok(Verdict::Append));
    state.record(7, 1, meta(0, 0, 110), 0, false, 3);
    assert!(matches!(
        state.check(7, 0, 10, 10),
        Err(ProducerError::Fenced { .. })
    ));
    // Unknown producers are accepted at any sequence.
    assert_eq!(state.check(8, 3, 42, 50), Ok(Verdict::Append));
}

#[test]
fn only_the_last_batches_are_remembered_and_sequences_wrap() {
    let mut state = ProducerState::default();
    for i in 0..10 {
        state.record(1, 0, meta(i, i, i64::from(i)), 0, false, 0);
    }
    assert_eq!(
        state.check(1, 0, 9, 9),
        Ok(Verdict::Duplicate {
            base_offset: 9,
            last_offset: 9
        })
    );
    assert!(matches!(
        state.check(1, 0, 2, 2),
        Err(ProducerError::OutOfOrder { .. })
    ));
    let mut state = ProducerState::default();
    state.record(1, 0, meta(i32::MAX - 1, i32::MAX, 0), 0, false, 0);
    assert_eq!(state.check(1, 0, 0, 3), Ok(Verdict::Append));
}

#[test]
fn snapshot_round_trips_and_damage_is_detected() {
    let mut state = ProducerState::default();
    state.record(1, 2, meta(0, 4, 100), 0, false, 5);
    state.record(9, 0, meta(10, 10, 200), 0, false, 6);
    let bytes = state.encode();
    let mut back = ProducerState::decode(&bytes).expect("decode");
    state.take_dirty();
    assert_eq!(back, state);
    let mut bad = bytes.clone();
    bad[10] ^= 1;
    assert_eq!(ProducerState::decode(&bad), None);
    assert_eq!(ProducerState::decode(&bytes[..8]), None);
    back.truncate(200);
    assert_eq!(
        back.check(9, 0, 10, 10),
        Ok(Verdict::Append),
        "a truncated batch is not a duplicate"
    );
    back.expire(1_000, 100);
    assert!(back.is_empty());
}

#[test]
fn transactions_bound_the_first_unstable_offset_and_survive_snapshots() {
    let mut state = ProducerState::default();
    state.record(1, 0, meta(0, 1, 10), 0, true, 0);
    state.record(2, 0, meta(0, 0, 12), 0, true, 0);
    state.record(1, 0, meta(2, 2, 13), 0, true, 0);
    state.record(3, 0, meta(0, 0, 14), 0, false, 0);
    assert_eq!(state.first_unstable_offset(), Some(10));
    assert!(state.in_transaction(1) && !state.in_transaction(3));
    // An old epoch's marker is fenced; the right one closes the transaction.
    assert!(state.check_marker(1, -1).is_err());
    assert_eq!(state.record_marker(1, 0, 15, marker(), 0), Some(10));
    assert_eq!(state.first_unstable_offset(), Some(12));
    // A snapshot keeps the open transaction; expiry does not forget it.
    let mut back = ProducerState::decode(&state.encode()).expect("decode");
    back.expire(1_000_000, 1);
    assert_eq!(back.first_unstable_offset(), Some(12));
    assert_eq!(back.open_transactions(), vec![(2, 0, 12)]);
    // A truncation that removes producer 1's marker reopens its transaction.
    let mut back = ProducerState::decode(&state.encode()).expect("decode");
    back.truncate(15);
    assert_eq!(back.first_unstable_offset(), Some(10));
    // A bumped epoch's marker (a timed-out transaction) fences the old epoch.
    assert_eq!(back.record_marker(2, 1, 16, marker(), 0), Some(12));
    assert!(matches!(
        back.check(2, 0, 1, 1),
        Err(ProducerError::Fenced { .. })
    ));
}

#[test]
fn describe_producers_fields_survive_a_snapshot() {
    let mut state = ProducerState::default();
    state.record(7, 2, meta(0, 4, 100), 1_700_000_000_123, true, 50);
    state.record(8, 0, meta(0, 0, 105), 1_700_000_000_200, false, 60);
    let ended = MarkerMeta {
        timestamp: 1_700_000_000_300,
        coordinator_epoch: 4,
    };
    assert_eq!(state.record_marker(8, 0, 106, ended, 70), None);
    let back = ProducerState::decode(&state.encode()).expect("decode");
    let expected = vec![
        ActiveProducer {
            producer_id: 7,
            epoch: 2,
            last_sequence: 4,
            last_timestamp: 1_700_000_000_123,
            coordinator_epoch: -1,
            txn_first_offset: 100,
        },
        ActiveProducer {
            producer_id: 8,
            epoch: 0,
            last_sequence: 0,
            last_timestamp: 1_700_000_000_300,
            coordinator_epoch: 4,
            txn_first_offset: -1,
        },
    ];
    assert_eq!(state.active(), expected);
    assert_eq!(back.active(), expected);
}

#[test]
fn a_truncation_that_removes_a_marker_forgets_its_describe_fields() {
    let mut state = ProducerState::default();
    state.record(7, 0, meta(0, 1, 10), 1_700_000_000_100, true, 0);
    let ended = MarkerMeta {
        timestamp: 1_700_000_000_300,
        coordinator_epoch: 4,
    };
    assert_eq!(state.record_marker(7, 0, 12, ended, 0), Some(10));
    state.truncate(12);
    assert_eq!(
        state.active(),
        vec![ActiveProducer {
            producer_id: 7,
            epoch: 0,
            last_sequence: 1,
            last_timestamp: -1,
            coordinator_epoch: -1,
            txn_first_offset: 10,
        }]
    );
}

#[test]
fn a_version_2_snapshot_still_parses() {
    let mut bytes = b"SPST\x02".to_vec();
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&7i64.to_be_bytes());
    bytes.extend_from_slice(&2i16.to_be_bytes());
    // last_append_ms, then an open transaction at 100, no marker yet.
    for v in [1_700_000_000_555i64, 100, -1, -1] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.push(1);
    for v in [0i32, 4] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    for v in [100i64, 104] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    let state = ProducerState::decode(&bytes).expect("a version 2 snapshot parses");
    assert_eq!(state.first_unstable_offset(), Some(100));
    // The time of its last append stands in for its last batch's timestamp.
    assert_eq!(
        state.active(),
        vec![ActiveProducer {
            producer_id: 7,
            epoch: 2,
            last_sequence: 4,
            last_timestamp: 1_700_000_000_555,
            coordinator_epoch: -1,
            txn_first_offset: 100,
        }]
    );
}

/// The snapshot decoder as builds before the trailer have it (commit 327ba59), cut
/// down to what it keeps: (producer id, epoch, txn_first_offset,
/// last_txn_first_offset, last_marker_offset, batches).
#[allow(clippy::type_complexity)]
fn decode_before_the_trailer(
    bytes: &[u8],
) -> Option<Vec<(i64, i16, i64, i64, i64, Vec<BatchMeta>)>> {
    if bytes.len() < 13 || &bytes[..4] != MAGIC || !(1..=2).contains(&bytes[4]) {
        return None;
    }
    let version = bytes[4];
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return None;
    }
    let mut b = &body[5..];
    let count = b.get_u32() as usize;
    let mut producers = Vec::new();
    for _ in 0..count {
        let fixed = if version >= 2 { 43 } else { 19 };
        if b.remaining() < fixed {
            return None;
        }
        let id = b.get_i64();
        let epoch = b.get_i16();
        let _last_append_ms = b.get_i64();
        let (txn_first_offset, last_txn_first_offset, last_marker_offset) = if version >= 2 {
            (b.get_i64(), b.get_i64(), b.get_i64())
        } else {
            (-1, -1, -1)
        };
        let n = b.get_u8() as usize;
        if b.remaining() < n * 24 {
            return None;
        }
        let batches = (0..n)
            .map(|_| BatchMeta {
                first_sequence: b.get_i32(),
                last_sequence: b.get_i32(),
                base_offset: b.get_i64(),
                last_offset: b.get_i64(),
            })
            .collect();
        producers.push((
            id,
            epoch,
            txn_first_offset,
            last_txn_first_offset,
            last_marker_offset,
            batches,
        ));
    }
    Some(producers)
}

#[test]
fn builds_before_the_trailer_read_todays_snapshots() {
    let mut state = ProducerState::default();
    state.record(7, 2, meta(0, 4, 100), 1_700_000_000_123, true, 50);
    state.record(8, 0, meta(0, 0, 105), 1_700_000_000_200, true, 60);
    let ended = MarkerMeta {
        timestamp: 1_700_000_000_300,
        coordinator_epoch: 4,
    };
    assert_eq!(state.record_marker(8, 0, 106, ended, 70), Some(105));
    let bytes = state.encode();
    assert_eq!(bytes[4], 2, "the layout version older builds accept");
    let old = decode_before_the_trailer(&bytes).expect("an older build accepts it");
    assert_eq!(
        old,
        vec![
            (7, 2, 100, -1, -1, vec![meta(0, 4, 100)]),
            (8, 0, -1, 105, 106, vec![meta(0, 0, 105)]),
        ],
        "the open transaction and the ended one survive in an older build"
    );
    // And this build reads the trailer back.
    let back = ProducerState::decode(&bytes).expect("decode");
    assert_eq!(back.active(), state.active());
    assert_eq!(back.active()[1].coordinator_epoch, 4);
    assert_eq!(back.active()[1].last_timestamp, 1_700_000_000_300);
}

#[test]
fn a_version_2_snapshot_with_a_trailer_parses_in_both_builds() {
    let mut bytes = b"SPST\x02".to_vec();
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&7i64.to_be_bytes());
    bytes.extend_from_slice(&2i16.to_be_bytes());
    // last_append_ms, then a transaction that began at 100 and ended at 105.
    for v in [1_700_000_000_555i64, -1, 100, 105] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.push(1);
    for v in [0i32, 4] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    for v in [100i64, 104] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    // Trailer: one producer, last_timestamp, coordinator_epoch.
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&1_700_000_000_999i64.to_be_bytes());
    bytes.extend_from_slice(&9i32.to_be_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(
        decode_before_the_trailer(&bytes),
        Some(vec![(7, 2, -1, 100, 105, vec![meta(0, 4, 100)])])
    );
    let state = ProducerState::decode(&bytes).expect("parses");
    assert_eq!(
        state.active(),
        vec![ActiveProducer {
            producer_id: 7,
            epoch: 2,
            last_sequence: 4,
            last_timestamp: 1_700_000_000_999,
            coordinator_epoch: 9,
            txn_first_offset: -1,
        }]
    );
    // A trailer that does not match the producers is damage.
    let mut bad = bytes[..bytes.len() - 4].to_vec();
    let at = bad.len() - 16;
    bad[at..at + 4].copy_from_slice(&2u32.to_be_bytes());
    let crc = crc32c::crc32c(&bad);
    bad.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(ProducerState::decode(&bad), None);
}

#[test]
fn a_version_3_snapshot_still_parses() {
    let mut bytes = b"SPST\x03".to_vec();
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&7i64.to_be_bytes());
    bytes.extend_from_slice(&2i16.to_be_bytes());
    // last_append_ms, an open transaction at 100, last_timestamp.
    for v in [1_700_000_000_555i64, 100, -1, -1, 1_700_000_000_777] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(&3i32.to_be_bytes());
    bytes.push(1);
    for v in [0i32, 4] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    for v in [100i64, 104] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    let state = ProducerState::decode(&bytes).expect("a version 3 snapshot parses");
    assert_eq!(state.first_unstable_offset(), Some(100));
    assert_eq!(
        state.active(),
        vec![ActiveProducer {
            producer_id: 7,
            epoch: 2,
            last_sequence: 4,
            last_timestamp: 1_700_000_000_777,
            coordinator_epoch: 3,
            txn_first_offset: 100,
        }]
    );
}

#[test]
fn a_version_1_snapshot_still_parses() {
    let mut bytes = b"SPST\x01".to_vec();
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&7i64.to_be_bytes());
    bytes.extend_from_slice(&2i16.to_be_bytes());
    bytes.extend_from_slice(&5i64.to_be_bytes());
    bytes.push(1);
    for v in [0i32, 4] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    for v in [100i64, 104] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    let state = ProducerState::decode(&bytes).expect("a version 1 snapshot parses");
    assert_eq!(
        state.check(7, 2, 0, 4),
        Ok(Verdict::Duplicate {
            base_offset: 100,
            last_offset: 104
        })
    );
    assert_eq!(state.first_unstable_offset(), None);
}

#[test]
fn listing_more_producers_than_the_limit_copies_nothing() {
    let mut state = ProducerState::default();
    for id in [3, 1, 2] {
        state.record(id, 0, meta(0, 0, id * 10), 0, false, 0);
    }
    assert_eq!(state.active_at_most(2), None);
    let listed = state.active_at_most(3).expect("three fit");
    assert_eq!(
        listed.iter().map(|p| p.producer_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}
