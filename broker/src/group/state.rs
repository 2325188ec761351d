//! One consumer group's membership state machine (Kafka's classic group protocol). Pure
//! state: no I/O, time passed in. Waiting JoinGroup and SyncGroup requests are oneshot
//! senders kept on their member and answered when the rebalance moves on.
//!
//! ```text
//!            join                     all joined / timeout         leader's SyncGroup
//! Empty ───────────► PreparingRebalance ────────────────► CompletingRebalance ───────► Stable
//!   ▲                 ▲   │ no member left                       │  member change         │
//!   └─────────────────┼───┘                                      ▼                        │
//!                     └──────────────────────────────────────────┴────────────────────────┘
//!                          join with new metadata, leave, session expiry
//! ```
//!
//! Invariants: `generation` only grows; a member awaiting join or sync is never expired
//! by its session timeout (it is blocked in a request); every transition out of
//! CompletingRebalance answers every waiting SyncGroup.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::GroupError;
use super::format::{GroupValue, MAX_STRING_BYTES, MemberValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    /// Deleted; kept only while a request still holds it.
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Broker settings the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

#[derive(Debug, Clone)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata, for the leader only.
    pub members: Vec<JoinedMember>,
    /// A static leader that rejoined without a change: it must not compute a new
    /// assignment (JoinGroup v9+).
    pub skip_assignment: bool,
    /// With `skip_assignment`: the leader's member id before it rejoined. Below v9 (no
    /// skip_assignment field) Kafka names it as the leader, so the member, whose id is new,
    /// acts as a follower and its SyncGroup gets the stored assignment.
    pub previous_leader: Option<String>,
}

pub type JoinResult = Result<Joined, GroupError>;

#[derive(Debug, Clone)]
pub struct Synced {
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

pub type SyncResult = Result<Synced, GroupError>;

pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an unknown member first gets an id (MEMBER_ID_REQUIRED, KIP-394).
    pub require_known_member: bool,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join: Option<oneshot::Sender<JoinResult>>,
    sync: Option<oneshot::Sender<SyncResult>>,
    last_heartbeat_ms: i64,
}

