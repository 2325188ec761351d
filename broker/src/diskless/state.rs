//! The records of a diskless partition as the metadata store holds them (`Head`, `Run`,
//! `ProducerEntry`, all JSON, version field `v` on the head) and the pure logic of an
//! append commit: which batches are retries, which are refused, what offsets the rest
//! get, and the head, runs and producer entries the commit writes.
//!
//! The logic is pure so that it runs twice with the same result: once against this
//! broker's view before the shared object is written (batches refused or recognised as
//! retries are answered at once and never stored), and once against the stored state at
//! commit time (another broker may have appended meanwhile: a retry of the same batch
//! through another broker is then a duplicate here).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::producers::{BatchMeta, CACHED_BATCHES, ProducerError, Verdict, check_sequence};
use crate::log::txn::Marker;

/// Open transactions a partition's head holds at most: a transactional batch that would
/// open one more is refused (retriable, as the other diskless backpressure), so the
/// head, written whole at every commit, stays small.
pub const MAX_OPEN_TRANSACTIONS: usize = 256;

/// The layout version of [`Head`].
pub const HEAD_VERSION: u32 = 1;

/// A diskless partition: the topic's id and the partition index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionKey {
    pub topic_id: Uuid,
    pub partition: i32,
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic_id.simple(), self.partition)
    }
}

/// `diskless/<topic_id>/<partition>/head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub v: u32,
    /// The first offset a consumer can read.
    pub log_start: i64,
    /// The log end offset and high watermark: every committed offset is below it.
    pub next: i64,
    /// Every offset below it is in the partition's manifest (merged segments).
    pub merged: i64,
    /// Run records not yet merged.
    pub runs: u32,
    /// Their bytes.
    pub run_bytes: u64,
    /// Open transactions: producer id → the offset of its first transactional batch in
    /// this partition since its last marker. The oldest bounds the last stable offset
    /// ([`Head::last_stable`]). Empty (and absent from the JSON) without transactions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub open: BTreeMap<i64, i64>,
}

impl Head {
    /// The last stable offset: the first offset of the oldest open transaction, or
    /// `next` when none is open. read_committed consumers read below it only, and
    /// merging stops at it.
    pub fn last_stable(&self) -> i64 {
        self.open
            .values()
            .copied()
            .min()
            .unwrap_or(self.next)
            .min(self.next)
    }
}

impl Default for Head {
    fn default() -> Head {
        Head {
            v: HEAD_VERSION,
            log_start: 0,
            next: 0,
            merged: 0,
            runs: 0,
            run_bytes: 0,
            open: BTreeMap::new(),
        }
    }
}

/// `diskless/<topic_id>/<partition>/runs/<base:020>`: a range of offsets stored as a
/// contiguous byte range of one shared object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The shared object's key, relative to the store root.
    pub key: String,
    /// The whole object's size.
    pub size: u64,
    /// Where this partition's batches start in the object, and their length.
    pub pos: u64,
    pub len: u64,
    /// First offset, and the offset after the last (exclusive).
    pub base: i64,
    pub end: i64,
    pub max_ts: i64,
    /// When it was committed (ms).
    pub at: i64,
    /// The broker that wrote the object.
    pub broker: i32,
    pub batches: u32,
    /// The transactions aborted by a marker in this run (the aborted-transaction index
    /// entry lives with its abort marker, as in the local log's `.txnindex`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aborted: Vec<AbortedEntry>,
}

/// An aborted transaction: `[producer_id, first_offset, last_offset (the abort marker),
/// last_stable_offset when the marker was committed]`, as
/// [`crate::log::txn::AbortedTxn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedEntry(pub i64, pub i64, pub i64, pub i64);

impl From<AbortedEntry> for crate::log::txn::AbortedTxn {
    fn from(e: AbortedEntry) -> Self {
        crate::log::txn::AbortedTxn {
            producer_id: e.0,
            first_offset: e.1,
            last_offset: e.2,
            last_stable_offset: e.3,
        }
    }
}

/// One batch an idempotent producer wrote: `[first_seq, last_seq, base_offset,
/// last_offset]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBatch(pub i32, pub i32, pub i64, pub i64);

