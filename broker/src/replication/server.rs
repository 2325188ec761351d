//! The leader's side of replication: the `Replication` gRPC service.
//!
//! A fetch is answered at once when any partition has something for the follower
//! (records, a truncation, an error); otherwise it waits, up to `max_wait_ms`, for any of
//! the partitions' log ends to move.
//!
//! Replicas a reassignment is adding that are not in sync yet and fetch below the high
//! watermark get their records through the leader's replication throttle
//! ([`super::throttle`]): while it holds, their partitions answer without records and the
//! fetch waits until it lifts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_proto::replication::replication_server::{Replication, ReplicationServer};
use strata_proto::replication::{
    DivergingEpoch, FetchRequest, FetchResponse, PartitionData, PartitionError, PartitionFetch,
    VerifyTransactionRequest, VerifyTransactionResponse, WriteTxnMarkerRequest,
    WriteTxnMarkerResponse,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::ReplicaHost;
use crate::partition::Partition;
use crate::partition::isr::{FetchRefusal, FollowerFetch, FollowerOutcome};

/// Longest wait a follower may ask for.
const MAX_WAIT: Duration = Duration::from_secs(5);

pub struct Service {
    broker: Arc<dyn ReplicaHost>,
}

pub fn service(broker: Arc<dyn ReplicaHost>) -> ReplicationServer<Service> {
    let limit = super::response_limit(broker.config());
    ReplicationServer::new(Service { broker })
        .max_encoding_message_size(limit)
        .max_decoding_message_size(4 << 20)
}

fn error(fetch: &PartitionFetch, code: PartitionError) -> PartitionData {
    PartitionData {
        topic_id: fetch.topic_id.clone(),
        partition: fetch.partition,
        error: code as i32,
        ..PartitionData::default()
    }
}

impl Service {
    /// Over mutual TLS the peer is who its certificate says: the broker it claims to be
    /// must have registered that certificate's principal. Either way it must belong to
    /// this cluster.
    fn authenticate<T>(
        &self,
        request: &Request<T>,
        claimed: i32,
        cluster_id: &str,
    ) -> Result<(), Status> {
        if self.broker.replication_mtls() {
            let leaf = request
                .peer_certs()
                .and_then(|chain| chain.first().cloned());
            let registered = self.broker.registered_principal(claimed);
            let shown = match (&leaf, &registered) {
                (Some(leaf), Some(principal)) if !principal.is_empty() => {
                    self.broker.certificate_shows(leaf.as_ref(), principal)
                }
                _ => false,
            };
            if !shown {
                return Err(Status::permission_denied(format!(
                    "the client certificate is not the one broker {claimed} registered"
                )));
            }
        }
        if cluster_id != self.broker.cluster_id() {
            return Err(Status::permission_denied(format!(
                "this broker belongs to cluster {}, not {cluster_id}",
                self.broker.cluster_id(),
            )));
        }
        Ok(())
    }

    fn partition(&self, fetch: &PartitionFetch) -> Option<Arc<Partition>> {
        let id = Uuid::from_slice(&fetch.topic_id).ok()?;
        self.broker.partition_by_topic_id(id, fetch.partition)
    }

    /// One pass over the request; the bool says whether anything is worth answering now,
    /// the duration how long the throttle holds partitions back, if it held any.
    fn round(&self, request: &FetchRequest) -> (Vec<PartitionData>, bool, Option<Duration>) {
        let now = self.broker.now_ms();
        let throttle = &self.broker.replication_throttle().leader;
        let mut held = None;
        let mut budget = request
            .max_bytes
            .min(self.broker.config().replica_fetch_max_bytes as u32)
            as usize;
        let mut urgent = false;
        let mut sent_records = false;
        let answers = request
            .partitions
            .iter()
            .map(|fetch| {
                let Some(partition) = self.partition(fetch) else {
                    urgent = true;
                    return error(fetch, PartitionError::UnknownPartition);
                };
                let ask = FollowerFetch {
                    replica_id: request.replica_id,
                    current_epoch: fetch.current_leader_epoch,
                    fetch_offset: fetch.fetch_offset,
                    last_fetched_epoch: fetch.last_fetched_epoch,
                };
                // The first partition with records gets at least its first batch whole;
                // once records went out, a spent budget means no more.
                let mut max_bytes = budget
                    .min(fetch.max_bytes as usize)
                    .max(usize::from(!sent_records));
                // A replica that caught up is not throttled: it only follows produce,
                // and holding it back would keep it from ever joining the ISR.
                let throttled = partition.throttled_fetch(request.replica_id, fetch.fetch_offset);
                let mut reservation = None;
                if throttled {
                    match throttle.reserve(max_bytes, std::time::Instant::now()) {
                        Ok(reserved) => {
                            max_bytes = reserved.granted();
                            reservation = Some(reserved);
                        }
                        Err(wait) => {
                            held = Some(wait);
                            max_bytes = 0;
                        }
                    }
                }
                match partition.serve_follower(&ask, max_bytes, now) {
                    Err(refusal) => {
                        urgent = true;
                        error(
                            fetch,
                            match refusal {
                                FetchRefusal::NotLeader => PartitionError::NotLeader,
                                FetchRefusal::FencedEpoch => PartitionError::FencedLeaderEpoch,
                                FetchRefusal::UnknownEpoch => PartitionError::UnknownLeaderEpoch,
                                FetchRefusal::Storage => PartitionError::StorageError,
                            },
                        )
                    }
                    Ok(answer) => {
                        let mut data = PartitionData {
                            topic_id: fetch.topic_id.clone(),
                            partition: fetch.partition,
                            error: PartitionError::None as i32,
                            high_watermark: answer.high_watermark,
                            log_start_offset: answer.log_start_offset,
                            local_log_start_offset: answer.local_log_start_offset,
                            log_end_offset: answer.log_end_offset,
                            remote_end_offset: answer.remote_end_offset,
                            diverging_epoch: None,
                            records: Bytes::new(),
                            segment_base: answer.segment_base,
                        };
                        match answer.outcome {
                            // Only the first partition with records may exceed the
                            // budget (by its first batch); later ones get what fits or
                            // nothing, so a response stays within `response_limit`.
                            FollowerOutcome::Records(records)
                                if !sent_records || records.len() <= budget =>
                            {
                                urgent |= !records.is_empty();
                                sent_records |= !records.is_empty();
                                budget = budget.saturating_sub(records.len());
                                if let Some(reserved) = reservation {
                                    reserved.settle(records.len(), std::time::Instant::now());
                                }
                                data.records = records;
                            }
                            FollowerOutcome::Records(_) => {}
                            FollowerOutcome::Diverging { epoch, end_offset } => {
                                urgent = true;
                                data.diverging_epoch = Some(DivergingEpoch { epoch, end_offset });
                            }
                            FollowerOutcome::OutOfRange => {
                                urgent = true;
                                data.error = PartitionError::OffsetOutOfRange as i32;
                            }
                        }
                        data
                    }
                }
            })
            .collect();
        (answers, urgent, held)
    }
}

#[tonic::async_trait]
impl Replication for Service {
    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let claimed = request.get_ref().replica_id;
        let cluster_id = request.get_ref().cluster_id.clone();
        self.authenticate(&request, claimed, &cluster_id)?;
        let request = request.into_inner();
        let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Subscribe before reading, so an append in between still wakes us.
            let mut ends: Vec<_> = request
                .partitions
                .iter()
                .filter_map(|f| self.partition(f).map(|p| p.subscribe_log_end()))
                .collect();
            let (partitions, urgent, held) = self.round(&request);
            if urgent || tokio::time::Instant::now() >= deadline || ends.is_empty() {
                return Ok(Response::new(FetchResponse { partitions }));
            }
            // Held partitions have records waiting: look again when the throttle lifts.
            let wake = held.map_or(deadline, |wait| {
                deadline.min(tokio::time::Instant::now() + wait)
            });
            let changed =
                futures::future::select_all(ends.iter_mut().map(|r| Box::pin(r.changed())));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.broker.shutdown().cancelled() => {
                    return Err(Status::unavailable("the broker is shutting down"));
                }
            }
        }
    }

    async fn write_txn_marker(
        &self,
        request: Request<WriteTxnMarkerRequest>,
    ) -> Result<Response<WriteTxnMarkerResponse>, Status> {
        let claimed = request.get_ref().coordinator_id;
        let cluster_id = request.get_ref().cluster_id.clone();
        self.authenticate(&request, claimed, &cluster_id)?;
        let request = request.into_inner();
        let topic_id = Uuid::from_slice(&request.topic_id)
            .map_err(|_| Status::invalid_argument("topic_id is not 16 bytes"))?;
        let producer_epoch = i16::try_from(request.producer_epoch)
            .map_err(|_| Status::invalid_argument("producer_epoch is not an i16"))?;
        let marker = crate::log::txn::MarkerRequest {
            producer_id: request.producer_id,
            producer_epoch,
            marker: if request.commit {
                crate::log::txn::Marker::Commit
            } else {
                crate::log::txn::Marker::Abort
            },
            coordinator_epoch: request.coordinator_epoch,
        };
        let result = self
            .broker
            .write_txn_marker(topic_id, request.partition, marker)
            .await;
        use crate::partition::PartitionError as Refused;
        let (error, message) = match result {
            Ok(()) => (PartitionError::None, String::new()),
            Err(e @ Refused::NotLeader) => (PartitionError::NotLeader, e.to_string()),
            Err(e @ Refused::Deleted) => (PartitionError::UnknownPartition, e.to_string()),
            Err(e) => (PartitionError::StorageError, e.to_string()),
        };
        Ok(Response::new(WriteTxnMarkerResponse {
            error: error as i32,
            message,
        }))
    }

    async fn verify_transaction(
        &self,
        request: Request<VerifyTransactionRequest>,
    ) -> Result<Response<VerifyTransactionResponse>, Status> {
        let claimed = request.get_ref().broker_id;
        let cluster_id = request.get_ref().cluster_id.clone();
        self.authenticate(&request, claimed, &cluster_id)?;
        let request = request.into_inner();
        let producer_epoch = i16::try_from(request.producer_epoch)
            .map_err(|_| Status::invalid_argument("producer_epoch is not an i16"))?;
        let code = self
            .broker
            .verify_transaction(crate::log::txn::VerifyRequest {
                transactional_id: request.transactional_id,
                producer_id: request.producer_id,
                producer_epoch,
                topic: request.topic,
                partition: request.partition,
                add: request.add,
            })
            .await;
        Ok(Response::new(VerifyTransactionResponse {
            error_code: i32::from(code),
        }))
    }
}
