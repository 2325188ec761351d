//! The broker's side of tiered storage: it builds the object store and segment cache from
//! the configuration, runs the uploader (with remote retention and the stall watchdog)
//! and the orphan scrubber, and gives partitions the reader they use for their remote
//! tier (`crate::partition::remote`). The mechanics (manifests, uploads, cache) are in the `strata-tiering` crate;
//! this module adds what only the broker knows: which segments are sealed and below the
//! high watermark, the record-batch framing, and the topic configs.
//!
//! Offsets: `log start ≤ local log start ≤ high watermark ≤ log end`. Offsets in
//! `[remote log start, local log start)` are read from the bucket; everything at or above
//! the local log start is read from local segments, as before. A local segment is deleted
//! only after the manifest commit that covers it ([`crate::log::Log::apply_retention`]).
//!
//! One module per job: this one builds the store and the cache ([`Tiering`]); `upload`
//! runs the uploader and remote retention; `scrub` removes unreferenced objects and a
//! deleted topic's; `compaction` compacts the remote tier; `repair` replaces damaged
//! objects. Reads (Fetch and ListOffsets below the local log start) are the partition's:
//! `crate::partition::remote`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use strata_tiering::store::{ObjectStoreBackend, RetryPolicy, StoreMetrics, retrying_and_metered};
use strata_tiering::{
    CacheSettings, ManifestSettings, ManifestStore, PartitionId, RemoteLog, RemoteStore,
    SealedSegment, SegmentCache, SpillCache, TierError,
};
use tokio::sync::Semaphore;
use tracing::info;

use crate::config::Config;
use crate::partition::remote::RemoteReader;

mod compaction;
mod pace;
mod repair;
mod scrub;
mod upload;

pub use compaction::{
    RemotePass, RemoteTarget, compact_remote, compact_segments, feed_segment, segment_aborted,
    segment_object,
};
pub use pace::run_read_pacer;
pub use repair::repair_remote;
pub use scrub::{delete_remote, run_scrubber};
pub use upload::{UploadLag, run_uploader, upload_lag};

/// What the tiering loops need from the broker: the narrow handle they get instead of
/// the whole broker (which implements it), so this layer does not import the one above.
pub trait TierHost: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    fn shutdown(&self) -> &tokio_util::sync::CancellationToken;
    fn config(&self) -> &Config;
    fn metrics(&self) -> &crate::telemetry::Metrics;
    fn tiering(&self) -> Option<&Arc<Tiering>>;
    /// Every partition of every open topic.
    fn partitions(&self) -> Vec<Arc<crate::partition::Partition>>;
    fn topic_exists(&self, id: uuid::Uuid) -> bool;
    fn is_controller(&self) -> bool;
}

pub struct Tiering {
    pub store: Arc<dyn RemoteStore>,
    pub manifests: Arc<dyn ManifestStore>,
    pub cache: Arc<SegmentCache>,
    spills: Arc<SpillCache>,
    manifest_settings: ManifestSettings,
    part_bytes: u64,
    upload_slots: Arc<Semaphore>,
    crash_after_upload: Option<u64>,
    uploads: AtomicU64,
    stall_warn_ms: i64,
}

/// The S3 connection settings of `config` (the `s3_*` settings and
/// `object_store_ca_file`), as the brokers and `strata etcd snapshot` use them.
pub fn s3_settings(config: &Config) -> anyhow::Result<strata_tiering::S3Settings> {
    Ok(strata_tiering::S3Settings {
        endpoint: config.s3_endpoint.clone(),
        region: config.s3_region.clone(),
        access_key_id: config.s3_access_key_id.clone(),
        secret_access_key: config.s3_secret_access_key.clone(),
        path_style: config.s3_path_style,
        allow_http: config.s3_allow_http,
        ca_pem: match config.object_store_ca_file.trim() {
            "" => None,
            path => Some(
                std::fs::read(path)
                    .with_context(|| format!("setting `object_store_ca_file`: read {path}"))?,
            ),
        },
    })
}

impl Tiering {
    /// Objects go under `<object_store>/<cluster_id>/`: clusters sharing a bucket (or a
    /// broker pointed at the wrong metadata store, which names another cluster) never
    /// see, let alone scrub, each other's objects.
    pub async fn open(
        config: &Config,
        cluster_id: &str,
        manifests: Arc<dyn ManifestStore>,
        metrics: &crate::telemetry::Metrics,
    ) -> anyhow::Result<Tiering> {
        let location = match config.object_store_url()? {
            strata_tiering::Location::Directory(dir) => {
                strata_tiering::Location::Directory(dir.join(cluster_id))
            }
            strata_tiering::Location::S3 { bucket, prefix } => strata_tiering::Location::S3 {
                bucket,
                prefix: if prefix.is_empty() {
                    cluster_id.to_string()
                } else {
                    format!("{prefix}/{cluster_id}")
                },
            },
        };
        let s3 = s3_settings(config)?;
        let backend: ObjectStoreBackend = strata_tiering::store::open(&location, &s3)
            .map_err(anyhow::Error::msg)
            .context("set up the object store (setting `object_store`)")?;
        Tiering::open_with_backend(config, manifests, metrics, backend).await
    }