impl Member {
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// The first rebalance of an empty group waits `initial_rebalance_delay_ms` for more
/// members, extended while members keep arriving, up to the rebalance timeout.
struct InitialDelay {
    next_check_ms: i64,
    hard_deadline_ms: i64,
    members_seen: usize,
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and when they lapse.
    pending: HashMap<String, i64>,
    /// group.instance.id → current member id.
    static_members: HashMap<String, String>,
    /// When the current PreparingRebalance or CompletingRebalance phase gives up waiting.
    deadline_ms: i64,
    initial_delay: Option<InitialDelay>,
    /// When the group entered its current state (offsets of an Empty group expire
    /// relative to it).
    pub state_since_ms: i64,
    /// Set when a transition should be written to the offsets topic (Empty after
    /// members left, Stable after a sync): the coordinator takes and persists it.
    pub dirty: bool,
    /// The topics the members subscribed to, as of the current generation (Kafka computes
    /// them when a generation starts); None when unknown: not the consumer protocol, no
    /// protocol chosen yet, or a subscription that does not decode.
    subscribed_topics: Option<HashSet<String>>,
}

fn reply<T>(sender: Option<oneshot::Sender<T>>, value: T) {
    if let Some(sender) = sender {
        // The client may have gone; its connection's end is not the group's concern.
        let _ = sender.send(value);
    }
}

impl Group {
    pub fn new(id: String, now_ms: i64) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            deadline_ms: i64::MAX,
            initial_delay: None,
            state_since_ms: now_ms,
            dirty: false,
            subscribed_topics: None,
        }
    }

    /// A group as stored in the offsets topic. Members come back Stable with fresh session
    /// timers: after a coordinator restart they keep their assignment if they heartbeat.
    pub fn restore(id: String, value: GroupValue, now_ms: i64) -> Group {
        let mut group = Group::new(id, now_ms);
        group.protocol_type = Some(value.protocol_type).filter(|t| !t.is_empty());
        group.generation = value.generation;
        group.protocol = value.protocol;
        group.leader = value.leader;
        group.state_since_ms = value.state_timestamp_ms;
        for m in value.members {
            if let Some(instance) = &m.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let protocols = vec![(group.protocol.clone().unwrap_or_default(), m.subscription)];
            group.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols,
                    assignment: m.assignment,
                    join: None,
                    sync: None,
                    last_heartbeat_ms: now_ms,
                },
            );
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group.subscribed_topics = group.compute_subscribed_topics();
        group
    }

    /// What the offsets topic keeps of this group.
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// Kafka's form, the client id, "-" and a UUID; a client id near the header's
    /// 32767-byte limit is cut so that the member id fits in the group's record.
    fn new_member_id(&self, client_id: &str) -> String {
        const SUFFIX: usize = 1 + 36;
        let client_id = super::format::prefix_within(client_id, MAX_STRING_BYTES - SUFFIX);
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    /// Whether a member with these protocols can join: the group's type, and at least
    /// one protocol every member (and this one) supports.
    fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)], member: &str) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self.members.values().filter(|m| m.id != member).collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Kafka's `validateMember`: an instance id must belong to this member id, and the
    /// member must be in the group.
    fn check_known(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                None => return Err(GroupError::UnknownMemberId),
                Some(current) if current != member_id => {
                    return Err(GroupError::FencedInstanceId);
                }
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.check_known(member_id, instance_id)?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(mut member) = self.members.remove(id) {
            if let Some(instance) = &member.instance_id
                && self.static_members.get(instance).map(String::as_str) == Some(id)
            {
                self.static_members.remove(instance);
            }
            reply(member.join.take(), Err(GroupError::UnknownMemberId));
            reply(member.sync.take(), Err(GroupError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// A member is gone (left, expired): the others rebalance.
    fn member_gone(&mut self, id: &str, timeouts: &Timeouts, now_ms: i64) {
        self.remove_member(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(timeouts, now_ms)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
    ) -> Result<SyncStep, GroupError> {
        self.check_member(member_id, instance_id, generation)?;
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol.is_some_and(|p| Some(p) != self.protocol.as_deref())
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable => Ok(SyncStep::Done(Synced {
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                assignment: self.members[member_id].assignment.clone(),
            })),
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                let member = self
                    .members
                    .get_mut(member_id)
                    .ok_or(GroupError::UnknownMemberId)?;
                reply(
                    member.sync.replace(sender),
                    Err(GroupError::RebalanceInProgress),
                );
                let is_leader = self.leader.as_deref() == Some(member_id);
                Ok(SyncStep::Wait {
                    receiver,
                    is_leader,
                })
            }
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    /// The leader's assignment, after it was written to the offsets topic: the group is
    /// Stable and every waiting SyncGroup gets its part. False if the group moved on
    /// meanwhile (a rebalance started), in which case the assignment is dropped.
    pub fn complete_sync(
        &mut self,
        generation: i32,
        assignments: &HashMap<String, Bytes>,
        now_ms: i64,
    ) -> bool {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return false;
        }
        let synced = |assignment: Bytes| Synced {
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment,
        };
        let mut replies = Vec::new();
        for member in self.members.values_mut() {
            member.assignment = assignments.get(&member.id).cloned().unwrap_or_default();
            replies.push((member.sync.take(), member.assignment.clone()));
        }
        for (sender, assignment) in replies {
            reply(sender, Ok(synced(assignment)));
        }
        self.set_state(GroupState::Stable, now_ms);
        true
    }

    /// Writing the leader's assignment failed: everyone rejoins.
    pub fn fail_sync(
        &mut self,
        generation: i32,
        error: GroupError,
        timeouts: &Timeouts,
        now_ms: i64,
    ) {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        for member in self.members.values_mut() {
            reply(member.sync.take(), Err(error.clone()));
        }
        self.prepare_rebalance(timeouts, now_ms);
    }

    /// The group as it will be once the leader's assignment applies.
    pub fn value_with(&self, assignments: &HashMap<String, Bytes>) -> GroupValue {
        let mut value = self.to_value();
        for m in &mut value.members {
            m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
        }
        value
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, instance_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heartbeat_ms = now_ms;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for one member; an empty member id with an instance id removes that
    /// static member (an admin removing it, KIP-345).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        timeouts: &Timeouts,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => self
                .static_members
                .get(instance)
                .cloned()
                .ok_or(GroupError::UnknownMemberId)?,
            _ => {
                if self.pending.remove(member_id).is_some() {
                    self.maybe_complete_join(now_ms);
                    return Ok(());
                }
                // Kafka's validateMember, as for the other requests of a member.
                self.check_known(member_id, instance_id)?;
                member_id.to_string()
            }
        };
        if !self.members.contains_key(&id) {
            return Err(GroupError::UnknownMemberId);
        }
        self.member_gone(&id, timeouts, now_ms);
        Ok(())
    }

    /// Checks an OffsetCommit (or, `transactional`, a TxnOffsetCommit) against the group,
    /// as Kafka's `ClassicGroup.validateOffsetCommit` does. A commit with generation -1
    /// comes from the admin client or a consumer that assigns partitions itself: accepted
    /// while the group is Empty. Otherwise a member id or instance id (with any generation,
    /// -1 included) is checked as a member's commit; without either, a plain commit is
    /// refused (UNKNOWN_MEMBER_ID) while the group has members, a transactional one is not.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        transactional: bool,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.check_member(member_id, instance_id, generation)?;
        } else if !transactional {
            return Err(GroupError::UnknownMemberId);
        }
        if !transactional && self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heartbeat_ms = now_ms;
        }
        Ok(())
    }

    /// Timers: the initial delay, join and sync deadlines, session expiry, lapsed
    /// pending member ids.
    pub fn tick(&mut self, timeouts: &Timeouts, now_ms: i64) {
        self.pending.retain(|_, lapses| *lapses > now_ms);
        if let Some(delay) = &mut self.initial_delay
            && now_ms >= delay.next_check_ms
        {
            let grew = self.members.len() > delay.members_seen;
            if grew && now_ms < delay.hard_deadline_ms {
                delay.members_seen = self.members.len();
                delay.next_check_ms =
                    (now_ms + timeouts.initial_rebalance_delay_ms).min(delay.hard_deadline_ms);
            } else {
                self.initial_delay = None;
            }
        }
        match self.state {
            GroupState::PreparingRebalance if self.initial_delay.is_none() => {
                if now_ms >= self.deadline_ms {
                    self.complete_join(now_ms);
                } else {
                    self.maybe_complete_join(now_ms);
                }
            }
            GroupState::CompletingRebalance if now_ms >= self.deadline_ms => {
                // The leader never sent its assignment: drop those not waiting for it
                // and start over.
                let idle: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.sync.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for id in idle {
                    self.remove_member(&id);
                }
                self.prepare_rebalance(timeouts, now_ms);
            }
            _ => {}
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join.is_none()
                    && m.sync.is_none()
                    && now_ms > m.last_heartbeat_ms + i64::from(m.session_timeout_ms)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.member_gone(&id, timeouts, now_ms);
        }
    }

    /// No members, no member ids handed out, nothing waiting: the group may go once its
    /// offsets are gone.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    /// Marks the group deleted; waiting requests are told to find the coordinator again.
    pub fn kill(&mut self, now_ms: i64) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.remove_member(&id);
        }
        self.set_state(GroupState::Dead, now_ms);
        // A Dead group's record is the tombstone: a metadata write still asked for
        // would bring it back.
        self.dirty = false;
    }

    /// Undoes [`Group::kill`] of an Empty group whose tombstones could not be written: it
    /// is Empty again, since `empty_since_ms` as before (its offsets expire on time).
    pub fn revive(&mut self, empty_since_ms: i64) {
        if self.state == GroupState::Dead && self.members.is_empty() {
            self.state = GroupState::Empty;
            self.state_since_ms = empty_since_ms;
            // The Empty record [`Group::kill`] may have dropped is written again.
            self.dirty = true;
        }
    }

    /// OffsetDelete's check of the whole group, as Kafka's `validateOffsetDelete`: a
    /// group with members that does not use the consumer protocol keeps all its offsets.
    pub fn check_offset_delete(&self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            GroupState::Empty => Ok(()),
            _ if self.uses_consumer_protocol() => Ok(()),
            _ => Err(GroupError::NonEmptyGroup),
        }
    }

    /// Whether OffsetDelete must keep the offsets of `topic`: the members subscribe to it,
    /// or their subscriptions are not known and the group uses the consumer protocol.
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => self.uses_consumer_protocol(),
        }
    }

    fn uses_consumer_protocol(&self) -> bool {
        self.protocol_type.as_deref() == Some("consumer")
    }

    /// The members' subscribed topics under the chosen protocol. Each subscription is read
    /// as version 0, the prefix every later version keeps (as Kafka does).
    pub(super) fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if !self.uses_consumer_protocol() {
            return None;
        }
        if self.members.is_empty() {
            return Some(HashSet::new());
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = HashSet::new();
        for member in self.members.values() {
            let mut metadata = member.metadata(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            if version < 0 {
                return None;
            }
            bytes::Buf::advance(&mut metadata, 2);
            let subscription = ConsumerProtocolSubscription::decode(&mut metadata, 0).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
    }
}

/// What SyncGroup does next.
pub enum SyncStep {
    Done(Synced),
    /// Wait for the leader; if this member is the leader, the coordinator first writes
    /// the assignment and then calls [`Group::complete_sync`].
    Wait {
        receiver: oneshot::Receiver<SyncResult>,
        is_leader: bool,
    },
}

mod join;

#[cfg(test)]
mod tests;
