//! The edge to object storage: the [`RemoteStore`] trait (the calls Strata makes, and no
//! others), its implementation over `object_store` (S3 or a local directory), and the
//! decorators that wrap it: [`RetryingStore`], [`MeteredStore`] and [`FaultyStore`].
//!
//! The trait is deliberately narrower than `object_store::ObjectStore`: the IAM policy an
//! operator grants is exactly `s3:PutObject` (simple and multipart), `s3:GetObject`,
//! `s3:DeleteObject`, `s3:AbortMultipartUpload` and `s3:ListBucket` (the scrubber only),
//! and the metrics decorator can count every billed request. [`MeteredStore`] sits under
//! [`RetryingStore`] ([`retrying_and_metered`]), so every attempt is counted. The
//! backend itself ([`ObjectStoreBackend::observed_by`]) reports each billed request as it
//! sends it, by S3 billing class ([`RequestClass`]) and key, to a [`RequestObserver`]:
//! the broker's cost ledger, which charges it to a topic. Being the bottom layer, it sees
//! every attempt and, for a multipart upload, exactly the parts sent before a failure.
//! The HTTP-level retries object_store makes inside one call are not seen.
//!
//! Multipart uploads are one call here (`put_body`): object_store numbers parts by call
//! order, so a single failed part cannot be re-sent through its interface. object_store
//! retries each HTTP request itself; [`RetryingStore`] retries the whole upload (aborting
//! the failed one) when that is not enough.

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use rand::{Rng, SeedableRng};
use tracing::warn;

/// Why an object-store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} does not exist")]
    NotFound(String),
    /// Worth retrying: the network, a 5xx, throttling, a timeout.
    #[error("object store call {op} on {key} failed: {message}")]
    Transient {
        op: &'static str,
        key: String,
        message: String,
    },
    /// Retrying will not help: credentials, permissions, a bad request.
    #[error("object store call {op} on {key} was refused: {message}")]
    Permanent {
        op: &'static str,
        key: String,
        message: String,
    },
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    fn from_object_store(op: &'static str, key: &str, error: object_store::Error) -> StoreError {
        use object_store::Error as E;
        match error {
            // A write cannot miss its object: the bucket is what is missing.
            E::NotFound { .. } if op != "get" && op != "delete" => StoreError::Permanent {
                op,
                key: key.to_string(),
                message: format!(
                    "the bucket does not exist or is not reachable as configured: {error}"
                ),
            },
            E::NotFound { .. } => StoreError::NotFound(key.to_string()),
            E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. } => StoreError::Permanent {
                op,
                key: key.to_string(),
                message: error.to_string(),
            },
            other => StoreError::Transient {
                op,
                key: key.to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// One listed object (the scrubber's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified_ms: i64,
}

/// Bytes to upload, assembled from pieces of files and memory, read part by part so a
/// 1 GiB segment never sits in memory whole. Files are read with `pread` on the blocking
/// pool; an unlinked file stays readable through its open handle.
#[derive(Clone, Default)]
pub struct Body {
    pieces: Vec<Piece>,
    len: u64,
}

#[derive(Clone)]
enum Piece {
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    Bytes(Bytes),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::File { len, .. } => *len,
            Piece::Bytes(b) => b.len() as u64,
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Body({} bytes in {} pieces)",
            self.len,
            self.pieces.len()
        )
    }
}

impl Body {
    pub fn new() -> Body {
        Body::default()
    }

    pub fn push_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if len > 0 {
            self.pieces.push(Piece::File { file, offset, len });
            self.len += len;
        }
    }

    pub fn push_bytes(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len() as u64;
            self.pieces.push(Piece::Bytes(bytes));
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads `range` of the body. Blocking (file reads): call it from the blocking pool.
    pub fn read_blocking(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut piece_start = 0u64;
        for piece in &self.pieces {
            let piece_end = piece_start + piece.len();
            let from = range.start.max(piece_start);
            let to = range.end.min(piece_end);
            if from < to {
                let (a, b) = (from - piece_start, to - piece_start);
                match piece {
                    Piece::File { file, offset, .. } => {
                        let at = out.len();
                        out.resize(at + (b - a) as usize, 0);
                        file.read_exact_at(&mut out[at..], offset + a)?;
                    }
                    Piece::Bytes(bytes) => out.extend_from_slice(&bytes[a as usize..b as usize]),
                }
            }
            piece_start = piece_end;
        }
        Ok(Bytes::from(out))
    }

    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let body = self.clone();
        tokio::task::spawn_blocking(move || body.read_blocking(range))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("read task failed: {e}"))))
    }
}

