//! The diskless store's contract (broker/src/diskless/store.rs), one set of scenarios run
//! against the embedded store and a real etcd (Debian's etcd-server on free loopback
//! ports; the test fails, not skips, when etcd cannot start).

mod etcd_support;
use etcd_support::start_etcd;

use std::sync::Arc;
use std::time::Duration;

use strata_broker::cluster::etcd::EtcdStore;
use strata_broker::diskless::state::{AbortedEntry, BatchKind, ObjectInfo, PendingBatch, plan};
use strata_broker::diskless::store::{EmbeddedDisklessStore, EtcdDisklessStore};
use strata_broker::diskless::{AppendWrite, DisklessStore, PartitionKey, PartitionState};
use strata_broker::log::txn::Marker;
use uuid::Uuid;

fn key(topic: u128, partition: i32) -> PartitionKey {
    PartitionKey {
        topic_id: Uuid::from_u128(topic),
        partition,
    }
}

/// `batch` planned against `state`.
fn write_batch(state: &PartitionState, key: PartitionKey, batch: PendingBatch) -> AppendWrite {
    let plan = plan(
        state,
        &[batch],
        &ObjectInfo {
            key: format!("diskless/1970010100/1-{}.batches", Uuid::new_v4().simple()),
            size: 100,
            broker: 1,
            now_ms: 1,
        },
    );
    AppendWrite {
        key,
        expected: state.head_version,
        head: plan.head,
        runs: plan.runs,
        producers: plan.producers.into_iter().collect(),
        expire: Vec::new(),
    }
}

/// One idempotent batch of `records` records from producer 5, planned against `state`.
fn write(state: &PartitionState, key: PartitionKey, records: i32) -> AppendWrite {
    let plan = plan(
        state,
        &[PendingBatch {
            kind: BatchKind::Data,
            producer_id: 5,
            epoch: 0,
            first_sequence: state.head.next as i32,
            records,
            max_ts: 1,
            pos: 0,
            len: 100,
        }],
        &ObjectInfo {
            key: format!("diskless/1970010100/1-{}.batches", Uuid::new_v4().simple()),
            size: 100,
            broker: 1,
            now_ms: 1,
        },
    );
    AppendWrite {
        key,
        expected: state.head_version,
        head: plan.head,
        runs: plan.runs,
        producers: plan.producers.into_iter().collect(),
        expire: Vec::new(),
    }
}

