//! The offsets topic as the coordinator's storage: appending records and replaying them
//! at start-up. Record layout: [`super::format`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tracing::{info, warn};

use super::format::{self, GroupValue, OffsetValue, RecordKey};
use super::state::Group;
use super::{Coordinator, Entry, GroupError, GroupHost};
use crate::log::records::{self, Budget, MAX_INFLATED_BYTES, Want};
use crate::log::txn::Marker;
use crate::log::{BatchError, LogError};
use crate::partition::Partition;
use crate::partition::PartitionError;

/// How long a commit or group write waits for the offsets topic's ISR.
const COMMIT_TIMEOUT_MS: i64 = 5_000;

/// Records of open transactions during a replay, by producer id, until their marker.
type OpenRecords = HashMap<i64, Vec<(Option<Bytes>, Option<Bytes>)>>;

/// Offsets held by open transactions, by group, then producer id.
type PendingOffsets = HashMap<String, HashMap<i64, HashMap<(String, i32), OffsetValue>>>;

/// What a replay of the offsets topic found, per group: its metadata and offsets.
type Loaded = HashMap<String, (Option<GroupValue>, HashMap<(String, i32), OffsetValue>)>;

impl Coordinator {
    /// Appends records to the offsets topic; durable as the topic's flush policy says.
    pub(super) async fn append(
        &self,
        broker: &impl GroupHost,
        partition: &Partition,
        records: Vec<(RecordKey, Option<Bytes>)>,
    ) -> Result<(), GroupError> {
        self.append_as(broker, partition, records, None).await
    }

    /// [`Coordinator::append`], as a transactional producer's batch when `producer` is
    /// set (TxnOffsetCommit): its offsets count once the transaction's commit marker
    /// follows.
    pub(super) async fn append_as(
        &self,
        broker: &impl GroupHost,
        partition: &Partition,
        records: Vec<(RecordKey, Option<Bytes>)>,
        producer: Option<super::TxnCommit>,
    ) -> Result<(), GroupError> {
        let now = broker.now_ms();
        let records = records
            .into_iter()
            .map(|(key, value)| (format::encode_key(&key), value))
            .collect();
        let ids = producer.map(|p| (p.producer_id, p.epoch));
        let buf = encode_internal_batch(now, records, ids).map_err(|e| {
            warn!(error = %e, "cannot encode an offsets topic batch");
            GroupError::CoordinatorNotAvailable
        })?;
        // As in Kafka: written when the whole ISR has it, whatever the topic's
        // min.insync.replicas; a coordinator that lost leadership meanwhile says so.
        let guard = producer.and_then(|p| p.guard);
        match partition
            .append_verified(&buf, now, -1, 1, COMMIT_TIMEOUT_MS, guard)
            .await
        {
            Ok(_) => Ok(()),
            Err(PartitionError::NotLeader) => Err(GroupError::NotCoordinator),
            Err(PartitionError::Log(LogError::InvalidBatch(BatchError::TooLarge { .. }))) => {
                Err(GroupError::InvalidCommitOffsetSize)
            }
            Err(PartitionError::Log(LogError::Producer(_))) => Err(GroupError::ProducerFenced),
            Err(e) => {
                warn!(partition = partition.index, error = %e, "cannot write to the offsets topic");
                Err(GroupError::CoordinatorNotAvailable)
            }
        }
    }

    /// Replays the offsets topic (at start-up, before clients connect).
    pub fn load(&self, broker: &impl GroupHost) -> anyhow::Result<()> {
        let Some(topic) = broker.offsets_topic() else {
            return Ok(());
        };
        for partition in topic.partitions.iter().filter(|p| p.is_leader()) {
            self.load_partition(broker, partition)?;
            if let Some(epoch) = partition.leading_epoch() {
                self.loaded().insert(partition.index, epoch);
            }
        }
        Ok(())
    }

