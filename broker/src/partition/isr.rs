//! A partition's replication state ([`ReplicaState`]): its role, the ISR and the high
//! watermark. It is plain state, changed only under the partition's replica lock; the
//! network side (the leader's service and the follower's fetcher) is `crate::replication`.
//!
//! - **Leader.** Tracks each follower's log end (the offset it last fetched from) and when
//!   it was last caught up. The high watermark is the smallest log end over the ISR
//!   (the leader's own end counting only once it is as durable as the flush policy says),
//!   and never goes back. acks=all answers once the high watermark passes the batch.
//! - **ISR changes** are proposed by the leader and stored by compare-and-swap on the
//!   topic record in etcd (Kafka's AlterPartition). Until a change is stored the leader
//!   counts the union of the stored and the proposed ISR (the "maximal ISR"), so a
//!   follower being added counts before it could be elected, and one being removed keeps
//!   counting until no election can pick a replica without it.
//! - **Follower.** Appends what the leader sends, with the leader's offsets and epochs;
//!   its high watermark is the leader's, capped at its own log end.

use std::collections::HashMap;

use crate::cluster::PartitionRecord;

/// A follower's fetch of one partition, as the leader sees it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerFetch {
    pub replica_id: i32,
    pub current_epoch: i32,
    pub fetch_offset: i64,
    pub last_fetched_epoch: i32,
}

#[derive(Debug, Clone)]
pub enum FollowerOutcome {
    Records(bytes::Bytes),
    /// Truncate to where `epoch` ends in the leader's log, then fetch again.
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
    /// The fetch offset is below the leader's local log start.
    OutOfRange,
}

#[derive(Debug, Clone)]
pub struct LeaderAnswer {
    pub outcome: FollowerOutcome,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub local_log_start_offset: i64,
    pub log_end_offset: i64,
    pub remote_end_offset: i64,
    /// The base of the leader's segment the records come from.
    pub segment_base: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchRefusal {
    NotLeader,
    FencedEpoch,
    UnknownEpoch,
    Storage,
}

/// A follower joins the ISR only if it fetched this recently (followers fetch at least
/// every `replica_fetch_wait_max_ms`).
pub const FRESH_FETCH_MS: i64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    /// Not a replica of this partition (or no leader is known).
    None,
}

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The follower's log end: everything below it is on the follower.
    pub end: i64,
    /// When the follower was last caught up (see [`ReplicaState::record_fetch`]).
    pub caught_up_ms: i64,
    /// The leader's log end and the time at the follower's previous fetch.
    pub previous_leader_end: i64,
    pub previous_fetch_ms: i64,
}

impl Progress {
    fn new(now_ms: i64) -> Progress {
        Progress {
            end: -1,
            caught_up_ms: now_ms,
            previous_leader_end: i64::MAX,
            previous_fetch_ms: now_ms,
        }
    }
}

/// What changed when a partition record was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameLeader,
    BecameFollower,
    Stopped,
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct ReplicaState {
    pub me: i32,
    pub role: Role,
    pub leader: i32,
    pub epoch: i32,
    pub replicas: Vec<i32>,
    /// Replicas in `replicas` being moved off (a reassignment or a drain), as stored.
    pub removing: Vec<i32>,
    /// Replicas a reassignment (or a drain) is adding, as stored.
    pub adding: Vec<i32>,
    /// The ISR as stored.
    pub isr: Vec<i32>,
    /// An ISR this leader proposed and has not seen stored (or overtaken) yet.
    pub proposed_isr: Option<Vec<i32>>,
    pub followers: HashMap<i32, Progress>,
    /// Leader: its own log end, as durable as acks require.
    pub leader_end: i64,
    /// Leader: where its current epoch starts; a follower joins the ISR only once it
    /// reached it (it then holds everything an earlier leader acknowledged).
    pub epoch_start: i64,
}

impl ReplicaState {
    /// A broker that runs alone: leader of everything, the ISR itself.
    pub fn solo(me: i32, epoch: i32, log_end: i64) -> ReplicaState {
        ReplicaState {
            me,
            role: Role::Leader,
            leader: me,
            epoch,
            replicas: vec![me],
            removing: Vec::new(),
            adding: Vec::new(),
            isr: vec![me],
            proposed_isr: None,
            followers: HashMap::new(),
            leader_end: log_end,
            epoch_start: 0,
        }
    }

