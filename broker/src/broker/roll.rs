//! The two questions a rolling restart asks a broker (served over HTTP by
//! `telemetry`: `/safe-to-stop` and `/readyz/in-sync`), answered from this broker's view
//! of the partitions it holds, as its last metadata round applied them.
//!
//! - **May it stop?** Stopping it takes it out of the ISR of every partition where it is
//!   in sync. It may stop when none of them would fall below `min.insync.replicas`
//!   (counting the other in-sync replicas that are live), so acks=all producers keep
//!   being answered. A partition whose replication factor is not above
//!   `min.insync.replicas` (replication factor 1, or 2 with min.insync 2) cannot keep
//!   acks=all through the restart of any of its replicas; waiting would not change that,
//!   so it does not hold the stop (Strimzi's KafkaRoller decides the same).
//! - **Has it rejoined?** A starting broker steps out of the ISR wherever another live
//!   replica is in sync (`controller::step_down`) and is taken back once it has caught up.
//!   It has rejoined when it is back in the ISR of every partition it follows whose
//!   leader is live. A partition with no live leader has nobody to catch up from and
//!   does not hold it back: when every broker restarts at once, the first one up must
//!   become ready for the others to be started.
//!
//! The view may be one metadata round old: the answers are for a roll that stops one
//! broker at a time, as the StatefulSet and the PodDisruptionBudget do.

use std::collections::BTreeSet;

use super::Broker;
use crate::partition::isr::Role;

impl Broker {
    /// Partitions that would drop below `min.insync.replicas` if this broker stopped
    /// now, one sentence each; empty when it may stop.
    pub fn stop_blockers(&self) -> Vec<String> {
        let me = self.config.node_id;
        let live: BTreeSet<i32> = self.live_brokers().iter().map(|b| b.node_id).collect();
        let mut blockers = Vec::new();
        for topic in self.topics.all() {
            let min_isr = topic.config.min_insync_replicas();
            for partition in &topic.partitions {
                let state = partition.replica_state();
                if !state.isr.contains(&me) || state.replicas.len() <= min_isr {
                    continue;
                }
                let others = state
                    .isr
                    .iter()
                    .filter(|&&r| r != me && live.contains(&r))
                    .count();
                if others < min_isr {
                    blockers.push(format!(
                        "{}/{}: in-sync replicas {:?}; without broker {me} {others} would be left, below min.insync.replicas {min_isr}",
                        partition.topic, partition.index, state.isr
                    ));
                }
            }
        }
        blockers
    }

    /// Partitions this broker follows, whose leader is live, and whose ISR it is not in
    /// (yet), one sentence each; empty once it has rejoined every ISR it can.
    pub fn rejoin_pending(&self) -> Vec<String> {
        let me = self.config.node_id;
        let live: BTreeSet<i32> = self.live_brokers().iter().map(|b| b.node_id).collect();
        let mut pending = Vec::new();
        for topic in self.topics.all() {
            for partition in &topic.partitions {
                let state = partition.replica_state();
                if state.role == Role::Follower
                    && !state.isr.contains(&me)
                    && live.contains(&state.leader)
                {
                    pending.push(format!(
                        "{}/{}: catching up with leader {} (in-sync replicas {:?})",
                        partition.topic, partition.index, state.leader, state.isr
                    ));
                }
            }
        }
        pending
    }
}

impl crate::telemetry::RollGate for Broker {
    fn stop_blockers(&self) -> Vec<String> {
        Broker::stop_blockers(self)
    }

    fn rejoin_pending(&self) -> Vec<String> {
        Broker::rejoin_pending(self)
    }
}