/// `diskless/<topic_id>/<partition>/producers/<producer_id>`: the idempotence home of one
/// producer in one partition, which every broker checks a batch against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The last few batches, oldest first (at most [`CACHED_BATCHES`]).
    pub batches: Vec<ProducerBatch>,
    /// When it last wrote (ms), for expiry.
    pub last_ms: i64,
    /// The max timestamp of its last batch.
    pub last_ts: i64,
}

/// A partition's stored state. `head_version` is the store's version of the head (etcd:
/// its mod_revision); 0 means no head is stored yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    pub head: Head,
    pub head_version: u64,
    pub runs: BTreeMap<i64, Run>,
    pub producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerEntry {
    /// The checks of `crate::log::producers::ProducerState::check`, against this entry.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Result<Verdict, ProducerError> {
        let batches = self.batches.iter().map(|b| BatchMeta {
            first_sequence: b.0,
            last_sequence: b.1,
            base_offset: b.2,
            last_offset: b.3,
        });
        check_sequence(
            self.epoch,
            batches,
            producer_id,
            epoch,
            first_sequence,
            last_sequence,
        )
    }

    /// A transaction marker of `epoch` appended: a newer epoch (the coordinator bumped it
    /// to end a transaction) fences the older one's batches.
    fn record_marker(&mut self, epoch: i16, max_ts: i64, now_ms: i64) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        self.last_ms = self.last_ms.max(now_ms);
        self.last_ts = max_ts;
    }

    fn record(&mut self, epoch: i16, batch: ProducerBatch, max_ts: i64, now_ms: i64) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        self.batches.push(batch);
        if self.batches.len() > CACHED_BATCHES {
            let extra = self.batches.len() - CACHED_BATCHES;
            self.batches.drain(..extra);
        }
        self.last_ms = self.last_ms.max(now_ms);
        self.last_ts = max_ts;
    }
}

/// What a pending batch is, for the transaction rules of [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// A plain or idempotent batch.
    Data,
    /// A transactional data batch. `verified`: its producer's coordinator confirmed the
    /// partition is in the open transaction before the batch was queued (done when the
    /// view showed no transaction of the producer open here); an unverified batch only
    /// joins a transaction the partition has open.
    Transactional { verified: bool },
    /// A transaction marker written for the coordinator (no sequence: only its epoch is
    /// checked).
    Marker(Marker),
}

/// A batch waiting to be committed, as far as the commit logic needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingBatch {
    pub kind: BatchKind,
    /// -1: not idempotent.
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    /// Records in the batch (the offsets it takes), at least 1.
    pub records: i32,
    pub max_ts: i64,
    /// Where its bytes are in the shared object.
    pub pos: u64,
    pub len: u64,
}

impl PendingBatch {
    fn last_sequence(&self) -> i32 {
        // Sequences wrap at i32::MAX, as Kafka's do.
        let last = i64::from(self.first_sequence) + i64::from(self.records) - 1;
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }
}

/// What happened to one batch of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Appended at `base_offset`.
    Appended {
        base_offset: i64,
    },
    /// A retry of a batch stored before, at this base offset: not stored again.
    Duplicate {
        base_offset: i64,
    },
    Refused(ProducerErrorKind),
}

/// The idempotence and transaction refusals, each one Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerErrorKind {
    /// INVALID_PRODUCER_EPOCH.
    Fenced,
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    OutOfOrder,
    /// A non-transactional batch of a producer whose transaction is open here:
    /// INVALID_TXN_STATE.
    InvalidTxnState,
    /// A transactional batch of a newer epoch while the transaction of the older one is
    /// open here (its marker is still to come): NOT_ENOUGH_REPLICAS, retried.
    MarkerPending,
    /// A transactional batch not verified with the coordinator, and no transaction of its
    /// producer open here (a marker ended it since the produce looked): retried, and the
    /// retry is verified. NOT_ENOUGH_REPLICAS.
    NotVerified,
    /// The batch would open more than [`MAX_OPEN_TRANSACTIONS`] transactions in the
    /// partition: KAFKA_STORAGE_ERROR, retried.
    TooManyTransactions,
}

