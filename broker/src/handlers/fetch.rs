//! Fetch with long polling.
//!
//! Reads happen without holding a partition's lock. A fetch that has less than
//! `min_bytes` waits (up to `max_wait_ms`) for the high watermark of any partition it asked
//! for to move, then reads again. Limits follow KIP-74: `partition_max_bytes` per partition
//! and `max_bytes` for the response, except that the first batch found is always returned
//! whole so a consumer can never get stuck behind a batch larger than its limits.
//! A diskless partition's long poll waits on its `next` offset in this broker's view. The
//! last stable offset, where its read_committed reads stop, moves only with the commit of
//! a transaction marker, which takes an offset and so moves `next` too: such a fetch
//! wakes when its bound moves (and also, uselessly, when records past it are appended).
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which tells
//! clients to send full fetch requests.
//!
//! In a cluster the leader serves every fetch and a follower serves consumers from Fetch
//! v11 on, up to its own high watermark (remote history included). A consumer naming its
//! rack (`client.rack`, v11+) outside the leader's rack is pointed at an in-sync replica
//! in its rack with `preferred_read_replica` (KIP-392).

use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};
use tokio::sync::watch;

use super::partition_error_code;
use crate::broker::Broker;
use crate::log::txn::AbortedTxn;
use crate::partition::{Partition, Read, Watermarks};
use crate::registry::Topic;

const READ_COMMITTED: i8 = 1;

struct Wanted {
    topic_index: usize,
    index: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    current_leader_epoch: i32,
    partition: Result<Arc<Partition>, ResponseError>,
    /// KIP-392: the replica this consumer should fetch from instead (same rack).
    redirect: Option<i32>,
    /// A diskless partition (`partition` is then unused): any broker serves it.
    diskless: Option<(crate::diskless::PartitionKey, Arc<Topic>)>,
}

/// KIP-392 for diskless partitions: a consumer naming a rack other than this broker's is
/// sent to a live broker of its rack that it can reach on its listener, if there is one
/// (chosen as Metadata chooses; Metadata lists every such broker as a replica).
fn diskless_read_replica(
    broker: &Broker,
    key: &crate::diskless::PartitionKey,
    client_rack: &str,
    listener: &str,
) -> Option<i32> {
    if client_rack.is_empty() || broker.config.rack == client_rack {
        return None;
    }
    let live: Vec<_> = crate::diskless::reachable(broker.live_brokers(), listener)
        .into_iter()
        .filter(|b| b.rack.as_deref() == Some(client_rack))
        .collect();
    crate::diskless::choose_broker(&live, key, Some(client_rack))
        .filter(|&id| id != broker.config.node_id)
}

/// KIP-392's rack-aware replica selection, at the leader: a consumer that names its rack
/// (`client.rack`) and is not in the leader's rack is sent to an in-sync replica in its
/// rack, if there is one, so replays are served away from the leader and inside the zone.
fn read_replica(broker: &Broker, partition: &Partition, client_rack: &str) -> Option<i32> {
    if client_rack.is_empty() || broker.config.rack == client_rack {
        return None;
    }
    let state = partition.replica_state();
    if state.role != crate::partition::isr::Role::Leader {
        return None;
    }
    let mut candidates: Vec<i32> = state
        .isr
        .iter()
        .copied()
        .filter(|&r| r != state.me)
        .filter(|&r| {
            broker
                .broker_info(r)
                .is_some_and(|b| b.rack.as_deref() == Some(client_rack))
        })
        .collect();
    candidates.sort_unstable();
    candidates.first().copied()
}

fn resolve(broker: &Broker, topic: &FetchTopic, version: i16) -> Option<Arc<Topic>> {
    if version >= 13 {
        broker.topics.by_id(topic.topic_id)
    } else {
        broker.topics.get(&topic.topic.0)
    }
}

