use super::*;

use kafka_protocol::ResponseError;

#[test]
fn object_keys_carry_the_utc_hour() {
    // 2026-12-07T16:19:14Z.
    assert_eq!(utc_hour(1_796_660_354_000), (2026, 12, 7, 16));
    assert_eq!(utc_hour(0), (1970, 1, 1, 0));
    // 2024-02-29T23:59:59Z.
    assert_eq!(utc_hour(1_709_251_199_000), (2024, 2, 29, 23));
    let key = object_key(3, 0);
    assert!(key.starts_with("diskless/1970010100/3-"), "{key}");
    assert!(key.ends_with(".batches"), "{key}");
}

use std::collections::BTreeMap;

use bytes::Bytes;
use strata_tiering::RemoteStore;
use strata_tiering::store::ObjectStoreBackend;

use crate::diskless::store::{DisklessStore, EmbeddedDisklessStore};

/// An object store whose PUTs fail: an outage the retries did not ride out.
struct FailingPuts(ObjectStoreBackend);

#[async_trait::async_trait]
impl RemoteStore for FailingPuts {
    async fn put(&self, key: &str, _bytes: Bytes) -> Result<(), strata_tiering::StoreError> {
        Err(strata_tiering::StoreError::Transient {
            op: "put",
            key: key.to_string(),
            message: "injected".into(),
        })
    }
    async fn put_body(
        &self,
        key: &str,
        body: &strata_tiering::Body,
        part_bytes: u64,
    ) -> Result<(), strata_tiering::StoreError> {
        self.0.put_body(key, body, part_bytes).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, strata_tiering::StoreError> {
        self.0.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, strata_tiering::StoreError> {
        self.0.get_range(key, range).await
    }
    async fn delete(&self, key: &str) -> Result<(), strata_tiering::StoreError> {
        self.0.delete(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<strata_tiering::store::ObjectInfo>, strata_tiering::StoreError> {
        self.0.list(prefix).await
    }
}

/// One broker's appender (node `node`) over the shared stores, running until `cancel`.
fn broker(
    node: i32,
    store: Arc<dyn DisklessStore>,
    objects: Arc<dyn RemoteStore>,
    cancel: &CancellationToken,
) -> (Arc<Appender>, Arc<DisklessView>, Arc<DisklessMetrics>) {
    let config = crate::config::Config {
        node_id: node,
        diskless_append_interval_ms: 5,
        ..crate::config::Config::default()
    };
    broker_with(config, store, objects, cancel)
}

fn broker_with(
    config: crate::config::Config,
    store: Arc<dyn DisklessStore>,
    objects: Arc<dyn RemoteStore>,
    cancel: &CancellationToken,
) -> (Arc<Appender>, Arc<DisklessView>, Arc<DisklessMetrics>) {
    let view = Arc::new(DisklessView::new(store));
    let metrics = Arc::new(
        DisklessMetrics::register(&prometheus::Registry::new()).expect("register metrics"),
    );
    let appender = Arc::new(Appender::new(
        &config,
        view.clone(),
        objects,
        Arc::new(WriteCache::new(1 << 20)),
        metrics.clone(),
        Arc::new(crate::sys::SystemClock),
    ));
    tokio::spawn(appender.clone().run(cancel.clone()));
    (appender, view, metrics)
}

fn topic_config() -> TopicConfig {
    let overrides = BTreeMap::from([("diskless.enable".to_string(), "true".to_string())]);
    TopicConfig::resolve(&overrides, &crate::config::Config::default()).expect("config")
}

const KEY: PartitionKey = PartitionKey {
    topic_id: uuid::Uuid::from_u128(9),
    partition: 0,
};

async fn produce(appender: &Appender, batch: &[u8]) -> Result<Ack, AppendError> {
    let answer = appender.enqueue(KEY, "t", &topic_config(), batch).await?;
    answer.await.expect("answered")
}

fn batch(epoch: i16, first_seq: i32, count: usize) -> Vec<u8> {
    crate::log::tests::idempotent_batch(42, epoch, first_seq, count)
}

#[tokio::test]
async fn idempotence_holds_across_brokers_sharing_the_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let cancel = CancellationToken::new();
    let (a, _, _) = broker(1, store.clone(), objects.clone(), &cancel);
    // B's view never sees A's commits (the embedded store has no watch): every stale
    // plan of B's must be caught by the compare.
    let (b, _, b_metrics) = broker(2, store.clone(), objects.clone(), &cancel);

    assert_eq!(
        produce(&a, &batch(0, 0, 5))
            .await
            .expect("first")
            .base_offset,
        0
    );
    // The same batch retried through B: its first offset, not a second copy.
    let retry = produce(&b, &batch(0, 0, 5)).await.expect("retry");
    assert_eq!(retry.base_offset, 0);
    assert_eq!(
        b_metrics.commit_conflicts.with_label_values(&["t"]).get(),
        1
    );
    assert_eq!(
        produce(&b, &batch(0, 5, 3))
            .await
            .expect("next")
            .base_offset,
        5
    );
    // A sequence gap through A (whose view is behind) is out of order.
    let gap = produce(&a, &batch(0, 10, 1)).await.expect_err("a gap");
    assert_eq!(gap.code(), ResponseError::OutOfOrderSequenceNumber, "{gap}");
    // A new epoch through B, then the old one through A: fenced.
    assert_eq!(
        produce(&b, &batch(1, 0, 2))
            .await
            .expect("new epoch")
            .base_offset,
        8
    );
    let fenced = produce(&a, &batch(0, 8, 1)).await.expect_err("fenced");
    assert_eq!(
        fenced.code(),
        ResponseError::InvalidProducerEpoch,
        "{fenced}"
    );

    let state = store.load(&KEY).await.expect("load").expect("stored");
    assert_eq!(state.head.next, 10, "offsets 0-9, each batch once");
    assert!(state.is_contiguous());
    assert_eq!(state.producers[&42].epoch, 1);
    // Every run's bytes are in the object it names, at the place it names.
    for run in state.runs.values() {
        let bytes = objects
            .get_range(&run.key, run.pos..run.pos + run.len)
            .await
            .expect("object");
        let (_, size, last_delta) = format::read_batch_prefix(&bytes).expect("batch");
        assert_eq!(size as u64, run.len);
        assert_eq!(i64::from(last_delta) + 1, run.end - run.base);
    }
    cancel.cancel();
}

#[tokio::test]
async fn an_object_store_failure_commits_nothing_and_is_retriable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let cancel = CancellationToken::new();
    let failing: Arc<dyn RemoteStore> = Arc::new(FailingPuts(ObjectStoreBackend::in_memory()));
    let (a, _, _) = broker(1, store.clone(), failing, &cancel);
    let error = produce(&a, &batch(0, 0, 2))
        .await
        .expect_err("no object store");
    assert_eq!(error.code(), ResponseError::KafkaStorageError);
    assert!(
        error.to_string().contains("nothing was committed"),
        "{error}"
    );
    assert!(store.load(&KEY).await.expect("load").is_none());
    // The producer's retry through a healthy broker gets offset 0: nothing was assigned.
    let (b, _, _) = broker(
        2,
        store.clone(),
        Arc::new(ObjectStoreBackend::in_memory()),
        &cancel,
    );
    assert_eq!(
        produce(&b, &batch(0, 0, 2))
            .await
            .expect("retry")
            .base_offset,
        0
    );
    cancel.cancel();
}

/// `batch` with the transactional flag set.
fn transactional(epoch: i16, first_seq: i32, count: usize) -> Vec<u8> {
    let mut transactional = batch(epoch, first_seq, count);
    // Attributes (offset 21): bit 4 is the transactional flag; the CRC covers it.
    transactional[22] |= 0x10;
    let crc = crc32c::crc32c(&transactional[21..]);
    transactional[17..21].copy_from_slice(&crc.to_be_bytes());
    transactional
}

async fn produce_txn(
    appender: &Appender,
    batch: &[u8],
    verified: bool,
) -> Result<Ack, AppendError> {
    let answer = if verified {
        // As the produce handler: the producer's last marker in the view, then the
        // coordinator (taken as confirming).
        let marker = appender.view.get(&KEY).marker_of(42);
        appender
            .enqueue_verified(KEY, "t", &topic_config(), batch, (42, marker))
            .await?
    } else {
        appender.enqueue(KEY, "t", &topic_config(), batch).await?
    };
    answer.await.expect("answered")
}

async fn end_txn(appender: &Appender, epoch: i16, marker: Marker) -> Result<Ack, AppendError> {
    let request = MarkerRequest {
        producer_id: 42,
        producer_epoch: epoch,
        marker,
        coordinator_epoch: 0,
    };
    let answer = appender.enqueue_marker(KEY, "t", &topic_config(), request)?;
    answer.await.expect("answered")
}

#[tokio::test]
async fn transactions_commit_and_abort_across_brokers_sharing_the_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let cancel = CancellationToken::new();
    let (a, _, _) = broker(1, store.clone(), objects.clone(), &cancel);
    // B's view never sees A's commits (no watch in the embedded store).
    let (b, b_view, _) = broker(2, store.clone(), objects.clone(), &cancel);

    let first = produce_txn(&a, &transactional(0, 0, 2), true).await;
    assert_eq!(first.expect("opens").base_offset, 0);
    // Through B, not verified (B's produce would have seen it open): B's stale view
    // shows none open, so it re-reads the partition and finds it.
    let second = produce_txn(&b, &transactional(0, 2, 3), false).await;
    assert_eq!(second.expect("joins").base_offset, 2);
    let state = store.load(&KEY).await.expect("load").expect("stored");
    assert_eq!(state.head.open, BTreeMap::from([(42, 0)]));
    assert_eq!(state.head.last_stable(), 0);
    // The coordinator commits through B.
    assert_eq!(
        end_txn(&b, 0, Marker::Commit)
            .await
            .expect("commit")
            .base_offset,
        5
    );
    assert!(b_view.get(&KEY).head.open.is_empty());
    // A second transaction, aborted through A. A's view is behind (it misses the
    // commit marker), so what it verified cannot be told from a batch verified before
    // that marker: refused retriably, and A's view is re-read.
    let stale = produce_txn(&a, &transactional(0, 5, 1), true)
        .await
        .expect_err("verified against a view without the marker");
    assert_eq!(stale.code(), ResponseError::NotEnoughReplicas, "{stale}");
    // The retry is verified against the re-read view: it opens the transaction.
    let third = produce_txn(&a, &transactional(0, 5, 1), true).await;
    assert_eq!(third.expect("opens").base_offset, 6);
    assert_eq!(
        end_txn(&a, 0, Marker::Abort)
            .await
            .expect("abort")
            .base_offset,
        7
    );
    // A bumped epoch's marker with nothing open is appended all the same; then the
    // older epoch's marker is refused.
    b_view.refresh(&KEY).await.expect("refresh");
    assert_eq!(
        end_txn(&b, 1, Marker::Abort)
            .await
            .expect("bumped")
            .base_offset,
        8
    );
    let stale = end_txn(&b, 0, Marker::Commit).await.expect_err("stale");
    assert_eq!(stale.code(), ResponseError::InvalidProducerEpoch, "{stale}");

    let state = store.load(&KEY).await.expect("load").expect("stored");
    assert!(state.head.open.is_empty());
    assert_eq!((state.head.next, state.head.last_stable()), (9, 9));
    assert_eq!(state.producers[&42].epoch, 1);
    assert!(state.is_contiguous());
    let aborted: Vec<_> = state
        .runs
        .values()
        .flat_map(|r| r.aborted.clone())
        .collect();
    assert_eq!(aborted, [crate::diskless::state::AbortedEntry(42, 6, 7, 8)]);
    assert!(state.runs[&7].aborted.len() == 1, "with the marker's run");
    // The markers are control batches in the objects, at their offsets.
    for base in [5, 7] {
        let run = &state.runs[&base];
        let bytes = objects
            .get_range(&run.key, run.pos..run.pos + run.len)
            .await
            .expect("object");
        let header = format::parse_validated_header(&bytes);
        assert!(header.is_control() && header.is_transactional());
        assert_eq!(header.record_count, 1);
    }
    cancel.cancel();
}

#[tokio::test]
async fn an_unverified_batch_is_refused_retriably_when_no_transaction_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let cancel = CancellationToken::new();
    let (a, _, _) = broker(
        1,
        store.clone(),
        Arc::new(ObjectStoreBackend::in_memory()),
        &cancel,
    );
    let error = produce_txn(&a, &transactional(0, 0, 1), false)
        .await
        .expect_err("not verified");
    assert_eq!(error.code(), ResponseError::NotEnoughReplicas, "{error}");
    assert!(store.load(&KEY).await.expect("load").is_none());
    cancel.cancel();
}

