//! Operator changes to partition placement and leadership, for the Kafka APIs
//! (AlterPartitionReassignments, ListPartitionReassignments, ElectLeaders) and the admin
//! API alike. Each change is a compare-and-swap of the topic's stored record, made with
//! the pure functions of [`crate::cluster::reassignment`]; the controller carries a
//! started reassignment out.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::{AdminError, Broker};
use crate::cluster::reassignment::{self, ElectError, Election, LiveBrokers, ReassignError};
use crate::cluster::{PartitionRecord, TopicRecord};

/// Why one partition's change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error(
        "the partition has {current} replicas and the new assignment {wanted}; the request does not allow changing the replication factor"
    )]
    ReplicationFactorChange { current: usize, wanted: usize },
    #[error(transparent)]
    Reassign(#[from] ReassignError),
    #[error(transparent)]
    Elect(#[from] ElectError),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    /// The metadata store failed (retriable).
    #[error("{0}")]
    Unavailable(String),
}

impl PlacementError {
    /// Kafka's error for the refusal.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            PlacementError::UnknownPartition { .. } | PlacementError::UnknownTopic(_) => {
                ResponseError::UnknownTopicOrPartition
            }
            PlacementError::ReplicationFactorChange { .. } => {
                ResponseError::InvalidReplicationFactor
            }
            PlacementError::Reassign(ReassignError::NoneInProgress) => {
                ResponseError::NoReassignmentInProgress
            }
            PlacementError::Reassign(ReassignError::InvalidAssignment(_)) => {
                ResponseError::InvalidReplicaAssignment
            }
            PlacementError::Elect(ElectError::NotNeeded) => ResponseError::ElectionNotNeeded,
            PlacementError::Elect(ElectError::PreferredNotAvailable) => {
                ResponseError::PreferredLeaderNotAvailable
            }
            PlacementError::Elect(ElectError::EligibleNotAvailable) => {
                ResponseError::EligibleLeadersNotAvailable
            }
            PlacementError::Unavailable(_) => ResponseError::RequestTimedOut,
        }
    }

    /// The Kafka error's name, as Kafka's tools print it (`INVALID_REPLICA_ASSIGNMENT`).
    pub fn kafka_error_name(&self) -> String {
        let mut name = String::new();
        for (i, c) in format!("{:?}", self.kafka_error()).chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }
}

/// One partition's outcome.
pub type Outcome = (String, i32, Result<(), PlacementError>);

/// A partition under reassignment, as ListPartitionReassignments shows it.
pub struct Ongoing {
    pub topic: String,
    pub partition: i32,
    pub record: PartitionRecord,
}

impl Broker {
    /// Starts (a replica list) or cancels (`None`) the reassignment of each partition.
    /// Without `allow_rf_change` a new list must keep the replication factor (KIP-860).
    pub async fn reassign_partitions(
        &self,
        changes: Vec<(String, i32, Option<Vec<i32>>)>,
        allow_rf_change: bool,
    ) -> Result<Vec<Outcome>, AdminError> {
        let brokers = self.placement_brokers().await?;
        let mut outcomes = Vec::new();
        for (topic, partitions) in by_topic(changes) {
            let results = self
                .edit_partitions(&topic, &partitions, |p, target| {
                    if p.replicas.is_empty() {
                        return Err(ReassignError::InvalidAssignment(
                            "a diskless partition has no replicas to move".into(),
                        )
                        .into());
                    }
                    match target {
                        None => reassignment::cancel(p, &brokers)?,
                        Some(target) => {
                            // As Kafka: against the target of a move under way.
                            let current = p.replicas.len() - p.removing.len();
                            if !allow_rf_change && target.len() != current {
                                return Err(PlacementError::ReplicationFactorChange {
                                    current,
                                    wanted: target.len(),
                                });
                            }
                            reassignment::reassign(p, target, &brokers)?;
                        }
                    }
                    Ok(())
                })
                .await;
            outcomes.extend(results);
        }
        Ok(outcomes)
    }

    /// Partitions under reassignment (or being moved by a drain), read from the store so
    /// a reassignment started a moment ago shows. `wanted`: topic → partitions (all
    /// topics when `None`).
    pub async fn list_reassignments(
        &self,
        wanted: Option<&BTreeMap<String, Vec<i32>>>,
    ) -> Result<Vec<Ongoing>, AdminError> {
        let records: Vec<TopicRecord> = self.store.list_topics().await?;
        let mut ongoing = Vec::new();
        for record in records {
            let asked_of_topic = match wanted {
                None => None,
                Some(wanted) => match wanted.get(&record.name) {
                    Some(partitions) => Some(partitions.iter().collect::<BTreeSet<_>>()),
                    None => continue,
                },
            };
            for (index, p) in record.partitions.iter().enumerate() {
                let index = index as i32;
                let asked = asked_of_topic
                    .as_ref()
                    .is_none_or(|partitions| partitions.contains(&index));
                if asked && p.is_reassigning() {
                    ongoing.push(Ongoing {
                        topic: record.name.clone(),
                        partition: index,
                        record: p.clone(),
                    });
                }
            }
        }
        Ok(ongoing)
    }