/// The leader serves every fetch; a follower serves consumers from Fetch v11 on (KIP-392:
/// clients that know about fetching from followers), up to its own high watermark.
fn serves(partition: &Partition, version: i16) -> Result<(), ResponseError> {
    match partition.replica_state().role {
        crate::partition::isr::Role::Leader => Ok(()),
        crate::partition::isr::Role::Follower if version >= 11 => Ok(()),
        _ => Err(ResponseError::NotLeaderOrFollower),
    }
}

/// Longest a Fetch long-polls, whatever it asks: a connection in a long poll is never
/// idle, so a client asking for days (max_wait_ms up to 2^31) would hold its connection
/// and task past `connections_max_idle_ms`. Clients ask for 500 ms by default.
const MAX_WAIT_MS: i32 = 30_000;

pub async fn fetch(
    broker: &Arc<Broker>,
    request: FetchRequest,
    version: i16,
    listener: &str,
) -> ResponseKind {
    let unknown = if version >= 13 {
        ResponseError::UnknownTopicId
    } else {
        ResponseError::UnknownTopicOrPartition
    };
    let consumer = if version >= 15 {
        request.replica_state.replica_id.0 < 0
    } else {
        request.replica_id.0 < 0
    };
    let client_rack = if version >= 11 && consumer {
        request.rack_id.to_string()
    } else {
        String::new()
    };
    let mut wanted = Vec::new();
    for (topic_index, fetch_topic) in request.topics.iter().enumerate() {
        let topic = resolve(broker, fetch_topic, version);
        for p in &fetch_topic.partitions {
            if let Some(t) = topic.as_ref().filter(|t| t.diskless && consumer) {
                let key = crate::diskless::PartitionKey {
                    topic_id: t.id,
                    partition: p.partition,
                };
                let known = t.has_partition(p.partition) && broker.diskless.is_some();
                wanted.push(Wanted {
                    topic_index,
                    index: p.partition,
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: p.partition_max_bytes.max(0) as usize,
                    current_leader_epoch: p.current_leader_epoch,
                    partition: Err(ResponseError::UnknownTopicOrPartition),
                    redirect: diskless_read_replica(broker, &key, &client_rack, listener),
                    diskless: known.then(|| (key, t.clone())),
                });
                continue;
            }
            let partition = match &topic {
                None => Err(unknown),
                Some(t) => t
                    .partition(p.partition)
                    .cloned()
                    .ok_or(ResponseError::UnknownTopicOrPartition)
                    .and_then(|partition| serves(&partition, version).map(|()| partition)),
            };
            let redirect = partition
                .as_ref()
                .ok()
                .and_then(|partition| read_replica(broker, partition, &client_rack));
            wanted.push(Wanted {
                topic_index,
                index: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
                partition,
                redirect,
                diskless: None,
            });
        }
    }
    let max_bytes = (request.max_bytes.max(0) as usize).min(broker.config.fetch_max_bytes as usize);
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS) as u64);
    let read_committed = request.isolation_level == READ_COMMITTED;

    // Subscribe before the first read so an append between read and wait is not missed.
    let mut watchers: Vec<watch::Receiver<i64>> = wanted
        .iter()
        .filter_map(|w| match (&w.diskless, &broker.diskless) {
            (Some((key, _)), Some(diskless)) => Some(diskless.view.subscribe(key)),
            _ => w.partition.as_ref().ok().map(|p| p.subscribe()),
        })
        .collect();
    let results = loop {
        let (results, total, answer_now) =
            read_all(broker, &wanted, max_bytes, read_committed).await;
        let expired = tokio::time::Instant::now() >= deadline;
        if total >= min_bytes || answer_now || expired || watchers.is_empty() {
            break results;
        }
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        let woke = tokio::select! {
            _ = broker.shutdown.cancelled() => false,
            // A watch whose sender is gone (a deleted diskless partition) fails at once:
            // answer rather than wait on it again and again.
            result = tokio::time::timeout_at(deadline, changed) => {
                result.is_ok_and(|(changed, _, _)| changed.is_ok())
            }
        };
        if !woke {
            // Nothing arrived in time, the broker is stopping or a partition is gone:
            // answer with what we have.
            break read_all(broker, &wanted, max_bytes, read_committed).await.0;
        }
    };

    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| {
            let response = FetchableTopicResponse::default();
            if version >= 13 {
                response.with_topic_id(t.topic_id)
            } else {
                response.with_topic(t.topic.clone())
            }
        })
        .collect();
    for (w, data) in wanted.iter().zip(results) {
        topics[w.topic_index].partitions.push(data);
    }
    ResponseKind::Fetch(
        FetchResponse::default()
            .with_session_id(0)
            .with_responses(topics),
    )
}

