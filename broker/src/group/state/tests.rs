use std::collections::HashMap;

use bytes::Bytes;

use super::*;

const TIMEOUTS: Timeouts = Timeouts {
    initial_rebalance_delay_ms: 0,
    min_session_timeout_ms: 1000,
    max_session_timeout_ms: 60_000,
};

fn request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        instance_id: instance.map(String::from),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(p.to_string())))
            .collect(),
        require_known_member: true,
    }
}

fn answer<T>(mut receiver: oneshot::Receiver<T>) -> Option<T> {
    receiver.try_recv().ok()
}

/// Joins a new dynamic member the KIP-394 way (first MEMBER_ID_REQUIRED, then again).
fn join_new(group: &mut Group, now: i64) -> (String, oneshot::Receiver<JoinResult>) {
    let first = answer(group.join(request("", None, &["range"]), &TIMEOUTS, now));
    let Some(Err(GroupError::MemberIdRequired(id))) = first else {
        panic!("expected MEMBER_ID_REQUIRED, got {first:?}");
    };
    let receiver = group.join(request(&id, None, &["range"]), &TIMEOUTS, now);
    (id, receiver)
}

fn sync_leader(group: &mut Group, leader: &str, generation: i32, now: i64) {
    let step = group
        .sync(leader, None, generation, None, None)
        .expect("leader sync accepted");
    assert!(matches!(
        step,
        SyncStep::Wait {
            is_leader: true,
            ..
        }
    ));
    let assignments: HashMap<String, Bytes> = group
        .members
        .keys()
        .map(|id| (id.clone(), Bytes::from(format!("for {id}"))))
        .collect();
    assert!(group.complete_sync(generation, &assignments, now));
}