/// The object-store calls Strata makes. Keys are `/`-separated, relative to the store's
/// root (the bucket and prefix of the `object_store` setting).
#[async_trait::async_trait]
pub trait RemoteStore: Send + Sync + 'static {
    /// Writes a whole object. Objects are never overwritten: every key is unique.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;
    /// Writes `body`, as a multipart upload of `part_bytes` parts when it is larger than
    /// one part. A failed multipart upload is aborted.
    async fn put_body(&self, key: &str, body: &Body, part_bytes: u64) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;
    /// Deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every object under `prefix`. Only the scrubber lists; reads never do.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
}

/// [`RemoteStore`] over an `object_store` implementation. A clone is another handle on
/// the same store.
#[derive(Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    description: String,
    /// Told of each billed request as it is sent: here, under every decorator, each
    /// attempt and each part is seen exactly as the store receives it.
    observer: Option<Arc<dyn RequestObserver>>,
}

impl ObjectStoreBackend {
    pub fn new(inner: Arc<dyn ObjectStore>, description: String) -> ObjectStoreBackend {
        ObjectStoreBackend {
            inner,
            description,
            observer: None,
        }
    }

    /// Also reports every billed request, as it is sent, to `observer` (the broker's cost
    /// ledger): failed ones too (S3 bills them), one per attempt, one per part.
    pub fn observed_by(mut self, observer: Arc<dyn RequestObserver>) -> ObjectStoreBackend {
        self.observer = Some(observer);
        self
    }

    fn report(&self, key: &str, class: RequestClass) {
        if let Some(observer) = &self.observer {
            observer.requests(key, class, 1);
        }
    }

    fn report_read(&self, key: &str, result: &Result<Bytes, StoreError>) {
        if let (Some(observer), Ok(bytes)) = (&self.observer, result) {
            observer.bytes_read(key, bytes.len() as u64);
        }
    }

    /// A store that lives in this process's memory (`object_store`'s `InMemory`), empty:
    /// for tests that need a bucket without a directory or a server.
    pub fn in_memory() -> ObjectStoreBackend {
        ObjectStoreBackend::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://".to_string(),
        )
    }

    fn path(key: &str) -> ObjectPath {
        ObjectPath::from(key)
    }
}

impl fmt::Display for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

#[async_trait::async_trait]
impl RemoteStore for ObjectStoreBackend {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.report(key, RequestClass::Put);
        self.inner
            .put(&Self::path(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_object_store("put", key, e))
    }

