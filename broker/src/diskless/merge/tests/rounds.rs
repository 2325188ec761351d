//! The merger's rounds: what they read (metadata and objects), how much they merge, how
//! they count, and two mergers racing for the same runs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::cluster::StoreError;
use crate::diskless::store::{AppendOutcome, DisklessWatch};

/// A diskless store over the fixture's that counts loads, can refuse trims, and can
/// hold the first two loads until both arrived (two mergers then plan from the same
/// state).
struct Probe {
    inner: Arc<EmbeddedDisklessStore>,
    loads: AtomicUsize,
    fail_trims: AtomicBool,
    together: Option<tokio::sync::Barrier>,
    /// Deletes this topic right after the first load (a deletion racing a merge).
    delete_after_first_load: Option<Uuid>,
}

impl Probe {
    fn new(fx: &Fixture) -> Probe {
        Probe {
            inner: fx.store.clone(),
            loads: AtomicUsize::new(0),
            fail_trims: AtomicBool::new(false),
            together: None,
            delete_after_first_load: None,
        }
    }
}

#[async_trait::async_trait]
impl DisklessStore for Probe {
    async fn load(&self, key: &PartitionKey) -> Result<Option<PartitionState>, StoreError> {
        let n = self.loads.fetch_add(1, Ordering::SeqCst);
        let state = self.inner.load(key).await;
        if let Some(topic_id) = self.delete_after_first_load
            && n == 0
        {
            self.inner.delete_topic(topic_id).await?;
        }
        if let Some(barrier) = &self.together
            && n < 2
        {
            barrier.wait().await;
        }
        state
    }
    async fn load_all_at(&self) -> Result<(Vec<(PartitionKey, PartitionState)>, i64), StoreError> {
        self.inner.load_all_at().await
    }
    async fn append_versioned(&self, writes: &[AppendWrite]) -> Result<AppendOutcome, StoreError> {
        self.inner.append_versioned(writes).await
    }
    async fn trim(
        &self,
        key: &PartitionKey,
        expected: u64,
        head: &Head,
        delete_runs: &[i64],
    ) -> Result<bool, StoreError> {
        if self.fail_trims.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("trims refused by the test".into()));
        }
        self.inner.trim(key, expected, head, delete_runs).await
    }
    async fn delete_topic(&self, topic_id: Uuid) -> Result<(), StoreError> {
        self.inner.delete_topic(topic_id).await
    }
    async fn watch(
        &self,
        after_revision: i64,
    ) -> Result<Option<Box<dyn DisklessWatch>>, StoreError> {
        self.inner.watch(after_revision).await
    }
}

/// Bytes the object store answered GETs with, as `registry`'s metrics count them.
fn bytes_got(registry: &prometheus::Registry) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "strata_object_store_bytes_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "op" && l.value() == "get")
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn merger_over(merger: Merger, store: Arc<dyn DisklessStore>) -> Merger {
    Merger { store, ..merger }
}

fn host(fx: &Fixture, tiering: Arc<Tiering>, store: Arc<dyn DisklessStore>) -> FakeHost {
    FakeHost {
        config: fx.config.clone(),
        tiering,
        store,
        views: None,
        node_id: 1,
        live: vec![1],
        partitions: 1,
        retention_bytes: -1,
        shutdown: tokio_util::sync::CancellationToken::new(),
        registry: prometheus::Registry::new(),
    }
}