#[tokio::test]
async fn produce_is_refused_while_a_partition_has_too_many_unmerged_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let cancel = CancellationToken::new();
    let config = crate::config::Config {
        diskless_append_interval_ms: 5,
        diskless_max_pending_runs: 2,
        ..crate::config::Config::default()
    };
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let (a, view, _) = broker_with(config, store, objects, &cancel);
    produce(&a, &batch(0, 0, 1)).await.expect("first run");
    produce(&a, &batch(0, 1, 1)).await.expect("second run");
    assert_eq!(view.get(&KEY).head.runs, 2);
    let error = produce(&a, &batch(0, 2, 1))
        .await
        .expect_err("backpressure");
    assert_eq!(error.code(), ResponseError::KafkaStorageError, "{error}");
    assert!(
        error.to_string().contains("diskless_max_pending_runs"),
        "{error}"
    );
    cancel.cancel();
}

#[tokio::test]
async fn a_producers_pipelined_requests_in_one_flush_are_appended_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let cancel = CancellationToken::new();
    let config = crate::config::Config {
        node_id: 1,
        // Long enough for both requests below to wait in one flush.
        diskless_append_interval_ms: 300,
        ..crate::config::Config::default()
    };
    let (a, view, _) = broker_with(config, store.clone(), objects, &cancel);
    assert_eq!(
        produce(&a, &batch(0, 0, 5))
            .await
            .expect("first")
            .base_offset,
        0
    );
    // Sequences 5-9 and 10-14 queued together: the second follows the first, not the
    // stored last sequence 4.
    let second = a
        .enqueue(KEY, "t", &topic_config(), &batch(0, 5, 5))
        .await
        .expect("enqueue 5-9");
    let third = a
        .enqueue(KEY, "t", &topic_config(), &batch(0, 10, 5))
        .await
        .expect("enqueue 10-14");
    let second = second.await.expect("answered").expect("5-9 appended");
    let third = third.await.expect("answered").expect("10-14 appended");
    assert_eq!((second.base_offset, third.base_offset), (5, 10));
    assert_eq!(view.get(&KEY).head.next, 15);
    // Both retried together: recognised, not stored again.
    let r2 = a
        .enqueue(KEY, "t", &topic_config(), &batch(0, 5, 5))
        .await
        .expect("enqueue retry");
    let r3 = a
        .enqueue(KEY, "t", &topic_config(), &batch(0, 10, 5))
        .await
        .expect("enqueue retry");
    assert_eq!(r2.await.expect("answered").expect("retry").base_offset, 5);
    assert_eq!(r3.await.expect("answered").expect("retry").base_offset, 10);
    assert_eq!(
        store
            .load(&KEY)
            .await
            .expect("load")
            .expect("a head")
            .head
            .next,
        15
    );
    cancel.cancel();
}

