//! The transaction coordinator: transactional producers' ids, epochs and transactions
//! (KIP-98), kept in the internal compacted topic `__transaction_state`.
//!
//! ## Where the state lives
//!
//! As in Kafka, each transactional id is one record in `__transaction_state` (layout:
//! [`format`]), in the partition `hash(transactional id) % partitions` (Java's string
//! hash, as for groups, so tools agree). The leader of that partition is the id's
//! coordinator: coordinators spread over brokers with partition leadership and move
//! with it. A broker that becomes the leader replays the partition and takes over:
//! transactions it finds preparing get their markers written again, open ones keep
//! their deadline.
//!
//! ## A transaction
//!
//! 1. InitProducerId: the id gets a producer id (from the cluster's producer-id blocks)
//!    and a new epoch; an open transaction of the previous producer is aborted first.
//! 2. AddPartitionsToTxn / AddOffsetsToTxn: the partitions are recorded (state Ongoing)
//!    before the producer writes to them, so the coordinator knows where markers go.
//! 3. EndTxn: PrepareCommit or PrepareAbort is written, the client is answered, and the
//!    markers (control batches, [`crate::log::txn`]) are written to every partition, by
//!    its leader, replicated like any batch. Then CompleteCommit/CompleteAbort is written.
//!    The outcome is decided when the Prepare record is durable: a coordinator that fails
//!    afterwards is replaced by one that finishes the markers.
//!
//! State machine: [`state`]. Each step is written to the topic (acks=all over its ISR)
//! before it becomes current; while a write is in flight, other requests for the same id
//! get CONCURRENT_TRANSACTIONS and retry.
//!
//! ## Timers
//!
//! A loop every `transaction_abort_timed_out_transaction_cleanup_interval_ms` aborts
//! transactions open for longer than their `transaction.timeout.ms` (with the epoch
//! bumped, fencing the producer that let it lapse), retries markers that could not be
//! written, loads partitions this broker has come to lead, and forgets ids idle for
//! `transactional_id_expiration_ms` (a tombstone in the topic).

pub mod format;
pub mod state;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Config;
pub use crate::group::TRANSACTION_TOPIC;
use crate::log::txn::Marker;
pub use crate::log::txn::{MarkerRequest, VerifyRequest};
use crate::partition::{Partition, PartitionError};
use crate::registry::Topic;
use crate::telemetry::Metrics;
pub use state::{EndStep, InitStep, TxnError, TxnMetadata, TxnState};

/// The Kafka error for a transaction failure (the one place it is decided). Before
/// `fenced_since` (the version of the API that introduced PRODUCER_FENCED) a fenced
/// producer gets INVALID_PRODUCER_EPOCH, which older clients understand.
pub fn kafka_error(
    error: TxnError,
    version: i16,
    fenced_since: i16,
) -> kafka_protocol::ResponseError {
    use kafka_protocol::ResponseError;
    match error {
        TxnError::NotCoordinator => ResponseError::NotCoordinator,
        TxnError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        TxnError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::ProducerFenced if version < fenced_since => ResponseError::InvalidProducerEpoch,
        TxnError::ProducerFenced => ResponseError::ProducerFenced,
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::InvalidTxnState => ResponseError::InvalidTxnState,
        TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
        TxnError::TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
        TxnError::InvalidTransactionalId => ResponseError::InvalidRequest,
    }
}

/// How long a write to the transaction topic waits for its ISR.
const WRITE_TIMEOUT_MS: i64 = 5_000;

/// Why a marker could not be written to a partition.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    /// Not written yet (no leader, leader moved, unreachable): try again.
    #[error("{0}")]
    Retriable(String),
}

