//! The appender: one per broker. Produce to a diskless partition validates the records
//! as the replicated path does, then queues them here. The appender collects batches of
//! every diskless partition, writes them as ONE shared object, then commits their
//! offsets in the metadata store and answers every waiting produce.
//!
//! When a flush starts: once `diskless_append_bytes` wait, or batches the previous flush
//! held back (its byte or per-partition producer cap, see [`Queue::take_flush`]), or else
//! once `diskless_append_interval_ms` has passed since the previous flush started and
//! [`GATHER`] since the first batch waiting came. So flushes start at most once per
//! interval (the PUT and metadata-write rate stays bounded by brokers / interval) and, under
//! steady load, every interval on a fixed cadence; a produce to an idle appender waits
//! only [`GATHER`]. Timing each flush from its own first batch instead made a client
//! with 5 requests in flight (Java, idempotent librdkafka), whose requests come right
//! after the previous answers, wait the whole interval every time, plus the PUT and
//! commit of the flush before (bench/diskless.py: mean wait 250 ms of 250).
//!
//! Order of a flush (see the truth rules in `super`):
//! 1. Plan each partition against this broker's view: batches the view shows to be
//!    retries are answered with their first offsets, refused ones (fenced epoch, sequence
//!    gap; checked again against the store first) with their error; neither is stored.
//! 2. PUT the object (`diskless/<yyyymmddhh>/<node_id>-<uuid>.batches`, through the
//!    tiering store, which retries). A failure answers KAFKA_STORAGE_ERROR and commits
//!    nothing: the producer retries, nothing was assigned.
//! 3. Commit: per partition, plan against the current state and compare-and-swap its
//!    head (one transaction per at most 40 partitions; a flush takes per partition only
//!    as many producers as one transaction records, see [`Queue::take_flush`]). A
//!    partition whose head moved (another broker appended) is re-read and re-planned; a
//!    retry committed meanwhile through another broker is then a duplicate, and the run
//!    skips its bytes. A partition whose head is gone on the re-read was deleted: it is
//!    answered UNKNOWN_TOPIC_OR_PARTITION, never created again. Past half of
//!    `diskless_scrub_grace_ms` after the PUT the commit gives up (retriable).
//! 4. Answer, each partition by its own outcome. A metadata-store failure answers a
//!    retriable error for the partitions it may have touched: the commit may or may not
//!    have happened, and an idempotent producer's retry is recognised either way.
//!
//! Flushes run one at a time, so one broker's commits to a partition keep the order in
//! which their produce requests arrived.
//!
//! Transaction markers ([`Appender::append_marker`], for the coordinator) take the same
//! path as one-batch items; they skip the produce backpressure (pending runs, queue
//! bytes), since a marker ends a transaction and is a few dozen bytes. Both plans (the
//! view's in step 1, the store's in step 3) apply the same transaction rules
//! ([`super::state::plan`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::metrics::DisklessMetrics;
use super::read::WriteCache;
use super::state::{
    BatchKind, MAX_OPEN_TRANSACTIONS, ObjectInfo, Outcome, PartitionKey, PendingBatch, Plan, plan,
};
use super::store::{AppendOutcome, AppendWrite};
use super::view::DisklessView;
use crate::log::format::{self, BatchHeader};
use crate::log::txn::{Marker, MarkerRequest};
use crate::partition::PartitionError;
use crate::sys::Clock;
use crate::topic_config::TopicConfig;
pub use error::AppendError;
use error::{partition_code, refusal, too_many_transactions};

/// Commit attempts of one flush before its partitions are answered with a retriable
/// error (each failed attempt means another broker appended to the partition meanwhile).
const COMMIT_ATTEMPTS: usize = 20;

/// How long re-reading a flush's partitions may take, all of them together.
const REFRESH_WITHIN: Duration = Duration::from_secs(5);

/// How long the first batch waiting for a flush waits at least (or the interval, if it
/// is shorter): requests a client sent together (pipelined, or one per partition) reach
/// the queue a few hundred microseconds apart and share the object.
const GATHER: Duration = Duration::from_millis(5);

