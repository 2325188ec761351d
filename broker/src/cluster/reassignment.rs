//! Changes an operator asks for to a partition's placement and leadership: reassignments
//! (KIP-455, AlterPartitionReassignments) and leader elections (KIP-460, ElectLeaders).
//!
//! Each is a pure function of the stored record and the live brokers; the admin handler
//! stores the result by compare-and-swap. A reassignment is only *started* here: the
//! replicas it adds follow the leader as any follower does, join the ISR once caught up,
//! and the controller completes the move (`controller.rs`, step 3), exactly as for a
//! drain. While it runs, the record holds (as Kafka's does):
//!
//! - `replicas`: the target, then the replicas being removed;
//! - `adding`: target replicas that were not replicas before;
//! - `removing`: replicas that are not in the target.
//!
//! The replicas being removed keep serving (and counting towards acks=all) until every
//! target replica is in sync, so a reassignment never lowers durability. A leader outside
//! the target hands over, with a new epoch, when the move completes.

use super::PartitionRecord;
use super::controller::set_leader;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassignError {
    #[error("{0}")]
    InvalidAssignment(String),
    #[error("no reassignment is in progress for this partition")]
    NoneInProgress,
}

/// The brokers as an admin change sees them.
#[derive(Debug, Clone, Default)]
pub struct LiveBrokers {
    /// Registered brokers: in this design the live ones (registered while their session
    /// lasts).
    pub live: Vec<i32>,
    /// Brokers being drained: they receive no new replicas and no leadership.
    pub draining: Vec<i32>,
}

impl LiveBrokers {
    fn is_live(&self, id: i32) -> bool {
        self.live.contains(&id)
    }
}

/// Starts moving `p` to `target` (in preference order), or changes the target of a
/// reassignment under way. New replicas must be on live brokers that are not draining.
pub fn reassign(
    p: &mut PartitionRecord,
    target: &[i32],
    brokers: &LiveBrokers,
) -> Result<(), ReassignError> {
    if target.is_empty() {
        return Err(invalid("the replica list is empty"));
    }
    let original = original_replicas(p);
    for (i, r) in target.iter().enumerate() {
        if target[..i].contains(r) {
            return Err(invalid(format!("broker {r} is listed twice")));
        }
        if !brokers.is_live(*r) {
            return Err(invalid(format!("broker {r} is not a registered broker")));
        }
        if !original.contains(r) && brokers.draining.contains(r) {
            return Err(invalid(format!(
                "broker {r} is being drained: it receives no new replicas"
            )));
        }
    }
    let mut next = p.clone();
    next.replicas = target.to_vec();
    next.replicas
        .extend(original.iter().filter(|r| !target.contains(r)));
    next.adding = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    next.removing = original
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    settle(&mut next, &brokers.live)?;
    *p = next;
    Ok(())
}

/// Cancels the reassignment under way: the replicas return to those before it (in the
/// current order, as Kafka keeps them, so the first replica may differ from before).
pub fn cancel(p: &mut PartitionRecord, brokers: &LiveBrokers) -> Result<(), ReassignError> {
    if !p.is_reassigning() {
        return Err(ReassignError::NoneInProgress);
    }
    let mut next = p.clone();
    next.replicas = original_replicas(p);
    next.adding.clear();
    next.removing.clear();
    settle(&mut next, &brokers.live)?;
    *p = next;
    Ok(())
}

/// The replicas before the reassignment under way (or now, if none is).
pub fn original_replicas(p: &PartitionRecord) -> Vec<i32> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.adding.contains(r))
        .collect()
}