/// A queued item of one idempotent batch from `producer`.
fn queued(producer: i64, len: usize) -> (Queued, AckReceiver) {
    let bytes = Bytes::from(crate::log::tests::idempotent_batch(producer, 0, 0, 1));
    let header = format::parse_validated_header(&bytes);
    let padded = Bytes::from(vec![0u8; len.saturating_sub(bytes.len())]);
    let (reply, answer) = oneshot::channel();
    let mut batches = vec![(header, bytes)];
    if !padded.is_empty() {
        // Only the byte count matters to the cut.
        let mut filler = header;
        filler.producer_id = -1;
        batches.push((filler, padded));
    }
    let item = Queued {
        key: KEY,
        topic: Arc::from("t"),
        batches,
        log_append_time: -1,
        queued_at: Instant::now(),
        reply,
        detached: false,
        verified: None,
        marker: None,
    };
    (item, answer)
}

#[test]
fn a_flush_takes_no_more_producers_per_partition_than_one_transaction_records() {
    let mut queue = Queue::default();
    let mut answers = Vec::new();
    for producer in 0..300 {
        let (item, answer) = queued(producer, 0);
        queue.bytes += item.bytes();
        queue.items.push(item);
        answers.push(answer);
    }
    let first = queue.take_flush(u64::MAX);
    let limit = PARTITION_OPS - 2 - crate::diskless::state::EXPIRE_PER_COMMIT;
    assert_eq!(first.len(), limit);
    // Held in queue order, counted, and due at once.
    assert_eq!(queue.items.len(), 300 - limit);
    assert_eq!(queue.items[0].batches[0].0.producer_id, limit as i64);
    assert!(queue.since.is_some());
    assert_eq!(
        queue.bytes,
        queue.items.iter().map(Queued::bytes).sum::<u64>()
    );
    let mut taken = first.len();
    while !queue.items.is_empty() {
        taken += queue.take_flush(u64::MAX).len();
    }
    assert_eq!(taken, 300);
}