async fn scenarios(
    store: Arc<dyn DisklessStore>,
    reopen: impl AsyncFn() -> Arc<dyn DisklessStore>,
) {
    assert!(store.load_all().await.expect("load all").is_empty());
    // 45 partitions in one call: more than one etcd transaction.
    let empty = PartitionState::default();
    let writes: Vec<_> = (0..45).map(|p| write(&empty, key(1, p), 3)).collect();
    let outcome = store.append_versioned(&writes).await.expect("append");
    assert!(outcome.conflicts.is_empty(), "{:?}", outcome.conflicts);
    assert_eq!(outcome.versions.len(), 45);
    // A second round: partition 7 from a stale state conflicts alone; the others commit.
    let mut round = Vec::new();
    for p in 0..45 {
        let state = store.load(&key(1, p)).await.expect("load").expect("stored");
        assert_eq!(state.head.next, 3);
        assert_eq!(
            outcome
                .versions
                .iter()
                .find(|(k, _)| *k == key(1, p))
                .map(|(_, v)| *v),
            Some(state.head_version)
        );
        round.push(if p == 7 {
            write(&empty, key(1, p), 1)
        } else {
            write(&state, key(1, p), 2)
        });
    }
    let outcome = store.append_versioned(&round).await.expect("append");
    assert_eq!(outcome.conflicts, [key(1, 7)]);
    assert_eq!(outcome.versions.len(), 44);
    let seven = store.load(&key(1, 7)).await.expect("load").expect("stored");
    assert_eq!(
        (seven.head.next, seven.runs.len()),
        (3, 1),
        "nothing written for the conflict"
    );
    // Everything, read again through a new handle.
    let all = reopen().await.load_all().await.expect("load all");
    assert_eq!(all.len(), 45);
    for (k, state) in &all {
        assert!(state.is_contiguous(), "{k}: {state:?}");
        let expected = if k.partition == 7 { 3 } else { 5 };
        assert_eq!(state.head.next, expected, "{k}");
        assert_eq!(state.head.runs as usize, state.runs.len(), "{k}");
        assert_eq!(state.producers[&5].batches.len(), state.runs.len(), "{k}");
    }
    // Trim: stale version refused; current one replaces the head and deletes the runs.
    let zero = store.load(&key(1, 0)).await.expect("load").expect("stored");
    let mut head = zero.head.clone();
    head.merged = 3;
    head.runs = 1;
    assert!(
        !store
            .trim(&key(1, 0), zero.head_version + 1000, &head, &[0])
            .await
            .expect("trim")
    );
    assert!(
        store
            .trim(&key(1, 0), zero.head_version, &head, &[0])
            .await
            .expect("trim")
    );
    let trimmed = store.load(&key(1, 0)).await.expect("load").expect("stored");
    assert_eq!(trimmed.head.merged, 3);
    assert_eq!(trimmed.runs.keys().copied().collect::<Vec<_>>(), [3]);
    // A trim of more runs than one etcd transaction holds (etcd allows 128 operations).
    let mut state = PartitionState::default();
    for _ in 0..150 {
        let one = write(&state, key(3, 0), 1);
        assert!(store.append(&[one]).await.expect("append").is_empty());
        state = store.load(&key(3, 0)).await.expect("load").expect("stored");
    }
    assert_eq!(state.runs.len(), 150);
    let mut head = state.head.clone();
    head.merged = state.head.next;
    head.runs = 0;
    head.run_bytes = 0;
    let doomed: Vec<i64> = state.runs.keys().copied().collect();
    assert!(
        store
            .trim(&key(3, 0), state.head_version, &head, &doomed)
            .await
            .expect("trim 150 runs")
    );
    let trimmed = reopen()
        .await
        .load(&key(3, 0))
        .await
        .expect("load")
        .expect("stored");
    assert!(trimmed.runs.is_empty(), "{} runs left", trimmed.runs.len());
    assert_eq!((trimmed.head.merged, trimmed.head.runs), (150, 0));
    store
        .delete_topic(Uuid::from_u128(3))
        .await
        .expect("delete");
    // Another topic is untouched by a deletion.
    store
        .append(&[write(&empty, key(2, 0), 1)])
        .await
        .expect("append");
    // An expired producer's entry goes with a commit.
    let two = store.load(&key(2, 0)).await.expect("load").expect("stored");
    assert!(two.producers.contains_key(&5));
    let mut expiring = write(&two, key(2, 0), 1);
    expiring.producers.clear();
    expiring.expire = vec![5];
    assert!(store.append(&[expiring]).await.expect("append").is_empty());
    let two = store.load(&key(2, 0)).await.expect("load").expect("stored");
    assert!(two.producers.is_empty(), "{:?}", two.producers);
    assert_eq!(two.head.next, 2);
    // A transaction's records: the open transaction in the head, the aborted one with
    // the run of its marker, as stored and as read back by a reopened store.
    let txn = PendingBatch {
        kind: BatchKind::Transactional { verified: true },
        producer_id: 9,
        epoch: 0,
        first_sequence: 0,
        records: 2,
        max_ts: 1,
        pos: 0,
        len: 100,
    };
    let empty4 = PartitionState::default();
    let opened = write_batch(&empty4, key(4, 0), txn);
    assert!(store.append(&[opened]).await.expect("append").is_empty());
    let open = reopen()
        .await
        .load(&key(4, 0))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(open.head.open.get(&9), Some(&0));
    assert_eq!(open.head.last_stable(), 0);
    let abort = PendingBatch {
        kind: BatchKind::Marker(Marker::Abort),
        first_sequence: -1,
        records: 1,
        ..txn
    };
    let aborted = write_batch(&open, key(4, 0), abort);
    assert!(store.append(&[aborted]).await.expect("append").is_empty());
    let ended = reopen()
        .await
        .load(&key(4, 0))
        .await
        .expect("load")
        .expect("stored");
    assert!(ended.head.open.is_empty());
    assert_eq!(ended.runs[&2].aborted, [AbortedEntry(9, 0, 2, 3)]);
    store
        .delete_topic(Uuid::from_u128(4))
        .await
        .expect("delete");
    store
        .delete_topic(Uuid::from_u128(1))
        .await
        .expect("delete");
    let left = store.load_all().await.expect("load all");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, key(2, 0));
}

