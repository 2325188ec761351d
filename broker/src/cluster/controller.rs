//! The controller's decisions, as a pure function of the stored topic records and the
//! live brokers. One broker at a time is the controller (it holds the `controller` key
//! under its etcd lease); every `metadata_refresh_interval_ms` it reconciles each topic
//! and stores what changed by compare-and-swap, so a decision made on a stale view is
//! simply refused and made again.
//!
//! Per partition, in order:
//! 1. Dead brokers leave the ISR, except the last member: a partition whose every
//!    in-sync replica died waits, leaderless, for one of them (unless unclean election
//!    is on), because only they are known to hold every acknowledged record.
//! 2. A partition whose leader is dead (or that has none) gets the first live ISR member
//!    in replica order, and a new leader epoch. With unclean election on and no live ISR
//!    member, any live replica, with an ISR of itself.
//! 3. Draining brokers are replaced: a replacement joins the replica list (`adding`
//!    names it, `removing` the drained one). A move (a drain's or a reassignment's,
//!    see [`super::reassignment`]) completes once every replica of the target is in the
//!    ISR: the removed replicas are dropped and, if the leader was one of them,
//!    leadership moves to the target (a new epoch).
//! 4. With `rebalance`, leadership goes back to the preferred (first) replica if it is
//!    live, in sync and not draining.

use std::collections::{BTreeMap, BTreeSet};

use super::{BrokerInfo, PartitionRecord, TopicRecord, placement};

/// What the controller knows about the brokers.
pub struct Brokers<'a> {
    pub live: &'a [BrokerInfo],
    pub draining: &'a BTreeSet<i32>,
}

impl Brokers<'_> {
    fn is_live(&self, id: i32) -> bool {
        self.live.iter().any(|b| b.node_id == id)
    }

    /// Live brokers that are not draining: where replicas may go.
    fn targets(&self) -> Vec<BrokerInfo> {
        self.live
            .iter()
            .filter(|b| !self.draining.contains(&b.node_id))
            .cloned()
            .collect()
    }
}

/// Replicas per broker over all topics, for choosing replacements.
pub fn load(topics: &[TopicRecord]) -> BTreeMap<i32, usize> {
    let mut load = BTreeMap::new();
    for p in topics.iter().flat_map(|t| &t.partitions) {
        for &r in &p.replicas {
            *load.entry(r).or_insert(0) += 1;
        }
    }
    load
}

/// The topic's record after reconciliation, if anything changed.
pub fn reconcile(
    topic: &TopicRecord,
    brokers: &Brokers,
    load: &mut BTreeMap<i32, usize>,
    unclean: bool,
    rebalance: bool,
) -> Option<TopicRecord> {
    if topic.is_diskless() {
        return None;
    }
    let mut next = topic.clone();
    let mut changed = false;
    for p in &mut next.partitions {
        changed |= reconcile_partition(p, brokers, load, unclean, rebalance);
    }
    changed.then_some(next)
}

/// What a broker does to the topic's record when it starts (before it serves anything):
/// it leaves the ISR of each partition where another live broker is in sync, handing
/// leadership to the first such replica (a new epoch). Its log may have lost records it
/// never flushed (a crash), so it must neither lead nor count towards acks=all until it
/// has caught up from a replica that holds everything acknowledged; it then rejoins the
/// ISR as any follower does. Where it is the only live in-sync replica it keeps its
/// place: nobody has more. `None` if nothing changes.
pub fn step_down(topic: &TopicRecord, me: i32, live: &[BrokerInfo]) -> Option<TopicRecord> {
    if topic.is_diskless() {
        return None;
    }
    let mut next = topic.clone();
    let mut changed = false;
    for p in &mut next.partitions {
        if !p.isr.contains(&me) {
            continue;
        }
        let successor = p
            .replicas
            .iter()
            .copied()
            .find(|&r| r != me && p.isr.contains(&r) && live.iter().any(|b| b.node_id == r));
        let Some(successor) = successor else {
            continue;
        };
        p.isr.retain(|&r| r != me);
        if p.leader == me {
            set_leader(p, successor);
        }
        changed = true;
    }
    changed.then_some(next)
}