/// The result of planning a commit for one partition: per batch its outcome, and what
/// the commit writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub outcomes: Vec<Outcome>,
    pub head: Head,
    /// One run per contiguous stretch of appended batches in the object: usually one;
    /// more when a batch in the middle turned out a retry or was refused at commit time.
    pub runs: Vec<Run>,
    /// Producer entries that changed.
    pub producers: BTreeMap<i64, ProducerEntry>,
}

impl Plan {
    pub fn appended(&self) -> bool {
        !self.runs.is_empty()
    }
}

/// Where the batches of a commit are stored and who commits them.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub broker: i32,
    pub now_ms: i64,
}

/// Plans appending `batches` (in the order they are stored in the object) to `state`.
/// Pure: `state` is not changed; [`PartitionState::apply`] applies the plan.
pub fn plan(state: &PartitionState, batches: &[PendingBatch], object: &ObjectInfo) -> Plan {
    let mut head = state.head.clone();
    let mut producers: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(batches.len());
    let mut runs: Vec<Run> = Vec::new();
    // Whether the previous batch was appended (a run continues only over appended ones).
    let mut extending = false;
    for batch in batches {
        let current = producers
            .get(&batch.producer_id)
            .or_else(|| state.producers.get(&batch.producer_id));
        let verdict = match batch.kind {
            // A marker has no sequence: only its epoch is checked.
            BatchKind::Marker(_) => match current {
                Some(entry) if batch.epoch < entry.epoch => Err(ProducerErrorKind::Fenced),
                _ => Ok(Verdict::Append),
            },
            _ if batch.producer_id < 0 => Ok(Verdict::Append),
            kind => match current.map(|entry| {
                entry.check(
                    batch.producer_id,
                    batch.epoch,
                    batch.first_sequence,
                    batch.last_sequence(),
                )
            }) {
                None | Some(Ok(Verdict::Append)) => {
                    transaction_rule(&head, current, batch, kind).map(|()| Verdict::Append)
                }
                Some(Ok(duplicate)) => Ok(duplicate),
                Some(Err(ProducerError::Fenced { .. })) => Err(ProducerErrorKind::Fenced),
                Some(Err(_)) => Err(ProducerErrorKind::OutOfOrder),
            },
        };
        let outcome = match verdict {
            Ok(Verdict::Append) => {
                let base_offset = head.next;
                let last_offset = base_offset + i64::from(batch.records.max(1)) - 1;
                head.next = last_offset + 1;
                match runs.last_mut().filter(|_| extending) {
                    Some(run) => {
                        run.len += batch.len;
                        run.end = head.next;
                        run.max_ts = run.max_ts.max(batch.max_ts);
                        run.batches += 1;
                    }
                    None => runs.push(Run {
                        key: object.key.clone(),
                        size: object.size,
                        pos: batch.pos,
                        len: batch.len,
                        base: base_offset,
                        end: head.next,
                        max_ts: batch.max_ts,
                        at: object.now_ms,
                        broker: object.broker,
                        batches: 1,
                        aborted: Vec::new(),
                    }),
                }
                if batch.producer_id >= 0 {
                    let entry =
                        producers.entry(batch.producer_id).or_insert_with(|| {
                            state.producers.get(&batch.producer_id).cloned().unwrap_or(
                                ProducerEntry {
                                    epoch: batch.epoch,
                                    batches: Vec::new(),
                                    last_ms: object.now_ms,
                                    last_ts: batch.max_ts,
                                },
                            )
                        });
                    match batch.kind {
                        BatchKind::Marker(marker) => {
                            entry.record_marker(batch.epoch, batch.max_ts, object.now_ms);
                            let first = head.open.remove(&batch.producer_id);
                            if let (Marker::Abort, Some(first)) = (marker, first) {
                                let entry = AbortedEntry(
                                    batch.producer_id,
                                    first,
                                    base_offset,
                                    head.last_stable(),
                                );
                                // The run just extended or pushed holds the marker.
                                if let Some(run) = runs.last_mut() {
                                    run.aborted.push(entry);
                                }
                            }
                        }
                        kind => {
                            entry.record(
                                batch.epoch,
                                ProducerBatch(
                                    batch.first_sequence,
                                    batch.last_sequence(),
                                    base_offset,
                                    last_offset,
                                ),
                                batch.max_ts,
                                object.now_ms,
                            );
                            if matches!(kind, BatchKind::Transactional { .. }) {
                                head.open.entry(batch.producer_id).or_insert(base_offset);
                            }
                        }
                    }
                }
                extending = true;
                Outcome::Appended { base_offset }
            }
            Ok(Verdict::Duplicate { base_offset, .. }) => {
                extending = false;
                Outcome::Duplicate { base_offset }
            }
            Err(kind) => {
                extending = false;
                Outcome::Refused(kind)
            }
        };
        outcomes.push(outcome);
    }
    head.runs = head.runs.saturating_add(runs.len() as u32);
    head.run_bytes = head
        .run_bytes
        .saturating_add(runs.iter().map(|r| r.len).sum::<u64>());
    Plan {
        outcomes,
        head,
        runs,
        producers,
    }
}

