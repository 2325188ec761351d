//! Topic administration: create (including auto-creation and the offsets topic), delete,
//! add partitions, alter configs, and where new replicas go. Changes are serialised by
//! the broker's admin lock and go to the metadata store first; the registry and the local
//! logs follow once the store accepted them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};
use uuid::Uuid;

use super::Broker;
use crate::cluster::{BrokerInfo, PartitionRecord, StoreError, TopicRecord};
use crate::config::MetadataUrl;
use crate::log::LogError;
use crate::partition::Partition;
use crate::registry::{OpenError, Roots, Topic, valid_topic_name};
use crate::topic_config::{TopicConfig, TopicConfigError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name `{0}`: use 1-249 of [a-zA-Z0-9._-], not `.` or `..`")]
    InvalidTopicName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error(transparent)]
    InvalidConfig(#[from] TopicConfigError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("tiered storage: {0}")]
    Tiering(String),
    #[error(
        "`{0}` is an internal topic: it cannot be created, deleted or repartitioned by clients"
    )]
    Internal(String),
    /// A limit the operator set (or its default) refuses the request.
    #[error("{0}")]
    PolicyViolation(String),
}

impl From<OpenError> for AdminError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Config(e) => AdminError::InvalidConfig(e),
            OpenError::Log(e) => AdminError::Log(e),
            OpenError::Tiering(e) => AdminError::Tiering(e),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(name) => AdminError::TopicExists(name),
            StoreError::NotFound(name) => AdminError::UnknownTopic(name),
            other => AdminError::Store(other),
        }
    }
}

impl Broker {
    /// Returns the topic, creating it with defaults when auto-creation is on.
    pub async fn get_or_auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>, AdminError> {
        if let Some(topic) = self.topics.get(name) {
            return Ok(Some(topic));
        }
        if crate::group::is_internal(name) {
            return self.create_internal_topic(name).await.map(Some);
        }
        if !self.config.auto_create_topics || !valid_topic_name(name) {
            return Ok(None);
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Ok(topic) => {
                info!(topic = name, "auto-created topic");
                Ok(Some(topic))
            }
            Err(AdminError::TopicExists(_)) => Ok(self.open_stored_topic(name).await),
            Err(e) => Err(e),
        }
    }

    /// CreateTopics and auto-creation. `__consumer_offsets` is created only by the group
    /// coordinator, with its own configuration: a client asking for it gets that topic.
    pub async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, AdminError> {
        if crate::group::is_internal(name) {
            return Err(AdminError::Internal(name.to_string()));
        }
        let mut configs = configs;
        crate::topic_config::normalize(&mut configs);
        crate::topic_config::check_floors(&configs, &self.config)?;
        crate::topic_config::check_diskless(None, &configs)?;
        self.create_any_topic(
            name,
            num_partitions,
            replication_factor,
            configs,
            validate_only,
        )
        .await
    }

