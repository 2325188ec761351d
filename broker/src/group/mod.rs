//! The group coordinator: consumer group membership (Kafka's classic protocol) and
//! committed offsets.
//!
//! ## Where committed offsets live, and why
//!
//! Offsets and group metadata are records in the internal compacted topic
//! `__consumer_offsets` ([`OFFSETS_TOPIC`]), as in Kafka, not in the metadata store:
//!
//! - **Write rate.** Consumers commit every few seconds per member, often after every
//!   batch. A thousand consumers committing every second is a thousand writes a second,
//!   each a small append to a log here; in etcd each would be a Raft round trip, a WAL
//!   fsync and a new MVCC revision kept until etcd compacts, against etcd's advice of a
//!   few thousand writes a second for the whole cluster.
//! - **Size.** etcd's database is capped (2 GiB by default, 8 GiB recommended maximum)
//!   and holds topics and manifests that must never be starved. Committed offsets grow
//!   with groups × partitions; a compacted topic keeps one record per (group, topic,
//!   partition) on the data disk, and the cleaner removes the superseded ones.
//! - **Scale.** A group lives in one partition of the topic (Java's `hashCode` of the
//!   group id modulo the partition count, so tools agree on where a group lives). With
//!   replication that partition's leader is the group's coordinator, so coordinators
//!   spread over brokers the same way partition leadership does.
//!
//! The topic is created on first use with `offsets_topic_partitions` partitions,
//! `cleanup.policy=compact` and no tiering, and loaded at start-up: every partition is
//! replayed from its start, so start-up time follows the compacted size, not history.
//! Clients may read it but not produce to it or delete it.
//!
//! Record layout: [`format`]. Membership state machine: [`state`].
//!
//! ## Concurrency
//!
//! Each group is behind a std mutex, never held across an `.await`. Writes to the offsets
//! topic take a per-partition tokio mutex first and apply to memory only after the
//! append, so memory follows the log's order and never shows what the log may not hold.
//!
//! A partition's groups are in memory for one leader epoch (`loaded`). JoinGroup,
//! SyncGroup, Heartbeat, OffsetCommit, OffsetFetch, DeleteGroups, OffsetDelete
//! and LeaveGroup go through [`Coordinator::partition`] before they look the group up
//! (DescribeGroups and ListGroups answer from memory), which refuses
//! (NOT_COORDINATOR) on a broker that does not lead the group's partition and loads the
//! partition first when the epoch moved; a load under way elsewhere answers
//! COORDINATOR_LOAD_IN_PROGRESS rather than blocking a runtime thread.

pub mod format;
pub mod state;
mod store;
mod transactions;
pub use transactions::TxnCommit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::{info, warn};

use crate::config::Config;
use crate::partition::Partition;
use crate::registry::Topic;
use crate::telemetry::Metrics;
use format::{OffsetValue, RecordKey};
use state::{Group, GroupState, JoinRequest, JoinResult, SyncResult, SyncStep, Timeouts};
use store::tombstones;
pub use store::{encode_internal_batch, for_each_record};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The internal topic of the transaction coordinator (`crate::txn`), named here with the
/// other internal topic so that `is_internal` knows both.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

/// Whether clients may not produce to, delete or repartition this topic: the offsets
/// topic and the transaction coordinator's.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TRANSACTION_TOPIC
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("the coordinator is not available; find it again")]
    CoordinatorNotAvailable,
    #[error("this broker is not the group's coordinator; find it again")]
    NotCoordinator,
    #[error("the coordinator is loading the group's partition of the offsets topic")]
    CoordinatorLoadInProgress,
    #[error("the group id is empty or longer than 32767 bytes")]
    InvalidGroupId,
    #[error("the {0} is longer than the 32767 bytes a group record can hold")]
    TooLong(&'static str),
    #[error("the session timeout is outside the broker's group_min/max_session_timeout_ms")]
    InvalidSessionTimeout,
    #[error("the member's protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("join again with the member id {0}")]
    MemberIdRequired(String),
    #[error("the member id is not in the group")]
    UnknownMemberId,
    #[error("another member has this group.instance.id")]
    FencedInstanceId,
    #[error("the generation is not the group's current one")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("the group still has members")]
    NonEmptyGroup,
    #[error("the group's members subscribe to this topic")]
    GroupSubscribedToTopic,
    #[error("the topic or partition does not exist")]
    UnknownTopicOrPartition,
    #[error("the offset metadata is longer than offset_metadata_max_bytes")]
    OffsetMetadataTooLarge,
    #[error("the commit is larger than the offsets topic accepts")]
    InvalidCommitOffsetSize,
    #[error("a newer producer epoch fenced this transactional commit")]
    ProducerFenced,
}