/// The transaction rules for a data batch the sequence check accepted, against the head
/// planned so far and its producer's entry (whose epoch is the open transaction's: a
/// transaction's batches share its epoch, and only its marker moves it).
fn transaction_rule(
    head: &Head,
    entry: Option<&ProducerEntry>,
    batch: &PendingBatch,
    kind: BatchKind,
) -> Result<(), ProducerErrorKind> {
    let open = head.open.contains_key(&batch.producer_id);
    let open_epoch = entry.map_or(batch.epoch, |e| e.epoch);
    match kind {
        BatchKind::Data if open => Err(ProducerErrorKind::InvalidTxnState),
        BatchKind::Transactional { .. } if open && batch.epoch > open_epoch => {
            Err(ProducerErrorKind::MarkerPending)
        }
        BatchKind::Transactional { verified: false } if !open => {
            Err(ProducerErrorKind::NotVerified)
        }
        BatchKind::Transactional { .. } if !open && head.open.len() >= MAX_OPEN_TRANSACTIONS => {
            Err(ProducerErrorKind::TooManyTransactions)
        }
        _ => Ok(()),
    }
}

/// Producer entries a commit deletes at most, keeping the transaction small.
pub const EXPIRE_PER_COMMIT: usize = 10;

impl PartitionState {
    /// Producers idle for `expiration_ms` (`producer_id_expiration_ms`) as of `now_ms`,
    /// at most [`EXPIRE_PER_COMMIT`], oldest first: a commit to the partition deletes
    /// them, so the metadata store keeps no entry for every producer that ever wrote.
    /// As in Kafka, a producer that comes back after its expiry is taken as new. A
    /// producer with a transaction open here is never expired (its marker needs its
    /// epoch; transaction.timeout.ms bounds how long it stays open).
    pub fn expired_producers(&self, now_ms: i64, expiration_ms: i64) -> Vec<i64> {
        let mut idle: Vec<(i64, i64)> = self
            .producers
            .iter()
            .filter(|(id, _)| !self.head.open.contains_key(id))
            .filter(|(_, e)| e.last_ms < now_ms.saturating_sub(expiration_ms))
            .map(|(id, e)| (e.last_ms, *id))
            .collect();
        idle.sort_unstable();
        idle.into_iter()
            .take(EXPIRE_PER_COMMIT)
            .map(|(_, id)| id)
            .collect()
    }

    /// This state after `plan` was committed at store version `version`.
    pub fn apply(&mut self, plan: &Plan, version: u64) {
        self.head = plan.head.clone();
        self.head_version = version;
        for run in &plan.runs {
            self.runs.insert(run.base, run.clone());
        }
        for (id, entry) in &plan.producers {
            self.producers.insert(*id, entry.clone());
        }
    }

    /// The runs a reader uses: those at or above `merged` (runs below it linger between a
    /// merge commit and the trim).
    pub fn live_runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.range(self.head.merged..).map(|(_, r)| r)
    }

    /// Whether the runs at or above `merged` are contiguous and end at `next`: the
    /// invariant every commit keeps.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = None;
        for run in self.live_runs() {
            if expected.is_some_and(|e| e != run.base) || run.end <= run.base {
                return false;
            }
            expected = Some(run.end);
        }
        expected.is_none_or(|end| end == self.head.next)
    }
}

#[cfg(test)]
mod tests;