#[test]
fn a_flush_is_cut_at_diskless_append_bytes() {
    let mut queue = Queue::default();
    let mut answers = Vec::new();
    for producer in 0..10 {
        let (item, answer) = queued(producer, 1000);
        queue.bytes += item.bytes();
        queue.items.push(item);
        answers.push(answer);
    }
    let one = queue.items[0].bytes();
    let first = queue.take_flush(3 * one);
    assert_eq!(first.len(), 3);
    assert_eq!(queue.items.len(), 7);
    // One item larger than the limit still goes, alone.
    assert_eq!(queue.take_flush(1).len(), 1);
}

#[tokio::test]
async fn many_producers_in_one_flush_are_all_committed_over_several_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let cancel = CancellationToken::new();
    let config = crate::config::Config {
        node_id: 1,
        diskless_append_interval_ms: 200,
        ..crate::config::Config::default()
    };
    let (a, _, metrics) = broker_with(config, store.clone(), objects, &cancel);
    let mut answers = Vec::new();
    for producer in 0..250 {
        let batch = crate::log::tests::idempotent_batch(1000 + producer, 0, 0, 2);
        answers.push(
            a.enqueue(KEY, "t", &topic_config(), &batch)
                .await
                .expect("enqueue"),
        );
    }
    let mut offsets = Vec::new();
    for answer in answers {
        offsets.push(
            answer
                .await
                .expect("answered")
                .expect("appended")
                .base_offset,
        );
    }
    assert_eq!(offsets, (0..250).map(|i| i * 2).collect::<Vec<_>>());
    let state = store.load(&KEY).await.expect("load").expect("a head");
    assert_eq!(state.head.next, 500);
    assert_eq!(state.producers.len(), 250);
    assert!(
        metrics.objects.with_label_values(&["t"]).get() >= 3,
        "the flush was not cut"
    );
    cancel.cancel();
}

