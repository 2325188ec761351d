//! Idempotent producers: per-partition producer state and its snapshot file.
//!
//! For each producer id the partition remembers its epoch and its last few batches
//! (sequence range and offsets). An append from an idempotent producer is checked against
//! it under the log lock:
//!
//! - an older epoch is fenced (INVALID_PRODUCER_EPOCH);
//! - a newer epoch must start at sequence 0;
//! - a batch whose sequences match one of the last [`CACHED_BATCHES`] batches is a retry:
//!   it is not appended again, and the answer is the original batch's base offset;
//! - otherwise the batch must continue the last sequence (OUT_OF_ORDER_SEQUENCE_NUMBER);
//! - a producer the partition does not know (new, expired, or its state lost with an
//!   empty disk) is accepted at any sequence, as Kafka does since KIP-360.
//!
//! Producer ids expire `producer_id_expiration_ms` after their last append.
//!
//! Producers in a transaction ([`super::txn`]) also have the first offset of their open
//! transaction in this partition, set by their first transactional batch and cleared by
//! the transaction's marker; the smallest bounds the last stable offset. A producer with
//! an open transaction never expires.
//!
//! ## `producers.snapshot` (layout version 2)
//!
//! Written atomically next to `partition.checkpoint` whenever the state changed and a
//! checkpoint is written. On start-up it is loaded, batches at or past the recovered log
//! end are dropped (they may have been torn off), and the batches recovery scans are
//! replayed on top. All integers big-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SPST` |
//! | 4 | 1 | layout version, 2 (1 and 3 are still read) |
//! | 5 | 4 | producer count N |
//! | 9 | .. | N producers |
//! | .. | .. | trailer (optional) |
//! | end-4 | 4 | CRC-32C of everything before |
//!
//! Producer: `producer_id: i64`, `epoch: i16`, `last_append_ms: i64`, then (version 2
//! and 3) `txn_first_offset: i64` (first offset of the open transaction, -1 if none),
//! `last_txn_first_offset: i64` and `last_marker_offset: i64` (the last transaction the
//! partition saw end, -1 if none: a truncation that removes its marker reopens it), then
//! (version 3 only) `last_timestamp: i64` and `coordinator_epoch: i32`, then
//! `batch count: u8`, then per batch `first_sequence: i32`, `last_sequence: i32`,
//! `base_offset: i64`, `last_offset: i64` (oldest first). Version 1 has no transaction
//! fields.
//!
//! Trailer (version 2): `count: u32` (= N), then per producer, in the order above,
//! `last_timestamp: i64` (the max timestamp of its last batch or marker, as Kafka's
//! DescribeProducers reports it) and `coordinator_epoch: i32` (of its last marker, -1
//! before one). Builds before the trailer stop reading after the N producers and
//! accept it (the CRC covers it), so a rollback or a rolling upgrade keeps the
//! transaction state; a snapshot without a trailer reads with `last_timestamp` =
//! `last_append_ms` and `coordinator_epoch` -1.
//!
//! Version 3 put those two fields inside each producer. Older builds refused it and
//! rebuilt producer state from the checkpoint alone, forgetting open transactions, so
//! it is no longer written; it is read because one build wrote it.

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::{Buf, BufMut, BytesMut};

/// Batches remembered per producer: librdkafka and the Java client keep at most five
/// requests in flight per partition with idempotence, so a retry is one of the last five.
pub const CACHED_BATCHES: usize = 5;
const MAGIC: &[u8; 4] = b"SPST";
const VERSION: u8 = 2;
/// The newest layout read; see the module doc for why version 3 is read and not written.
const NEWEST_READ: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

