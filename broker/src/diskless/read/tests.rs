use super::*;
use crate::log::format;

/// A stored batch (base offset 0) of `records` records.
fn batch(records: usize, timestamp: i64) -> Vec<u8> {
    let mut bytes = crate::log::tests::batch(
        records,
        timestamp,
        kafka_protocol::records::Compression::None,
    );
    format::patch_batch(&mut bytes, 0, 0);
    bytes
}

fn run(base: i64, end: i64, len: u64) -> Run {
    Run {
        key: "diskless/1970010100/1-x.batches".into(),
        size: len,
        pos: 0,
        len,
        base,
        end,
        max_ts: 0,
        at: 0,
        broker: 1,
        batches: 2,
        aborted: Vec::new(),
    }
}

#[test]
fn batches_are_patched_with_offsets_from_the_run_base() {
    let mut bytes = batch(3, 100);
    bytes.extend(batch(2, 200));
    let run = run(40, 45, bytes.len() as u64);
    let mut out = BytesMut::new();
    assert!(patched_batches(&run, &bytes, (40, i64::MAX), usize::MAX, &mut out).expect("reads"));
    let (first, size, _) = format::read_batch_prefix(&out).expect("batch");
    let (second, ..) = format::read_batch_prefix(&out[size..]).expect("batch");
    assert_eq!((first, second), (40, 43));
    assert!(
        format::crc_matches(&out[..size]),
        "the CRC does not cover the base offset"
    );
    // From an offset inside the second batch: only the second; a small max_bytes still
    // returns one batch (KIP-74) and says the run was not read to its end.
    let mut out = BytesMut::new();
    patched_batches(&run, &bytes, (44, i64::MAX), usize::MAX, &mut out).expect("reads");
    assert_eq!(format::read_batch_prefix(&out).expect("batch").0, 43);
    let mut out = BytesMut::new();
    assert!(!patched_batches(&run, &bytes, (40, i64::MAX), 1, &mut out).expect("reads"));
    assert_eq!(out.len(), size);
    // A run whose offsets do not match its batches is damaged, not misread.
    let wrong = Run { end: 46, ..run };
    assert!(
        patched_batches(
            &wrong,
            &bytes,
            (40, i64::MAX),
            usize::MAX,
            &mut BytesMut::new()
        )
        .is_err()
    );
}

#[test]
fn the_write_cache_keeps_the_newest_objects_within_its_budget() {
    let cache = WriteCache::new(10);
    cache.insert("a", Bytes::from_static(b"123456"));
    cache.insert("b", Bytes::from_static(b"1234"));
    assert!(cache.get("a").is_some());
    cache.insert("c", Bytes::from_static(b"12"));
    assert!(cache.get("a").is_none());
    assert!(cache.get("b").is_some() && cache.get("c").is_some());
    cache.insert("huge", Bytes::from(vec![0u8; 11]));
    assert!(cache.get("huge").is_none());
}

#[test]
fn an_object_inserted_again_is_counted_once() {
    let cache = WriteCache::new(10);
    cache.insert("a", Bytes::from_static(b"123456"));
    cache.insert("a", Bytes::from_static(b"123456"));
    assert!(cache.get("a").is_some(), "6 bytes fit a budget of 10");
    cache.insert("b", Bytes::from_static(b"1234"));
    assert!(cache.get("a").is_some() && cache.get("b").is_some());
    cache.insert("c", Bytes::from_static(b"1"));
    assert!(cache.get("a").is_none(), "the oldest goes first");
    assert!(cache.get("b").is_some() && cache.get("c").is_some());
}

/// Brokers sharing one metadata store and one bucket, each with its own view (the
/// embedded store has no watch: a view sees only its own broker's commits and refreshes).
pub mod brokers {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kafka_protocol::records::Compression;
    use strata_tiering::ManifestStore;
    use strata_tiering::store::ObjectStoreBackend;
    use tokio_util::sync::CancellationToken;

    use crate::cluster::manifests::EmbeddedManifests;
    use crate::config::Config;
    use crate::diskless::Diskless;
    use crate::diskless::read::ReadError;
    use crate::diskless::state::{PartitionKey, PartitionState};
    use crate::diskless::store::{DisklessStore, EmbeddedDisklessStore};
    use crate::log::format;
    use crate::topic_config::TopicConfig;