    async fn put_body(&self, key: &str, body: &Body, part_bytes: u64) -> Result<(), StoreError> {
        let read_err = |e: std::io::Error| StoreError::Permanent {
            op: "put",
            key: key.to_string(),
            message: format!("cannot read the local file to upload: {e}"),
        };
        if body.len() <= part_bytes {
            let bytes = body.read(0..body.len()).await.map_err(read_err)?;
            return self.put(key, bytes).await;
        }
        let path = Self::path(key);
        // CreateMultipartUpload, each UploadPart and CompleteMultipartUpload: all billed
        // as PUTs, reported as each is sent, so a failed upload counts what it sent.
        self.report(key, RequestClass::Put);
        let mut upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| StoreError::from_object_store("create_multipart", key, e))?;
        let mut start = 0;
        let result = async {
            while start < body.len() {
                let end = (start + part_bytes).min(body.len());
                let bytes = body.read(start..end).await.map_err(read_err)?;
                self.report(key, RequestClass::Put);
                upload
                    .put_part(PutPayload::from(bytes))
                    .await
                    .map_err(|e| StoreError::from_object_store("put_part", key, e))?;
                start = end;
            }
            self.report(key, RequestClass::Put);
            upload
                .complete()
                .await
                .map_err(|e| StoreError::from_object_store("complete_multipart", key, e))
        }
        .await;
        if let Err(error) = result {
            if let Err(abort) = upload.abort().await {
                warn!(key, %abort, "could not abort a failed multipart upload; the bucket's lifecycle rule reclaims it");
            }
            return Err(error);
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.report(key, RequestClass::Get);
        let result = async {
            self.inner
                .get(&Self::path(key))
                .await
                .map_err(|e| StoreError::from_object_store("get", key, e))?
                .bytes()
                .await
                .map_err(|e| StoreError::from_object_store("get", key, e))
        }
        .await;
        self.report_read(key, &result);
        result
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.report(key, RequestClass::Get);
        let result = self
            .inner
            .get_range(&Self::path(key), range)
            .await
            .map_err(|e| StoreError::from_object_store("get", key, e));
        self.report_read(key, &result);
        result
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&Self::path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_object_store("delete", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let prefix_path = Self::path(prefix);
        let prefix_arg = if prefix.is_empty() {
            None
        } else {
            Some(&prefix_path)
        };
        let result: Result<Vec<ObjectInfo>, StoreError> = self
            .inner
            .list(prefix_arg)
            .map_ok(|meta| ObjectInfo {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified_ms: meta.last_modified.timestamp_millis(),
            })
            .try_collect()
            .await
            .map_err(|e| StoreError::from_object_store("list", prefix, e));
        if let Some(observer) = &self.observer {
            observer.lists(prefix, list_pages(&result));
        }
        result
    }
}

/// Backoff for [`RetryingStore`]: exponential from `base` to `max`, full jitter, at most
/// `attempts` tries in all.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Retries transient failures with exponential backoff and full jitter. Permanent
/// failures and `NotFound` are returned at once.
pub struct RetryingStore<S> {
    inner: S,
    policy: RetryPolicy,
    rng: std::sync::Mutex<rand::rngs::StdRng>,
}

impl<S: RemoteStore> RetryingStore<S> {
    /// `seed` makes the jitter reproducible in tests.
    pub fn new(inner: S, policy: RetryPolicy, seed: u64) -> RetryingStore<S> {
        RetryingStore {
            inner,
            policy,
            rng: std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        }
    }

    fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .policy
            .base
            .saturating_mul(1 << attempt.min(16))
            .min(self.policy.max);
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        ceiling.mul_f64(rng.random_range(0.0..=1.0))
    }

    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, StoreError>> + Send,
        T: Send,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(e) if e.is_transient() && attempt + 1 < self.policy.attempts => {
                    let delay = self.delay(attempt);
                    attempt += 1;
                    warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "object store call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }
}

#[async_trait::async_trait]
impl<S: RemoteStore> RemoteStore for RetryingStore<S> {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.retry(|| self.inner.put(key, bytes.clone())).await
    }
    async fn put_body(&self, key: &str, body: &Body, part_bytes: u64) -> Result<(), StoreError> {
        self.retry(|| self.inner.put_body(key, body, part_bytes))
            .await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.retry(|| self.inner.get(key)).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.retry(|| self.inner.get_range(key, range.clone()))
            .await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.retry(|| self.inner.delete(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.retry(|| self.inner.list(prefix)).await
    }
}

/// The decorators as the broker stacks them: retries outside, metrics inside, so that
/// each attempt [`RetryingStore`] makes is counted as S3 bills it (a retried multipart
/// upload is billed its create, parts and complete again).
pub fn retrying_and_metered<S: RemoteStore>(
    inner: S,
    policy: RetryPolicy,
    seed: u64,
    metrics: StoreMetrics,
) -> RetryingStore<MeteredStore<S>> {
    RetryingStore::new(MeteredStore::new(inner, metrics), policy, seed)
}

/// Object-store metrics: requests (as billed: a multipart upload counts its parts), bytes,
/// latency and errors, by operation and, where the key names one, by topic.
#[derive(Clone)]
pub struct StoreMetrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    bytes: IntCounterVec,
    duration: HistogramVec,
}

impl StoreMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<StoreMetrics> {
        let requests = IntCounterVec::new(
            Opts::new(
                "strata_object_store_requests_total",
                "Object-store requests as billed (a multipart upload counts create, each part and complete), by operation and topic.",
            ),
            &["op", "topic"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "strata_object_store_errors_total",
                "Object-store calls that failed (before retries), by operation and topic.",
            ),
            &["op", "topic"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "strata_object_store_bytes_total",
                "Bytes sent (put) and received (get) from the object store, by operation and topic.",
            ),
            &["op", "topic"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "strata_object_store_request_duration_seconds",
                "Latency of object-store calls (a whole multipart upload is one observation).",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["op"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(StoreMetrics {
            requests,
            errors,
            bytes,
            duration,
        })
    }
}

/// How S3 bills a request: PUT, COPY, POST and LIST are one class (and one price), GET,
/// SELECT and HEAD another; DELETE is free and not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    Put,
    Get,
}

impl RequestClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::Put => "put",
            RequestClass::Get => "get",
        }
    }
}