/// What a transaction marker tells about its producer besides its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerMeta {
    /// The marker batch's timestamp.
    pub timestamp: i64,
    /// The coordinator epoch written in the marker.
    pub coordinator_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    last_append_ms: i64,
    batches: VecDeque<BatchMeta>,
    /// First offset of the producer's open transaction here, -1 if none.
    txn_first_offset: i64,
    /// The last transaction that ended here: its first offset and its marker's offset.
    last_txn_first_offset: i64,
    last_marker_offset: i64,
    /// Max timestamp of its last batch or marker (Kafka's `lastTimestamp`).
    last_timestamp: i64,
    /// Coordinator epoch of its last marker, -1 before one.
    coordinator_epoch: i32,
}

impl Producer {
    fn new(epoch: i16, now_ms: i64) -> Producer {
        Producer {
            epoch,
            last_append_ms: now_ms,
            batches: VecDeque::new(),
            txn_first_offset: -1,
            last_txn_first_offset: -1,
            last_marker_offset: -1,
            last_timestamp: -1,
            coordinator_epoch: -1,
        }
    }
}

/// Why an idempotent batch was refused; each maps to one Kafka error code.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProducerError {
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    Fenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: sequence {got} does not follow {last}")]
    OutOfOrder {
        producer_id: i64,
        last: i32,
        got: i32,
    },
    #[error("producer {producer_id} wrote a transactional batch outside a verified transaction")]
    NotInTransaction { producer_id: i64 },
    #[error(
        "producer {producer_id} has a transaction open at epoch {open}: a batch of epoch {epoch} or without the transactional flag is refused until it ends"
    )]
    InvalidTxnState {
        producer_id: i64,
        epoch: i16,
        open: i16,
    },
    #[error(
        "producer {producer_id} begins a transaction at epoch {epoch} while the marker of its transaction at epoch {open} is still to come; retry"
    )]
    MarkerPending {
        producer_id: i64,
        epoch: i16,
        open: i16,
    },
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// A retry of a batch already in the log, at these offsets.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

/// One producer as DescribeProducers (KIP-664) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence of its last batch here, -1 if it wrote none at this epoch (a
    /// new epoch, or only a transaction marker).
    pub last_sequence: i32,
    /// Max timestamp of its last batch or marker here, ms since the epoch (Kafka's
    /// `lastTimestamp`).
    pub last_timestamp: i64,
    /// Coordinator epoch of its last transaction marker here, -1 before one.
    pub coordinator_epoch: i32,
    /// First offset of its open transaction here, -1 if none.
    pub txn_first_offset: i64,
}

