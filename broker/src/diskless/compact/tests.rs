use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
use strata_tiering::store::ObjectStoreBackend;
use strata_tiering::{ManifestStore, PartitionId, SealedSegment};
use uuid::Uuid;

use super::*;
use crate::cluster::manifests::EmbeddedManifests;
use crate::config::Config;
use crate::diskless::merge::build::{RunBytes, build_segment};

const NOW: i64 = 1_800_000_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    backend: ObjectStoreBackend,
    manifests: Arc<EmbeddedManifests>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        Fixture {
            backend: ObjectStoreBackend::in_memory(),
            manifests: Arc::new(EmbeddedManifests::new(&dir.path().join("meta"))),
            dir,
        }
    }

    /// A tiering of its own (segment cache, manifest copies), as on one broker.
    async fn tiering(&self) -> Tiering {
        let mut config = Config {
            data_dir: self.dir.path().to_path_buf(),
            ..Config::default()
        };
        config.remote_cache_disk_bytes = 0;
        Tiering::open_with_backend(
            &config,
            self.manifests.clone() as Arc<dyn ManifestStore>,
            &crate::telemetry::Metrics::new().expect("metrics"),
            self.backend.clone(),
        )
        .await
        .expect("tiering")
    }

    async fn remote(&self, tiering: &Tiering) -> Arc<RemoteLog> {
        tiering
            .open_remote_log(PartitionId {
                topic: "table".into(),
                topic_id: Uuid::from_u128(9),
                partition: 0,
            })
            .await
            .expect("open the manifest")
    }

    /// Merges one segment of `records` (key, value; `None` a tombstone) at `base`, as
    /// the merger commits it: one run of one batch, at leader epoch 0.
    async fn merge(&self, remote: &RemoteLog, base: i64, records: &[(&str, Option<&str>)]) {
        let bytes = keyed_batch(records);
        let end = base + records.len() as i64;
        let segment = build_segment(
            &[RunBytes {
                key: "shared",
                base,
                end,
                batches: 1,
                bytes: &bytes,
            }],
            4096,
        )
        .expect("build");
        let path = self.dir.path().join(format!("merge-{base}.log"));
        std::fs::write(&path, &segment.log).expect("stage");
        let sealed = SealedSegment {
            base_offset: base,
            end_offset: end,
            log: Arc::new(std::fs::File::open(&path).expect("open")),
            log_bytes: segment.log.len() as u64,
            offset_index: Bytes::from(segment.offset_index),
            time_index: Bytes::from(segment.time_index),
            producer_snapshot: Bytes::new(),
            txn_index: Bytes::new(),
            max_timestamp: segment.max_timestamp,
            log_start_offset: 0,
        };
        assert!(
            remote
                .upload(&sealed, 0, 16 << 20, NOW, None)
                .await
                .expect("upload"),
            "committed"
        );
    }
}

/// A client's batch (base offset 0, as appenders store it) of keyed records.
fn keyed_batch(records: &[(&str, Option<&str>)]) -> Vec<u8> {
    use crate::log::cleaner::tests::{encode, record};
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let rec = (Some(key.to_string()), value.map(str::to_string));
            record(i as i64, &rec, NOW - 1000)
        })
        .collect();
    encode(&records, Compression::None)
}

/// Every record of the merged history as a fresh copy of the manifest lists it:
/// offset → (key, value).
async fn records(fx: &Fixture) -> BTreeMap<i64, (String, Option<String>)> {
    let tiering = fx.tiering().await;
    let remote = fx.remote(&tiering).await;
    let mut out = BTreeMap::new();
    let mut offset = remote.marks().log_start_offset;
    while let Some(entry) = remote.locate(offset).await.expect("locate") {
        offset = entry.end_offset;
        let object = crate::tier::segment_object(&remote, &entry);
        let mut log = tiering
            .cache
            .read(&object, 0..entry.log_bytes)
            .await
            .expect("read a segment");
        while !log.is_empty() {
            let set = RecordBatchDecoder::decode(&mut log).expect("decode");
            for r in set.records {
                let text = |b: Option<Bytes>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
                let key = text(r.key).unwrap_or_default();
                out.insert(r.offset, (key, text(r.value)));
            }
        }
    }
    out
}

fn config() -> LogConfig {
    LogConfig {
        compact: true,
        min_cleanable_dirty_ratio: 0.0,
        ..crate::log::tests::config()
    }
}

fn pass<'a>(fx: &Fixture, remote: &'a RemoteLog, first_dirty: i64, max_keys: usize) -> Pass<'a> {
    Pass {
        remote,
        config: config(),
        first_dirty,
        max_keys,
        staging: fx.dir.path().join("diskless-compact"),
        stopped: &|| false,
    }
}

fn expected(pairs: &[(i64, &str, Option<&str>)]) -> BTreeMap<i64, (String, Option<String>)> {
    pairs
        .iter()
        .map(|(o, k, v)| (*o, (k.to_string(), v.map(str::to_string))))
        .collect()
}