#[tokio::test]
async fn a_merge_reads_exactly_its_runs_bytes() {
    let fx = Fixture::new();
    // Each object: 64 KiB of other partitions' batches around this partition's.
    let mut wanted = 0;
    for n in 0..3 {
        let (bytes, spans) = shared_object(&[2, 3], 1_000);
        let padding = vec![0u8; 64 << 10];
        let object = [&padding[..], &bytes, &padding[..]].concat();
        let object_key = format!("diskless/2026120716/1-{}.batches", Uuid::new_v4());
        fx.backend
            .put(&object_key, object.clone().into())
            .await
            .expect("put");
        let state = fx
            .store
            .load(&key())
            .await
            .expect("load")
            .unwrap_or_default();
        let run = Run {
            key: object_key,
            size: object.len() as u64,
            pos: padding.len() as u64,
            len: bytes.len() as u64,
            base: state.head.next,
            end: state.head.next + 5,
            max_ts: 2_000,
            at: 1_000 + n,
            broker: 1,
            batches: spans.len() as u32,
            aborted: Vec::new(),
        };
        wanted += run.len;
        let head = Head {
            next: run.end,
            runs: state.head.runs + 1,
            run_bytes: state.head.run_bytes + run.len,
            ..state.head.clone()
        };
        let write = AppendWrite {
            key: key(),
            expected: state.head_version,
            head,
            runs: vec![run],
            producers: Vec::new(),
            expire: Vec::new(),
        };
        assert!(fx.store.append(&[write]).await.expect("append").is_empty());
    }
    let metrics = crate::telemetry::Metrics::new().expect("metrics");
    let tiering = Tiering::open_with_backend(
        &fx.config,
        fx.manifests.clone() as Arc<dyn ManifestStore>,
        &metrics,
        fx.backend.clone(),
    )
    .await
    .expect("tiering");
    let merger = Merger {
        tiering: Arc::new(tiering),
        ..fx.merger().await
    };
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 100_000)
        .await
        .expect("round");
    assert!(merged.uploaded);
    // Ranged GETs of the runs only, not the chunks (or whole objects) around them.
    assert_eq!(bytes_got(&metrics.tiering_registry), wanted);
    let remote = merger.remote_log(TOPIC, &key()).await.expect("remote log");
    assert_eq!(
        read_all(&merger, &remote).await,
        vec![(0, 2), (2, 3), (5, 2), (7, 3), (10, 2), (12, 3)]
    );
}

#[tokio::test]
async fn a_round_keeps_merging_a_partition_while_a_merge_is_due() {
    let mut fx = Fixture::new();
    // Every run is its own segment (a run is never split), every run is due.
    fx.config.diskless_merge_bytes = 1;
    fx.config.diskless_merge_max_age_ms = 0;
    fx.config.diskless_merge_interval_ms = 3_600_000;
    fx.append(&[&[2], &[3], &[1], &[4]], 1_000).await;
    let tiering = fx.merger().await.tiering;
    let host = Arc::new(host(&fx, tiering, fx.store.clone()));
    let running = tokio::spawn(run_merger(host.clone()));
    // The first tick is at once; the next an hour later: one round does it all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !stored(&fx).await.runs.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            stored(&fx).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    host.shutdown.cancel();
    running.await.expect("the loop");
    assert_eq!(fx.segment_objects().await, 4);
    assert_eq!(stored(&fx).await.head.merged, 10);
}

#[tokio::test]
async fn a_merge_is_counted_when_committed_even_if_its_trim_fails() {
    const COUNTED: &str = "counted-merges";
    let fx = Fixture::new();
    fx.append(&[&[2], &[3]], 1_000).await;
    let probe = Arc::new(Probe::new(&fx));
    probe.fail_trims.store(true, Ordering::SeqCst);
    let merger = merger_over(fx.merger().await, probe.clone());
    let before = MERGES.with_label_values(&[COUNTED]).get();
    merger
        .merge_partition(COUNTED, &key(), &settings(1 << 20), 100_000)
        .await
        .expect_err("the trim fails");
    assert_eq!(MERGES.with_label_values(&[COUNTED]).get(), before + 1);
    // The next round trims without another upload, and counts nothing more.
    probe.fail_trims.store(false, Ordering::SeqCst);
    let merged = merger
        .merge_partition(COUNTED, &key(), &settings(1 << 20), 100_000)
        .await
        .expect("round");
    assert_eq!(
        merged,
        Merged {
            uploaded: false,
            trimmed: 2
        }
    );
    assert_eq!(MERGES.with_label_values(&[COUNTED]).get(), before + 1);
}