/// Told of every billed request [`ObjectStoreBackend`] sends, with the key (for LIST: the
/// prefix) it was made on, so the broker's cost ledger can charge it to a topic. Called
/// whether the request succeeded or not: S3 bills failed requests too.
pub trait RequestObserver: Send + Sync + 'static {
    /// `count` requests of `class` on `key` (a multipart upload reports its create, each
    /// part and its complete as they are sent, one call each).
    fn requests(&self, key: &str, class: RequestClass, count: u64);
    /// `count` LIST requests (pages of up to 1000 keys) under `prefix`.
    fn lists(&self, prefix: &str, count: u64);
    /// `bytes` read back from `key` (successful GETs).
    fn bytes_read(&self, key: &str, bytes: u64);
}

/// Wraps a store with [`StoreMetrics`].
pub struct MeteredStore<S> {
    inner: S,
    metrics: StoreMetrics,
}

impl<S: RemoteStore> MeteredStore<S> {
    pub fn new(inner: S, metrics: StoreMetrics) -> MeteredStore<S> {
        MeteredStore { inner, metrics }
    }

    async fn observe<T>(
        &self,
        op: &'static str,
        key: &str,
        requests: u64,
        bytes_of: impl FnOnce(&T) -> u64,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let topic = crate::keys::topic_of_key(key).unwrap_or("");
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .requests
            .with_label_values(&[op, topic])
            .inc_by(requests);
        match &result {
            Ok(value) => self
                .metrics
                .bytes
                .with_label_values(&[op, topic])
                .inc_by(bytes_of(value)),
            Err(StoreError::NotFound(_)) => {}
            Err(_) => self.metrics.errors.with_label_values(&[op, topic]).inc(),
        }
        result
    }
}

#[async_trait::async_trait]
impl<S: RemoteStore> RemoteStore for MeteredStore<S> {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        self.observe("put", key, 1, |_| len, self.inner.put(key, bytes))
            .await
    }
    async fn put_body(&self, key: &str, body: &Body, part_bytes: u64) -> Result<(), StoreError> {
        let len = body.len();
        // object_store's S3 multipart upload: CreateMultipartUpload (POST), one UploadPart
        // (PUT) per part, CompleteMultipartUpload (POST); all PUT-class. An upload that
        // fails part-way is still counted whole: a slight over-count, on failures only.
        let (op, requests) = if len <= part_bytes {
            ("put", 1)
        } else {
            ("put_part", len.div_ceil(part_bytes.max(1)) + 2)
        };
        self.observe(
            op,
            key,
            requests,
            |_| len,
            self.inner.put_body(key, body, part_bytes),
        )
        .await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.observe(
            "get",
            key,
            1,
            |b: &Bytes| b.len() as u64,
            self.inner.get(key),
        )
        .await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.observe(
            "get",
            key,
            1,
            |b: &Bytes| b.len() as u64,
            self.inner.get_range(key, range),
        )
        .await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.observe("delete", key, 1, |_| 0, self.inner.delete(key))
            .await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // One LIST request returns up to 1000 keys.
        let result = self.inner.list(prefix).await;
        self.metrics
            .requests
            .with_label_values(&["list", ""])
            .inc_by(list_pages(&result));
        if result.is_err() {
            self.metrics.errors.with_label_values(&["list", ""]).inc();
        }
        result
    }
}

