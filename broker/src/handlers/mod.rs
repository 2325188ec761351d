//! Request handlers, one module per API family. Each takes the decoded request and returns
//! the response body; `None` means no response is sent (Produce with acks=0).
//!
//! Errors from the layers below map to Kafka error codes here and only here.

mod acls;
mod authorize;
mod broker_configs;
mod cluster;
mod fetch;
mod groups;
mod init_producer_id;
mod log_dirs;
mod offsets;
pub mod ordering;
mod produce;
mod producers;
mod quotas;
mod reassign;
mod scram;
mod topics;
mod txn;

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{AdminError, Broker};
use crate::log::producers::ProducerError;
use crate::log::{BatchError, LogError};
use crate::partition::PartitionError;
use crate::protocol::Request;
use crate::security::Caller;
use crate::security::acl::{AclOperation, CLUSTER_NAME, ResourceType};

/// `caller` is who sent the request and through which listener.
pub async fn handle(
    broker: &Arc<Broker>,
    request: Request,
    caller: &Caller,
) -> Option<ResponseKind> {
    let client_host = caller.client_host();
    let version = request.version;
    let client_id = request
        .header
        .client_id
        .as_ref()
        .map_or("", |c| c.as_str())
        .to_string();
    let authz = Authz::new(
        broker,
        caller,
        crate::protocol::versions::name(request.api_key),
    );
    let (body, denied) = match authorize::restrict(&authz, request.body, version) {
        authorize::Check::Handle(body, denied) => (body, denied),
        authorize::Check::Refuse(response) => return Some(response),
    };
    let response = match body {
        RequestKind::ApiVersions(_) => cluster::api_versions(broker, version),
        RequestKind::Metadata(r) => cluster::metadata(broker, r, version, &authz, &client_id).await,
        RequestKind::DescribeCluster(r) => cluster::describe_cluster(broker, r, caller),
        RequestKind::Produce(r) => {
            let counted = crate::broker::cost_ledger::client_produce(broker, &client_id, &r);
            let response = produce::produce(broker, r, version).await;
            crate::broker::cost_ledger::count_client_produce(broker, counted, response.as_ref());
            return Some(denied.merge(&authz, response?, version));
        }
        RequestKind::DescribeAcls(r) => acls::describe_acls(broker, &authz, r),
        RequestKind::CreateAcls(r) => acls::create_acls(broker, &authz, r).await,
        RequestKind::DeleteAcls(r) => acls::delete_acls(broker, &authz, r).await,
        RequestKind::DescribeUserScramCredentials(r) => scram::describe(broker, &authz, r),
        RequestKind::AlterUserScramCredentials(r) => scram::alter(broker, &authz, r).await,
        RequestKind::DescribeClientQuotas(r) => quotas::describe(broker, &authz, r),
        RequestKind::AlterClientQuotas(r) => quotas::alter(broker, &authz, r).await,
        RequestKind::InitProducerId(r) => {
            init_producer_id::init_producer_id(broker, r, version).await
        }
        RequestKind::AddPartitionsToTxn(r) => {
            txn::add_partitions_to_txn(broker, &authz, r, version).await
        }
        RequestKind::AddOffsetsToTxn(r) => {
            txn::add_offsets_to_txn(broker, &authz, r, version).await
        }
        RequestKind::EndTxn(r) => txn::end_txn(broker, &authz, r, version).await,
        RequestKind::TxnOffsetCommit(r) => txn::txn_offset_commit(broker, &authz, r, version).await,
        RequestKind::DescribeTransactions(r) => txn::describe_transactions(broker, &authz, r).await,
        RequestKind::ListTransactions(r) => txn::list_transactions(broker, &authz, r, version),
        RequestKind::WriteTxnMarkers(r) => txn::write_txn_markers(broker, &authz, r).await,
        RequestKind::Fetch(r) => {
            let zone = crate::cost::client_zone(&client_id, Some(r.rack_id.as_str()));
            let listener = authz.caller().listener.clone();
            let response = fetch::fetch(broker, r, version, &listener).await;
            crate::broker::cost_ledger::count_client_fetch(broker, zone, &response);
            response
        }
        RequestKind::ListOffsets(r) => offsets::list_offsets(broker, r, version).await,
        RequestKind::DeleteRecords(r) => offsets::delete_records(broker, r).await,
        RequestKind::CreateTopics(r) => topics::create_topics(broker, r, version).await,
        RequestKind::DeleteTopics(r) => topics::delete_topics(broker, r, version).await,
        RequestKind::CreatePartitions(r) => topics::create_partitions(broker, r).await,
        RequestKind::DescribeConfigs(r) => topics::describe_configs(broker, r),
        RequestKind::AlterConfigs(r) => topics::alter_configs(broker, r).await,
        RequestKind::FindCoordinator(r) => {
            groups::find_coordinator(broker, r, version, caller).await
        }
        RequestKind::JoinGroup(r) => {
            groups::join_group(broker, r, version, &client_id, &client_host).await
        }
        RequestKind::SyncGroup(r) => groups::sync_group(broker, r).await,
        RequestKind::Heartbeat(r) => groups::heartbeat(broker, r).await,
        RequestKind::LeaveGroup(r) => groups::leave_group(broker, r, version).await,
        RequestKind::OffsetCommit(r) => groups::offset_commit(broker, r, version).await,
        RequestKind::OffsetFetch(r) => groups::offset_fetch(broker, r, version).await,
        RequestKind::ListGroups(r) => groups::list_groups(broker, r, &authz),
        RequestKind::DescribeGroups(r) => groups::describe_groups(broker, r),
        RequestKind::DeleteGroups(r) => groups::delete_groups(broker, r).await,
        RequestKind::OffsetDelete(r) => groups::offset_delete(broker, r).await,
        RequestKind::AlterPartitionReassignments(r) => {
            reassign::alter_partition_reassignments(broker, &authz, r, version).await
        }
        RequestKind::ListPartitionReassignments(r) => {
            reassign::list_partition_reassignments(broker, &authz, r).await
        }
        RequestKind::ElectLeaders(r) => reassign::elect_leaders(broker, &authz, r, version).await,
        RequestKind::IncrementalAlterConfigs(r) => {
            topics::incremental_alter_configs(broker, r).await
        }
        // Operators' tools: log dirs and producers (issue 20).
        RequestKind::DescribeLogDirs(r) => log_dirs::describe_log_dirs(broker, &authz, r, version),
        RequestKind::AlterReplicaLogDirs(r) => log_dirs::alter_replica_log_dirs(broker, &authz, r),
        RequestKind::DescribeProducers(r) => producers::describe_producers(broker, &authz, r),
        // The decoder refuses APIs outside protocol::versions::SUPPORTED, all handled above.
        // SaslHandshake and SaslAuthenticate are answered by the connection. The body is
        // not logged: it may hold credentials.
        _ => {
            tracing::error!(api = ?request.api_key, "request for an API with no handler");
            return None;
        }
    };
    Some(denied.merge(&authz, response, version))
}

