//! JoinGroup and the rebalance it drives: members joining (KIP-394 ids, static members
//! replacing themselves), the join phase and its completion, protocol selection.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{
    Group, GroupError, GroupState, InitialDelay, JoinRequest, JoinResult, Joined, JoinedMember,
    MAX_STRING_BYTES, Member, Timeouts, reply,
};

impl JoinRequest {
    /// The checks that need no group: the coordinator runs them before it creates one,
    /// so that a refused JoinGroup leaves no group behind.
    pub fn check(&self, timeouts: &Timeouts) -> Result<(), GroupError> {
        // What the group's record could not hold is refused rather than stored cut.
        let too_long = |s: &str| s.len() > MAX_STRING_BYTES;
        if self.instance_id.as_deref().is_some_and(too_long) {
            return Err(GroupError::TooLong("group instance id"));
        }
        if too_long(&self.protocol_type) || self.protocols.iter().any(|(n, _)| too_long(n)) {
            return Err(GroupError::TooLong("protocol type or name"));
        }
        if self.session_timeout_ms < timeouts.min_session_timeout_ms
            || self.session_timeout_ms > timeouts.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        Ok(())
    }
}

impl Group {
    pub fn join(
        &mut self,
        request: JoinRequest,
        timeouts: &Timeouts,
        now_ms: i64,
    ) -> oneshot::Receiver<JoinResult> {
        let (sender, receiver) = oneshot::channel();
        if let Err(e) = self.try_join(request, sender, timeouts, now_ms) {
            // try_join only fails before it stored the sender; it handed it back.
            let (error, sender) = *e;
            reply(Some(sender), Err(error));
        }
        receiver
    }

