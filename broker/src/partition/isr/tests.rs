//! Tests of the replication state machine: roles, the high watermark over the (maximal)
//! ISR, and the ISR changes a leader proposes.

use super::*;

fn record(leader: i32, epoch: i32, replicas: &[i32], isr: &[i32]) -> PartitionRecord {
    PartitionRecord {
        leader,
        leader_epoch: epoch,
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        removing: Vec::new(),
        adding: Vec::new(),
    }
}

fn replica(me: i32) -> ReplicaState {
    let mut state = ReplicaState::solo(me, -1, 0);
    state.role = Role::None;
    state.leader = -1;
    state
}

#[test]
fn roles_follow_the_record_and_a_new_epoch_is_a_new_term() {
    let mut state = replica(1);
    assert_eq!(
        state.apply(&record(2, 0, &[2, 1], &[2, 1]), 0, 0),
        Transition::BecameFollower
    );
    assert_eq!(
        state.apply(&record(2, 0, &[2, 1], &[2]), 0, 0),
        Transition::Unchanged,
        "an ISR change is not a new term"
    );
    assert_eq!(
        state.apply(&record(1, 1, &[2, 1], &[1]), 40, 0),
        Transition::BecameLeader
    );
    assert_eq!((state.leader_end, state.epoch_start), (40, 40));
    assert_eq!(
        state.apply(&record(2, 2, &[2, 1], &[2, 1]), 40, 0),
        Transition::BecameFollower
    );
    assert_eq!(
        state.apply(&record(3, 3, &[2, 3], &[2, 3]), 40, 0),
        Transition::Stopped
    );
}

#[test]
fn the_high_watermark_is_the_smallest_end_over_the_isr() {
    let mut state = replica(1);
    state.apply(&record(1, 0, &[1, 2, 3], &[1, 2, 3]), 100, 0);
    // Followers that have not fetched yet hold nothing the leader can count on.
    assert_eq!(state.isr_end(), Some(-1));
    state.record_fetch(2, 100, 100, 10);
    state.record_fetch(3, 60, 100, 10);
    assert_eq!(state.isr_end(), Some(60));
    state.leader_end = 120;
    state.record_fetch(3, 120, 120, 20);
    assert_eq!(state.isr_end(), Some(100));
}

#[test]
fn a_removal_counts_until_stored_and_an_addition_counts_once_proposed() {
    let mut state = replica(1);
    state.apply(&record(1, 0, &[1, 2, 3], &[1, 2]), 100, 0);
    state.record_fetch(2, 100, 100, 0);
    state.record_fetch(3, 100, 100, 0);
    // Follower 3 caught up: it joins; until stored it already counts (it could be elected).
    let change = state.isr_change(100, 1, 1_000, |_| true).expect("3 joins");
    assert_eq!(change, vec![1, 2, 3]);
    state.proposed_isr = Some(change.clone());
    assert_eq!(state.maximal_isr(), vec![1, 2, 3]);
    state.apply(&record(1, 0, &[1, 2, 3], &change), 100, 1);
    assert_eq!(state.proposed_isr, None);
    // Follower 2 stops fetching: it leaves after the lag, but counts until stored.
    state.record_fetch(3, 100, 100, 5_000);
    let change = state
        .isr_change(100, 5_000, 1_000, |_| true)
        .expect("2 leaves");
    assert_eq!(change, vec![1, 3]);
    state.proposed_isr = Some(change.clone());
    assert!(state.maximal_isr().contains(&2));
    // Not confirmed (a store timeout): the same proposal comes again, even if 2 is back.
    state.record_fetch(2, 100, 100, 5_100);
    assert_eq!(state.isr_change(100, 5_100, 1_000, |_| true), Some(change));
    // The controller stored another ISR meanwhile: the proposal is settled by it.
    state.apply(&record(1, 0, &[1, 2, 3], &[1, 2]), 100, 5_200);
    assert_eq!(state.proposed_isr, None);
    assert_eq!(state.maximal_isr(), vec![1, 2]);
}