/// The authorization check of one request: Kafka's operation on a resource, for the
/// connection's principal. Every denial is counted by principal and API.
pub struct Authz<'a> {
    pub(crate) broker: &'a Broker,
    caller: &'a Caller,
    api: &'static str,
}

impl<'a> Authz<'a> {
    pub fn new(broker: &'a Broker, caller: &'a Caller, api: &'static str) -> Authz<'a> {
        Authz {
            broker,
            caller,
            api,
        }
    }

    pub fn caller(&self) -> &Caller {
        self.caller
    }

    /// Whether the ACL authorizer is on (with it off, every check passes).
    pub fn enabled(&self) -> bool {
        self.broker.security.authorizer.enabled()
    }

    pub fn allows(&self, operation: AclOperation, resource: ResourceType, name: &str) -> bool {
        let allowed =
            self.broker
                .security
                .authorizer
                .allowed(self.caller, operation, resource, name);
        if !allowed {
            self.denied();
        }
        allowed
    }

    /// Like [`Authz::allows`], without counting a denial: for filtering what a listing
    /// shows (Metadata of all topics, ListGroups), where hiding is not a refusal.
    pub fn can(&self, operation: AclOperation, resource: ResourceType, name: &str) -> bool {
        self.broker
            .security
            .authorizer
            .allowed(self.caller, operation, resource, name)
    }

    pub fn allows_topic(&self, operation: AclOperation, topic: &str) -> bool {
        self.allows(operation, ResourceType::Topic, topic)
    }

    pub fn allows_group(&self, operation: AclOperation, group: &str) -> bool {
        self.allows(operation, ResourceType::Group, group)
    }

    pub fn allows_cluster(&self, operation: AclOperation) -> bool {
        self.allows(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether the operation is allowed on some resource of the type.
    pub fn allows_any(&self, operation: AclOperation, resource: ResourceType) -> bool {
        let allowed =
            self.broker
                .security
                .authorizer
                .allowed_on_any(self.caller, operation, resource);
        if !allowed {
            self.denied();
        }
        allowed
    }

    fn denied(&self) {
        self.broker
            .metrics
            .authorization_denials
            .with_label_values(&[&self.caller.principal.to_string(), self.api])
            .inc();
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The Kafka error for a log failure.
pub fn log_error_code(error: &LogError) -> ResponseError {
    match error {
        LogError::InvalidBatch(BatchError::TooLarge { .. }) => ResponseError::MessageTooLarge,
        LogError::InvalidBatch(BatchError::Crc { .. } | BatchError::Decompress(_)) => {
            ResponseError::CorruptMessage
        }
        LogError::InvalidBatch(BatchError::Magic(_)) => ResponseError::UnsupportedForMessageFormat,
        LogError::InvalidBatch(BatchError::Codec(_)) => ResponseError::UnsupportedCompressionType,
        LogError::InvalidBatch(BatchError::Timestamp { .. }) => ResponseError::InvalidTimestamp,
        LogError::InvalidBatch(_) => ResponseError::InvalidRecord,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io { .. } | LogError::Damaged { .. } | LogError::NotContiguous { .. } => {
            ResponseError::KafkaStorageError
        }
        LogError::Producer(ProducerError::Fenced { .. }) => ResponseError::InvalidProducerEpoch,
        LogError::Producer(ProducerError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        LogError::Producer(
            ProducerError::NotInTransaction { .. } | ProducerError::InvalidTxnState { .. },
        ) => ResponseError::InvalidTxnState,
        // Retriable for every producer.
        LogError::Producer(ProducerError::MarkerPending { .. }) => ResponseError::NotEnoughReplicas,
    }
}

/// The Kafka error for a partition failure.
pub fn partition_error_code(error: &PartitionError) -> ResponseError {
    match error {
        PartitionError::Log(e) => log_error_code(e),
        PartitionError::Deleted => ResponseError::UnknownTopicOrPartition,
        PartitionError::Offline | PartitionError::Remote(_) => ResponseError::KafkaStorageError,
        PartitionError::DecodeFailed => ResponseError::UnknownServerError,
        PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
        PartitionError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        PartitionError::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
        PartitionError::ReplicationTimeout => ResponseError::RequestTimedOut,
    }
}

/// The Kafka error for an admin failure.
pub fn admin_error_code(error: &AdminError) -> ResponseError {
    match error {
        AdminError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        AdminError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        AdminError::InvalidTopicName(_) | AdminError::Internal(_) => {
            ResponseError::InvalidTopicException
        }
        AdminError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        AdminError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        AdminError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        AdminError::InvalidConfig(_) => ResponseError::InvalidConfig,
        AdminError::PolicyViolation(_) => ResponseError::PolicyViolation,
        // Retriable for clients: the store may come back.
        AdminError::Store(_) | AdminError::Tiering(_) => ResponseError::RequestTimedOut,
        AdminError::Log(e) => log_error_code(e),
    }
}