fn count_bytes_out(broker: &Broker, partition: &Partition, records: &bytes::Bytes) {
    if !records.is_empty() {
        broker
            .metrics
            .bytes_out
            .with_label_values(&[&partition.topic])
            .inc_by(records.len() as u64);
    }
}

/// Fills the offsets a partition response reports.
fn with_marks(data: PartitionData, marks: Watermarks) -> PartitionData {
    data.with_high_watermark(marks.high_watermark)
        .with_last_stable_offset(marks.last_stable_offset)
        .with_log_start_offset(marks.log_start_offset)
}

/// A read_committed response lists the aborted transactions among the records it
/// returns, so the client drops their records (KIP-98). Records come only from below
/// the last stable offset, so every transaction they hold has its marker in the log.
/// `aborted` is what a remote read found (`None`: ask the local log).
fn with_records(
    data: PartitionData,
    partition: &Partition,
    fetch_offset: i64,
    (records, marks, aborted): (bytes::Bytes, Watermarks, Option<Vec<AbortedTxn>>),
    read_committed: bool,
) -> PartitionData {
    let data = if read_committed && !records.is_empty() {
        let end = crate::log::txn::records_end(&records).unwrap_or(fetch_offset);
        let aborted = aborted.unwrap_or_else(|| partition.aborted_transactions(fetch_offset, end));
        data.with_aborted_transactions(Some(aborted_transactions(aborted)))
    } else {
        data
    };
    with_marks(data, marks).with_records(Some(records))
}

/// A response's aborted-transaction list.
fn aborted_transactions(aborted: Vec<AbortedTxn>) -> Vec<AbortedTransaction> {
    aborted
        .into_iter()
        .map(|a| {
            AbortedTransaction::default()
                .with_producer_id(a.producer_id.into())
                .with_first_offset(a.first_offset)
        })
        .collect()
}

