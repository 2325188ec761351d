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
    assert_eq!(group.check_commit(&a, None, 1, false, 6), Ok(()));
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

/// Joins a static member (no MEMBER_ID_REQUIRED round trip for static members).
/// Static members use long sessions (a restart must not expire them): 60 s here.
fn join_static(group: &mut Group, instance: &str, now: i64) -> oneshot::Receiver<JoinResult> {
    let mut req = request("", Some(instance), &["range"]);
    req.session_timeout_ms = 60_000;
    group.join(req, &TIMEOUTS, now)
}

#[test]
fn a_static_member_that_does_not_rejoin_keeps_its_place_and_the_leadership_moves() {
    let mut group = Group::new("g".into(), 0);
    let a = answer(join_static(&mut group, "i-a", 0))
        .expect("answered")
        .expect("joined")
        .member_id;
    sync_leader(&mut group, &a, 1, 0);
    let (b, mut b_join) = join_new(&mut group, 100);
    // a (the leader) is restarting slowly and does not rejoin within the rebalance timeout.
    group.tick(&TIMEOUTS, 100 + 29_999);
    assert!(b_join.try_recv().is_err());
    group.tick(&TIMEOUTS, 100 + 30_000);
    let joined = answer(b_join).expect("answered").expect("joined");
    assert_eq!(joined.generation, 2);
    assert_eq!(joined.leader, b, "a joined member leads");
    let mut seen: Vec<&str> = joined
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    seen.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(seen, want, "the leader assigns to the static member too");
    assert!(
        group.members.contains_key(&a),
        "a static member keeps its place"
    );
    // a comes back with its member id: it gets the current generation without a rebalance.
    let again = group.join(request(&a, Some("i-a"), &["range"]), &TIMEOUTS, 30_200);
    let rejoined = answer(again).expect("answered").expect("joined");
    assert_eq!(
        (rejoined.generation, rejoined.leader.as_str()),
        (2, b.as_str())
    );
    assert_eq!(group.state, GroupState::CompletingRebalance);
    sync_leader(&mut group, &b, 2, 30_300);
    let Ok(SyncStep::Done(synced)) = group.sync(&a, Some("i-a"), 2, None, None) else {
        panic!("a stable group answers at once");
    };
    assert_eq!(synced.assignment, Bytes::from(format!("for {a}")));
}

#[test]
fn a_join_phase_of_only_absent_static_members_waits_for_their_sessions() {
    let mut group = Group::new("g".into(), 0);
    let a = answer(join_static(&mut group, "i-a", 0))
        .expect("answered")
        .expect("joined")
        .member_id;
    sync_leader(&mut group, &a, 1, 0);
    // A new member joins and leaves again before a rejoins: nobody is left to lead.
    let (b, _b_join) = join_new(&mut group, 100);
    assert_eq!(group.leave(&b, None, &TIMEOUTS, 200), Ok(()));
    group.tick(&TIMEOUTS, 100 + 30_000);
    assert_eq!(
        group.state,
        GroupState::PreparingRebalance,
        "no generation without a joined member"
    );
    assert_eq!(group.generation, 1);
    assert!(group.members.contains_key(&a));
    group.tick(&TIMEOUTS, 60_000);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    // a's session (60 s from its join) expires: the group empties.
    group.tick(&TIMEOUTS, 60_001);
    assert_eq!(group.state, GroupState::Empty);
    assert!(group.members.is_empty());
}