    /// Loads the groups of one offsets-topic partition (this broker became its leader):
    /// everything in its log, up to the log end.
    pub fn load_partition(
        &self,
        broker: &impl GroupHost,
        partition: &Partition,
    ) -> anyhow::Result<()> {
        let now = broker.now_ms();
        let started = std::time::Instant::now();
        let mut groups: Loaded = HashMap::new();
        // Records of open transactions, by producer id, until their marker.
        let mut open: OpenRecords = HashMap::new();
        let mut records = 0u64;
        {
            let mut offset = partition.watermarks().log_start_offset;
            let end = partition.log_end_offset();
            while offset < end {
                let (bytes, _) = partition.read_upto(offset, 1 << 20, end)?;
                let next = for_each_batch_record(&bytes, offset, |header, marker, key, value| {
                    records += 1;
                    match marker {
                        Some(Marker::Commit) => {
                            for (key, value) in open.remove(&header.producer_id).unwrap_or_default()
                            {
                                apply_record(&mut groups, key, value);
                            }
                        }
                        Some(Marker::Abort) => {
                            open.remove(&header.producer_id);
                        }
                        None if header.is_control() => {}
                        None if header.is_transactional() => {
                            open.entry(header.producer_id)
                                .or_default()
                                .push((key, value));
                        }
                        None => {
                            if value.is_none() {
                                drop_pending(&mut open, key.as_ref());
                            }
                            apply_record(&mut groups, key, value)
                        }
                    }
                })
                .map_err(|e| {
                    anyhow::anyhow!(
                        "decode the offsets topic partition {} at {offset}: {e}",
                        partition.index
                    )
                })?;
                if next <= offset {
                    break;
                }
                offset = next;
            }
        }
        let pending = pending_offsets(open);
        // Tombstones leave a group with neither a record nor offsets: a deleted group,
        // which must not come back (as Empty) until the cleaner drops its tombstones.
        groups.retain(|_, (value, offsets)| value.is_some() || !offsets.is_empty());
        let count = groups.len();
        let mut map = self.map();
        for (id, (value, offsets)) in groups {
            let group = match value {
                Some(value) => Group::restore(id.clone(), value, now),
                None => Group::new(id.clone(), now),
            };
            let entry = Entry {
                group,
                offsets,
                pending: HashMap::new(),
            };
            map.insert(id, Arc::new(Mutex::new(entry)));
        }
        for (id, by_producer) in pending {
            let entry = map.entry(id.clone()).or_insert_with(|| {
                Arc::new(Mutex::new(Entry {
                    group: Group::new(id, now),
                    offsets: HashMap::new(),
                    pending: HashMap::new(),
                }))
            });
            entry.lock().unwrap_or_else(|p| p.into_inner()).pending = by_producer;
        }
        info!(
            groups = count,
            records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded consumer groups from the offsets topic"
        );
        Ok(())
    }
}

/// One uncompressed batch of `(key, value)` records for an internal topic (the offsets
/// and transaction topics), written by the broker itself: no producer id, or with
/// `producer` a transactional batch of that producer without sequence numbers (the log
/// does not check sequences of a batch whose base sequence is -1).
pub fn encode_internal_batch(
    now_ms: i64,
    records: Vec<(Bytes, Option<Bytes>)>,
    producer: Option<(i64, i16)>,
) -> anyhow::Result<Bytes> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    // Offsets are relative (the log assigns the real ones). Sequences keep a constant
    // distance to offsets so the encoder writes one batch, with base sequence -1.
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(key),
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(buf.freeze())
}

/// Calls `f` with the key and value of every record at or past `from` in `bytes` (whole
/// batches as the log returns them), skipping control batches. Returns the offset after
/// the last batch, which moves on even past batches the cleaner emptied of their last
/// records.
pub fn for_each_record(
    bytes: &Bytes,
    from: i64,
    mut f: impl FnMut(Option<Bytes>, Option<Bytes>),
) -> anyhow::Result<i64> {
    for_each_batch_record(bytes, from, |header, _, key, value| {
        if !header.is_control() {
            f(key, value);
        }
    })
}