/// What DescribeGroups shows of a member.
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// One group and its committed offsets.
struct Entry {
    group: Group,
    offsets: HashMap<(String, i32), OffsetValue>,
    /// Offsets committed in open transactions (TxnOffsetCommit), by producer id: they
    /// join `offsets` when the transaction's commit marker reaches the offsets topic.
    pending: HashMap<i64, HashMap<(String, i32), OffsetValue>>,
}

impl Entry {
    /// Whether the partition has a committed offset or one an open transaction holds.
    fn has_offset(&self, key: &(String, i32)) -> bool {
        self.offsets.contains_key(key) || self.pending.values().any(|p| p.contains_key(key))
    }

    /// Every partition with a committed offset or one an open transaction holds.
    fn offset_keys(&self) -> Vec<(String, i32)> {
        let mut keys: Vec<(String, i32)> = self
            .offsets
            .keys()
            .chain(self.pending.values().flat_map(|p| p.keys()))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// A tombstone of `key` was written: as in Kafka, and as a replay applies it, it
    /// removes the committed offset and any an open transaction holds.
    fn remove_offset(&mut self, key: &(String, i32)) {
        self.offsets.remove(key);
        for offsets in self.pending.values_mut() {
            offsets.remove(key);
        }
    }
}

type Shared = Arc<Mutex<Entry>>;

/// A SyncGroup request.
pub struct SyncRequest<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub generation: i32,
    pub protocol_type: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub assignments: HashMap<String, Bytes>,
}

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`, with Java's UTF-16 string hash.
pub fn partition_for(group: &str, partitions: usize) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    (abs as usize % partitions.max(1)) as i32
}

/// A group id that can be a group: not empty, and short enough for the keys of the
/// offsets topic (Kafka itself sets no limit but cannot write a longer one either).
fn check_group_id(group_id: &str) -> Result<(), GroupError> {
    if group_id.is_empty() || group_id.len() > format::MAX_STRING_BYTES {
        return Err(GroupError::InvalidGroupId);
    }
    Ok(())
}

/// Write locks are striped over this many slots by offsets partition.
const WRITE_LOCKS: usize = 64;

pub struct Coordinator {
    groups: Mutex<HashMap<String, Shared>>,
    timeouts: Timeouts,
    /// Tokio mutexes: held across the append to the offsets topic (see the module doc).
    write_locks: Vec<tokio::sync::Mutex<()>>,
    last_expiry_ms: std::sync::atomic::AtomicI64,
    /// Offsets-topic partitions whose groups are in memory, with the leader epoch they
    /// were loaded for. A group whose partition this broker leads in another epoch is
    /// loaded before it is served, never answered from an empty or stale map (which
    /// would hand consumers no committed offset and send them to auto.offset.reset).
    loaded: Mutex<HashMap<i32, i32>>,
    /// Held while a partition's groups are replaced by a load; a request that finds it
    /// taken answers COORDINATOR_LOAD_IN_PROGRESS (clients retry) instead of waiting.
    load_lock: Mutex<()>,
}

fn lock(entry: &Shared) -> std::sync::MutexGuard<'_, Entry> {
    entry.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the coordinator needs from the broker: the narrow handle it gets instead of the
/// whole broker (which implements it).
pub trait GroupHost: Send + Sync {
    fn now_ms(&self) -> i64;
    fn config(&self) -> &Config;
    fn metrics(&self) -> &Metrics;
    /// Cancelled at shutdown: members waiting for a rebalance are answered.
    fn shutdown(&self) -> &tokio_util::sync::CancellationToken;
    /// The topic named `name`, if it is open on this broker.
    fn topic(&self, name: &str) -> Option<Arc<Topic>>;
    /// The offsets topic, if it is open on this broker.
    fn offsets_topic(&self) -> Option<Arc<Topic>> {
        self.topic(OFFSETS_TOPIC)
    }
    /// Creates the offsets topic (or opens it when another broker created it first).
    fn create_offsets_topic(
        &self,
    ) -> impl std::future::Future<Output = anyhow::Result<Arc<Topic>>> + Send;
}

/// Handlers hold the broker in an `Arc`.
impl<T: GroupHost> GroupHost for Arc<T> {
    fn now_ms(&self) -> i64 {
        T::now_ms(self)
    }
    fn config(&self) -> &Config {
        T::config(self)
    }
    fn metrics(&self) -> &Metrics {
        T::metrics(self)
    }
    fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        T::shutdown(self)
    }
    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        T::topic(self, name)
    }
    fn offsets_topic(&self) -> Option<Arc<Topic>> {
        T::offsets_topic(self)
    }
    fn create_offsets_topic(
        &self,
    ) -> impl std::future::Future<Output = anyhow::Result<Arc<Topic>>> + Send {
        T::create_offsets_topic(self)
    }
}

/// The offsets topic, created on first use.
async fn offsets_topic(broker: &impl GroupHost) -> Result<Arc<Topic>, GroupError> {
    match broker.offsets_topic() {
        Some(topic) => Ok(topic),
        None => broker.create_offsets_topic().await.map_err(|e| {
            warn!(error = %format_args!("{e:#}"), "cannot create the offsets topic");
            GroupError::CoordinatorNotAvailable
        }),
    }
}

impl Coordinator {
    pub fn new(config: &crate::config::Config) -> Coordinator {
        Coordinator {
            groups: Mutex::new(HashMap::new()),
            timeouts: Timeouts {
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
            },
            write_locks: (0..WRITE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            last_expiry_ms: std::sync::atomic::AtomicI64::new(0),
            loaded: Mutex::new(HashMap::new()),
            load_lock: Mutex::new(()),
        }
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i32>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shared>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<Shared> {
        self.map().get(id).cloned()
    }

    fn get_or_create(&self, id: &str, now_ms: i64) -> Shared {
        self.map()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Entry {
                    group: Group::new(id.to_string(), now_ms),
                    offsets: HashMap::new(),
                    pending: HashMap::new(),
                }))
            })
            .clone()
    }

    /// The offsets topic's partition holding this group, if this broker leads it.
    pub async fn partition(
        &self,
        broker: &impl GroupHost,
        group: &str,
    ) -> Result<Arc<Partition>, GroupError> {
        let topic = offsets_topic(broker).await?;
        let index = partition_for(group, topic.partitions.len());
        let partition = topic
            .partition(index)
            .cloned()
            .ok_or(GroupError::CoordinatorNotAvailable)?;
        // The leader of the group's partition is its coordinator, once it has loaded the
        // partition's groups for its current leadership.
        let Some(epoch) = partition.leading_epoch() else {
            return Err(GroupError::NotCoordinator);
        };
        self.ensure_loaded(broker, &partition, epoch)?;
        Ok(partition)
    }

    /// The node coordinating `group`: the leader of its offsets-topic partition.
    pub async fn coordinator_node(
        &self,
        broker: &impl GroupHost,
        group: &str,
    ) -> Result<i32, GroupError> {
        let topic = offsets_topic(broker).await?;
        let index = partition_for(group, topic.partitions.len());
        match topic.record.partitions.get(index as usize) {
            Some(p) if p.leader >= 0 => Ok(p.leader),
            _ => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    /// This broker became (or stopped being) the leader of an offsets-topic partition:
    /// its groups are loaded from the log (or forgotten).
    pub fn partition_led(
        &self,
        broker: &impl GroupHost,
        topic: &str,
        partition: &Partition,
        led: bool,
    ) {
        if topic != OFFSETS_TOPIC {
            return;
        }
        let count = broker.offsets_topic().map_or(0, |t| t.partitions.len());
        let _load = self.load_lock.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = if led { partition.leading_epoch() } else { None };
        // Logged inside; requests load the partition again on demand.
        let _ = self.reload(broker, partition, count, epoch);
    }

    /// Makes sure the groups of `partition` (led in `epoch`) are in memory: loads them
    /// unless they were loaded for that epoch. Another load under way answers
    /// COORDINATOR_LOAD_IN_PROGRESS.
    fn ensure_loaded(
        &self,
        broker: &impl GroupHost,
        partition: &Partition,
        epoch: i32,
    ) -> Result<(), GroupError> {
        if self.loaded().get(&partition.index) == Some(&epoch) {
            return Ok(());
        }
        let _load = match self.load_lock.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(GroupError::CoordinatorLoadInProgress);
            }
        };
        // Leadership may have moved on while this request waited.
        let Some(current) = partition.leading_epoch() else {
            return Err(GroupError::NotCoordinator);
        };
        if self.loaded().get(&partition.index) == Some(&current) {
            return Ok(());
        }
        let count = broker.offsets_topic().map_or(0, |t| t.partitions.len());
        self.reload(broker, partition, count, Some(current))
    }

    /// Forgets the groups of `partition` and, with an epoch, loads them from its log and
    /// marks them loaded for that epoch. The caller holds `load_lock`.
    fn reload(
        &self,
        broker: &impl GroupHost,
        partition: &Partition,
        partitions: usize,
        epoch: Option<i32>,
    ) -> Result<(), GroupError> {
        self.loaded().remove(&partition.index);
        self.map()
            .retain(|id, _| partition_for(id, partitions) != partition.index);
        let Some(epoch) = epoch else {
            return Ok(());
        };
        match self.load_partition(broker, partition) {
            Ok(()) => {
                self.loaded().insert(partition.index, epoch);
                Ok(())
            }
            Err(e) => {
                warn!(partition = partition.index, error = %e,
                    "cannot load consumer groups; their requests get COORDINATOR_LOAD_IN_PROGRESS");
                Err(GroupError::CoordinatorLoadInProgress)
            }
        }
    }

    fn write_lock(&self, partition: &Partition) -> &tokio::sync::Mutex<()> {
        &self.write_locks[partition.index as usize % WRITE_LOCKS]
    }

    /// Answers when the group is rebalanced, the request is refused, or the broker
    /// shuts down.
    async fn wait<T>(
        broker: &impl GroupHost,
        receiver: tokio::sync::oneshot::Receiver<Result<T, GroupError>>,
    ) -> Result<T, GroupError> {
        tokio::select! {
            answer = receiver => answer.unwrap_or(Err(GroupError::UnknownMemberId)),
            () = broker.shutdown().cancelled() => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    pub async fn join(
        &self,
        broker: &impl GroupHost,
        group_id: &str,
        request: JoinRequest,
    ) -> JoinResult {
        check_group_id(group_id)?;
        let partition = self.partition(broker, group_id).await?;
        request.check(&self.timeouts)?;
        let now = broker.now_ms();
        // Only a new member makes a group (as in Kafka): a member id for a group that does
        // not exist (deleted, expired) is unknown, and the client joins again without it.
        let entry = if request.member_id.is_empty() {
            self.get_or_create(group_id, now)
        } else {
            self.get(group_id).ok_or(GroupError::UnknownMemberId)?
        };
        let receiver = lock(&entry).group.join(request, &self.timeouts, now);
        self.persist_if_dirty(broker, &partition, &entry).await;
        Self::wait(broker, receiver).await
    }

    pub async fn sync(
        &self,
        broker: &impl GroupHost,
        group_id: &str,
        request: SyncRequest<'_>,
    ) -> SyncResult {
        let SyncRequest {
            member_id: member,
            instance_id,
            generation,
            protocol_type,
            protocol,
            assignments,
        } = request;
        self.partition(broker, group_id).await?;
        let entry = self.get(group_id).ok_or(GroupError::UnknownMemberId)?;
        let step =
            lock(&entry)
                .group
                .sync(member, instance_id, generation, protocol_type, protocol)?;
        let (receiver, is_leader) = match step {
            SyncStep::Done(synced) => return Ok(synced),
            SyncStep::Wait {
                receiver,
                is_leader,
            } => (receiver, is_leader),
        };
        if is_leader {
            let partition = self.partition(broker, group_id).await?;
            let write = self.write_lock(&partition).lock().await;
            let value = {
                let e = lock(&entry);
                // The group may have moved on (a new rebalance, a deletion) while this
                // waited for the write lock: then the assignment is not written, as it
                // would land after what the log says of the group since, and this member
                // is answered by whatever changed the group.
                (e.group.state == GroupState::CompletingRebalance
                    && e.group.generation == generation)
                    .then(|| e.group.value_with(&assignments))
            };
            let Some(value) = value else {
                drop(write);
                return Self::wait(broker, receiver).await;
            };
            let key = RecordKey::Group {
                group: group_id.to_string(),
            };
            let written = self
                .append(
                    broker,
                    &partition,
                    vec![(key, Some(format::encode_group(&value)))],
                )
                .await;
            let now = broker.now_ms();
            let mut e = lock(&entry);
            match written {
                Ok(()) => {
                    e.group.complete_sync(generation, &assignments, now);
                }
                Err(error) => e.group.fail_sync(generation, error, &self.timeouts, now),
            }
        }
        Self::wait(broker, receiver).await
    }

    pub async fn heartbeat(
        &self,
        broker: &impl GroupHost,
        group_id: &str,
        member: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        // Not (or not yet) the coordinator: the member finds it again, rather than being
        // told it is unknown and rejoining.
        self.partition(broker, group_id).await?;
        let entry = self.get(group_id).ok_or(GroupError::UnknownMemberId)?;
        let now = broker.now_ms();
        lock(&entry)
            .group
            .heartbeat(member, instance_id, generation, now)
    }

    /// LeaveGroup: one result per member, in order, or the group's error (this broker
    /// does not coordinate the group, or is loading it).
    pub async fn leave(
        &self,
        broker: &impl GroupHost,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        // The entry is taken after `partition`, as in delete_group.
        let partition = self.partition(broker, group_id).await?;
        let Some(entry) = self.get(group_id) else {
            return Ok(members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect());
        };
        let now = broker.now_ms();
        let results = {
            let mut e = lock(&entry);
            members
                .iter()
                .map(|(id, instance)| e.group.leave(id, instance.as_deref(), &self.timeouts, now))
                .collect()
        };
        self.persist_if_dirty(broker, &partition, &entry).await;
        Ok(results)
    }

    /// Writes the group's metadata if a transition asked for it (became Empty, a static
    /// member was replaced). A failure is logged: the record is rewritten at the next
    /// transition, and a stale record only brings back members that then expire.
    async fn persist_if_dirty(
        &self,
        broker: &impl GroupHost,
        partition: &Partition,
        entry: &Shared,
    ) {
        if !lock(entry).group.dirty {
            return;
        }
        let _write = self.write_lock(partition).lock().await;
        let (group_id, value) = {
            let mut e = lock(entry);
            // Checked again under the write lock: a deletion or expiry that went first
            // killed the group (and cleared the flag), and a record written after its
            // tombstone would bring the group back at the next load.
            if !e.group.dirty || e.group.state == GroupState::Dead {
                return;
            }
            e.group.dirty = false;
            (e.group.id.clone(), e.group.to_value())
        };
        let key = RecordKey::Group {
            group: group_id.clone(),
        };
        if let Err(e) = self
            .append(
                broker,
                partition,
                vec![(key, Some(format::encode_group(&value)))],
            )
            .await
        {
            warn!(group = %group_id, error = %e, "cannot write group metadata; retrying at the next change");
        }
    }

    /// OffsetCommit: one result per partition, in request order. Per-partition checks
    /// (unknown partition, metadata too long) fail only that partition; a membership
    /// problem fails them all.
    /// OffsetCommit, and with `producer` TxnOffsetCommit: the offsets are written as
    /// that producer's transactional records and count once its transaction commits. The
    /// group checks the commit as Kafka does ([`Group::check_commit`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        &self,
        broker: &impl GroupHost,
        group_id: &str,
        member: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: Vec<(String, i32, OffsetValue)>,
        producer: Option<TxnCommit>,
    ) -> Vec<Result<(), GroupError>> {
        let all = |e: GroupError| offsets.iter().map(|_| Err(e.clone())).collect();
        if let Err(e) = check_group_id(group_id) {
            return all(e);
        }
        let partition = match self.partition(broker, group_id).await {
            Ok(p) => p,
            Err(e) => return all(e),
        };
        let max_metadata = broker.config().offset_metadata_max_bytes as usize;
        let mut results: Vec<Result<(), GroupError>> = offsets
            .iter()
            .map(|(topic, index, value)| {
                // Diskless topics open no partitions; their partition count is the record's.
                if !broker.topic(topic).is_some_and(|t| t.has_partition(*index)) {
                    Err(GroupError::UnknownTopicOrPartition)
                } else if value
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > max_metadata)
                {
                    Err(GroupError::OffsetMetadataTooLarge)
                } else {
                    Ok(())
                }
            })
            .collect();
        let _write = self.write_lock(&partition).lock().await;
        let now = broker.now_ms();
        // Generation -1 on an unknown group creates a "simple" group (admin tools,
        // consumers that assign partitions themselves); any other generation is refused as
        // Kafka does: GROUP_ID_NOT_FOUND for OffsetCommit (the handler answers
        // ILLEGAL_GENERATION before v9), ILLEGAL_GENERATION for TxnOffsetCommit.
        let entry = match self.get(group_id) {
            Some(entry) => entry,
            None if generation < 0 => self.get_or_create(group_id, now),
            None if producer.is_some() => return all(GroupError::IllegalGeneration),
            None => return all(GroupError::GroupIdNotFound),
        };
        let transactional = producer.is_some();
        if let Err(e) =
            lock(&entry)
                .group
                .check_commit(member, instance_id, generation, transactional, now)
        {
            return all(e);
        }
        let accepted: Vec<&(String, i32, OffsetValue)> = offsets
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(o, _)| o)
            .collect();
        if accepted.is_empty() {
            return results;
        }
        let records = accepted
            .iter()
            .map(|(topic, index, value)| {
                let key = RecordKey::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *index,
                };
                (key, Some(format::encode_offset(value)))
            })
            .collect();
        match self.append_as(broker, &partition, records, producer).await {
            Ok(()) => {
                let mut guard = lock(&entry);
                let e = &mut *guard;
                let target = match producer {
                    Some(p) => e.pending.entry(p.producer_id).or_default(),
                    None => &mut e.offsets,
                };
                for (topic, index, value) in accepted {
                    target.insert((topic.clone(), *index), value.clone());
                }
            }
            Err(error) => {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(error.clone());
                }
            }
        }
        results
    }

    /// OffsetFetch: the committed offsets of the asked partitions (None where nothing is
    /// committed), or of every partition the group committed when `topics` is None.
    pub fn committed(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, i32, Option<OffsetValue>)> {
        let entry = self.get(group_id);
        let e = entry.as_ref().map(lock);
        let offsets = e.as_ref().map(|e| &e.offsets);
        match topics {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .map(|(topic, p)| {
                    let value = offsets.and_then(|o| o.get(&(topic.clone(), p)).cloned());
                    (topic, p, value)
                })
                .collect(),
            None => {
                let mut all: Vec<_> = offsets
                    .into_iter()
                    .flatten()
                    .map(|((t, p), v)| (t.clone(), *p, Some(v.clone())))
                    .collect();
                all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                all
            }
        }
    }

    /// ListGroups: (group id, protocol type, state) of every live group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let entries: Vec<Shared> = self.map().values().cloned().collect();
        let mut groups: Vec<_> = entries
            .iter()
            .map(|entry| {
                let e = lock(entry);
                (
                    e.group.id.clone(),
                    e.group.protocol_type.clone().unwrap_or_default(),
                    e.group.state,
                )
            })
            .filter(|(_, _, state)| *state != GroupState::Dead)
            .collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let entry = self.get(group_id)?;
        let e = lock(&entry);
        if e.group.state == GroupState::Dead {
            return None;
        }
        let protocol = e.group.protocol.clone().unwrap_or_default();
        // Kafka shows member metadata and assignments only once the group is Stable.
        let stable = e.group.state == GroupState::Stable;
        Some(GroupDescription {
            state: e.group.state,
            protocol_type: e.group.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: e
                .group
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups for one group: only an empty group goes, with its offsets.
    pub async fn delete_group(
        &self,
        broker: &impl GroupHost,
        group_id: &str,
    ) -> Result<(), GroupError> {
        // The entry is taken after `partition`, which may (re)load the partition's groups.
        let partition = self.partition(broker, group_id).await?;
        let entry = self.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
        let _write = self.write_lock(&partition).lock().await;
        let (records, empty_since) = {
            let mut e = lock(&entry);
            match e.group.state {
                GroupState::Dead => return Err(GroupError::GroupIdNotFound),
                GroupState::Empty => {}
                _ => return Err(GroupError::NonEmptyGroup),
            }
            let records = tombstones(group_id, e.offset_keys().iter(), true);
            // Dead before the tombstones are written, as Kafka applies the deletion at
            // once: a JoinGroup meanwhile is answered COORDINATOR_NOT_AVAILABLE and
            // retries into a new group, instead of joining the one being deleted.
            let empty_since = e.group.state_since_ms;
            e.group.kill(broker.now_ms());
            (records, empty_since)
        };
        if let Err(e) = self.append(broker, &partition, records).await {
            lock(&entry).group.revive(empty_since);
            return Err(e);
        }
        self.forget(group_id, &entry);
        info!(group = group_id, "deleted group");
        Ok(())
    }

    /// Drops a deleted group from memory, unless a load replaced its entry meanwhile.
    fn forget(&self, group_id: &str, entry: &Shared) {
        let mut map = self.map();
        if map.get(group_id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(group_id);
        }
    }

    /// OffsetDelete: per partition; offsets of topics the group's members subscribe to
    /// stay (GROUP_SUBSCRIBED_TO_TOPIC), and a group with members that does not use the
    /// consumer protocol keeps them all (NON_EMPTY_GROUP), as in Kafka.
    pub async fn delete_offsets(
        &self,
        broker: &impl GroupHost,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        // The entry is taken after `partition`, which may (re)load the partition's groups:
        // a broker that does not (yet) coordinate the group says so rather than
        // GROUP_ID_NOT_FOUND, and the tombstones apply to the loaded copy.
        let partition = self.partition(broker, group_id).await?;
        let entry = self.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
        let _write = self.write_lock(&partition).lock().await;
        let (results, doomed) = {
            let e = lock(&entry);
            e.group.check_offset_delete()?;
            let mut doomed = Vec::new();
            let results: Vec<_> = partitions
                .iter()
                .map(|(topic, index)| {
                    if e.group.is_subscribed_to(topic) {
                        Err(GroupError::GroupSubscribedToTopic)
                    } else {
                        if e.has_offset(&(topic.clone(), *index)) {
                            doomed.push((topic.clone(), *index));
                        }
                        Ok(())
                    }
                })
                .collect();
            (results, doomed)
        };
        if !doomed.is_empty() {
            self.append(
                broker,
                &partition,
                tombstones(group_id, doomed.iter(), false),
            )
            .await?;
            let mut e = lock(&entry);
            for key in &doomed {
                e.remove_offset(key);
            }
        }
        Ok(results)
    }

    /// Timers of every group, group metadata writes they cause, and (every
    /// `offsets_retention_check_interval_ms`) expiry of offsets of groups that stayed
    /// empty for `offsets_retention_ms`.
    pub async fn tick(&self, broker: &impl GroupHost) {
        let now = broker.now_ms();
        let entries: Vec<(String, Shared)> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut dirty = Vec::new();
        let mut by_state: HashMap<&'static str, i64> = HashMap::new();
        for (id, entry) in &entries {
            let mut e = lock(entry);
            e.group.tick(&self.timeouts, now);
            if e.group.dirty {
                dirty.push((id.clone(), entry.clone()));
            }
            *by_state.entry(e.group.state.name()).or_default() += 1;
        }
        for state in [
            "Empty",
            "PreparingRebalance",
            "CompletingRebalance",
            "Stable",
        ] {
            let count = by_state.get(state).copied().unwrap_or(0);
            broker
                .metrics()
                .groups
                .with_label_values(&[state])
                .set(count);
        }
        for (id, entry) in dirty {
            if let Ok(partition) = self.partition(broker, &id).await {
                self.persist_if_dirty(broker, &partition, &entry).await;
            }
        }
        let interval = broker.config().offsets_retention_check_interval_ms;
        let last = self
            .last_expiry_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= interval {
            self.last_expiry_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            for (id, entry) in entries {
                self.expire(broker, &id, &entry, now).await;
            }
        }
    }

    async fn expire(&self, broker: &impl GroupHost, group_id: &str, entry: &Shared, now: i64) {
        let retention = broker.config().offsets_retention_ms;
        let Ok(partition) = self.partition(broker, group_id).await else {
            return;
        };
        let _write = self.write_lock(&partition).lock().await;
        let (expired, remove_group, empty_since) = {
            let mut e = lock(entry);
            if e.group.state != GroupState::Empty {
                return;
            }
            let since = e.group.state_since_ms;
            // As in Kafka, an offset an open transaction is about to replace does not
            // expire, and a group with open transactions stays.
            let expired: Vec<(String, i32)> = e
                .offsets
                .iter()
                .filter(|(_, v)| now >= since.max(v.commit_timestamp_ms).saturating_add(retention))
                .filter(|(k, _)| !e.pending.values().any(|p| p.contains_key(*k)))
                .map(|(k, _)| k.clone())
                .collect();
            let remove_group =
                expired.len() == e.offsets.len() && e.pending.is_empty() && e.group.is_idle();
            if expired.is_empty() && !remove_group {
                return;
            }
            if remove_group {
                // Dead before its tombstone is written, as in delete_group.
                e.group.kill(now);
            }
            (expired, remove_group, since)
        };
        let records = tombstones(group_id, expired.iter(), remove_group);
        if let Err(e) = self.append(broker, &partition, records).await {
            warn!(group = group_id, error = %e, "cannot expire committed offsets; retrying later");
            if remove_group {
                lock(entry).group.revive(empty_since);
            }
            return;
        }
        let mut e = lock(entry);
        for key in &expired {
            e.offsets.remove(key);
        }
        drop(e);
        if remove_group {
            self.forget(group_id, entry);
        }
        info!(
            group = group_id,
            offsets = expired.len(),
            removed = remove_group,
            "expired committed offsets of an empty group"
        );
    }
}