#[test]
fn commits_with_generation_minus_one_follow_kafka() {
    let mut group = Group::new("g".into(), 0);
    // Empty group: a "simple" commit is accepted, with or without a member id.
    assert_eq!(group.check_commit("", None, -1, false, 0), Ok(()));
    assert_eq!(group.check_commit("someone", None, -1, false, 0), Ok(()));
    let (a, receiver) = join_new(&mut group, 0);
    answer(receiver).expect("answered").expect("joined");
    // CompletingRebalance: a member of the generation is told to wait.
    assert_eq!(
        group.check_commit(&a, None, 1, false, 1),
        Err(GroupError::RebalanceInProgress)
    );
    // ... but not a transactional commit (TxnOffsetCommit), as in Kafka.
    assert_eq!(group.check_commit(&a, None, 1, true, 1), Ok(()));
    sync_leader(&mut group, &a, 1, 0);
    assert_eq!(group.check_commit(&a, None, 1, false, 2), Ok(()));
    // A member id with generation -1: the member is known, the generation is not.
    assert_eq!(
        group.check_commit(&a, None, -1, false, 2),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        group.check_commit("nobody", None, -1, false, 2),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        group.check_commit(&a, None, -1, true, 2),
        Err(GroupError::IllegalGeneration)
    );
    // No member, no generation: only while the group is empty (transactional ones pass).
    assert_eq!(
        group.check_commit("", None, -1, false, 2),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(group.check_commit("", None, -1, true, 2), Ok(()));
    // An instance id the group does not know is an unknown member (Kafka's validateMember).
    assert_eq!(
        group.check_commit(&a, Some("i-unknown"), 1, false, 2),
        Err(GroupError::UnknownMemberId)
    );
}

/// ConsumerProtocolSubscription v0 for these topics.
fn subscription(topics: &[&str]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        out.extend_from_slice(&(t.len() as i16).to_be_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

fn join_with(group: &mut Group, protocol_type: &str, metadata: Bytes, now: i64) -> String {
    let mut req = request("", Some("i-1"), &["range"]);
    req.protocol_type = protocol_type.into();
    req.protocols = vec![("range".into(), metadata)];
    answer(group.join(req, &TIMEOUTS, now))
        .expect("answered")
        .expect("joined")
        .member_id
}

#[test]
fn offset_deletion_is_refused_for_topics_an_active_group_may_consume() {
    let subscribed = |g: &Group| ["t", "u"].map(|t| g.is_subscribed_to(t));
    let mut group = Group::new("g".into(), 0);
    assert_eq!(group.check_offset_delete(), Ok(()));
    assert_eq!(subscribed(&group), [false, false], "an empty group");
    join_with(&mut group, "consumer", subscription(&["t"]), 0);
    assert_eq!(group.check_offset_delete(), Ok(()));
    assert_eq!(subscribed(&group), [true, false]);

    // A subscription the coordinator cannot read: every topic counts as subscribed.
    let mut group = Group::new("g".into(), 0);
    join_with(
        &mut group,
        "consumer",
        Bytes::from_static(b"\x00\x00\xff"),
        0,
    );
    assert_eq!(subscribed(&group), [true, true]);

    // While the first generation forms (no protocol chosen yet) nothing is known either.
    let mut group = Group::new("g".into(), 0);
    let timeouts = Timeouts {
        initial_rebalance_delay_ms: 3000,
        ..TIMEOUTS
    };
    let mut req = request("", Some("i-1"), &["range"]);
    req.protocols = vec![("range".into(), subscription(&["t"]))];
    let _waiting = group.join(req, &timeouts, 0);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    assert_eq!(subscribed(&group), [true, true]);

    // Another protocol type (Connect, ...): a group with members keeps all its offsets.
    let mut group = Group::new("g".into(), 0);
    join_with(&mut group, "connect", Bytes::from_static(b"whatever"), 0);
    assert_eq!(group.check_offset_delete(), Err(GroupError::NonEmptyGroup));
    group.kill(1);
    assert_eq!(
        group.check_offset_delete(),
        Err(GroupError::GroupIdNotFound)
    );
}

#[test]
fn ids_the_group_record_cannot_hold_are_refused_and_member_ids_fit() {
    let mut group = Group::new("g".into(), 0);
    let long = "é".repeat(20_000); // 40000 bytes
    let refused = answer(join_static(&mut group, &long, 0));
    assert!(matches!(
        refused,
        Some(Err(GroupError::TooLong("group instance id")))
    ));
    let mut req = request("", None, &["range"]);
    req.protocols = vec![(long.clone(), Bytes::new())];
    assert!(matches!(
        answer(group.join(req, &TIMEOUTS, 0)),
        Some(Err(GroupError::TooLong(_)))
    ));
    assert!(group.members.is_empty() && group.is_idle());

    // The longest instance id fits, and a client id at the header's limit makes a member id
    // that fits the record (cut at a character boundary).
    let mut req = request("", Some(&long[..MAX_STRING_BYTES - 1]), &["range"]);
    req.client_id = format!("x{}", "é".repeat(16_383)); // 32767 bytes
    let joined = answer(group.join(req, &TIMEOUTS, 0))
        .expect("answered")
        .expect("joined");
    assert!(
        joined.member_id.len() <= MAX_STRING_BYTES,
        "{}",
        joined.member_id.len()
    );
    assert!(joined.member_id.starts_with("xéé"));
    let value = group.to_value();
    let restored = Group::restore(
        "g".into(),
        super::super::format::decode_group(super::super::format::encode_group(&value))
            .expect("the record reads back"),
        1,
    );
    assert!(restored.members.contains_key(&joined.member_id));
}

#[test]
fn a_group_being_deleted_refuses_joins_and_comes_back_if_the_deletion_fails() {
    let mut group = Group::new("g".into(), 100);
    group.kill(200);
    let refused = answer(group.join(request("", Some("i-1"), &["range"]), &TIMEOUTS, 300));
    assert!(matches!(
        refused,
        Some(Err(GroupError::CoordinatorNotAvailable))
    ));
    assert!(group.members.is_empty());
    group.revive(100);
    assert_eq!(group.state, GroupState::Empty);
    assert_eq!(group.state_since_ms, 100, "its offsets expire on time");
    let joined = answer(group.join(request("", Some("i-1"), &["range"]), &TIMEOUTS, 400));
    assert!(matches!(joined, Some(Ok(_))));
}

#[test]
fn a_killed_group_asks_for_no_metadata_write_and_a_revived_one_does() {
    let mut group = Group::new("g".into(), 100);
    let (id, _joined) = join_new(&mut group, 100);
    group.tick(&TIMEOUTS, 100);
    let left = group.leave(&id, None, &TIMEOUTS, 200);
    assert!(left.is_ok(), "{left:?}");
    assert_eq!(group.state, GroupState::Empty);
    assert!(group.dirty, "the Empty group is to be written");
    group.kill(300);
    assert!(
        !group.dirty,
        "a record after the tombstone would bring the group back"
    );
    group.revive(200);
    assert!(
        group.dirty,
        "the Empty record the deletion dropped is written again"
    );
}

#[test]
fn join_and_leave_refuse_an_instance_id_the_group_does_not_know() {
    let mut group = Group::new("g".into(), 100);
    let (id, joined) = join_new(&mut group, 100);
    group.tick(&TIMEOUTS, 100);
    assert!(matches!(answer(joined), Some(Ok(_))));
    // A known member id with an instance id nobody has: UNKNOWN_MEMBER_ID, as Kafka's
    // validateMember answers, for JoinGroup and LeaveGroup alike.
    let rejoined = answer(group.join(request(&id, Some("i-x"), &["range"]), &TIMEOUTS, 200));
    assert!(
        matches!(rejoined, Some(Err(GroupError::UnknownMemberId))),
        "{rejoined:?}"
    );
    let left = group.leave(&id, Some("i-x"), &TIMEOUTS, 200);
    assert_eq!(left, Err(GroupError::UnknownMemberId));
    assert!(group.members.contains_key(&id), "the member stays");
    assert_eq!(group.leave(&id, None, &TIMEOUTS, 300), Ok(()));
    assert_eq!(group.state, GroupState::Empty);
}
