//! Fuzz target for the decoders of bytes that come back from disk, the bucket or the
//! metadata store: leader-epoch files, producer snapshots, partition checkpoints,
//! offsets-topic records and tiering manifests.
//!
//! Inputs are valid encodings, damaged (bytes flipped, inserted, deleted; counts overwritten
//! with huge values) and then, for the CRC-sealed formats, usually resealed with a correct
//! CRC so that the damage reaches the parser instead of stopping at the checksum: a CRC
//! guards against a flipped bit, not against a bug or a hand-edited file. Every input
//! must decode or be refused without a panic and without an allocation out of proportion
//! to its size; whatever decodes must encode and decode back to the same value.
//!
//! `STRATA_FUZZ_CASES=N` sets the cases per property (default keeps `cargo test` quick).

mod fuzz_support;

use bytes::Bytes;
use proptest::prelude::*;
use strata_broker::group::format::{
    GroupValue, MemberValue, OffsetValue, RecordKey, decode_group, decode_key, decode_offset,
    encode_group, encode_key, encode_offset,
};
use strata_broker::log::epochs::LeaderEpochs;
use strata_broker::log::format::Checkpoint;
use strata_broker::log::producers::{BatchMeta, ProducerState};
use strata_tiering::manifest::{Root, SegmentEntry, Spill, SpillRef};
use uuid::Uuid;

#[global_allocator]
static ALLOCATOR: fuzz_support::Measuring = fuzz_support::Measuring;

/// Decoded values are a few times their encoding at most; a count taken on trust is
/// gigabytes.
fn allocation_bound(len: usize) -> usize {
    64 * 1024 + len * 64
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    Huge { at: usize, form: usize },
}

const HUGE: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x80, 0x00, 0x00, 0x00],
    &[0x7f, 0xff],
    &[0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 0..HUGE.len()).prop_map(|(at, form)| Mutation::Huge { at, form }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match mutation {
        Mutation::Flip { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
        Mutation::Insert { at, bytes: new } => {
            let i = at % (len + 1);
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::Delete { at, len: n } if len > 0 => {
            let i = at % len;
            bytes.drain(i..(i + n).min(len));
        }
        Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
        Mutation::Huge { at, form } => {
            let i = at % (len + 1);
            let lie = HUGE[*form];
            bytes.splice(i..(i + lie.len()).min(len), lie.iter().copied());
        }
        _ => {}
    }
}

/// Rewrites the trailing CRC-32C of everything before it, as the sealed formats carry.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let (body, crc) = bytes.split_at_mut(bytes.len() - 4);
        crc.copy_from_slice(&crc32c::crc32c(body).to_be_bytes());
    }
}

/// A damaged copy of one of `seeds`: usually resealed, sometimes not.
fn damaged(seeds: Vec<Vec<u8>>, sealed: bool) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<prop::sample::Index>(),
        proptest::collection::vec(mutation(), 0..4),
        0u8..8,
    )
        .prop_map(move |(seed, mutations, reseal_odds)| {
            let mut bytes = seeds[seed.index(seeds.len())].clone();
            for mutation in &mutations {
                apply(&mut bytes, mutation);
            }
            if sealed && reseal_odds != 0 {
                reseal(&mut bytes);
            }
            bytes
        })
}

/// Decodes under the allocation bound; a decoded value must survive a round trip.
fn check<T: PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Option<T>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    let (decoded, largest) = fuzz_support::largest_allocation(|| decode(bytes));
    assert!(
        largest <= allocation_bound(bytes.len()),
        "decoding {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
    if let Some(value) = decoded {
        let again = decode(&encode(&value));
        assert_eq!(
            again.as_ref(),
            Some(&value),
            "a decoded value does not round-trip"
        );
    }
}

fn epochs_seeds() -> Vec<Vec<u8>> {
    let mut epochs = LeaderEpochs::default();
    let mut seeds = vec![epochs.encode()];
    for (epoch, offset) in [(0, 0), (1, 10), (4, 500), (9, 1 << 40)] {
        epochs.assign(epoch, offset);
        seeds.push(epochs.encode());
    }
    seeds
}