    /// [`Tiering::open`] over a store the caller built (tests pass an in-memory one): the
    /// same decorators, cache and settings; `object_store` and the S3 settings are not
    /// read, and objects go at the backend's root (no cluster-id prefix is added).
    /// Object-store metrics go on `metrics.tiering_registry`; every billed request is
    /// also reported to the cost ledger, `metrics.cost`.
    pub async fn open_with_backend(
        config: &Config,
        manifests: Arc<dyn ManifestStore>,
        metrics: &crate::telemetry::Metrics,
        backend: ObjectStoreBackend,
    ) -> anyhow::Result<Tiering> {
        let registry = &metrics.tiering_registry;
        info!(object_store = %backend, "tiered storage object store");
        let store_metrics =
            StoreMetrics::register(registry).context("register object store metrics")?;
        let seed = std::process::id() as u64;
        // Metered under the retries and observed at the backend: every attempt is billed,
        // so every attempt (and every part sent) is counted.
        let store: Arc<dyn RemoteStore> = Arc::new(retrying_and_metered(
            backend.observed_by(metrics.cost.clone()),
            RetryPolicy::default(),
            seed,
            store_metrics,
        ));
        let cache_settings = CacheSettings {
            memory_bytes: config.remote_cache_memory_bytes as usize,
            disk_bytes: config.remote_cache_disk_bytes as usize,
            dir: config.remote_cache_dir(),
            chunk_bytes: config.remote_chunk_bytes as u64,
            read_ahead_chunks: config.remote_read_ahead_chunks as u64,
            rate_bytes_per_sec: config.remote_read_rate_bytes as u64,
            prefetch_concurrency: config.remote_read_ahead_concurrency as usize,
            read_threads: config.remote_read_threads as usize,
        };
        let cache = SegmentCache::open(&cache_settings, store.clone(), registry)
            .await
            .map_err(anyhow::Error::msg)
            .context("open the remote segment cache")?;
        Ok(Tiering {
            store,
            manifests,
            cache,
            spills: Arc::new(SpillCache::new(4096)),
            manifest_settings: ManifestSettings {
                tail_entries: config.remote_manifest_tail_entries as usize,
                fanout: config.remote_manifest_fanout as usize,
            },
            part_bytes: config.remote_upload_part_bytes as u64,
            upload_slots: Arc::new(Semaphore::new(config.remote_upload_concurrency as usize)),
            crash_after_upload: config.crash_after_upload()?,
            uploads: AtomicU64::new(0),
            stall_warn_ms: config.remote_upload_stall_warn_ms,
        })
    }

    /// How partitions read their remote tier: through this broker's segment cache.
    pub fn reader(&self) -> RemoteReader {
        RemoteReader {
            cache: self.cache.clone(),
        }
    }

    /// Loads a partition's manifest root (one metadata-store read: start-up time does not
    /// depend on how much history the bucket holds).
    pub async fn open_remote_log(&self, id: PartitionId) -> Result<Arc<RemoteLog>, TierError> {
        RemoteLog::open(
            id,
            self.store.clone(),
            self.manifests.clone(),
            self.spills.clone(),
            self.manifest_settings,
        )
        .await
        .map(Arc::new)
    }

    /// Builds a partition's remote log from a root already read (`None`: it has none;
    /// see the truth rule on skipping the read in the `strata_tiering` crate docs).
    pub fn remote_log_from(
        &self,
        id: PartitionId,
        loaded: Option<(bytes::Bytes, u64)>,
    ) -> Result<Arc<RemoteLog>, TierError> {
        RemoteLog::from_loaded(
            id,
            self.store.clone(),
            self.manifests.clone(),
            self.spills.clone(),
            self.manifest_settings,
            loaded,
        )
        .map(Arc::new)
    }

    fn crash_point(&self, id: &PartitionId, segment: &SealedSegment) {
        if let Some(crash_at) = self.crash_after_upload {
            let n = self.uploads.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= crash_at {
                tracing::error!(partition = %id, base_offset = segment.base_offset,
                    "fault injection: aborting after an upload, before its manifest commit");
                std::process::abort();
            }
        }
    }
}