    /// Applies the stored record. `log_end` is the local log end (a new leader's own end).
    pub fn apply(&mut self, record: &PartitionRecord, log_end: i64, now_ms: i64) -> Transition {
        let role = if record.leader == self.me {
            Role::Leader
        } else if record.replicas.contains(&self.me) {
            Role::Follower
        } else {
            Role::None
        };
        let new_term = record.leader_epoch != self.epoch || record.leader != self.leader;
        let transition = match (role, self.role) {
            _ if !new_term && role == self.role => Transition::Unchanged,
            (Role::Leader, _) => Transition::BecameLeader,
            (Role::Follower, _) => Transition::BecameFollower,
            (Role::None, Role::None) => Transition::Unchanged,
            (Role::None, _) => Transition::Stopped,
        };
        self.role = role;
        self.leader = record.leader;
        self.epoch = record.leader_epoch;
        self.replicas = record.replicas.clone();
        self.removing = record.removing.clone();
        self.adding = record.adding.clone();
        // A pending proposal is settled once the stored ISR moves: to it (stored) or
        // elsewhere (the controller's change, based on a newer record, wins).
        if record.isr != self.isr || self.proposed_isr.as_ref() == Some(&record.isr) {
            self.proposed_isr = None;
        }
        self.isr = record.isr.clone();
        if transition == Transition::BecameLeader {
            self.proposed_isr = None;
            self.leader_end = log_end;
            self.epoch_start = log_end;
            // Followers get a full lag period to show up before they leave the ISR.
            self.followers = record
                .replicas
                .iter()
                .filter(|&&r| r != self.me)
                .map(|&r| (r, Progress::new(now_ms)))
                .collect();
        } else if role != Role::Leader {
            self.proposed_isr = None;
            self.followers.clear();
        }
        transition
    }

    /// The stored ISR plus any proposed members.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        for r in self.proposed_isr.iter().flatten() {
            if !isr.contains(r) {
                isr.push(*r);
            }
        }
        isr
    }

    /// Whether `replica` is one a reassignment is adding that is not in sync yet: its
    /// catch-up is the traffic the replication throttle bounds. A replica in the ISR, or
    /// in the ISR this leader proposed, never is.
    pub fn catching_up(&self, replica: i32) -> bool {
        self.adding.contains(&replica) && !self.maximal_isr().contains(&replica)
    }

    /// Whether a fetch by `replica` from `fetch_offset` goes through the replication
    /// throttle (a leader's view): a replica being added, not in sync, that has not
    /// caught up. Caught up, as for the ISR, means fetching from the high watermark or
    /// from where the leader's log ended at its previous fetch: under produce a replica
    /// that keeps up is rarely exactly at the high watermark, and throttling it then
    /// would hold it back behind the moves still copying, so that it could never join.
    pub fn throttled_fetch(&self, replica: i32, fetch_offset: i64, high_watermark: i64) -> bool {
        self.catching_up(replica)
            && fetch_offset < high_watermark
            && self
                .followers
                .get(&replica)
                .is_none_or(|p| fetch_offset < p.previous_leader_end)
    }

    /// The smallest log end over the maximal ISR (a leader only).
    pub fn isr_end(&self) -> Option<i64> {
        if self.role != Role::Leader {
            return None;
        }
        self.maximal_isr()
            .iter()
            .map(|&r| {
                if r == self.me {
                    self.leader_end
                } else {
                    self.followers.get(&r).map_or(-1, |p| p.end)
                }
            })
            .min()
    }

    /// Records a follower's fetch from `fetch_offset` while the leader's log ends at
    /// `log_end`. As in Kafka, a follower is caught up when it fetches from the leader's
    /// log end, or from the log end as it was at its previous fetch (then it was caught up
    /// at that previous fetch): under steady produce a follower is never exactly at the
    /// end, yet one that keeps reaching where the end was is not lagging.
    pub fn record_fetch(&mut self, follower: i32, fetch_offset: i64, log_end: i64, now_ms: i64) {
        let progress = self
            .followers
            .entry(follower)
            .or_insert_with(|| Progress::new(now_ms));
        progress.end = fetch_offset;
        if fetch_offset >= log_end {
            progress.caught_up_ms = now_ms;
        } else if fetch_offset >= progress.previous_leader_end {
            progress.caught_up_ms = progress.caught_up_ms.max(progress.previous_fetch_ms);
        }
        progress.previous_leader_end = log_end;
        progress.previous_fetch_ms = now_ms;
    }

    /// The ISR the leader should propose now, if it differs from the stored one:
    /// followers not caught up for `lag_ms` leave; followers join once caught up to the
    /// high watermark and the epoch start, if they are live (`live`) and fetched within
    /// the last `FRESH_FETCH_MS` (a dead follower's last progress must not bring it back
    /// after the controller removed it).
    pub fn isr_change(
        &self,
        high_watermark: i64,
        now_ms: i64,
        lag_ms: i64,
        live: impl Fn(i32) -> bool,
    ) -> Option<Vec<i32>> {
        if self.role != Role::Leader {
            return None;
        }
        // A proposal not known to be stored or refused is proposed again, unchanged.
        if let Some(pending) = &self.proposed_isr {
            return Some(pending.clone());
        }
        let mut isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|&r| {
                r == self.me
                    || self
                        .followers
                        .get(&r)
                        .is_some_and(|p| now_ms - p.caught_up_ms <= lag_ms)
            })
            .collect();
        for &r in &self.replicas {
            if isr.contains(&r) {
                continue;
            }
            if let Some(p) = self.followers.get(&r)
                && p.end >= high_watermark
                && p.end >= self.epoch_start
                && now_ms - p.caught_up_ms <= lag_ms
                && now_ms - p.previous_fetch_ms <= FRESH_FETCH_MS
                && live(r)
            {
                isr.push(r);
            }
        }
        let mut sorted_new = isr.clone();
        sorted_new.sort_unstable();
        let mut sorted_old = self.isr.clone();
        sorted_old.sort_unstable();
        (sorted_new != sorted_old).then_some(isr)
    }
}

#[cfg(test)]
mod tests;
