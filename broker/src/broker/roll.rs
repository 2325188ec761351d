//! The two questions a rolling restart asks a broker (served over HTTP by
//! `telemetry`: `/safe-to-stop` and `/readyz/in-sync`), answered from this broker's view
//! of the partitions it holds, as its last metadata round applied them.
//!
//! - **May it stop?** Stopping it takes it out of the ISR of every partition where it is
//!   in sync. It may stop when none of them would fall below `min.insync.replicas`
//!   (counting the other in-sync replicas that are live), so acks=all producers keep
//!   being answered, and it is not the last live in-sync replica of a partition with
//!   other replicas (its stop would take the partition offline while a follower catches
//!   up). The replication factor leaves out replicas being moved off. A partition whose
//!   factor is not above `min.insync.replicas` (1, or 2 with min.insync 2) cannot keep
//!   acks=all through the restart of any of its replicas; only the last-replica rule
//!   holds the stop for it (Strimzi's KafkaRoller decides the same).
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

/// What stopping broker `me` would do to a partition, when waiting could prevent it.
#[derive(Debug, PartialEq, Eq)]
enum StopRisk {
    /// It is the last live in-sync replica of a replicated partition: the partition would
    /// go offline (until it returns) and lose whatever only it holds.
    LastInSync { factor: usize },
    /// This many in-sync replicas would be left, below `min.insync.replicas`.
    BelowMinIsr { left: usize },
}

/// What stopping broker `me` now would do to this partition; `None` when nothing a wait
/// could prevent. The replication factor leaves out replicas being moved off (during a
/// move `replicas` holds the old and the new). A partition it is not in sync for loses
/// nothing by its stop. It blocks where `me` is the only live in-sync replica of a
/// partition with other replicas (they can catch up), and where the factor is above
/// `min_isr` and fewer than `min_isr` others would stay in sync. A factor not above
/// `min_isr` (1, or 2 with min.insync 2) cannot keep acks=all through any restart, so
/// only the first rule holds it (as Strimzi's KafkaRoller).
fn stop_risk(
    state: &ReplicaState,
    me: i32,
    live: &BTreeSet<i32>,
    min_isr: usize,
) -> Option<StopRisk> {
    if !state.isr.contains(&me) {
        return None;
    }
    let factor = state
        .replicas
        .iter()
        .filter(|r| !state.removing.contains(r))
        .count();
    let others = state
        .isr
        .iter()
        .filter(|&&r| r != me && live.contains(&r))
        .count();
    if others == 0 && factor > 1 {
        return Some(StopRisk::LastInSync { factor });
    }
    (factor > min_isr && others < min_isr).then_some(StopRisk::BelowMinIsr { left: others })
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
                let why = match stop_risk(&state, me, &live, min_isr) {
                    None => continue,
                    Some(StopRisk::BelowMinIsr { left }) => format!(
                        "without broker {me} {left} would be left, below min.insync.replicas {min_isr}"
                    ),
                    Some(StopRisk::LastInSync { factor }) => format!(
                        "broker {me} is the last live one of {factor} replicas; without it the partition goes offline"
                    ),
                };
                blockers.push(format!(
                    "{}/{}: in-sync replicas {:?}; {why}",
                    partition.topic, partition.index, state.isr
                ));
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

    fn below(left: usize) -> Option<StopRisk> {
        Some(StopRisk::BelowMinIsr { left })
    }

    #[test]
    fn a_broker_may_stop_while_the_others_keep_min_isr() {
        let full = state(Role::Follower, 2, &[1, 2, 3], &[1, 2, 3]);
        assert_eq!(stop_risk(&full, 1, &live(&[1, 2, 3]), 2), None);
        // With broker 3 out of the ISR, stopping broker 1 would leave one.
        let short = state(Role::Follower, 2, &[1, 2, 3], &[1, 2]);
        assert_eq!(stop_risk(&short, 1, &live(&[1, 2, 3]), 2), below(1));
        // In the ISR but gone (its session not yet ended): not counted.
        assert_eq!(stop_risk(&full, 1, &live(&[1, 2]), 2), below(1));
    }

    #[test]
    fn partitions_no_wait_can_protect_do_not_hold_the_stop() {
        // Replication factor 1, and factor 2 with min.insync 2 and both in sync: any
        // restart takes acks=all below min.insync.replicas.
        let alone = state(Role::Leader, 1, &[1], &[1]);
        assert_eq!(stop_risk(&alone, 1, &live(&[1]), 1), None);
        let pair = state(Role::Leader, 1, &[1, 2], &[1, 2]);
        assert_eq!(stop_risk(&pair, 1, &live(&[1, 2]), 2), None);
        // Not in sync: its stop takes nothing from the ISR.
        let behind = state(Role::Follower, 2, &[1, 2, 3], &[2, 3]);
        assert_eq!(stop_risk(&behind, 1, &live(&[1, 2, 3]), 2), None);
    }

    #[test]
    fn the_last_in_sync_replica_holds_the_stop() {
        // Factor 2, min.insync 2, the follower catching up: stopping the leader would
        // take the partition offline.
        let catching_up = state(Role::Leader, 1, &[1, 2], &[1]);
        assert_eq!(
            stop_risk(&catching_up, 1, &live(&[1, 2]), 2),
            Some(StopRisk::LastInSync { factor: 2 })
        );
        // Factor 3 with min.insync 1: the other two lagging.
        let lonely = state(Role::Leader, 1, &[1, 2, 3], &[1]);
        assert_eq!(
            stop_risk(&lonely, 1, &live(&[1, 2, 3]), 1),
            Some(StopRisk::LastInSync { factor: 3 })
        );
        // The other in-sync replica is gone: still the last live one.
        let gone = state(Role::Leader, 1, &[1, 2], &[1, 2]);
        assert_eq!(
            stop_risk(&gone, 1, &live(&[1]), 2),
            Some(StopRisk::LastInSync { factor: 2 })
        );
        // One other in sync is enough where the factor is not above min.insync.
        assert_eq!(stop_risk(&gone, 1, &live(&[1, 2]), 2), None);
    }

    #[test]
    fn replicas_being_moved_off_do_not_count_in_the_factor() {
        // Factor 2, min.insync 2, broker 3 being drained, broker 4 added and in sync:
        // `replicas` lists three, but the factor is 2, which no wait can protect.
        let mut moving = state(Role::Leader, 1, &[1, 4, 3], &[1, 3, 4]);
        moving.removing = vec![3];
        assert_eq!(stop_risk(&moving, 1, &live(&[1, 3, 4]), 2), None);
        // Counted as factor 3, it would have waited for an ISR of three.
        moving.isr = vec![1, 4];
        assert_eq!(stop_risk(&moving, 1, &live(&[1, 3, 4]), 2), None);
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