/// Completes a move once every replica of the target (all but `removing`) is in sync:
/// the removed replicas go, and leadership moves into the target if it was outside.
fn complete_move(p: &mut PartitionRecord, brokers: &Brokers, load: &mut BTreeMap<i32, usize>) {
    let target: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.removing.contains(r))
        .collect();
    if !target.iter().all(|r| p.isr.contains(r)) {
        return;
    }
    for d in std::mem::take(&mut p.removing) {
        if let Some(n) = load.get_mut(&d) {
            *n = n.saturating_sub(1);
        }
    }
    p.adding.clear();
    p.isr.retain(|r| target.contains(r));
    p.replicas = target;
    if !p.replicas.contains(&p.leader)
        && let Some(&leader) = p.replicas.iter().find(|&&r| brokers.is_live(r))
    {
        set_leader(p, leader);
    }
}

pub(crate) fn set_leader(p: &mut PartitionRecord, leader: i32) -> bool {
    if p.leader == leader {
        return false;
    }
    p.leader = leader;
    p.leader_epoch += 1;
    true
}

pub fn reconcile_partition(
    p: &mut PartitionRecord,
    brokers: &Brokers,
    load: &mut BTreeMap<i32, usize>,
    unclean: bool,
    rebalance: bool,
) -> bool {
    let before = p.clone();
    // 1. Dead brokers leave the ISR, but it never empties.
    let live_isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|&r| brokers.is_live(r))
        .collect();
    if !live_isr.is_empty() {
        p.isr = live_isr;
    }
    // 2. A live leader from the ISR.
    if p.leader < 0 || !brokers.is_live(p.leader) || !p.isr.contains(&p.leader) {
        let candidate = p
            .replicas
            .iter()
            .copied()
            .find(|r| p.isr.contains(r) && brokers.is_live(*r));
        match candidate {
            Some(leader) => {
                set_leader(p, leader);
            }
            None if unclean => {
                if let Some(leader) = p.replicas.iter().copied().find(|&r| brokers.is_live(r)) {
                    set_leader(p, leader);
                    p.isr = vec![leader];
                } else {
                    set_leader(p, -1);
                }
            }
            None => {
                set_leader(p, -1);
            }
        }
    }
    // 3. Drains start moves; moves (drains and reassignments) complete.
    if !p.is_reassigning() {
        let drained: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| brokers.draining.contains(r))
            .collect();
        for d in drained {
            if let Some(t) = placement::replacement(&brokers.targets(), &p.replicas, load) {
                p.replicas.push(t);
                p.adding.push(t);
                p.removing.push(d);
                *load.entry(t).or_insert(0) += 1;
            }
        }
    }
    if p.is_reassigning() {
        complete_move(p, brokers, load);
    }
    // 4. Preferred leaders.
    if rebalance
        && let Some(&preferred) = p.replicas.first()
        && preferred != p.leader
        && p.isr.contains(&preferred)
        && brokers.is_live(preferred)
        && !brokers.draining.contains(&preferred)
        && !p.removing.contains(&preferred)
    {
        set_leader(p, preferred);
    }
    *p != before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(ids: &[i32]) -> Vec<BrokerInfo> {
        ids.iter()
            .map(|&id| BrokerInfo {
                node_id: id,
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                replication: String::new(),
                admin: String::new(),
                listeners: Vec::new(),
                principal: String::new(),
            })
            .collect()
    }

    fn run(p: &mut PartitionRecord, live: &[i32], draining: &[i32], unclean: bool) -> bool {
        let live = brokers(live);
        let draining: BTreeSet<i32> = draining.iter().copied().collect();
        let view = Brokers {
            live: &live,
            draining: &draining,
        };
        reconcile_partition(p, &view, &mut BTreeMap::new(), unclean, false)
    }

    #[test]
    fn a_starting_broker_leaves_the_isr_and_hands_leadership_to_a_live_in_sync_replica() {
        let mut led = PartitionRecord::new(vec![1, 2, 3]);
        led.leader_epoch = 4;
        let mut followed = PartitionRecord::new(vec![2, 1, 3]);
        followed.leader = 2;
        let mut out_of_sync = PartitionRecord::new(vec![3, 1]);
        out_of_sync.leader = 3;
        out_of_sync.isr = vec![3];
        let mut alone = PartitionRecord::new(vec![1, 2]);
        alone.isr = vec![1, 2];
        let topic = TopicRecord {
            name: "t".into(),
            id: uuid::Uuid::nil(),
            partitions: vec![led, followed, out_of_sync, alone],
            configs: BTreeMap::new(),
        };
        // Broker 2 is dead: partition 3's only other in-sync replica.
        let next = step_down(&topic, 1, &brokers(&[1, 3])).expect("changes");
        let p = &next.partitions;
        assert_eq!(
            (p[0].leader, p[0].leader_epoch, p[0].isr.clone()),
            (3, 5, vec![2, 3])
        );
        assert_eq!(
            (p[1].leader, p[1].leader_epoch, p[1].isr.clone()),
            (2, 0, vec![2, 3])
        );
        assert_eq!(p[2], topic.partitions[2], "not in the ISR: nothing to do");
        assert_eq!(
            p[3], topic.partitions[3],
            "no live replica in sync but itself"
        );
        assert_eq!(step_down(&next, 1, &brokers(&[1, 3])), None);
    }

    #[test]
    fn a_dead_leader_is_replaced_from_the_isr_with_a_new_epoch() {
        let mut p = PartitionRecord::new(vec![1, 2, 3]);
        assert!(!run(&mut p, &[1, 2, 3], &[], false));
        assert!(run(&mut p, &[2, 3], &[], false));
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (2, 1, vec![2, 3])
        );
        // The old leader comes back: it is not in the ISR until the leader adds it.
        assert!(!run(&mut p, &[1, 2, 3], &[], false));
        assert_eq!(p.leader, 2);
    }

    #[test]
    fn without_a_live_isr_member_the_partition_waits_for_one_unless_unclean() {
        let mut p = PartitionRecord::new(vec![1, 2]);
        p.isr = vec![1];
        assert!(run(&mut p, &[2], &[], false));
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (-1, 1, vec![1]));
        assert!(run(&mut p, &[1, 2], &[], false));
        assert_eq!((p.leader, p.leader_epoch), (1, 2));

        let mut p = PartitionRecord::new(vec![1, 2]);
        p.isr = vec![1];
        assert!(run(&mut p, &[2], &[], true));
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn a_drain_adds_a_replacement_then_drops_the_drained_replica_once_it_is_in_sync() {
        let mut p = PartitionRecord::new(vec![3, 1]);
        assert!(run(&mut p, &[1, 2, 3], &[3], false));
        assert_eq!(
            (p.replicas.clone(), p.removing.clone()),
            (vec![3, 1, 2], vec![3])
        );
        assert_eq!(
            p.leader, 3,
            "the drained leader leads until its replacement is in sync"
        );
        assert!(!run(&mut p, &[1, 2, 3], &[3], false));
        p.isr.push(2);
        assert!(run(&mut p, &[1, 2, 3], &[3], false));
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
        assert!(p.removing.is_empty());
        assert_eq!((p.leader, p.leader_epoch), (1, 1));
    }

    #[test]
    fn a_reassignment_completes_once_the_target_is_in_sync_and_the_leader_moves_into_it() {
        let mut p = PartitionRecord::new(vec![1, 2]);
        let brokers = |ids: &[i32]| super::super::reassignment::LiveBrokers {
            live: ids.to_vec(),
            draining: Vec::new(),
        };
        super::super::reassignment::reassign(&mut p, &[3, 2], &brokers(&[1, 2, 3]))
            .expect("starts");
        assert!(!run(&mut p, &[1, 2, 3], &[], false), "3 is not in sync yet");
        p.isr.push(3);
        assert!(run(&mut p, &[1, 2, 3], &[], false));
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch),
            (vec![3, 2], vec![2, 3], 3, 1)
        );
        assert!(!p.is_reassigning());
        // Growing the replication factor: nothing is removed, the move ends once in sync.
        let mut p = PartitionRecord::new(vec![1]);
        super::super::reassignment::reassign(&mut p, &[1, 2], &brokers(&[1, 2])).expect("starts");
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![2], vec![]));
        p.isr.push(2);
        assert!(run(&mut p, &[1, 2], &[], false));
        assert_eq!(
            (p.replicas.clone(), p.leader, p.leader_epoch),
            (vec![1, 2], 1, 0)
        );
        assert!(!p.is_reassigning());
    }

    #[test]
    fn leadership_returns_to_the_preferred_replica_when_rebalancing() {
        let mut p = PartitionRecord::new(vec![1, 2]);
        p.leader = 2;
        let live = brokers(&[1, 2]);
        let none = BTreeSet::new();
        let view = Brokers {
            live: &live,
            draining: &none,
        };
        assert!(!reconcile_partition(
            &mut p,
            &view,
            &mut BTreeMap::new(),
            false,
            false
        ));
        assert!(reconcile_partition(
            &mut p,
            &view,
            &mut BTreeMap::new(),
            false,
            true
        ));
        assert_eq!((p.leader, p.leader_epoch), (1, 1));
    }
}