#[test]
fn first_member_joins_and_becomes_leader() {
    let mut group = Group::new("g".into(), 0);
    let (id, receiver) = join_new(&mut group, 0);
    let joined = answer(receiver).expect("answered").expect("joined");
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, id);
    assert_eq!(joined.members.len(), 1);
    assert_eq!(joined.protocol.as_deref(), Some("range"));
    assert_eq!(group.state, GroupState::CompletingRebalance);
    sync_leader(&mut group, &id, 1, 0);
    assert_eq!(group.state, GroupState::Stable);
    assert_eq!(group.heartbeat(&id, None, 1, 10), Ok(()));
    assert_eq!(
        group.heartbeat(&id, None, 0, 10),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        group.heartbeat("nobody", None, 1, 10),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_second_member_makes_everyone_rejoin() {
    let mut group = Group::new("g".into(), 0);
    let (a, receiver) = join_new(&mut group, 0);
    answer(receiver).expect("answered").expect("joined");
    sync_leader(&mut group, &a, 1, 0);

    let (b, b_join) = join_new(&mut group, 5);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    assert!(answer(b_join).is_none(), "b waits for a to rejoin");
    assert_eq!(
        group.heartbeat(&a, None, 1, 6),
        Err(GroupError::RebalanceInProgress)
    );
    // A commit is still accepted while the group prepares to rebalance.
    assert_eq!(group.check_commit(&a, None, 1, 6), Ok(()));
    let a_join = group.join(request(&a, None, &["range"]), &TIMEOUTS, 7);
    let a_joined = answer(a_join).expect("answered").expect("joined");
    assert_eq!(a_joined.generation, 2);
    assert_eq!(a_joined.members.len(), 2, "the leader sees both");
    assert_eq!(group.members.len(), 2);
    assert!(group.members.contains_key(&b));
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_deadline() {
    let mut group = Group::new("g".into(), 0);
    let (a, receiver) = join_new(&mut group, 0);
    answer(receiver).expect("answered").expect("joined");
    sync_leader(&mut group, &a, 1, 0);
    let (b, mut b_join) = join_new(&mut group, 100);
    // a keeps heartbeating (and hearing REBALANCE_IN_PROGRESS) but never rejoins.
    for now in (5_000..30_000).step_by(5_000) {
        assert_eq!(
            group.heartbeat(&a, None, 1, now),
            Err(GroupError::RebalanceInProgress)
        );
        group.tick(&TIMEOUTS, now);
    }
    group.tick(&TIMEOUTS, 100 + 29_999);
    assert!(b_join.try_recv().is_err());
    group.tick(&TIMEOUTS, 100 + 30_000);
    let joined = answer(b_join).expect("answered").expect("joined");
    assert_eq!(joined.generation, 2);
    assert_eq!(joined.leader, b, "the old leader left, b leads");
    assert!(!group.members.contains_key(&a));
}

#[test]
fn session_expiry_and_leave_end_in_an_empty_group() {
    let mut group = Group::new("g".into(), 0);
    let (a, receiver) = join_new(&mut group, 0);
    answer(receiver).expect("answered").expect("joined");
    sync_leader(&mut group, &a, 1, 0);
    group.tick(&TIMEOUTS, 10_000);
    assert_eq!(group.state, GroupState::Stable, "not expired at the limit");
    group.tick(&TIMEOUTS, 10_001);
    assert_eq!(group.state, GroupState::Empty);
    assert!(group.dirty, "becoming empty is persisted");
    assert_eq!(group.generation, 2);

    let mut group = Group::new("g".into(), 0);
    let (a, receiver) = join_new(&mut group, 0);
    answer(receiver).expect("answered").expect("joined");
    sync_leader(&mut group, &a, 1, 0);
    assert_eq!(group.leave(&a, None, &TIMEOUTS, 5), Ok(()));
    assert_eq!(group.state, GroupState::Empty);
    assert_eq!(
        group.leave(&a, None, &TIMEOUTS, 5),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_restarted_static_member_gets_its_assignment_back_without_a_rebalance() {
    let mut group = Group::new("g".into(), 0);
    let first = group.join(request("", Some("i-1"), &["range"]), &TIMEOUTS, 0);
    let joined = answer(first).expect("answered").expect("joined");
    let old_id = joined.member_id.clone();
    sync_leader(&mut group, &old_id, 1, 0);
    let again = group.join(request("", Some("i-1"), &["range"]), &TIMEOUTS, 10);
    let joined = answer(again).expect("answered").expect("joined");
    assert_ne!(joined.member_id, old_id);
    assert_eq!(joined.generation, 1, "no rebalance");
    assert!(joined.skip_assignment, "the leader keeps the assignment");
    assert_eq!(group.state, GroupState::Stable);
    let step = group
        .sync(&joined.member_id, Some("i-1"), 1, None, None)
        .expect("sync");
    let SyncStep::Done(synced) = step else {
        panic!("a stable group answers at once");
    };
    assert_eq!(synced.assignment, Bytes::from(format!("for {old_id}")));
    assert_eq!(
        group.heartbeat(&old_id, Some("i-1"), 1, 11),
        Err(GroupError::FencedInstanceId)
    );
}

#[test]
fn protocols_must_overlap_and_timeouts_must_be_in_range() {
    let mut group = Group::new("g".into(), 0);
    let (a, receiver) = join_new(&mut group, 0);
    answer(receiver).expect("answered").expect("joined");
    sync_leader(&mut group, &a, 1, 0);
    let other = answer(group.join(request("", None, &["roundrobin"]), &TIMEOUTS, 1));
    assert!(matches!(
        other,
        Some(Err(GroupError::InconsistentGroupProtocol))
    ));
    let mut short = request("", None, &["range"]);
    short.session_timeout_ms = 10;
    assert!(matches!(
        answer(group.join(short, &TIMEOUTS, 1)),
        Some(Err(GroupError::InvalidSessionTimeout))
    ));
}

#[test]
fn the_initial_delay_waits_for_more_members() {
    let timeouts = Timeouts {
        initial_rebalance_delay_ms: 3000,
        ..TIMEOUTS
    };
    let mut group = Group::new("g".into(), 0);
    let first = group.join(request("", Some("a"), &["range"]), &timeouts, 0);
    let second = group.join(request("", Some("b"), &["range"]), &timeouts, 1000);
    group.tick(&timeouts, 2999);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    group.tick(&timeouts, 3000); // a member arrived during the delay: wait once more
    assert_eq!(group.state, GroupState::PreparingRebalance);
    group.tick(&timeouts, 6000);
    assert_eq!(group.state, GroupState::CompletingRebalance);
    let a = answer(first).expect("answered").expect("joined");
    let b = answer(second).expect("answered").expect("joined");
    assert_eq!((a.generation, b.generation), (1, 1));
    assert_eq!(
        a.members.len() + b.members.len(),
        2,
        "only the leader sees members"
    );
}

#[test]
fn restore_brings_back_a_stable_group() {
    let mut group = Group::new("g".into(), 0);
    let (a, receiver) = join_new(&mut group, 0);
    answer(receiver).expect("answered").expect("joined");
    sync_leader(&mut group, &a, 1, 0);
    let value = group.to_value();
    let mut restored = Group::restore("g".into(), value, 50);
    assert_eq!(restored.state, GroupState::Stable);
    assert_eq!(restored.generation, 1);
    assert_eq!(restored.heartbeat(&a, None, 1, 60), Ok(()));
    let step = restored.sync(&a, None, 1, Some("consumer"), Some("range"));
    let Ok(SyncStep::Done(synced)) = step else {
        panic!("stable");
    };
    assert_eq!(synced.assignment, Bytes::from(format!("for {a}")));
}
