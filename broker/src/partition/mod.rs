//! Per-partition state around the local log: the high watermark, the lock discipline,
//! and what happens when the disk fails.
//!
//! On a single broker with replication factor 1 the high watermark is the log end offset
//! once the data is as durable as the flush policy promises: immediately after the append
//! when no fsync is due, after the fsync when one is. Consumers and ListOffsets never see
//! past it, so nothing is read that a power loss could take back.
//!
//! A failed fsync takes the partition offline (appends and reads refused with a retriable
//! storage error) until restart: after a failed fsync Linux may drop the dirty pages and
//! report the next fsync as successful, so neither the data nor a later checkpoint can be
//! trusted: checkpoint writes already prepared are dropped too. Restart recovery re-validates the tail from the last good checkpoint. A failed
//! compaction swap does the same: its files may be half-replaced, and start-up recovery
//! finishes the swap from the staged copy (see [`log::cleaner`]).

mod error;
pub mod isr;
mod read;
pub mod remote;

pub use error::PartitionError;
pub use read::{Read, RemoteRead};

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{error, warn};

use strata_tiering::{RemoteLog, RemoteMarks};

use remote::RemoteTier;

use crate::cluster::PartitionRecord;
use crate::log::{
    self, AppendInfo, BatchError, Log, LogConfig, LogError, RemoteBounds, RetentionOutcome,
    SealedInfo,
};
use isr::{
    FetchRefusal, FollowerFetch, FollowerOutcome, LeaderAnswer, ReplicaState, Role, Transition,
};

pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// A std mutex: never held across an `.await` or an fsync of data. Appends write to
    /// the page cache under it; validation, fsyncs and reads happen outside it.
    log: Mutex<Log>,
    high_watermark: watch::Sender<i64>,
    leader_epoch: AtomicI32,
    /// Set, under the log lock, when the topic is deleted: later appends and housekeeping
    /// must not recreate files in the removed directory.
    deleted: AtomicBool,
    /// Set when an fsync failed; see the module doc.
    offline: AtomicBool,
    /// The log's checkpoint writer (the same for the log's life), so that going offline
    /// can stop checkpoint writes without taking the log lock, which some callers hold.
    checkpoints: Arc<log::CheckpointWriter>,
    /// The remote tier (manifest and reader); `None` only in tests without tiering.
    remote: Option<RemoteTier>,
    /// Set while an uploader pass runs, so passes for one partition never overlap.
    uploading: AtomicBool,
    /// Consecutive failed uploader passes, and when the next may start: a failing
    /// object store is retried with exponential backoff, not hammered every interval.
    upload_failures: std::sync::atomic::AtomicU32,
    next_upload_ms: AtomicI64,
    last_stall_warning_ms: AtomicI64,
    /// Leadership, ISR and followers' progress (see [`crate::replication`]). A std mutex,
    /// never held across an `.await`; taken before the log lock when both are needed.
    replica: Mutex<ReplicaState>,
    /// The local log end, for followers' long polls at the leader.
    log_end: watch::Sender<i64>,
}

/// Records a leader appended, not yet acknowledged: with acks=all
/// [`Partition::acknowledged`] waits for the ISR to hold them in the leader epoch they
/// were appended in.
#[derive(Debug)]
pub struct Appended {
    pub info: AppendInfo,
    epoch: i32,
}

/// Runs blocking file work (fsync) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("blocking task failed: {e}"))))
}

/// Bytes a produce request may inflate on an async worker. Past it the request is
/// checked again on the blocking pool with the full budget, so that large compressed
/// requests (and decompression bombs) cannot stall other connections' requests.
const INLINE_INFLATE_BYTES: u64 = 4 * 1024 * 1024;

/// [`log::prepare_with`]: inline for the usual small request, on the blocking pool for
/// one whose records inflate past [`INLINE_INFLATE_BYTES`]; then, for a topic whose
/// compression.type names a codec, batches in another codec are recompressed to it on
/// the blocking pool (CPU-heavy, and it inflates again under a budget of its own, as
/// large as validation's, which also pays for each batch's compressor setup).
pub async fn prepare_off_the_workers(
    records: &[u8],
    rules: log::ProduceRules,
    recompression: Option<log::Recompression>,
) -> Result<log::Prepared, PartitionError> {
    let prepared = match log::prepare_with(records, &rules, INLINE_INFLATE_BYTES) {
        Err(BatchError::Inflated { .. }) => {
            let owned = records.to_vec();
            heavy_decode(move || {
                log::prepare_with(&owned, &rules, log::records::MAX_INFLATED_BYTES)
            })
            .await?
        }
        done => done,
    }
    .map_err(LogError::from)?;
    let Some(target) = recompression.filter(|target| target.needed_for(&prepared)) else {
        return Ok(prepared);
    };
    heavy_decode(move || {
        let mut budget = log::records::Budget::new(log::records::MAX_INFLATED_BYTES);
        log::recompress::recompress(prepared, target, rules.max_message_bytes, &mut budget)
    })
    .await?
    .map_err(|e| LogError::from(e).into())
}

/// Decodes that may inflate up to the full budget run here: on the blocking pool, a few
/// at a time. The budget bounds each one's CPU and the bytes it touches (zstd's window,
/// a snappy block); this bounds how many hold that memory at once.
static HEAVY_DECODES: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores.clamp(1, 4))
    });

/// Runs a heavy record decode under [`HEAVY_DECODES`]. A decode that panics is reported
/// as an unexpected server error, not as storage failure.
pub async fn heavy_decode<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PartitionError> {
    let _permit = HEAVY_DECODES
        .acquire()
        .await
        .map_err(|_| PartitionError::DecodeFailed)?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| PartitionError::DecodeFailed)
}

