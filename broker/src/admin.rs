//! The admin API (`proto/strata/admin.proto`): cluster status, topics, placement, tiering
//! and cache statistics, drains, and a clean shutdown on request. Every broker serves it
//! on `admin_listen`; the `strata` CLI commands other than `serve` are its client
//! (`cli.rs`).
//!
//! Cluster-wide answers come from this broker's view of the metadata store (at most a
//! refresh interval old); tiering and cache numbers are this broker's own, for the
//! partitions it leads.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_proto::admin::admin_server::{Admin, AdminServer};
use strata_proto::admin::{
    AbortPartitionTransactionRequest, AbortPartitionTransactionResponse, AbortTransactionRequest,
    AbortTransactionResponse, ListPartitionTransactionsRequest, ListPartitionTransactionsResponse,
    ListTransactionsRequest, ListTransactionsResponse, PartitionTransaction,
    Transaction as TransactionStatus,
};
use strata_proto::admin::{
    AlterBrokerConfigsRequest, AlterBrokerConfigsResponse, ElectLeadersRequest,
    ElectLeadersResponse, ListReassignmentsRequest, ListReassignmentsResponse, OngoingReassignment,
    PartitionOutcome, ReassignPartitionsRequest, ReassignPartitionsResponse,
};
use strata_proto::admin::{
    AlterTopicConfigRequest, Broker as BrokerStatus, CacheStatsRequest, CacheStatsResponse,
    ClusterStatusRequest, ClusterStatusResponse, CreateTopicRequest, DeleteTopicRequest,
    DeleteTopicResponse, DescribeTopicRequest, DrainRequest, DrainResponse, ListTopicsRequest,
    ListTopicsResponse, Partition as PartitionStatus, PartitionTiering, ShutdownRequest,
    ShutdownResponse, TieringStatusRequest, TieringStatusResponse, Topic as TopicStatus,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::broker::{AdminError, Broker};
use crate::cluster::StoreError;
use crate::registry::Topic;

pub struct Service {
    broker: Arc<Broker>,
    /// Cancelled by the Shutdown call; `strata serve` then shuts down as on SIGTERM.
    stop: CancellationToken,
    /// `admin_token_file`'s bearer token.
    token: Option<String>,
}

pub fn service(
    broker: Arc<Broker>,
    stop: CancellationToken,
) -> anyhow::Result<AdminServer<Service>> {
    let token = crate::security::grpc::admin_token(&broker.config)?;
    Ok(AdminServer::new(Service {
        broker,
        stop,
        token,
    }))
}

/// What a call does: reads need DESCRIBE on the cluster, changes ALTER.
#[derive(Clone, Copy)]
enum Access {
    Read,
    Change,
}

impl Service {
    /// Who may call (docs/security.md, "Admin API"). With `admin_token_file` set: the
    /// token, or a verified client certificate whose principal the ACL authorizer allows
    /// (DESCRIBE on the cluster for reads, ALTER for changes); never an anonymous caller,
    /// whatever the ACLs say, and without the ACL authorizer only the token. Without a
    /// token: under the ACL authorizer the certificate's principal (or `User:ANONYMOUS`)
    /// needs the ACL; with neither, every caller may, as before.
    fn check<T>(&self, request: &Request<T>, access: Access) -> Result<(), Status> {
        use crate::security::acl::{AclOperation, CLUSTER_NAME, ResourceType};
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let (Some(token), Some(presented)) = (&self.token, presented)
            && crate::security::grpc::token_matches(presented.trim(), token)
        {
            return Ok(());
        }
        let leaf = request
            .peer_certs()
            .and_then(|chain| chain.first().cloned());
        let principal = match &leaf {
            Some(leaf) => Some(
                self.broker
                    .security
                    .certificate_principal(leaf)
                    .map_err(|e| Status::unauthenticated(e.to_string()))?,
            ),
            None => None,
        };
        let authorizer = &self.broker.security.authorizer;
        match (&self.token, &principal, authorizer.enabled()) {
            (None, _, false) => return Ok(()),
            (Some(_), None, _) => {
                return Err(Status::unauthenticated(
                    "the admin API needs its bearer token (--token-file) or a client certificate (--cert, --key)",
                ));
            }
            (Some(_), Some(_), false) => {
                return Err(Status::unauthenticated(
                    "the admin API needs its bearer token (--token-file): without the ACL authorizer a certificate alone does not admit",
                ));
            }
            _ => {}
        }
        let caller = crate::security::Caller::new(
            principal.unwrap_or_else(crate::security::Principal::anonymous),
            "ADMIN".into(),
            request
                .remote_addr()
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip()),
        );
        let operation = match access {
            Access::Read => AclOperation::Describe,
            Access::Change => AclOperation::Alter,
        };
        if authorizer.allowed(&caller, operation, ResourceType::Cluster, CLUSTER_NAME) {
            Ok(())
        } else {
            self.broker
                .metrics
                .authorization_denials
                .with_label_values(&[&caller.principal.to_string(), "admin"])
                .inc();
            Err(Status::permission_denied(format!(
                "{} may not {} the cluster",
                caller.principal,
                match access {
                    Access::Read => "describe",
                    Access::Change => "alter",
                }
            )))
        }
    }
}