fn producer_seeds() -> Vec<Vec<u8>> {
    let mut state = ProducerState::default();
    let mut seeds = vec![state.encode()];
    for (id, batches) in [(1000, 1), (1001, 3), (7, 6)] {
        for i in 0..batches {
            let meta = BatchMeta {
                first_sequence: i * 10,
                last_sequence: i * 10 + 9,
                base_offset: i64::from(i) * 10,
                last_offset: i64::from(i) * 10 + 9,
            };
            state.record(id, 2, meta, 1_700_000_000_000, id == 7, 1_700_000_000_000);
        }
        seeds.push(state.encode());
    }
    seeds
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    vec![
        Checkpoint {
            log_start_offset: 0,
            segment_base: 0,
            position: 0,
            next_offset: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
        }
        .encode(),
        Checkpoint {
            log_start_offset: 100,
            segment_base: 4096,
            position: 1 << 30,
            next_offset: 5000,
            max_timestamp: 1_700_000_000_000,
            offset_of_max_timestamp: 4999,
        }
        .encode(),
    ]
}

fn entry(base: i64) -> SegmentEntry {
    SegmentEntry {
        base_offset: base,
        end_offset: base + 100,
        log_bytes: 1 << 20,
        offset_index_bytes: 800,
        time_index_bytes: 1200,
        max_timestamp: 1_700_000_000_000 + base,
        leader_epoch: 3,
        object_id: Uuid::from_u128(base as u128 + 1),
        uploaded_ms: 1_700_000_000_500,
        producer_snapshot_bytes: 40,
        txn_index_bytes: 32,
    }
}

fn spill_ref(level: u8, first: i64) -> SpillRef {
    SpillRef {
        level,
        first_offset: first,
        end_offset: first + 1000,
        segments: 10,
        log_bytes: 10 << 20,
        max_timestamp: 1_700_000_000_000,
        object_id: Uuid::from_u128(first as u128 + 7),
    }
}

fn manifest_seeds() -> Vec<Vec<u8>> {
    let root = Root {
        leader_epoch: 3,
        log_start_offset: 0,
        live_bytes: 30 << 20,
        live_segments: 30,
        refs: vec![spill_ref(1, 0), spill_ref(0, 1000)],
        tail: vec![entry(2000), entry(2100)],
    };
    vec![
        Root::default().encode().to_vec(),
        root.encode().to_vec(),
        Spill::Segments(vec![entry(0), entry(100), entry(200)])
            .encode()
            .to_vec(),
        Spill::Refs {
            level: 1,
            refs: vec![spill_ref(0, 0), spill_ref(0, 1000)],
        }
        .encode()
        .to_vec(),
    ]
}

fn member(id: &str) -> MemberValue {
    MemberValue {
        member_id: id.into(),
        instance_id: Some("instance".into()),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        session_timeout_ms: 10_000,
        subscription: Bytes::from_static(b"\0\x01\0\0\0\x01\0\x06events"),
        assignment: Bytes::from_static(b"\0\x01\0\0\0\x01\0\x06events\0\0\0\x01\0\0\0\0"),
    }
}

fn group_seeds() -> Vec<Vec<u8>> {
    let keys = [
        RecordKey::Offset {
            group: "group".into(),
            topic: "events".into(),
            partition: 3,
        },
        RecordKey::Group {
            group: "group".into(),
        },
    ];
    let offsets = [OffsetValue {
        offset: 42,
        leader_epoch: 1,
        commit_timestamp_ms: 1_700_000_000_000,
        metadata: Some("meta".into()),
    }];
    let groups = [GroupValue {
        protocol_type: "consumer".into(),
        generation: 4,
        protocol: Some("range".into()),
        leader: Some("m1".into()),
        state_timestamp_ms: 1_700_000_000_000,
        members: vec![member("m1"), member("m2")],
    }];
    keys.iter()
        .map(|k| encode_key(k).to_vec())
        .chain(offsets.iter().map(|o| encode_offset(o).to_vec()))
        .chain(groups.iter().map(|g| encode_group(g).to_vec()))
        .collect()
}

fn txnindex_seeds() -> Vec<Vec<u8>> {
    use strata_broker::log::txn::{AbortedTxn, encode_file};
    let entry = |producer_id, first_offset| AbortedTxn {
        producer_id,
        first_offset,
        last_offset: first_offset + 10,
        last_stable_offset: first_offset,
    };
    vec![
        encode_file(&[]),
        encode_file(&[entry(1, 0)]),
        encode_file(&[entry(1, 0), entry(2, 5), entry(9, 1 << 40)]),
    ]
}