/// One pass over every wanted partition. Returns the partition responses, the bytes read,
/// and whether to answer now whatever `min_bytes` says: a partition failed, or a remote
/// read returned records (both end the long poll, as in Kafka).
///
/// Each partition answers from whichever tier holds the offset ([`Partition::read`]).
/// Remote reads are given their byte budget in the same sequential pass as local ones
/// (as if they filled it), then run concurrently, so a fetch over several partitions
/// replaying history waits for the slowest GET, not the sum.
async fn read_all(
    broker: &Broker,
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
) -> (Vec<PartitionData>, usize, bool) {
    let mut total = 0usize;
    let mut answer_now = false;
    let mut out = Vec::with_capacity(wanted.len());
    let mut remote_reads = Vec::new();
    let mut diskless_reads = Vec::new();
    for w in wanted {
        let base = PartitionData::default()
            .with_partition_index(w.index)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica((-1).into())
            .with_aborted_transactions(if read_committed {
                Some(Vec::new())
            } else {
                None
            });
        if let (Some((key, topic)), Some(diskless)) = (&w.diskless, &broker.diskless) {
            let budget = if total == 0 {
                w.partition_max_bytes.min(max_bytes.max(1))
            } else {
                w.partition_max_bytes.min(max_bytes.saturating_sub(total))
            };
            match diskless_answer(diskless, w, key, &base, budget, total) {
                Some((data, failed)) => {
                    answer_now |= failed;
                    out.push(data);
                }
                // Read after this pass, concurrently; counted as if it filled its budget.
                None => {
                    total += budget;
                    diskless_reads.push((out.len(), budget, async move {
                        let read = (budget, read_committed);
                        read_diskless(broker, diskless, w, (key, topic), base, read).await
                    }));
                    out.push(PartitionData::default());
                }
            }
            continue;
        }
        let partition = match &w.partition {
            Ok(p) => p,
            Err(code) => {
                broker.metrics.error("Fetch", *code);
                answer_now = true;
                out.push(base.with_error_code(code.code()));
                continue;
            }
        };
        if w.current_leader_epoch >= 0 && w.current_leader_epoch != partition.leader_epoch() {
            let code = if w.current_leader_epoch > partition.leader_epoch() {
                ResponseError::UnknownLeaderEpoch
            } else {
                ResponseError::FencedLeaderEpoch
            };
            answer_now = true;
            out.push(base.with_error_code(code.code()));
            continue;
        }
        if let Some(replica) = w.redirect {
            // No records: the client fetches from `replica` from now on. Answered at
            // once, like an error.
            answer_now = true;
            out.push(
                with_marks(base, partition.watermarks())
                    .with_preferred_read_replica(replica.into()),
            );
            continue;
        }
        // The first batch is always whole; after that, stay within the response budget.
        let budget = if total == 0 {
            w.partition_max_bytes.min(max_bytes.max(1))
        } else {
            w.partition_max_bytes.min(max_bytes.saturating_sub(total))
        };
        if total > 0 && budget == 0 {
            let marks = partition.watermarks();
            out.push(with_marks(base, marks));
            continue;
        }
        match partition.read(w.fetch_offset, budget, read_committed) {
            Ok(Read::Local(records, marks, aborted)) => {
                total += records.len();
                count_bytes_out(broker, partition, &records);
                out.push(with_records(
                    base,
                    partition,
                    w.fetch_offset,
                    (records, marks, aborted),
                    read_committed,
                ));
            }
            // Finished after this pass, all at once; counted as if it filled its budget.
            Ok(Read::Remote(read)) => {
                total += budget;
                remote_reads.push((out.len(), partition.clone(), read, budget));
                out.push(with_marks(base, partition.watermarks()));
            }
            Err(e) => {
                let code = partition_error_code(&e);
                broker.metrics.error("Fetch", code);
                answer_now = true;
                let marks = partition.watermarks();
                out.push(with_marks(base, marks).with_error_code(code.code()));
            }
        }
    }
    if !diskless_reads.is_empty() {
        use futures::StreamExt;
        let (slots, reads): (Vec<_>, Vec<_>) = diskless_reads
            .into_iter()
            .map(|(i, budget, read)| ((i, budget), read))
            .unzip();
        let results: Vec<_> = futures::stream::iter(reads)
            .buffered(DISKLESS_READS_AT_ONCE)
            .collect()
            .await;
        for ((i, budget), (data, read, answer)) in slots.into_iter().zip(results) {
            total = total - budget + read;
            answer_now |= answer;
            out[i] = data;
        }
    }
    if remote_reads.is_empty() {
        return (out, total, answer_now);
    }
    let (slots, reads): (Vec<_>, Vec<_>) = remote_reads
        .into_iter()
        .map(|(i, partition, read, budget)| {
            ((i, partition.clone(), budget), async move {
                partition.finish_remote(read).await
            })
        })
        .unzip();
    let results = futures::future::join_all(reads).await;
    for ((i, partition, budget), result) in slots.into_iter().zip(results) {
        total -= budget;
        let data = std::mem::take(&mut out[i]);
        out[i] = match result {
            Ok((records, marks, aborted)) => {
                total += records.len();
                // History is there already: waiting for min_bytes would only wait out
                // max_wait_ms, since the same read comes back each time (a remote read
                // stops at a chunk's end). Kafka answers when its remote read completes.
                answer_now |= !records.is_empty();
                count_bytes_out(broker, &partition, &records);
                let fetch_offset = wanted[i].fetch_offset;
                let read = (records, marks, Some(aborted));
                with_records(data, &partition, fetch_offset, read, read_committed)
            }
            Err(e) => {
                broker.remote_read_failed(&partition, wanted[i].fetch_offset, &e);
                let code = partition_error_code(&e);
                broker.metrics.error("Fetch", code);
                answer_now = true;
                data.with_error_code(code.code())
            }
        };
    }
    (out, total, answer_now)
}

