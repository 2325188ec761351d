//! Offsets committed inside transactions (TxnOffsetCommit, KIP-98/KIP-447).
//!
//! [`super::Coordinator::commit`] with a producer writes the offsets as that producer's
//! transactional records in the offsets topic and keeps them aside per producer id. The
//! transaction coordinator's marker on the offsets topic's partition settles them: a
//! commit makes them the group's committed offsets, an abort drops them. A replay of
//! the partition does the same with the markers it reads, so offsets of a transaction
//! still open at a restart stay aside until its marker arrives.
//!
//! While a transaction holds offsets of a partition, an OffsetFetch that asks for stable
//! offsets (`require_stable`, read_committed consumers) gets UNSTABLE_OFFSET_COMMIT for
//! it and retries, so a consumer never starts from an offset about to change.

use super::{Coordinator, GroupHost, lock, partition_for};
use crate::log::TxnGuard;

/// A transactional producer committing offsets (TxnOffsetCommit), its transaction
/// verified with the coordinator under `guard` (`None` when its transaction is already
/// open in the offsets partition).
#[derive(Debug, Clone, Copy)]
pub struct TxnCommit {
    pub producer_id: i64,
    pub epoch: i16,
    pub guard: Option<TxnGuard>,
}

impl Coordinator {
    /// A transaction marker was written to partition `index` of the offsets topic:
    /// `producer_id`'s offsets there are committed or dropped.
    pub fn complete_transaction(
        &self,
        broker: &impl GroupHost,
        index: i32,
        producer_id: i64,
        commit: bool,
    ) {
        let partitions = broker.offsets_topic().map_or(0, |t| t.partitions.len());
        let entries: Vec<_> = self
            .map()
            .iter()
            .filter(|(id, _)| partition_for(id, partitions) == index)
            .map(|(_, e)| e.clone())
            .collect();
        for entry in entries {
            let mut e = lock(&entry);
            if let Some(offsets) = e.pending.remove(&producer_id)
                && commit
            {
                e.offsets.extend(offsets);
            }
        }
    }

    /// Whether an open transaction holds offsets of `topic`-`partition` for the group.
    pub fn has_pending_offsets(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.get(group_id).is_some_and(|entry| {
            lock(&entry)
                .pending
                .values()
                .any(|offsets| offsets.contains_key(&(topic.to_string(), partition)))
        })
    }
}