/// What the coordinator needs from the broker: the narrow handle it gets instead of the
/// whole broker (which implements it).
pub trait TxnHost: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    fn config(&self) -> &Config;
    fn metrics(&self) -> &Metrics;
    fn txn_coordinator(&self) -> &TxnCoordinator;
    /// The transaction topic, if it is open on this broker.
    fn txn_topic(&self) -> Option<Arc<Topic>>;
    /// Creates the transaction topic (or opens it when another broker created it first).
    fn create_txn_topic(&self) -> impl Future<Output = anyhow::Result<Arc<Topic>>> + Send;
    /// A producer id never handed out before.
    fn new_producer_id(&self) -> impl Future<Output = anyhow::Result<i64>> + Send;
    /// Writes a marker to a partition through its leader (this broker or another).
    /// A partition whose topic no longer exists counts as written.
    fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
    ) -> impl Future<Output = Result<(), MarkerError>> + Send;
}

/// One transactional id.
struct Entry {
    /// `None` only while the first InitProducerId of a new id is being written.
    meta: Option<TxnMetadata>,
    /// A state write is in flight: other requests get CONCURRENT_TRANSACTIONS.
    pending: bool,
    /// A task is writing this transaction's markers.
    completing: bool,
}

type Shared = Arc<Mutex<Entry>>;

/// A claim on an entry's state write (its `pending` flag), released when dropped: a
/// request whose future is dropped mid-write (a closed connection, a cancelled admin
/// call) cannot leave the id refusing every request.
struct Claim<'a> {
    coordinator: &'a TxnCoordinator,
    transactional_id: String,
    entry: Shared,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.entry).pending = false;
        self.coordinator
            .forget_if_empty(&self.transactional_id, &self.entry);
    }
}

fn lock(entry: &Shared) -> std::sync::MutexGuard<'_, Entry> {
    entry.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct TxnCoordinator {
    txns: Mutex<HashMap<String, Shared>>,
    /// Partitions of the transaction topic whose ids are in memory, with the leader epoch
    /// they were loaded for (the coordinator epoch markers carry).
    loaded: Mutex<HashMap<i32, i32>>,
    /// Held while a partition is loaded; a request that finds it taken answers
    /// COORDINATOR_LOAD_IN_PROGRESS instead of waiting.
    load_lock: Mutex<()>,
}

impl Default for TxnCoordinator {
    fn default() -> Self {
        TxnCoordinator::new()
    }
}

/// A partition of the transaction topic this broker leads and has loaded.
struct Led {
    partition: Arc<Partition>,
    coordinator_epoch: i32,
}