#[tokio::test]
async fn embedded_diskless_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    scenarios(Arc::new(EmbeddedDisklessStore::new(&path)), async || {
        Arc::new(EmbeddedDisklessStore::new(&path)) as Arc<dyn DisklessStore>
    })
    .await;
}

#[tokio::test]
async fn etcd_diskless_store_keeps_the_contract_and_watches_changes() {
    let etcd = start_etcd();
    let endpoints = vec![etcd.endpoint.clone()];
    let connect = async || {
        let store = EtcdStore::connect(&endpoints, "test-d")
            .await
            .expect("connect");
        Arc::new(EtcdDisklessStore::new(store.client(), "test-d")) as Arc<dyn DisklessStore>
    };
    let store = connect().await;
    let (_, revision) = store.load_all_at().await.expect("load all");
    let mut watch = store
        .watch(revision)
        .await
        .expect("watch")
        .expect("etcd watches");
    scenarios(store.clone(), connect).await;
    // Replaying every watched change from the (empty) start gives what a load gives.
    let (stored, end) = store.load_all_at().await.expect("load all");
    let mut replayed: std::collections::BTreeMap<PartitionKey, PartitionState> = Default::default();
    let mut at = revision;
    while at < end {
        let change = tokio::time::timeout(Duration::from_secs(10), watch.next_change())
            .await
            .expect("a change within 10 s")
            .expect("change");
        assert!(change.revision > at);
        at = change.revision;
        for key in &change.partitions {
            let events: Vec<_> = change.events.iter().filter(|e| e.key == *key).collect();
            assert!(
                !events.is_empty(),
                "{key}: a change that could not be decoded"
            );
            let mut state = replayed.remove(key).unwrap_or_default();
            if state.apply_events(events) {
                replayed.insert(*key, state);
            }
        }
    }
    assert_eq!(replayed.len(), stored.len());
    for (key, state) in stored {
        assert_eq!(replayed.get(&key), Some(&state), "{key}");
    }
}

/// The write of one partition written by `producers` producers in one flush.
fn many_producers(state: &PartitionState, key: PartitionKey, producers: i64) -> AppendWrite {
    let batches: Vec<PendingBatch> = (0..producers)
        .map(|id| PendingBatch {
            kind: BatchKind::Data,
            producer_id: 100 + id,
            epoch: 0,
            first_sequence: 0,
            records: 1,
            max_ts: 1,
            pos: id as u64 * 100,
            len: 100,
        })
        .collect();
    let plan = plan(
        state,
        &batches,
        &ObjectInfo {
            key: format!("diskless/1970010100/1-{}.batches", Uuid::new_v4().simple()),
            size: 100 * producers as u64,
            broker: 1,
            now_ms: 1,
        },
    );
    AppendWrite {
        key,
        expected: state.head_version,
        head: plan.head,
        runs: plan.runs,
        producers: plan.producers.into_iter().collect(),
        expire: Vec::new(),
    }
}

#[tokio::test]
async fn etcd_commits_what_fits_and_names_what_does_not() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "test-big")
        .await
        .expect("connect");
    let store: Arc<dyn DisklessStore> =
        Arc::new(EtcdDisklessStore::new(store.client(), "test-big"));
    let empty = PartitionState::default();
    // 150 producers in one partition: 151 operations, more than etcd's 128 per
    // transaction. Its neighbours in the same call still commit.
    let writes = vec![
        write(&empty, key(3, 0), 2),
        many_producers(&empty, key(3, 1), 150),
        write(&empty, key(3, 2), 2),
        // Many partitions of many producers: several transactions, none over the limit.
        many_producers(&empty, key(3, 3), 100),
        many_producers(&empty, key(3, 4), 100),
    ];
    let outcome = store.append_versioned(&writes).await.expect("append");
    assert!(outcome.conflicts.is_empty(), "{:?}", outcome.conflicts);
    let committed: Vec<_> = outcome.versions.iter().map(|(k, _)| *k).collect();
    assert_eq!(committed, vec![key(3, 0), key(3, 2), key(3, 3), key(3, 4)]);
    assert_eq!(
        outcome.failed.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![key(3, 1)]
    );
    assert!(store.load(&key(3, 1)).await.expect("load").is_none());
    let four = store.load(&key(3, 4)).await.expect("load").expect("stored");
    assert_eq!((four.head.next, four.producers.len()), (100, 100));
}