/// Kafka's idempotence check of a batch (`producer_id`, `epoch`, sequences) against what a
/// partition knows of its producer: its epoch and its last few batches, oldest first.
/// Shared by the local log's producer state and the diskless partitions' stored entries.
pub fn check_sequence(
    known_epoch: i16,
    batches: impl DoubleEndedIterator<Item = BatchMeta> + Clone,
    producer_id: i64,
    epoch: i16,
    first_sequence: i32,
    last_sequence: i32,
) -> Result<Verdict, ProducerError> {
    if epoch < known_epoch {
        return Err(ProducerError::Fenced {
            producer_id,
            epoch,
            current: known_epoch,
        });
    }
    if epoch > known_epoch {
        return if first_sequence == 0 {
            Ok(Verdict::Append)
        } else {
            Err(ProducerError::OutOfOrder {
                producer_id,
                last: -1,
                got: first_sequence,
            })
        };
    }
    if let Some(b) = batches
        .clone()
        .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
    {
        return Ok(Verdict::Duplicate {
            base_offset: b.base_offset,
            last_offset: b.last_offset,
        });
    }
    match batches.last() {
        Some(last) if first_sequence != next_sequence(last.last_sequence) => {
            Err(ProducerError::OutOfOrder {
                producer_id,
                last: last.last_sequence,
                got: first_sequence,
            })
        }
        _ => Ok(Verdict::Append),
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, Producer>,
    /// Open transactions by (first offset, producer id): the first bounds the LSO.
    open: BTreeSet<(i64, i64)>,
    /// Changed since the last snapshot.
    dirty: bool,
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

impl ProducerState {
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Result<Verdict, ProducerError> {
        let Some(producer) = self.producers.get(&producer_id) else {
            return Ok(Verdict::Append);
        };
        check_sequence(
            producer.epoch,
            producer.batches.iter().copied(),
            producer_id,
            epoch,
            first_sequence,
            last_sequence,
        )
    }

    /// Records an appended batch (also used to replay batches at recovery, where a batch
    /// already known is ignored). A transactional batch opens the producer's transaction
    /// here unless one is open.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        batch: BatchMeta,
        max_timestamp: i64,
        transactional: bool,
        now_ms: i64,
    ) {
        let producer = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| Producer::new(epoch, now_ms));
        if epoch < producer.epoch
            || producer.batches.back().is_some_and(|last| {
                epoch == producer.epoch && batch.last_offset <= last.last_offset
            })
        {
            return;
        }
        if epoch > producer.epoch {
            producer.epoch = epoch;
            producer.batches.clear();
        }
        producer.last_append_ms = producer.last_append_ms.max(now_ms);
        producer.last_timestamp = max_timestamp;
        producer.batches.push_back(batch);
        while producer.batches.len() > CACHED_BATCHES {
            producer.batches.pop_front();
        }
        if transactional && producer.txn_first_offset < 0 {
            producer.txn_first_offset = batch.base_offset;
            self.open.insert((batch.base_offset, producer_id));
        }
        self.dirty = true;
    }

    /// A transactional batch without sequences (the broker's own, for TxnOffsetCommit):
    /// opens the producer's transaction here unless one is open.
    pub fn begin_transaction(
        &mut self,
        producer_id: i64,
        epoch: i16,
        offset: i64,
        max_timestamp: i64,
        now_ms: i64,
    ) {
        let producer = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| Producer::new(epoch, now_ms));
        // An older epoch's batch, or one the last marker already ended (a replay after a
        // crash starts from the checkpoint, which may be older than the snapshot).
        if epoch < producer.epoch || offset <= producer.last_marker_offset {
            return;
        }
        if epoch > producer.epoch {
            producer.epoch = epoch;
            producer.batches.clear();
        }
        producer.last_append_ms = producer.last_append_ms.max(now_ms);
        producer.last_timestamp = max_timestamp;
        if producer.txn_first_offset < 0 {
            producer.txn_first_offset = offset;
            self.open.insert((offset, producer_id));
        }
        self.dirty = true;
    }

    /// Checks a transaction marker's epoch: a marker of an older epoch than the
    /// producer's is fenced, as its batches would be.
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), ProducerError> {
        match self.producers.get(&producer_id) {
            Some(p) if epoch < p.epoch => Err(ProducerError::Fenced {
                producer_id,
                epoch,
                current: p.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Records a transaction marker at `offset`: the producer's open transaction ends
    /// (its first offset is returned, if one was open). A marker of a newer epoch (the
    /// coordinator bumped it to abort a timed-out transaction) fences the older one. At
    /// recovery a marker already known is ignored.
    pub fn record_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        offset: i64,
        marker: MarkerMeta,
        now_ms: i64,
    ) -> Option<i64> {
        let producer = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| Producer::new(epoch, now_ms));
        // Already applied (a replay), or older than the open transaction (a replay after
        // a truncation reopened it): not this transaction's marker.
        if epoch < producer.epoch
            || offset <= producer.last_marker_offset
            || (producer.txn_first_offset >= 0 && offset < producer.txn_first_offset)
        {
            return None;
        }
        if epoch > producer.epoch {
            producer.epoch = epoch;
            producer.batches.clear();
        }
        producer.last_append_ms = producer.last_append_ms.max(now_ms);
        let first = std::mem::replace(&mut producer.txn_first_offset, -1);
        if first >= 0 {
            self.open.remove(&(first, producer_id));
        }
        producer.last_txn_first_offset = first;
        producer.last_marker_offset = offset;
        producer.last_timestamp = marker.timestamp;
        producer.coordinator_epoch = marker.coordinator_epoch;
        self.dirty = true;
        (first >= 0).then_some(first)
    }

    /// Base offsets of each producer's last data batch and last marker: compaction keeps
    /// these batches, so a replica that rebuilds producer state from the log (a new one,
    /// or one without a snapshot) learns every producer's last sequence and epoch.
    pub fn last_batches(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.producers.len() * 2);
        for p in self.producers.values() {
            if let Some(last) = p.batches.back() {
                out.push(last.base_offset);
            }
            if p.last_marker_offset >= 0 {
                out.push(p.last_marker_offset);
            }
        }
        out
    }

    /// Every producer the partition remembers (not expired), by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        self.active_at_most(usize::MAX).unwrap_or_default()
    }

    /// [`Self::active`], or `None` without copying anything when there are more than
    /// `limit`: the caller holds the log lock, so the work stays bounded.
    pub fn active_at_most(&self, limit: usize) -> Option<Vec<ActiveProducer>> {
        if self.producers.len() > limit {
            return None;
        }
        let mut active: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, p)| ActiveProducer {
                producer_id,
                epoch: p.epoch,
                last_sequence: p.batches.back().map_or(-1, |b| b.last_sequence),
                last_timestamp: p.last_timestamp,
                coordinator_epoch: p.coordinator_epoch,
                txn_first_offset: p.txn_first_offset,
            })
            .collect();
        active.sort_unstable_by_key(|p| p.producer_id);
        Some(active)
    }

    /// The first offset of the oldest open transaction, if any.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open.first().map(|&(offset, _)| offset)
    }

    /// Open transactions: (producer id, epoch, first offset), oldest first.
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.open
            .iter()
            .map(|&(first, id)| (id, self.producers.get(&id).map_or(-1, |p| p.epoch), first))
            .collect()
    }

    /// Where the producer's last transaction marker is (-1: none): a verification of its
    /// transaction is valid for an append only while this has not moved.
    pub fn marker_position(&self, producer_id: i64) -> i64 {
        self.producers
            .get(&producer_id)
            .map_or(-1, |p| p.last_marker_offset)
    }

    /// The epoch of `producer_id`'s open transaction here, if one is open.
    pub fn open_epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers
            .get(&producer_id)
            .filter(|p| p.txn_first_offset >= 0)
            .map(|p| p.epoch)
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|p| p.txn_first_offset >= 0)
    }

    /// Forgets producers idle for longer than `max_idle_ms`, unless a transaction of
    /// theirs is open (only its marker ends it).
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) {
        let before = self.producers.len();
        self.producers.retain(|_, p| {
            p.txn_first_offset >= 0 || now_ms.saturating_sub(p.last_append_ms) <= max_idle_ms
        });
        self.dirty |= self.producers.len() != before;
    }

    /// Drops what a recovery or a truncation removed: batches at or past
    /// `log_end_offset`. The state is then dirty, so the snapshot on disk is rewritten and
    /// never brings the removed batches back.
    pub fn truncate(&mut self, log_end_offset: i64) {
        for producer in self.producers.values_mut() {
            let before = producer.batches.len();
            producer.batches.retain(|b| b.last_offset < log_end_offset);
            self.dirty |= producer.batches.len() != before;
            if producer.txn_first_offset >= log_end_offset {
                producer.txn_first_offset = -1;
                self.dirty = true;
            }
            if producer.last_marker_offset >= log_end_offset {
                // The marker is gone: its transaction is open again, if it began earlier.
                if producer.last_txn_first_offset < log_end_offset {
                    producer.txn_first_offset = producer.last_txn_first_offset;
                }
                producer.last_txn_first_offset = -1;
                producer.last_marker_offset = -1;
                // Those were the removed marker's; what came before it is not kept.
                producer.last_timestamp = -1;
                producer.coordinator_epoch = -1;
                self.dirty = true;
            }
        }
        self.reindex_open();
    }

    fn reindex_open(&mut self) {
        self.open = self
            .producers
            .iter()
            .filter(|(_, p)| p.txn_first_offset >= 0)
            .map(|(&id, p)| (p.txn_first_offset, id))
            .collect();
    }

    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether a snapshot is due.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Takes the dirty flag: whether a snapshot is due.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        buf.put_u32(ids.len() as u32);
        for &id in &ids {
            let p = &self.producers[&id];
            buf.put_i64(id);
            buf.put_i16(p.epoch);
            buf.put_i64(p.last_append_ms);
            buf.put_i64(p.txn_first_offset);
            buf.put_i64(p.last_txn_first_offset);
            buf.put_i64(p.last_marker_offset);
            buf.put_u8(p.batches.len() as u8);
            for b in &p.batches {
                buf.put_i32(b.first_sequence);
                buf.put_i32(b.last_sequence);
                buf.put_i64(b.base_offset);
                buf.put_i64(b.last_offset);
            }
        }
        buf.put_u32(ids.len() as u32);
        for id in &ids {
            let p = &self.producers[id];
            buf.put_i64(p.last_timestamp);
            buf.put_i32(p.coordinator_epoch);
        }
        let crc = crc32c::crc32c(&buf);
        buf.put_u32(crc);
        buf.to_vec()
    }

    /// `None` if the bytes are damaged or of an unknown version.
    pub fn decode(bytes: &[u8]) -> Option<ProducerState> {
        if bytes.len() < 13 || &bytes[..4] != MAGIC || !(1..=NEWEST_READ).contains(&bytes[4]) {
            return None;
        }
        let version = bytes[4];
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return None;
        }
        let mut b = &body[5..];
        let count = b.get_u32() as usize;
        let mut producers = HashMap::new();
        let mut order = Vec::with_capacity(count.min(b.remaining() / 19));
        for _ in 0..count {
            let fixed = match version {
                1 => 19,
                2 => 43,
                _ => 55,
            };
            if b.remaining() < fixed {
                return None;
            }
            let id = b.get_i64();
            let epoch = b.get_i16();
            let last_append_ms = b.get_i64();
            let (txn_first_offset, last_txn_first_offset, last_marker_offset) = if version >= 2 {
                (b.get_i64(), b.get_i64(), b.get_i64())
            } else {
                (-1, -1, -1)
            };
            let (last_timestamp, coordinator_epoch) = if version >= 3 {
                (b.get_i64(), b.get_i32())
            } else {
                (last_append_ms, -1)
            };
            let n = b.get_u8() as usize;
            if b.remaining() < n * 24 {
                return None;
            }
            let batches = (0..n)
                .map(|_| BatchMeta {
                    first_sequence: b.get_i32(),
                    last_sequence: b.get_i32(),
                    base_offset: b.get_i64(),
                    last_offset: b.get_i64(),
                })
                .collect();
            order.push(id);
            producers.insert(
                id,
                Producer {
                    epoch,
                    last_append_ms,
                    batches,
                    txn_first_offset,
                    last_txn_first_offset,
                    last_marker_offset,
                    last_timestamp,
                    coordinator_epoch,
                },
            );
        }
        if version == 2 && b.has_remaining() {
            // The trailer: DescribeProducers fields, in producer order.
            if b.remaining() < 4 {
                return None;
            }
            let trailer_count = b.get_u32() as usize;
            if trailer_count != order.len() || b.remaining() < trailer_count * 12 {
                return None;
            }
            for id in &order {
                let (last_timestamp, coordinator_epoch) = (b.get_i64(), b.get_i32());
                if let Some(p) = producers.get_mut(id) {
                    p.last_timestamp = last_timestamp;
                    p.coordinator_epoch = coordinator_epoch;
                }
            }
        }
        let mut state = ProducerState {
            producers,
            open: BTreeSet::new(),
            dirty: false,
        };
        state.reindex_open();
        Some(state)
    }
}

#[cfg(test)]
mod tests;
