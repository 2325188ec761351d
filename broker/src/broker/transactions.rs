//! The broker's side of transactions: the handle the transaction coordinator gets
//! ([`crate::txn::TxnHost`]), and markers, written here when this broker leads the
//! partition or sent to its leader over the replication channel. A diskless partition
//! has no leader: any broker appends to it, so its markers go through this broker's
//! appender.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_proto::replication::replication_client::ReplicationClient;
use strata_proto::replication::{
    PartitionError as WireError, VerifyTransactionRequest, WriteTxnMarkerRequest,
};
use tonic::transport::Channel;
use tracing::warn;

use super::Broker;
use crate::config::Config;
use crate::log::LogError;
use crate::log::producers::ProducerError;
use crate::log::txn::Marker;
use crate::partition::{Partition, PartitionError};
use crate::registry::Topic;
use crate::telemetry::Metrics;
use crate::txn::{
    MarkerError, MarkerRequest, TRANSACTION_TOPIC, TxnCoordinator, TxnError, TxnHost, VerifyRequest,
};
use kafka_protocol::ResponseError;

/// How long a marker write waits for the partition's ISR.
pub const MARKER_TIMEOUT_MS: i64 = 10_000;

/// Replication clients to other brokers, for markers: one channel per broker, dropped
/// when a call on it fails.
#[derive(Default)]
pub struct MarkerClients(Mutex<HashMap<i32, ReplicationClient<Channel>>>);

impl MarkerClients {
    fn take(&self, node: i32) -> Option<ReplicationClient<Channel>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
    }

    fn put(&self, node: i32, client: ReplicationClient<Channel>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, client);
    }

    fn forget(&self, node: i32) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node);
    }
}

impl Broker {
    /// Writes a marker to a partition this broker leads. A marker of the offsets topic
    /// also settles the transaction's offsets in the group coordinator. Returns the
    /// marker's offset (`None`: an older epoch's marker for a transaction already ended).
    pub async fn write_txn_marker_local(
        &self,
        partition: &Partition,
        request: MarkerRequest,
    ) -> Result<Option<i64>, PartitionError> {
        let now = self.clock.now_ms();
        let written = partition
            .write_marker(
                request.producer_id,
                request.producer_epoch,
                request.marker,
                request.coordinator_epoch,
                now,
                MARKER_TIMEOUT_MS,
            )
            .await;
        let offset = match written {
            Ok(info) => Some(info.base_offset),
            // A newer epoch's marker is already there and no transaction is open: this
            // one ended with it. With a transaction open (of a newer epoch) the marker is
            // not this partition's to drop: the caller retries or gives up.
            Err(PartitionError::Log(LogError::Producer(ProducerError::Fenced { .. })))
                if !partition.in_transaction(request.producer_id) =>
            {
                warn!(topic = %partition.topic, partition = partition.index,
                    producer_id = request.producer_id, epoch = request.producer_epoch,
                    "a marker of an older producer epoch was refused; the transaction has ended");
                None
            }
            Err(e) => return Err(e),
        };
        if partition.topic == crate::group::OFFSETS_TOPIC {
            self.groups.complete_transaction(
                self,
                partition.index,
                request.producer_id,
                request.marker == Marker::Commit,
            );
        }
        Ok(offset)
    }

