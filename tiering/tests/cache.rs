//! The segment cache over a real local-directory object store.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::Registry;
use strata_tiering::store::{self, Faults, FaultyStore, ObjectInfo, ObjectStoreBackend};
use strata_tiering::{
    Body, CacheSettings, Location, ObjectRef, RemoteStore, S3Settings, SegmentCache, StoreError,
    TierError,
};
use uuid::Uuid;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The smallest chunk the cache allows.
const CHUNK: u64 = 64 * KIB;

/// Counts ranged GETs (and can slow them down, to widen race windows, or panic on a key,
/// as a bug in a store client would).
struct Counting<S> {
    inner: S,
    gets: AtomicU64,
    delay: Duration,
    panic_on: std::sync::Mutex<Option<String>>,
    /// (key, thread name) of every ranged GET.
    get_threads: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

#[async_trait::async_trait]
impl<S: RemoteStore> RemoteStore for Counting<S> {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, bytes).await
    }
    async fn put_body(&self, key: &str, body: &Body, part_bytes: u64) -> Result<(), StoreError> {
        self.inner.put_body(key, body, part_bytes).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        // Remote reads never run on the caller's runtime (the broker's request threads).
        let thread = std::thread::current().name().map(str::to_owned);
        self.get_threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.to_owned(), thread.clone()));
        assert_eq!(
            thread.as_deref(),
            Some("strata-tier-io"),
            "a GET ran outside the remote-read runtime"
        );
        let panics = self
            .panic_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            == Some(key);
        assert!(!panics, "the store client panicked on {key}");
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.get_range(key, range).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }
}

struct Setup {
    dir: tempfile::TempDir,
    store: Arc<Counting<FaultyStore<ObjectStoreBackend>>>,
    faults: Arc<Faults>,
}

