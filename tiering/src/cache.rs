//! Remote reads: fixed-size chunks of segment objects fetched with ranged GETs, kept in a
//! foyer hybrid cache (memory, then local disk).
//!
//! - A chunk is `chunk_bytes` of one object (the last one shorter). Chunk keys are the
//!   object's id, the chunk size and the chunk number; objects are immutable, so a cached
//!   chunk is never stale, and the disk cache can be reused after a restart (even one that
//!   changed the chunk size).
//! - Single flight: concurrent readers of a missing chunk share one GET (foyer's
//!   `get_or_fetch`).
//! - Read-ahead: after a read, the next `read_ahead_chunks` chunks are fetched in the
//!   background (bounded), so a sequential consumer finds them cached. The window is a
//!   byte budget ([`SegmentCache::read_ahead`] returns what is left of it past the
//!   object's end), so the caller carries it on into the next segments: small segments
//!   (1 MiB, as low-volume topics roll on segment.ms) keep as many GETs in flight as
//!   large ones.
//! - Isolation: every GET, every cache fill and the disk tier's I/O run on the cache's
//!   own small runtime (`read_threads` threads, "strata-tier-io"), never on the threads
//!   that serve produce; readers get the bytes back through the task's join handle. A
//!   read that panics or is aborted there is an error for its reader, nothing more.
//! - A token bucket on bytes fetched from the store (`rate_bytes_per_sec`, 0 = none)
//!   keeps replays from starving live traffic of network and CPU.
//!
//! Cost: each miss is one GET of `chunk_bytes`. Bigger chunks mean fewer GETs per GiB
//! replayed (S3 bills per request) but more memory per in-flight read and coarser
//! caching.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, Spawner,
};
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::remote_log::TierError;
use crate::store::{RemoteStore, StoreError};

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub memory_bytes: usize,
    /// 0 disables the disk tier.
    pub disk_bytes: usize,
    pub dir: PathBuf,
    pub chunk_bytes: u64,
    pub read_ahead_chunks: u64,
    /// Bytes per second fetched from the object store; 0 means unlimited.
    pub rate_bytes_per_sec: u64,
    /// Background chunk fetches at once (read-ahead), at most; [`SegmentCache::pace`]
    /// moves the limit in force between 1 and this.
    pub prefetch_concurrency: usize,
    /// Threads of the runtime that runs remote reads and the disk tier's I/O (at least 1).
    pub read_threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ChunkKey {
    object: u128,
    /// The disk tier outlives a restart, and `chunk_bytes` may change meanwhile: chunk
    /// `n` of another size is other bytes.
    chunk_bytes: u64,
    chunk: u64,
}

impl foyer::Code for ChunkKey {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        writer
            .write_all(&self.object.to_be_bytes())
            .and_then(|()| writer.write_all(&self.chunk_bytes.to_be_bytes()))
            .and_then(|()| writer.write_all(&self.chunk.to_be_bytes()))
            .map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        let mut object = [0u8; 16];
        let mut chunk_bytes = [0u8; 8];
        let mut chunk = [0u8; 8];
        reader
            .read_exact(&mut object)
            .and_then(|()| reader.read_exact(&mut chunk_bytes))
            .and_then(|()| reader.read_exact(&mut chunk))
            .map_err(foyer::Error::io_error)?;
        Ok(ChunkKey {
            object: u128::from_be_bytes(object),
            chunk_bytes: u64::from_be_bytes(chunk_bytes),
            chunk: u64::from_be_bytes(chunk),
        })
    }

    fn estimated_size(&self) -> usize {
        32
    }
}

/// An immutable object to read from.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    pub key: String,
    pub id: Uuid,
    pub size: u64,
}

struct RateLimiter {
    rate: f64,
    burst: f64,
    /// (tokens, last refill). Tokens may go negative: the caller then sleeps off the debt.
    state: std::sync::Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(rate_bytes_per_sec: u64, burst: u64) -> RateLimiter {
        RateLimiter {
            rate: rate_bytes_per_sec as f64,
            burst: burst as f64,
            state: std::sync::Mutex::new((burst as f64, Instant::now())),
        }
    }