    pub const KEY: PartitionKey = PartitionKey {
        topic_id: uuid::Uuid::from_u128(11),
        partition: 0,
    };

    pub struct Cluster {
        pub dir: tempfile::TempDir,
        pub backend: ObjectStoreBackend,
        manifests: Arc<EmbeddedManifests>,
        pub store: Arc<dyn DisklessStore>,
        pub cancel: CancellationToken,
    }

    impl Cluster {
        pub fn new() -> Cluster {
            let dir = tempfile::tempdir().expect("tempdir");
            Cluster {
                backend: ObjectStoreBackend::in_memory(),
                manifests: Arc::new(EmbeddedManifests::new(&dir.path().join("meta"))),
                store: Arc::new(EmbeddedDisklessStore::new(&dir.path().join("meta"))),
                cancel: CancellationToken::new(),
                dir,
            }
        }

        /// Broker `node`'s diskless parts, started.
        pub async fn broker(&self, node: i32) -> Diskless {
            let mut config = Config {
                node_id: node,
                data_dir: self.dir.path().join(format!("broker-{node}")),
                diskless_append_interval_ms: 5,
                ..Config::default()
            };
            config.remote_cache_disk_bytes = 0;
            let tiering = crate::tier::Tiering::open_with_backend(
                &config,
                self.manifests.clone() as Arc<dyn ManifestStore>,
                &crate::telemetry::Metrics::new().expect("metrics"),
                self.backend.clone(),
            )
            .await
            .expect("tiering");
            let (diskless, revision) = Diskless::open(
                &config,
                self.store.clone(),
                Arc::new(tiering),
                &prometheus::Registry::new(),
                Arc::new(crate::sys::SystemClock),
            )
            .await
            .expect("diskless");
            diskless.start(revision, &self.cancel);
            diskless
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            self.cancel.cancel();
        }
    }

    pub async fn produce(broker: &Diskless, records: usize) {
        produce_at(broker, records, 1_000).await;
    }

    pub async fn produce_at(broker: &Diskless, records: usize, timestamp: i64) {
        let overrides = BTreeMap::from([("diskless.enable".to_string(), "true".to_string())]);
        let config = TopicConfig::resolve(&overrides, &Config::default()).expect("config");
        let batch = crate::log::tests::batch(records, timestamp, Compression::None);
        let answer = broker
            .appender
            .enqueue(KEY, "t", &config, &batch)
            .await
            .expect("enqueued");
        answer.await.expect("answered").expect("committed");
    }

    fn first_offset(records: &[u8]) -> i64 {
        format::read_batch_prefix(records).expect("a batch").0
    }

    #[tokio::test]
    async fn a_fetch_past_a_view_that_is_behind_reads_instead_of_resetting() {
        let cluster = Cluster::new();
        let a = cluster.broker(1).await;
        let b = cluster.broker(2).await;
        for _ in 0..3 {
            produce(&a, 2).await;
        }
        assert_eq!(b.view.get(&KEY).head.next, 0, "B has not seen A's commits");
        // A consumer that read offsets 0..4 through A moves to B.
        let read = b
            .fetch(KEY, "t", 4, 1 << 20, false)
            .await
            .expect("not out of range");
        assert_eq!(read.high_watermark, 6);
        assert_eq!(first_offset(&read.records), 4);
        // At the end: empty, not out of range.
        let read = b
            .fetch(KEY, "t", 6, 1 << 20, false)
            .await
            .expect("at the end");
        assert!(read.records.is_empty());
        // Past the refreshed end: out of range.
        match b.fetch(KEY, "t", 9, 1 << 20, false).await {
            Err(ReadError::OutOfRange { next: 6, .. }) => {}
            other => panic!("expected out of range, got {:?}", other.map(|r| r.records)),
        }
    }