#[test]
fn a_follower_behind_the_epoch_start_does_not_join() {
    let mut state = replica(1);
    state.apply(&record(1, 4, &[1, 2], &[1]), 50, 0);
    state.record_fetch(2, 40, 50, 0);
    assert_eq!(state.isr_change(40, 0, 1_000, |_| true), None);
    state.record_fetch(2, 50, 50, 0);
    assert_eq!(state.isr_change(40, 0, 1_000, |_| true), Some(vec![1, 2]));
}

#[test]
fn a_follower_that_keeps_reaching_the_previous_end_stays_caught_up() {
    let mut state = replica(1);
    state.apply(&record(1, 0, &[1, 2], &[1, 2]), 0, 0);
    // Under steady produce the follower is always one round behind the end.
    let mut end = 0;
    for round in 1..=20 {
        let now = round * 500;
        state.record_fetch(2, end, end + 10, now);
        end += 10;
    }
    assert_eq!(
        state.isr_change(end, 10_000, 1_000, |_| true),
        None,
        "not lagging"
    );
    // It stops keeping up: after the lag it leaves.
    state.record_fetch(2, end - 5, end + 100, 10_500);
    state.record_fetch(2, end - 4, end + 200, 12_000);
    assert_eq!(
        state.isr_change(end - 4, 12_000, 1_000, |_| true),
        Some(vec![1])
    );
}

#[test]
fn a_dead_or_silent_follower_does_not_rejoin() {
    let mut state = replica(1);
    state.apply(&record(1, 0, &[1, 2], &[1, 2]), 50, 0);
    state.record_fetch(2, 50, 50, 1_000);
    // The controller removed the dead follower.
    state.apply(&record(1, 0, &[1, 2], &[1]), 50, 1_100);
    assert_eq!(
        state.isr_change(50, 1_200, 30_000, |id| id != 2),
        None,
        "not live"
    );
    assert_eq!(
        state.isr_change(50, 4_000, 30_000, |_| true),
        None,
        "no recent fetch"
    );
    state.record_fetch(2, 50, 50, 4_100);
    assert_eq!(
        state.isr_change(50, 4_200, 30_000, |_| true),
        Some(vec![1, 2])
    );
}

#[test]
fn only_a_replica_being_added_and_not_in_sync_is_catching_up() {
    let mut state = replica(1);
    let mut moving = record(1, 0, &[1, 2, 3], &[1, 2]);
    moving.adding = vec![3];
    state.apply(&moving, 0, 0);
    assert!(state.catching_up(3), "added, not in sync: throttled");
    assert!(
        !state.catching_up(2),
        "an in-sync follower is never throttled"
    );
    // Out of the ISR but not being added (a lagging follower): not a reassignment's catch-up.
    state.apply(&record(1, 0, &[1, 2, 3], &[1]), 0, 0);
    assert!(!state.catching_up(2) && !state.catching_up(3));
    // Once the added replica is in the ISR this leader proposed, it is not throttled.
    state.apply(&moving, 0, 0);
    state.proposed_isr = Some(vec![1, 2, 3]);
    assert!(!state.catching_up(3));
}

#[test]
fn a_replica_being_added_is_throttled_only_until_it_keeps_up() {
    let mut state = replica(1);
    let mut moving = record(1, 0, &[1, 2], &[1]);
    moving.adding = vec![2];
    state.apply(&moving, 0, 0);
    // Far behind: throttled.
    assert!(state.throttled_fetch(2, 0, 100));
    state.record_fetch(2, 0, 100, 10);
    // At the high watermark: not throttled.
    assert!(!state.throttled_fetch(2, 100, 100));
    // Produce moved the end and the high watermark on, but the replica fetches from where
    // the log ended at its previous fetch: it keeps up, and is not held back.
    state.record_fetch(2, 100, 120, 20);
    assert!(!state.throttled_fetch(2, 120, 130));
    // Fallen behind where the log ended at its previous fetch: throttled again.
    assert!(state.throttled_fetch(2, 110, 130));
    // An in-sync follower never is.
    assert!(!state.throttled_fetch(1, 0, 130));
}