/// After `replicas` changed: replicas that left leave the ISR, and a leader that left
/// hands over to a live in-sync replica. Refuses a change that would leave no replica
/// in sync, or none that is live where one was (the stored ISR may still list a broker
/// that just died: only live members count).
fn settle(p: &mut PartitionRecord, live: &[i32]) -> Result<(), ReassignError> {
    let had_live_isr = p.isr.iter().any(|r| live.contains(r));
    let replicas = p.replicas.clone();
    p.isr.retain(|r| replicas.contains(r));
    if p.isr.is_empty() || (had_live_isr && !p.isr.iter().any(|r| live.contains(r))) {
        return Err(invalid(
            "no live in-sync replica would remain: every one is a replica this change drops",
        ));
    }
    if p.leader >= 0 && !p.replicas.contains(&p.leader) {
        let next = p
            .replicas
            .iter()
            .copied()
            .find(|r| p.isr.contains(r) && live.contains(r))
            .unwrap_or(-1);
        set_leader(p, next);
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> ReassignError {
    ReassignError::InvalidAssignment(message.into())
}

/// Kafka's election types (ElectLeaders' `election_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Leadership to the first replica, if it is live and in sync.
    Preferred,
    /// A leader for a partition that has none: from the ISR if one is live, else any live
    /// replica, which may have lost acknowledged records.
    Unclean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElectError {
    #[error("the partition already has the leader this election would choose")]
    NotNeeded,
    #[error("the preferred replica is not live and in sync")]
    PreferredNotAvailable,
    #[error("no replica of the partition is live")]
    EligibleNotAvailable,
}

/// Elects a leader for `p` as `election` asks; the new leader gets a new epoch.
pub fn elect(
    p: &mut PartitionRecord,
    election: Election,
    brokers: &LiveBrokers,
) -> Result<(), ElectError> {
    let is_live = |r: &i32| brokers.is_live(*r);
    match election {
        Election::Preferred => {
            let preferred = *p
                .replicas
                .first()
                .ok_or(ElectError::PreferredNotAvailable)?;
            if preferred == p.leader {
                return Err(ElectError::NotNeeded);
            }
            if !is_live(&preferred)
                || !p.isr.contains(&preferred)
                || p.removing.contains(&preferred)
                || brokers.draining.contains(&preferred)
            {
                return Err(ElectError::PreferredNotAvailable);
            }
            set_leader(p, preferred);
        }
        Election::Unclean => {
            if p.leader >= 0 && is_live(&p.leader) && p.isr.contains(&p.leader) {
                return Err(ElectError::NotNeeded);
            }
            let clean = p
                .replicas
                .iter()
                .copied()
                .find(|r| p.isr.contains(r) && is_live(r));
            match clean {
                Some(leader) => {
                    set_leader(p, leader);
                }
                None => {
                    let leader = p
                        .replicas
                        .iter()
                        .copied()
                        .find(is_live)
                        .ok_or(ElectError::EligibleNotAvailable)?;
                    set_leader(p, leader);
                    p.isr = vec![leader];
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ids: &[i32]) -> LiveBrokers {
        LiveBrokers {
            live: ids.to_vec(),
            draining: Vec::new(),
        }
    }

    fn record(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionRecord {
        let mut p = PartitionRecord::new(replicas.to_vec());
        p.leader = leader;
        p.isr = isr.to_vec();
        p
    }

    #[test]
    fn a_reassignment_lists_the_target_first_then_the_replicas_it_removes() {
        let mut p = record(&[1, 2], 1, &[1, 2]);
        reassign(&mut p, &[3, 2], &live(&[1, 2, 3])).expect("starts");
        assert_eq!(p.replicas, vec![3, 2, 1]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![3], vec![1]));
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (1, 0, vec![1, 2]),
            "the old leader leads, and the removed replica stays in sync, until the move completes"
        );

        // A new target while it runs is taken against the replicas before it.
        reassign(&mut p, &[2, 4], &live(&[1, 2, 3, 4])).expect("changes");
        assert_eq!(p.replicas, vec![2, 4, 1]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![4], vec![1]));

        // As in Kafka, the replicas before it are the current ones less those being added,
        // in the current order: the preferred leader may differ from before.
        cancel(&mut p, &live(&[1, 2, 3, 4])).expect("cancels");
        assert_eq!(p.replicas, vec![2, 1]);
        assert!(!p.is_reassigning());
        assert_eq!(
            cancel(&mut p, &live(&[1, 2])),
            Err(ReassignError::NoneInProgress)
        );
    }

    #[test]
    fn a_reassignment_is_refused_for_unknown_or_repeated_brokers_and_an_empty_list() {
        let mut p = record(&[1, 2], 1, &[1, 2]);
        let before = p.clone();
        for target in [&[][..], &[1, 1], &[1, 9]] {
            assert!(matches!(
                reassign(&mut p, target, &live(&[1, 2, 3])),
                Err(ReassignError::InvalidAssignment(_))
            ));
            assert_eq!(p, before, "a refused reassignment changes nothing");
        }
    }

    #[test]
    fn cancelling_drops_added_replicas_from_the_isr_and_from_leadership() {
        let mut p = record(&[1], 1, &[1]);
        reassign(&mut p, &[2], &live(&[1, 2])).expect("starts");
        // Replica 2 caught up and, after a failover, leads.
        p.isr = vec![1, 2];
        p.leader = 2;
        cancel(&mut p, &live(&[1, 2])).expect("cancels");
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch),
            (vec![1], vec![1], 1, 1)
        );
        // A cancel that would leave no replica in sync is refused.
        let mut p = record(&[1], 1, &[1]);
        reassign(&mut p, &[2], &live(&[1, 2])).expect("starts");
        p.isr = vec![2];
        p.leader = 2;
        assert!(matches!(
            cancel(&mut p, &live(&[1, 2])),
            Err(ReassignError::InvalidAssignment(_))
        ));
    }

    #[test]
    fn draining_brokers_get_no_new_replicas_and_no_preferred_leadership() {
        let brokers = LiveBrokers {
            live: vec![1, 2, 3],
            draining: vec![3],
        };
        let mut p = record(&[1, 2], 1, &[1, 2]);
        assert!(matches!(
            reassign(&mut p, &[1, 3], &brokers),
            Err(ReassignError::InvalidAssignment(m)) if m.contains("drained")
        ));
        // A draining broker that is a replica already may stay in the list.
        let mut p = record(&[3, 1], 1, &[1, 3]);
        reassign(&mut p, &[3, 1, 2], &brokers).expect("keeps 3, adds 2");
        assert_eq!(
            elect(&mut p, Election::Preferred, &brokers),
            Err(ElectError::PreferredNotAvailable)
        );
    }

    #[test]
    fn a_change_that_drops_every_live_in_sync_replica_is_refused() {
        // 1 died (the controller has not yet taken it out of the ISR); 2 is being added
        // and caught up: cancelling would leave only the dead 1.
        let mut p = record(&[1], 1, &[1]);
        reassign(&mut p, &[1, 2], &live(&[1, 2])).expect("starts");
        p.isr = vec![1, 2];
        let before = p.clone();
        assert!(matches!(
            cancel(&mut p, &live(&[2])),
            Err(ReassignError::InvalidAssignment(_))
        ));
        assert_eq!(p, before);
    }

    #[test]
    fn preferred_election_needs_the_first_replica_live_and_in_sync() {
        let mut p = record(&[1, 2], 2, &[1, 2]);
        assert_eq!(
            elect(&mut p.clone(), Election::Preferred, &live(&[2])),
            Err(ElectError::PreferredNotAvailable)
        );
        let mut out_of_sync = record(&[1, 2], 2, &[2]);
        assert_eq!(
            elect(&mut out_of_sync, Election::Preferred, &live(&[1, 2])),
            Err(ElectError::PreferredNotAvailable)
        );
        elect(&mut p, Election::Preferred, &live(&[1, 2])).expect("elects");
        assert_eq!((p.leader, p.leader_epoch), (1, 1));
        assert_eq!(
            elect(&mut p, Election::Preferred, &live(&[1, 2])),
            Err(ElectError::NotNeeded)
        );
    }

    #[test]
    fn unclean_election_prefers_the_isr_and_otherwise_takes_any_live_replica() {
        let mut led = record(&[1, 2], 1, &[1, 2]);
        assert_eq!(
            elect(&mut led, Election::Unclean, &live(&[1, 2])),
            Err(ElectError::NotNeeded)
        );
        let mut leaderless = record(&[1, 2, 3], -1, &[1]);
        elect(&mut leaderless, Election::Unclean, &live(&[2, 3])).expect("elects");
        assert_eq!(
            (
                leaderless.leader,
                leaderless.isr.clone(),
                leaderless.leader_epoch
            ),
            (2, vec![2], 1)
        );
        let mut clean = record(&[1, 2, 3], -1, &[1, 3]);
        elect(&mut clean, Election::Unclean, &live(&[2, 3])).expect("elects");
        assert_eq!((clean.leader, clean.isr.clone()), (3, vec![1, 3]));
        let mut dead = record(&[1, 2], -1, &[1]);
        assert_eq!(
            elect(&mut dead, Election::Unclean, &live(&[3])),
            Err(ElectError::EligibleNotAvailable)
        );
    }
}