impl Setup {
    fn new(delay: Duration) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = store::open(
            &Location::Directory(dir.path().join("bucket")),
            &S3Settings::default(),
        )
        .expect("open the local store");
        let faults = Arc::new(Faults::default());
        Setup {
            dir,
            store: Arc::new(Counting {
                inner: FaultyStore::new(backend, faults.clone()),
                gets: AtomicU64::new(0),
                delay,
                panic_on: std::sync::Mutex::new(None),
                get_threads: std::sync::Mutex::new(Vec::new()),
            }),
            faults,
        }
    }

    fn settings(&self) -> CacheSettings {
        CacheSettings {
            memory_bytes: 64 * MIB as usize,
            disk_bytes: 0,
            dir: self.dir.path().join("cache"),
            chunk_bytes: CHUNK,
            read_ahead_chunks: 0,
            rate_bytes_per_sec: 0,
            prefetch_concurrency: 4,
            read_threads: 1,
        }
    }

    async fn cache(&self, settings: &CacheSettings, registry: &Registry) -> Arc<SegmentCache> {
        SegmentCache::open(settings, self.store.clone(), registry)
            .await
            .expect("open the cache")
    }

    /// Writes an object of `size` bytes of seeded pseudo-random data.
    async fn object(&self, size: u64, seed: u64) -> (ObjectRef, Bytes) {
        let id = Uuid::new_v4();
        let key = format!("topics/t.{}/0/{:020}-{id}.segment", Uuid::nil(), seed);
        let data = Bytes::from(pseudo_random(size as usize, seed));
        self.store.put(&key, data.clone()).await.expect("put");
        (ObjectRef { key, id, size }, data)
    }

    fn gets(&self) -> u64 {
        self.store.gets.load(Ordering::SeqCst)
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn counter(registry: &Registry, name: &str) -> u64 {
    registry
        .gather()
        .iter()
        .find(|family| family.name() == name)
        .and_then(|family| family.get_metric().first())
        .map_or(0, |metric| metric.get_counter().get_value() as u64)
}

fn expected(data: &[u8], range: Range<u64>) -> &[u8] {
    let size = data.len() as u64;
    let (start, end) = (range.start.min(size), range.end.min(size));
    if start >= end {
        return &[];
    }
    &data[start as usize..end as usize]
}

/// Waits (up to a generous deadline) for a condition that background work makes true.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn reads_of_any_range_return_exactly_the_object_bytes() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    // Room for a few chunks only, so chunks are evicted and fetched again; read-ahead on.
    let settings = CacheSettings {
        memory_bytes: 4 * CHUNK as usize,
        read_ahead_chunks: 2,
        ..setup.settings()
    };
    let (cache, objects) = runtime.block_on(async {
        let cache = setup.cache(&settings, &registry).await;
        let mut objects = Vec::new();
        let sizes = [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            4 * CHUNK,
            5 * CHUNK + 123,
        ];
        for (seed, size) in sizes.into_iter().enumerate() {
            objects.push(setup.object(size, seed as u64).await);
        }
        (cache, objects)
    });
    let max = 5 * CHUNK + 123;
    let strategy = (
        0..objects.len(),
        0..max + CHUNK,
        prop_oneof![0..64u64, 0..3 * CHUNK, (CHUNK - 2..CHUNK + 2)],
    );
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 300,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]),
    );
    runner
        .run(&strategy, |(which, start, len)| {
            let (object, data) = &objects[which];
            let range = start..start + len;
            let got = runtime
                .block_on(cache.read(object, range.clone()))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got[..], expected(data, range));
            Ok(())
        })
        .expect("every range reads back exactly");
    // A reversed range is empty, and costs nothing.
    let gets = setup.gets();
    let (object, _) = &objects[6];
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 100..10;
    let got = runtime
        .block_on(cache.read(object, reversed))
        .expect("read");
    assert!(got.is_empty());
    let got = runtime
        .block_on(cache.read(object, object.size..object.size + 10))
        .expect("read");
    assert!(got.is_empty());
    assert_eq!(setup.gets(), gets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_of_a_missing_chunk_share_one_get() {
    // A slow store, so every reader arrives while the first GET is still out.
    let setup = Setup::new(Duration::from_millis(300));
    let registry = Registry::new();
    let cache = setup.cache(&setup.settings(), &registry).await;
    let (object, data) = setup.object(4 * CHUNK, 1).await;
    let object = Arc::new(object);
    let readers: Vec<_> = (0..32u64)
        .map(|i| {
            let (cache, object) = (cache.clone(), object.clone());
            // Different ranges, all within chunk 1.
            let range = CHUNK + i * 100..CHUNK + i * 100 + 1000;
            tokio::spawn(async move { (range.clone(), cache.read(&object, range).await) })
        })
        .collect();
    for reader in readers {
        let (range, got) = reader.await.expect("join");
        assert_eq!(got.expect("read"), expected(&data, range));
    }
    assert_eq!(setup.gets(), 1);
    assert_eq!(counter(&registry, "strata_remote_cache_misses_total"), 1);
    assert_eq!(counter(&registry, "strata_remote_cache_lookups_total"), 32);
    assert_eq!(
        counter(&registry, "strata_remote_fetched_bytes_total"),
        CHUNK
    );
    // Readers spanning chunks 2 and 3 share one GET per chunk.
    let spanning = futures::future::join_all((0..16).map(|i| {
        let range = 3 * CHUNK - 500 - i..3 * CHUNK + 500 + i;
        let cache = cache.clone();
        let object = object.clone();
        async move { (range.clone(), cache.read(&object, range).await) }
    }))
    .await;
    for (range, got) in spanning {
        assert_eq!(got.expect("read"), expected(&data, range));
    }
    assert_eq!(setup.gets(), 3);
    // Cached now: no more GETs.
    let got = cache.read(&object, 0..4 * CHUNK).await.expect("read");
    assert_eq!(got, data);
    assert_eq!(setup.gets(), 4);
    assert_eq!(counter(&registry, "strata_remote_cache_misses_total"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_caches_the_next_chunks() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let settings = CacheSettings {
        read_ahead_chunks: 3,
        ..setup.settings()
    };
    let cache = setup.cache(&settings, &registry).await;
    let (object, data) = setup.object(8 * CHUNK, 2).await;
    let got = cache.read(&object, 0..100).await.expect("read");
    assert_eq!(got, expected(&data, 0..100));
    eventually("chunks 1 to 3", || {
        (1..=3).all(|i| cache.is_cached(&object, i * CHUNK))
    })
    .await;
    assert!(cache.is_cached(&object, 0));
    assert!(
        !cache.is_cached(&object, 4 * CHUNK),
        "read-ahead is bounded"
    );
    assert_eq!(counter(&registry, "strata_remote_read_ahead_total"), 3);
    eventually("4 GETs", || setup.gets() == 4).await;

    // Reading them costs nothing, and reads further ahead.
    let got = cache.read(&object, CHUNK..4 * CHUNK).await.expect("read");
    assert_eq!(got, expected(&data, CHUNK..4 * CHUNK));
    eventually("chunks 4 to 6", || {
        (4..=6).all(|i| cache.is_cached(&object, i * CHUNK))
    })
    .await;
    assert!(!cache.is_cached(&object, 7 * CHUNK));
    eventually("7 GETs", || setup.gets() == 7).await;
    assert_eq!(counter(&registry, "strata_remote_read_ahead_total"), 6);

    // The last chunk: nothing past the end to read ahead.
    let got = cache
        .read(&object, 7 * CHUNK..8 * CHUNK)
        .await
        .expect("read");
    assert_eq!(got, expected(&data, 7 * CHUNK..8 * CHUNK));
    assert_eq!(counter(&registry, "strata_remote_read_ahead_total"), 6);
    assert_eq!(setup.gets(), 8);

    // The caller can warm another object explicitly (the next segment).
    let (next, _) = setup.object(2 * CHUNK, 3).await;
    cache.read_ahead(&next, 0, 2 * CHUNK);
    eventually("the next object", || {
        cache.is_cached(&next, 0) && cache.is_cached(&next, CHUNK)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_carries_its_budget_into_the_next_objects() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let cache = setup.cache(&setup.settings(), &registry).await;
    let (a, _) = setup.object(2 * CHUNK, 10).await;
    let (b, _) = setup.object(CHUNK, 11).await;
    let (c, _) = setup.object(CHUNK / 2, 12).await;
    let (d, _) = setup.object(CHUNK, 13).await;
    // Three chunks and a bit: all of a, all of b, and c (a chunk started is fetched whole).
    let left = cache.read_ahead(&a, 0, 3 * CHUNK + 10);
    assert_eq!(left, CHUNK + 10, "what is left past a's end");
    let left = cache.read_ahead(&b, 0, left);
    assert_eq!(left, 10);
    let left = cache.read_ahead(&c, 0, left);
    assert_eq!(left, 0, "c's chunk spent the rest");
    assert_eq!(cache.read_ahead(&d, 0, left), 0);
    eventually("a, b and c cached", || {
        cache.is_cached(&a, 0)
            && cache.is_cached(&a, CHUNK)
            && cache.is_cached(&b, 0)
            && cache.is_cached(&c, 0)
    })
    .await;
    assert!(!cache.is_cached(&d, 0), "read-ahead stops at its budget");
    assert_eq!(setup.gets(), 4);
    assert_eq!(counter(&registry, "strata_remote_read_ahead_total"), 4);
    // Chunks already cached cost budget but no GET.
    assert_eq!(cache.read_ahead(&a, 0, 2 * CHUNK), 0);
    assert_eq!(setup.gets(), 4);
}

#[tokio::test]
async fn pacing_halves_read_ahead_when_late_and_grows_it_back_by_one() {
    let setup = Setup::new(Duration::from_millis(300));
    let registry = Registry::new();
    let settings = CacheSettings {
        read_ahead_chunks: 8,
        prefetch_concurrency: 8,
        ..setup.settings()
    };
    let cache = setup.cache(&settings, &registry).await;
    assert_eq!(cache.read_ahead_limit(), (8, 8));
    assert_eq!(cache.pace(true), 4);
    assert_eq!(cache.pace(true), 2);
    assert_eq!(cache.pace(true), 1);
    assert_eq!(cache.pace(true), 1, "never below one");
    assert_eq!(
        counter_gauge(&registry, "strata_remote_read_ahead_limit"),
        1
    );
    // One slot in force: a read starts one read-ahead GET (the store is slow, so it is
    // still in flight when the next chunk is considered).
    let (object, _) = setup.object(16 * CHUNK, 30).await;
    assert_eq!(cache.read_ahead(&object, 0, 8 * CHUNK), 0);
    assert_eq!(counter(&registry, "strata_remote_read_ahead_total"), 1);
    assert_eq!(cache.pace(false), 2);
    assert_eq!(cache.pace(false), 3);
    for _ in 0..10 {
        cache.pace(false);
    }
    assert_eq!(cache.read_ahead_limit(), (8, 8), "never above the setting");
}

fn counter_gauge(registry: &Registry, name: &str) -> i64 {
    registry
        .gather()
        .iter()
        .find(|family| family.name() == name)
        .and_then(|family| family.get_metric().first())
        .map_or(-1, |metric| metric.get_gauge().get_value() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_panics_fails_its_readers_and_nothing_else() {
    for disk_bytes in [0, 64 * MIB as usize] {
        a_read_that_panics(disk_bytes).await;
    }
}

async fn a_read_that_panics(disk_bytes: usize) {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let settings = CacheSettings {
        disk_bytes,
        ..setup.settings()
    };
    let cache = setup.cache(&settings, &registry).await;
    let (bad, _) = setup.object(2 * CHUNK, 20).await;
    let (good, data) = setup.object(2 * CHUNK, 21).await;
    *setup.store.panic_on.lock().expect("lock") = Some(bad.key.clone());
    // Several readers of the same chunk share the failed fetch; each gets an error.
    let readers = futures::future::join_all((0..4).map(|_| cache.read(&bad, 0..100))).await;
    for got in readers {
        let err = got.expect_err("the GET panicked");
        assert!(err.is_transient(), "{err}");
    }
    // The panic was on the remote-read runtime, not on this test's (the broker's) threads.
    let threads = setup.store.get_threads.lock().expect("lock").clone();
    assert!(
        threads.iter().any(|(key, _)| *key == bad.key),
        "{threads:?}"
    );
    assert!(
        threads
            .iter()
            .all(|(_, thread)| thread.as_deref() == Some("strata-tier-io")),
        "{threads:?}"
    );
    // The cache and its runtime still serve other objects, and the same chunk again once
    // the store behaves.
    let got = cache.read(&good, 0..2 * CHUNK).await.expect("read");
    assert_eq!(got, data);
    *setup.store.panic_on.lock().expect("lock") = None;
    let got = cache
        .read(&bad, 0..100)
        .await
        .expect("read after the panic");
    assert_eq!(got.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_ahead_when_its_chunks_are_zero() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let cache = setup.cache(&setup.settings(), &registry).await;
    // The budget the broker carries into the next segments is 0 too.
    assert_eq!(cache.read_ahead_bytes(), 0);
    let (object, _) = setup.object(4 * CHUNK, 40).await;
    cache.read(&object, 0..100).await.expect("read");
    // Read-ahead counts its chunks before it spawns their GETs.
    assert_eq!(counter(&registry, "strata_remote_read_ahead_total"), 0);
    assert_eq!(setup.gets(), 1);
    assert!(!cache.is_cached(&object, CHUNK));
}

#[tokio::test]
async fn a_huge_read_ahead_setting_is_capped_by_memory() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let settings = CacheSettings {
        read_ahead_chunks: u64::MAX,
        ..setup.settings()
    };
    let cache = setup.cache(&settings, &registry).await;
    // chunks × chunk size would overflow: an eighth of the memory tier instead.
    assert_eq!(cache.read_ahead_bytes(), 8 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_read_does_not_pin_its_chunk() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let cache = setup.cache(&setup.settings(), &registry).await;
    let (object, data) = setup.object(2 * CHUNK, 41).await;
    let whole = cache.read(&object, 0..CHUNK).await.expect("read");
    let chunk = whole.as_ptr_range();
    // Half a chunk is a slice of the cached chunk (no copy)...
    let half = cache
        .read(&object, 100..100 + CHUNK / 2)
        .await
        .expect("read");
    assert_eq!(half, expected(&data, 100..100 + CHUNK / 2));
    assert!(chunk.contains(&half.as_ptr()), "a large read is a slice");
    // ...but a few bytes are copied: holding them must not keep the whole chunk alive
    // outside the memory tier's budget.
    let few = cache.read(&object, 100..200).await.expect("read");
    assert_eq!(few, expected(&data, 100..200));
    assert!(!chunk.contains(&few.as_ptr()), "a small read is a copy");
}

#[tokio::test]
async fn read_ahead_never_queues_beyond_its_slots() {
    // One slot, and a slow store: the fetch in it is still out when the loop asks for
    // the next slot.
    let setup = Setup::new(Duration::from_millis(300));
    let registry = Registry::new();
    let settings = CacheSettings {
        read_ahead_chunks: 4,
        prefetch_concurrency: 1,
        ..setup.settings()
    };
    let cache = setup.cache(&settings, &registry).await;
    let (object, _) = setup.object(8 * CHUNK, 4).await;
    cache.read(&object, 0..10).await.expect("read");
    assert_eq!(counter(&registry, "strata_remote_read_ahead_total"), 1);
    eventually("chunk 1", || cache.is_cached(&object, CHUNK)).await;
    assert!(!cache.is_cached(&object, 2 * CHUNK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_tier_serves_chunks_evicted_from_memory() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    // Memory holds about one chunk per shard; the disk tier holds the rest.
    let settings = CacheSettings {
        memory_bytes: 0,
        disk_bytes: 64 * MIB as usize,
        ..setup.settings()
    };
    let cache = setup.cache(&settings, &registry).await;
    let chunks = 32;
    let (object, data) = setup.object(chunks * CHUNK, 5).await;
    for i in 0..chunks {
        let range = i * CHUNK + 10..(i + 1) * CHUNK + 10;
        let got = cache.read(&object, range.clone()).await.expect("read");
        assert_eq!(got, expected(&data, range));
    }
    let first_pass = setup.gets();
    assert_eq!(first_pass, chunks);
    assert!(
        std::fs::read_dir(&settings.dir)
            .expect("the cache directory")
            .next()
            .is_some(),
        "the disk tier has its file"
    );
    // Everything is still there, in memory or on disk (writes to disk are
    // asynchronous, so allow for a few that have not landed).
    eventually("all chunks cached", || {
        (0..chunks).all(|i| cache.is_cached(&object, i * CHUNK))
    })
    .await;
    let got = cache.read(&object, 0..object.size).await.expect("read");
    assert_eq!(got, data);
    let second_pass = setup.gets() - first_pass;
    assert!(
        second_pass < chunks / 2,
        "{second_pass} of {chunks} chunks fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_cache_reopened_with_another_chunk_size_returns_the_right_bytes() {
    let setup = Setup::new(Duration::ZERO);
    let (object, data) = setup.object(2 * MIB, 11).await;
    let chunks = object.size / CHUNK;
    let mut settings = CacheSettings {
        memory_bytes: 0,
        disk_bytes: 64 * MIB as usize,
        ..setup.settings()
    };
    // Reads the whole object in `len`-byte reads every `step` bytes, then closes
    // the cache as the broker does at shutdown (the disk tier finishes its writes).
    let read_all = |cache: Arc<SegmentCache>, step: u64, len: u64| {
        let object = object.clone();
        let data = data.clone();
        async move {
            for start in (0..object.size).step_by(step as usize) {
                let range = start..start + len;
                let got = cache.read(&object, range.clone()).await.expect("read");
                assert_eq!(got, expected(&data, range), "at {start}");
            }
            cache.close().await.expect("close the cache");
        }
    };
    read_all(setup.cache(&settings, &Registry::new()).await, CHUNK, CHUNK).await;
    assert_eq!(setup.gets(), chunks);

    // Reopened as it was: the disk tier is recovered, so most chunks need no GET.
    read_all(setup.cache(&settings, &Registry::new()).await, CHUNK, CHUNK).await;
    let refetched = setup.gets() - chunks;
    assert!(
        refetched < chunks / 2,
        "{refetched} of {chunks} fetched again"
    );

    // Reopened with twice the chunk size: old chunks must not pass for new ones.
    settings.chunk_bytes = 2 * CHUNK;
    read_all(
        setup.cache(&settings, &Registry::new()).await,
        CHUNK,
        3 * CHUNK / 2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_slows_fetches_from_the_store() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let settings = CacheSettings {
        rate_bytes_per_sec: MIB,
        ..setup.settings()
    };
    let cache = setup.cache(&settings, &registry).await;
    let (object, data) = setup.object(3 * MIB, 6).await;
    let started = Instant::now();
    let got = cache.read(&object, 0..object.size).await.expect("read");
    let elapsed = started.elapsed();
    assert_eq!(got, data);
    // 3 MiB at 1 MiB/s after a burst of at most 0.1 MiB: about 2.9 s. Only check that
    // the limiter engaged; speed belongs in benchmarks.
    assert!(
        elapsed >= Duration::from_millis(1500),
        "3 MiB at 1 MiB/s took {elapsed:?}"
    );
    assert_eq!(
        counter(&registry, "strata_remote_fetched_bytes_total"),
        3 * MIB
    );
    // Cached reads are not charged: they cost no fetched bytes.
    let got = cache.read(&object, 0..object.size).await.expect("read");
    assert_eq!(got, data);
    assert_eq!(
        counter(&registry, "strata_remote_fetched_bytes_total"),
        3 * MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_is_not_cached() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let cache = setup.cache(&setup.settings(), &registry).await;
    let (object, data) = setup.object(2 * CHUNK, 7).await;
    setup.faults.fail_next.store(1, Ordering::SeqCst);
    let err = cache
        .read(&object, 0..10)
        .await
        .expect_err("injected fault");
    assert!(matches!(err, TierError::Store(_)), "{err}");
    assert!(err.is_transient(), "{err}");
    assert!(!cache.is_cached(&object, 0));
    let got = cache.read(&object, 0..10).await.expect("read");
    assert_eq!(got, expected(&data, 0..10));
    assert!(cache.is_cached(&object, 0));

    // An object that does not exist fails every read, and nothing is cached for it.
    let missing = ObjectRef {
        key: "topics/t.00000000-0000-0000-0000-000000000000/0/missing.segment".into(),
        id: Uuid::new_v4(),
        size: CHUNK,
    };
    for _ in 0..2 {
        assert!(cache.read(&missing, 0..10).await.is_err());
    }
    assert!(!cache.is_cached(&missing, 0));
}

#[tokio::test]
async fn metrics_are_registered_once_per_registry() {
    let setup = Setup::new(Duration::ZERO);
    let registry = Registry::new();
    let _cache = setup.cache(&setup.settings(), &registry).await;
    assert!(
        SegmentCache::open(&setup.settings(), setup.store.clone(), &registry)
            .await
            .is_err()
    );
}