fn transaction_seeds() -> Vec<Vec<u8>> {
    use strata_broker::txn::{TxnMetadata, TxnState, format};
    let mut meta = TxnMetadata::new("tx", 60_000, 1_700_000_000_000);
    meta.producer_id = 42;
    meta.producer_epoch = 3;
    let mut seeds = vec![format::encode_value(&meta).to_vec()];
    meta.state = TxnState::Ongoing;
    meta.start_ms = 1_700_000_000_001;
    meta.partitions = [("orders".to_string(), 0), ("orders".to_string(), 7)]
        .into_iter()
        .collect();
    seeds.push(format::encode_value(&meta).to_vec());
    seeds
}

fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: fuzz_support::cases(default_cases),
        max_shrink_iters: 1000,
        ..ProptestConfig::default()
    }
}

#[test]
fn every_seed_decodes() {
    for seed in epochs_seeds() {
        assert!(LeaderEpochs::decode(&seed).is_some());
    }
    for seed in producer_seeds() {
        assert!(ProducerState::decode(&seed).is_some());
    }
    for seed in checkpoint_seeds() {
        assert!(Checkpoint::decode(&seed).is_some());
    }
    let manifests = manifest_seeds();
    assert!(Root::decode(&manifests[0]).is_ok() && Root::decode(&manifests[1]).is_ok());
    assert!(Spill::decode(&manifests[2]).is_ok() && Spill::decode(&manifests[3]).is_ok());
    let group = group_seeds();
    assert!(decode_key(Bytes::from(group[0].clone())).is_ok());
    assert!(decode_offset(Bytes::from(group[2].clone())).is_ok());
    assert!(decode_group(Bytes::from(group[3].clone())).is_ok());
    for seed in txnindex_seeds() {
        assert!(strata_broker::log::txn::decode_file(&seed).is_some());
    }
    for seed in transaction_seeds() {
        assert!(strata_broker::txn::format::decode_value("tx", Bytes::from(seed)).is_ok());
    }
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn leader_epoch_files(bytes in damaged(epochs_seeds(), true)) {
        check(&bytes, LeaderEpochs::decode, LeaderEpochs::encode);
    }

    #[test]
    fn producer_snapshots(bytes in damaged(producer_seeds(), true)) {
        check(&bytes, ProducerState::decode, ProducerState::encode);
    }

    #[test]
    fn checkpoints(bytes in damaged(checkpoint_seeds(), true)) {
        check(&bytes, Checkpoint::decode, Checkpoint::encode);
    }

    #[test]
    fn manifest_roots(bytes in damaged(manifest_seeds(), true)) {
        check(&bytes, |b| Root::decode(b).ok(), |root| root.encode().to_vec());
    }

    #[test]
    fn manifest_spills(bytes in damaged(manifest_seeds(), true)) {
        check(&bytes, |b| Spill::decode(b).ok(), |spill| spill.encode().to_vec());
    }

    #[test]
    fn offsets_topic_keys(bytes in damaged(group_seeds(), false)) {
        check(
            &bytes,
            |b| decode_key(Bytes::copy_from_slice(b)).ok(),
            |key| encode_key(key).to_vec(),
        );
    }

    #[test]
    fn offsets_topic_offsets(bytes in damaged(group_seeds(), false)) {
        check(
            &bytes,
            |b| decode_offset(Bytes::copy_from_slice(b)).ok(),
            |offset| encode_offset(offset).to_vec(),
        );
    }

    #[test]
    fn offsets_topic_groups(bytes in damaged(group_seeds(), false)) {
        check(
            &bytes,
            |b| decode_group(Bytes::copy_from_slice(b)).ok(),
            |group| encode_group(group).to_vec(),
        );
    }

    #[test]
    fn txnindex_files(bytes in damaged(txnindex_seeds(), false)) {
        use strata_broker::log::txn::{decode_file, encode_file};
        check(&bytes, decode_file, |entries| encode_file(entries));
    }

    #[test]
    fn transaction_records(bytes in damaged(transaction_seeds(), false)) {
        use strata_broker::txn::format::{decode_value, encode_value};
        check(
            &bytes,
            |b| decode_value("tx", Bytes::copy_from_slice(b)).ok(),
            |meta| encode_value(meta).to_vec(),
        );
    }
}