impl TxnCoordinator {
    pub fn new() -> TxnCoordinator {
        TxnCoordinator {
            txns: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            load_lock: Mutex::new(()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shared>> {
        self.txns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i32>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transaction topic, created on first use.
    async fn topic(host: &impl TxnHost) -> Result<Arc<Topic>, TxnError> {
        match host.txn_topic() {
            Some(topic) => Ok(topic),
            None => host.create_txn_topic().await.map_err(|e| {
                warn!(error = %format_args!("{e:#}"), "cannot create the transaction topic");
                TxnError::CoordinatorNotAvailable
            }),
        }
    }

    /// The node coordinating `transactional_id`: the leader of its partition.
    pub async fn coordinator_node(
        &self,
        host: &impl TxnHost,
        transactional_id: &str,
    ) -> Result<i32, TxnError> {
        let topic = Self::topic(host).await?;
        let index = crate::group::partition_for(transactional_id, topic.partitions.len());
        match topic.record.partitions.get(index as usize) {
            Some(p) if p.leader >= 0 => Ok(p.leader),
            _ => Err(TxnError::CoordinatorNotAvailable),
        }
    }

    /// The partition holding `transactional_id`, if this broker leads it (loading it
    /// first if its ids are not in memory for the current leadership).
    async fn led(&self, host: &impl TxnHost, transactional_id: &str) -> Result<Led, TxnError> {
        // Kafka's strings of non-flexible versions hold at most this many bytes; the
        // record key holds the id whole, so a longer one is refused, never cut.
        if transactional_id.is_empty() || transactional_id.len() > i16::MAX as usize {
            return Err(TxnError::InvalidTransactionalId);
        }
        let topic = Self::topic(host).await?;
        let index = crate::group::partition_for(transactional_id, topic.partitions.len());
        let partition = topic
            .partition(index)
            .cloned()
            .ok_or(TxnError::CoordinatorNotAvailable)?;
        let Some(epoch) = partition.leading_epoch() else {
            return Err(TxnError::NotCoordinator);
        };
        if self.loaded().get(&index) != Some(&epoch) {
            let _load = match self.load_lock.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(TxnError::CoordinatorLoadInProgress);
                }
            };
            if self.loaded().get(&index) != Some(&epoch) {
                self.load(host, &partition, topic.partitions.len(), epoch)
                    .map_err(|e| {
                        warn!(partition = index, error = %format_args!("{e:#}"),
                            "cannot load the transaction topic partition");
                        TxnError::CoordinatorLoadInProgress
                    })?;
            }
        }
        Ok(Led {
            partition,
            coordinator_epoch: epoch,
        })
    }

    /// Replaces the ids of `partition` in memory with what its log holds. The caller
    /// holds `load_lock`.
    fn load(
        &self,
        host: &impl TxnHost,
        partition: &Partition,
        partitions: usize,
        epoch: i32,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let mut found: HashMap<String, Option<TxnMetadata>> = HashMap::new();
        let mut offset = partition.watermarks().log_start_offset;
        let end = partition.log_end_offset();
        while offset < end {
            let (bytes, _) = partition.read_upto(offset, 1 << 20, end)?;
            let next = crate::group::for_each_record(&bytes, offset, |key, value| {
                let Some(key) = key else { return };
                let id = match format::decode_key(key) {
                    Ok(id) => id,
                    Err(e) => {
                        warn!(error = %e, "an unreadable key in the transaction topic; skipped");
                        return;
                    }
                };
                let meta = match value.map(|v| format::decode_value(&id, v)) {
                    Some(Ok(meta)) => Some(meta),
                    Some(Err(e)) => {
                        warn!(id, error = %e, "an unreadable transaction record; skipped");
                        return;
                    }
                    None => None,
                };
                found.insert(id, meta);
            })?;
            if next <= offset {
                break;
            }
            offset = next;
        }
        let mut map = self.map();
        map.retain(|id, _| crate::group::partition_for(id, partitions) != partition.index);
        let mut count = 0;
        for (id, meta) in found {
            if let Some(meta) = meta {
                count += 1;
                map.insert(
                    id,
                    Arc::new(Mutex::new(Entry {
                        meta: Some(meta),
                        pending: false,
                        completing: false,
                    })),
                );
            }
        }
        drop(map);
        self.loaded().insert(partition.index, epoch);
        info!(
            partition = partition.index,
            transactional_ids = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            now_ms = host.now_ms(),
            "loaded transactional ids from the transaction topic"
        );
        Ok(())
    }

    /// Forgets the ids of partitions this broker no longer leads.
    fn unload_lost(&self, host: &impl TxnHost) {
        let Some(topic) = host.txn_topic() else {
            return;
        };
        let lost: Vec<i32> = self
            .loaded()
            .iter()
            .filter(|(index, epoch)| {
                topic
                    .partition(**index)
                    .and_then(|p| p.leading_epoch())
                    .is_none_or(|current| current != **epoch)
            })
            .map(|(index, _)| *index)
            .collect();
        if lost.is_empty() {
            return;
        }
        let count = topic.partitions.len();
        self.loaded().retain(|index, _| !lost.contains(index));
        self.map()
            .retain(|id, _| !lost.contains(&crate::group::partition_for(id, count)));
    }

    /// Claims the entry's state write after `decide` accepted the request; the caller
    /// writes with [`TxnCoordinator::settle`] (or drops the claim).
    fn begin<T>(
        &self,
        transactional_id: &str,
        decide: impl FnOnce(Option<&TxnMetadata>) -> Result<T, TxnError>,
    ) -> Result<(Claim<'_>, T), TxnError> {
        let entry = self
            .map()
            .entry(transactional_id.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Entry {
                    meta: None,
                    pending: false,
                    completing: false,
                }))
            })
            .clone();
        let mut e = lock(&entry);
        if e.pending || e.completing && e.meta.as_ref().is_some_and(|m| m.state.is_preparing()) {
            return Err(TxnError::ConcurrentTransactions);
        }
        let decided = match decide(e.meta.as_ref()) {
            Ok(decided) => decided,
            Err(error) => {
                drop(e);
                self.forget_if_empty(transactional_id, &entry);
                return Err(error);
            }
        };
        e.pending = true;
        drop(e);
        let claim = Claim {
            coordinator: self,
            transactional_id: transactional_id.to_string(),
            entry,
        };
        Ok((claim, decided))
    }

    /// Claims the entry for the task writing its markers (requests are refused while it
    /// runs; this covers its final state write as `begin` covers a request's).
    fn claim(&self, transactional_id: &str, entry: &Shared) -> Option<Claim<'_>> {
        let mut e = lock(entry);
        if std::mem::replace(&mut e.pending, true) {
            return None;
        }
        Some(Claim {
            coordinator: self,
            transactional_id: transactional_id.to_string(),
            entry: entry.clone(),
        })
    }

    fn forget_if_empty(&self, transactional_id: &str, entry: &Shared) {
        let mut map = self.map();
        if map
            .get(transactional_id)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
            && lock(entry).meta.is_none()
            && !lock(entry).pending
        {
            map.remove(transactional_id);
        }
    }

    /// Writes `next` to the transaction topic and makes it current; the claim is
    /// released whatever happens.
    async fn settle(
        &self,
        host: &impl TxnHost,
        led: &Led,
        claim: Claim<'_>,
        next: TxnMetadata,
    ) -> Result<(), TxnError> {
        let written = append(host, &led.partition, &next.transactional_id, Some(&next)).await;
        if written.is_ok() {
            lock(&claim.entry).meta = Some(next);
        }
        drop(claim);
        written
    }

    /// InitProducerId with a transactional id: (producer id, epoch).
    pub async fn init_producer_id<H: TxnHost>(
        &self,
        host: &Arc<H>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        if timeout_ms <= 0 || i64::from(timeout_ms) > host.config().transaction_max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let led = self.led(&**host, transactional_id).await?;
        let now = host.now_ms();
        let (claim, step) = self.begin(transactional_id, |meta| match meta {
            Some(meta) => meta.init(expected, timeout_ms, now),
            None => TxnMetadata::new(transactional_id, timeout_ms, now).init(None, timeout_ms, now),
        })?;
        match step {
            InitStep::Ready {
                mut meta,
                new_producer_id,
            } => {
                if new_producer_id {
                    match host.new_producer_id().await {
                        Ok(id) => meta.producer_id = id,
                        Err(e) => {
                            warn!(error = %format_args!("{e:#}"), "cannot reserve a producer id");
                            return Err(TxnError::CoordinatorNotAvailable);
                        }
                    }
                }
                let answer = (meta.producer_id, meta.producer_epoch);
                self.settle(&**host, &led, claim, meta).await?;
                Ok(answer)
            }
            InitStep::AbortFirst(meta) => {
                info!(
                    transactional_id,
                    producer_id = meta.producer_id,
                    "a new producer aborts the open transaction of the previous one"
                );
                let entry = claim.entry.clone();
                self.settle(&**host, &led, claim, meta).await?;
                host.metrics()
                    .txn_aborts
                    .with_label_values(&["new_producer"])
                    .inc();
                self.spawn_completion(host, transactional_id, &entry);
                Err(TxnError::ConcurrentTransactions)
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition).
    pub async fn add_partitions(
        &self,
        host: &impl TxnHost,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        tv2: bool,
    ) -> Result<(), TxnError> {
        let led = self.led(host, transactional_id).await?;
        let now = host.now_ms();
        let (claim, next) = self.begin(transactional_id, |meta| {
            meta.ok_or(TxnError::InvalidProducerIdMapping)?
                .add_partitions(producer_id, epoch, partitions, tv2, now)
        })?;
        match next {
            Some(next) => self.settle(host, &led, claim, next).await,
            None => Ok(()),
        }
    }

    /// KIP-890's verification (AddPartitionsToTxn v4 with verify_only): whether the
    /// partition is in the producer's open transaction.
    pub async fn verify_partition(
        &self,
        host: &impl TxnHost,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), TxnError> {
        self.led(host, transactional_id).await?;
        let entry = self
            .map()
            .get(transactional_id)
            .cloned()
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let e = lock(&entry);
        let meta = e.meta.as_ref().ok_or(TxnError::InvalidProducerIdMapping)?;
        if meta.moving_to(producer_id) {
            return Err(TxnError::ConcurrentTransactions);
        }
        if meta.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if meta.producer_epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        if meta.state == TxnState::Ongoing && meta.partitions.contains(partition) {
            Ok(())
        } else {
            Err(TxnError::InvalidTxnState)
        }
    }

    /// EndTxn: decides the outcome (written before the answer); the markers follow.
    /// Returns the producer id and epoch the producer continues with (changed only for
    /// a KIP-890 part 2 client, `tv2`: EndTxn v5).
    pub async fn end_txn<H: TxnHost>(
        &self,
        host: &Arc<H>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        tv2: bool,
    ) -> Result<(i64, i16), TxnError> {
        let led = self.led(&**host, transactional_id).await?;
        let now = host.now_ms();
        let (claim, step) = self.begin(transactional_id, |meta| {
            let meta = meta.ok_or(TxnError::InvalidProducerIdMapping)?;
            Ok((
                meta.end(producer_id, epoch, commit, tv2, now)?,
                meta.epoch_after_end(),
            ))
        })?;
        match step {
            (EndStep::AlreadyDone, current) => Ok(current),
            (EndStep::Prepare(mut next), _) => {
                if tv2 && next.end_exhausts_epoch() {
                    // The epoch ran out: the producer continues under a new id once the
                    // markers (of the old id) are written.
                    match host.new_producer_id().await {
                        Ok(id) => next.next_producer_id = id,
                        Err(e) => {
                            warn!(error = %format_args!("{e:#}"), "cannot reserve a producer id");
                            return Err(TxnError::CoordinatorNotAvailable);
                        }
                    }
                }
                let answer = if tv2 {
                    next.epoch_after_end()
                } else {
                    (next.producer_id, next.producer_epoch)
                };
                let entry = claim.entry.clone();
                self.settle(&**host, &led, claim, next).await?;
                self.spawn_completion(host, transactional_id, &entry);
                Ok(answer)
            }
        }
    }

    /// An operator's abort of a hanging transaction (`strata transactions abort`): as a
    /// timeout, with the epoch bumped.
    pub async fn abort<H: TxnHost>(
        &self,
        host: &Arc<H>,
        transactional_id: &str,
    ) -> Result<(), TxnError> {
        let led = self.led(&**host, transactional_id).await?;
        let now = host.now_ms();
        let (claim, next) = self.begin(transactional_id, |meta| match meta {
            Some(meta) if meta.state == TxnState::Ongoing => Ok(meta.abort_timed_out(now)),
            Some(_) => Err(TxnError::InvalidTxnState),
            None => Err(TxnError::TransactionalIdNotFound),
        })?;
        let entry = claim.entry.clone();
        self.settle(&**host, &led, claim, next).await?;
        host.metrics()
            .txn_aborts
            .with_label_values(&["operator"])
            .inc();
        self.spawn_completion(host, transactional_id, &entry);
        Ok(())
    }

    /// Starts writing the markers of a preparing transaction unless a task already is.
    fn spawn_completion<H: TxnHost>(&self, host: &Arc<H>, transactional_id: &str, entry: &Shared) {
        {
            let mut e = lock(entry);
            if e.completing || !e.meta.as_ref().is_some_and(|m| m.state.is_preparing()) {
                return;
            }
            e.completing = true;
        }
        let host = host.clone();
        let id = transactional_id.to_string();
        let entry = entry.clone();
        tokio::spawn(async move {
            // Cleared however the task ends (a panic included), so the timer respawns it.
            struct Completing(Shared);
            impl Drop for Completing {
                fn drop(&mut self) {
                    lock(&self.0).completing = false;
                }
            }
            let _completing = Completing(entry.clone());
            let coordinator = host.txn_coordinator();
            coordinator.complete(&*host, &id, &entry).await;
        });
    }

    /// Writes the markers of a preparing transaction to every partition, then its
    /// Complete state. Gives up (for the timer loop to retry) when leadership moves or
    /// after a few rounds of failures.
    ///
    /// The task belongs to one leadership of the id's partition and to one entry: when
    /// either changed (leadership moved and came back, the partition was loaded again),
    /// it stops, so a stale task never writes markers into a later transaction.
    async fn complete(&self, host: &impl TxnHost, transactional_id: &str, entry: &Shared) {
        let mut backoff = Duration::from_millis(50);
        let mut coordinator_epoch = None;
        for _ in 0..8 {
            let Ok(led) = self.led(host, transactional_id).await else {
                return;
            };
            let current = self
                .map()
                .get(transactional_id)
                .is_some_and(|e| Arc::ptr_eq(e, entry));
            if !current
                || *coordinator_epoch.get_or_insert(led.coordinator_epoch) != led.coordinator_epoch
            {
                return;
            }
            let Some(meta) = lock(entry).meta.clone().filter(|m| m.state.is_preparing()) else {
                return;
            };
            let marker = if meta.state == TxnState::PrepareCommit {
                Marker::Commit
            } else {
                Marker::Abort
            };
            let writes = meta.partitions.iter().map(|(topic, index)| {
                host.write_marker(
                    topic,
                    *index,
                    meta.producer_id,
                    meta.producer_epoch,
                    marker,
                    led.coordinator_epoch,
                )
            });
            let results = futures::future::join_all(writes).await;
            let failed: Vec<String> = results
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.to_string()))
                .collect();
            if failed.is_empty() {
                let done = meta.complete(host.now_ms());
                // Requests for the id are refused while this task runs, so nothing else
                // writes its state meanwhile; pending covers the write as for requests.
                let still_ours = led.partition.leading_epoch() == Some(led.coordinator_epoch)
                    && self
                        .map()
                        .get(transactional_id)
                        .is_some_and(|e| Arc::ptr_eq(e, entry));
                if !still_ours {
                    return;
                }
                if let Some(claim) = self.claim(transactional_id, entry) {
                    match self.settle(host, &led, claim, done).await {
                        Ok(()) => return,
                        Err(e) => {
                            warn!(transactional_id, error = %e, "cannot record a completed transaction; retrying")
                        }
                    }
                }
            } else {
                warn!(transactional_id, failures = failed.len(), first = %failed[0],
                    "some transaction markers were not written; retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// The timer round: loads partitions this broker came to lead, forgets those it
    /// lost, aborts timed-out transactions, restarts marker writing that stopped, and
    /// expires idle ids.
    pub async fn tick<H: TxnHost>(&self, host: &Arc<H>) {
        let Some(topic) = host.txn_topic() else {
            return;
        };
        self.unload_lost(&**host);
        for partition in &topic.partitions {
            if let Some(epoch) = partition.leading_epoch()
                && self.loaded().get(&partition.index) != Some(&epoch)
                && let Ok(_load) = self.load_lock.try_lock()
                && let Err(e) = self.load(&**host, partition, topic.partitions.len(), epoch)
            {
                warn!(partition = partition.index, error = %format_args!("{e:#}"),
                    "cannot load the transaction topic partition");
            }
        }
        let now = host.now_ms();
        let expiration = host.config().transactional_id_expiration_ms;
        let entries: Vec<(String, Shared)> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut open = 0i64;
        let mut oldest_ms = 0i64;
        for (id, entry) in entries {
            let (state, timed_out, expired, start_ms) = {
                let e = lock(&entry);
                let Some(meta) = e.meta.as_ref() else {
                    continue;
                };
                if e.pending {
                    continue;
                }
                (
                    meta.state,
                    meta.timed_out(now),
                    meta.expired(now, expiration),
                    meta.start_ms,
                )
            };
            if state == TxnState::Ongoing {
                open += 1;
                oldest_ms = oldest_ms.max(now - start_ms);
            }
            if timed_out {
                self.abort_timed_out(host, &id).await;
            } else if state.is_preparing() {
                self.spawn_completion(host, &id, &entry);
            } else if expired {
                self.expire(&**host, &id).await;
            }
        }
        host.metrics().txn_open.set(open);
        host.metrics().txn_oldest_open_ms.set(oldest_ms);
    }

    async fn abort_timed_out<H: TxnHost>(&self, host: &Arc<H>, transactional_id: &str) {
        let Ok(led) = self.led(&**host, transactional_id).await else {
            return;
        };
        let now = host.now_ms();
        let Ok((claim, next)) = self.begin(transactional_id, |meta| match meta {
            Some(meta) if meta.timed_out(now) => Ok(meta.abort_timed_out(now)),
            _ => Err(TxnError::InvalidTxnState),
        }) else {
            return;
        };
        info!(
            transactional_id,
            producer_id = next.producer_id,
            timeout_ms = next.timeout_ms,
            "aborting a transaction that outlived its timeout"
        );
        let entry = claim.entry.clone();
        if self.settle(&**host, &led, claim, next).await.is_ok() {
            host.metrics()
                .txn_aborts
                .with_label_values(&["timeout"])
                .inc();
            self.spawn_completion(host, transactional_id, &entry);
        }
    }

    async fn expire(&self, host: &impl TxnHost, transactional_id: &str) {
        let Ok(led) = self.led(host, transactional_id).await else {
            return;
        };
        let now = host.now_ms();
        let expiration = host.config().transactional_id_expiration_ms;
        let Ok((claim, ())) = self.begin(transactional_id, |meta| match meta {
            Some(meta) if meta.expired(now, expiration) => Ok(()),
            _ => Err(TxnError::InvalidTxnState),
        }) else {
            return;
        };
        let entry = claim.entry.clone();
        let written = append(host, &led.partition, transactional_id, None).await;
        drop(claim);
        let mut map = self.map();
        if written.is_ok()
            && !lock(&entry).pending
            && map
                .get(transactional_id)
                .is_some_and(|e| Arc::ptr_eq(e, &entry))
        {
            map.remove(transactional_id);
            info!(transactional_id, "forgot an idle transactional id");
        }
    }

    /// DescribeTransactions: the id's state, if this broker coordinates it.
    pub async fn describe(
        &self,
        host: &impl TxnHost,
        transactional_id: &str,
    ) -> Result<TxnMetadata, TxnError> {
        self.led(host, transactional_id).await?;
        let entry = self
            .map()
            .get(transactional_id)
            .cloned()
            .ok_or(TxnError::TransactionalIdNotFound)?;
        let meta = lock(&entry)
            .meta
            .clone()
            .ok_or(TxnError::TransactionalIdNotFound)?;
        Ok(meta)
    }

    /// ListTransactions: every id this broker coordinates.
    pub fn list(&self) -> Vec<TxnMetadata> {
        let entries: Vec<Shared> = self.map().values().cloned().collect();
        entries
            .iter()
            .filter_map(|e| lock(e).meta.clone())
            .collect()
    }
}

/// Appends one record (a tombstone with `None`) to the transaction topic, waiting for
/// its ISR.
async fn append(
    host: &impl TxnHost,
    partition: &Partition,
    transactional_id: &str,
    meta: Option<&TxnMetadata>,
) -> Result<(), TxnError> {
    let now = host.now_ms();
    let key = format::encode_key(transactional_id);
    let value = meta.map(format::encode_value);
    let batch =
        crate::group::encode_internal_batch(now, vec![(key, value)], None).map_err(|e| {
            warn!(error = %e, "cannot encode a transaction record");
            TxnError::CoordinatorNotAvailable
        })?;
    match partition.append(&batch, now, -1, 1, WRITE_TIMEOUT_MS).await {
        Ok(_) => Ok(()),
        Err(PartitionError::NotLeader) => Err(TxnError::NotCoordinator),
        Err(e) => {
            warn!(partition = partition.index, error = %e, "cannot write to the transaction topic");
            Err(TxnError::CoordinatorNotAvailable)
        }
    }
}