/// Holds a partition's upload flag for a compaction pass or a repair; clears it when
/// dropped.
pub struct UploadSlot<'a>(&'a AtomicBool);

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Offsets a fetch response reports next to the records.
#[derive(Debug, Clone, Copy)]
pub struct Watermarks {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// The high watermark, or the first offset of the oldest open transaction if that is
    /// lower: where read_committed consumers stop.
    pub last_stable_offset: i64,
}

/// The last stable offset of a log whose high watermark is `high_watermark`.
fn last_stable(log: &Log, high_watermark: i64) -> i64 {
    log.first_unstable_offset()
        .map_or(high_watermark, |first| first.min(high_watermark))
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        log: Log,
        replica: ReplicaState,
        remote: Option<RemoteTier>,
    ) -> Partition {
        // Recovery fsyncs what it keeps, so everything in an opened log is durable: alone,
        // the log end is the high watermark. With other replicas the high watermark is
        // learned again (from followers' fetches, or from the leader).
        let alone = replica.role == Role::Leader && replica.isr == [replica.me];
        let initial = if alone {
            log.log_end_offset()
        } else {
            log.log_start_offset()
        };
        let (high_watermark, _) = watch::channel(initial);
        let (log_end, _) = watch::channel(log.log_end_offset());
        let leader_epoch = replica.epoch;
        let checkpoints = log.checkpoint_writer();
        Partition {
            topic,
            index,
            log: Mutex::new(log),
            high_watermark,
            leader_epoch: AtomicI32::new(leader_epoch),
            deleted: AtomicBool::new(false),
            offline: AtomicBool::new(false),
            checkpoints,
            remote,
            uploading: AtomicBool::new(false),
            upload_failures: std::sync::atomic::AtomicU32::new(0),
            next_upload_ms: AtomicI64::new(i64::MIN),
            last_stall_warning_ms: AtomicI64::new(i64::MIN),
            replica: Mutex::new(replica),
            log_end,
        }
    }

    pub fn remote(&self) -> Option<&Arc<RemoteLog>> {
        self.remote.as_ref().map(|r| &r.log)
    }

    fn remote_marks(&self) -> Option<RemoteMarks> {
        self.remote().map(|r| r.marks())
    }

    /// What the remote tier holds, `[start, end)`, if it ever held anything.
    pub fn remote_bounds(&self) -> Option<RemoteBounds> {
        let marks = self.remote_marks()?;
        Some(RemoteBounds {
            start: marks.log_start_offset,
            end: marks.end_offset?,
        })
    }

    /// The remote tier, if `offset` must be read from it: below the local log start and
    /// within what the remote tier holds.
    fn remote_for(&self, offset: i64) -> Option<RemoteTier> {
        let bounds = self.remote_bounds()?;
        let local_start = self.lock().log_start_offset();
        (offset < local_start && offset >= bounds.start && offset < bounds.end)
            .then(|| self.remote.clone())
            .flatten()
    }

    pub fn log_config(&self) -> LogConfig {
        self.lock().config().clone()
    }

    /// Sealed segments below the high watermark the remote tier does not have yet.
    pub fn upload_candidates(&self, limit: usize) -> Vec<SealedInfo> {
        // An offline partition's files are left as the failure left them (a compaction
        // swap may be half done): nothing of it is uploaded until a restart recovers it.
        if self.offline.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let uploaded_end = self.remote_bounds().map(|b| b.end);
        let high_watermark = self.high_watermark();
        self.lock()
            .upload_candidates(uploaded_end, high_watermark, limit)
    }

    pub fn bytes_after(&self, offset: i64) -> u64 {
        self.lock().bytes_after(offset)
    }

    /// Claims the partition for an uploader pass; false if one is running or the last
    /// failure's backoff has not elapsed.
    pub fn try_start_upload(&self, now_ms: i64) -> bool {
        now_ms >= self.next_upload_ms.load(Ordering::Relaxed)
            && !self.uploading.swap(true, Ordering::AcqRel)
    }

    /// Claims the upload flag for a repair of the remote tier (no backoff applies): `None`
    /// while an upload or compaction pass holds it.
    pub fn claim_upload_slot(&self) -> Option<UploadSlot<'_>> {
        (!self.uploading.swap(true, Ordering::AcqRel)).then_some(UploadSlot(&self.uploading))
    }

    /// The sealed local segment based at `base_offset`, for a repair to upload again.
    pub fn sealed_segment(&self, base_offset: i64) -> Option<SealedInfo> {
        if self.offline.load(Ordering::Relaxed) {
            return None;
        }
        self.lock().sealed_segment(base_offset)
    }

    /// Ends a pass. After a failure the next pass waits `interval_ms` doubled per
    /// consecutive failure, up to 30 s.
    pub fn finish_upload(&self, succeeded: bool, now_ms: i64, interval_ms: i64) {
        if succeeded {
            self.upload_failures.store(0, Ordering::Relaxed);
            self.next_upload_ms.store(i64::MIN, Ordering::Relaxed);
        } else {
            let failures = self.upload_failures.fetch_add(1, Ordering::Relaxed).min(16);
            let delay = interval_ms.saturating_mul(1 << failures).min(30_000);
            self.next_upload_ms.store(now_ms + delay, Ordering::Relaxed);
        }
        self.uploading.store(false, Ordering::Release);
    }

    /// Rate-limits the stall warning to one a minute per partition.
    pub fn should_warn_stall(&self, now_ms: i64) -> bool {
        let last = self.last_stall_warning_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= 60_000
            && self
                .last_stall_warning_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-updated in a way later
        // readers could observe past `size`, so a poisoned lock is still usable.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Also stops checkpoint writes already prepared: after a failed fsync neither the
    /// data nor a checkpoint recording it can be trusted (see the module doc).
    fn take_offline(&self, error: &LogError) {
        self.checkpoints.close();
        if !self.offline.swap(true, Ordering::Relaxed) {
            error!(topic = %self.topic, partition = self.index, %error,
                "log storage failed: partition offline until restart");
            // acks=all waits end now (followers are refused, so the high watermark
            // stops): they answer a storage error instead of timing out.
            self.high_watermark.send_modify(|_| {});
        }
    }

    /// Whether a storage failure took the partition offline (see the module doc).
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Relaxed)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Relaxed)
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn watermarks(&self) -> Watermarks {
        let high_watermark = self.high_watermark();
        let (local_start, last_stable_offset) = {
            let log = self.lock();
            (log.log_start_offset(), last_stable(&log, high_watermark))
        };
        Watermarks {
            log_start_offset: self.log_start_offset(local_start),
            high_watermark,
            last_stable_offset,
        }
    }

    /// Where read_committed consumers stop; see [`Watermarks::last_stable_offset`].
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        last_stable(&self.lock(), high_watermark)
    }

    /// Aborted transactions with records in `[from, to)` in the local log, for a
    /// read_committed Fetch.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<log::txn::AbortedTxn> {
        self.lock().aborted_overlapping(from, to)
    }

    /// A guard for verifying `producer_id`'s transaction, or `None` if its transaction
    /// is already open here (no verification needed).
    pub fn txn_guard(&self, producer_id: i64) -> Option<log::TxnGuard> {
        let log = self.lock();
        (!log.in_transaction(producer_id)).then(|| log::TxnGuard {
            producer_id,
            marker_position: log.marker_position(producer_id),
        })
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.lock().in_transaction(producer_id)
    }

    /// The transactions open here: (producer id, epoch, first offset), oldest first.
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.lock().open_transactions()
    }

    /// The producers this replica's log remembers (DescribeProducers), or `None` if more
    /// than `limit`.
    pub fn active_producers(&self, limit: usize) -> Option<Vec<log::producers::ActiveProducer>> {
        self.lock().active_producers(limit)
    }

    /// Bytes of the local log's segments (DescribeLogDirs): the remote tier not counted.
    pub fn local_size_bytes(&self) -> u64 {
        self.lock().size_bytes()
    }

    /// The log start offset across both tiers: the remote start when the remote tier
    /// holds live data that reaches the local log, else the local start.
    fn log_start_offset(&self, local_start: i64) -> i64 {
        match self.remote_bounds() {
            Some(b) if b.end > b.start && b.end >= local_start => b.start.min(local_start),
            _ => local_start,
        }
    }

    pub fn local_log_start_offset(&self) -> i64 {
        self.lock().log_start_offset()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.lock().set_config(config);
    }

    /// Appends a produce request's records as the leader and answers per `acks`: with
    /// acks=all (-1) once the whole ISR holds them, at most `timeout_ms` later.
    pub async fn append(
        &self,
        records: &Bytes,
        now_ms: i64,
        acks: i16,
        min_isr: usize,
        timeout_ms: i64,
    ) -> Result<AppendInfo, PartitionError> {
        self.append_verified(records, now_ms, acks, min_isr, timeout_ms, None)
            .await
    }

    /// [`Partition::append`] with a verified transaction (see [`log::TxnGuard`]).
    pub async fn append_verified(
        &self,
        records: &Bytes,
        now_ms: i64,
        acks: i16,
        min_isr: usize,
        timeout_ms: i64,
        guard: Option<log::TxnGuard>,
    ) -> Result<AppendInfo, PartitionError> {
        let appended = self
            .append_unacknowledged(records, now_ms, acks, min_isr, guard)
            .await?;
        self.acknowledged(appended, acks, min_isr, timeout_ms).await
    }

    /// The first half of [`Partition::append_verified`]: the records are in the log (and
    /// fsynced if the flush policy asks), but with acks=all not yet known to be on the
    /// ISR. [`Partition::acknowledged`] is the second half. A connection that appends its
    /// next request between the two keeps the log in request order (see
    /// `handlers::produce`). The trace span of every append (dashboards and tests know it
    /// as `log.append`).
    #[tracing::instrument(target = "strata::trace", level = "trace", name = "log.append",
        skip_all, fields(topic = %self.topic, partition = self.index, bytes = records.len(), acks = acks))]
    pub async fn append_unacknowledged(
        &self,
        records: &Bytes,
        now_ms: i64,
        acks: i16,
        min_isr: usize,
        guard: Option<log::TxnGuard>,
    ) -> Result<Appended, PartitionError> {
        let epoch = {
            let replica = self.replica();
            if replica.role != Role::Leader {
                return Err(PartitionError::NotLeader);
            }
            if acks == -1 && replica.isr.len() < min_isr {
                return Err(PartitionError::NotEnoughReplicas {
                    isr: replica.isr.len(),
                    min: min_isr,
                });
            }
            replica.epoch
        };
        let (rules, recompression) = {
            let log = self.lock();
            (
                log.config().produce_rules(now_ms),
                log.config().recompression,
            )
        };
        let prepared = prepare_off_the_workers(records, rules, recompression).await?;
        self.append_local(epoch, |log| {
            log.append_verified(prepared, epoch, now_ms, guard)
        })
        .await
    }

    /// The second half of an append: with acks=all, waits until the whole ISR holds the
    /// records, at most `timeout_ms`; otherwise answers at once.
    pub async fn acknowledged(
        &self,
        appended: Appended,
        acks: i16,
        min_isr: usize,
        timeout_ms: i64,
    ) -> Result<AppendInfo, PartitionError> {
        if acks == -1 {
            self.wait_replicated(
                appended.info.last_offset + 1,
                appended.epoch,
                min_isr,
                timeout_ms,
            )
            .await?;
        }
        Ok(appended.info)
    }

    /// Appends a transaction marker for `producer_id` as the leader (the coordinator
    /// ending its transaction), answered once the whole ISR holds it.
    pub async fn write_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: log::txn::Marker,
        coordinator_epoch: i32,
        now_ms: i64,
        timeout_ms: i64,
    ) -> Result<AppendInfo, PartitionError> {
        let epoch = self.leading_epoch().ok_or(PartitionError::NotLeader)?;
        let appended = self
            .append_local(epoch, |log| {
                log.append_marker(
                    producer_id,
                    producer_epoch,
                    marker,
                    coordinator_epoch,
                    epoch,
                    now_ms,
                )
            })
            .await?;
        self.acknowledged(appended, -1, 1, timeout_ms).await
    }

    /// The leader's side of an append: `write` runs under the log lock if this broker
    /// still leads in `epoch`; then the fsync the flush policy asks for and the high
    /// watermark. The wait for the ISR is [`Partition::acknowledged`].
    async fn append_local(
        &self,
        epoch: i32,
        write: impl FnOnce(&mut Log) -> Result<(AppendInfo, Option<Arc<std::fs::File>>), LogError>,
    ) -> Result<Appended, PartitionError> {
        let (info, sync, dir) = {
            let mut log = self.lock();
            if self.deleted.load(Ordering::Relaxed) {
                return Err(PartitionError::Deleted);
            }
            if self.offline.load(Ordering::Relaxed) {
                return Err(PartitionError::Offline);
            }
            if self.leader_epoch() != epoch {
                return Err(PartitionError::NotLeader);
            }
            let (info, sync) = write(&mut log)?;
            self.log_end.send_replace(log.log_end_offset());
            (info, sync, log.dir().to_path_buf())
        };
        if let Some(file) = sync
            && let Err(source) = blocking(move || file.sync_data()).await
        {
            let error = LogError::Io { dir, source };
            self.take_offline(&error);
            return Err(error.into());
        }
        {
            let mut replica = self.replica();
            if replica.role == Role::Leader && replica.epoch == epoch {
                replica.leader_end = replica.leader_end.max(info.last_offset + 1);
            }
        }
        self.advance_high_watermark();
        Ok(Appended { info, epoch })
    }

    fn replica(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_leader(&self) -> bool {
        self.replica().role == Role::Leader
    }

    /// The epoch this broker leads the partition in, read together with the role: work
    /// that commits to the manifest (uploads, retention, compaction, DeleteRecords)
    /// captures it once and is fenced by it, rather than reading a newer epoch midway.
    pub fn leading_epoch(&self) -> Option<i32> {
        let replica = self.replica();
        (replica.role == Role::Leader).then_some(replica.epoch)
    }

    /// See [`ReplicaState::catching_up`].
    pub fn catching_up(&self, replica: i32) -> bool {
        self.replica().catching_up(replica)
    }

    /// See [`ReplicaState::throttled_fetch`].
    pub fn throttled_fetch(&self, replica: i32, fetch_offset: i64) -> bool {
        let high_watermark = self.high_watermark();
        self.replica()
            .throttled_fetch(replica, fetch_offset, high_watermark)
    }

    pub fn replica_state(&self) -> ReplicaState {
        self.replica().clone()
    }

    /// A leader's high watermark: the smallest log end over the ISR; it never goes back.
    pub fn advance_high_watermark(&self) {
        let end = self.replica().isr_end();
        if let Some(end) = end {
            self.high_watermark.send_if_modified(|hw| {
                let advanced = end > *hw;
                *hw = (*hw).max(end);
                advanced
            });
        }
    }

    /// Waits until the high watermark reaches `offset` while this broker still leads in
    /// `epoch`.
    #[tracing::instrument(target = "strata::trace", level = "trace", name = "replication.wait",
        skip_all, fields(offset = offset, min_isr = min_isr))]
    async fn wait_replicated(
        &self,
        offset: i64,
        epoch: i32,
        min_isr: usize,
        timeout_ms: i64,
    ) -> Result<(), PartitionError> {
        let mut hw = self.high_watermark.subscribe();
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(timeout_ms.max(0) as u64);
        loop {
            {
                let replica = self.replica();
                // Deleted ([`Partition::delete_files`] wakes this wait): the records are
                // gone with the topic, so no ISR will ever hold them.
                if self.deleted.load(Ordering::Relaxed) {
                    return Err(PartitionError::Deleted);
                }
                if replica.role != Role::Leader || replica.epoch != epoch {
                    return Err(PartitionError::NotLeader);
                }
                if *hw.borrow_and_update() >= offset {
                    return if replica.isr.len() < min_isr {
                        Err(PartitionError::NotEnoughReplicasAfterAppend)
                    } else {
                        Ok(())
                    };
                }
                // Offline (see [`Partition::take_offline`], which wakes this wait):
                // followers are refused, so the high watermark cannot reach `offset`.
                if self.is_offline() {
                    return Err(PartitionError::Offline);
                }
            }
            match tokio::time::timeout_at(deadline, hw.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(PartitionError::ReplicationTimeout),
            }
        }
    }

    /// Applies the partition's record from the metadata store: leadership, epoch, ISR.
    pub fn apply_record(
        &self,
        record: &PartitionRecord,
        now_ms: i64,
    ) -> Result<Transition, PartitionError> {
        let transition = {
            let mut replica = self.replica();
            let mut log = self.lock();
            let transition = replica.apply(record, log.log_end_offset(), now_ms);
            if transition == Transition::BecameLeader {
                let end = log.log_end_offset();
                log.assign_epoch(record.leader_epoch, end)?;
            }
            // No longer a replica (moved off by a reassignment or a drain, or before a
            // restart): the data is safe on the replicas the controller kept, so free the
            // disk. The log stays open, empty at offset 0, in case this broker becomes a
            // replica again: it then copies from the leader's log start, like a new
            // replica. Kept at its old end, it would fetch from there and could join the
            // ISR without the records before it.
            if replica.role == Role::None
                && (log.log_end_offset() > 0 || log.log_start_offset() > 0)
            {
                let end = log.log_end_offset();
                log.reset_to(0, None, now_ms)?;
                self.high_watermark.send_replace(0);
                tracing::info!(topic = %self.topic, partition = self.index, end,
                    "not a replica any more; deleted the local log");
            }
            self.leader_epoch
                .store(record.leader_epoch, Ordering::Relaxed);
            transition
        };
        if transition != Transition::Unchanged {
            // Wake acks=all waiters and long polls: they check the role again.
            self.high_watermark.send_modify(|_| {});
        }
        self.advance_high_watermark();
        Ok(transition)
    }

    /// Marks an ISR change this leader proposed (or, with `None`, gave up on).
    pub fn set_proposed_isr(&self, isr: Option<Vec<i32>>) {
        self.replica().proposed_isr = isr;
    }

    /// The ISR change due now, if any (a leader only).
    pub fn isr_change(
        &self,
        now_ms: i64,
        lag_ms: i64,
        live: impl Fn(i32) -> bool,
    ) -> Option<Vec<i32>> {
        let high_watermark = self.high_watermark();
        self.replica()
            .isr_change(high_watermark, now_ms, lag_ms, live)
    }

    pub fn log_end_offset(&self) -> i64 {
        *self.log_end.borrow()
    }

    pub fn subscribe_log_end(&self) -> watch::Receiver<i64> {
        self.log_end.subscribe()
    }

    /// A follower's next fetch: (leader, epoch, fetch offset, last fetched epoch).
    pub fn follower_position(&self) -> Option<(i32, i32, i64, i32)> {
        let replica = self.replica();
        if replica.role != Role::Follower || replica.leader < 0 {
            return None;
        }
        let log = self.lock();
        Some((
            replica.leader,
            replica.epoch,
            log.log_end_offset(),
            log.latest_epoch(),
        ))
    }

    /// The leader's side of a follower's fetch: up to `max_bytes` of records (the first
    /// batch whole; none when `max_bytes` is 0), or where the follower must truncate, or
    /// that it must restart at our local log start.
    pub fn serve_follower(
        &self,
        request: &FollowerFetch,
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<LeaderAnswer, FetchRefusal> {
        {
            let replica = self.replica();
            if replica.role != Role::Leader {
                return Err(FetchRefusal::NotLeader);
            }
            if request.current_epoch < replica.epoch {
                return Err(FetchRefusal::FencedEpoch);
            }
            if request.current_epoch > replica.epoch {
                return Err(FetchRefusal::UnknownEpoch);
            }
        }
        if self.offline.load(Ordering::Relaxed) || self.is_deleted() {
            return Err(FetchRefusal::Storage);
        }
        let (log_end, local_start, diverging) = {
            let log = self.lock();
            let log_end = log.log_end_offset();
            let local_start = log.log_start_offset();
            // Below our local log start the follower must restart from it (OutOfRange),
            // whatever its epoch says: truncating could never bring it into range.
            let diverging = if request.fetch_offset < local_start {
                None
            } else if request.last_fetched_epoch >= 0 || request.fetch_offset > log_end {
                match log.epoch_end_offset(request.last_fetched_epoch) {
                    Some((epoch, end))
                        if epoch == request.last_fetched_epoch && end >= request.fetch_offset =>
                    {
                        None
                    }
                    Some(found) => Some(found),
                    // No epochs here (an empty log): only an offset past our end diverges.
                    None => (request.fetch_offset > log_end).then_some((-1, log_end)),
                }
            } else {
                None
            };
            (log_end, local_start, diverging)
        };
        let mut answer = LeaderAnswer {
            outcome: FollowerOutcome::Records(Bytes::new()),
            high_watermark: self.high_watermark(),
            log_start_offset: self.watermarks().log_start_offset,
            local_log_start_offset: local_start,
            log_end_offset: log_end,
            remote_end_offset: self.remote_bounds().map_or(-1, |b| b.end),
            segment_base: -1,
        };
        if request.fetch_offset < local_start {
            answer.outcome = FollowerOutcome::OutOfRange;
            return Ok(answer);
        }
        if let Some((epoch, end_offset)) = diverging {
            answer.outcome = FollowerOutcome::Diverging { epoch, end_offset };
            return Ok(answer);
        }
        self.replica()
            .record_fetch(request.replica_id, request.fetch_offset, log_end, now_ms);
        self.advance_high_watermark();
        answer.high_watermark = self.high_watermark();
        if request.fetch_offset < log_end && max_bytes > 0 {
            let (records, _) = self
                .read_upto(request.fetch_offset, max_bytes, log_end)
                .map_err(|_| FetchRefusal::Storage)?;
            if let Some(first) = records.get(..8) {
                let first = i64::from_be_bytes(first.try_into().unwrap_or_default());
                answer.segment_base = self.lock().segment_base_of(first);
            }
            answer.outcome = FollowerOutcome::Records(records);
        }
        Ok(answer)
    }

    /// A follower's append of what its leader sent, then its high watermark: the
    /// leader's, capped at its own log end.
    pub async fn append_from_leader(
        &self,
        records: &Bytes,
        leader_high_watermark: i64,
        leader_segment_base: i64,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        if !records.is_empty() {
            let prepared = log::prepare_replica(records).map_err(LogError::from)?;
            let (sync, dir) = {
                let mut log = self.lock();
                if self.deleted.load(Ordering::Relaxed) {
                    return Err(PartitionError::Deleted);
                }
                if self.offline.load(Ordering::Relaxed) {
                    return Err(PartitionError::Offline);
                }
                let (_, sync) = log.append_replica(prepared, leader_segment_base, now_ms)?;
                self.log_end.send_replace(log.log_end_offset());
                (sync, log.dir().to_path_buf())
            };
            if let Some(file) = sync
                && let Err(source) = blocking(move || file.sync_data()).await
            {
                let error = LogError::Io { dir, source };
                self.take_offline(&error);
                return Err(error.into());
            }
        }
        let end = self.lock().log_end_offset().min(leader_high_watermark);
        self.high_watermark.send_if_modified(|hw| {
            let advanced = end > *hw;
            *hw = (*hw).max(end);
            advanced
        });
        Ok(())
    }

    /// A follower of a partition without a remote tier follows the leader's log start
    /// (DeleteRecords, retention), up to its own high watermark. Tiered partitions follow
    /// the manifest instead.
    pub fn follow_log_start(&self, leader_log_start: i64) -> Result<(), PartitionError> {
        if self.remote_bounds().is_some() {
            return Ok(());
        }
        let high_watermark = self.high_watermark();
        let mut log = self.lock();
        let target = leader_log_start.min(high_watermark);
        if target > log.log_start_offset() {
            log.delete_records_before(target)?;
        }
        Ok(())
    }

    /// A follower whose log diverged from its leader's: truncates to where they agree.
    pub fn truncate_diverging(
        &self,
        epoch: i32,
        end_offset: i64,
        now_ms: i64,
    ) -> Result<i64, PartitionError> {
        if self.offline.load(Ordering::Relaxed) {
            return Err(PartitionError::Offline);
        }
        let mut log = self.lock();
        let own_end = if epoch < 0 {
            log.log_end_offset()
        } else {
            log.epoch_end_offset(epoch)
                .map_or(log.log_end_offset(), |(_, end)| end)
        };
        let target = end_offset.min(own_end);
        let end = log.truncate_to(target, now_ms)?;
        self.log_end.send_replace(end);
        self.high_watermark.send_if_modified(|hw| {
            let lowered = *hw > end;
            *hw = (*hw).min(end);
            lowered
        });
        Ok(end)
    }

    /// Restarts the local log empty at `offset` (below the leader's local log start, or
    /// an empty disk), with producer state from the bucket if given.
    pub fn reset_log(
        &self,
        offset: i64,
        producers: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        if self.offline.load(Ordering::Relaxed) {
            return Err(PartitionError::Offline);
        }
        let mut log = self.lock();
        log.reset_to(offset, producers, now_ms)?;
        self.log_end.send_replace(offset);
        self.high_watermark.send_replace(offset);
        Ok(())
    }

    /// Reads whole batches of the local log from `offset` below the high watermark, at
    /// most `max_bytes` unless the first batch alone is larger. The file read happens
    /// without the lock. Consumers' reads go through [`Partition::read`], which also
    /// knows the remote tier.
    #[tracing::instrument(target = "strata::trace", level = "trace", name = "log.read",
        skip_all, fields(topic = %self.topic, partition = self.index, offset = offset, max_bytes = max_bytes))]
    pub fn read_local(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, Watermarks), PartitionError> {
        self.read_upto(offset, max_bytes, self.high_watermark())
    }

    /// Like [`Partition::read_local`], below `limit` instead of the high watermark (a
    /// leader serving its followers reads up to its log end).
    pub fn read_upto(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: i64,
    ) -> Result<(Bytes, Watermarks), PartitionError> {
        self.read_upto_with(offset, max_bytes, limit, false)
            .map(|(records, marks, _)| (records, marks))
    }

    /// [`Partition::read_upto`], and with `aborted` the aborted transactions among the
    /// records returned, taken under the same lock as the read's segment (so a
    /// compaction swap cannot remove an entry whose records the read still returns).
    pub fn read_upto_with(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: i64,
        aborted: bool,
    ) -> Result<(Bytes, Watermarks, Vec<log::txn::AbortedTxn>), PartitionError> {
        if self.offline.load(Ordering::Relaxed) {
            return Err(PartitionError::Offline);
        }
        let high_watermark = self.high_watermark();
        let mut offset = offset;
        loop {
            let (location, log_start_offset, dir, next_base, last_stable_offset, mut listed) = {
                let log = self.lock();
                (
                    log.locate(offset)?,
                    log.log_start_offset(),
                    log.dir().to_path_buf(),
                    log.next_segment_base(offset),
                    last_stable(&log, high_watermark),
                    // One segment per read: its entries, not the whole log's.
                    if aborted {
                        let segment_end = log.next_segment_base(offset).unwrap_or(limit);
                        log.aborted_overlapping(offset, limit.min(segment_end))
                    } else {
                        Vec::new()
                    },
                )
            };
            let marks = Watermarks {
                log_start_offset: self.log_start_offset(log_start_offset),
                high_watermark,
                last_stable_offset,
            };
            let records = match location {
                Some(location) if offset < limit => {
                    let read = log::read_batches(&location, offset, max_bytes, limit);
                    self.check_read(&location, dir, read)?
                }
                _ => Bytes::new(),
            };
            // Compaction may have emptied the rest of this segment: go on to the next.
            match next_base {
                Some(next) if records.is_empty() && next < limit && next > offset => {
                    offset = next;
                }
                _ => {
                    let end = log::txn::records_end(&records).unwrap_or(offset);
                    listed.retain(|a| a.first_offset < end);
                    return Ok((records, marks, listed));
                }
            }
        }
    }

    /// One compaction pass if one is due (see [`log::cleaner`]). Returns the bytes it
    /// removed, or `None` if nothing was due or the pass was put off.
    ///
    /// For a tiered log the pass holds the partition's upload slot from its remote part
    /// to its swap, so no upload reads a segment being replaced and no upload commits
    /// while the remote tier is compacted: `remote_part` (compaction of the remote tier
    /// with the pass's key map) runs first, and only if it finished does the local swap
    /// move the first dirty offset on. Otherwise the next pass rebuilds the same map and
    /// retries, so no superseded record stays in the bucket for want of a map.
    pub async fn clean<F, Fut>(
        &self,
        now_ms: i64,
        max_keys: usize,
        remote_part: F,
    ) -> Result<Option<u64>, PartitionError>
    where
        F: FnOnce(Arc<log::cleaner::OffsetMap>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let (plan, tiered) = {
            let log = self.lock();
            if self.deleted.load(Ordering::Relaxed) || self.offline.load(Ordering::Relaxed) {
                return Ok(None);
            }
            (log.clean_plan(now_ms), log.config().remote_storage)
        };
        let Some(mut plan) = plan else {
            return Ok(None);
        };
        // Before the first upload the remote end is "nothing": every cleaned segment may
        // be the one uploading.
        let upload_end = || tiered.then(|| self.remote_bounds().map_or(i64::MIN, |b| b.end));
        plan.upload_end = upload_end();
        // Records above the high watermark may still be truncated away.
        plan.stable_end = plan.stable_end.min(self.high_watermark());
        let dir = plan.dir.clone();
        let staged = blocking(move || log::cleaner::stage(&plan, now_ms, max_keys))
            .await
            .map_err(|source| LogError::Io { dir, source })?;
        if tiered && self.uploading.swap(true, Ordering::AcqRel) {
            // An upload is running: try again next round.
            self.lock().discard_clean();
            return Ok(None);
        }
        // Gives the upload slot back however the pass ends, a panic included (the
        // supervised cleaner restarts; uploads must not stop with it).
        let _slot = tiered.then_some(UploadSlot(&self.uploading));
        if remote_part(staged.map.clone()).await {
            let mut log = self.lock();
            if self.deleted.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let finished = log.finish_clean_within(staged, now_ms, upload_end());
            if let Err(error) = &finished {
                // A swap that failed may have committed (its marker is written) and left
                // the files half-replaced: only start-up recovery can finish it, from the
                // staged copy it keeps. Until then nothing may read or change the log.
                self.take_offline(error);
            }
            Ok(finished.map(Some)?)
        } else {
            self.lock().discard_clean();
            Ok(None)
        }
    }

    pub fn dir(&self) -> std::path::PathBuf {
        self.lock().dir().to_path_buf()
    }

    /// ListOffsets by timestamp: the first record with timestamp >= `timestamp`, in the
    /// remote tier (older data) first, then the local log. The decoding happens outside
    /// the lock.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, PartitionError> {
        // The bucket answers for its records even while the local log is offline.
        if let Some(tier) = &self.remote
            && self.remote_bounds().is_some_and(|b| b.end > b.start)
            && let Some(found) =
                remote::remote_offset_for_timestamp(&tier.reader, &tier.log, timestamp).await?
        {
            return Ok(Some(found));
        }
        if self.offline.load(Ordering::Relaxed) {
            return Err(PartitionError::Offline);
        }
        let (location, log_start_offset, dir) = {
            let log = self.lock();
            (
                log.locate_timestamp(timestamp)?,
                log.log_start_offset(),
                log.dir().to_path_buf(),
            )
        };
        let Some(location) = location else {
            return Ok(None);
        };
        let high_watermark = self.high_watermark();
        let found = heavy_decode({
            let location = location.clone();
            move || log::find_timestamp(&location, timestamp, log_start_offset, high_watermark)
        })
        .await?;
        self.check_read(&location, dir, found)
    }

    /// ListOffsets MAX_TIMESTAMP: the record with the largest timestamp, over both tiers
    /// (the remote tier's record when its largest timestamp is at least the local one's:
    /// the earlier record of a tie).
    pub async fn max_timestamp(&self) -> Result<Option<(i64, i64)>, PartitionError> {
        if self.offline.load(Ordering::Relaxed) {
            return Err(PartitionError::Offline);
        }
        let local = self.local_max_timestamp().await?;
        if let Some(tier) = &self.remote
            && self.remote_bounds().is_some_and(|b| b.end > b.start)
        {
            let at_least = local.map_or(i64::MIN, |(_, timestamp)| timestamp);
            if let Some(found) =
                remote::remote_max_timestamp(&tier.reader, &tier.log, at_least).await?
            {
                return Ok(Some(found));
            }
        }
        Ok(local)
    }

    async fn local_max_timestamp(&self) -> Result<Option<(i64, i64)>, PartitionError> {
        let (found, dir) = {
            let log = self.lock();
            (log.locate_max_timestamp()?, log.dir().to_path_buf())
        };
        let Some((location, batch_offset)) = found else {
            return Ok(None);
        };
        let found = heavy_decode({
            let location = location.clone();
            move || log::max_timestamp_record(&location, batch_offset)
        })
        .await?;
        self.check_read(&location, dir, found)
    }

    /// Deals with what a local read found. An index that led the read astray is rebuilt.
    /// Damaged data is counted and logged (once a minute per partition at most) and, when
    /// the remote tier holds the damaged segment, the local copy is dropped so that reads
    /// of it go to the remote tier (the caller's retry finds it there); otherwise the
    /// read fails with [`LogError::Damaged`] (KAFKA_STORAGE_ERROR) and the rest of the
    /// log keeps serving.
    fn check_read<T>(
        &self,
        location: &log::Location,
        dir: std::path::PathBuf,
        result: std::io::Result<T>,
    ) -> Result<T, PartitionError> {
        let label = || format!("{}-{}", self.topic, self.index);
        // A partition taken offline or deleted meanwhile is left as it is.
        let usable = || !self.offline.load(Ordering::Relaxed) && !self.is_deleted();
        // Only a read that succeeded from the segment's start proves the index wrong.
        if result.is_ok() && location.index_damaged.load(Ordering::Relaxed) && usable() {
            let log_it = log::damage::found("local", "index", &label());
            let rebuilt = self.lock().rebuild_indexes(location.base_offset);
            if matches!(rebuilt, Ok(true)) {
                log::damage::repaired("local_index_rebuilt");
            }
            if log_it {
                warn!(partition = %label(), segment = location.base_offset, rebuilt = ?rebuilt,
                    "a segment index pointed away from its batch; the segment was scanned and its indexes rebuilt");
            }
        }
        let source = match result {
            Ok(value) => return Ok(value),
            Err(source) => source,
        };
        let Some(damage) = log::damage_of(&source).cloned() else {
            return Err(LogError::Io { dir, source }.into());
        };
        let log_it = log::damage::found("local", "batch", &label());
        let dropped = match self.remote_bounds() {
            Some(bounds) if usable() => self.lock().drop_damaged_local(damage.segment_base, bounds),
            _ => Ok(false),
        };
        if matches!(dropped, Ok(true)) {
            log::damage::repaired("local_dropped_for_remote");
            warn!(partition = %label(), %damage,
                "damaged local segment dropped: the remote tier holds it and serves its reads");
        } else if log_it {
            warn!(partition = %label(), %damage, drop_error = ?dropped.err(),
                "damaged local segment: reads of it fail with KAFKA_STORAGE_ERROR (no remote copy to serve them)");
        }
        Err(LogError::Damaged { dir, damage }.into())
    }

    /// DeleteRecords: `-1` means the high watermark; nothing at or past it can be deleted.
    /// The remote tier's start moves first (manifest commit), then the local log's, so a
    /// failure leaves the records readable rather than half-deleted. Returns the new log
    /// start offset across both tiers.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, PartitionError> {
        if self.offline.load(Ordering::Relaxed) {
            return Err(PartitionError::Offline);
        }
        let epoch = self.leading_epoch().ok_or(PartitionError::NotLeader)?;
        let high_watermark = self.high_watermark();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset > high_watermark || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.watermarks().log_start_offset,
                log_end_offset: high_watermark,
            }
            .into());
        }
        // A tiered partition's manifest records the new start even before its first
        // upload, so that upload cannot bring the deleted records back.
        let tiered = self.lock().config().remote_storage;
        let remote_start = self.remote_bounds().map(|b| b.start);
        if let Some(remote) = self.remote()
            && (tiered || remote_start.is_some())
            && remote_start.is_none_or(|start| offset > start)
        {
            remote
                .advance_start(offset, epoch)
                .await
                .map_err(|e| PartitionError::Remote(e.into()))?;
        }
        let local_start = self.lock().delete_records_before(offset)?;
        Ok(self.log_start_offset(local_start))
    }

    /// Periodic work: segment.ms rolls, retention, flush.ms, closing the files of an idle
    /// active segment (`release_idle_ms`, see [`Log::release_idle_files`]). Returns what
    /// retention removed.
    pub async fn housekeeping(
        &self,
        now_ms: i64,
        force_flush: bool,
        producer_expiration_ms: i64,
        release_idle_ms: i64,
    ) -> Result<RetentionOutcome, PartitionError> {
        // The role first: the replica lock is never taken while holding the log lock.
        let leader = self.is_leader();
        let (outcome, plan) = {
            let mut log = self.lock();
            if self.deleted.load(Ordering::Relaxed) || self.offline.load(Ordering::Relaxed) {
                return Ok(RetentionOutcome::default());
            }
            log.expire_producers(now_ms, producer_expiration_ms);
            // Followers roll where their leader does (see `Log::append_replica`).
            if leader {
                log.roll_if_expired(now_ms)?;
            }
            let outcome = log.apply_retention(now_ms, self.remote_bounds())?;
            (outcome, log.plan_flush(now_ms, force_flush)?)
        };
        if let Some(plan) = plan {
            let dir = self.lock().dir().to_path_buf();
            let plan = match blocking(move || plan.sync().map(|()| plan)).await {
                Ok(plan) => plan,
                Err(source) => {
                    let error = LogError::Io { dir, source };
                    self.take_offline(&error);
                    return Err(error.into());
                }
            };
            // The checkpoint is prepared under the lock and written without it, off the
            // async workers: its fsyncs must not hold up appends (see log::checkpoint).
            let (write, dir) = {
                let mut log = self.lock();
                if self.deleted.load(Ordering::Relaxed) || self.offline.load(Ordering::Relaxed) {
                    return Ok(outcome);
                }
                let dir = log.dir().to_path_buf();
                match log.finish_flush(plan) {
                    Ok(write) => (write, dir),
                    Err(source) => return Err(LogError::Io { dir, source }.into()),
                }
            };
            blocking(move || write.write())
                .await
                .map_err(|source| LogError::Io { dir, source })?;
        }
        self.lock().release_idle_files(now_ms, release_idle_ms);
        Ok(outcome)
    }

    /// Sizes for /metrics: (bytes, segments, log end offset, log start offset).
    pub fn stats(&self) -> (u64, usize, i64, i64) {
        let log = self.lock();
        (
            log.size_bytes(),
            log.segment_count(),
            log.log_end_offset(),
            log.log_start_offset(),
        )
    }

    /// Closes the log and removes its files (topic deletion).
    pub fn delete_files(&self) -> std::io::Result<()> {
        let log = self.lock();
        self.deleted.store(true, Ordering::Relaxed);
        // Appends waiting for the ISR answer now (UNKNOWN_TOPIC_OR_PARTITION), not at
        // their timeout.
        self.high_watermark.send_modify(|_| {});
        log.close_checkpoints();
        match std::fs::remove_dir_all(log.dir()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