#[tokio::test]
async fn an_append_racing_a_topic_deletion_does_not_recreate_the_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let cancel = CancellationToken::new();
    let (a, _, _) = broker(1, store.clone(), objects, &cancel);
    produce(&a, &batch(0, 0, 5)).await.expect("first");
    // Deleted behind the view's back (as by another broker, before this one's watch
    // caught up): the commit's compare fails and the re-read finds no head.
    store.delete_topic(KEY.topic_id).await.expect("delete");
    let refused = produce(&a, &batch(0, 5, 5)).await.expect_err("deleted");
    assert_eq!(refused.code(), ResponseError::UnknownTopicOrPartition);
    assert!(
        store.load(&KEY).await.expect("load").is_none(),
        "head recreated"
    );
    cancel.cancel();
}

#[tokio::test]
async fn an_append_after_this_brokers_view_forgot_a_deleted_topic_does_not_recreate_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let cancel = CancellationToken::new();
    let (a, view, _) = broker(1, store.clone(), objects, &cancel);
    produce(&a, &batch(0, 0, 5)).await.expect("first");
    // DeleteTopics on this broker: the view forgets the topic, then the store drops it.
    // The view then reads version 0 for the partition, as for one never written.
    view.remove_topic(KEY.topic_id);
    store.delete_topic(KEY.topic_id).await.expect("delete");
    let refused = produce(&a, &batch(0, 5, 5)).await.expect_err("deleted");
    assert_eq!(refused.code(), ResponseError::UnknownTopicOrPartition);
    assert!(
        store.load(&KEY).await.expect("load").is_none(),
        "head recreated at offset 0 for a deleted topic"
    );
    cancel.cancel();
}