    /// Elects leaders of the named partitions, or of every partition when `None` (then
    /// partitions that need no election are left out, as Kafka answers).
    pub async fn elect_leaders(
        &self,
        election: Election,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<Outcome>, AdminError> {
        let brokers = self.placement_brokers().await?;
        let all = partitions.is_none();
        let partitions = match partitions {
            Some(partitions) => partitions,
            None => self
                .store
                .list_topics()
                .await?
                .iter()
                .flat_map(|r| (0..r.partitions.len() as i32).map(|p| (r.name.clone(), p)))
                .collect(),
        };
        let mut outcomes = Vec::new();
        for (topic, partitions) in by_topic(partitions.into_iter().map(|(t, p)| (t, p, ()))) {
            let results = self
                .edit_partitions(&topic, &partitions, |p, ()| {
                    // A diskless partition has no leader to elect: any broker serves it.
                    if p.replicas.is_empty() {
                        return Err(ElectError::NotNeeded.into());
                    }
                    Ok(reassignment::elect(p, election, &brokers)?)
                })
                .await;
            outcomes.extend(results.into_iter().filter(|(_, _, outcome)| {
                !(all && matches!(outcome, Err(PlacementError::Elect(ElectError::NotNeeded))))
            }));
        }
        Ok(outcomes)
    }

    /// The live brokers and the draining ones, read from the store.
    async fn placement_brokers(&self) -> Result<LiveBrokers, AdminError> {
        let live = self.store.live_brokers().await.map_err(AdminError::Store)?;
        let draining = self.store.draining().await.map_err(AdminError::Store)?;
        Ok(LiveBrokers {
            live: live.into_iter().map(|b| b.node_id).collect(),
            draining,
        })
    }

    /// Applies `change` to each named partition of `topic` in one compare-and-swap of
    /// its record; a partition whose change fails is left as it was.
    async fn edit_partitions<T>(
        &self,
        topic: &str,
        partitions: &[(i32, T)],
        mut change: impl FnMut(&mut PartitionRecord, &T) -> Result<(), PlacementError>,
    ) -> Vec<Outcome> {
        let mut results: Vec<Result<(), PlacementError>> = Vec::new();
        let stored = self
            .edit_stored_topic(topic, |record| {
                results.clear();
                for (index, item) in partitions {
                    let partition = usize::try_from(*index)
                        .ok()
                        .and_then(|i| record.partitions.get_mut(i));
                    results.push(match partition {
                        Some(p) => {
                            let before = p.clone();
                            let result = change(p, item);
                            if result.is_err() {
                                *p = before;
                            }
                            result
                        }
                        None => Err(PlacementError::UnknownPartition {
                            topic: topic.to_string(),
                            partition: *index,
                        }),
                    });
                }
                Ok(())
            })
            .await;
        match stored {
            Ok(_) => partitions
                .iter()
                .zip(results)
                .map(|((index, _), result)| (topic.to_string(), *index, result))
                .collect(),
            Err(e) => partitions
                .iter()
                .map(|(index, _)| {
                    let error = match &e {
                        AdminError::UnknownTopic(t) => PlacementError::UnknownTopic(t.clone()),
                        other => PlacementError::Unavailable(other.to_string()),
                    };
                    (topic.to_string(), *index, Err(error))
                })
                .collect(),
        }
    }
}

/// The partitions of one request, grouped by topic in request order (a partition named
/// twice is answered once, with the last change asked for).
fn by_topic<T>(items: impl IntoIterator<Item = (String, i32, T)>) -> Vec<(String, Vec<(i32, T)>)> {
    let mut topics: Vec<(String, Vec<(i32, T)>)> = Vec::new();
    for (topic, partition, item) in items {
        let i = match topics.iter().position(|(t, _)| *t == topic) {
            Some(i) => i,
            None => {
                topics.push((topic, Vec::new()));
                topics.len() - 1
            }
        };
        let entry = &mut topics[i].1;
        entry.retain(|(p, _)| *p != partition);
        entry.push((partition, item));
    }
    topics
}