    /// Appends a marker to a diskless partition through this broker's appender and waits
    /// for its commit. `Ok(None)`: an older epoch's marker refused while no transaction of
    /// the producer is open in the partition (the transaction ended with a newer one), as
    /// [`Broker::write_txn_marker_local`] answers.
    pub async fn write_diskless_marker(
        &self,
        topic: &Topic,
        partition: i32,
        request: MarkerRequest,
    ) -> Result<Option<i64>, crate::diskless::append::AppendError> {
        use crate::diskless::append::AppendError;
        use crate::diskless::state::ProducerErrorKind;
        let Some(diskless) = self.diskless.as_ref() else {
            return Err(AppendError::ObjectStore(
                "this broker has no object store for diskless topics".into(),
            ));
        };
        let key = crate::diskless::PartitionKey {
            topic_id: topic.id,
            partition,
        };
        let within = std::time::Duration::from_millis(MARKER_TIMEOUT_MS as u64);
        let written = diskless
            .appender
            .append_marker(key, &topic.name, &topic.config, request, within)
            .await;
        match written {
            Ok(offset) => Ok(Some(offset)),
            // The view was re-read before the refusal (see the appender's settle_early)
            // or the commit refused it against the stored state.
            Err(AppendError::Producer(_, ProducerErrorKind::Fenced))
                if !diskless
                    .view
                    .get(&key)
                    .head
                    .open
                    .contains_key(&request.producer_id) =>
            {
                warn!(topic = %topic.name, partition, producer_id = request.producer_id,
                    epoch = request.producer_epoch,
                    "a marker of an older producer epoch was refused; the transaction has ended");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// KIP-890's verification, asked by this broker as a partition leader before it
    /// accepts a producer's first transactional batch in a partition: whether the
    /// partition is in the producer's open transaction. Asks this broker's coordinator
    /// or, over the replication channel, the broker that coordinates the id.
    pub async fn verify_transaction(&self, request: VerifyRequest) -> Result<(), ResponseError> {
        let node = self
            .txns
            .coordinator_node(self, &request.transactional_id)
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        let code = if node == self.config.node_id {
            self.verify_here(&request).await
        } else {
            self.ask_coordinator(node, request).await
        };
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }

    /// Answers a verification for an id this broker coordinates: a Kafka error code.
    pub async fn verify_here(&self, request: &VerifyRequest) -> i16 {
        let partition = (request.topic.clone(), request.partition);
        let result = if request.add {
            self.txns
                .add_partitions(
                    self,
                    &request.transactional_id,
                    request.producer_id,
                    request.producer_epoch,
                    std::slice::from_ref(&partition),
                    true,
                )
                .await
        } else {
            self.txns
                .verify_partition(
                    self,
                    &request.transactional_id,
                    request.producer_id,
                    request.producer_epoch,
                    &partition,
                )
                .await
        };
        match result {
            Ok(()) => 0,
            // Retriable for the producer: its AddPartitionsToTxn may still be in flight.
            Err(TxnError::ConcurrentTransactions) => ResponseError::ConcurrentTransactions.code(),
            Err(e) => crate::txn::kafka_error(e, i16::MAX, 0).code(),
        }
    }

    async fn ask_coordinator(&self, node: i32, request: VerifyRequest) -> i16 {
        let unavailable = ResponseError::CoordinatorNotAvailable.code();
        let client = match self.marker_clients.take(node) {
            Some(client) => client,
            None => match crate::replication::fetcher::connect(self, node).await {
                Some(client) => {
                    self.marker_clients.put(node, client.clone());
                    client
                }
                None => return unavailable,
            },
        };
        let wire = VerifyTransactionRequest {
            broker_id: self.config.node_id,
            cluster_id: self.cluster_id.clone(),
            transactional_id: request.transactional_id,
            producer_id: request.producer_id,
            producer_epoch: i32::from(request.producer_epoch),
            topic: request.topic,
            partition: request.partition,
            add: request.add,
        };
        match client.clone().verify_transaction(wire).await {
            Ok(answer) => i16::try_from(answer.into_inner().error_code).unwrap_or(unavailable),
            Err(status) => {
                self.marker_clients.forget(node);
                warn!(node, error = %status.message(), "cannot verify a transaction with its coordinator");
                unavailable
            }
        }
    }

    async fn send_marker(
        &self,
        topic: &Topic,
        partition: i32,
        leader: i32,
        request: MarkerRequest,
    ) -> Result<(), MarkerError> {
        let client = match self.marker_clients.take(leader) {
            Some(client) => client,
            None => {
                let client = crate::replication::fetcher::connect(self, leader)
                    .await
                    .ok_or_else(|| {
                        MarkerError::Retriable(format!("cannot reach broker {leader}"))
                    })?;
                self.marker_clients.put(leader, client.clone());
                client
            }
        };
        let wire = WriteTxnMarkerRequest {
            coordinator_id: self.config.node_id,
            cluster_id: self.cluster_id.clone(),
            topic_id: bytes::Bytes::copy_from_slice(topic.id.as_bytes()),
            partition,
            producer_id: request.producer_id,
            producer_epoch: i32::from(request.producer_epoch),
            commit: request.marker == Marker::Commit,
            coordinator_epoch: request.coordinator_epoch,
        };
        let answer = match client.clone().write_txn_marker(wire).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                self.marker_clients.forget(leader);
                return Err(MarkerError::Retriable(format!(
                    "broker {leader} refused a marker: {}",
                    status.message()
                )));
            }
        };
        match WireError::try_from(answer.error) {
            Ok(WireError::None) => Ok(()),
            // The topic was deleted on the leader meanwhile: nothing left to mark.
            Ok(WireError::UnknownPartition) if self.topics.get(&topic.name).is_none() => Ok(()),
            _ => Err(MarkerError::Retriable(format!(
                "broker {leader} could not write a marker to {}-{partition}: {}",
                topic.name, answer.message
            ))),
        }
    }
}

impl TxnHost for Broker {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn txn_coordinator(&self) -> &TxnCoordinator {
        &self.txns
    }

    fn txn_topic(&self) -> Option<Arc<Topic>> {
        self.topics.get(TRANSACTION_TOPIC)
    }

    async fn create_txn_topic(&self) -> anyhow::Result<Arc<Topic>> {
        Ok(self.create_internal_topic(TRANSACTION_TOPIC).await?)
    }

    async fn new_producer_id(&self) -> anyhow::Result<i64> {
        Ok(self.next_producer_id().await?)
    }

    async fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
    ) -> Result<(), MarkerError> {
        // A deleted topic needs no marker.
        let Some(t) = self.topics.get(topic) else {
            return Ok(());
        };
        let request = MarkerRequest {
            producer_id,
            producer_epoch,
            marker,
            coordinator_epoch,
        };
        if t.diskless {
            if !t.has_partition(partition) {
                return Ok(());
            }
            return match self.write_diskless_marker(&t, partition, request).await {
                Ok(_) => Ok(()),
                // Deleted while the marker was committed: nothing left to mark.
                Err(crate::diskless::append::AppendError::Deleted(_)) => Ok(()),
                Err(e) => Err(MarkerError::Retriable(format!("{topic}-{partition}: {e}"))),
            };
        }
        let Some(p) = t.partition(partition).cloned() else {
            return Ok(());
        };
        if p.is_leader() {
            return self
                .write_txn_marker_local(&p, request)
                .await
                .map(|_| ())
                .map_err(|e| MarkerError::Retriable(format!("{topic}-{partition}: {e}")));
        }
        let leader = t
            .record
            .partitions
            .get(partition as usize)
            .map_or(-1, |r| r.leader);
        if leader < 0 || leader == self.config.node_id {
            return Err(MarkerError::Retriable(format!(
                "{topic}-{partition} has no leader to write a marker"
            )));
        }
        self.send_marker(&t, partition, leader, request).await
    }
}