/// What a produce to a diskless partition is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub base_offset: i64,
    /// -1 unless the topic stamps LogAppendTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    /// Records appended (0 for a retry of a stored batch).
    pub records: i64,
}

pub type AckReceiver = oneshot::Receiver<Result<Ack, AppendError>>;

struct Queued {
    key: PartitionKey,
    topic: Arc<str>,
    /// Batches with base offset and partition leader epoch 0, as stored.
    batches: Vec<(BatchHeader, Bytes)>,
    log_append_time: i64,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Ack, AppendError>>,
    /// acks=0: nobody waits for the answer, and the append goes on all the same.
    detached: bool,
    /// The producer whose transactional batches were verified with its coordinator, and
    /// its marker offset the view showed before (see [`BatchKind::Transactional`]).
    /// Another producer's batches in the same request count as unverified.
    verified: Option<(i64, i64)>,
    /// A transaction marker: then its only batch is the control batch.
    marker: Option<Marker>,
}

impl Queued {
    fn bytes(&self) -> u64 {
        self.batches.iter().map(|(_, b)| b.len() as u64).sum()
    }

    fn kind(&self, header: &BatchHeader) -> BatchKind {
        match self.marker {
            Some(marker) => BatchKind::Marker(marker),
            None if header.is_transactional() => BatchKind::Transactional {
                verified: self
                    .verified
                    .filter(|&(producer_id, _)| producer_id == header.producer_id)
                    .map(|(_, marker)| marker),
            },
            None => BatchKind::Data,
        }
    }
}

#[derive(Default)]
struct Queue {
    items: Vec<Queued>,
    bytes: u64,
    /// When the first item waiting came.
    since: Option<Instant>,
    /// The last flush left items behind (its byte or producer cap): the next starts at
    /// once. Decided under the lock, so a produce queued during a flush never counts.
    held_back: bool,
    /// Set by the final drain at shutdown: nothing is queued after it.
    closed: bool,
}

/// Metadata operations (puts and deletes) one partition's commit may take: its head, a
/// run, the expired producers it deletes and one entry per producer it writes, with room
/// for the runs a commit-time re-plan may split (see [`super::state::Plan::runs`]).
/// Under etcd's 128 operations per transaction.
const PARTITION_OPS: usize = super::store::ETCD_TXN_PUTS - 8;

impl Queue {
    /// Takes the next flush, in queue order: items up to `flush_bytes` (at least one),
    /// and per partition only as many producers as one metadata transaction can record
    /// ([`PARTITION_OPS`]). Once an item of a partition is held for the next flush, so
    /// are the later ones, which keeps each partition's order.
    fn take_flush(&mut self, flush_bytes: u64) -> Vec<Queued> {
        let mut taken = Vec::new();
        let mut held = Vec::new();
        let mut bytes = 0;
        let mut producers: BTreeMap<PartitionKey, std::collections::BTreeSet<i64>> =
            BTreeMap::new();
        let mut held_keys = std::collections::BTreeSet::new();
        for item in std::mem::take(&mut self.items) {
            if !item.detached && item.reply.is_closed() {
                // Its producer timed out or went away: nobody to answer, and its retry
                // (if any) is queued as its own request.
                continue;
            }
            let full = !taken.is_empty() && bytes + item.bytes() > flush_bytes;
            if full || held_keys.contains(&item.key) {
                held_keys.insert(item.key);
                held.push(item);
                continue;
            }
            let known = producers.entry(item.key).or_default();
            let new: std::collections::BTreeSet<i64> = item
                .batches
                .iter()
                .map(|(h, _)| h.producer_id)
                .filter(|id| *id >= 0 && !known.contains(id))
                .collect();
            let ops = 2 + super::state::EXPIRE_PER_COMMIT + known.len() + new.len();
            if ops > PARTITION_OPS && !known.is_empty() {
                held_keys.insert(item.key);
                held.push(item);
                continue;
            }
            known.extend(new);
            bytes += item.bytes();
            taken.push(item);
        }
        self.bytes = held.iter().map(Queued::bytes).sum();
        self.since = held.iter().map(|i| i.queued_at).min();
        self.held_back = !held.is_empty();
        self.items = held;
        taken
    }
}