    #[tokio::test]
    async fn a_gap_in_the_view_is_refreshed_never_skipped() {
        let cluster = Cluster::new();
        let a = cluster.broker(1).await;
        for _ in 0..3 {
            produce(&a, 2).await;
        }
        let state = a.view.get(&KEY);
        // A view holding the first and last runs only (offsets 2..4 missing).
        let mut gapped: PartitionState = (*state).clone();
        assert_eq!(gapped.runs.keys().copied().collect::<Vec<_>>(), [0, 2, 4]);
        gapped.runs.remove(&2);
        gapped.head_version = 0;
        let reader = a.tiering.reader();
        for offset in [0, 2, 3] {
            match super::read_runs(&gapped, &a.cache, &reader, (offset, 6), 1 << 20).await {
                Err(ReadError::Gap { .. }) => {}
                other => panic!("offset {offset}: expected a gap, got {:?}", other.err()),
            }
        }
        // No run at all below `next`.
        let mut empty = gapped.clone();
        empty.runs.clear();
        assert!(matches!(
            super::read_runs(&empty, &a.cache, &reader, (0, 6), 1 << 20).await,
            Err(ReadError::Gap { offset: 0 })
        ));
        // A fetch through a gapped view refreshes it from the store and reads on.
        a.view.install(KEY, gapped);
        let read = a
            .fetch(KEY, "t", 2, 1 << 20, false)
            .await
            .expect("refreshed");
        assert_eq!(first_offset(&read.records), 2);
        assert_eq!(read.high_watermark, 6);
    }

    #[tokio::test]
    async fn max_timestamp_ignores_records_below_the_log_start() {
        let cluster = Cluster::new();
        let a = cluster.broker(1).await;
        let reader = a.tiering.reader();
        let cache = super::WriteCache::new(1 << 20);
        // One run: offsets 0..3 at 5000.., then 3..5 at 1000..; the log starts at 3.
        let mut bytes = super::batch(3, 5_000);
        bytes.extend(super::batch(2, 1_000));
        let run = super::Run {
            max_ts: 5_002,
            ..super::run(0, 5, bytes.len() as u64)
        };
        cache.insert(&run.key, bytes.into());
        let mut state = PartitionState::default();
        state.head.next = 5;
        state.head.log_start = 3;
        state.runs.insert(0, run);
        let found = super::runs_max_timestamp(&state, &cache, &reader, 3).await;
        assert_eq!(found.expect("read"), Some((4, 1_001)));
        // From the start: the largest overall.
        let found = super::runs_max_timestamp(&state, &cache, &reader, 0).await;
        assert_eq!(found.expect("read"), Some((2, 5_002)));
    }

    #[tokio::test]
    async fn list_offsets_by_timestamp_follows_delete_records_made_elsewhere() {
        let cluster = Cluster::new();
        let a = cluster.broker(1).await;
        let b = cluster.broker(2).await;
        for i in 0..3 {
            produce_at(&a, 2, 10_000 * (i + 1)).await;
        }
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
        for _ in 0..3 {
            // One run (one segment) a round.
            merger
                .merge_partition("t", &KEY, &settings, i64::MAX / 2)
                .await
                .expect("merged");
        }
        b.view.refresh(&KEY).await.expect("refresh");
        assert_eq!(b.view.get(&KEY).head.merged, 6, "everything merged");
        // B opens (and caches) the manifest.
        let found = b.offset_for_timestamp(KEY, "t", Some(0), false).await;
        assert_eq!(found.expect("search"), Some((0, 10_000)));
        // DeleteRecords through A (its own manifest copy); B's view learns the new start.
        let low = crate::diskless::retention::delete_records(&*cluster.store, &KEY, 3)
            .await
            .expect("deleted");
        crate::diskless::retention::advance_manifest(&a.tiering, "t", &KEY, low).await;
        b.view.refresh(&KEY).await.expect("refresh");
        // The first record at or after the log start, from the merged history: not
        // none, and not a deleted one.
        let found = b.offset_for_timestamp(KEY, "t", Some(0), false).await;
        assert_eq!(found.expect("search"), Some((3, 20_001)));
        let found = b.offset_for_timestamp(KEY, "t", None, false).await;
        assert_eq!(found.expect("search"), Some((5, 30_001)));
    }
}

mod txn;