/// How many diskless partitions one fetch pass reads at once (each a GET or a
/// metadata-store read at most).
const DISKLESS_READS_AT_ONCE: usize = 16;

/// A diskless partition's answer when it needs no read (an error, a redirect, no budget
/// left): the response and whether to answer now; `None` if it must be read.
fn diskless_answer(
    diskless: &crate::diskless::Diskless,
    w: &Wanted,
    key: &crate::diskless::PartitionKey,
    base: &PartitionData,
    budget: usize,
    total: usize,
) -> Option<(PartitionData, bool)> {
    let head = diskless.view.get(key).head.clone();
    let marked = base
        .clone()
        .with_high_watermark(head.next)
        .with_last_stable_offset(head.last_stable())
        .with_log_start_offset(head.log_start);
    if w.current_leader_epoch > 0 {
        return Some((
            marked.with_error_code(ResponseError::UnknownLeaderEpoch.code()),
            true,
        ));
    }
    if let Some(replica) = w.redirect {
        return Some((marked.with_preferred_read_replica(replica.into()), true));
    }
    if total > 0 && budget == 0 {
        return Some((marked, false));
    }
    None
}

/// One diskless partition's read: the response, the bytes read, and whether to answer
/// now: an error, or records from the merged history (a read there stops at a segment's
/// end, so waiting for `min_bytes` would only wait out `max_wait_ms`, as for a
/// replicated partition's remote reads).
async fn read_diskless(
    broker: &Broker,
    diskless: &crate::diskless::Diskless,
    w: &Wanted,
    (key, topic): (&crate::diskless::PartitionKey, &Topic),
    base: PartitionData,
    (budget, read_committed): (usize, bool),
) -> (PartitionData, usize, bool) {
    match diskless
        .fetch(*key, &topic.name, w.fetch_offset, budget, read_committed)
        .await
    {
        Ok(read) => {
            let len = read.records.len();
            if len > 0 {
                broker
                    .metrics
                    .bytes_out
                    .with_label_values(&[&topic.name])
                    .inc_by(len as u64);
            }
            let answer_now = len > 0 && read.from_merged;
            let data = if read_committed && len > 0 {
                base.with_aborted_transactions(Some(aborted_transactions(read.aborted)))
            } else {
                base
            };
            let data = data
                .with_high_watermark(read.high_watermark)
                .with_last_stable_offset(read.last_stable_offset)
                .with_log_start_offset(read.log_start_offset)
                .with_records(Some(read.records));
            (data, len, answer_now)
        }
        Err(e) => {
            let head = diskless.view.get(key).head.clone();
            let code = match e {
                crate::diskless::read::ReadError::OutOfRange { .. } => {
                    ResponseError::OffsetOutOfRange
                }
                _ => {
                    tracing::warn!(topic = %topic.name, partition = key.partition,
                        offset = w.fetch_offset, error = %e, "diskless read failed");
                    ResponseError::KafkaStorageError
                }
            };
            broker.metrics.error("Fetch", code);
            let data = base
                .with_high_watermark(head.next)
                .with_last_stable_offset(head.last_stable())
                .with_log_start_offset(head.log_start)
                .with_error_code(code.code());
            (data, 0, true)
        }
    }
}