pub struct Appender {
    /// A std mutex: held only to push or take, never across an await.
    queue: Mutex<Queue>,
    wake: Notify,
    view: Arc<DisklessView>,
    objects: Arc<dyn strata_tiering::RemoteStore>,
    cache: Arc<WriteCache>,
    metrics: Arc<DisklessMetrics>,
    clock: Arc<dyn Clock>,
    node_id: i32,
    interval: Duration,
    flush_bytes: u64,
    queue_bytes: u64,
    max_pending_runs: u32,
    producer_expiration_ms: i64,
    /// How long after its PUT a flush may still commit: half of
    /// `diskless_scrub_grace_ms`, so the scrubber never deletes an object a commit is
    /// about to reference.
    commit_within: Duration,
    /// Which topics the objects this broker wrote hold, for the cost ledger.
    pub shares: super::shares::ObjectShares,
}

impl Appender {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &crate::config::Config,
        view: Arc<DisklessView>,
        objects: Arc<dyn strata_tiering::RemoteStore>,
        cache: Arc<WriteCache>,
        metrics: Arc<DisklessMetrics>,
        clock: Arc<dyn Clock>,
    ) -> Appender {
        Appender {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            view,
            objects,
            cache,
            metrics,
            clock,
            node_id: config.node_id,
            interval: Duration::from_millis(config.diskless_append_interval_ms.max(1) as u64),
            flush_bytes: config.diskless_append_bytes.max(1) as u64,
            queue_bytes: config.diskless_append_queue_bytes.max(1) as u64,
            max_pending_runs: u32::try_from(config.diskless_max_pending_runs).unwrap_or(u32::MAX),
            producer_expiration_ms: config.producer_id_expiration_ms,
            commit_within: Duration::from_millis(config.diskless_scrub_grace_ms.max(0) as u64 / 2),
            shares: Default::default(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates one partition's records of a produce request and queues them; the
    /// receiver gets the answer once they are committed (or refused). Transactional
    /// batches only join a transaction open in the partition (see
    /// [`Appender::enqueue_verified`]).
    pub async fn enqueue(
        &self,
        key: PartitionKey,
        topic: &str,
        config: &TopicConfig,
        records: &[u8],
    ) -> Result<AckReceiver, AppendError> {
        self.enqueue_item(key, topic, config, records, false, None)
            .await
    }

    /// [`Appender::enqueue`] of records whose transactional batches of producer
    /// `verified.0` were verified with its coordinator (the partition is in the
    /// producer's transaction) after this broker's view showed its last marker here at
    /// `verified.1` ([`super::PartitionState::marker_of`]): they may open the
    /// transaction in the partition, unless a marker of the producer is committed first.
    pub async fn enqueue_verified(
        &self,
        key: PartitionKey,
        topic: &str,
        config: &TopicConfig,
        records: &[u8],
        verified: (i64, i64),
    ) -> Result<AckReceiver, AppendError> {
        self.enqueue_item(key, topic, config, records, false, Some(verified))
            .await
    }

    /// Appends a transaction marker for the coordinator and waits for its commit, at most
    /// `within`: its offset.
    pub async fn append_marker(
        &self,
        key: PartitionKey,
        topic: &str,
        config: &TopicConfig,
        request: MarkerRequest,
        within: Duration,
    ) -> Result<i64, AppendError> {
        let answer = self.enqueue_marker(key, topic, config, request)?;
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(result)) => result.map(|ack| ack.base_offset),
            // The appender dropped it unanswered: only when it stops.
            Ok(Err(_)) => Err(AppendError::ShuttingDown),
            Err(_) => Err(AppendError::TimedOut(within.as_millis() as u64)),
        }
    }

    /// Queues a transaction marker (a control batch of one record) for the coordinator;
    /// the receiver gets its offset once committed. Not held back by
    /// `diskless_max_pending_runs` or `diskless_append_queue_bytes`: a marker ends a
    /// transaction (and so lets merging past it) and is a few dozen bytes.
    pub fn enqueue_marker(
        &self,
        key: PartitionKey,
        topic: &str,
        config: &TopicConfig,
        request: MarkerRequest,
    ) -> Result<AckReceiver, AppendError> {
        let now = self.clock.now_ms();
        let batch = crate::log::txn::encode_marker(
            request.producer_id,
            request.producer_epoch,
            request.marker,
            request.coordinator_epoch,
            now,
        );
        let mut bytes = BytesMut::from(&batch[..]);
        let log_append_time = if config.log_config().log_append_time {
            format::set_log_append_time(&mut bytes, now);
            now
        } else {
            -1
        };
        let header = format::parse_validated_header(&bytes);
        let (reply, answer) = oneshot::channel();
        let item = Queued {
            key,
            topic: Arc::from(topic),
            batches: vec![(header, bytes.freeze())],
            log_append_time,
            queued_at: Instant::now(),
            reply,
            detached: false,
            verified: None,
            marker: Some(request.marker),
        };
        self.push(item, false)?;
        Ok(answer)
    }

    /// [`Appender::enqueue`] for acks=0: appended even though nobody waits for it (a
    /// waited-for item whose waiter is gone, timed out or disconnected, is dropped
    /// before the PUT instead).
    pub async fn enqueue_detached(
        &self,
        key: PartitionKey,
        topic: &str,
        config: &TopicConfig,
        records: &[u8],
    ) -> Result<(), AppendError> {
        self.enqueue_item(key, topic, config, records, true, None)
            .await
            .map(drop)
    }

    async fn enqueue_item(
        &self,
        key: PartitionKey,
        topic: &str,
        config: &TopicConfig,
        records: &[u8],
        detached: bool,
        verified: Option<(i64, i64)>,
    ) -> Result<AckReceiver, AppendError> {
        let state = self.view.get(&key);
        let runs = state.head.runs;
        if runs >= self.max_pending_runs {
            return Err(AppendError::Backpressure { key, runs });
        }
        let now = self.clock.now_ms();
        let log_config = config.log_config();
        let rules = log_config.produce_rules(now);
        let prepared =
            crate::partition::prepare_off_the_workers(records, rules, log_config.recompression)
                .await
                .map_err(|e: PartitionError| {
                    AppendError::Batch(e.to_string(), partition_code(&e))
                })?;
        let log_append_time = if log_config.log_append_time { now } else { -1 };
        let mut batches = Vec::new();
        for batch in prepared.batches() {
            let mut bytes = BytesMut::from(batch);
            format::patch_batch(&mut bytes, 0, 0);
            if log_append_time >= 0 {
                format::set_log_append_time(&mut bytes, log_append_time);
            }
            let header = format::parse_validated_header(&bytes);
            // Refused early when the view shows the cap reached (the commit checks again).
            if header.is_transactional()
                && !state.head.open.contains_key(&header.producer_id)
                && state.head.open.len() >= MAX_OPEN_TRANSACTIONS
            {
                return Err(too_many_transactions(key));
            }
            batches.push((header, bytes.freeze()));
        }
        let (reply, answer) = oneshot::channel();
        let item = Queued {
            key,
            topic: Arc::from(topic),
            batches,
            log_append_time,
            queued_at: Instant::now(),
            reply,
            detached,
            verified,
            marker: None,
        };
        self.push(item, true)?;
        Ok(answer)
    }

    /// Queues `item` (`bounded`: refused past `diskless_append_queue_bytes`).
    fn push(&self, item: Queued, bounded: bool) -> Result<(), AppendError> {
        let mut queue = self.queue();
        if queue.closed {
            return Err(AppendError::ShuttingDown);
        }
        if bounded && queue.bytes > 0 && queue.bytes + item.bytes() > self.queue_bytes {
            return Err(AppendError::QueueFull {
                queued: queue.bytes,
            });
        }
        queue.bytes += item.bytes();
        queue.since.get_or_insert(item.queued_at);
        queue.items.push(item);
        drop(queue);
        self.wake.notify_one();
        Ok(())
    }

    /// Flushes until `cancel`, then flushes what is queued and stops.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        // When the last flush started: the next starts an interval later at the soonest.
        let mut last_flush: Option<Instant> = None;
        loop {
            let (due, since) = {
                let queue = self.queue();
                (
                    queue.bytes >= self.flush_bytes || queue.held_back,
                    queue.since,
                )
            };
            let take = match since {
                None => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.wake.notified() => {}
                    }
                    false
                }
                Some(_) if due => true,
                Some(since) => {
                    let gathered = since + GATHER.min(self.interval);
                    let deadline =
                        last_flush.map_or(gathered, |last| gathered.max(last + self.interval));
                    let deadline = tokio::time::Instant::from_std(deadline);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep_until(deadline) => true,
                        _ = self.wake.notified() => false,
                    }
                }
            };
            if take {
                let items = self.queue().take_flush(self.flush_bytes);
                if !items.is_empty() {
                    last_flush = Some(Instant::now());
                    self.flush(items).await;
                }
            }
        }
        // Closed first: a produce queued after this is refused, never left unanswered.
        self.queue().closed = true;
        loop {
            let items = self.queue().take_flush(self.flush_bytes);
            if items.is_empty() {
                break;
            }
            self.flush(items).await;
        }
    }

    async fn flush(&self, items: Vec<Queued>) {
        let started = Instant::now();
        for item in &items {
            self.metrics
                .append_wait
                .with_label_values(&[&item.topic])
                .observe(started.duration_since(item.queued_at).as_secs_f64());
        }
        // Partition by partition, in queue order within each.
        let mut by_partition: BTreeMap<PartitionKey, Vec<Queued>> = BTreeMap::new();
        for item in items {
            by_partition.entry(item.key).or_default().push(item);
        }
        let mut kept: BTreeMap<PartitionKey, Vec<Queued>> = BTreeMap::new();
        for (key, items) in by_partition {
            let items = self.settle_early(key, items).await;
            if !items.is_empty() {
                kept.insert(key, items);
            }
        }
        if kept.is_empty() {
            return;
        }
        // The object: every kept batch, partition by partition.
        let mut object = BytesMut::new();
        let mut pending: BTreeMap<PartitionKey, Vec<PendingBatch>> = BTreeMap::new();
        let mut topic_bytes: BTreeMap<Arc<str>, u64> = BTreeMap::new();
        for (key, items) in &kept {
            let batches = pending.entry(*key).or_default();
            for item in items {
                for (header, bytes) in &item.batches {
                    batches.push(PendingBatch {
                        kind: item.kind(header),
                        producer_id: header.producer_id,
                        epoch: header.producer_epoch,
                        first_sequence: header.base_sequence,
                        records: header.record_count.max(1),
                        max_ts: if item.log_append_time >= 0 {
                            item.log_append_time
                        } else {
                            header.max_timestamp
                        },
                        pos: object.len() as u64,
                        len: bytes.len() as u64,
                    });
                    object.extend_from_slice(bytes);
                }
                *topic_bytes.entry(item.topic.clone()).or_default() += item.bytes();
            }
        }
        let object = object.freeze();
        let now = self.clock.now_ms();
        let info = ObjectInfo {
            key: object_key(self.node_id, now),
            size: object.len() as u64,
            broker: self.node_id,
            now_ms: now,
        };
        self.shares.record(&info.key, &topic_bytes);
        let put_started = Instant::now();
        let put = self.objects.put(&info.key, object.clone()).await;
        let put_seconds = put_started.elapsed().as_secs_f64();
        for (topic, bytes) in &topic_bytes {
            let labels = [topic.as_ref()];
            self.metrics
                .append_put
                .with_label_values(&labels)
                .observe(put_seconds);
            if put.is_ok() {
                self.metrics.objects.with_label_values(&labels).inc();
                self.metrics
                    .object_bytes
                    .with_label_values(&labels)
                    .observe(*bytes as f64);
            }
        }
        if let Err(e) = put {
            warn!(key = %info.key, error = %e, "diskless append: object PUT failed; nothing committed");
            let error = AppendError::ObjectStore(e.to_string());
            for item in kept.into_values().flatten() {
                let _ = item.reply.send(Err(error.clone()));
            }
            return;
        }
        self.cache.insert(&info.key, object);
        let commit_started = Instant::now();
        self.commit(kept, pending, &info, commit_started + self.commit_within)
            .await;
        let commit_seconds = commit_started.elapsed().as_secs_f64();
        for topic in topic_bytes.keys() {
            self.metrics
                .append_commit
                .with_label_values(&[topic.as_ref()])
                .observe(commit_seconds);
        }
        debug!(key = %info.key, bytes = info.size, elapsed_ms = started.elapsed().as_millis() as u64, "diskless append flushed");
    }

    /// Answers the items the view shows to be retries or refused (a refusal only after
    /// re-reading the partition from the store: the view may lag another broker's
    /// commit); returns the rest, which go into the object. Each item is planned after
    /// the items kept before it, as the commit will store them: a producer's second
    /// request of the flush follows its first, not the last sequence stored.
    async fn settle_early(&self, key: PartitionKey, items: Vec<Queued>) -> Vec<Queued> {
        let mut state = self.view.get(&key);
        let mut refreshed = false;
        let mut kept: Vec<Queued> = Vec::with_capacity(items.len());
        for item in items {
            let mut first = first_outcome(&state, &kept, &item);
            if matches!(first, Some(Outcome::Refused(_))) && !refreshed {
                refreshed = true;
                match self.view.refresh(&key).await {
                    Ok(fresh) => {
                        state = fresh;
                        first = first_outcome(&state, &kept, &item);
                    }
                    Err(e) => {
                        // The refusal may be the view's lag: a retriable answer, never a
                        // fatal one taken from a state that could not be checked.
                        warn!(partition = %key, error = %e, "cannot re-read a diskless partition");
                        let _ = item.reply.send(Err(AppendError::MetadataStore(format!(
                            "cannot re-read partition {key} to check the producer's sequence: {e}"
                        ))));
                        continue;
                    }
                }
            }
            match first {
                Some(Outcome::Duplicate { base_offset }) => {
                    let _ = item.reply.send(Ok(Ack {
                        base_offset,
                        log_append_time: item.log_append_time,
                        log_start_offset: state.head.log_start,
                        records: 0,
                    }));
                }
                Some(Outcome::Refused(kind)) => {
                    let error = refusal(&item, kind);
                    let _ = item.reply.send(Err(error));
                }
                _ => kept.push(item),
            }
        }
        kept
    }

    async fn commit(
        &self,
        mut items: BTreeMap<PartitionKey, Vec<Queued>>,
        pending: BTreeMap<PartitionKey, Vec<PendingBatch>>,
        info: &ObjectInfo,
        deadline: Instant,
    ) {
        let store = self.view.store().clone();
        // The head version each partition was first planned from: a partition that had a
        // head and has none on a re-read was deleted meanwhile, and is not created again.
        let mut first_seen: BTreeMap<PartitionKey, u64> = BTreeMap::new();
        for attempt in 0..COMMIT_ATTEMPTS {
            // The first attempt follows the PUT at once; a later one, after conflicts or
            // re-reads, may come too late.
            if attempt > 0 && Instant::now() >= deadline {
                // Past half the scrubber's grace since the PUT: a commit now could
                // reference an object the scrubber is about to delete.
                let error = AppendError::MetadataStore(
                    "the commit took longer than half of diskless_scrub_grace_ms after the object was written; nothing was committed".into(),
                );
                for item in items.into_values().flatten() {
                    let _ = item.reply.send(Err(error.clone()));
                }
                return;
            }
            let mut plans: BTreeMap<PartitionKey, (Arc<super::PartitionState>, Plan)> =
                BTreeMap::new();
            let mut writes = Vec::new();
            let keys: Vec<PartitionKey> = items.keys().copied().collect();
            for key in &keys {
                let state = self.view.get(key);
                let seen = *first_seen.entry(*key).or_insert(state.head_version);
                // A deleted topic's partition (the view forgets it, so its version reads
                // 0 again) is never created anew.
                if (seen > 0 && state.head_version == 0) || self.view.is_removed(key.topic_id) {
                    let error = AppendError::Deleted(*key);
                    for item in items.remove(key).into_iter().flatten() {
                        let _ = item.reply.send(Err(error.clone()));
                    }
                    continue;
                }
                let batches = pending.get(key).map_or(&[][..], Vec::as_slice);
                let plan = plan(&state, batches, info);
                // Every batch a retry of one committed meanwhile: nothing to write.
                if plan
                    .outcomes
                    .iter()
                    .all(|o| matches!(o, Outcome::Duplicate { .. }))
                {
                    if let Some(items) = items.remove(key) {
                        answer(items, &plan, state.head.log_start);
                    }
                    continue;
                }
                let expire: Vec<i64> = state
                    .expired_producers(info.now_ms, self.producer_expiration_ms)
                    .into_iter()
                    .filter(|id| !plan.producers.contains_key(id))
                    .collect();
                writes.push(AppendWrite {
                    key: *key,
                    expected: state.head_version,
                    head: plan.head.clone(),
                    runs: plan.runs.clone(),
                    producers: plan
                        .producers
                        .iter()
                        .map(|(id, e)| (*id, e.clone()))
                        .collect(),
                    expire,
                });
                plans.insert(*key, (state, plan));
            }
            if writes.is_empty() {
                return;
            }
            let outcome = match store.append_versioned(&writes).await {
                Ok(outcome) => outcome,
                Err(e) => AppendOutcome {
                    failed: writes.iter().map(|w| (w.key, e.clone())).collect(),
                    ..AppendOutcome::default()
                },
            };
            let expired: BTreeMap<PartitionKey, Vec<i64>> =
                writes.into_iter().map(|w| (w.key, w.expire)).collect();
            for (key, version) in outcome.versions {
                let (Some(items), Some((state, plan))) = (items.remove(&key), plans.remove(&key))
                else {
                    continue;
                };
                let mut next = (*state).clone();
                next.apply(&plan, version);
                for id in expired.get(&key).into_iter().flatten() {
                    next.producers.remove(id);
                }
                let log_start = next.head.log_start;
                self.view.install(key, next);
                answer(items, &plan, log_start);
            }
            if !outcome.failed.is_empty() {
                // Each failed partition is answered alone; the others went on above.
                let mut unknown = Vec::new();
                for (key, e) in &outcome.failed {
                    warn!(partition = %key, error = %e, "diskless append: commit failed; answering a retriable error");
                    let error = AppendError::MetadataStore(e.to_string());
                    for item in items.remove(key).into_iter().flatten() {
                        let _ = item.reply.send(Err(error.clone()));
                    }
                    unknown.push(*key);
                }
                self.refresh_all(&unknown, deadline).await;
            }
            if outcome.conflicts.is_empty() {
                break;
            }
            for key in &outcome.conflicts {
                if let Some(item) = items.get(key).and_then(|i| i.first()) {
                    self.metrics
                        .commit_conflicts
                        .with_label_values(&[item.topic.as_ref()])
                        .inc();
                }
            }
            self.refresh_all(&outcome.conflicts, deadline).await;
            items.retain(|key, _| outcome.conflicts.contains(key));
        }
        if items.is_empty() {
            return;
        }
        let error = AppendError::MetadataStore(format!(
            "{COMMIT_ATTEMPTS} commit attempts lost to other brokers' appends"
        ));
        for item in items.into_values().flatten() {
            let _ = item.reply.send(Err(error.clone()));
        }
    }

    /// Re-reads `keys` from the store, all at once, giving up at `deadline` (etcd
    /// unreachable must not stall the appender for a timeout per partition). A
    /// partition not re-read keeps its stale state: its next commit's compare fails and
    /// it is read again then.
    async fn refresh_all(&self, keys: &[PartitionKey], deadline: Instant) {
        let reads = futures::future::join_all(keys.iter().map(|key| async move {
            if let Err(e) = self.view.refresh(key).await {
                warn!(partition = %key, error = %e, "cannot re-read a diskless partition");
            }
        }));
        let limit = tokio::time::Instant::from_std(deadline.min(Instant::now() + REFRESH_WITHIN));
        if tokio::time::timeout_at(limit, reads).await.is_err() {
            warn!(
                partitions = keys.len(),
                "diskless append: re-reading partitions timed out"
            );
        }
    }
}