/// The LIST requests a listing took: one per page of up to 1000 keys (one if it failed).
fn list_pages(result: &Result<Vec<ObjectInfo>, StoreError>) -> u64 {
    result
        .as_ref()
        .map_or(1, |v| (v.len() as u64).div_ceil(1000).max(1))
}

/// Switches for [`FaultyStore`], shared with whoever drives the faults (tests).
#[derive(Debug, Default)]
pub struct Faults {
    /// Every call fails with a transient error while set.
    pub unavailable: AtomicBool,
    /// The next N calls fail with a transient error.
    pub fail_next: AtomicU64,
    /// Calls seen, failed or not.
    pub calls: AtomicU64,
}

impl Faults {
    fn check(&self, op: &'static str, key: &str) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let fail_next = self
            .fail_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if fail_next || self.unavailable.load(Ordering::Relaxed) {
            return Err(StoreError::Transient {
                op,
                key: key.to_string(),
                message: "injected fault".into(),
            });
        }
        Ok(())
    }
}

/// Fails calls on demand (see [`Faults`]) before they reach the inner store.
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S: RemoteStore> FaultyStore<S> {
    pub fn new(inner: S, faults: Arc<Faults>) -> FaultyStore<S> {
        FaultyStore { inner, faults }
    }
}

#[async_trait::async_trait]
impl<S: RemoteStore> RemoteStore for FaultyStore<S> {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.faults.check("put", key)?;
        self.inner.put(key, bytes).await
    }
    async fn put_body(&self, key: &str, body: &Body, part_bytes: u64) -> Result<(), StoreError> {
        self.faults.check("put", key)?;
        self.inner.put_body(key, body, part_bytes).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.faults.check("get", key)?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.faults.check("get", key)?;
        self.inner.get_range(key, range).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.faults.check("delete", key)?;
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.faults.check("list", prefix)?;
        self.inner.list(prefix).await
    }
}

#[async_trait::async_trait]
impl<S: RemoteStore + ?Sized> RemoteStore for Arc<S> {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        (**self).put(key, bytes).await
    }
    async fn put_body(&self, key: &str, body: &Body, part_bytes: u64) -> Result<(), StoreError> {
        (**self).put_body(key, body, part_bytes).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        (**self).get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        (**self).get_range(key, range).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        (**self).list(prefix).await
    }
}

/// Where objects go: the `object_store` setting, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Directory(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

/// S3 connection settings. Empty strings fall back to the standard AWS variables
/// (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
/// AWS_SESSION_TOKEN, and web-identity/IRSA or instance credentials).
#[derive(Clone, Default)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style requests (`endpoint/bucket/key`): MinIO and moto want this.
    pub path_style: bool,
    pub allow_http: bool,
    /// PEM CA certificates the endpoint's certificate must chain to (a private MinIO),
    /// besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// The secret key is never printed.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &if self.secret_access_key.is_empty() {
                    ""
                } else {
                    "[hidden]"
                },
            )
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