#[tokio::test]
async fn the_loop_counts_failed_merges() {
    let mut fx = Fixture::new();
    fx.config.diskless_merge_max_age_ms = 0;
    fx.config.diskless_merge_interval_ms = 100;
    fx.append(&[&[2], &[3]], 1_000).await;
    let probe = Arc::new(Probe::new(&fx));
    probe.fail_trims.store(true, Ordering::SeqCst);
    let tiering = fx.merger().await.tiering;
    let host = Arc::new(host(&fx, tiering, probe.clone()));
    // The fake host's topic is TOPIC, which other tests' loops also merge: a rise is
    // what is looked for.
    let before = MERGE_FAILURES.with_label_values(&[TOPIC]).get();
    let running = tokio::spawn(run_merger(host.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while MERGE_FAILURES.with_label_values(&[TOPIC]).get() < before + 2 {
        assert!(std::time::Instant::now() < deadline, "no failure counted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    host.shutdown.cancel();
    running.await.expect("the loop");
    let families = host.registry.gather();
    assert!(
        families
            .iter()
            .any(|f| f.name() == "diskless_merge_failures_total")
    );
}

#[tokio::test]
async fn concurrent_mergers_both_upload_and_one_loses_the_manifest_race() {
    let fx = Fixture::new();
    fx.append(&[&[2, 2], &[3], &[1]], 1_000).await;
    let probe = Arc::new(Probe {
        together: Some(tokio::sync::Barrier::new(2)),
        ..Probe::new(&fx)
    });
    let a = merger_over(fx.merger().await, probe.clone());
    let b = merger_over(fx.merger().await, probe.clone());
    let (s, k) = (settings(1 << 20), key());
    // Both load the same state (the barrier), so both plan the merge and upload it.
    let (ra, rb) = tokio::join!(
        a.merge_partition(TOPIC, &k, &s, 100_000),
        b.merge_partition(TOPIC, &k, &s, 100_000)
    );
    let (ra, rb) = (ra.expect("merger a"), rb.expect("merger b"));
    assert!(probe.loads.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        u8::from(ra.uploaded) + u8::from(rb.uploaded),
        1,
        "one commit, one upload that found the range covered: {ra:?} {rb:?}"
    );
    assert_eq!(ra.trimmed + rb.trimmed, 3);
    assert_eq!(
        fx.segment_objects().await,
        1,
        "the loser removed its object"
    );
    let state = stored(&fx).await;
    assert_eq!((state.head.merged, state.runs.len()), (8, 0));
}

#[tokio::test]
async fn idle_partitions_cost_no_metadata_reads() {
    let mut fx = Fixture::new();
    fx.config.diskless_merge_interval_ms = 100;
    // Retention would run every round if the view did not say there is nothing.
    fx.config.diskless_merge_max_age_ms = 0;
    let probe = Arc::new(Probe::new(&fx));
    let tiering = fx.merger().await.tiering;
    let mut idle = host(&fx, tiering, probe.clone());
    idle.partitions = 4;
    idle.retention_bytes = 1 << 20;
    // Never written: the view's head_version is 0.
    idle.views = Some(Mutex::new(HashMap::new()));
    let idle = Arc::new(idle);
    let running = tokio::spawn(run_merger(idle.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(probe.loads.load(Ordering::SeqCst), 0, "no load while idle");
    idle.shutdown.cancel();
    running.await.expect("the loop");
}

#[tokio::test]
async fn a_written_partition_is_loaded_only_when_its_view_says_a_merge_is_due() {
    let mut fx = Fixture::new();
    fx.config.diskless_merge_interval_ms = 100;
    fx.config.diskless_merge_max_age_ms = 3_600_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    fx.append(&[&[2], &[3]], now).await;
    let probe = Arc::new(Probe::new(&fx));
    let tiering = fx.merger().await.tiering;
    let mut host = host(&fx, tiering, probe.clone());
    let mut views = HashMap::new();
    views.insert(key(), Arc::new(stored(&fx).await));
    host.views = Some(Mutex::new(views));
    let host = Arc::new(host);
    let running = tokio::spawn(run_merger(host.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    // Young runs, no retention configured (topic(-1) keeps everything): nothing read.
    assert_eq!(probe.loads.load(Ordering::SeqCst), 0);
    host.shutdown.cancel();
    running.await.expect("the loop");
}

#[tokio::test]
async fn a_merge_that_outlives_its_topic_deletes_what_it_committed() {
    let fx = Fixture::new();
    fx.append(&[&[2], &[3]], 1_000).await;
    // The topic's deletion lands between the merge's load and its upload, after the
    // deletion removed the (then empty) manifest: the upload creates a root again.
    let probe = Arc::new(Probe {
        delete_after_first_load: Some(key().topic_id),
        ..Probe::new(&fx)
    });
    let merger = merger_over(fx.merger().await, probe.clone());
    let merged = merger
        .merge_partition(TOPIC, &key(), &settings(1 << 20), 100_000)
        .await
        .expect("round");
    assert!(merged.uploaded);
    assert_eq!(
        fx.segment_objects().await,
        0,
        "the merged segment was deleted"
    );
    let id = strata_tiering::PartitionId {
        topic: TOPIC.to_string(),
        topic_id: key().topic_id,
        partition: key().partition,
    };
    assert!(
        fx.manifests.load(&id).await.expect("load").is_none(),
        "the manifest root was deleted"
    );
}