fn status(error: AdminError) -> Status {
    match error {
        AdminError::TopicExists(_) => Status::already_exists(error.to_string()),
        AdminError::UnknownTopic(_) => Status::not_found(error.to_string()),
        AdminError::InvalidTopicName(_)
        | AdminError::InvalidPartitions(_)
        | AdminError::InvalidReplicationFactor(_)
        | AdminError::InvalidReplicaAssignment(_)
        | AdminError::InvalidConfig(_)
        | AdminError::Internal(_) => Status::invalid_argument(error.to_string()),
        AdminError::Store(StoreError::Unavailable(_)) => Status::unavailable(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

fn partition_outcome(
    (topic, partition, outcome): crate::broker::PlacementOutcome,
) -> PartitionOutcome {
    let (error, message) = match outcome {
        Ok(()) => (String::new(), String::new()),
        Err(e) => (e.kafka_error_name(), e.to_string()),
    };
    PartitionOutcome {
        topic,
        partition,
        error,
        message,
    }
}

fn topic_status(topic: &Topic) -> TopicStatus {
    TopicStatus {
        name: topic.name.clone(),
        id: topic.id.as_bytes().to_vec().into(),
        internal: crate::group::is_internal(&topic.name),
        partitions: topic
            .record
            .partitions
            .iter()
            .enumerate()
            .map(|(index, p)| PartitionStatus {
                index: index as i32,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                removing: p.removing.clone(),
            })
            .collect(),
        configs: topic.record.configs.clone().into_iter().collect(),
    }
}

impl Service {
    fn topic(&self, name: &str) -> Result<Arc<Topic>, Status> {
        self.broker
            .topics
            .get(name)
            .ok_or_else(|| Status::not_found(format!("topic `{name}` does not exist")))
    }

    fn tiering_of(&self, topic: &Topic, now_ms: i64) -> Vec<PartitionTiering> {
        topic
            .partitions
            .iter()
            .filter_map(|partition| {
                let epoch = partition.leading_epoch()?;
                let (local_bytes, local_segments, log_end, local_start) = partition.stats();
                let marks = partition.watermarks();
                let lag = crate::tier::upload_lag(partition, now_ms);
                let (remote, shape) = match partition.remote() {
                    Some(remote) => (Some(remote.marks()), Some(remote.manifest_shape())),
                    None => (None, None),
                };
                Some(PartitionTiering {
                    topic: topic.name.clone(),
                    partition: partition.index,
                    leader_epoch: epoch,
                    remote_storage_enable: partition.log_config().remote_storage,
                    log_start_offset: marks.log_start_offset,
                    local_log_start_offset: local_start,
                    high_watermark: marks.high_watermark,
                    log_end_offset: log_end,
                    remote_end_offset: remote.as_ref().and_then(|m| m.end_offset).unwrap_or(-1),
                    remote_bytes: remote.as_ref().map_or(0, |m| m.live_bytes),
                    remote_segments: remote.as_ref().map_or(0, |m| m.live_segments),
                    local_bytes,
                    local_segments: local_segments as u32,
                    upload_pending_segments: lag.segments as u32,
                    upload_lag_bytes: lag.bytes,
                    upload_lag_ms: lag.age_ms,
                    manifest_root_bytes: shape.map_or(0, |s| s.root_bytes),
                    manifest_tail_entries: shape.map_or(0, |s| s.tail_entries),
                    manifest_spill_refs: shape.map_or(0, |s| s.spill_refs),
                })
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Admin for Service {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        self.check(&request, Access::Read)?;
        let view = self.broker.cluster_view();
        let topics = self.broker.topics.all();
        let records: Vec<_> = topics.iter().flat_map(|t| &t.record.partitions).collect();
        let mut brokers = view.brokers.clone();
        if brokers.is_empty() {
            // Before the first refresh, or embedded metadata read before registering.
            brokers.push(self.broker.own_info());
        }
        brokers.sort_by_key(|b| b.node_id);
        let brokers = brokers
            .into_iter()
            .map(|b| BrokerStatus {
                node_id: b.node_id,
                host: b.host,
                port: b.port,
                rack: b.rack.unwrap_or_default(),
                admin: b.admin,
                draining: view.draining.contains(&b.node_id),
                controller: view.controller == b.node_id,
                leaders: records.iter().filter(|p| p.leader == b.node_id).count() as u32,
                replicas: records
                    .iter()
                    .filter(|p| p.replicas.contains(&b.node_id))
                    .count() as u32,
            })
            .collect();
        Ok(Response::new(ClusterStatusResponse {
            cluster_id: self.broker.cluster_id.clone(),
            controller: view.controller,
            answered_by: self.broker.config.node_id,
            brokers,
            topics: topics.len() as u32,
            partitions: records.len() as u32,
            // Diskless partitions have no leader by design.
            offline_partitions: records
                .iter()
                .filter(|p| p.leader < 0 && !p.replicas.is_empty())
                .count() as u32,
            under_replicated_partitions: records
                .iter()
                .filter(|p| p.isr.len() < p.replicas.len())
                .count() as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        self.check(&request, Access::Read)?;
        let topics = self
            .broker
            .topics
            .all()
            .iter()
            .map(|t| topic_status(t))
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<TopicStatus>, Status> {
        self.check(&request, Access::Read)?;
        let topic = self.topic(&request.into_inner().name)?;
        Ok(Response::new(topic_status(&topic)))
    }

    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<TopicStatus>, Status> {
        self.check(&request, Access::Change)?;
        let request = request.into_inner();
        let partitions = if request.partitions == 0 {
            -1
        } else {
            request.partitions
        };
        let factor = match request.replication_factor {
            0 => -1,
            n => i16::try_from(n).map_err(|_| {
                Status::invalid_argument(format!("replication factor {n} is out of range"))
            })?,
        };
        let configs: BTreeMap<String, String> = request.configs.into_iter().collect();
        let topic = self
            .broker
            .create_topic(&request.name, partitions, factor, configs, false)
            .await
            .map_err(status)?;
        info!(topic = %request.name, "created a topic through the admin API");
        Ok(Response::new(topic_status(&topic)))
    }

    async fn alter_topic_config(
        &self,
        request: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<TopicStatus>, Status> {
        self.check(&request, Access::Change)?;
        let request = request.into_inner();
        self.broker
            .set_topic_configs(
                &request.name,
                |current| {
                    let mut next = current.clone();
                    for key in &request.delete {
                        next.remove(key);
                    }
                    next.extend(request.set.clone());
                    Ok(next)
                },
                false,
            )
            .await
            .map_err(status)?;
        let topic = self.topic(&request.name)?;
        Ok(Response::new(topic_status(&topic)))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.check(&request, Access::Change)?;
        let name = request.into_inner().name;
        self.broker.delete_topic(&name).await.map_err(status)?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn tiering_status(
        &self,
        request: Request<TieringStatusRequest>,
    ) -> Result<Response<TieringStatusResponse>, Status> {
        self.check(&request, Access::Read)?;
        let wanted = request.into_inner().topic;
        // A topic this broker does not know (yet) has no partition it leads.
        let topics = if wanted.is_empty() {
            self.broker.topics.all()
        } else {
            self.broker.topics.get(&wanted).into_iter().collect()
        };
        let now = self.broker.clock.now_ms();
        let partitions = topics
            .iter()
            .flat_map(|t| self.tiering_of(t, now))
            .collect();
        Ok(Response::new(TieringStatusResponse {
            answered_by: self.broker.config.node_id,
            partitions,
        }))
    }

    async fn cache_stats(
        &self,
        request: Request<CacheStatsRequest>,
    ) -> Result<Response<CacheStatsResponse>, Status> {
        self.check(&request, Access::Read)?;
        let mut response = CacheStatsResponse {
            answered_by: self.broker.config.node_id,
            ..CacheStatsResponse::default()
        };
        if let Some(tiering) = &self.broker.tiering {
            let stats = tiering.cache.stats();
            response.enabled = true;
            response.memory_capacity_bytes = stats.memory_capacity_bytes;
            response.memory_used_bytes = stats.memory_used_bytes;
            response.disk_capacity_bytes = stats.disk_capacity_bytes;
            response.chunk_bytes = stats.chunk_bytes;
            response.lookups = stats.lookups;
            response.misses = stats.misses;
            response.fetched_bytes = stats.fetched_bytes;
            response.read_ahead_chunks = stats.read_ahead_chunks;
        }
        Ok(Response::new(response))
    }

    async fn drain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        self.check(&request, Access::Change)?;
        let request = request.into_inner();
        let node = request.node_id;
        self.broker
            .store
            .set_draining(node, request.drain)
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(message) if message.contains("embedded") => {
                    Status::failed_precondition(message)
                }
                e => status(AdminError::Store(e)),
            })?;
        if request.drain {
            info!(node, "marked a broker for draining through the admin API");
        } else {
            info!(node, "cancelled a broker's drain through the admin API");
        }
        // Read from the store, not the view: the caller polls this to know when to stop
        // the broker for good.
        let topics = self
            .broker
            .store
            .list_topics()
            .await
            .map_err(|e| status(AdminError::Store(e)))?;
        let partitions_left: Vec<String> = topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.replicas.contains(&node))
                    .map(move |(i, _)| format!("{}/{i}", t.name))
            })
            .collect();
        Ok(Response::new(DrainResponse {
            replicas_left: partitions_left.len() as u32,
            partitions_left,
        }))
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        self.check(&request, Access::Change)?;
        info!("shutdown requested through the admin API");
        self.stop.cancel();
        Ok(Response::new(ShutdownResponse {}))
    }

    async fn list_transactions(
        &self,
        request: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        self.check(&request, Access::Read)?;
        let mut transactions: Vec<TransactionStatus> = self
            .broker
            .txns
            .list()
            .into_iter()
            .map(|m| TransactionStatus {
                transactional_id: m.transactional_id,
                producer_id: m.producer_id,
                producer_epoch: i32::from(m.producer_epoch),
                state: m.state.name().to_string(),
                timeout_ms: m.timeout_ms,
                start_ms: m.start_ms,
                last_update_ms: m.last_update_ms,
                partitions: m
                    .partitions
                    .iter()
                    .map(|(topic, partition)| format!("{topic}/{partition}"))
                    .collect(),
            })
            .collect();
        transactions.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(Response::new(ListTransactionsResponse {
            answered_by: self.broker.config.node_id,
            transactions,
        }))
    }

    async fn abort_transaction(
        &self,
        request: Request<AbortTransactionRequest>,
    ) -> Result<Response<AbortTransactionResponse>, Status> {
        use crate::txn::TxnError;
        self.check(&request, Access::Change)?;
        let id = request.into_inner().transactional_id;
        match self.broker.txns.abort(&self.broker, &id).await {
            Ok(()) => {
                info!(transactional_id = %id, "aborted a transaction through the admin API");
                Ok(Response::new(AbortTransactionResponse {
                    answered_by: self.broker.config.node_id,
                }))
            }
            Err(TxnError::NotCoordinator) => {
                let coordinator = self.broker.txns.coordinator_node(&*self.broker, &id).await;
                Err(Status::failed_precondition(match coordinator {
                    Ok(node) => format!(
                        "broker {} does not coordinate {id}; broker {node} does",
                        self.broker.config.node_id
                    ),
                    Err(e) => format!("{id}: {e}"),
                }))
            }
            Err(TxnError::TransactionalIdNotFound) => {
                Err(Status::not_found(format!("no transactional id {id}")))
            }
            Err(TxnError::InvalidTxnState) => Err(Status::failed_precondition(format!(
                "{id} has no open transaction"
            ))),
            Err(e) => Err(Status::unavailable(format!("{id}: {e}"))),
        }
    }

    async fn list_partition_transactions(
        &self,
        request: Request<ListPartitionTransactionsRequest>,
    ) -> Result<Response<ListPartitionTransactionsResponse>, Status> {
        self.check(&request, Access::Read)?;
        let only = request.into_inner().topic;
        let mut transactions = Vec::new();
        for topic in self.broker.topics.all() {
            if !only.is_empty() && topic.name != only {
                continue;
            }
            for partition in topic.partitions.iter().filter(|p| p.is_leader()) {
                let high_watermark = partition.high_watermark();
                transactions.extend(partition.open_transactions().into_iter().map(
                    |(producer_id, epoch, first_offset)| PartitionTransaction {
                        topic: topic.name.clone(),
                        partition: partition.index,
                        producer_id,
                        producer_epoch: i32::from(epoch),
                        first_offset,
                        high_watermark,
                    },
                ));
            }
        }
        Ok(Response::new(ListPartitionTransactionsResponse {
            answered_by: self.broker.config.node_id,
            transactions,
        }))
    }

    async fn abort_partition_transaction(
        &self,
        request: Request<AbortPartitionTransactionRequest>,
    ) -> Result<Response<AbortPartitionTransactionResponse>, Status> {
        self.check(&request, Access::Change)?;
        let r = request.into_inner();
        let name = format!("{}/{}", r.topic, r.partition);
        let partition = self
            .broker
            .topics
            .partition(&r.topic, r.partition)
            .ok_or_else(|| Status::not_found(format!("no partition {name}")))?;
        if !partition.is_leader() {
            return Err(Status::failed_precondition(format!(
                "broker {} does not lead {name}",
                self.broker.config.node_id
            )));
        }
        let open = partition
            .open_transactions()
            .into_iter()
            .find(|(id, ..)| *id == r.producer_id);
        let Some((_, open_epoch, first_offset)) = open else {
            return Err(Status::failed_precondition(format!(
                "producer {} has no open transaction in {name}",
                r.producer_id
            )));
        };
        let epoch = if r.producer_epoch < 0 {
            open_epoch
        } else {
            i16::try_from(r.producer_epoch)
                .map_err(|_| Status::invalid_argument("producer_epoch is an i16"))?
        };
        let marker = crate::txn::MarkerRequest {
            producer_id: r.producer_id,
            producer_epoch: epoch,
            marker: crate::log::txn::Marker::Abort,
            // Not a coordinator's: no coordinator epoch.
            coordinator_epoch: -1,
        };
        let marker_offset = self
            .broker
            .write_txn_marker_local(&partition, marker)
            .await
            .map_err(|e| match e {
                crate::partition::PartitionError::NotLeader
                | crate::partition::PartitionError::Deleted => {
                    Status::failed_precondition(format!("{name}: {e}"))
                }
                // Written, not yet on enough replicas: the marker may still count.
                crate::partition::PartitionError::NotEnoughReplicasAfterAppend
                | crate::partition::PartitionError::ReplicationTimeout => Status::unavailable(
                    format!("{name}: the abort marker was written but is not yet on enough replicas ({e}); check with find-hanging"),
                ),
                _ => Status::unavailable(format!("{name}: {e}")),
            })?
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "{name}: producer {} has a newer epoch than {epoch}",
                    r.producer_id
                ))
            })?;
        info!(topic = %r.topic, partition = r.partition, producer_id = r.producer_id,
            epoch, first_offset, marker_offset,
            "aborted a partition's open transaction through the admin API");
        Ok(Response::new(AbortPartitionTransactionResponse {
            answered_by: self.broker.config.node_id,
            marker_offset,
        }))
    }

    async fn reassign_partitions(
        &self,
        request: Request<ReassignPartitionsRequest>,
    ) -> Result<Response<ReassignPartitionsResponse>, Status> {
        self.check(&request, Access::Change)?;
        let r = request.into_inner();
        let changes = r
            .partitions
            .into_iter()
            .map(|p| {
                let replicas = (!p.cancel).then_some(p.replicas);
                (p.topic, p.partition, replicas)
            })
            .collect();
        let outcomes = self
            .broker
            .reassign_partitions(changes, r.allow_replication_factor_change)
            .await
            .map_err(status)?;
        info!(
            partitions = outcomes.len(),
            "reassignment request through the admin API"
        );
        Ok(Response::new(ReassignPartitionsResponse {
            results: outcomes.into_iter().map(partition_outcome).collect(),
        }))
    }

    async fn list_reassignments(
        &self,
        request: Request<ListReassignmentsRequest>,
    ) -> Result<Response<ListReassignmentsResponse>, Status> {
        self.check(&request, Access::Read)?;
        let ongoing = self.broker.list_reassignments(None).await.map_err(status)?;
        Ok(Response::new(ListReassignmentsResponse {
            reassignments: ongoing
                .into_iter()
                .map(|o| OngoingReassignment {
                    topic: o.topic,
                    partition: o.partition,
                    replicas: o.record.replicas,
                    adding: o.record.adding,
                    removing: o.record.removing,
                    isr: o.record.isr,
                    leader: o.record.leader,
                })
                .collect(),
        }))
    }

    async fn get_cost_ledger(
        &self,
        request: Request<strata_proto::admin::GetCostLedgerRequest>,
    ) -> Result<Response<strata_proto::admin::GetCostLedgerResponse>, Status> {
        self.check(&request, Access::Read)?;
        Ok(Response::new(crate::broker::cost_ledger::ledger_answer(
            &self.broker,
        )))
    }

    async fn alter_broker_configs(
        &self,
        request: Request<AlterBrokerConfigsRequest>,
    ) -> Result<Response<AlterBrokerConfigsResponse>, Status> {
        self.check(&request, Access::Change)?;
        let r = request.into_inner();
        // Only this broker can check a value against its own settings, so another
        // broker's scope is refused, as the Kafka handler does; -1 is the cluster default.
        let scope = match r.node_id {
            -1 => crate::cluster::ConfigScope::ClusterDefault,
            id if id == self.broker.config.node_id => crate::cluster::ConfigScope::Broker(id),
            id => {
                return Err(Status::invalid_argument(format!(
                    "broker {} cannot alter the configs of broker {id}; send the request to \
                     broker {id}, or use node_id -1 for the cluster default",
                    self.broker.config.node_id
                )));
            }
        };
        let names: Vec<&String> = r.set.keys().chain(&r.remove).collect();
        // What the last (successful) run of the edit found; the edit reruns when another
        // broker changed the configs meanwhile. A std mutex: never held across an await.
        let previous = std::sync::Mutex::new(std::collections::HashMap::new());
        let edit = |current: &std::collections::BTreeMap<String, String>| {
            *previous.lock().unwrap_or_else(|p| p.into_inner()) = names
                .iter()
                .filter_map(|&name| Some((name.clone(), current.get(name)?.clone())))
                .collect();
            let mut next = current.clone();
            for name in &r.remove {
                next.remove(name);
            }
            next.extend(r.set.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(next)
        };
        use crate::broker::dynamic_config::AlterBrokerConfigsError;
        match self.broker.alter_broker_configs(scope, edit, false).await {
            Ok(()) => {
                info!(node = r.node_id, set = ?r.set, remove = ?r.remove,
                    "altered dynamic broker configs through the admin API");
                let overridden_on = if scope == crate::cluster::ConfigScope::ClusterDefault {
                    self.broker
                        .stored_broker_configs()
                        .brokers
                        .iter()
                        .filter(|(_, own)| names.iter().any(|&name| own.contains_key(name)))
                        .map(|(&id, _)| id)
                        .collect()
                } else {
                    Vec::new()
                };
                Ok(Response::new(AlterBrokerConfigsResponse {
                    previous: previous.into_inner().unwrap_or_else(|p| p.into_inner()),
                    overridden_on,
                }))
            }
            Err(AlterBrokerConfigsError::Refused(e)) => {
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(AlterBrokerConfigsError::Store(e)) => Err(status(AdminError::Store(e))),
        }
    }

    async fn elect_leaders(
        &self,
        request: Request<ElectLeadersRequest>,
    ) -> Result<Response<ElectLeadersResponse>, Status> {
        self.check(&request, Access::Change)?;
        let r = request.into_inner();
        let election = if r.unclean {
            crate::cluster::reassignment::Election::Unclean
        } else {
            crate::cluster::reassignment::Election::Preferred
        };
        let partitions = match (r.all_partitions, r.partitions.is_empty()) {
            (true, true) => None,
            (false, false) => Some(
                r.partitions
                    .into_iter()
                    .map(|p| (p.topic, p.partition))
                    .collect(),
            ),
            (true, false) => {
                return Err(Status::invalid_argument(
                    "name partitions or ask for all of them, not both",
                ));
            }
            (false, true) => {
                return Err(Status::invalid_argument(
                    "no partitions named (ask for all of them explicitly)",
                ));
            }
        };
        let outcomes = self
            .broker
            .elect_leaders(election, partitions)
            .await
            .map_err(status)?;
        info!(
            unclean = r.unclean,
            partitions = outcomes.len(),
            "leader election through the admin API"
        );
        Ok(Response::new(ElectLeadersResponse {
            results: outcomes.into_iter().map(partition_outcome).collect(),
        }))
    }
}