/// The outcome of `item`'s first batch planned against `state` after the batches of
/// `before` (items of the same partition kept earlier in the flush).
fn first_outcome(
    state: &super::PartitionState,
    before: &[Queued],
    item: &Queued,
) -> Option<Outcome> {
    let skip: usize = before.iter().map(|i| i.batches.len()).sum();
    plan_items(state, before.iter().chain(std::iter::once(item)))
        .outcomes
        .get(skip)
        .copied()
}

/// The plan of `items`' batches against `state` (positions are irrelevant here).
fn plan_items<'a>(state: &super::PartitionState, items: impl Iterator<Item = &'a Queued>) -> Plan {
    let batches: Vec<PendingBatch> = items
        .flat_map(|item| {
            item.batches.iter().map(|(header, bytes)| PendingBatch {
                kind: item.kind(header),
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                first_sequence: header.base_sequence,
                records: header.record_count.max(1),
                max_ts: header.max_timestamp,
                pos: 0,
                len: bytes.len() as u64,
            })
        })
        .collect();
    let info = ObjectInfo {
        key: String::new(),
        size: 0,
        broker: -1,
        now_ms: 0,
    };
    plan(state, &batches, &info)
}

/// Answers a partition's items from the outcomes of its committed plan, in order: an
/// item's answer is its first batch's offset, or the refusal of any of its batches.
fn answer(items: Vec<Queued>, plan: &Plan, log_start_offset: i64) {
    let mut outcomes = plan.outcomes.iter();
    for item in items {
        let mine: Vec<Outcome> = outcomes
            .by_ref()
            .take(item.batches.len())
            .copied()
            .collect();
        let refused = mine.iter().find_map(|o| match o {
            Outcome::Refused(kind) => Some(*kind),
            _ => None,
        });
        let result = match (refused, mine.first()) {
            (Some(kind), _) => Err(refusal(&item, kind)),
            (
                None,
                Some(Outcome::Appended { base_offset } | Outcome::Duplicate { base_offset }),
            ) => Ok(Ack {
                base_offset: *base_offset,
                log_append_time: item.log_append_time,
                log_start_offset,
                records: item
                    .batches
                    .iter()
                    .zip(&mine)
                    .filter(|(_, o)| matches!(o, Outcome::Appended { .. }))
                    .map(|((header, _), _)| i64::from(header.record_count))
                    .sum(),
            }),
            _ => Err(AppendError::MetadataStore(
                "no outcome for the batch".into(),
            )),
        };
        let _ = item.reply.send(result);
    }
}

/// `diskless/<yyyymmddhh>/<node_id>-<uuid>.batches` (UTC hour of `now_ms`).
pub fn object_key(node_id: i32, now_ms: i64) -> String {
    let (year, month, day, hour) = utc_hour(now_ms);
    format!(
        "diskless/{year:04}{month:02}{day:02}{hour:02}/{node_id}-{}.batches",
        uuid::Uuid::new_v4().simple()
    )
}

/// (year, month, day, hour) in UTC of a Unix time in ms (the civil-from-days algorithm).
fn utc_hour(now_ms: i64) -> (i64, i64, i64, i64) {
    let seconds = now_ms.div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let hour = seconds.rem_euclid(86_400) / 3600;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, hour)
}

mod error;

#[cfg(test)]
mod tests;
