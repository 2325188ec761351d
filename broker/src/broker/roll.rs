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
use crate::partition::isr::{ReplicaState, Role};

/// How many in-sync replicas broker `me` would leave behind by stopping, when that is
/// below `min_isr` and waiting could help; `None` when its stop keeps the partition at
/// `min_isr` or above, or when nothing can (it is not in sync, or the replication factor
/// is not above `min_isr`).
fn left_below_min_isr(
    state: &ReplicaState,
    me: i32,
    live: &BTreeSet<i32>,
    min_isr: usize,
) -> Option<usize> {
    if !state.isr.contains(&me) || state.replicas.len() <= min_isr {
        return None;
    }
    let others = state
        .isr
        .iter()
        .filter(|&&r| r != me && live.contains(&r))
        .count();
    (others < min_isr).then_some(others)
}

/// Whether broker `me` still has to rejoin this partition's ISR: it follows it, is not
/// in sync, and the leader it catches up from is live.
fn catching_up(state: &ReplicaState, me: i32, live: &BTreeSet<i32>) -> bool {
    state.role == Role::Follower && !state.isr.contains(&me) && live.contains(&state.leader)
}

impl Broker {
    /// Partitions that would drop below `min.insync.replicas` if this broker stopped
    /// now, one sentence each; empty when it may stop.
    pub fn stop_blockers(&self) -> Vec<String> {
        let me = self.config.node_id;
        let live = self.live_node_ids();
        let mut blockers = Vec::new();
        for topic in self.topics.all() {
            let min_isr = topic.config.min_insync_replicas();
            for partition in &topic.partitions {
                let state = partition.replica_state();
                if let Some(left) = left_below_min_isr(&state, me, &live, min_isr) {
                    blockers.push(format!(
                        "{}/{}: in-sync replicas {:?}; without broker {me} {left} would be left, below min.insync.replicas {min_isr}",
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
        let live = self.live_node_ids();
        let mut pending = Vec::new();
        for topic in self.topics.all() {
            for partition in &topic.partitions {
                let state = partition.replica_state();
                if catching_up(&state, me, &live) {
                    pending.push(format!(
                        "{}/{}: catching up with leader {} (in-sync replicas {:?})",
                        partition.topic, partition.index, state.leader, state.isr
                    ));
                }
            }
        }
        pending
    }

    fn live_node_ids(&self) -> BTreeSet<i32> {
        self.live_brokers().iter().map(|b| b.node_id).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(role: Role, leader: i32, replicas: &[i32], isr: &[i32]) -> ReplicaState {
        let mut state = ReplicaState::solo(1, 1, 0);
        state.role = role;
        state.leader = leader;
        state.replicas = replicas.to_vec();
        state.isr = isr.to_vec();
        state
    }

    fn live(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_broker_may_stop_while_the_others_keep_min_isr() {
        let full = state(Role::Follower, 2, &[1, 2, 3], &[1, 2, 3]);
        assert_eq!(left_below_min_isr(&full, 1, &live(&[1, 2, 3]), 2), None);
        // With broker 3 out of the ISR, stopping broker 1 would leave one.
        let short = state(Role::Follower, 2, &[1, 2, 3], &[1, 2]);
        assert_eq!(left_below_min_isr(&short, 1, &live(&[1, 2, 3]), 2), Some(1));
        // In the ISR but gone (its session not yet ended): not counted.
        assert_eq!(left_below_min_isr(&full, 1, &live(&[1, 2]), 2), Some(1));
    }

    #[test]
    fn partitions_no_wait_can_protect_do_not_hold_the_stop() {
        // Replication factor 1, and factor 2 with min.insync 2: any restart takes acks=all
        // below min.insync.replicas.
        let alone = state(Role::Leader, 1, &[1], &[1]);
        assert_eq!(left_below_min_isr(&alone, 1, &live(&[1]), 1), None);
        let pair = state(Role::Leader, 1, &[1, 2], &[1, 2]);
        assert_eq!(left_below_min_isr(&pair, 1, &live(&[1, 2]), 2), None);
        // Not in sync: its stop takes nothing from the ISR.
        let behind = state(Role::Follower, 2, &[1, 2, 3], &[2, 3]);
        assert_eq!(left_below_min_isr(&behind, 1, &live(&[1, 2, 3]), 2), None);
    }

    #[test]
    fn a_follower_rejoins_where_its_leader_is_live() {
        let behind = state(Role::Follower, 2, &[1, 2, 3], &[2, 3]);
        assert!(catching_up(&behind, 1, &live(&[1, 2, 3])));
        let back = state(Role::Follower, 2, &[1, 2, 3], &[1, 2, 3]);
        assert!(!catching_up(&back, 1, &live(&[1, 2, 3])));
        // Leader down (every broker restarting): nothing to catch up from, no wait.
        assert!(!catching_up(&behind, 1, &live(&[1])));
        let leaderless = state(Role::Follower, -1, &[1, 2, 3], &[2]);
        assert!(!catching_up(&leaderless, 1, &live(&[1])));
    }
}