    /// CreateTopics: creates `topics` together, with one partition-limit check for the
    /// request and their records in one store write (embedded) or a few transactions
    /// (etcd) rather than one each. One result per topic, in order.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<Arc<Topic>, AdminError>> {
        let mut prepared = Vec::with_capacity(topics.len());
        for topic in topics {
            let NewTopic {
                name,
                num_partitions,
                replication_factor,
                mut configs,
            } = topic;
            let checked = if crate::group::is_internal(&name) {
                Err(AdminError::Internal(name.clone()))
            } else {
                crate::topic_config::normalize(&mut configs);
                crate::topic_config::check_floors(&configs, &self.config)
                    .and_then(|()| crate::topic_config::check_diskless(None, &configs))
                    .map_err(Into::into)
            };
            prepared.push(match checked {
                Ok(()) => {
                    self.prepare_topic(&name, num_partitions, replication_factor, configs)
                        .await
                }
                Err(e) => Err(e),
            });
        }
        if validate_only {
            return self.validate_prepared(prepared).await;
        }
        self.create_prepared(prepared).await
    }

    async fn create_any_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, AdminError> {
        let (record, config) = self
            .prepare_topic(name, num_partitions, replication_factor, configs)
            .await?;
        if validate_only {
            return self
                .validate_prepared(vec![Ok((record, config))])
                .await
                .pop()
                .unwrap_or_else(|| Err(AdminError::UnknownTopic(name.to_string())));
        }
        self.create_prepared(vec![Ok((record, config))])
            .await
            .pop()
            .unwrap_or_else(|| Err(AdminError::UnknownTopic(name.to_string())))
    }

    /// Checks a topic to create and places its replicas: its record and configuration.
    async fn prepare_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<(TopicRecord, TopicConfig), AdminError> {
        if !valid_topic_name(name) {
            return Err(AdminError::InvalidTopicName(name.to_string()));
        }
        let effective = self.effective_config();
        let partitions = if num_partitions == -1 {
            effective.num_partitions
        } else {
            num_partitions
        };
        if !(1..=100_000).contains(&partitions) {
            return Err(AdminError::InvalidPartitions(format!(
                "number of partitions must be between 1 and 100000, got {partitions}"
            )));
        }
        let factor = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        let config = TopicConfig::resolve(&configs, &effective)?;
        if config.diskless() {
            return self.prepare_diskless(name, partitions, configs, &effective);
        }
        let assignment = self.place(name, partitions as usize, factor, 0).await?;
        let record = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions: assignment.into_iter().map(PartitionRecord::new).collect(),
            configs,
        };
        Ok((record, config))
    }

    /// A diskless topic's record: no replicas, no leader, no ISR (its partitions live in
    /// the object store and the metadata store, `crate::diskless`), and always tiered.
    /// The replication factor asked for is ignored: there are no replicas to place.
    fn prepare_diskless(
        &self,
        name: &str,
        partitions: i32,
        mut configs: BTreeMap<String, String>,
        effective: &crate::config::Config,
    ) -> Result<(TopicRecord, TopicConfig), AdminError> {
        if self.diskless.is_none() {
            return Err(AdminError::InvalidConfig(
                crate::topic_config::TopicConfigError::Invalid {
                    name: "diskless.enable".into(),
                    value: "true".into(),
                    reason: "diskless topics need an object store (setting `object_store`)".into(),
                },
            ));
        }
        configs
            .entry("remote.storage.enable".to_string())
            .or_insert_with(|| "true".to_string());
        let config = TopicConfig::resolve(&configs, effective)?;
        let record = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions: (0..partitions)
                .map(|_| PartitionRecord::diskless())
                .collect(),
            configs,
        };
        Ok((record, config))
    }

    /// Validate-only CreateTopics: the same checks a create makes (existence and the
    /// max_partitions limit included), under the admin lock, with nothing created.
    async fn validate_prepared(
        &self,
        prepared: Vec<Result<(TopicRecord, TopicConfig), AdminError>>,
    ) -> Vec<Result<Arc<Topic>, AdminError>> {
        let _admin = self.admin.lock().await;
        self.admit(prepared)
            .await
            .into_iter()
            .map(|p| p.map(|(record, config)| Arc::new(validated(record, config))))
            .collect()
    }

    /// The checks that depend on the cluster rather than the request, in request order:
    /// a topic that exists (or an earlier copy in the request) is refused, and each topic
    /// admitted is charged against max_partitions. Callers hold the admin lock.
    async fn admit(
        &self,
        prepared: Vec<Result<(TopicRecord, TopicConfig), AdminError>>,
    ) -> Vec<Result<(TopicRecord, TopicConfig), AdminError>> {
        // The group coordinator's own topic is never refused: groups depend on it.
        let limited = |record: &TopicRecord| !crate::group::is_internal(&record.name);
        let mut headroom = None;
        if prepared
            .iter()
            .any(|p| p.as_ref().is_ok_and(|(record, _)| limited(record)))
        {
            headroom = Some(self.partition_headroom().await);
        }
        let mut names = std::collections::HashSet::new();
        let mut admitted = Vec::with_capacity(prepared.len());
        for p in prepared {
            let (record, config) = match p {
                Ok(p) => p,
                Err(e) => {
                    admitted.push(Err(e));
                    continue;
                }
            };
            if self.topics.get(&record.name).is_some() || !names.insert(record.name.clone()) {
                admitted.push(Err(AdminError::TopicExists(record.name)));
                continue;
            }
            if limited(&record) {
                let adding = record.partitions.len() as u64;
                match headroom.as_mut() {
                    Some(Ok((existing, limit))) if *existing + adding > *limit => {
                        admitted.push(Err(AdminError::PolicyViolation(format!(
                            "the cluster has {existing} partitions; {adding} more would pass its limit of {limit} (broker setting max_partitions)"
                        ))));
                        continue;
                    }
                    Some(Ok((existing, _))) => *existing += adding,
                    Some(Err(e)) => {
                        admitted.push(Err(AdminError::Store(e.clone())));
                        continue;
                    }
                    None => {}
                }
            }
            admitted.push(Ok((record, config)));
        }
        admitted
    }

    /// Creates prepared topics under the admin lock. Logs first, then the store: a topic
    /// the store knows always has openable logs. If the store refuses, the new
    /// directories go; if we crash in between, start-up removes them as logs of an
    /// unknown topic.
    async fn create_prepared(
        &self,
        prepared: Vec<Result<(TopicRecord, TopicConfig), AdminError>>,
    ) -> Vec<Result<Arc<Topic>, AdminError>> {
        let _admin = self.admin.lock().await;
        let admitted = self.admit(prepared).await;
        let mut opened = Vec::with_capacity(admitted.len());
        for p in admitted {
            let record = match p {
                Ok((record, _)) => record,
                Err(e) => {
                    opened.push(Err(e));
                    continue;
                }
            };
            let (name, id) = (record.name.clone(), record.id);
            // The id is new (`Uuid::new_v4` in the preparation), so no manifest root
            // can exist: nothing to read from the store.
            opened.push(match self.open_topic(record, Roots::Absent).await {
                Ok(topic) => Ok(topic),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(self.topics.topic_dir(&name, id));
                    Err(e)
                }
            });
        }
        let records: Vec<TopicRecord> = opened
            .iter()
            .filter_map(|t| Some(t.as_ref().ok()?.record.clone()))
            .collect();
        let mut stored = match self.store.create_topics(&records).await {
            Ok(results) => results,
            Err(e) => records.iter().map(|_| Err(e.clone())).collect(),
        };
        // A timeout may hide a create that did commit: look before undoing, for the
        // topics whose outcome is unknown only.
        let ambiguous = |r: &Result<(), StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
        if stored.iter().any(ambiguous)
            && let Ok(all) = self.store.list_topics().await
        {
            let committed: std::collections::HashSet<Uuid> = all.iter().map(|t| t.id).collect();
            for (result, record) in stored.iter_mut().zip(&records) {
                if ambiguous(result) && committed.contains(&record.id) {
                    info!(topic = %record.name, "created topic (confirmed after a store timeout)");
                    *result = Ok(());
                }
            }
        }
        let mut stored = stored.into_iter();
        opened
            .into_iter()
            .map(|t| {
                let topic = t?;
                match stored.next().unwrap_or_else(|| {
                    Err(StoreError::Unavailable("no result for the topic".into()))
                }) {
                    Ok(()) => {
                        let topic = Arc::new(topic);
                        self.topics.insert(topic.clone());
                        info!(topic = %topic.name, partitions = topic.partitions.len(), "created topic");
                        Ok(topic)
                    }
                    Err(e) => {
                        for partition in &topic.partitions {
                            let _ = partition.delete_files();
                        }
                        let _ = std::fs::remove_dir(self.topics.topic_dir(&topic.name, topic.id));
                        Err(e.into())
                    }
                }
            })
            .collect()
    }

    /// Creates `__consumer_offsets` (first use of a group): compacted, never tiered.
    pub async fn create_offsets_topic(&self) -> Result<Arc<Topic>, AdminError> {
        self.create_internal_topic(crate::group::OFFSETS_TOPIC)
            .await
    }

    /// Creates an internal topic (`__consumer_offsets` on the first use of a group,
    /// `__transaction_state` on the first transactional producer): compacted, never
    /// tiered, with its own partition count.
    pub async fn create_internal_topic(&self, name: &str) -> Result<Arc<Topic>, AdminError> {
        let partitions = if name == crate::txn::TRANSACTION_TOPIC {
            self.config.transaction_state_partitions
        } else {
            self.config.offsets_topic_partitions
        };
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.offsets_topic_segment_bytes.to_string(),
            ),
            ("remote.storage.enable".to_string(), "false".to_string()),
        ]);
        match self
            .create_any_topic(
                name,
                partitions,
                self.offsets_replication_factor().await?,
                configs,
                false,
            )
            .await
        {
            Ok(topic) => Ok(topic),
            Err(AdminError::TopicExists(_)) => self
                .open_stored_topic(name)
                .await
                .ok_or_else(|| AdminError::UnknownTopic(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Changes a topic's stored record by compare-and-swap, retrying on conflicts (the
    /// controller and partition leaders change the same record). Returns what was stored;
    /// an edit that changes nothing writes nothing.
    pub(crate) async fn edit_stored_topic(
        &self,
        name: &str,
        edit: impl FnMut(&mut TopicRecord) -> Result<(), AdminError>,
    ) -> Result<TopicRecord, AdminError> {
        Ok(self.edit_stored_topic_versioned(name, edit).await?.0)
    }

    /// [`Self::edit_stored_topic`], with a lower bound of the stored record's version
    /// (versions only grow, so a write's is above the one it replaced): what a
    /// [`Topic`] installed from it carries as `store_version`.
    pub(crate) async fn edit_stored_topic_versioned(
        &self,
        name: &str,
        mut edit: impl FnMut(&mut TopicRecord) -> Result<(), AdminError>,
    ) -> Result<(TopicRecord, u64), AdminError> {
        for _ in 0..32 {
            let (mut record, version) = self
                .store
                .get_topic_versioned(name)
                .await?
                .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
            let before = record.clone();
            edit(&mut record)?;
            if record == before {
                return Ok((record.normalize(), version));
            }
            if self.store.update_topic_if(&record, version).await? {
                return Ok((record.normalize(), version + 1));
            }
        }
        Err(AdminError::Store(StoreError::Unavailable(format!(
            "topic {name} kept changing while being edited"
        ))))
    }

    /// `offsets_topic_replication_factor`. With one broker (embedded metadata) it is 1;
    /// in a cluster, as in Kafka, the topic is not created (so group coordination is not
    /// available) until that many brokers are live, rather than created with fewer
    /// replicas for good because the first group arrived while brokers were starting.
    async fn offsets_replication_factor(&self) -> Result<i16, AdminError> {
        let wanted = self.config.offsets_topic_replication_factor.max(1);
        if !matches!(self.config.metadata_url(), Ok(MetadataUrl::Etcd { .. })) {
            return Ok(1);
        }
        let live = self.placement_targets().await.len();
        if live < wanted as usize {
            return Err(AdminError::InvalidReplicationFactor(format!(
                "{live} brokers are live and not draining; __consumer_offsets needs \
                 offsets_topic_replication_factor = {wanted}: group coordination waits for them"
            )));
        }
        Ok(wanted)
    }

    /// Live brokers that are not draining, as the store has them now: placement is rare,
    /// and the cached view can be a refresh interval old (missing a broker that just
    /// joined or was undrained, or still offering one just marked for draining). The
    /// cached view serves only when the store cannot answer.
    async fn placement_targets(&self) -> Vec<BrokerInfo> {
        fn eligible(brokers: &[BrokerInfo], draining: impl Fn(i32) -> bool) -> Vec<BrokerInfo> {
            brokers
                .iter()
                .filter(|b| !draining(b.node_id))
                .cloned()
                .collect()
        }
        let mut targets = match (self.store.live_brokers().await, self.store.draining().await) {
            (Ok(brokers), Ok(draining)) => eligible(&brokers, |id| draining.contains(&id)),
            _ => {
                let view = self.cluster_view();
                eligible(&view.brokers, |id| view.draining.contains(&id))
            }
        };
        if targets.is_empty() {
            // Before the first registration: this broker alone.
            targets.push(self.own_info());
        }
        targets
    }

    /// Refuses `adding` partitions that would take the cluster past `max_partitions`,
    /// counted in the metadata store (so every broker sees the same total). Called under
    /// the admin lock; brokers creating at the same moment may together pass the limit
    /// by one request's partitions, which `max_partitions_per_request` bounds.
    async fn check_partition_limit(&self, adding: u64) -> Result<(), AdminError> {
        let (existing, limit) = self.partition_headroom().await?;
        if existing + adding > limit {
            return Err(AdminError::PolicyViolation(format!(
                "the cluster has {existing} partitions; {adding} more would pass its limit of {limit} (broker setting max_partitions)"
            )));
        }
        Ok(())
    }

    /// The partitions the metadata store holds, and `max_partitions`.
    async fn partition_headroom(&self) -> Result<(u64, u64), StoreError> {
        let budget = crate::sys::FdBudget::current()
            .unwrap_or_else(|_| crate::sys::FdBudget::for_limit(1024));
        let limit = self.config.partition_limit(&budget);
        let existing: u64 = self
            .store
            .list_topics()
            .await?
            .iter()
            .map(|t| t.partitions.len() as u64)
            .sum();
        Ok((existing, limit))
    }

    /// Replicas for new partitions `first..first + count` of topic `name`, over the live
    /// brokers that are not draining.
    async fn place(
        &self,
        name: &str,
        count: usize,
        factor: i16,
        first: usize,
    ) -> Result<Vec<Vec<i32>>, AdminError> {
        let factor = factor.max(1) as usize;
        let targets = self.placement_targets().await;
        let start = name
            .bytes()
            .fold(first, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        crate::cluster::placement::assign(&targets, count, factor, start)
            .map_err(AdminError::InvalidReplicationFactor)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, AdminError> {
        if crate::group::is_internal(name) {
            return Err(AdminError::Internal(name.to_string()));
        }
        let _admin = self.admin.lock().await;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        self.store.delete_topic(name).await?;
        self.topics.remove(name);
        for partition in &topic.partitions {
            if let Err(e) = partition.delete_files() {
                warn!(topic = name, partition = partition.index, error = %e, "could not remove a deleted topic's log");
            }
        }
        let _ = std::fs::remove_dir(self.topics.topic_dir(name, topic.id));
        crate::tier::delete_remote(topic.partitions.clone());
        if topic.diskless
            && let Some(diskless) = &self.diskless
        {
            diskless.remove_topic(topic.id);
            crate::diskless::retention::delete_topic(
                diskless.view.store().clone(),
                self.tiering.clone(),
                name.to_string(),
                topic.id,
                topic.partition_count(),
            );
        }
        self.metrics
            .forget_topic(name, topic.partitions.len() as i32);
        info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// CreatePartitions: grows topic `name` to `count` partitions, on the replicas
    /// `assignments` names for each new partition (checked as Kafka checks them), else
    /// where placement puts them. A diskless topic's new partitions have no replicas (an
    /// explicit assignment is refused) and no local logs: its record grows, and every
    /// broker's metadata round installs it.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        if crate::group::is_internal(name) {
            return Err(AdminError::Internal(name.to_string()));
        }
        let _admin = self.admin.lock().await;
        let mut topic = self
            .topics
            .get(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        // A diskless topic opens no local logs: its partitions are its record's.
        let opened = |topic: &Topic| {
            if topic.diskless {
                topic.record.partitions.len()
            } else {
                topic.partitions.len()
            }
        };
        // The store decides, not this broker's copy: a metadata round may not have
        // brought partitions another broker added here yet.
        let (stored, version) = self
            .store
            .get_topic_versioned(name)
            .await?
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        let stored = stored.normalize();
        if stored.id != topic.id {
            return Err(AdminError::UnknownTopic(name.to_string()));
        }
        let current = stored.partitions.len() as i32;
        let factor = stored.partitions.first().map_or(1, |p| p.replicas.len());
        if stored.partitions.len() > opened(&topic) {
            topic = self.update_local_topic(&topic, stored, version).await?;
        }
        if opened(&topic) != current as usize {
            return Err(AdminError::InvalidPartitions(format!(
                "broker {} has {} partitions of {name} open and the metadata store {current}; retry once it caught up",
                self.config.node_id,
                opened(&topic)
            )));
        }
        if count == current {
            return Err(AdminError::InvalidPartitions(format!(
                "Topic already has {current} partition(s)."
            )));
        }
        if count < current {
            return Err(AdminError::InvalidPartitions(format!(
                "The topic {name} currently has {current} partition(s); {count} would not be an increase."
            )));
        }
        if count > 100_000 {
            return Err(AdminError::InvalidPartitions(format!(
                "{count} partitions is more than 100000"
            )));
        }
        if topic.diskless && assignments.is_some() {
            return Err(AdminError::InvalidReplicaAssignment(format!(
                "{name} is a diskless topic: its partitions have no replicas to assign"
            )));
        }
        if let Some(assignments) = &assignments {
            self.check_assignments(assignments, (count - current) as usize, factor, current)
                .await?;
        }
        self.check_partition_limit((count - current) as u64).await?;
        if validate_only {
            return Ok(());
        }
        let mut record = topic.record.clone();
        if topic.diskless {
            // No replicas, no local logs: a new partition is its record, and its head is
            // created by its first append, as for the partitions the topic was created
            // with (every broker's view shows a partition it has not seen as empty).
            record
                .partitions
                .extend((current..count).map(|_| PartitionRecord::diskless()));
        } else {
            let assignment = match assignments {
                Some(assignments) => assignments,
                None => {
                    self.place(
                        name,
                        (count - current) as usize,
                        factor as i16,
                        current as usize,
                    )
                    .await?
                }
            };
            record
                .partitions
                .extend(assignment.into_iter().map(PartitionRecord::new));
        }
        // Logs first, then the store (as in create_topic).
        let mut added = Vec::new();
        let local = if topic.diskless { current } else { count };
        for index in current as usize..local as usize {
            match self.open_partition(&record, &topic.config, index).await {
                Ok(partition) => added.push(Arc::new(partition)),
                Err(e) => {
                    added
                        .iter()
                        .for_each(|p: &Arc<Partition>| drop(p.delete_files()));
                    return Err(e);
                }
            }
        }
        let extension = record.partitions[current as usize..].to_vec();
        let stored = self
            .edit_stored_topic_versioned(name, |stored| {
                if stored.partitions.len() != current as usize {
                    return Err(AdminError::InvalidPartitions(
                        "the partition count changed meanwhile; retry".into(),
                    ));
                }
                stored.partitions.extend(extension.iter().cloned());
                Ok(())
            })
            .await;
        let (record, store_version) = match stored {
            Ok(stored) => stored,
            Err(e) => {
                added.iter().for_each(|p| drop(p.delete_files()));
                return Err(e);
            }
        };
        let mut partitions = topic.partitions.clone();
        partitions.extend(added);
        let next = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            diskless: topic.diskless,
            config: topic.config.clone(),
            record,
            store_version,
        });
        self.topics.insert(next.clone());
        // The stored record may carry a leader or ISR change a metadata round has not
        // applied yet; a later round sees the record as installed and would not.
        self.apply_roles(&next, self.clock.now_ms());
        info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Kafka's checks of CreatePartitions' explicit assignments: one per new partition,
    /// each naming `factor` distinct registered (live) brokers, not all of them draining.
    async fn check_assignments(
        &self,
        assignments: &[Vec<i32>],
        adding: usize,
        factor: usize,
        first: i32,
    ) -> Result<(), AdminError> {
        let invalid = |message: String| Err(AdminError::InvalidReplicaAssignment(message));
        if assignments.len() != adding {
            return invalid(format!(
                "Attempted to add {adding} additional partition(s), but only {} assignment(s) were specified.",
                assignments.len()
            ));
        }
        let live: Vec<i32> = match self.store.live_brokers().await {
            Ok(brokers) if !brokers.is_empty() => brokers.iter().map(|b| b.node_id).collect(),
            _ => self.live_brokers().iter().map(|b| b.node_id).collect(),
        };
        let eligible: Vec<i32> = self
            .placement_targets()
            .await
            .iter()
            .map(|b| b.node_id)
            .collect();
        for (i, replicas) in assignments.iter().enumerate() {
            if replicas.is_empty() {
                return invalid(
                    "The manual partition assignment includes an empty replica list.".into(),
                );
            }
            let mut sorted = replicas.clone();
            sorted.sort_unstable();
            for (j, id) in sorted.iter().enumerate() {
                if !live.contains(id) {
                    return invalid(format!(
                        "The manual partition assignment includes broker {id}, but no such broker is registered."
                    ));
                }
                if j > 0 && sorted[j - 1] == *id {
                    return invalid(format!(
                        "The manual partition assignment includes the broker {id} more than once."
                    ));
                }
            }
            if sorted.len() != factor {
                return invalid(format!(
                    "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {factor} replica(s).",
                    sorted.len()
                ));
            }
            if !replicas.iter().any(|id| eligible.contains(id)) {
                return invalid(format!(
                    "All brokers specified in the manual partition assignment for partition {} are draining.",
                    first as usize + i
                ));
            }
        }
        Ok(())
    }

    /// Changes a topic's config overrides: `edit` gets the current overrides and returns
    /// the new full set (AlterConfigs replaces them, IncrementalAlterConfigs edits them).
    /// Runs under the admin lock, and against the stored record, not this broker's cached
    /// copy (up to a refresh old): an edit made through another broker meanwhile is
    /// edited, not overwritten. `edit` runs again if the record changes under it.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        edit: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        let apply = |stored: &BTreeMap<String, String>| {
            let mut configs = edit(stored)?;
            crate::topic_config::normalize(&mut configs);
            // Only what this request changes must respect the floors: a value stored
            // before an operator raised them does not block every other change.
            let changed: BTreeMap<String, String> = configs
                .iter()
                .filter(|(name, value)| stored.get(*name) != Some(*value))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            crate::topic_config::check_floors(&changed, &self.config)?;
            crate::topic_config::check_diskless(Some(stored), &configs)?;
            let config = TopicConfig::resolve(&configs, &self.effective_config())?;
            Ok::<_, AdminError>((configs, config))
        };
        if validate_only {
            let (stored, _) = self
                .store
                .get_topic_versioned(name)
                .await?
                .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
            apply(&stored.configs)?;
            return Ok(());
        }
        let mut resolved = None;
        let (record, store_version) = self
            .edit_stored_topic_versioned(name, |stored| {
                let (configs, config) = apply(&stored.configs)?;
                stored.configs = configs;
                resolved = Some(config);
                Ok(())
            })
            .await?;
        // Every success of edit_stored_topic ran the edit.
        let Some(config) = resolved else {
            return Err(AdminError::UnknownTopic(name.to_string()));
        };
        let log_config = config.log_config();
        for partition in &topic.partitions {
            partition.set_config(log_config.clone());
        }
        let next = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            diskless: topic.diskless,
            config,
            record,
            store_version,
        });
        self.topics.insert(next.clone());
        // As in create_partitions: apply what else the stored record changed.
        self.apply_roles(&next, self.clock.now_ms());
        info!(topic = name, "altered topic configs");
        Ok(())
    }
}

/// A topic CreateTopics asks for.
pub struct NewTopic {
    pub name: String,
    /// -1: `num_partitions`.
    pub num_partitions: i32,
    /// -1: `default_replication_factor`.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// What a validate-only create answers: the topic as it would be, with no partitions open.
fn validated(record: TopicRecord, config: TopicConfig) -> Topic {
    Topic {
        name: record.name.clone(),
        id: record.id,
        partitions: Vec::new(),
        diskless: config.diskless(),
        config,
        record,
        store_version: 0,
    }
}