#[tokio::test]
async fn produce_past_diskless_append_queue_bytes_is_refused_retriably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let cancel = CancellationToken::new();
    let config = crate::config::Config {
        node_id: 1,
        diskless_append_interval_ms: 300,
        diskless_append_bytes: 1 << 20,
        diskless_append_queue_bytes: 100,
        ..crate::config::Config::default()
    };
    let (a, _, _) = broker_with(config, store, objects, &cancel);
    let first = a
        .enqueue(KEY, "t", &topic_config(), &batch(0, 0, 5))
        .await
        .expect("the first request is queued whatever its size");
    let full = a
        .enqueue(KEY, "t", &topic_config(), &batch(0, 5, 5))
        .await
        .expect_err("queue full");
    assert_eq!(full.code(), ResponseError::KafkaStorageError);
    assert!(
        full.to_string().contains("diskless_append_queue_bytes"),
        "{full}"
    );
    first.await.expect("answered").expect("appended");
    cancel.cancel();
}

#[test]
fn a_request_whose_producer_went_away_is_dropped_before_the_put() {
    let mut queue = Queue::default();
    let (gone, answer) = queued(1, 0);
    drop(answer);
    let (waited, _answer) = queued(2, 0);
    let (mut acks0, answer0) = queued(3, 0);
    acks0.detached = true;
    drop(answer0);
    queue.items = vec![gone, waited, acks0];
    let taken = queue.take_flush(u64::MAX);
    let producers: Vec<i64> = taken.iter().map(|i| i.batches[0].0.producer_id).collect();
    assert_eq!(producers, vec![2, 3]);
}

/// A request's verification covers its verified producer's batches only: another
/// producer's transactional batch in the same request opens nothing.
#[test]
fn only_the_verified_producers_batches_count_as_verified() {
    let (mut item, _answer) = queued(42, 0);
    item.verified = Some((42, 7));
    let mut header = item.batches[0].0;
    header.attributes |= 0x10;
    assert!(header.is_transactional());
    assert_eq!(
        item.kind(&header),
        BatchKind::Transactional { verified: Some(7) }
    );
    header.producer_id = 43;
    assert_eq!(
        item.kind(&header),
        BatchKind::Transactional { verified: None }
    );
}

/// Flushes start at most once per interval, but a produce to an idle appender does not
/// wait for one: it waits only the gather time, and the next flush starts an interval
/// after it started.
#[tokio::test]
async fn an_idle_appender_flushes_at_once_and_then_once_per_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn DisklessStore> = Arc::new(EmbeddedDisklessStore::new(dir.path()));
    let objects: Arc<dyn RemoteStore> = Arc::new(ObjectStoreBackend::in_memory());
    let cancel = CancellationToken::new();
    let config = crate::config::Config {
        node_id: 1,
        diskless_append_interval_ms: 10_000,
        ..crate::config::Config::default()
    };
    let (a, _, metrics) = broker_with(config, store, objects, &cancel);
    let first = a
        .enqueue(KEY, "t", &topic_config(), &batch(0, 0, 5))
        .await
        .expect("enqueue");
    let first = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("an idle appender does not wait for the interval")
        .expect("answered")
        .expect("appended");
    assert_eq!(first.base_offset, 0);
    let second = a
        .enqueue(KEY, "t", &topic_config(), &batch(0, 5, 5))
        .await
        .expect("enqueue");
    let mut second = Box::pin(second);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "a second flush started within the interval"
    );
    assert_eq!(metrics.objects.with_label_values(&["t"]).get(), 1);
    cancel.cancel();
}
