use super::*;
use crate::diskless::state::{BatchKind, ObjectInfo, PendingBatch, plan};

fn key(partition: i32) -> PartitionKey {
    PartitionKey {
        topic_id: Uuid::from_u128(42),
        partition,
    }
}

fn write_for(state: &PartitionState, key: PartitionKey, records: i32) -> AppendWrite {
    let plan = plan(
        state,
        &[PendingBatch {
            kind: BatchKind::Data,
            producer_id: 3,
            epoch: 0,
            first_sequence: state.head.next as i32,
            records,
            max_ts: 1,
            pos: 0,
            len: 10,
        }],
        &ObjectInfo {
            key: "o".into(),
            size: 10,
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
async fn embedded_store_compares_versions_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedDisklessStore::new(dir.path());
    assert!(store.load(&key(0)).await.expect("load").is_none());
    let empty = PartitionState::default();
    let outcome = store
        .append_versioned(&[write_for(&empty, key(0), 2), write_for(&empty, key(1), 1)])
        .await
        .expect("append");
    assert!(outcome.conflicts.is_empty());
    assert_eq!(outcome.versions.len(), 2);
    // A second commit from the same (now stale) state conflicts and writes nothing.
    let conflicts = store
        .append(&[write_for(&empty, key(0), 5)])
        .await
        .expect("append");
    assert_eq!(conflicts, [key(0)]);
    let state = store.load(&key(0)).await.expect("load").expect("stored");
    assert_eq!(state.head.next, 2);
    assert_eq!(state.runs.len(), 1);
    assert_eq!(state.producers[&3].batches.len(), 1);
    // From the stored state it goes through.
    assert!(
        store
            .append(&[write_for(&state, key(0), 1)])
            .await
            .expect("append")
            .is_empty()
    );
    // Reopened: the same records.
    let reopened = EmbeddedDisklessStore::new(dir.path());
    let all = reopened.load_all().await.expect("load all");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, key(0));
    assert_eq!(all[0].1.head.next, 3);
    assert!(all[0].1.is_contiguous());
    // Trim: compare, replace the head, delete the runs.
    let current = all[0].1.clone();
    let mut head = current.head.clone();
    head.merged = 2;
    head.runs = 1;
    assert!(
        !reopened
            .trim(&key(0), current.head_version - 1, &head, &[0])
            .await
            .expect("trim")
    );
    assert!(
        reopened
            .trim(&key(0), current.head_version, &head, &[0])
            .await
            .expect("trim")
    );
    let trimmed = reopened.load(&key(0)).await.expect("load").expect("stored");
    assert_eq!(trimmed.head.merged, 2);
    assert_eq!(trimmed.runs.keys().copied().collect::<Vec<_>>(), [2]);
    reopened
        .delete_topic(Uuid::from_u128(42))
        .await
        .expect("delete");
    assert!(reopened.load_all().await.expect("load all").is_empty());
    assert!(reopened.watch(0).await.expect("watch").is_none());
}

#[test]
fn etcd_keys_parse_back() {
    let root = "strata/diskless/";
    let id = Uuid::from_u128(42);
    let parsed = |key: String| parse_key(root, key.as_bytes()).map(|(k, kind)| (k.partition, kind));
    assert!(matches!(
        parsed(format!("{root}{id}/3/head")),
        Some((3, KeyKind::Head))
    ));
    assert!(matches!(
        parsed(format!("{root}{id}/3/runs/{:020}", 17)),
        Some((3, KeyKind::Run(17)))
    ));
    assert!(matches!(
        parsed(format!("{root}{id}/0/producers/9")),
        Some((0, KeyKind::Producer(9)))
    ));
    assert!(parsed(format!("{root}{id}/0/other")).is_none());
    assert!(parsed(format!("other/{id}/0/head")).is_none());
    assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
    assert_eq!(prefix_end(&[0x61, 0xff]), vec![0x62]);
}

#[test]
fn etcd_transactions_stay_under_the_partition_and_put_limits() {
    let empty = PartitionState::default();
    let small: Vec<_> = (0..90).map(|p| write_for(&empty, key(p), 1)).collect();
    let sizes: Vec<usize> = txn_chunks(&small).iter().map(|c| c.len()).collect();
    assert_eq!(sizes, [40, 40, 10]);
    // Many producers in one partition: fewer partitions per transaction.
    let mut busy = write_for(&empty, key(0), 1);
    busy.producers = (0..50)
        .map(|id| (id, busy.producers[0].1.clone()))
        .collect();
    let writes = vec![busy.clone(), busy.clone(), busy.clone()];
    let sizes: Vec<usize> = txn_chunks(&writes).iter().map(|c| c.len()).collect();
    assert_eq!(sizes, [2, 1]);
    assert!(txn_chunks(&[]).is_empty());
}

#[tokio::test]
async fn a_view_reload_drops_partitions_deleted_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: std::sync::Arc<dyn DisklessStore> =
        std::sync::Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let other = PartitionKey {
        topic_id: Uuid::from_u128(43),
        partition: 0,
    };
    let empty = PartitionState::default();
    store
        .append_versioned(&[write_for(&empty, key(0), 2), write_for(&empty, other, 1)])
        .await
        .expect("append");
    let view = crate::diskless::view::DisklessView::new(store.clone());
    view.load().await.expect("load");
    assert_eq!(view.all().len(), 2);
    // Deleted while the view's watch was down: the reload forgets it.
    store.delete_topic(key(0).topic_id).await.expect("delete");
    view.load().await.expect("reload");
    let keys: Vec<PartitionKey> = view.all().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![other]);
    assert_eq!(view.get(&key(0)).head_version, 0);
}