/// Like [`for_each_record`], with each record's batch header and, for a control batch,
/// the transaction marker it holds.
pub fn for_each_batch_record(
    bytes: &Bytes,
    from: i64,
    mut f: impl FnMut(&crate::log::BatchHeader, Option<Marker>, Option<Bytes>, Option<Bytes>),
) -> anyhow::Result<i64> {
    use crate::log::format;
    let mut position = 0;
    let mut next = from;
    while let Some((_, size, _)) = format::read_batch_prefix(&bytes[position..]) {
        if position + size > bytes.len() {
            break;
        }
        let batch = &bytes[position..position + size];
        let header = format::parse_validated_header(batch);
        let marker = crate::log::txn::marker_of(batch, &header);
        let mut budget = Budget::new(MAX_INFLATED_BYTES);
        records::for_each_record(batch, Want::All, &mut budget, |record| {
            if header.base_offset + i64::from(record.offset_delta) >= from {
                f(&header, marker, record.key, record.value);
            }
            true
        })?;
        next = next.max(header.next_offset());
        position += size;
    }
    Ok(next)
}

pub(super) fn tombstones<'a>(
    group: &str,
    offsets: impl Iterator<Item = &'a (String, i32)>,
    with_group: bool,
) -> Vec<(RecordKey, Option<Bytes>)> {
    let mut records: Vec<_> = offsets
        .map(|(topic, partition)| {
            let key = RecordKey::Offset {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
            };
            (key, None)
        })
        .collect();
    if with_group {
        records.push((
            RecordKey::Group {
                group: group.to_string(),
            },
            None,
        ));
    }
    records
}

/// A tombstone removes the offsets open transactions hold for its key too (as Kafka's
/// replay does; OffsetDelete and DeleteGroups write one for such offsets).
fn drop_pending(open: &mut OpenRecords, key: Option<&Bytes>) {
    let Some(key) = key else {
        return;
    };
    for records in open.values_mut() {
        records.retain(|(k, _)| k.as_ref() != Some(key));
    }
}

/// Offsets of transactions still open at the end of a replay, by group and producer.
fn pending_offsets(open: OpenRecords) -> PendingOffsets {
    let mut pending: PendingOffsets = HashMap::new();
    for (producer_id, records) in open {
        for (key, value) in records {
            let (Some(key), Some(value)) = (key, value) else {
                continue;
            };
            if let (
                Ok(RecordKey::Offset {
                    group,
                    topic,
                    partition,
                }),
                Ok(value),
            ) = (format::decode_key(key), format::decode_offset(value))
            {
                pending
                    .entry(group)
                    .or_default()
                    .entry(producer_id)
                    .or_default()
                    .insert((topic, partition), value);
            }
        }
    }
    pending
}

fn apply_record(groups: &mut Loaded, key: Option<Bytes>, value: Option<Bytes>) {
    let Some(key) = key else {
        warn!("a record without a key in the offsets topic; skipped");
        return;
    };
    let key = match format::decode_key(key) {
        Ok(key) => key,
        Err(e) => {
            warn!(error = %e, "an unreadable key in the offsets topic; skipped");
            return;
        }
    };
    let entry = groups.entry(key.group().to_string()).or_default();
    match (key, value) {
        (
            RecordKey::Offset {
                topic, partition, ..
            },
            None,
        ) => {
            entry.1.remove(&(topic, partition));
        }
        (
            RecordKey::Offset {
                topic, partition, ..
            },
            Some(value),
        ) => match format::decode_offset(value) {
            Ok(v) => {
                entry.1.insert((topic, partition), v);
            }
            Err(e) => warn!(error = %e, "an unreadable committed offset; skipped"),
        },
        (RecordKey::Group { .. }, None) => entry.0 = None,
        (RecordKey::Group { .. }, Some(value)) => match format::decode_group(value) {
            Ok(v) => entry.0 = Some(v),
            Err(e) => warn!(error = %e, "unreadable group metadata; skipped"),
        },
    }
}