#[tokio::test]
async fn a_pass_keeps_the_latest_record_of_each_key_at_its_offset() {
    let fx = Fixture::new();
    let tiering = fx.tiering().await;
    let remote = fx.remote(&tiering).await;
    fx.merge(
        &remote,
        0,
        &[("a", Some("1")), ("b", Some("1")), ("a", Some("2"))],
    )
    .await;
    fx.merge(
        &remote,
        3,
        &[("c", Some("1")), ("b", None), ("a", Some("3"))],
    )
    .await;
    let cleaned = compact(&tiering, pass(&fx, &remote, 0, 1000), NOW)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!(cleaned.first_dirty, 6);
    assert_eq!(
        cleaned.pass.rewritten, 1,
        "the second segment holds latest records only"
    );
    assert_eq!(cleaned.pass.stale, 0);
    assert!(cleaned.pass.bytes_removed > 0);
    // The tombstone stays (delete.retention.ms has not passed), its older value goes.
    assert_eq!(
        records(&fx).await,
        expected(&[(3, "c", Some("1")), (4, "b", None), (5, "a", Some("3"))])
    );
    // Nothing dirty: no pass.
    let again = compact(&tiering, pass(&fx, &remote, 6, 1000), NOW)
        .await
        .expect("compact");
    assert_eq!(again, None);
    // Past delete.retention.ms after the merge, the tombstone goes too.
    let later = NOW + config().delete_retention_ms + 1;
    fx.merge(&remote, 6, &[("c", Some("2"))]).await;
    compact(&tiering, pass(&fx, &remote, 6, 1000), later)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!(
        records(&fx).await,
        expected(&[(5, "a", Some("3")), (6, "c", Some("2"))])
    );
}

#[tokio::test]
async fn a_full_map_ends_the_pass_and_the_next_one_carries_on() {
    let fx = Fixture::new();
    let tiering = fx.tiering().await;
    let remote = fx.remote(&tiering).await;
    fx.merge(&remote, 0, &[("a", Some("1")), ("b", Some("1"))])
        .await;
    fx.merge(&remote, 2, &[("a", Some("2")), ("b", None)]).await;
    fx.merge(&remote, 4, &[("c", Some("1")), ("d", Some("1"))])
        .await;
    // Two keys fit: the map stops before the third segment, whose records (and the
    // tombstone before them) stay as they are.
    let first = compact(&tiering, pass(&fx, &remote, 0, 2), NOW)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!(first.first_dirty, 4);
    assert_eq!(
        records(&fx).await,
        expected(&[
            (2, "a", Some("2")),
            (3, "b", None),
            (4, "c", Some("1")),
            (5, "d", Some("1"))
        ])
    );
    let second = compact(&tiering, pass(&fx, &remote, first.first_dirty, 2), NOW)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!(second.first_dirty, 6);
}

/// A merge (another copy of the manifest: the merger's) that commits a new segment while
/// a pass is rewriting: the pass's replacement finds the manifest changed, reloads it and
/// applies itself again, so the new segment stays, and the rewrite lands too.
#[tokio::test]
async fn a_segment_merged_during_a_pass_is_never_lost() {
    let fx = Fixture::new();
    let merger_tiering = fx.tiering().await;
    let merger = fx.remote(&merger_tiering).await;
    fx.merge(&merger, 0, &[("a", Some("1")), ("a", Some("2"))])
        .await;
    let tiering = fx.tiering().await;
    let compactor = fx.remote(&tiering).await;
    // The pass has read the manifest and built its map over [0, 2) ...
    let (map, map_end) = build_map(&tiering, &compactor, (0, 2), 1000, &|| false)
        .await
        .expect("map");
    assert_eq!(map_end, 2);
    // ... when the merger commits the next segment.
    fx.merge(&merger, 2, &[("b", Some("1")), ("a", Some("3"))])
        .await;
    let target = RemoteTarget {
        remote: &compactor,
        leader_epoch: 0,
        config: config(),
        staging: fx.dir.path().join("diskless-compact"),
        map_end: 2,
        stopped: &|| false,
    };
    let done = crate::tier::compact_segments(&tiering, &target, Arc::new(map), NOW)
        .await
        .expect("rewrite");
    assert_eq!(done.rewritten, 1);
    assert_eq!(
        records(&fx).await,
        expected(&[
            (1, "a", Some("2")),
            (2, "b", Some("1")),
            (3, "a", Some("3"))
        ])
    );
    assert_eq!(
        fx.remote(&fx.tiering().await).await.marks().end_offset,
        Some(4)
    );
    // The merger's next commit (from its own, older copy) still lands after both.
    fx.merge(&merger, 4, &[("c", Some("1"))]).await;
    assert_eq!(records(&fx).await.len(), 4);
}

/// A topic deleted during a pass: its deletion removed the head, then LISTed and deleted
/// the objects; a replacement committed after that LIST would be left forever (the
/// scrubber only looks at existing topics). The fence after the pass deletes it.
#[tokio::test]
async fn a_pass_during_the_topics_deletion_leaves_no_object() {
    use crate::diskless::store::EmbeddedDisklessStore;
    use strata_tiering::store::RemoteStore;
    let fx = Fixture::new();
    let tiering = fx.tiering().await;
    let remote = fx.remote(&tiering).await;
    fx.merge(&remote, 0, &[("a", Some("1")), ("a", Some("2"))])
        .await;
    // The deletion removed the head (an empty store: no head) and listed no object yet
    // the pass would write ...
    let store = EmbeddedDisklessStore::new(&fx.dir.path().join("diskless-meta"));
    let key = PartitionKey {
        topic_id: Uuid::from_u128(9),
        partition: 0,
    };
    let cleaned = compact(&tiering, pass(&fx, &remote, 0, 1000), NOW)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!(cleaned.pass.rewritten, 1);
    // ... so after the pass, the fence finds the head gone and deletes what is left.
    assert!(fence_deleted(&store, &key, &remote).await.expect("fence"));
    let left = fx
        .backend
        .list(&strata_tiering::keys::partition_prefix(&remote.id))
        .await
        .expect("list");
    assert_eq!(left.len(), 0, "objects left");
    assert_eq!(records(&fx).await.len(), 0);
}