    #[allow(clippy::type_complexity)]
    fn try_join(
        &mut self,
        request: JoinRequest,
        sender: oneshot::Sender<JoinResult>,
        timeouts: &Timeouts,
        now_ms: i64,
    ) -> Result<(), Box<(GroupError, oneshot::Sender<JoinResult>)>> {
        let fail = |error, sender| Err(Box::new((error, sender)));
        if self.state == GroupState::Dead {
            return fail(GroupError::CoordinatorNotAvailable, sender);
        }
        if let Err(e) = request.check(timeouts) {
            return fail(e, sender);
        }
        if !self.accepts(
            &request.protocol_type,
            &request.protocols,
            &request.member_id,
        ) {
            return fail(GroupError::InconsistentGroupProtocol, sender);
        }
        if request.member_id.is_empty() {
            if let Some(instance) = request.instance_id.clone()
                && let Some(old_id) = self.static_members.get(&instance).cloned()
            {
                self.replace_static_member(old_id, request, sender, timeouts, now_ms);
                return Ok(());
            }
            let id = self.new_member_id(&request.client_id);
            if request.require_known_member && request.instance_id.is_none() {
                let lapses = now_ms + i64::from(request.session_timeout_ms);
                self.pending.insert(id.clone(), lapses);
                return fail(GroupError::MemberIdRequired(id), sender);
            }
            self.add_member(id, request, sender, timeouts, now_ms);
            return Ok(());
        }
        if self.pending.remove(&request.member_id).is_some() {
            let id = request.member_id.clone();
            self.add_member(id, request, sender, timeouts, now_ms);
            return Ok(());
        }
        // Kafka's validateMember: an instance id the group does not know is an unknown
        // member, one that belongs to another member id is fenced.
        if let Err(e) = self.check_known(&request.member_id, request.instance_id.as_deref()) {
            return fail(e, sender);
        }
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return fail(GroupError::UnknownMemberId, sender);
        };
        let changed = member.protocols != request.protocols;
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.last_heartbeat_ms = now_ms;
        let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                let old = member.join.replace(sender);
                reply(old, Err(GroupError::RebalanceInProgress));
                self.maybe_complete_join(now_ms);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if !(changed || is_leader && self.state == GroupState::Stable) =>
            {
                // The member lost our answer (or is a follower rejoining for nothing):
                // tell it the current generation again.
                let joined = self.joined(&request.member_id, is_leader, false);
                reply(Some(sender), Ok(joined));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.join = Some(sender);
                self.prepare_rebalance(timeouts, now_ms);
            }
            GroupState::Empty | GroupState::Dead => {
                return fail(GroupError::UnknownMemberId, sender);
            }
        }
        Ok(())
    }

    fn add_member(
        &mut self,
        id: String,
        request: JoinRequest,
        sender: oneshot::Sender<JoinResult>,
        timeouts: &Timeouts,
        now_ms: i64,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: request.instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                join: Some(sender),
                sync: None,
                last_heartbeat_ms: now_ms,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now_ms);
        } else {
            self.prepare_rebalance(timeouts, now_ms);
        }
    }

    /// A static member came back with a new process (empty member id): it takes over the
    /// old member id's place under a new id, and the old incarnation is fenced. When
    /// nothing changed in a Stable group it gets its old assignment without a rebalance.
    fn replace_static_member(
        &mut self,
        old_id: String,
        request: JoinRequest,
        sender: oneshot::Sender<JoinResult>,
        timeouts: &Timeouts,
        now_ms: i64,
    ) {
        let new_id = self.new_member_id(&request.client_id);
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members
                .remove(request.instance_id.as_deref().unwrap_or(""));
            self.add_member(new_id, request, sender, timeouts, now_ms);
            return;
        };
        reply(member.join.take(), Err(GroupError::FencedInstanceId));
        reply(member.sync.take(), Err(GroupError::FencedInstanceId));
        let changed = member.protocols != request.protocols;
        member.id = new_id.clone();
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.last_heartbeat_ms = now_ms;
        if let Some(instance) = &request.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        match self.state {
            GroupState::Stable if !changed => {
                // The new id is persisted with the next write of the group; until then a
                // coordinator restart would bring back the old id, which the member
                // replaces again by rejoining.
                self.dirty = true;
                let mut joined = self.joined(&new_id, was_leader, was_leader);
                if was_leader {
                    joined.previous_leader = Some(old_id);
                }
                reply(Some(sender), Ok(joined));
            }
            GroupState::PreparingRebalance => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.join = Some(sender);
                }
                self.maybe_complete_join(now_ms);
            }
            _ => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.join = Some(sender);
                }
                self.prepare_rebalance(timeouts, now_ms);
            }
        }
    }

    fn joined(&self, member_id: &str, with_members: bool, skip_assignment: bool) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment,
            previous_leader: None,
        }
    }

    pub(super) fn prepare_rebalance(&mut self, timeouts: &Timeouts, now_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                reply(member.sync.take(), Err(GroupError::RebalanceInProgress));
            }
        }
        let rebalance_timeout = self.rebalance_timeout_ms();
        if self.state == GroupState::Empty && timeouts.initial_rebalance_delay_ms > 0 {
            let delay = timeouts.initial_rebalance_delay_ms.min(rebalance_timeout);
            self.initial_delay = Some(InitialDelay {
                next_check_ms: now_ms + delay,
                hard_deadline_ms: now_ms + rebalance_timeout,
                members_seen: self.members.len(),
            });
        }
        self.deadline_ms = now_ms + rebalance_timeout;
        self.set_state(GroupState::PreparingRebalance, now_ms);
        self.maybe_complete_join(now_ms);
    }

    /// The group's rebalance timeout: the longest of its members'.
    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    pub(super) fn maybe_complete_join(&mut self, now_ms: i64) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.pending.is_empty()
            && self.members.values().all(|m| m.join.is_some())
        {
            self.complete_join(now_ms);
        }
    }

    /// Ends the join phase, as Kafka's `completeClassicGroupJoin`: dynamic members that
    /// did not rejoin are dropped; a static member that did not rejoin keeps its place
    /// (and its metadata, so the leader assigns to it) until its session expires, which
    /// lets a slowly restarting static member come back without moving partitions. The
    /// leader must be a member that rejoined; with none, the phase waits another rebalance
    /// timeout (the absent static members' sessions run out meanwhile).
    pub(super) fn complete_join(&mut self, now_ms: i64) {
        self.initial_delay = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        let rejoined = |id: &String| self.members.get(id).is_some_and(|m| m.join.is_some());
        let leader = match &self.leader {
            Some(leader) if rejoined(leader) => Some(leader.clone()),
            _ => self
                .members
                .values()
                .find(|m| m.join.is_some())
                .map(|m| m.id.clone()),
        };
        if leader.is_none() && !self.members.is_empty() {
            self.deadline_ms = now_ms + self.rebalance_timeout_ms();
            tracing::info!(group = %self.id, "no member rejoined; waiting for the absent static members");
            return;
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.subscribed_topics = self.compute_subscribed_topics();
            self.set_state(GroupState::Empty, now_ms);
            self.dirty = true;
            return;
        }
        self.protocol = self.select_protocol();
        self.leader = leader;
        self.subscribed_topics = self.compute_subscribed_topics();
        self.set_state(GroupState::CompletingRebalance, now_ms);
        self.deadline_ms = now_ms + self.rebalance_timeout_ms();
        let leader = self.leader.clone().unwrap_or_default();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let joined = self.joined(&id, id == leader, false);
            if let Some(member) = self.members.get_mut(&id) {
                member.last_heartbeat_ms = now_ms;
                reply(member.join.take(), Ok(joined));
            }
        }
    }

    /// The protocol most members prefer among those all support (ties go to the first
    /// in member id order, which is deterministic).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            if let Some(choice) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n))
                && let Some(vote) = votes.iter_mut().find(|(_, c)| **c == choice.0)
            {
                vote.0 += 1;
            }
        }
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| (*c).clone())
    }
}