/// Builds the bare store (no decorators) for `location`.
pub fn open(location: &Location, s3: &S3Settings) -> Result<ObjectStoreBackend, String> {
    match location {
        Location::Directory(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| format!("cannot use {}: {e}", dir.display()))?
                .with_automatic_cleanup(true);
            Ok(ObjectStoreBackend::new(
                Arc::new(store),
                format!("file://{}", dir.display()),
            ))
        }
        Location::S3 { bucket, prefix } => {
            use object_store::aws::AmazonS3Builder;
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if !s3.endpoint.is_empty() {
                builder = builder.with_endpoint(&s3.endpoint);
            }
            if !s3.region.is_empty() {
                builder = builder.with_region(&s3.region);
            }
            if !s3.access_key_id.is_empty() {
                builder = builder.with_access_key_id(&s3.access_key_id);
            }
            if !s3.secret_access_key.is_empty() {
                builder = builder.with_secret_access_key(&s3.secret_access_key);
            }
            if s3.path_style {
                builder = builder.with_virtual_hosted_style_request(false);
            }
            if let Some(pem) = &s3.ca_pem {
                // Replaces the client options from_env read (proxy settings and the like);
                // allow_http is applied again below.
                let mut options = object_store::ClientOptions::new();
                for certificate in object_store::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("object_store_ca_file is not PEM certificates: {e}"))?
                {
                    options = options.with_root_certificate(certificate);
                }
                builder = builder.with_client_options(options);
            }
            if s3.allow_http {
                builder = builder.with_allow_http(true);
            }
            // object_store retries each HTTP request; keep that short so RetryingStore and
            // the uploader, which see the whole operation, decide about long outages.
            builder = builder.with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..Default::default()
            });
            let store = builder
                .build()
                .map_err(|e| format!("cannot configure S3 bucket {bucket}: {e}"))?;
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    store,
                    prefix.as_str(),
                ))
            };
            Ok(ObjectStoreBackend::new(
                store,
                format!("s3://{bucket}/{prefix}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> (tempfile::TempDir, ObjectStoreBackend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(
            &Location::Directory(dir.path().to_path_buf()),
            &S3Settings::default(),
        )
        .expect("open");
        (dir, store)
    }

    #[tokio::test]
    async fn multipart_body_from_files_and_bytes_round_trips() {
        let (dir, store) = local();
        let path = dir.path().join("src.bin");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let file = Arc::new(File::open(&path).expect("open"));
        let mut body = Body::new();
        body.push_file(file, 10, 90_000);
        body.push_bytes(Bytes::from_static(b"tail"));
        store.put_body("a/b/obj", &body, 16_384).await.expect("put");
        let got = store.get("a/b/obj").await.expect("get");
        assert_eq!(got.len(), 90_004);
        assert_eq!(&got[..90_000], &data[10..90_010]);
        assert_eq!(&got[90_000..], b"tail");
        let range = store.get_range("a/b/obj", 5..15).await.expect("range");
        assert_eq!(&range[..], &data[15..25]);
        let listed = store.list("a").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "a/b/obj");
        store.delete("a/b/obj").await.expect("delete");
        store.delete("a/b/obj").await.expect("delete again");
        assert!(matches!(
            store.get("a/b/obj").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn retries_transient_faults_and_gives_up_after_the_budget() {
        let (_dir, store) = local();
        let faults = Arc::new(Faults::default());
        let policy = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let store = RetryingStore::new(FaultyStore::new(store, faults.clone()), policy, 7);
        faults.fail_next.store(2, Ordering::Relaxed);
        store
            .put("k", Bytes::from_static(b"v"))
            .await
            .expect("third try works");
        assert_eq!(faults.calls.load(Ordering::Relaxed), 3);
        faults.unavailable.store(true, Ordering::Relaxed);
        let err = store.get("k").await.expect_err("down");
        assert!(err.is_transient(), "{err}");
        assert_eq!(faults.calls.load(Ordering::Relaxed), 6);
        faults.unavailable.store(false, Ordering::Relaxed);
        // NotFound is not retried.
        assert!(matches!(
            store.get("missing").await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(faults.calls.load(Ordering::Relaxed), 7);
    }

    #[tokio::test]
    async fn metered_store_counts_billed_requests() {
        let (_dir, store) = local();
        let registry = Registry::new();
        let metrics = StoreMetrics::register(&registry).expect("register");
        let store = MeteredStore::new(store, metrics.clone());
        let mut body = Body::new();
        body.push_bytes(Bytes::from(vec![7u8; 10_000]));
        let key = "topics/orders.00000000-0000-0000-0000-000000000000/0/x.segment";
        store.put_body(key, &body, 4_000).await.expect("put");
        // 3 parts + create + complete.
        assert_eq!(
            metrics
                .requests
                .with_label_values(&["put_part", "orders"])
                .get(),
            5
        );
        store.get_range(key, 0..100).await.expect("get");
        assert_eq!(
            metrics.bytes.with_label_values(&["get", "orders"]).get(),
            100
        );
    }

    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<(String, &'static str, u64)>>);

    impl RequestObserver for Recorded {
        fn requests(&self, key: &str, class: RequestClass, count: u64) {
            self.0
                .lock()
                .expect("lock")
                .push((key.into(), class.as_str(), count));
        }
        fn lists(&self, prefix: &str, count: u64) {
            self.0
                .lock()
                .expect("lock")
                .push((prefix.into(), "list", count));
        }
        fn bytes_read(&self, key: &str, bytes: u64) {
            self.0
                .lock()
                .expect("lock")
                .push((key.into(), "read", bytes));
        }
    }

    #[tokio::test]
    async fn the_observer_sees_every_billed_request_by_class() {
        let (_dir, store) = local();
        let seen = Arc::new(Recorded::default());
        let store = store.observed_by(seen.clone());
        let mut body = Body::new();
        body.push_bytes(Bytes::from(vec![7u8; 10_000]));
        store
            .put_body("a/x", &body, 4_000)
            .await
            .expect("multipart");
        store
            .put("a/y", Bytes::from_static(b"small"))
            .await
            .expect("put");
        store.get_range("a/x", 0..10).await.expect("range");
        store.get("a/y").await.expect("get");
        assert!(store.get("a/missing").await.is_err());
        store.delete("a/y").await.expect("delete");
        store.list("a/").await.expect("list");
        let seen = seen.0.lock().expect("lock").clone();
        let expected: Vec<(String, &str, u64)> = vec![
            ("a/x".into(), "put", 1), // create,
            ("a/x".into(), "put", 1), // 3 parts,
            ("a/x".into(), "put", 1),
            ("a/x".into(), "put", 1),
            ("a/x".into(), "put", 1), // complete
            ("a/y".into(), "put", 1),
            ("a/x".into(), "get", 1),
            ("a/x".into(), "read", 10),
            ("a/y".into(), "get", 1),
            ("a/y".into(), "read", 5),
            ("a/missing".into(), "get", 1), // billed though it failed; nothing read
            ("a/".into(), "list", 1),       // the DELETE is free: not reported
        ];
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn every_retried_attempt_is_metered_as_billed() {
        let (_dir, store) = local();
        let faults = Arc::new(Faults::default());
        let registry = Registry::new();
        let metrics = StoreMetrics::register(&registry).expect("register");
        let policy = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let store = retrying_and_metered(
            FaultyStore::new(store, faults.clone()),
            policy,
            7,
            metrics.clone(),
        );
        // Two attempts fail before the third succeeds: three multipart uploads billed.
        faults.fail_next.store(2, Ordering::Relaxed);
        let mut body = Body::new();
        body.push_bytes(Bytes::from(vec![7u8; 10_000]));
        let key = "topics/orders.00000000-0000-0000-0000-000000000001/0/x.segment";
        store
            .put_body(key, &body, 4_000)
            .await
            .expect("multipart after retries");
        faults.fail_next.store(1, Ordering::Relaxed);
        store.get(key).await.expect("get after a retry");
        assert_eq!(faults.calls.load(Ordering::Relaxed), 5);
        let requests = |op| metrics.requests.with_label_values(&[op, "orders"]).get();
        assert_eq!(requests("put_part"), 3 * 5);
        assert_eq!(requests("get"), 2);
        assert_eq!(
            metrics
                .errors
                .with_label_values(&["put_part", "orders"])
                .get(),
            2
        );
    }
}