    async fn acquire(&self, bytes: u64) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(state.1).as_secs_f64() * self.rate;
            state.0 = (state.0 + refill).min(self.burst) - bytes as f64;
            state.1 = now;
            if state.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-state.0 / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[derive(Clone)]
struct CacheMetrics {
    lookups: IntCounter,
    misses: IntCounter,
    fetched_bytes: IntCounter,
    read_ahead: IntCounter,
    read_ahead_limit: IntGauge,
}

impl CacheMetrics {
    fn register(registry: &Registry) -> prometheus::Result<CacheMetrics> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(CacheMetrics {
            lookups: counter(
                "strata_remote_cache_lookups_total",
                "Chunk lookups in the remote segment cache (reads and read-ahead).",
            )?,
            misses: counter(
                "strata_remote_cache_misses_total",
                "Chunk lookups that had to GET from the object store.",
            )?,
            fetched_bytes: counter(
                "strata_remote_fetched_bytes_total",
                "Bytes fetched from the object store into the segment cache.",
            )?,
            read_ahead: counter(
                "strata_remote_read_ahead_total",
                "Chunks fetched ahead of sequential readers.",
            )?,
            read_ahead_limit: {
                let g = IntGauge::new(
                    "strata_remote_read_ahead_limit",
                    "Read-ahead GETs allowed in flight now (lowered while request threads run late).",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
        })
    }
}

/// A cache miss: one ranged GET of a chunk, checked against the expected length.
async fn fetch_chunk(
    this: Arc<SegmentCache>,
    object_key: String,
    range: Range<u64>,
) -> Result<Bytes, StoreError> {
    this.metrics.misses.inc();
    if let Some(limiter) = &this.limiter {
        limiter.acquire(range.end - range.start).await;
    }
    let wanted = range.end - range.start;
    let bytes = this.store.get_range(&object_key, range).await?;
    if bytes.len() as u64 != wanted {
        // The object is shorter than its manifest entry says: never cache that.
        return Err(StoreError::Permanent {
            op: "get",
            key: object_key,
            message: format!(
                "got {} bytes where {wanted} were expected; the object does not match its manifest entry",
                bytes.len()
            ),
        });
    }
    this.metrics.fetched_bytes.inc_by(bytes.len() as u64);
    Ok(bytes)
}

/// The runtime remote reads run on. Dropped from inside another runtime (the broker's),
/// so it shuts down in the background instead of blocking.
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

pub struct SegmentCache {
    cache: HybridCache<ChunkKey, Bytes>,
    /// Where GETs, cache fills and read-ahead run: see the module documentation.
    io: tokio::runtime::Handle,
    _io_runtime: IoRuntime,
    store: Arc<dyn RemoteStore>,
    chunk_bytes: u64,
    read_ahead_chunks: u64,
    limiter: Option<RateLimiter>,
    prefetch: Arc<Semaphore>,
    prefetch_max: usize,
    memory_capacity: u64,
    /// Read-ahead GETs allowed in flight now, in 1..=prefetch_max: see [`SegmentCache::pace`].
    prefetch_limit: AtomicUsize,
    metrics: CacheMetrics,
    disk_capacity: u64,
}

/// What the cache holds and how it has served, since start (the admin API's numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub memory_capacity_bytes: u64,
    pub memory_used_bytes: u64,
    pub disk_capacity_bytes: u64,
    pub chunk_bytes: u64,
    pub lookups: u64,
    pub misses: u64,
    pub fetched_bytes: u64,
    pub read_ahead_chunks: u64,
}

impl SegmentCache {
    pub async fn open(
        settings: &CacheSettings,
        store: Arc<dyn RemoteStore>,
        registry: &Registry,
    ) -> Result<Arc<SegmentCache>, String> {
        let chunk_bytes = settings.chunk_bytes.max(64 * 1024);
        let io_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.read_threads.max(1))
            .thread_name("strata-tier-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the remote read threads: {e}"))?;
        let io = io_runtime.handle().clone();
        let io_runtime = IoRuntime(Some(io_runtime));
        let builder = HybridCacheBuilder::new()
            .with_name("strata-segments")
            .memory(settings.memory_bytes.max(chunk_bytes as usize))
            // foyer splits memory into shards; each must hold several chunks or the
            // cache overshoots its budget and thrashes.
            .with_shards((settings.memory_bytes / (4 * chunk_bytes as usize)).clamp(1, 8))
            .with_weighter(|_key: &ChunkKey, value: &Bytes| value.len() + 64)
            .storage()
            // Set with or without a disk tier: `get_or_fetch` runs the fetch (the GET, the
            // rate limit's sleep, the cache fill) on this spawner, and without one foyer
            // takes the runtime it was built on, the broker's.
            .with_spawner(Spawner::from(io.clone()));
        let mut disk_capacity = 0;
        let builder = if settings.disk_bytes > 0 {
            std::fs::create_dir_all(&settings.dir)
                .map_err(|e| format!("cannot create {}: {e}", settings.dir.display()))?;
            // A block must hold the largest entry: one chunk plus its key and header.
            let block = (chunk_bytes as usize + 64 * 1024)
                .next_power_of_two()
                .max(16 << 20);
            let capacity = settings.disk_bytes.max(4 * block) / block * block;
            disk_capacity = capacity as u64;
            let device = FsDeviceBuilder::new(&settings.dir)
                .with_capacity(capacity)
                .build()
                .map_err(|e| format!("cannot open the cache in {}: {e}", settings.dir.display()))?;
            builder.with_engine_config(BlockEngineConfig::new(device).with_block_size(block))
        } else {
            builder
        };
        let cache = builder
            .build()
            .await
            .map_err(|e| format!("cannot start the segment cache: {e}"))?;
        let metrics = CacheMetrics::register(registry).map_err(|e| e.to_string())?;
        metrics
            .read_ahead_limit
            .set(settings.prefetch_concurrency.max(1) as i64);
        Ok(Arc::new(SegmentCache {
            cache,
            io,
            _io_runtime: io_runtime,
            store,
            chunk_bytes,
            read_ahead_chunks: settings.read_ahead_chunks,
            limiter: (settings.rate_bytes_per_sec > 0).then(|| {
                RateLimiter::new(
                    settings.rate_bytes_per_sec,
                    chunk_bytes.max(settings.rate_bytes_per_sec / 10),
                )
            }),
            prefetch: Arc::new(Semaphore::new(settings.prefetch_concurrency.max(1))),
            prefetch_max: settings.prefetch_concurrency.max(1),
            memory_capacity: settings.memory_bytes.max(chunk_bytes as usize) as u64,
            prefetch_limit: AtomicUsize::new(settings.prefetch_concurrency.max(1)),
            metrics,
            disk_capacity,
        }))
    }

    pub fn stats(&self) -> CacheStats {
        let memory = self.cache.memory();
        CacheStats {
            memory_capacity_bytes: memory.capacity() as u64,
            memory_used_bytes: memory.usage() as u64,
            disk_capacity_bytes: self.disk_capacity,
            chunk_bytes: self.chunk_bytes,
            lookups: self.metrics.lookups.get(),
            misses: self.metrics.misses.get(),
            fetched_bytes: self.metrics.fetched_bytes.get(),
            read_ahead_chunks: self.metrics.read_ahead.get(),
        }
    }

    /// Flushes and closes the cache (the disk tier finishes its writes). Call at
    /// shutdown, before the runtime stops.
    pub async fn close(&self) -> Result<(), String> {
        self.cache.close().await.map_err(|e| e.to_string())
    }

    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    fn key(&self, object: &ObjectRef, index: u64) -> ChunkKey {
        ChunkKey {
            object: object.id.as_u128(),
            chunk_bytes: self.chunk_bytes,
            chunk: index,
        }
    }

    fn chunk_range(&self, object: &ObjectRef, index: u64) -> Range<u64> {
        let start = index * self.chunk_bytes;
        start..(start + self.chunk_bytes).min(object.size)
    }

    /// One chunk, from the cache or the store. A chunk in memory is returned at once;
    /// otherwise the lookup (the disk tier) and any GET run on the I/O runtime, and a
    /// reader that goes away leaves the fetch to finish and fill the cache.
    async fn chunk(self: &Arc<Self>, object: &ObjectRef, index: u64) -> Result<Bytes, TierError> {
        // A chunk in memory costs a hash lookup: no hop to the I/O runtime for it.
        if let Some(entry) = self.cache.memory().get(&self.key(object, index)) {
            self.metrics.lookups.inc();
            return Ok(entry.value().clone());
        }
        let this = self.clone();
        let object_key = object.key.clone();
        let task = self.io.spawn({
            let object = object.clone();
            // Created here so that a miss's GET is a child of the read that needed it.
            let span = tracing::Span::current();
            tracing::Instrument::instrument(
                async move { this.chunk_here(&object, index).await },
                span,
            )
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Transient {
                op: "get",
                key: object_key,
                message: format!("the remote read task failed: {e}"),
            }
            .into()),
        }
    }

    async fn chunk_here(
        self: &Arc<Self>,
        object: &ObjectRef,
        index: u64,
    ) -> Result<Bytes, TierError> {
        self.metrics.lookups.inc();
        let key = self.key(object, index);
        let range = self.chunk_range(object, index);
        let this = self.clone();
        let object_key = object.key.clone();
        let span = tracing::trace_span!(target: "strata::trace", "object_store.get",
            otel.kind = "client", object = %object.key, range_start = range.start,
            range_bytes = range.end - range.start);
        let entry = self
            .cache
            .get_or_fetch(&key, move || {
                tracing::Instrument::instrument(fetch_chunk(this, object_key, range), span)
            })
            .await
            .map_err(|e| StoreError::Transient {
                op: "get",
                key: object.key.clone(),
                message: e.to_string(),
            })?;
        Ok(entry.value().clone())
    }

    /// Reads `range` of `object`, from cache where it can, fetching missing chunks in
    /// parallel, then starts read-ahead past the end of the range.
    pub async fn read(
        self: &Arc<Self>,
        object: &ObjectRef,
        range: Range<u64>,
    ) -> Result<Bytes, TierError> {
        let range = range.start.min(object.size)..range.end.min(object.size);
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let first = range.start / self.chunk_bytes;
        let last = (range.end - 1) / self.chunk_bytes;
        let chunks =
            futures::future::try_join_all((first..=last).map(|i| self.chunk(object, i))).await?;
        let budget = self.read_ahead_bytes();
        if budget > 0 {
            self.read_ahead(object, last + 1, budget);
        }
        if chunks.len() == 1 {
            let base = first * self.chunk_bytes;
            let within = (range.start - base) as usize..(range.end - base) as usize;
            // A slice keeps the whole chunk alive, outside the memory tier's budget once
            // the cache evicts it: a small read is copied instead, so a response pins at
            // most four times the bytes it returns.
            if within.len() >= chunks[0].len() / 4 {
                return Ok(chunks[0].slice(within));
            }
            return Ok(Bytes::copy_from_slice(&chunks[0][within]));
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for (i, chunk) in (first..=last).zip(chunks) {
            let base = i * self.chunk_bytes;
            let from = range.start.max(base) - base;
            let to = range.end.min(base + chunk.len() as u64) - base;
            out.extend_from_slice(&chunk[from as usize..to as usize]);
        }
        Ok(out.freeze())
    }

    /// Adapts read-ahead to the broker's load, additive increase, multiplicative
    /// decrease: `late` (the threads serving produce and fetch ran late over the last
    /// period) halves the read-ahead GETs allowed in flight, down to 1; a period on time
    /// allows one more, up to `prefetch_concurrency`. Readers' own misses are never held
    /// back: a replay slows down, it does not stop. Returns the limit now in force.
    pub fn pace(&self, late: bool) -> usize {
        let now = self.prefetch_limit.load(Ordering::Relaxed);
        let next = if late {
            (now / 2).max(1)
        } else {
            (now + 1).min(self.prefetch_max)
        };
        self.prefetch_limit.store(next, Ordering::Relaxed);
        self.metrics.read_ahead_limit.set(next as i64);
        next
    }

    /// Read-ahead GETs allowed in flight now, and at most.
    pub fn read_ahead_limit(&self) -> (usize, usize) {
        (
            self.prefetch_limit.load(Ordering::Relaxed),
            self.prefetch_max,
        )
    }

    /// The read-ahead window of one reader in bytes: `read_ahead_chunks` chunks, but no
    /// more than an eighth of the memory tier (at least one chunk), so that the windows
    /// of several partitions replayed at once fit in memory together instead of evicting
    /// each other's chunks before they are read (each evicted chunk would be a second
    /// GET). 0 when `read_ahead_chunks` is 0: read-ahead is off.
    pub fn read_ahead_bytes(&self) -> u64 {
        if self.read_ahead_chunks == 0 {
            return 0;
        }
        self.read_ahead_chunks
            .saturating_mul(self.chunk_bytes)
            .min(self.memory_capacity / 8)
            .max(self.chunk_bytes)
    }

    /// Runs `task` on the remote-read runtime, detached: work a reader should not wait
    /// for, such as finding the next segments to read ahead into.
    pub fn spawn_background(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.io.spawn(task);
    }

    /// Fetches `budget` bytes of `object` from chunk `from` on in the background, those
    /// not cached yet, while a read-ahead slot is free (read-ahead never queues). Returns
    /// what is left of the budget past the object's end, for the caller to spend on the
    /// objects that follow; 0 if the budget ended inside this object or the slots ran out.
    pub fn read_ahead(self: &Arc<Self>, object: &ObjectRef, from: u64, budget: u64) -> u64 {
        let end = object.size.div_ceil(self.chunk_bytes);
        let mut budget = budget;
        let mut index = from;
        while index < end && budget > 0 {
            let range = self.chunk_range(object, index);
            budget = budget.saturating_sub(range.end - range.start);
            if !self.cache.contains(&self.key(object, index)) {
                let in_flight = self.prefetch_max - self.prefetch.available_permits();
                if in_flight >= self.prefetch_limit.load(Ordering::Relaxed) {
                    return 0;
                }
                let Ok(permit) = self.prefetch.clone().try_acquire_owned() else {
                    return 0;
                };
                self.metrics.read_ahead.inc();
                let this = self.clone();
                let object = object.clone();
                self.io.spawn(async move {
                    let _permit = permit;
                    // Failures are the reader's to see when it asks for the chunk itself.
                    let _ = this.chunk_here(&object, index).await;
                });
            }
            index += 1;
        }
        if index < end { 0 } else { budget }
    }

    /// Drops every cached chunk of `object` (memory and disk), so the next read GETs it
    /// again: a read that found the bytes damaged retries once from the bucket.
    pub fn forget(&self, object: &ObjectRef) {
        for index in 0..object.size.div_ceil(self.chunk_bytes) {
            self.cache.remove(&self.key(object, index));
        }
    }

    /// Whether a chunk of `object` is cached (for tests and statistics).
    pub fn is_cached(&self, object: &ObjectRef, offset_in_object: u64) -> bool {
        self.cache
            .contains(&self.key(object, offset_in_object / self.chunk_bytes))
    }
}
